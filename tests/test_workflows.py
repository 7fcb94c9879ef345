"""GitHub workflows: valid against GitHub's schema (offline), and doing what the team relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.stack_config import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))


def check(paths: list[Path]) -> subprocess.CompletedProcess:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(name: str) -> dict:
    # PyYAML reads the `on:` key as True (YAML 1.1); GitHub reads it as "on".
    data = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / name).read_text())
    data["on"] = data.pop(True)
    return data


def test_workflows_validate_against_the_github_schema():
    assert [p.name for p in WORKFLOWS] == ["deploy.yml", "preview.yml"]
    result = check(WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    stepz: []\n")
    assert check([broken]).returncode != 0


def test_pull_requests_get_the_offline_diff_as_a_sticky_comment_and_a_pulumi_preview():
    wf = load("preview.yml")
    assert "pull_request" in wf["on"]
    steps = wf["jobs"]["offline-diff"]["steps"]
    script = next(s["run"] for s in steps if s.get("id") == "diff")
    # Every stack file, found by the script itself (tests/test_stacks_discovery.py runs the discovery).
    assert "python -m infra diff" in script and "for file in Pulumi.*.yaml" in script
    sticky = next(s for s in steps if "sticky-pull-request-comment" in s.get("uses", ""))
    assert sticky["with"]["path"] == "preview.md"
    preview = wf["jobs"]["pulumi-preview"]
    action = next(s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions"))
    assert action["with"]["command"] == "preview" and action["with"]["comment-on-pr"] is True
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    # Credentials exist only for branches of this repository, not for forks.
    assert "head.repo.full_name == github.repository" in preview["if"]


def test_merges_deploy_dev_then_prod_behind_an_approval_gate():
    wf = load("deploy.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    jobs = wf["jobs"]
    assert jobs["up"]["needs"] == "test" and jobs["up"]["strategy"]["matrix"]["stack"] == ["dev"]
    assert jobs["up-prod"]["needs"] == "up"
    assert jobs["up-prod"]["environment"] == "production"
    for job in ("up", "up-prod"):
        action = next(s for s in jobs[job]["steps"] if s.get("uses", "").startswith("pulumi/actions"))
        assert action["with"]["command"] == "up" and action["with"]["policyPacks"] == "policy"
    assert wf["concurrency"]["cancel-in-progress"] is False, "never cancel a deployment half-way"


@pytest.mark.parametrize("workflow", ["preview.yml", "deploy.yml"])
def test_workflows_use_the_readme_commands(workflow):
    text = (PROJECT_ROOT / ".github" / "workflows" / workflow).read_text()
    assert "make " in text


# --- The policy pack's virtualenv ---------------------------------------------------------------------------


def makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)\s*$", (PROJECT_ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, f"Makefile does not set {name}"
    return match.group(1)


def test_the_policy_pack_runs_in_the_virtualenv_make_builds():
    # The Python language host joins a relative `virtualenv` to the pack's folder (pulumi
    # sdk/python/toolchain/pip.go resolveVirtualEnvironmentPath, root = the policy pack path).
    pack = PROJECT_ROOT / "policy"
    options = yaml.safe_load((pack / "PulumiPolicy.yaml").read_text())["runtime"]["options"]
    assert (pack / options["virtualenv"]).resolve() == (PROJECT_ROOT / makefile_variable("POLICY_VENV")).resolve()
