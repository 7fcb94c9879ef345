"""Strict input (issue 11): every problem in the stack files is one line naming file, field, value and rule; the
render exits 2 and writes nothing, and the program registers nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pulumi
import pytest

from infra.offline.cli import main
from infra.offline.mocks import ProgramFailed, run_program
from infra.program import run
from infra.stack_config import PROJECT_ROOT, StackConfig, read_stack_files

PROJECT_FILE = (PROJECT_ROOT / "Pulumi.yaml").read_text()
DEV_FILE = (PROJECT_ROOT / "Pulumi.dev.yaml").read_text()


def render_cli(project_dir: Path, out: Path, stack: str = "dev", capsys=None) -> tuple[int, str]:
    """`python -m infra render`, in process: exit code and stderr."""
    code = main(["render", stack, "--out", str(out), "--project-dir", str(project_dir)])
    return code, capsys.readouterr().err if capsys else ""


def files(tmp_path: Path, project: str = PROJECT_FILE, dev: str = DEV_FILE) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(project)
    (tmp_path / "Pulumi.dev.yaml").write_text(dev)
    return tmp_path


def assert_refused_by_cli(project_dir: Path, tmp_path: Path, capsys, expected: str) -> str:
    out = tmp_path / "out"
    code, err = render_cli(project_dir, out, capsys=capsys)
    assert code == 2, err
    problems = [line for line in err.splitlines() if line.startswith("  - ")]
    assert any(expected in line for line in problems), err
    assert "Traceback" not in err
    assert not out.exists(), "nothing is written for a refused config"
    return err


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


# --- The files themselves -------------------------------------------------------------------------------------


def test_a_duplicate_key_in_a_stack_file_is_refused_with_its_position(tmp_path, capsys):
    dev = DEV_FILE + "  settlement-platform:gateway:\n    hostname: api.other.example\n"
    project_dir = files(tmp_path, dev=dev)
    first, second = line_of(dev, "settlement-platform:gateway"), len(dev.splitlines()) - 1
    assert_refused_by_cli(
        project_dir,
        tmp_path,
        capsys,
        f"Pulumi.dev.yaml:{second}:3: duplicate key 'settlement-platform:gateway' (first at line {first}); "
        "Pulumi refuses the file",
    )


def test_a_duplicate_key_in_pulumi_yaml_is_refused_even_deep_in_the_topology(tmp_path, capsys):
    project = PROJECT_FILE.replace(
        "            critical: true\n", "            critical: true\n            critical: false\n", 1
    )
    line = line_of(project, "critical: false")
    assert_refused_by_cli(
        files(tmp_path, project=project),
        tmp_path,
        capsys,
        f"Pulumi.yaml:{line}:13: duplicate key 'critical' (first at line {line - 1})",
    )


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    dev = DEV_FILE.replace("config:\n", "x-base: &base {minReplicas: 1}\nconfig:\n", 1)
    dev = dev.replace("    workload:\n      minReplicas: 1\n", "    workload:\n      <<: *base\n      minReplicas: 1\n")
    assert read_stack_files("dev", files(tmp_path, dev=dev)).values["settlement-platform:defaults"]["workload"] == {
        "minReplicas": 1,
        "criticalMinReplicas": 1,
        "maxReplicas": 3,
    }


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path, capsys):
    dev = DEV_FILE.replace("    hostname: api.dev.settlement.example\n", "    hostname: api.dev: x\n")
    line = line_of(dev, "api.dev: x")
    err = assert_refused_by_cli(
        files(tmp_path, dev=dev), tmp_path, capsys, f"Pulumi.dev.yaml:{line}:22: mapping values are not allowed here"
    )
    assert len(err.strip().splitlines()) == 2, err  # the header and the one problem


def test_an_unclosed_bracket_reports_where_the_parser_gave_up_and_what_it_was_reading(tmp_path, capsys):
    dev = DEV_FILE.replace("[192.168.49.2/32]", "[192.168.49.2/32")
    start = line_of(dev, "apiServerCidrs")
    err = assert_refused_by_cli(
        files(tmp_path, dev=dev), tmp_path, capsys, f"Pulumi.dev.yaml:{start + 1}:30: expected ',' or ']', but got ':'"
    )
    assert f"(while parsing a flow sequence started at line {start})" in err, err


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        ("", "Pulumi.yaml: is empty; a project needs at least `name` and `runtime`"),
        ("# nothing yet\n", "Pulumi.yaml: is empty"),
        ("- name: x\n", "Pulumi.yaml: must be a YAML mapping (got a list)"),
        ("runtime: python\n", "Pulumi.yaml: name: is required: the project's name, its config namespace (got None)"),
        (
            "name: settlement-platform\nruntime: python\nconfig:\n  - subsystems\n",
            "Pulumi.yaml: config: must be a mapping of key to value (got a list)",
        ),
    ],
    ids=["empty", "only-a-comment", "a-list", "no-name", "config-as-list"],
)
def test_a_malformed_pulumi_yaml_is_named_without_a_traceback(tmp_path, capsys, project, expected):
    assert_refused_by_cli(files(tmp_path, project=project), tmp_path, capsys, expected)


def test_config_written_as_a_list_in_a_stack_file_is_refused(tmp_path, capsys):
    expected = "Pulumi.dev.yaml: config: must be a mapping of key to value (got a list)"
    assert_refused_by_cli(files(tmp_path, dev="config:\n  - kubernetesVersion\n"), tmp_path, capsys, expected)


def test_a_missing_or_non_directory_project_dir_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert_refused_by_cli(missing, tmp_path, capsys, f"{missing}: does not exist (the project folder")
    a_file = tmp_path / "Pulumi.yaml"
    a_file.write_text(PROJECT_FILE)
    assert_refused_by_cli(a_file, tmp_path, capsys, f"{a_file}: is not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_refused_by_cli(empty, tmp_path, capsys, f"{empty}: holds no Pulumi.yaml")


def test_a_refused_file_exits_2_from_the_command_line_too(tmp_path):
    dev = DEV_FILE + "  settlement-platform:kubernetesVersion: '1.32'\n"
    files(tmp_path, dev=dev)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "infra", "render", "dev", "--out", str(out), "--project-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    first = line_of(dev, "kubernetesVersion")
    assert f"duplicate key 'settlement-platform:kubernetesVersion' (first at line {first})" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


# --- Config namespaces ----------------------------------------------------------------------------------------


def test_a_key_in_an_unknown_namespace_is_refused_naming_the_key_and_the_file(tmp_path, capsys):
    dev = DEV_FILE + "  settlement:gateway:\n    hostname: api.typo.example\n"
    assert_refused_by_cli(
        files(tmp_path, dev=dev),
        tmp_path,
        capsys,
        "Pulumi.dev.yaml: config key 'settlement:gateway': namespace 'settlement' is not one this program or its "
        "providers read (allowed: settlement-platform, pulumi, kubernetes)",
    )


def test_a_key_in_an_unknown_namespace_in_pulumi_yaml_is_refused(tmp_path, capsys):
    project = PROJECT_FILE.replace("config:\n", "config:\n  aws:region: eu-west-1\n", 1)
    assert_refused_by_cli(files(tmp_path, project=project), tmp_path, capsys, "Pulumi.yaml: config key 'aws:region'")


def test_the_engines_and_the_kubernetes_providers_namespaces_are_accepted(tmp_path):
    dev = DEV_FILE + "  kubernetes:context: minikube\n  pulumi:tags:\n    team: platform\n"
    values = read_stack_files("dev", files(tmp_path, dev=dev)).values
    assert values["kubernetes:context"] == "minikube"


def test_online_an_unknown_namespace_in_the_runtime_config_is_refused_before_anything_is_registered():
    """Under the engine there is no file to name: the program checks the config the SDK holds."""
    stack = read_stack_files("dev")
    values = {**stack.values, "settlement:gateway": {"hostname": "api.typo.example"}}
    with pytest.raises(ProgramFailed) as failure:
        run_program(StackConfig(stack.project, "dev", values, stack.secret_keys), run)
    assert isinstance(failure.value.cause, pulumi.RunError)
    assert failure.value.registrations == []
    assert "stack config: config key 'settlement:gateway': namespace 'settlement'" in str(failure.value.cause)
