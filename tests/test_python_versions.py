"""Python 3.11, 3.12 and 3.13: what pyproject.toml admits is what CI tests, and `make` follows a changed Python."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from infra.stack_config import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def admitted() -> list[str]:
    """The minor versions requires-python admits."""
    spec = SpecifierSet(PYPROJECT["project"]["requires-python"])
    return [f"3.{minor}" for minor in range(8, 30) if f"3.{minor}.0" in spec]


def test_supported_pythons_and_lint_target():
    assert admitted() == ["3.11", "3.12", "3.13"]
    # Code stays 3.11-compatible: ruff must not suggest syntax newer than the oldest supported Python.
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in admitted()


@pytest.mark.parametrize("workflow", ["preview.yml", "deploy.yml"])
def test_workflows_run_make_test_on_every_supported_python(workflow):
    data = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / workflow).read_text())
    job = data["jobs"]["test"]
    assert job["strategy"]["matrix"]["python"] == admitted()
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python"))
    assert setup["with"]["python-version"] == "${{ matrix.python }}"
    assert any(s.get("run") == "make test" for s in job["steps"])


def test_deploys_wait_for_every_python():
    data = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    # `needs` a matrix job waits for every leg of it.
    assert data["jobs"]["up"]["needs"] == "test"


# --- Makefile: the virtualenv follows the interpreter --------------------------------------------------------


@pytest.fixture
def makefile_dir(tmp_path):
    shutil.copy(PROJECT_ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "requirements.txt").write_text("")
    # This interpreter, making its virtualenvs without pip: bootstrapping pip (ensurepip) is seconds a virtualenv,
    # and pip is faked in these tests anyway (`_fake_pip`). Everything else goes to the interpreter as it is.
    python = tmp_path / "python3"
    python.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$2" = venv ]; then shift 2; exec {sys.executable} -m venv --without-pip "$@"; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    return tmp_path


def make(directory, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", f"PYTHON={directory / 'python3'}", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
    )


def _fake_pip(directory):
    """Stand in for pip in the made virtualenv: record each call instead of downloading."""
    pip = directory / ".venv" / "bin" / "pip"
    pip.write_text(f'#!/bin/sh\necho "$*" >> {directory / "pip.log"}\n')
    pip.chmod(0o755)
    return directory / "pip.log"


def test_first_install_says_what_and_shows_progress_later_ones_are_quiet_and_rare(makefile_dir):
    first = make(makefile_dir, ".venv/.python")
    assert first.returncode == 0, first.stderr
    log = _fake_pip(makefile_dir)

    install = make(makefile_dir, "venv")
    assert install.returncode == 0, install.stderr
    assert "Installing the project" in install.stdout and "about a minute" in install.stdout
    assert "--quiet" not in log.read_text(), "the first install shows pip's progress"

    assert make(makefile_dir, "venv").returncode == 0
    assert len(log.read_text().splitlines()) == 1, "nothing changed, nothing is reinstalled"

    os.utime(makefile_dir / "pyproject.toml")
    later = make(makefile_dir, "venv")
    assert "Installing" not in later.stdout
    assert log.read_text().splitlines()[-1].startswith("install --quiet")


def test_a_different_python_starts_the_virtualenv_over(makefile_dir):
    assert make(makefile_dir, ".venv/.python").returncode == 0
    stamp = makefile_dir / ".venv" / ".python"
    assert stamp.read_text().strip() == f"{platform.python_implementation()} {platform.python_version()}"
    (makefile_dir / ".venv" / "bin" / ".installed").write_text("")

    untouched = make(makefile_dir, ".venv/.python")
    assert "Creating" not in untouched.stdout and (makefile_dir / ".venv" / "bin" / ".installed").exists()

    stamp.write_text("CPython 3.10.0\n")  # as if another interpreter had made it
    rebuilt = make(makefile_dir, ".venv/.python")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "Creating .venv" in rebuilt.stdout
    assert not (makefile_dir / ".venv" / "bin" / ".installed").exists(), "the next `make venv` installs afresh"
    assert stamp.read_text().strip() != "CPython 3.10.0"


def test_every_virtualenv_is_tied_to_the_interpreter():
    text = (PROJECT_ROOT / "Makefile").read_text()
    for venv in ("$(BIN)", "$(CHECKOV_VENV)", "$(POLICY_VENV)"):
        rule = next(line for line in text.splitlines() if line.startswith(f"{venv}/.installed:"))
        stamp = "$(VENV)/.python" if venv == "$(BIN)" else f"{venv}/.python"
        assert stamp in rule, rule


def test_a_missing_python_is_named(makefile_dir):
    result = subprocess.run(
        ["make", "PYTHON=no-such-python3", ".venv/.python"], cwd=makefile_dir, capture_output=True, text=True
    )
    assert result.returncode != 0 and "no-such-python3 not found" in result.stderr
