"""The operator charts' values: sizes that fit the dev budget, the version and CRD switches the platform relies
on, and a skip list that names every object exactly and says why."""

from __future__ import annotations

import yaml

from components.pod_security import restricted_violations
from components.sizing import parse_quantity
from infra import chart_values as cv
from infra.stack_config import PROJECT_ROOT

LONG_RUNNING = [
    cv.CNPG_OPERATOR_RESOURCES,
    cv.BARMAN_CLOUD_RESOURCES,
    cv.KEDA_OPERATOR_RESOURCES,
    cv.KEDA_METRICS_SERVER_RESOURCES,
    cv.KEDA_WEBHOOKS_RESOURCES,
    cv.CERT_MANAGER_CONTROLLER_RESOURCES,
    cv.CERT_MANAGER_CAINJECTOR_RESOURCES,
    cv.CERT_MANAGER_WEBHOOK_RESOURCES,
    cv.ENVOY_GATEWAY_RESOURCES,
]
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}


def test_every_size_has_requests_and_limits_and_limits_cover_requests():
    for size in [*LONG_RUNNING, cv.HOOK_JOB_RESOURCES]:
        for resource in ("cpu", "memory"):
            assert parse_quantity(size["limits"][resource]) >= parse_quantity(size["requests"][resource]), size


def test_operators_request_a_small_share_of_the_dev_budget():
    # Dev budget: 3 CPU / 6 GiB for everything; the operators of these charts take at most a quarter of it.
    cpu = sum(parse_quantity(s["requests"]["cpu"]) for s in LONG_RUNNING)
    memory = sum(parse_quantity(s["requests"]["memory"]) for s in LONG_RUNNING)
    assert cpu <= 0.75 and memory <= 1.5 * 2**30, (cpu, memory)


def test_security_contexts_are_restricted():
    for values in (cv.cnpg_values(), cv.barman_cloud_values()):
        pod = {"securityContext": values["podSecurityContext"]}
        assert not restricted_violations(
            {**pod, "containers": [{"securityContext": values["containerSecurityContext"]}]}
        )
    keda = cv.keda_values()
    for component in ("operator", "metricServer", "webhooks"):
        spec = {
            "securityContext": keda["podSecurityContext"][component],
            "containers": [{"securityContext": keda["securityContext"][component]}],
        }
        assert not restricted_violations(spec), component


def test_barman_plugin_and_its_sidecar_run_the_same_pinned_release():
    values = cv.barman_cloud_values()
    assert values["image"]["tag"] == values["sidecarImage"]["tag"] == "v0.14.0"


def test_gateway_crds_come_from_gateway_crds_helm_standard_channel():
    assert cv.envoy_gateway_values()["crds"] == {"enabled": False}
    crds = cv.gateway_crds_values()["crds"]
    assert crds["gatewayAPI"] == {"enabled": True, "channel": "standard"}
    assert crds["envoyGateway"]["enabled"] is True


def test_cert_manager_uses_the_current_gateway_api_switch():
    config = cv.cert_manager_values("cert-manager")["config"]
    assert config == {"gatewayAPI": {"enabled": True}}  # not the deprecated top-level enableGatewayAPI


def test_every_checkov_skip_names_one_object_and_gives_a_reason():
    skips = yaml.safe_load((PROJECT_ROOT / "infra" / "offline" / "checkov_skips.yaml").read_text())
    seen = set()
    for entry in skips:
        assert set(entry) <= {"check", "kind", "namespace", "name", "reason"}, entry
        assert entry["check"].startswith(("CKV_K8S_", "CKV2_K8S_")), entry
        assert len(entry["reason"]) > 40, entry
        assert ("namespace" in entry) == (entry["kind"] not in CLUSTER_SCOPED), entry
        key = (entry["check"], entry["kind"], entry.get("namespace"), entry["name"])
        assert key not in seen, f"duplicate skip {key}"
        seen.add(key)
