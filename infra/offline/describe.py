"""`python -m infra describe <stack>`: the environment at a glance, from the resolved plan.

Markdown tables (subsystems, services, queues, databases) and a Mermaid flowchart of the service and queue
graph, for a pull-request comment and the README. Pure functions of the plan: every default is already applied
there, so what is printed is what the program deploys, and nothing here needs the Pulumi engine or mocks.
"""

from __future__ import annotations

import re

from infra.platform import postgres_cluster_name, queue_cluster_name
from infra.topology import PlatformPlan, QueueRef, ServicePlan


def _ref(subsystem: str, name: str) -> str:
    return f"{subsystem}/{name}"


def _list(items: list[str]) -> str:
    return ", ".join(items) if items else "-"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _producers_and_consumers(plan: PlatformPlan) -> dict[QueueRef, tuple[list[str], list[str]]]:
    users: dict[QueueRef, tuple[list[str], list[str]]] = {
        QueueRef(sub.name, queue): ([], [])
        for sub in plan.subsystems.values()
        if sub.queue is not None
        for queue in sub.queue.queues
    }
    for svc in plan.services():
        for ref in svc.publishes:
            users[ref][0].append(_ref(svc.subsystem, svc.name))
        for ref in svc.consumes:
            users[ref][1].append(_ref(svc.subsystem, svc.name))
    return users


def subsystems_table(plan: PlatformPlan) -> str:
    rows = []
    for sub in plan.subsystems.values():
        database = postgres_cluster_name(sub.name) if sub.postgres is not None else "-"
        queues = "-"
        if sub.queue is not None:
            queues = f"{queue_cluster_name(sub.name)} ({_count(len(sub.queue.queues), 'queue')})"
        rows.append([sub.name, _list(list(sub.services)), database, queues, "yes" if sub.critical else "no"])
    return _table(["subsystem", "services", "database", "queue cluster", "payment path"], rows)


def _exposure(svc: ServicePlan) -> str:
    return f"`{svc.expose.path}`" if svc.expose is not None else "-"


def services_table(plan: PlatformPlan) -> str:
    rows = [
        [
            _ref(svc.subsystem, svc.name),
            str(svc.min_replicas),
            str(svc.max_replicas),
            _exposure(svc),
            _list([_ref(c.subsystem, c.service) for c in svc.calls]),
        ]
        for svc in plan.services()
    ]
    return _table(["service", "min replicas", "max replicas", "exposed at", "calls"], rows)


def queues_table(plan: PlatformPlan) -> str:
    rows = []
    for ref, (producers, consumers) in _producers_and_consumers(plan).items():
        cluster = plan.subsystems[ref.subsystem].queue
        rows.append(
            [
                _ref(ref.subsystem, ref.queue),
                f"{queue_cluster_name(ref.subsystem)} ({_count(cluster.replicas, 'node')})",
                _list(producers),
                _list(consumers),
            ]
        )
    return _table(["queue", "cluster", "producers", "consumers"], rows)


def databases_table(plan: PlatformPlan) -> str:
    backup = plan.config.backup
    backups = f"yes: `{backup.schedule}`, kept {backup.retention}" if backup is not None else "no"
    rows = []
    for sub in plan.subsystems.values():
        pg = sub.postgres
        if pg is None:
            continue
        storage = pg.storage_size + (f" ({pg.storage_class})" if pg.storage_class is not None else "")
        rows.append([_ref(sub.name, postgres_cluster_name(sub.name)), str(pg.instances), storage, backups])
    return _table(["database", "instances", "storage", "backups"], rows)


class _Ids:
    """Mermaid node ids: letters, digits and underscores only, one per distinct name, stable across runs."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, ...], str] = {}

    def __call__(self, *parts: str) -> str:
        if parts not in self._ids:
            base = "__".join(re.sub(r"[^A-Za-z0-9]", "_", p) for p in parts)
            candidate, n = base, 2
            while candidate in self._ids.values():
                candidate, n = f"{base}_{n}", n + 1
            self._ids[parts] = candidate
        return self._ids[parts]


def flowchart(plan: PlatformPlan) -> str:
    """Services (rectangles) and queues (cylinders) grouped per subsystem; edges for calls, publishes and
    consumes (from the queue to its consumer, the way messages flow)."""
    ids = _Ids()
    lines = ["flowchart LR"]
    for sub in plan.subsystems.values():
        lines.append(f'  subgraph {ids("subsystem", sub.name)}["{sub.name}"]')
        for svc in sub.services.values():
            lines.append(f'    {ids("service", sub.name, svc.name)}["{svc.name}"]')
        for queue in sub.queue.queues if sub.queue is not None else {}:
            lines.append(f'    {ids("queue", sub.name, queue)}[("{queue}")]')
        lines.append("  end")
    for svc in plan.services():
        me = ids("service", svc.subsystem, svc.name)
        for call in svc.calls:
            lines.append(f"  {me} -->|calls| {ids('service', call.subsystem, call.service)}")
        for ref in svc.publishes:
            lines.append(f"  {me} -.->|publishes| {ids('queue', ref.subsystem, ref.queue)}")
        for ref in svc.consumes:
            lines.append(f"  {ids('queue', ref.subsystem, ref.queue)} -.->|consumed by| {me}")
    return "\n".join(lines)


def mermaid_block(plan: PlatformPlan) -> str:
    return f"```mermaid\n{flowchart(plan)}\n```"


README_GRAPH_STACK = "dev"


def readme_with_graph(readme: str, plan: PlatformPlan) -> str:
    """README with its service graph (its first Mermaid block) replaced by `plan`'s."""
    start = readme.index("```mermaid\n")
    end = readme.index("\n```", start + len("```mermaid\n")) + len("\n```")
    return readme[:start] + mermaid_block(plan) + readme[end:]


def drill_table(plan: PlatformPlan) -> str:
    """A drill stack: what it restores, from where, and how each restore is verified."""
    from infra import drill

    queries = plan.config.drill.point_queries
    rows = [
        [
            f"{plan.config.drill.namespace}/{drill.postgres_cluster_name(sub)}",
            f"`{pg.server_name}`",
            drill.verifier_name(sub),
            f"`{queries[sub]}`" if sub in queries else "replay timestamp",
        ]
        for sub, pg in drill.databases(plan).items()
    ]
    return _table(["restored cluster", "from server name", "verifying Job", "recovered point"], rows)


def describe(stack: str, plan: PlatformPlan) -> str:
    if plan.config.drill is not None:
        d = plan.config.drill
        return "\n\n".join(
            [
                f"## Stack `{stack}` at a glance: restore drill",
                f"Restores into namespace `{d.namespace}` from `{d.source.destination_path}` (never archives); "
                f"RTO {d.rto_minutes} min, a success at least every {d.max_age_days} days; results in "
                f"`{d.results_path}`.",
                drill_table(plan),
            ]
        )
    sections = [
        f"## Stack `{stack}` at a glance",
        "### Subsystems",
        subsystems_table(plan),
        "### Services",
        services_table(plan),
    ]
    if any(sub.queue is not None for sub in plan.subsystems.values()):
        sections += ["### Queues", queues_table(plan)]
    if any(sub.postgres is not None for sub in plan.subsystems.values()):
        sections += ["### Databases", databases_table(plan)]
    sections += ["### Service and queue graph", mermaid_block(plan)]
    return "\n\n".join(sections)
