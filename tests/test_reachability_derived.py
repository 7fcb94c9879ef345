"""Issue 10: the policies allow exactly the declared edges plus those derived from the rendered objects
(ServiceMonitors, PodMonitors, webhooks, APIServices, KEDA's flag, Alertmanager's mesh, Grafana's datasources),
and the generator's facts about the charts cannot drift from the charts unnoticed."""

from __future__ import annotations

import copy

import pytest

from infra.network import EXTERNAL, chart_pods, pod_groups
from infra.offline.audit import audit, rendered_policies
from infra.offline.reachability import inventory, selects
from infra.offline.wiring import derive
from infra.stack_config import plan_for_stack
from tests.cli import run_cli
from tests.conftest import STACKS_DIR


def _without_port(policies: list[dict], namespace: str, port: int) -> list[dict]:
    """The policies with `port` dropped from every rule in `namespace` (a rule left without ports goes)."""
    out = copy.deepcopy(policies)
    for policy in out:
        if policy["metadata"]["namespace"] != namespace:
            continue
        for direction in ("ingress", "egress"):
            rules = []
            for rule in policy["spec"].get(direction) or []:
                kept = [p for p in rule.get("ports") or [] if p.get("port") != port]
                if not rule.get("ports"):
                    rules.append(rule)
                elif kept:
                    rules.append({**rule, "ports": kept})
            if direction in policy["spec"]:
                policy["spec"][direction] = rules
    return out


def test_reachable_is_exactly_declared_and_derived(any_stack_run, audits):
    result = audits[any_stack_run.stack]
    assert not result.missing, sorted(result.missing)[:10]
    assert not result.extra, sorted(result.extra)[:10]
    assert not result.unresolved, "every monitor, webhook and flag leads to a pod or an address"
    assert not result.empty, "every policy group selects rendered pods"


def test_every_reachable_connection_has_a_reason(any_stack_run, audits):
    result = audits[any_stack_run.stack]
    assert all(result.why(c) for c in result.reachable)


def test_charts_wiring_is_derived(stack_run, audits):
    """What the issue found missing, in terms any topology has: each kind of derived reason appears."""
    kinds = {r.split()[0] for reasons in audits[stack_run.stack].derived.values() for r in reasons}
    assert {"ServiceMonitor", "PodMonitor", "ValidatingWebhookConfiguration", "APIService", "Deployment"} <= kinds
    assert {"Prometheus", "ConfigMap"} <= kinds


def test_every_chart_fact_selects_rendered_pods_and_no_two_share_one(stack_run):
    """A selector in infra/network.py that drifts from the charts selects nothing (or too much): fail here."""
    plan = plan_for_stack(stack_run.stack, STACKS_DIR)
    pods = [p for p in inventory(stack_run, plan) if not p.host_network]
    owner: dict[str, str] = {}
    for role, (namespace, _, labels) in chart_pods(plan).items():
        selected = [p.id for p in pods if p.namespace == namespace and selects({"matchLabels": labels}, p.label_map())]
        assert selected, f"chart fact {role!r} {labels} selects no rendered pod in {namespace}"
        for pod in selected:
            assert pod not in owner, f"{pod} is selected by both {owner[pod]!r} and {role!r}"
            owner[pod] = role


def test_dropping_the_keda_metrics_service_allow_is_caught(stack_run, audits):
    """Without it KEDA's metrics API server cannot reach the operator and queue consumers never scale."""
    plan = plan_for_stack(stack_run.stack, STACKS_DIR)
    keda = [c for c, r in audits[stack_run.stack].derived.items() if any("--metrics-service-address" in x for x in r)]
    assert keda
    namespace = keda[0][1].split("/")[0]
    result = audit(stack_run, plan, _without_port(rendered_policies(stack_run), namespace, keda[0][2]))
    assert set(keda) <= result.missing


@pytest.mark.parametrize("kind", ["ServiceMonitor", "ValidatingWebhookConfiguration", "APIService"])
def test_removing_any_derived_allow_is_caught(prod, audits, kind):
    derived = audits["prod"].derived
    edge = next(c for c, reasons in sorted(derived.items()) if any(r.startswith(kind) for r in reasons))
    pod = edge[1] if edge[0].startswith(EXTERNAL) or kind == "ServiceMonitor" else edge[0]
    namespace = pod.split("/")[0]
    result = audit(prod, plan_for_stack("prod", STACKS_DIR), _without_port(rendered_policies(prod), namespace, edge[2]))
    assert edge in result.missing


def test_a_widened_policy_is_caught(stack_run):
    """An allow the generator never wrote: every pod of a namespace open to every pod of the same namespace."""
    plan = plan_for_stack(stack_run.stack, STACKS_DIR)
    namespace = next(iter(sorted(plan.subsystems)))
    policies = [
        *rendered_policies(stack_run),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-same-namespace", "namespace": namespace},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        },
    ]
    extra = audit(stack_run, plan, policies).extra
    assert extra and all(c[0].startswith(f"{namespace}/") and c[1].startswith(f"{namespace}/") for c in extra)


def test_a_servicemonitor_whose_target_is_unreachable_is_caught(stack_run):
    """A ServiceMonitor scraping a port no policy opens to Prometheus: the scrape is derived, and missing."""
    plan = plan_for_stack(stack_run.stack, STACKS_DIR)
    service = next(s for s in stack_run.objects("Service") if s["metadata"]["namespace"] in plan.subsystems)
    scraped = {e.get("port") for m in stack_run.objects("ServiceMonitor") for e in m["spec"].get("endpoints") or []}
    port = next(p for p in service["spec"]["ports"] if p["name"] not in scraped)
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "scrapes-the-wrong-port", "namespace": service["metadata"]["namespace"]},
        "spec": {
            "selector": {"matchLabels": service["spec"]["selector"]},
            "endpoints": [{"port": port["name"]}],
        },
    }
    fake = copy.copy(stack_run)
    fake.registrations = [
        *stack_run.registrations,
        type(stack_run.registrations[0])(
            urn="extra-monitor",
            type="kubernetes:monitoring.coreos.com/v1:ServiceMonitor",
            name="extra-monitor",
            parent="",
            custom=True,
            inputs=monitor,
        ),
    ]
    result = audit(fake, plan)
    new = {
        c
        for c, r in result.derived.items()
        if "ServiceMonitor " + service["metadata"]["namespace"] + "/scrapes-the-wrong-port" in r
    }
    assert new and new <= result.missing


def test_the_api_server_calls_only_what_webhooks_and_apiservices_name(stack_run, audits):
    """Into operator pods, the API server gets exactly the ports its webhook configurations and APIServices name
    (an allow from every address, like the gateway's, is declared for its own reason)."""
    result = audits[stack_run.stack]
    api = {f"{EXTERNAL}{c}" for c in plan_for_stack(stack_run.stack, STACKS_DIR).config.network.api_server_cidrs}
    calls = ("derived: MutatingWebhook", "derived: ValidatingWebhook", "derived: APIService")
    inbound = {c for c in result.reachable if c[0] in api}
    assert inbound
    for connection in inbound:
        if all("(within " in r for r in result.why(connection)):
            continue  # allowed from a wider block, for that block's reason
        assert any(r.startswith(calls) for r in result.why(connection)), (connection, result.why(connection))


def test_hostnetwork_targets_are_node_addresses(stack_run, audits):
    plan = plan_for_stack(stack_run.stack, STACKS_DIR)
    pods = inventory(stack_run, plan)
    host = [p for p in pods if p.host_network]
    assert host, "node-exporter runs on the host network"
    nodes = {f"{EXTERNAL}{c}" for c in plan.config.network.node_cidrs}
    wiring = derive(stack_run.all_objects(), pods, plan.config.network)
    assert {c[1] for c in wiring.edges if c[2] in {port for p in host for _, port, _ in p.ports}} & nodes
    assert not {c for c in wiring.edges if c[1] in {p.id for p in host}}


def test_generator_groups_cover_the_namespaces_it_manages():
    plan = plan_for_stack("dev", STACKS_DIR)
    groups = pod_groups(plan)
    assert set(groups.namespaces) >= {sub.namespace for sub in plan.subsystems.values()}


def test_cli_shows_why_and_exits_zero_without_drift():
    result = run_cli("reachability", "dev")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows and all(line.rstrip(" |").split(" | ")[-1] for line in rows)
    assert any("derived: ServiceMonitor" in line for line in rows)
    assert any("declared by the service graph" in line for line in rows)
