"""The one mocks harness every test uses: real stack files in, recorded registrations out."""

from __future__ import annotations

import copy
import gc
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from components.release_manifest import SOURCE_ANNOTATION
from infra.offline.audit import Audit, audit
from infra.offline.caches import CHART_CACHE_ENV, RENDER_CACHE_ENV
from infra.offline.diff import BASE_CACHE_ENV
from infra.offline.mocks import ProgramRun
from infra.offline.render import render_stack
from infra.stack_config import PROJECT_ROOT, plan_for_stack, stack_names
from infra.topology import PlatformPlan
from tests.fixture_config import SMALL_TOPOLOGY

# The project whose stacks the whole-stack tests check: this one, or (tests/test_any_topology.py) a changed copy.
STACKS_DIR_ENV = "SETTLEMENT_TEST_STACKS_DIR"
STACKS_DIR = Path(os.environ.get(STACKS_DIR_ENV) or PROJECT_ROOT)
# Every Pulumi.<stack>.yaml: a new stack file is under every whole-stack test without editing one.
STACKS = tuple(stack_names(STACKS_DIR))


def _is_drill(stack: str) -> bool:
    """A restore-drill stack (`drill` in its file) builds the drill alone, not an environment (infra/drill.py)."""
    config = (yaml.safe_load((STACKS_DIR / f"Pulumi.{stack}.yaml").read_text()) or {}).get("config") or {}
    return "settlement-platform:drill" in config


# Environments (`stack_run`: the properties of a whole platform) and restore drills (`drill_run`); checks that hold
# for anything the program renders (schemas, Pod Security, checkov, reachability) take `any_stack_run`.
DRILL_STACKS = tuple(s for s in STACKS if _is_drill(s))
PLATFORM_STACKS = tuple(s for s in STACKS if s not in DRILL_STACKS)
# Fixtures that hand a test the real stacks: a test using one is a whole-stack test, marked `whole_stack`, and must
# hold for any valid topology (it checks properties computed from the plan, never names of the sample topology).
WHOLE_STACK_FIXTURES = {"rendered", "stack_run", "plans", "stack_plan", "any_stack_run", "drill_run"}
# ... except behaviour tests that compare a mutated copy of the sample stacks (`project`) with the sample itself.
SAMPLE_FIXTURES = {"dev", "prod", "project"}


# Set by the pytest run that made the run's cache folders, for the runs it starts (the changed-topology child run).
TEST_RUN_ENV = "SETTLEMENT_TEST_RUN"


def pytest_configure(config):
    # The controlling process (or a lone one) makes the run's render cache folder, whatever the shell has set;
    # xdist workers and child pytest runs inherit it through the environment: every test, worker and in-process
    # command rendering the same stack files shares one render (infra/offline/render.py, `render_stack`).
    # The diff's base renders are kept the same way, by git tree (infra/offline/diff.py).
    # So are chart expansions (infra/offline/charts.py): per run, not the user's caches, so a run never depends on
    # what an earlier one left behind.
    if not hasattr(config, "workerinput") and not os.environ.get(TEST_RUN_ENV):
        for variable in (RENDER_CACHE_ENV, BASE_CACHE_ENV, CHART_CACHE_ENV):
            folder = tempfile.mkdtemp(prefix="settlement-test-cache-")
            os.environ[variable] = folder
            config.add_cleanup(lambda folder=folder: shutil.rmtree(folder, ignore_errors=True))
        os.environ[TEST_RUN_ENV] = "1"
    # The suite runs the program about 150 times, and with CPython's default thresholds (700, 10, 10) a third of
    # each run is the cyclic garbage collector walking the heap - the SDK's futures and Outputs make many young
    # objects. Fewer young-generation collections; every cycle is still collected (a render measured ~0.9 s -> ~0.65 s).
    gc.set_threshold(20_000, 20, 20)
    config.addinivalue_line("markers", "whole_stack: checks the real stacks; holds for any valid topology")
    config.addinivalue_line("markers", "slow: most of a minute (`make test` runs it; `pytest -m 'not slow'` skips)")


def pytest_collection_finish(session):
    # What is alive once the tests are collected (modules, the SDK, pydantic models) lives for the whole run: kept
    # out of the collector's walks (gc.freeze), so a collection costs what the test allocated, not the whole heap.
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(items):
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if WHOLE_STACK_FIXTURES & names and not SAMPLE_FIXTURES & names:
            item.add_marker(pytest.mark.whole_stack)
    # Slow tests first: under pytest-xdist the worker that takes one works through it while the others share the
    # rest, instead of the run waiting on it at the end. (A stable sort: the order is otherwise unchanged.)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def one_edited(entries: list[dict], pick) -> tuple[list[dict], dict]:
    """`entries` (a render's resources) with the first entry `pick` accepts replaced by a deep copy to edit, and
    that copy: a diff test changes one resource without deep-copying a whole stack's (megabytes of CRDs)."""
    index = next(i for i, entry in enumerate(entries) if pick(entry))
    head = list(entries)
    head[index] = copy.deepcopy(entries[index])
    return head, head[index]


def platform_deployments(run: ProgramRun) -> list[dict]:
    """The Deployments the platform writes itself; operators applied from upstream release manifests are not
    platform workloads (they carry the manifest's URL in `SOURCE_ANNOTATION`)."""
    return [d for d in run.objects("Deployment") if SOURCE_ANNOTATION not in d["metadata"].get("annotations", {})]


@pytest.fixture(scope="session")
def rendered() -> dict[str, ProgramRun]:
    """Each real stack rendered once per session (the program is deterministic)."""
    return {stack: render_stack(stack, STACKS_DIR) for stack in STACKS}


@pytest.fixture(scope="session")
def plans() -> dict[str, PlatformPlan]:
    """Each real stack's resolved plan (every default applied): what the whole-stack tests expect comes from it."""
    return {stack: plan_for_stack(stack, STACKS_DIR) for stack in STACKS}


@pytest.fixture(params=PLATFORM_STACKS)
def stack_run(request, rendered) -> ProgramRun:
    """Each environment stack's render."""
    return rendered[request.param]


@pytest.fixture(params=STACKS)
def any_stack_run(request, rendered) -> ProgramRun:
    """Each stack's render, environments and drills alike."""
    return rendered[request.param]


@pytest.fixture(params=DRILL_STACKS)
def drill_run(request, rendered) -> ProgramRun:
    """Each restore-drill stack's render."""
    return rendered[request.param]


class Audits(dict):
    """Each stack's reachability audit (`infra.offline.audit.audit`) of its render as it is, made the first time a
    test asks for it and shared by every later one in the process: about a dozen tests a stack read the same audit.
    A test that audits a changed copy of the policies calls `audit` itself."""

    def __init__(self, rendered: dict[str, ProgramRun], plans: dict[str, PlatformPlan]):
        super().__init__()
        self._rendered, self._plans = rendered, plans

    def __missing__(self, stack: str) -> Audit:
        self[stack] = audit(self._rendered[stack], self._plans[stack])
        return self[stack]


@pytest.fixture(scope="session")
def audits(rendered, plans) -> Audits:
    return Audits(rendered, plans)


@pytest.fixture
def stack_plan(stack_run, plans) -> PlatformPlan:
    """The plan of the stack `stack_run` renders."""
    return plans[stack_run.stack]


# The sample stacks by name, for behaviour tests that mutate a copy of them (`project`) and compare. A whole-stack
# property uses `stack_run`/`stack_plan` instead: it must hold for every stack, whatever it is called.
@pytest.fixture(scope="session")
def dev(rendered) -> ProgramRun:
    return rendered["dev"]


@pytest.fixture(scope="session")
def prod(rendered) -> ProgramRun:
    return rendered["prod"]


class ProjectCopy:
    """A throwaway copy of the project's Pulumi files, to render a mutated config."""

    def __init__(self, root: Path):
        self.root = root
        for name in ("Pulumi.yaml", *(f"Pulumi.{stack}.yaml" for stack in stack_names())):
            shutil.copy(PROJECT_ROOT / name, root / name)

    def load(self, name: str) -> dict:
        return yaml.safe_load((self.root / name).read_text())

    def save(self, name: str, data: dict) -> None:
        (self.root / name).write_text(yaml.safe_dump(data, sort_keys=False))

    def topology(self) -> dict:
        return copy.deepcopy(self.load("Pulumi.yaml")["config"]["subsystems"]["value"])

    def set_topology(self, subsystems: dict) -> None:
        data = self.load("Pulumi.yaml")
        data["config"]["subsystems"]["value"] = subsystems
        self.save("Pulumi.yaml", data)

    def set_stack_key(self, stack: str, key: str, value) -> None:
        data = self.load(f"Pulumi.{stack}.yaml")
        data.setdefault("config", {})[f"settlement-platform:{key}"] = value
        self.save(f"Pulumi.{stack}.yaml", data)

    def render(self, stack: str) -> ProgramRun:
        return render_stack(stack, self.root)


@pytest.fixture
def project(tmp_path) -> ProjectCopy:
    return ProjectCopy(tmp_path)


@pytest.fixture
def small_project(project) -> ProjectCopy:
    """The sample's stack files (sizes, guardrails, receivers) around `SMALL_TOPOLOGY` instead of the sample
    topology: a behaviour test renders the few services it is about, under names the sample may drop."""
    project.set_topology(copy.deepcopy(SMALL_TOPOLOGY))
    for stack in stack_names():
        data = project.load(f"Pulumi.{stack}.yaml")
        config = data["config"]
        config.pop("settlement-platform:overrides", None)  # they patch the sample's services
        if "settlement-platform:alerting" not in config:
            continue  # a drill stack routes no alerts
        routes = config["settlement-platform:alerting"]["routes"]
        routes.update({name: dict(routes["platform"]) for name in SMALL_TOPOLOGY})
        for name in [r for r in routes if r not in SMALL_TOPOLOGY and r != "platform"]:
            del routes[name]
        dr = config.get("settlement-platform:dr")
        if dr is not None:  # a disaster-recovery site states every subsystem's objectives
            strictest = min(dr["objectives"].values(), key=lambda o: o["rpoSeconds"])
            dr["objectives"] = {name: dict(strictest) for name in SMALL_TOPOLOGY}
        project.save(f"Pulumi.{stack}.yaml", data)
    return project
