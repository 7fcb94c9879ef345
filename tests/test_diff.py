"""The offline preview diff: field-level changes, per-subsystem summary, and danger for stateful loss."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest

from components.release_manifest import MIRROR_ENV
from infra.offline.diff import diff, report
from infra.offline.mocks import DEFAULT_MANIFEST_MIRROR


def resources(run) -> list[dict]:
    return [r.to_json() for r in run.registrations]


def test_an_unchanged_stack_has_no_changes(prod):
    assert diff(resources(prod), resources(prod)) == []


def test_bumping_a_replica_count_is_one_changed_field(prod, project):
    data = project.load("Pulumi.prod.yaml")
    data["config"]["settlement-platform:monitoring"] = {"prometheusReplicas": 3}
    project.save("Pulumi.prod.yaml", data)
    changes = diff(resources(prod), resources(project.render("prod")))
    assert len(changes) == 1
    (change,) = changes
    assert change.action == "changed" and not change.dangers
    assert change.label == "Release platform-infrastructure-monitoring-release"
    assert [(f.path, f.before, f.after) for f in change.fields] == [("values.prometheus.prometheusSpec.replicas", 2, 3)]
    assert "`values.prometheus.prometheusSpec.replicas`: `2` → `3`" in report("prod", "main", changes)


def test_a_service_minimum_moves_its_autoscaler_and_budget_only(prod, project):
    topology = project.topology()
    topology["payment"]["services"]["payment-api"]["replicas"] = {"min": 4}
    project.set_topology(topology)
    changes = diff(resources(prod), resources(project.render("prod")))
    fields = {(c.label, f.path, f.before, f.after) for c in changes for f in c.fields}
    assert fields == {
        ("HorizontalPodAutoscaler payment/payment-api", "spec.minReplicas", 3, 4),
        ("PodDisruptionBudget payment/payment-api", "spec.minAvailable", 2, 3),
    }
    assert {c.subsystem for c in changes} == {"payment"}


def test_a_changed_selector_is_a_forced_replacement(prod):
    head = copy.deepcopy(resources(prod))
    deployment = next(r for r in head if r["inputs"].get("kind") == "Deployment")
    deployment["inputs"]["spec"]["selector"]["matchLabels"]["tier"] = "api"
    (change,) = diff(resources(prod), head)
    assert change.action == "replaced"
    assert any("spec.selector" in d and "forces a replacement" in d for d in change.dangers)


def test_a_changed_service_type_is_a_forced_replacement(prod):
    head = copy.deepcopy(resources(prod))
    service = next(r for r in head if r["inputs"].get("kind") == "Service")
    service["inputs"]["spec"]["type"] = "NodePort"
    (change,) = diff(resources(prod), head)
    assert change.action == "replaced" and "spec.type" in change.dangers[0]


def test_dropping_a_database_is_danger_and_says_whether_protect_holds(prod, dev, project):
    topology = project.topology()
    del topology["business"]["postgres"]
    for svc in topology["business"]["services"].values():
        svc["database"] = False
    project.set_topology(topology)
    changes = diff(resources(prod), resources(project.render("prod")))
    dangers = [d for c in changes for d in c.dangers]
    assert "deletes stateful Cluster business/business-db (blocked by protect)" in dangers
    text = report("prod", "main", changes)
    assert "#### :warning: Danger" in text and "| business |" in text
    dev_changes = diff(resources(dev), resources(project.render("dev")))
    assert "deletes stateful Cluster business/business-db (NOT protected)" in [
        d for c in dev_changes for d in c.dangers
    ]


@pytest.fixture
def git_project(tmp_path):
    """A throwaway git repository holding this project's tracked files, committed once."""
    repo = tmp_path / "repo"
    repo.mkdir()
    from infra.stack_config import PROJECT_ROOT

    files = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive.stdout, check=True)
    for name in files.stdout.split():  # the working tree's version, so the test sees uncommitted code too
        source = PROJECT_ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes(source.read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=repo, check=True)
    return repo


def run_diff(repo, stack: str) -> subprocess.CompletedProcess:
    """`python -m infra diff <stack> --base HEAD` in `repo`, as CI runs it on a pull request (the copy has no
    ../shared beside it, so it is pointed at this checkout's manifest mirror)."""
    return subprocess.run(
        [sys.executable, "-m", "infra", "diff", stack, "--base", "HEAD", "--project-dir", str(repo)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, MIRROR_ENV: str(DEFAULT_MANIFEST_MIRROR)},
    )


def test_renaming_a_prod_database_exits_non_zero_with_danger(git_project):
    import yaml

    project_file = git_project / "Pulumi.yaml"
    data = yaml.safe_load(project_file.read_text())
    topology = data["config"]["subsystems"]["value"]
    topology["settlement"] = topology.pop("business")
    topology["payment"]["services"]["payment-api"]["calls"] = ["settlement/settlement-api"]
    project_file.write_text(yaml.safe_dump(data))
    stack_file = git_project / "Pulumi.prod.yaml"
    prod = yaml.safe_load(stack_file.read_text())
    routes = prod["config"]["settlement-platform:alerting"]["routes"]
    routes["settlement"] = routes.pop("business")
    stack_file.write_text(yaml.safe_dump(prod))

    result = run_diff(git_project, "prod")
    assert result.returncode == 1, result.stderr
    assert "deletes stateful Cluster business/business-db (blocked by protect)" in result.stdout
    assert "deletes stateful RabbitmqCluster business/business-mq (blocked by protect)" in result.stdout
    assert "| settlement |" in result.stdout


def test_no_change_exits_zero(git_project):
    result = run_diff(git_project, "dev")
    assert result.returncode == 0, result.stderr
    assert "No changes." in result.stdout
