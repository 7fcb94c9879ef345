"""Network (issue 5): default deny everywhere, allows exactly the declared graph, a rate-limited TLS gateway."""

from __future__ import annotations

import copy

import pytest

from infra.offline.audit import audit
from infra.platform import postgres_cluster_name, queue_cluster_name
from infra.stack_config import plan_for_stack
from tests.conftest import PLATFORM_STACKS


@pytest.fixture(scope="module")
def graphs(rendered, audits):
    """Per stack: (declared and derived connections, connections the rendered policies allow)."""
    out = {}
    for stack in rendered:
        result = audits[stack]
        out[stack] = (set(result.declared) | set(result.derived), result.reachable)
    return out


def test_every_namespace_the_program_creates_denies_by_default(any_stack_run):
    namespaces = {n["metadata"]["name"] for n in any_stack_run.objects("Namespace")}
    deny = {
        p["metadata"]["namespace"]
        for p in any_stack_run.objects("NetworkPolicy")
        if p["metadata"]["name"] == "default-deny"
        and p["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    }
    assert namespaces == deny


def test_reachability_equals_the_declared_and_derived_graph_exactly(any_stack_run, audits):
    result = audits[any_stack_run.stack]
    assert not result.missing, f"missing edges: {sorted(result.missing)[:10]}"
    assert not result.extra, f"extra edges: {sorted(result.extra)[:10]}"


# The pods (by chart) that reach every data pod besides its users: its operators and Prometheus.
CNPG = "cnpg-system/cloudnative-pg"
PROMETHEUS = "monitoring/prometheus-kube-prometheus-stack-prometheus"
RABBITMQ_OPERATORS = {"rabbitmq-system/rabbitmq-cluster-operator", "rabbitmq-system/messaging-topology-operator"}
KEDA = "keda/keda-operator"


def test_data_pods_are_reachable_only_from_their_declared_users_operators_and_monitoring(graphs, plans):
    for stack in PLATFORM_STACKS:
        plan, (_, actual) = plans[stack], graphs[stack]
        sources = {}
        for src, dst, _, _ in actual:
            if not src.startswith("external "):
                sources.setdefault(dst, set()).add(src)
        pods = {svc.name: f"{plan.subsystems[svc.subsystem].namespace}/{svc.name}" for svc in plan.services()}
        for sub in plan.subsystems.values():
            if sub.postgres is not None:
                db = f"{sub.namespace}/{postgres_cluster_name(sub.name)}"
                users = {pods[svc.name] for svc in sub.services.values() if svc.database}
                assert sources[db] == users | {db, CNPG, PROMETHEUS}, (stack, db)
            if sub.queue is not None:
                mq = f"{sub.namespace}/{queue_cluster_name(sub.name)}"
                users = [svc for svc in plan.services() if sub.name in svc.queue_subsystems]
                # KEDA reads the queue depth of the consumers it scales.
                keda = {KEDA} if any(q.subsystem == sub.name for svc in users for q in svc.consumes) else set()
                expected = {pods[svc.name] for svc in users} | {mq, PROMETHEUS} | RABBITMQ_OPERATORS | keda
                assert sources[mq] == expected, (stack, mq)


def test_the_model_catches_a_widened_policy(prod):
    # A classic widening: "let pods in this namespace talk to each other".
    policies = [
        *copy.deepcopy(prod.objects("NetworkPolicy")),
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-same-namespace", "namespace": "payment"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        },
    ]
    extra = audit(prod, plan_for_stack("prod"), policies).extra
    assert ("payment/payment-mq", "payment/payment-db", 5432, "TCP") in extra


def test_the_model_catches_a_removed_rule(prod):
    policies = [
        p
        for p in copy.deepcopy(prod.objects("NetworkPolicy"))
        if p["metadata"]["name"] != "allow-payment-api" or p["metadata"]["namespace"] != "payment"
    ]
    missing = audit(prod, plan_for_stack("prod"), policies).missing
    assert ("business/settlement-api", "payment/payment-api", 8080, "TCP") in missing


def test_no_rule_selects_all_namespaces_or_all_pods_of_another_namespace(any_stack_run):
    for policy in any_stack_run.objects("NetworkPolicy"):
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(direction) or []:
                assert rule.get(key), f"{policy['metadata']}: a rule without peers allows everyone"
                for peer in rule[key]:
                    if "namespaceSelector" in peer:
                        assert peer["namespaceSelector"]["matchLabels"], policy["metadata"]
                        assert peer["podSelector"]["matchLabels"], policy["metadata"]


def test_open_internet_appears_only_at_the_gateway_and_for_acme(prod):
    wide = set()
    for policy in prod.objects("NetworkPolicy"):
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in policy["spec"].get(direction) or []:
                if any(p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for p in rule[key]):
                    wide.add((policy["metadata"]["namespace"], policy["metadata"]["name"], direction))
    assert wide == {
        ("envoy-gateway-system", "allow-envoy-proxy", "ingress"),
        ("cert-manager", "allow-cert-manager", "egress"),
    }


def test_external_egress_only_to_declared_endpoints(prod):
    def ip_egress(namespace, name):
        policy = prod.object("NetworkPolicy", f"allow-{name}", namespace)
        return {
            (p["ipBlock"]["cidr"], port["port"])
            for rule in policy["spec"]["egress"]
            for p in rule["to"]
            if "ipBlock" in p
            for port in rule["ports"]
        }

    assert ip_egress("payment", "payment-api") == {("203.0.113.0/24", 443)}
    assert ip_egress("business", "clearing-engine") == {("198.51.100.0/24", 443)}
    assert ip_egress("risk", "risk-engine") == set()
    assert ("10.20.64.0/28", 443) in ip_egress("payment", "payment-db"), "backups go to the declared store only"


# --- Gateway ------------------------------------------------------------------------------------------------


def test_gateway_serves_https_with_a_cert_manager_certificate(stack_run):
    gateway = stack_run.object("Gateway", "settlement", "edge")["spec"]
    listeners = {listener["name"]: listener for listener in gateway["listeners"]}
    https = listeners["https"]
    assert https["protocol"] == "HTTPS" and https["port"] == 443
    assert https["tls"]["mode"] == "Terminate"
    secret = https["tls"]["certificateRefs"][0]["name"]
    certificate = next(c for c in stack_run.objects("Certificate") if c["spec"]["secretName"] == secret)
    assert certificate["spec"]["dnsNames"] == [https["hostname"]]
    assert https["allowedRoutes"]["namespaces"]["from"] == "Selector"
    policy = stack_run.object("ClientTrafficPolicy", "settlement", "edge")["spec"]
    assert policy["tls"]["minVersion"] == "1.2"


def test_prod_certificate_is_public_dev_uses_the_internal_ca(prod, dev):
    def issuer(run):
        return run.object("Certificate", "gateway-tls", "edge")["spec"]["issuerRef"]["name"]

    acme = prod.object("ClusterIssuer", issuer(prod))["spec"]["acme"]
    assert acme["server"].startswith("https://acme-v02.api.letsencrypt.org/")
    assert issuer(dev) == "settlement-internal-ca"


def test_plain_http_only_redirects(stack_run):
    http_routes = [
        r
        for r in stack_run.objects("HTTPRoute")
        if any(p.get("sectionName") == "http" for p in r["spec"]["parentRefs"])
    ]
    assert len(http_routes) == 1
    (rule,) = http_routes[0]["spec"]["rules"]
    assert "backendRefs" not in rule
    assert rule["filters"] == [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]


def test_one_rate_limited_route_per_exposed_service(stack_run, stack_plan):
    routes = {
        (r["metadata"]["namespace"], r["metadata"]["name"]): r["spec"]
        for r in stack_run.objects("HTTPRoute")
        if r["metadata"]["name"] != "https-redirect"
    }
    exposed = {
        (stack_plan.subsystems[svc.subsystem].namespace, svc.name): svc.expose
        for svc in stack_plan.services()
        if svc.expose is not None
    }
    assert set(routes) == set(exposed)
    for key, expose in exposed.items():
        assert routes[key]["rules"][0]["matches"][0]["path"]["value"] == expose.path
    for (ns, name), expose in exposed.items():
        traffic = stack_run.object("BackendTrafficPolicy", name, ns)["spec"]
        assert traffic["targetRefs"][0] == {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": name}
        assert traffic["rateLimit"]["local"]["rules"][0]["limit"]["unit"] == "Second"
        assert traffic["timeout"]["http"]["requestTimeout"] == f"{expose.timeout_seconds}s"
        assert traffic["circuitBreaker"]["maxPendingRequests"] == expose.max_pending_requests
    limits = {
        name: stack_run.object("BackendTrafficPolicy", name, ns)["spec"]["rateLimit"]["local"]["rules"][0]["limit"][
            "requests"
        ]
        for ns, name in routes
    }
    assert limits == {name: expose.requests_per_second for (_, name), expose in exposed.items()}


def test_only_the_gateway_is_reachable_from_outside(any_stack_run):
    for service in any_stack_run.objects("Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
    for cluster in any_stack_run.objects("RabbitmqCluster"):
        assert cluster["spec"]["service"]["type"] == "ClusterIP"


def test_exposing_without_a_hostname_is_refused(project):
    data = project.load("Pulumi.dev.yaml")
    del data["config"]["settlement-platform:gateway"]
    project.save("Pulumi.dev.yaml", data)
    from infra.offline.mocks import ProgramFailed

    with pytest.raises(ProgramFailed, match=r"payment-api.expose: needs gateway.hostname"):
        project.render("dev")
