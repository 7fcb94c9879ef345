"""Stacks are the `Pulumi.<stack>.yaml` files: tests, golden files, policy config, bench and workflows follow them."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pulumi_kubernetes as k8s
import pytest
import yaml

from infra.offline import cli, golden, policy_config
from infra.stack_config import PROJECT_ROOT, plan_for_stack, stack_names
from policy import rules
from tests.cli import run_cli
from tests.conftest import DRILL_STACKS, PLATFORM_STACKS, STACKS, STACKS_DIR

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"


def workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True)
    return data


def stack_project(tmp_path, *stacks: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_ROOT / "Pulumi.yaml").read_text())
    for stack in stacks:
        (tmp_path / f"Pulumi.{stack}.yaml").write_text((PROJECT_ROOT / f"Pulumi.{stack_names()[0]}.yaml").read_text())
    return tmp_path


def test_stacks_are_the_stack_files(tmp_path):
    project = stack_project(tmp_path, "qa", "dev", "staging")
    (project / "Pulumi.yaml.bak").write_text("")
    assert stack_names(project) == ["dev", "qa", "staging"]
    assert list(STACKS) == stack_names(STACKS_DIR) and STACKS


def test_a_new_stack_file_is_a_stack_every_tool_accepts(tmp_path):
    project = stack_project(tmp_path, "dev", "staging")
    assert plan_for_stack("staging", project).config == plan_for_stack("dev", project).config


def test_golden_of_an_unknown_stack_is_one_line_and_exit_2():
    result = run_cli("golden", "no-such-stack")
    assert result.returncode == 2
    stacks = ", ".join(stack_names())
    assert result.stderr.strip() == f"stack 'no-such-stack' has no Pulumi.no-such-stack.yaml (stacks: {stacks})"


def test_an_unknown_stack_among_known_ones_is_refused_before_anything_is_written(monkeypatch):
    written = []
    monkeypatch.setattr(golden, "write", lambda stack, run: written.append(stack))
    assert cli.main(["golden", stack_names()[0], "no-such-stack", "--write"]) == 2
    assert written == []


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_the_benchmarks_scaled_topology_is_a_valid_config_of_every_stack(stack):
    """`make bench` compares the program at 10x the services: the generated copies must pass validation (every
    per-subsystem map outside the topology - alert routes, DR objectives - follows the copies)."""
    from infra.offline import bench
    from infra.stack_config import plan_of, read_stack_files

    config = read_stack_files(stack, STACKS_DIR)
    plan = plan_of(bench.scaled(config, 3))
    assert len(plan.subsystems) == 3 * len(plan_of(config).subsystems)


def test_every_benchmark_baseline_registers_what_the_program_registers(small_project):
    """The floors `make bench` compares with register the program's resources with the same types and inputs
    (flat, under numbered names); the typed one each Kubernetes object through pulumi-kubernetes' generated class for
    its kind. A behaviour of the bench, on its own small topology, for the stack the bench compares by default
    (prod's kinds: backups, disruption budgets); the baselines are built from whatever the program registered.

    The floor pays for a stack trace on every registration, as the program and any program registering through a
    class do: the SDK reports each resource's source position from it, here the floor's own loop. The bare
    baseline's registrations have none, and neither have any under `without_stack_traces`, which the bench's
    trace-free comparison relies on."""
    from infra.offline import bench
    from infra.offline.mocks import run_program
    from infra.program import run
    from infra.stack_config import read_stack_files

    config = read_stack_files(bench.default_scale_stack(stack_names(small_project.root)), small_project.root)
    first = run_program(config, lambda: run(offline=True, project_dir=small_project.root))
    objects = [r for r in first.registrations if r.is_kubernetes_object]
    generated = [r for r in objects if bench.typed_class(r.type) is not k8s.apiextensions.CustomResource]
    assert len(generated) > len(objects) / 2, "the typed floor would mostly register custom resources"
    assert any(not r.custom and r.inputs for r in first.registrations), "no component with inputs to compare"

    def registered(run, numbered: bool = True) -> list[tuple]:
        """Each registration's type, name (a baseline's without its number), kind and inputs."""
        return sorted(
            (r.type, r.name.rsplit("-", 1)[0] if numbered else r.name, r.custom, json.dumps(r.inputs, sort_keys=True))
            for r in run.registrations
        )

    assert all(r.source_position for r in first.registrations)
    floor_loop = Path(bench.__file__).as_uri()
    for style in ("floor", "typed", "bare"):
        baseline = run_program(config, bench.baseline_program(first, style))
        assert registered(baseline) == registered(first, numbered=False), style
        positions = {r.source_position.rsplit(":", 1)[0] for r in baseline.registrations}
        assert positions == ({""} if style == "bare" else {floor_loop}), (style, positions)
    with bench.without_stack_traces():
        untraced = run_program(config, bench.baseline_program(first))
    assert registered(untraced) == registered(first, numbered=False)
    assert {r.source_position for r in untraced.registrations} == {""}
    assert run_program(config, bench.baseline_program(first)).registrations[0].source_position, "not restored"


def test_the_typed_floor_keeps_every_field_of_a_custom_resource():
    """`apiextensions.CustomResource` takes no top-level field but metadata and spec: an object with another one is
    registered as it is, so the floor still registers exactly the program's inputs."""
    from infra.offline import bench
    from infra.offline.mocks import Registration, run_program
    from infra.stack_config import StackConfig

    inputs = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "data": {"a": "b"}}
    program = SimpleNamespace(
        registrations=[Registration("u", "kubernetes:example.com/v1:Widget", "w", "", True, inputs)]
    )
    [got] = run_program(
        StackConfig("unit", "test", {}, frozenset()), bench.baseline_program(program, "typed")
    ).registrations
    assert (got.type, got.inputs) == ("kubernetes:example.com/v1:Widget", inputs)


def test_the_typed_floor_finds_the_generated_class_of_each_built_in_kind():
    from infra.offline.bench import typed_class

    assert typed_class("kubernetes:core/v1:Secret") is k8s.core.v1.Secret
    assert typed_class("kubernetes:networking.k8s.io/v1:NetworkPolicy") is k8s.networking.v1.NetworkPolicy
    assert typed_class("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole") is k8s.rbac.v1.ClusterRole
    assert typed_class("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute") is k8s.apiextensions.CustomResource
    assert typed_class("kubernetes:monitoring.coreos.com/v1:ServiceMonitor") is k8s.apiextensions.CustomResource


@pytest.mark.parametrize("command", ["golden", "bench", "policy-config"])
def test_commands_over_stacks_default_to_every_stack_file(monkeypatch, tmp_path, command):
    from infra.offline import bench, render

    seen = []
    monkeypatch.setattr(cli, "stack_names", lambda: ["alpha", "beta", "gamma"])
    monkeypatch.setattr(render, "render_stack", lambda stack, *a: seen.append(stack) or SimpleNamespace())
    monkeypatch.setattr(golden, "write", lambda stack, run: None)
    monkeypatch.setattr(golden, "path", lambda stack: PROJECT_ROOT / "README.md")
    monkeypatch.setattr(bench, "measure", lambda stacks, *a: (seen.extend(stacks) or "", True))
    monkeypatch.setattr(policy_config, "text", lambda plan: "{}\n")
    monkeypatch.setattr(policy_config, "path", lambda stack: tmp_path / f"config.{stack}.json")
    monkeypatch.setattr("infra.stack_config.plan_for_stack", lambda stack, *a: seen.append(stack))
    assert cli.main([command, "--write"] if command != "bench" else [command]) == 0
    assert seen == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    ("returncode", "figure", "exit_code"), [(0, "`make test` wall time: 61.0 s", 0), (2, "FAILED", 1)]
)
def test_the_bench_reports_the_suites_time_only_when_it_passed(monkeypatch, capsys, returncode, figure, exit_code):
    """A failed or interrupted `make test` is quick, and its time no figure: the bench says so and exits 1."""
    from infra.offline import bench

    monkeypatch.setattr(
        bench,
        "compare",
        lambda label, config, repeat: bench.Comparison(label, 1, [1.0], [1.0], [1.0], [1.0], ([1.0], [1.0])),
    )
    monkeypatch.setattr(bench, "render_seconds", lambda stacks, repeat: {})
    monkeypatch.setattr(bench, "test_seconds", lambda: (61.0, returncode))
    monkeypatch.setattr(bench, "machine_seconds", lambda: 0.5)
    assert cli.main(["bench", "prod", "--tests"]) == exit_code
    out = capsys.readouterr().out
    assert figure in out and (returncode == 0) == ("wall time" in out)
    assert "machine: ten million Python additions in 0.50 s at the start, 0.50 s at the end" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--repeat", "0"], "argument --repeat: 0 is less than 1"),
        (["--copies", "-2"], "argument --copies: -2 is less than 1"),
        (["--repeat", "two"], "argument --repeat: 'two' is not a whole number"),
        (["--scale-stack", "nope"], "stack 'nope' has no Pulumi.nope.yaml"),
    ],
)
def test_the_bench_refuses_a_bad_count_or_stack_before_measuring(monkeypatch, capsys, argv, message):
    """No samples would end in a median of nothing (a traceback after the warm-ups), an unknown stack after a
    minute of other work: both refused with exit 2 before anything is timed."""
    from infra.offline import bench

    monkeypatch.setattr(bench, "measure", lambda *a: pytest.fail("measured despite a bad argument"))
    try:
        code = cli.main(["bench", "prod", *argv])
    except SystemExit as exit_:  # argparse refuses a bad value itself
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_the_bench_shows_how_far_one_rounds_ratio_strays_from_the_medians():
    from infra.offline import bench

    rounds = bench.Comparison(
        "prod", 3, [1.2, 1.5, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.8, 0.8, 0.8], ([1.1, 1.1, 1.1], [1.0] * 3)
    )
    assert rounds.ratio == 1.2 and rounds.round_ratios == (1.0, 1.5)
    lines = bench.report([rounds, dataclasses.replace(rounds, label="prod x10", program=[1.3] * 3)], {}).splitlines()
    assert "**over the floor** (target <= 1.25)" in lines[0] and lines[0].count("|") == lines[2].count("|")
    assert lines[2].startswith("| prod | 3 | 1.200 | 1.000 | 1.20 | 1.00-1.50 over 3 |"), lines[2]
    assert lines[2].endswith("| 0.800 | 1.50 | 1.10 |"), lines[2]
    assert "at most 1.25: prod 1.20 met; prod x10 1.30 NOT met." in lines[5], lines[5]
    edge = dataclasses.replace(rounds, program=[1.2549] * 3), dataclasses.replace(rounds, program=[1.2551] * 3)
    assert "prod 1.25 met; prod 1.26 NOT met." in bench.report(list(edge), {})


def test_every_stack_has_a_golden_subset_and_no_other_golden_file_exists():
    assert sorted(p.stem for p in golden.GOLDEN_DIR.glob("*.json")) == stack_names()
    assert golden.REGENERATE == "make golden"


def test_make_golden_rewrites_every_generated_per_stack_file():
    result = subprocess.run(["make", "-n", "golden"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "-m infra golden --write" in result.stdout
    assert "-m infra policy-config --write" in result.stdout


# --- Policy pack configuration ------------------------------------------------------------------------------


def test_every_stack_has_its_generated_policy_config():
    for stack in stack_names():
        path = policy_config.path(stack)
        assert path.exists(), f"{path} is missing: run `make golden`"
        assert path.read_text() == policy_config.text(plan_for_stack(stack)), f"{path} is stale: run `make golden`"
    # Sorted by file name on both sides: `prod-dr` and `prod-drill` sort before `prod` once `.json` follows.
    assert sorted(p.name for p in (PROJECT_ROOT / "policy").glob("config.*.json")) == sorted(
        f"config.{s}.json" for s in stack_names()
    )


def test_only_configurable_rules_follow_a_guardrail():
    assert set(policy_config.RELAXED_BY_GUARDRAIL) == {r.name for r in rules.RULES if r.configurable}


def test_a_relaxed_guardrail_disables_exactly_its_rule(project):
    project.set_stack_key("prod", "guardrails", {"requireImageDigest": False})
    assert policy_config.policy_config(plan_for_stack("prod", project.root)) == {
        "images-pinned-by-digest": {"enforcementLevel": "disabled"}
    }
    project.set_stack_key("prod", "guardrails", {"protectStatefulResources": False})
    assert policy_config.policy_config(plan_for_stack("prod", project.root)) == {
        "stateful-resources-protected": {"enforcementLevel": "disabled"}
    }
    project.set_stack_key("prod", "guardrails", {})
    assert policy_config.policy_config(plan_for_stack("prod", project.root)) == {}


def test_a_stale_policy_config_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(policy_config, "path", lambda stack: tmp_path / f"config.{stack}.json")
    stack = stack_names()[0]
    (tmp_path / f"config.{stack}.json").write_text('{"stale": true}\n')
    assert cli.main(["policy-config", stack]) == 1
    assert cli.main(["policy-config", stack, "--write"]) == 0
    assert cli.main(["policy-config", stack]) == 0


# --- Workflows ----------------------------------------------------------------------------------------------


def _discover(directory, output) -> list[str]:
    """Run the preview workflow's stack discovery step as GitHub would, in `directory`."""
    step = next(s for s in workflow("preview.yml")["jobs"]["stacks"]["steps"] if s.get("id") == "stacks")
    output.write_text("")
    subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=directory,
        env={**os.environ, "GITHUB_OUTPUT": str(output)},
        check=True,
        timeout=60,
    )
    key, _, value = output.read_text().strip().partition("=")
    assert key == "stacks"
    return json.loads(value)


def test_the_preview_matrix_is_derived_from_the_stack_files(tmp_path):
    output = tmp_path / "github-output"
    assert _discover(PROJECT_ROOT, output) == stack_names()
    project = stack_project(tmp_path / "project", "dev", "prod", "staging")
    assert _discover(project, output) == ["dev", "prod", "staging"]
    job = workflow("preview.yml")["jobs"]["pulumi-preview"]
    assert job["needs"] == "stacks"
    assert job["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"


def test_the_offline_diff_loops_over_the_stack_files(tmp_path):
    steps = workflow("preview.yml")["jobs"]["offline-diff"]["steps"]
    script = next(s["run"] for s in steps if s.get("id") == "diff")
    loop = script.split("for file in", 1)[1].split("; do", 1)[0]
    listed = subprocess.run(
        ["bash", "-c", f'for file in {loop}; do stack="${{file#Pulumi.}}"; echo "${{stack%.yaml}}"; done'],
        cwd=stack_project(tmp_path, "dev", "staging"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed == ["dev", "staging"]


def test_every_stack_is_deployed_exactly_once():
    jobs = workflow("deploy.yml")["jobs"]
    deployed = [s for job in ("up", "up-prod", "up-prod-dr") for s in jobs[job]["strategy"]["matrix"]["stack"]]
    drills = workflow("restore-drill.yml")["jobs"]
    drilled = drills["drill"]["strategy"]["matrix"]["stack"]
    assert sorted(deployed) == list(PLATFORM_STACKS), (
        "deploy.yml names its stacks on purpose (before or behind the production approval gate): add the new "
        'stack to the `up` or `up-prod` matrix (`up-prod-dr`: the standby site, README "Disaster recovery")'
    )
    # A drill stack is brought up (and destroyed) by the restore-drill workflow alone, and checked for freshness.
    assert sorted(drilled) == list(DRILL_STACKS) == sorted(drills["freshness"]["strategy"]["matrix"]["stack"])
    assert sorted(deployed + drilled) == stack_names()


@pytest.mark.parametrize(
    ("workflow_name", "job"),
    [("deploy.yml", "up"), ("preview.yml", "pulumi-preview"), ("restore-drill.yml", "drill")],
)
def test_each_stack_is_previewed_and_deployed_with_its_policy_config(workflow_name, job):
    steps = workflow(workflow_name)["jobs"][job]["steps"]
    action = next(s for s in steps if s.get("uses", "").startswith("pulumi/actions"))
    assert action["with"]["policyPackConfigs"] == "policy/config.${{ matrix.stack }}.json"


# --- README -------------------------------------------------------------------------------------------------


def test_readme_explains_adding_a_stack():
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Adding a stack", 1)[1].split("\n## ", 1)[0]
    for step in ("Pulumi.dev.yaml", "make golden", "policy/config.", "deploy.yml", "tests/golden/"):
        assert step in section, f"'Adding a stack' does not mention {step}"
