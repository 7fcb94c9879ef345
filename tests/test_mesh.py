"""Issue 15: the Istio ambient mesh - every application namespace enrolled with STRICT mTLS, authorisation by
identity equal to the declared graph, NetworkPolicies that carry HBONE exactly where the graph does, the mesh's CA
chained to the platform's, its alerts and dashboard, and the opt-out refused where the guard rail holds."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess

import pytest
import yaml

from infra.mesh_monitoring import CONTRACT as MESH_CONTRACT
from infra.mesh_monitoring import mesh_dashboard, mesh_rule_groups
from infra.metrics import CONTRACT, metric_names
from infra.offline.audit import audit
from infra.offline.mesh_layer import HBONE_PORT, PLAINTEXT, STRANGER, MeshLayer
from infra.offline.mocks import ProgramFailed
from infra.offline.reachability import inventory, namespace_labels
from infra.stack_config import plan_for_stack
from tests.conftest import STACKS_DIR
from tests.fixture_config import SMALL_TOPOLOGY, plan_of

AMBIENT = {"istio.io/dataplane-mode": "ambient"}


def _layer(run, plan, objects=None) -> MeshLayer:
    pods = inventory(run, plan)
    return MeshLayer.read(objects if objects is not None else run.all_objects(), pods, namespace_labels(run))


def _gateway(layer: MeshLayer) -> set[str]:
    return {
        p for p in layer.enrolled if layer.pods[p].label_map().get("app.kubernetes.io/managed-by") == "envoy-gateway"
    }


def test_every_application_namespace_is_enrolled_and_only_services_and_the_gateway_join(stack_run, stack_plan):
    labels = namespace_labels(stack_run)
    for sub in stack_plan.subsystems.values():
        assert labels[sub.namespace].get("istio.io/dataplane-mode") == "ambient", sub.namespace
    layer = _layer(stack_run, stack_plan)
    services = {f"{s.subsystem}/{s.name}" for s in stack_plan.services()}
    gateway = _gateway(layer)
    assert set(layer.enrolled) == services | gateway
    assert len(gateway) == (1 if any(s.expose for s in stack_plan.services()) else 0)
    for pod_id in services:
        ns, name = pod_id.split("/")
        assert layer.enrolled[pod_id] == f"cluster.local/ns/{ns}/sa/{name}"
    for pod_id in gateway:
        assert layer.enrolled[pod_id].endswith("/sa/envoy-settlement")
    # Database and queue pods live in enrolled namespaces and stay out.
    data = [p for p in layer.pods.values() if "cnpg.io/cluster" in p.label_map() or p.id.endswith("-mq")]
    assert data and not any(p.id in layer.enrolled for p in data)


def test_mtls_is_strict_except_the_listed_plaintext_ports(stack_run, stack_plan, audits):
    """STRICT on every port of every enrolled pod, except exactly the ports callers outside the mesh
    (Prometheus, the gateway) use - and those admit no identity-less peer the graph does not have."""
    result = audits[stack_run.stack]
    layer = _layer(stack_run, stack_plan)
    services = set(layer.enrolled) - _gateway(layer)
    outside = {
        (dst, port)
        for src, dst, port, _ in set(result.declared) | set(result.derived)
        if dst in services and src not in layer.enrolled and not src.startswith("external ")
    }
    ports = {c[2] for c in result.declared} | {c[2] for c in result.derived} | {1, 15008, 65535}
    relaxed = {(d, p) for d in services for p in ports if layer.mode(layer.pods[d], p) != "STRICT"}
    assert outside and relaxed == outside
    namespaces = {p["metadata"]["namespace"] for p in layer.peer_authentications if not p["spec"].get("selector")}
    assert namespaces == {sub.namespace for sub in stack_plan.subsystems.values()}


def test_the_gateway_reaches_exposed_services_over_mtls(stack_run, stack_plan, audits):
    """The gateway-to-service hop is inside the mesh: HBONE on the network, the proxies' identity admitted on the
    exposed port, and no plaintext accepted there."""
    result = audits[stack_run.stack]
    layer = _layer(stack_run, stack_plan)
    for gateway in _gateway(layer):
        for svc in (s for s in stack_plan.services() if s.expose):
            dst = f"{svc.subsystem}/{svc.name}"
            assert (gateway, dst, HBONE_PORT, "TCP") in result.network
            assert (gateway, dst, svc.port, "TCP") not in result.network
            assert (layer.enrolled[gateway], dst, svc.port) in result.identities
            assert layer.mode(layer.pods[dst], svc.port) == "STRICT"


def test_authorisation_equals_the_declared_graph(stack_run, audits):
    result = audits[stack_run.stack]
    assert result.identities, "no identity admitted: the mesh layer saw nothing"
    assert not result.identity_drift, sorted(result.identity_drift)[:10]
    # Callers in the mesh are admitted by principal, and no rule admits an identity no pod has.
    assert any(peer.startswith("cluster.local/") for peer, _, _ in result.identities)
    assert not any(peer == STRANGER for peer, _, _ in result.identities)


def _policies_with(run, change) -> list[dict]:
    """The run's objects with `change` applied to a copy of each AuthorizationPolicy (the rest shared, unchanged:
    the CRDs are megabytes)."""
    changed = []
    for o in run.all_objects():
        if o["kind"] == "AuthorizationPolicy":
            o = copy.deepcopy(o)
            change(o)
        changed.append(o)
    return changed


@pytest.mark.parametrize(
    ("name", "change"),
    [
        # A second caller's identity on a service that does not declare it.
        (
            "another-principal",
            lambda o: o["spec"]["rules"].append(
                {
                    "from": [{"source": {"principals": [f"cluster.local/ns/{o['metadata']['namespace']}/sa/x"]}}],
                    "to": [{"operation": {"ports": ["8080"]}}],
                }
            ),
        ),
        # Any identity.
        ("any-principal", lambda o: o["spec"]["rules"].append({"from": [{"source": {"principals": ["*"]}}]})),
        # A port the graph never calls.
        ("another-port", lambda o: o["spec"]["rules"].append({"to": [{"operation": {"ports": ["7777"]}}]})),
    ],
)
def test_a_widened_authorization_policy_is_caught(dev, audits, name, change):
    plan = plan_for_stack("dev", STACKS_DIR)
    expected = audits["dev"]
    widened = _layer(dev, plan, _policies_with(dev, change))
    ports = {p for _, _, p in expected.expected_identities} | {7777, 1, 65535}
    admitted = widened.identities(ports)
    assert admitted - expected.identities, name


def test_a_narrowed_authorization_policy_is_caught(dev, audits):
    plan = plan_for_stack("dev", STACKS_DIR)
    expected = audits["dev"]
    narrowed = _layer(dev, plan, _policies_with(dev, lambda o: o["spec"]["rules"].clear()))
    ports = {p for _, _, p in expected.expected_identities}
    assert expected.expected_identities - narrowed.identities(ports)


def test_fields_the_model_does_not_evaluate_are_refused(dev):
    plan = plan_for_stack("dev", STACKS_DIR)
    layer = _layer(dev, plan, _policies_with(dev, lambda o: o["spec"]["rules"].append({"when": [{"key": "x"}]})))
    pod = layer.pods[next(iter(layer.enrolled))]
    with pytest.raises(ValueError, match="does not evaluate"):
        layer.authorizes(PLAINTEXT, pod, 8080)


def test_hbone_is_allowed_exactly_between_the_pods_the_graph_connects(stack_run, stack_plan, audits):
    result = audits[stack_run.stack]
    layer = _layer(stack_run, stack_plan)
    connected = {
        (s, d) for s, d, _, proto in set(result.declared) | set(result.derived) if {s, d} <= set(layer.enrolled)
    }
    hbone = {(s, d) for s, d, port, proto in result.network if port == HBONE_PORT and proto == "TCP"}
    assert connected and hbone == connected
    # Application ports are never open between enrolled pods: their traffic is HBONE.
    assert not [c for c in result.network if {c[0], c[1]} <= set(layer.enrolled) and c[2] != HBONE_PORT]


def test_hbone_to_a_pod_the_graph_does_not_connect_is_caught(stack_run, stack_plan):
    """A NetworkPolicy opening 15008 between every pod of a namespace: drift at the network layer even though
    ztunnel would still refuse the identities."""
    namespace = next(iter(sorted(stack_plan.subsystems)))
    policies = [o for o in stack_run.all_objects() if o["kind"] == "NetworkPolicy"]
    hbone = {"protocol": "TCP", "port": HBONE_PORT}
    policies.append(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-hbone-everywhere", "namespace": namespace},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}], "ports": [hbone]}],
                "egress": [{"to": [{"podSelector": {}}], "ports": [hbone]}],
            },
        }
    )
    extra = audit(stack_run, stack_plan, policies).extra
    assert extra and all(c[2] == HBONE_PORT for c in extra)


def test_kubelet_probes_are_allowed_from_the_snat_address(stack_run, stack_plan, audits):
    result = audits[stack_run.stack]
    layer = _layer(stack_run, stack_plan)
    services = set(layer.enrolled) - _gateway(layer)
    probes = {c for c in result.reachable if c[0] == "external 169.254.7.127/32" and c[1] in services}
    assert {c[1] for c in probes} == {f"{s.subsystem}/{s.name}" for s in stack_plan.services()}
    assert {c[2] for c in probes} == {s.port for s in stack_plan.services()}
    for gateway in _gateway(layer):
        assert {c[2] for c in result.network if c[0] == "external 169.254.7.127/32" and c[1] == gateway} >= {
            19002,
            19003,
        }


def test_the_mesh_ca_is_an_intermediate_of_the_internal_ca(stack_run, stack_plan):
    mesh = stack_plan.config.mesh
    cert = stack_run.object("Certificate", "cacerts", mesh.namespace)["spec"]
    assert cert["isCA"] and cert["secretName"] == "cacerts"
    assert cert["issuerRef"] == {"name": "settlement-internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert cert["privateKey"]["rotationPolicy"] == "Always" and cert["renewBefore"]
    istiod = next(o for o in stack_run.all_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "istiod")
    volumes = {v["name"]: v for v in istiod["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cacerts"]["secret"]["secretName"] == "cacerts"
    env = {e["name"]: e.get("value") for e in istiod["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CA_TRUSTED_NODE_ACCOUNTS"] == f"{mesh.node_namespace}/ztunnel"


def test_the_mesh_is_installed_before_the_application_namespaces(stack_run, stack_plan):
    regs = {r.name: r for r in stack_run.registrations}
    node_agents = {
        r.urn for r in stack_run.registrations if r.name.endswith(("-mesh-cni-release", "-mesh-ztunnel-release"))
    }
    assert len(node_agents) == 2
    for sub in stack_plan.subsystems:
        namespace = next(
            r
            for name, r in regs.items()
            if r.type == "kubernetes:core/v1:Namespace" and r.inputs["metadata"]["name"] == sub
        )
        assert node_agents <= set(namespace.dependencies), sub


def test_the_images_come_from_the_configured_registry(project):
    project.set_stack_key("dev", "mesh", {"hub": "mirror.example/istio", "istiodReplicas": 1})
    run = project.render("dev")
    images = {
        c["image"]
        for o in run.all_objects()
        if o["kind"] in ("Deployment", "DaemonSet") and o["metadata"]["namespace"].startswith("istio")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == 3 and all(i.startswith("mirror.example/istio/") for i in images)


def test_prod_refuses_the_opt_out(project):
    project.set_stack_key("prod", "mesh", {"enabled": False})
    with pytest.raises(ProgramFailed) as failure:
        project.render("prod")
    assert "mesh.enabled: is false, but guardrails.requireMesh requires the ambient mesh" in str(failure.value.cause)


def test_the_opt_out_where_allowed_removes_the_mesh():
    plan = plan_of(SMALL_TOPOLOGY, mesh={"enabled": False}, guardrails={"requireBackups": False, "requireMesh": False})
    assert not plan.config.mesh.enabled
    with pytest.raises(Exception, match=r"guardrails\.requireMesh"):
        plan_of(SMALL_TOPOLOGY, mesh={"enabled": False})


def test_an_unknown_platform_is_refused():
    with pytest.raises(Exception, match=r"mesh\.platform"):
        plan_of(SMALL_TOPOLOGY, mesh={"platform": "eks"})


# --- Observability ---------------------------------------------------------------------------------------------


def test_istiod_and_ztunnel_are_scraped(stack_run, audits):
    result = audits[stack_run.stack]
    reasons = {r for c, rs in result.derived.items() for r in rs if c[0].startswith("monitoring/prometheus")}
    assert any("mesh-istiod" in r for r in reasons) and any("mesh-ztunnel" in r for r in reasons)


def test_mesh_rules_use_only_contracted_metrics():
    contract = {**CONTRACT, **MESH_CONTRACT}
    exprs = [r["expr"] for g in mesh_rule_groups()["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in mesh_dashboard()["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in metric_names(e)}
    assert names and names <= set(contract), names - set(contract)


def test_the_dashboard_shows_traffic_by_identity():
    exprs = [t["expr"] for p in mesh_dashboard()["panels"] for t in p["targets"]]
    assert any("source_principal" in e and "destination_principal" in e for e in exprs)


def _promtool(*args):
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed: run `make tools`")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def _render(text: str, labels: dict) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)


def _alert(name: str, series: dict, severity: str) -> dict:
    rule = next(r for g in mesh_rule_groups()["groups"] for r in g["rules"] if r["alert"] == name)
    keys = ("destination_workload_namespace", "destination_workload", "source_principal")
    labels = {**{k: series[k] for k in keys}, "namespace": series["destination_workload_namespace"]}
    labels["severity"] = severity
    return {
        "exp_labels": labels,
        "exp_annotations": {k: _render(v, labels) for k, v in rule["annotations"].items()},
    }


@pytest.mark.parametrize(
    ("alert", "flag", "values", "firing"),
    [
        ("MeshMtlsHandshakeFailures", "TLS_FAILURE", "0+6x30", True),
        ("MeshMtlsHandshakeFailures", "TLS_FAILURE", "0+0x30", False),
        ("MeshMtlsHandshakeFailures", "DENY", "0+6x30", False),
        ("MeshRequestsDenied", "DENY", "0+1x30", True),
        ("MeshRequestsDenied", "TLS_FAILURE", "0+1x30", False),
        ("MeshRequestsDenied", "DENY", "5+0x30", False),
    ],
)
def test_mesh_alerts_fire_on_ztunnel_series(tmp_path, alert, flag, values, firing):
    """Series as ztunnel labels them (istio/ztunnel 1.30.3 src/proxy/metrics.rs CommonTrafficLabels), scraped in
    the node namespace: the alert routes by the destination's namespace."""
    series = {
        "namespace": "istio-node",
        "pod": "ztunnel-abcde",
        "reporter": "destination",
        "source_principal": "spiffe://cluster.local/ns/audit/sa/engine",
        "destination_principal": "spiffe://cluster.local/ns/shop/sa/api",
        "destination_workload": "api",
        "destination_workload_namespace": "shop",
        "connection_security_policy": "mutual_tls",
        "response_flags": flag,
    }
    inner = ", ".join(f'{k}="{v}"' for k, v in series.items())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(mesh_rule_groups(), sort_keys=False))
    assert _promtool("check", "rules", str(tmp_path / "rules.yaml")).returncode == 0
    severity = "page" if alert == "MeshMtlsHandshakeFailures" else "ticket"
    test = {
        "interval": "1m",
        "input_series": [{"series": f"istio_tcp_connections_failed_total{{{inner}}}", "values": values}],
        "alert_rule_test": [
            {"eval_time": "25m", "alertname": alert, "exp_alerts": [_alert(alert, series, severity)] if firing else []}
        ],
    }
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [test]}, sort_keys=False)
    )
    result = _promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stack_that_opts_out_renders_without_the_mesh_and_stays_exact(project):
    data = project.load("Pulumi.dev.yaml")
    config = data["config"]
    config["settlement-platform:mesh"] = {"enabled": False}
    config["settlement-platform:guardrails"]["requireMesh"] = False
    project.save("Pulumi.dev.yaml", data)
    run = project.render("dev")
    objects = run.all_objects()
    assert not [o for o in objects if o["kind"] in ("AuthorizationPolicy", "PeerAuthentication", "EnvoyProxy")]
    assert not [o for o in objects if o["metadata"].get("namespace", "").startswith("istio")]
    assert not [n for n in run.objects("Namespace") if "istio.io/dataplane-mode" in n["metadata"].get("labels", {})]
    result = audit(run, plan_for_stack("dev", project.root))
    assert not result.missing and not result.extra and not result.identities
