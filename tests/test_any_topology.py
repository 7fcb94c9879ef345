"""The whole-stack tests hold for any valid topology, not only the sample one (issue 11).

Seven ordinary changes (`tests/topology_changes.py`: a new service and call, a new queue and consumer, a new
subsystem with its own database and queue, a third stack, a removed service, a prod-only override, a changed
default) are applied together to a copy of the stack files; its golden subsets are regenerated into the copy, as
`make golden` would; then every whole-stack test (marker `whole_stack`: those that use the real stacks through
`rendered`, `stack_run`, `plans` or `stack_plan`) runs against the copy in a child pytest. A test that hard-codes a
name of the sample topology fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from infra.offline import golden, policy_config, render
from infra.offline.caches import child_env
from infra.stack_config import PROJECT_ROOT, plan_for_stack, stack_names
from tests import topology_changes
from tests.conftest import STACKS_DIR_ENV

CAPTURE = {"capture_output": True, "text": True}


def changed_project(root):
    root.mkdir()
    for path in PROJECT_ROOT.glob("Pulumi*.yaml"):
        shutil.copy(path, root / path.name)
    (root / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / ".github" / "workflows" / "deploy.yml", root / ".github" / "workflows" / "deploy.yml")
    topology_changes.apply_all(root)
    return root


def test_the_changes_are_what_they_say(tmp_path):
    """Each change really changes the plan (a change that silently did nothing would prove nothing)."""
    root = changed_project(tmp_path / "project")
    before, after = plan_for_stack("dev"), plan_for_stack("dev", root)
    services = {(s.subsystem, s.name) for s in before.services()}
    changed = {(s.subsystem, s.name) for s in after.services()}
    assert len(changed - services) == 4 and len(services - changed) == 1
    assert set(after.subsystems) - set(before.subsystems) == {"treasury"}
    assert stack_names(root) == sorted({*stack_names(), "staging"})
    assert plan_for_stack("prod", root).config.overrides
    assert after.config.defaults.workload.max_replicas != before.config.defaults.workload.max_replicas


@pytest.mark.slow  # renders of its own and every whole-stack test once more: most of a minute
def test_every_whole_stack_test_holds_after_seven_ordinary_changes(tmp_path):
    root = changed_project(tmp_path / "project")
    golden_dir = root / "tests" / "golden"
    golden_dir.mkdir(parents=True)
    (root / "policy").mkdir()
    for stack in stack_names(root):  # what `make golden` writes, into the copy
        subset = golden.subset(render.render_stack(stack, root))
        (golden_dir / f"{stack}.json").write_text(json.dumps(subset, indent=2, sort_keys=True) + "\n")
        (root / "policy" / f"config.{stack}.json").write_text(policy_config.text(plan_for_stack(stack, root)))
    selection = ["-p", "no:cacheprovider", "-m", "whole_stack", "tests"]
    env = {**child_env(), STACKS_DIR_ENV: str(root)}
    pytest_cmd = [sys.executable, "-m", "pytest", "-q"]
    # Under pytest-xdist (`make test`) the other workers keep the other cores busy while this one waits: one
    # process (an xdist run inside would start and collect in three more, and compete with them). Run alone, on
    # every core.
    parallel = ["-p", "no:xdist"] if os.environ.get("PYTEST_XDIST_WORKER") else ["-n", "auto", "--dist", "worksteal"]
    result = subprocess.run(
        [*pytest_cmd, *parallel, "--durations=10", *selection], cwd=PROJECT_ROOT, env=env, timeout=1200, **CAPTURE
    )
    assert result.returncode == 0, f"whole-stack tests fail on the changed topology:\n{result.stdout[-6000:]}"
    # Every selected whole-stack test ran and passed: the summary counts nothing but passed tests, the deselected
    # rest and warnings (no skipped, xfailed or errored test, none lost at collection).
    summary = result.stdout.strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}
    assert counts.get("passed", 0) > 0 and set(counts) <= {"passed", "deselected", "warning", "warnings"}, summary
