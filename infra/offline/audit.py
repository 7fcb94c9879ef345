"""Reachability audit: what the rendered policies allow, against what is declared and what is derived.

- reachable: the rendered NetworkPolicies evaluated over every pod the stack will run (`reachability`);
- declared: the service graph and the config's edges (`infra.network.declared_edges`), its groups resolved to
  the rendered pods they select;
- derived: what the rendered objects wire together (`wiring`: ServiceMonitors, webhooks, ...).

Drift is a connection reachable but neither declared nor derived, or declared or derived but not reachable, or
a generator group that selects no rendered pod (its declared edges would vanish instead of showing as missing).

With the ambient mesh rendered, "reachable" is what the applications see through both layers
(`infra.offline.mesh_layer`): NetworkPolicies carry HBONE (15008) between enrolled pods and ztunnel admits the
caller's identity for the application port. Network openings no application connection explains (HBONE where the
graph has no edge, an application port open between enrolled pods) are drift too, and so is any identity ztunnel
admits beyond the expected callers (`identities` against `expected_identities`).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

from infra import drill
from infra.network import EXTERNAL, Edge, Groups, PodGroup, declared_edges, pod_groups
from infra.offline import wiring
from infra.offline.mesh_layer import HBONE_PORT, Identity, MeshLayer, probe_connections
from infra.offline.mocks import ProgramRun
from infra.offline.reachability import Connection, Model, Pod, expand, explained, inventory, namespace_labels, selects
from infra.topology import PlatformPlan

DECLARED = "declared by the service graph"


def members(group: PodGroup, pods: list[Pod]) -> list[str]:
    """The pods (not on the host network) a generator group selects."""
    return [
        p.id
        for p in pods
        if p.namespace == group.namespace
        and not p.host_network
        and selects({"matchLabels": group.selector()}, p.label_map())
    ]


def empty_groups(groups: Groups, pods: list[Pod]) -> list[str]:
    """Groups the generator writes policies for that select no rendered pod: a fact drifted from a chart (or a
    pod the stack does not run), and the declared edges it carries would silently resolve to nothing."""
    return sorted(g.id for g in groups.by_id.values() if g not in groups.namespaces.values() and not members(g, pods))


def resolve(edges: set[Edge], groups: Groups, pods: list[Pod]) -> dict[Connection, set[str]]:
    """Group-level edges as connections between the pods each group selects (addresses stay as they are)."""

    def ends(end: str) -> list[str]:
        return [end] if end.startswith(EXTERNAL) else members(groups.by_id[end], pods)

    out: dict[Connection, set[str]] = defaultdict(set)
    for src, dst, port, protocol in expand(edges):
        for s in ends(src):
            for d in ends(dst):
                out[(s, d, port, protocol)].add(DECLARED)
    return out


@dataclass
class Audit:
    reachable: set[Connection]
    declared: dict[Connection, set[str]]
    derived: dict[Connection, set[str]]
    missing: set[Connection]
    """Declared or derived, not reachable."""
    extra: set[Connection]
    """Reachable, neither declared nor derived."""
    unresolved: list[str]
    """References in rendered objects that lead nowhere (a ServiceMonitor selecting no Service)."""
    empty: list[str]
    """Generator groups that select no rendered pod (`empty_groups`)."""
    pods: list[Pod]
    identities: set[Identity] = dataclasses.field(default_factory=set)
    """(peer principal, enrolled pod, port) ztunnel admits."""
    expected_identities: set[Identity] = dataclasses.field(default_factory=set)
    """The same, from the declared and derived connections."""
    network: set[Connection] = dataclasses.field(default_factory=set)
    """What the NetworkPolicies alone allow (HBONE between enrolled pods, not the application port)."""

    @property
    def identity_drift(self) -> set[Identity]:
        return self.identities ^ self.expected_identities

    def why(self, connection: Connection) -> list[str]:
        reasons = set(self.declared.get(connection, set()))
        reasons |= {f"derived: {r}" for r in self.derived.get(connection, set())}
        if not reasons:
            for expected in (self.declared, self.derived):
                for e, r in expected.items():
                    if explained(connection, {e}):
                        reasons |= {f"{x} (within {e[0] if e[0].startswith(EXTERNAL) else e[1]})" for x in r}
        return sorted(reasons)


def rendered_policies(run: ProgramRun) -> list[dict]:
    """Every NetworkPolicy the cluster will hold: the program's and any a chart installs."""
    return [o for o in run.all_objects() if o["kind"] == "NetworkPolicy"]


def audit(run: ProgramRun, plan: PlatformPlan, policies: list[dict] | None = None) -> Audit:
    """The stack's audit; `policies` replaces the rendered NetworkPolicies (to show what a change would do)."""
    pods = inventory(run, plan)
    objects = run.all_objects()
    ns_labels = namespace_labels(run)
    model = Model(pods, rendered_policies(run) if policies is None else policies, ns_labels)
    layer = MeshLayer.read(objects, pods, ns_labels)
    if plan.config.drill is not None:
        groups = drill.pod_groups(plan)
        declared = resolve(drill.declared_edges(plan, groups), groups, pods)
    else:
        groups = pod_groups(plan)
        declared = resolve(declared_edges(plan, groups), groups, pods)
    derived = wiring.derive(objects, pods, plan.config.network)
    reasons = {c: set(r) for c, r in derived.reasons.items()}
    for connection, reason in probe_connections(objects, layer).items():
        reasons.setdefault(connection, set()).add(reason)
    expected = set(declared) | set(reasons)
    managed = {ns["metadata"]["name"] for ns in run.objects("Namespace")}
    probe = {c[2] for c in expected} | {HBONE_PORT} | layer.policy_ports()
    network = model.connections(managed, probe)
    reachable, stray = layer.application_view(network, model.probe_ports(probe), expected)
    ports = model.probe_ports(probe)
    return Audit(
        reachable=reachable | stray,
        declared=dict(declared),
        derived=reasons,
        missing={c for c in expected if not layer.reaches(model, c)},
        extra={c for c in reachable if not explained(c, expected)} | stray,
        unresolved=derived.unresolved,
        empty=empty_groups(groups, pods),
        pods=pods,
        identities=layer.identities(ports),
        expected_identities=layer.expected_identities(expected),
        network=network,
    )
