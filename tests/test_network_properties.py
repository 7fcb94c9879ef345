"""For any service graph, the generated NetworkPolicies allow exactly the declared edges (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.network import NAMESPACE_LABEL, declared_edges, namespace_policies, pod_groups, transport, wiring_edges
from infra.offline.reachability import Model, Pod, expand, explained
from infra.stack_config import parse_platform_config

SUBSYSTEMS = ("alpha", "beta", "gamma")
DIGEST = "registry.example/x@sha256:" + "0" * 64


@st.composite
def graphs(draw):
    services = {sub: [f"{sub[0]}{i}" for i in range(draw(st.integers(1, 3)))] for sub in SUBSYSTEMS}
    everyone = [(sub, svc) for sub, names in services.items() for svc in names]
    owners = draw(st.sets(st.sampled_from(SUBSYSTEMS), max_size=2))
    queues = {sub: [f"{sub}-q{i}" for i in range(2)] for sub in owners}
    all_queues = [(sub, q) for sub, qs in queues.items() for q in qs]
    consumed = set()
    topology = {}
    for sub in SUBSYSTEMS:
        entry: dict = {"services": {}}
        if draw(st.booleans()):
            entry["postgres"] = {}
        if sub in queues:
            entry["queue"] = {"queues": {q: {} for q in queues[sub]}}
        for svc in services[sub]:
            others = [f"{s}/{n}" for s, n in everyone if (s, n) != (sub, svc)]
            spec = {
                "image": DIGEST,
                "calls": draw(st.lists(st.sampled_from(others), unique=True, max_size=3)),
                "database": "postgres" in entry and draw(st.booleans()),
            }
            if all_queues and draw(st.booleans()):
                owner = draw(st.sampled_from(sorted(queues)))
                free = [q for q in queues[owner] if (owner, q) not in consumed]
                if free:
                    q = draw(st.sampled_from(free))
                    consumed.add((owner, q))
                    spec["consumes"] = [f"{owner}/{q}"]
            if all_queues and draw(st.booleans()):
                spec["publishes"] = [
                    f"{s}/{q}"
                    for s, q in draw(st.lists(st.sampled_from(all_queues), unique=True, min_size=1, max_size=2))
                ]
            if draw(st.booleans()):
                spec["expose"] = {"path": f"/{sub}/{svc}"}
            entry["services"][svc] = spec
        topology[sub] = entry
    for owner, q in all_queues:
        if (owner, q) not in consumed:  # a published queue needs a consumer or a stated reason (topology rule)
            topology[owner]["queue"]["queues"][q] = {"unconsumed": "drawn without a consumer"}
    return topology


def plan_of(topology: dict):
    routes = {name: {"page": "chat", "ticket": "chat"} for name in [*topology, "platform"]}
    return parse_platform_config(
        {
            "subsystems": topology,
            "network": {"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"]},
            "gateway": {"hostname": "api.example.com"},
            "guardrails": {"requireBackups": False},
            "alerting": {"receivers": {"chat": {"webhook": {"urlSecret": "alertChat"}}}, "routes": routes},
        },
        frozenset({"alertChat"}),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_generated_policies_allow_exactly_the_declared_graph(topology):
    try:
        plan = plan_of(topology)
    except Exception as error:  # a drawn graph the config rules refuse (e.g. a queue cycle) is not this test's
        assert "cycle" in str(error), error
        return
    groups = pod_groups(plan)
    declared = declared_edges(plan, groups)
    policies = [
        {"metadata": {"namespace": p.namespace, "name": p.name}, "spec": p.spec}
        for p in namespace_policies(plan, groups, declared)
    ]
    # One pod per group: a namespace's "every pod" group stands for a pod no other group selects (a hook Job).
    pods = [Pod(g.id, g.namespace, g.labels) for g in groups.by_id.values()]
    model = Model(pods, policies, {p.namespace: {NAMESPACE_LABEL: p.namespace} for p in pods})
    every = {g.id: [p.id for p in pods if p.namespace == g.namespace] for g in groups.namespaces.values()}
    expected = {
        (s, d, port, protocol)
        # As the network sees them: with the mesh (on by default), HBONE between services and the probes' SNAT
        # address; the mesh's identity layer is checked over rendered stacks (tests/test_mesh.py).
        for src, dst, port, protocol in expand(transport(plan, groups, declared | wiring_edges(plan, groups)))
        for s in every.get(src, [src])
        for d in every.get(dst, [dst])
    }
    managed = {p["metadata"]["namespace"] for p in policies}
    probe = {e[2] for e in expected}
    reachable = model.connections(managed, probe)
    missing = {e for e in expected if not model.reaches(e)}
    extra = {e for e in reachable if not explained(e, expected)}
    assert not missing and not extra, (sorted(extra)[:5], sorted(missing)[:5])
