"""Seven ordinary changes to the topology and the stacks, each applied to a copy of the project's files.

Issue 11: the tests must hold for any valid topology, not only for the sample one. `tests/test_any_topology.py`
applies these changes together to a temporary copy and runs the whole-stack properties on it; applied one at a
time to a throwaway clone (`python -m tests.topology_changes <dir> <change>`, then `make golden` and `make test`
there), each must leave `make test` green - that is what "Changing the topology" in README promises.

The changes edit only what an engineer would: `Pulumi.yaml`, the stack files and, for a new stack, the deploy
workflow's matrix (README "Adding a stack", step 4).
"""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

NS = "settlement-platform"
DIGEST = "@sha256:" + "ab" * 32


def _load(root: Path, name: str) -> dict:
    return yaml.safe_load((root / name).read_text())


def _save(root: Path, name: str, data: dict) -> None:
    (root / name).write_text(yaml.safe_dump(data, sort_keys=False))


def _edit_topology(root: Path, edit: Callable[[dict], None]) -> None:
    data = _load(root, "Pulumi.yaml")
    edit(data["config"]["subsystems"]["value"])
    _save(root, "Pulumi.yaml", data)


def rename_subsystem(root: Path, old: str, new: str) -> None:
    """Rename a subsystem everywhere an engineer would: its key in Pulumi.yaml, every `old/...` reference of a
    service (calls, publishes, consumes), and its per-subsystem entries in the stack files (alert routes,
    disaster-recovery objectives). Not one of the seven changes: it moves stateful objects, which the safety
    tests show is blocked in prod."""

    def edit(subsystems: dict) -> None:
        subsystems[new] = subsystems.pop(old)
        for sub in subsystems.values():
            for svc in (sub.get("services") or {}).values():
                for field in ("calls", "publishes", "consumes"):
                    if field in svc:
                        svc[field] = [
                            f"{new}/{ref.split('/', 1)[1]}" if ref.startswith(f"{old}/") else ref for ref in svc[field]
                        ]

    _edit_topology(root, edit)
    for stack in _stacks(root):
        data = _load(root, f"Pulumi.{stack}.yaml")
        config = data.get("config") or {}
        for key, path in ((f"{NS}:alerting", "routes"), (f"{NS}:dr", "objectives")):
            per_subsystem = (config.get(key) or {}).get(path) or {}
            if old in per_subsystem:
                per_subsystem[new] = per_subsystem.pop(old)
        _save(root, f"Pulumi.{stack}.yaml", data)


def _stacks(root: Path) -> list[str]:
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))


def _image(subsystem: str, service: str) -> str:
    return f"registry.settlement.example/{subsystem}/{service}{DIGEST}"


def _first_subsystem_with_a_service(subsystems: dict) -> tuple[str, str]:
    for sub_name, sub in subsystems.items():
        for svc_name in sub.get("services", {}):
            return sub_name, svc_name
    raise AssertionError("the topology has no service")


def add_service_with_a_call(root: Path) -> None:
    """A new service with a database, called by an existing service."""

    def edit(subsystems: dict) -> None:
        caller_sub, caller = _first_subsystem_with_a_service(subsystems)
        subsystems[caller_sub].setdefault("postgres", {})
        subsystems[caller_sub]["services"]["ledger-api"] = {
            "image": _image(caller_sub, "ledger-api"),
            "database": True,
        }
        calls = subsystems[caller_sub]["services"][caller].setdefault("calls", [])
        calls.append("ledger-api")

    _edit_topology(root, edit)


def add_queue_and_consumer(root: Path) -> None:
    """A new queue in an existing queue cluster, published by an existing service, consumed by a new one."""

    def edit(subsystems: dict) -> None:
        sub_name = next(name for name, sub in subsystems.items() if sub.get("queue"))
        sub = subsystems[sub_name]
        sub["queue"].setdefault("queues", {})["refund-requests"] = {}
        publisher = next(iter(sub["services"].values()))
        publisher.setdefault("publishes", []).append("refund-requests")
        sub["services"]["refund-worker"] = {"image": _image(sub_name, "refund-worker"), "consumes": ["refund-requests"]}

    _edit_topology(root, edit)


def add_subsystem(root: Path) -> None:
    """A new subsystem with its own PostgreSQL and RabbitMQ clusters, an exposed API and a queue consumer; every
    stack routes its alerts (a subsystem without a route is refused) and every disaster-recovery stack states its
    objectives."""

    def edit(subsystems: dict) -> None:
        subsystems["treasury"] = {
            "postgres": {},
            "queue": {"queues": {"liquidity-checks": {}}},
            "services": {
                "treasury-api": {
                    "image": _image("treasury", "treasury-api"),
                    "database": True,
                    "publishes": ["liquidity-checks"],
                    "expose": {"path": "/treasury"},
                },
                "liquidity-engine": {
                    "image": _image("treasury", "liquidity-engine"),
                    "critical": True,
                    "database": True,
                    "consumes": ["liquidity-checks"],
                    "egress": {"central-bank": {"cidrs": ["192.0.2.64/26"], "ports": [443]}},
                },
            },
        }

    _edit_topology(root, edit)
    for stack in _stacks(root):
        data = _load(root, f"Pulumi.{stack}.yaml")
        if f"{NS}:alerting" not in data["config"]:
            continue  # a drill stack routes no alerts
        routes = data["config"][f"{NS}:alerting"]["routes"]
        routes["treasury"] = dict(routes["platform"])
        # A disaster-recovery site states every subsystem's RTO and RPO (a missing one is refused).
        dr = data["config"].get(f"{NS}:dr")
        if dr is not None:
            dr["objectives"]["treasury"] = dict(max(dr["objectives"].values(), key=lambda o: o["rpoSeconds"]))
        _save(root, f"Pulumi.{stack}.yaml", data)


NEW_STACK_SOURCE = "dev"
"""The stack file `add_stack` copies (the README's example)."""


def add_stack(root: Path) -> None:
    """README "Adding a stack": a copy of dev, deployed before the approval gate."""
    shutil.copy(root / f"Pulumi.{NEW_STACK_SOURCE}.yaml", root / "Pulumi.staging.yaml")
    data = _load(root, "Pulumi.staging.yaml")
    data["config"][f"{NS}:gateway"]["hostname"] = "api.staging.settlement.example"
    _save(root, "Pulumi.staging.yaml", data)
    deploy = root / ".github" / "workflows" / "deploy.yml"
    if deploy.exists():
        text = deploy.read_text()
        assert "stack: [dev]" in text, "deploy.yml's `up` matrix moved: update tests/topology_changes.py"
        deploy.write_text(text.replace("stack: [dev]", "stack: [dev, staging]", 1))


def remove_service(root: Path) -> None:
    """Remove a queue consumer at the end of a chain (it publishes nothing, calls and is called by no one, and is
    not alone in its subsystem) together with the queues it consumed: a queue that is published to and consumed
    by no one is refused, so its publishers stop publishing to it too."""

    def edit(subsystems: dict) -> None:
        called = {
            ref if "/" in ref else f"{sub_name}/{ref}"
            for sub_name, sub in subsystems.items()
            for svc in sub.get("services", {}).values()
            for ref in svc.get("calls", [])
        }
        sub_name, svc_name = next(
            (sub_name, svc_name)
            for sub_name, sub in subsystems.items()
            for svc_name, svc in sub.get("services", {}).items()
            if svc.get("consumes")
            and not svc.get("publishes")
            and not svc.get("calls")
            and f"{sub_name}/{svc_name}" not in called
            and len(sub["services"]) > 1
        )
        removed = subsystems[sub_name]["services"].pop(svc_name)

        def refs(key: str) -> set[str]:
            return {
                ref if "/" in ref else f"{owner}/{ref}"
                for owner, sub in subsystems.items()
                for svc in sub.get("services", {}).values()
                for ref in svc.get(key, [])
            }

        orphaned = {ref if "/" in ref else f"{sub_name}/{ref}" for ref in removed["consumes"]} - refs("consumes")
        for ref in orphaned:
            q_sub, q_name = ref.split("/")
            del subsystems[q_sub]["queue"]["queues"][q_name]
        for owner, sub in subsystems.items():
            for svc in sub.get("services", {}).values():
                if "publishes" in svc:
                    svc["publishes"] = [
                        r for r in svc["publishes"] if (r if "/" in r else f"{owner}/{r}") not in orphaned
                    ]

    _edit_topology(root, edit)


def raise_max_replicas_in_prod(root: Path) -> None:
    """Per-stack override (README "Per-stack overrides"): one service scales further in prod."""
    sub_name, svc_name = _first_subsystem_with_a_service(_load(root, "Pulumi.yaml")["config"]["subsystems"]["value"])
    data = _load(root, "Pulumi.prod.yaml")
    data["config"][f"{NS}:overrides"] = {sub_name: {"services": {svc_name: {"replicas": {"max": 12}}}}}
    _save(root, "Pulumi.prod.yaml", data)


def change_a_default(root: Path) -> None:
    """Dev's defaults: services scale further, queue volumes grow."""
    data = _load(root, "Pulumi.dev.yaml")
    defaults = data["config"][f"{NS}:defaults"]
    defaults["workload"]["maxReplicas"] = 4
    defaults["queue"]["storageSize"] = "4Gi"
    _save(root, "Pulumi.dev.yaml", data)


CHANGES: dict[str, Callable[[Path], None]] = {
    "add-service-with-a-call": add_service_with_a_call,
    "add-queue-and-consumer": add_queue_and_consumer,
    "add-subsystem": add_subsystem,
    "add-stack": add_stack,
    "remove-service": remove_service,
    "raise-max-replicas-in-prod": raise_max_replicas_in_prod,
    "change-a-default": change_a_default,
}


def apply_all(root: Path) -> None:
    before = {stack: _min_requests(root, stack) for stack in _budgeted(root)}
    for change in CHANGES.values():
        change(root)
    _raise_budgets(root, before)


def _budgeted(root: Path) -> list[str]:
    return [s for s in _stacks(root) if f"{NS}:budget" in (_load(root, f"Pulumi.{s}.yaml").get("config") or {})]


def _min_requests(root: Path, stack: str) -> tuple[float, float]:
    """(CPU cores, memory bytes) the stack requests at minimum scale, whatever its budget says."""
    from infra.offline import footprint
    from infra.offline.render import render_stack  # in a test run, shared with every test rendering the same files

    try:  # within its budget (the unchanged sample's files: the render the whole-stack tests share)
        run = render_stack(stack, root)
    except footprint.BudgetExceeded:  # over it: the same objects, rendered without the check
        path = root / f"Pulumi.{stack}.yaml"
        original = path.read_text()
        data = yaml.safe_load(original)
        del data["config"][f"{NS}:budget"]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        try:
            run = render_stack(stack, root)
        finally:
            path.write_text(original)
    total = footprint.footprint(run.all_objects()).total("min")
    return total.cpu_requests, total.memory_requests


def _raise_budgets(root: Path, before: dict[str, tuple[float, float]]) -> None:
    """What an engineer does when the render refuses a change for a tight budget (README "Changing the
    topology"): raise the budget by what the changes added, so the sample's headroom, not the changes, decides
    whether the copy fits. A stack the changes leave within its budget keeps it (and its render, shared with the
    whole-stack tests). The budget check itself still runs on the copy."""
    from components.sizing import parse_quantity

    for stack in _budgeted(root):
        # A stack the changes added starts from the file it was copied from.
        cpu, memory = before.get(stack) or before[NEW_STACK_SOURCE]
        now_cpu, now_memory = _min_requests(root, stack)
        added_cpu, added_memory = max(0.0, now_cpu - cpu), max(0.0, now_memory - memory)
        data = _load(root, f"Pulumi.{stack}.yaml")
        budget = data["config"][f"{NS}:budget"]
        if now_cpu <= parse_quantity(budget["cpu"]) and now_memory <= parse_quantity(budget["memory"]):
            continue
        budget["cpu"] = f"{math.ceil((parse_quantity(budget['cpu']) + added_cpu) * 1000)}m"
        budget["memory"] = f"{math.ceil((parse_quantity(budget['memory']) + added_memory) / 2**20)}Mi"
        _save(root, f"Pulumi.{stack}.yaml", data)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or (argv[1] not in CHANGES and argv[1] != "all"):
        print(f"usage: python -m tests.topology_changes <project dir> <{'|'.join(CHANGES)}|all>", file=sys.stderr)
        return 2
    root, name = Path(argv[0]), argv[1]
    (apply_all if name == "all" else CHANGES[name])(root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
