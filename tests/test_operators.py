"""The operators as verified dependencies: pinned where the config says, described truthfully, CRDs that
upgrade with their chart, and nothing installed that opens the network."""

from __future__ import annotations

import re

import pytest

from infra.config import Operators
from infra.offline import charts
from tests.conftest import STACKS_DIR


def chart_operators() -> dict[str, tuple[str, str]]:
    """Config field -> (chart, version) of every operator installed from a Helm chart, as defaulted."""
    out = {}
    for field, info in Operators.model_fields.items():
        default = info.default
        if hasattr(default, "chart") and hasattr(default, "version"):
            out[field] = (default.chart, default.version)
    return out


@pytest.mark.parametrize("field", sorted(chart_operators()))
def test_every_default_chart_is_cached_and_its_description_names_the_app_version(field, stack_run):
    chart, version = chart_operators()[field]
    meta = charts.chart_metadata(chart, version)
    description = Operators.model_fields[field].description
    assert f"chart {chart} {version}" in description, description
    app = re.search(r"\(app (\S+?)[,:)]", description)
    assert app, f"{field}: say which application version the chart runs"
    images = {
        c["image"]
        for o in stack_run.chart_objects
        if o.release.chart == chart
        for spec in [_pod(o.object)]
        if spec
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]
    }
    if app.group(1) != str(meta["appVersion"]):
        # An override of the chart's images: every image of the chart's own project runs that version.
        assert images and all(i.endswith(f":{app.group(1)}") for i in images if chart in i), images


def _pod(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def test_the_prometheus_operator_runs_the_version_the_crds_are_for(stack_run):
    """kube-prometheus-stack's appVersion is the prometheus-operator it runs; its CRDs carry the same version."""
    kps = [o for o in stack_run.chart_objects if o.release.chart == "kube-prometheus-stack"]
    app = charts.chart_metadata("kube-prometheus-stack", kps[0].release.version)["appVersion"]
    crd_versions = {
        o.object["metadata"]["annotations"].get("operator.prometheus.io/version")
        for o in kps
        if o.object["kind"] == "CustomResourceDefinition"
    }
    assert crd_versions == {app.lstrip("v")}
    operator_images = {
        c["image"]
        for o in kps
        if o.object["kind"] == "Deployment"
        for c in o.object["spec"]["template"]["spec"]["containers"]
        if "prometheus-operator" in c["image"]
    }
    assert operator_images and all(i.endswith(f":{app}") for i in operator_images), operator_images


def test_every_crd_upgrades_with_its_chart(stack_run):
    """Helm installs a chart's crds/ folder once and never upgrades it: a CRD must come from a template (upgraded
    with the release, or applied object by object by a Helm v4 Chart), or from a release that upgrades its own
    crds/ with an upgrade job (kube-prometheus-stack's `crds.upgradeJob`)."""
    crds = [o for o in stack_run.chart_objects if o.object["kind"] == "CustomResourceDefinition"]
    assert crds
    for crd in crds:
        if not crd.source.startswith("crds/"):
            continue
        upgrade_job = crd.release.values.get("crds", {}).get("upgradeJob", {})
        assert upgrade_job.get("enabled") is True, f"{crd.release.chart}: {crd.object['metadata']['name']}"
        jobs = [
            o
            for o in stack_run.chart_objects
            if o.release.urn == crd.release.urn and o.object["kind"] == "Job" and "upgrade" in (o.hook or "")
        ]
        assert jobs, f"{crd.release.chart} says it upgrades its CRDs but renders no pre-upgrade job"


def test_no_chart_installs_the_experimental_gateway_api(stack_run):
    """The platform uses the standard channel only (Gateway, HTTPRoute, GatewayClass...)."""
    channels = {
        o["metadata"].get("annotations", {}).get("gateway.networking.k8s.io/channel")
        for o in stack_run.all_objects()
        if o["kind"] == "CustomResourceDefinition" and o["spec"]["group"] == "gateway.networking.k8s.io"
    }
    assert channels == {"standard"}, channels


def test_no_chart_opens_the_network(stack_run):
    """A NetworkPolicy a chart brings must not allow everything (Bitnami's default `egress: [{}]` did)."""
    for o in stack_run.chart_objects:
        if o.object["kind"] != "NetworkPolicy":
            continue
        for direction in ("ingress", "egress"):
            for rule in o.object["spec"].get(direction) or []:
                peers = rule.get("to" if direction == "egress" else "from")
                assert peers, f"{o.object['metadata']['name']}: {direction} rule open to everyone"


def test_cert_manager_serves_the_gateway_after_the_gateway_api_exists(stack_run):
    """cert-manager's Gateway API support is off by default; on, its controller exits at start unless the
    Gateway API CRDs are served (cert-manager v1.21.1 pkg/controller/context.go), so it comes after them."""
    import yaml

    cert_manager = [o for o in stack_run.chart_objects if o.release.chart == "cert-manager"]
    (controller,) = [
        o.object
        for o in cert_manager
        if o.object["kind"] == "Deployment" and o.object["metadata"]["name"] == o.release.name
    ]
    args = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    config_path = next(a.split("=", 1)[1] for a in args if a.startswith("--config="))
    mounts = controller["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    mount = next(m for m in mounts if config_path.startswith(m["mountPath"]))
    volume = next(v for v in controller["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    (config_map,) = [
        o.object
        for o in cert_manager
        if o.object["kind"] == "ConfigMap" and o.object["metadata"]["name"] == volume["configMap"]["name"]
    ]
    config = yaml.safe_load(config_map["data"][config_path.rsplit("/", 1)[-1]])
    assert config["kind"] == "ControllerConfiguration" and config["gatewayAPI"]["enabled"] is True

    gateway_crds = {
        o.release.urn
        for o in stack_run.chart_objects
        if o.object["kind"] == "CustomResourceDefinition" and o.object["spec"]["group"] == "gateway.networking.k8s.io"
    }
    assert gateway_crds and gateway_crds <= stack_run.waits_for(cert_manager[0].release.urn)


def test_acme_self_check_may_reach_the_gateways_public_addresses_on_port_80_only(stack_run):
    from infra.stack_config import plan_for_stack

    gateway = plan_for_stack(stack_run.stack, STACKS_DIR).config.gateway
    policies = [p for p in stack_run.objects("NetworkPolicy") if p["metadata"]["name"] == "allow-cert-manager"]
    port_80 = [
        rule
        for p in policies
        for rule in p["spec"].get("egress", [])
        if any(port.get("port") == 80 for port in rule.get("ports", []))
    ]
    if gateway.acme_email is None:
        assert not port_80
        return
    assert [sorted(peer["ipBlock"]["cidr"] for peer in rule["to"]) for rule in port_80] == [
        sorted(gateway.public_addresses)
    ]
    assert all([port["port"] for port in rule["ports"]] == [80] for rule in port_80)
