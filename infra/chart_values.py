"""Helm values for the operator charts: sizes, pod hardening and feature switches, one pure function per chart.

Every key is one the pinned chart reads (the comment names its `values.yaml` path when the name does not say
it). What values cannot fix is listed, with the reason, in `infra/offline/checkov_skips.yaml`.
"""

from __future__ import annotations

from components import pod_security

# The Barman Cloud plugin runs v0.14.0 (replica-cluster WAL restore fix) on chart 0.7.0, which ships v0.13.0:
# nothing under upstream's `config/` changed between the two tags (see the shared NOTES).
BARMAN_CLOUD_PLUGIN_TAG = "v0.14.0"

# A tag can move, so nodes pull it every time (the platform's own workloads do the same, components/workload.py).
PULL_ALWAYS = "Always"

# distroless "nonroot", the user Envoy Gateway's chart already sets. KEDA and cert-manager set no UID (their images
# pick one); a UID >= 10000 keeps a container escape away from host users (checkov CKV_K8S_40). These images are
# static binaries that write only to mounted volumes, so any UID runs them (OpenShift runs them under random UIDs).
NONROOT_UID = 65532
# cloudnative-pg's and plugin-barman-cloud's charts already run as pod_security.DEFAULT_UID (10001).


def resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> dict:
    return {
        "requests": {"cpu": cpu_request, "memory": memory_request},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


# Sizes for a dev cluster of 3 CPU / 6 GiB shared with everything else; together these requests are
# 0.6 CPU and 768 MiB. Limits leave room for start-up and for a burst of reconciles.
CNPG_OPERATOR_RESOURCES = resources("100m", "128Mi", "500m", "512Mi")
BARMAN_CLOUD_RESOURCES = resources("50m", "64Mi", "200m", "256Mi")
KEDA_OPERATOR_RESOURCES = resources("100m", "128Mi", "500m", "512Mi")
KEDA_METRICS_SERVER_RESOURCES = resources("50m", "64Mi", "200m", "256Mi")
KEDA_WEBHOOKS_RESOURCES = resources("50m", "64Mi", "200m", "128Mi")
CERT_MANAGER_CONTROLLER_RESOURCES = resources("50m", "64Mi", "200m", "256Mi")
CERT_MANAGER_CAINJECTOR_RESOURCES = resources("50m", "64Mi", "200m", "256Mi")
CERT_MANAGER_WEBHOOK_RESOURCES = resources("50m", "64Mi", "200m", "128Mi")
ENVOY_GATEWAY_RESOURCES = resources("100m", "128Mi", "500m", "512Mi")
# Install-time hook jobs (cert-manager startupapicheck, gateway-helm certgen): seconds of work.
HOOK_JOB_RESOURCES = resources("10m", "32Mi", "100m", "64Mi")


def hardened(uid: int) -> tuple[dict, dict]:
    """(pod, container) security contexts: Pod Security "restricted" plus a read-only root and a fixed UID, from
    the same functions as the platform's own pods. A chart replaces its default block with the one given, so
    each block is complete."""
    return pod_security.pod_security_context(uid), pod_security.container_security_context()


def cnpg_values() -> dict:
    """cloudnative-pg 0.29.0: the operator with its CRDs (templates, so Helm upgrades them)."""
    pod, container = hardened(pod_security.DEFAULT_UID)
    return {
        "crds": {"create": True},
        "image": {"pullPolicy": PULL_ALWAYS},
        "resources": CNPG_OPERATOR_RESOURCES,
        # The chart's defaults are nearly as strict; given in full so a chart upgrade cannot loosen them.
        "podSecurityContext": pod,
        "containerSecurityContext": container,
    }


def barman_cloud_values() -> dict:
    """plugin-barman-cloud 0.7.0 running the plugin's v0.14.0 images."""
    pod, container = hardened(pod_security.DEFAULT_UID)
    return {
        "image": {"tag": BARMAN_CLOUD_PLUGIN_TAG},
        # values.yaml `sidecarImage.tag`: the image the plugin injects into every PostgreSQL instance pod
        # (the chart writes it into ConfigMap plugin-barman-cloud-config, key SIDECAR_IMAGE).
        "sidecarImage": {"tag": BARMAN_CLOUD_PLUGIN_TAG},
        "resources": BARMAN_CLOUD_RESOURCES,
        "podSecurityContext": pod,
        "containerSecurityContext": container,
    }


def keda_values() -> dict:
    """keda 2.20.2: operator, metrics API server and admission webhooks."""
    pod, container = hardened(NONROOT_UID)
    components = ("operator", "metricServer", "webhooks")
    return {
        "image": {"pullPolicy": PULL_ALWAYS},
        "resources": {
            "operator": KEDA_OPERATOR_RESOURCES,
            "metricServer": KEDA_METRICS_SERVER_RESOURCES,
            "webhooks": KEDA_WEBHOOKS_RESOURCES,
        },
        # values.yaml `podSecurityContext.<component>` is the pod's, `securityContext.<component>` the container's.
        "podSecurityContext": dict.fromkeys(components, pod),
        "securityContext": dict.fromkeys(components, container),
        # values.yaml `rbac.enabledCustomScaledRefKinds` with the default `scaledRefKinds` (apiGroup "*", kind "*")
        # grants `get` on every resource in the cluster, secrets included. The platform scales only Deployments,
        # which the chart's base ClusterRole covers (apps deployments, deployments/scale).
        "rbac": {"enabledCustomScaledRefKinds": False},
        # values.yaml `networkPolicy` (Cilium flavour by default) stays off: the platform's default-deny plus
        # exact allows (infra/network.py) govern the namespace.
        "networkPolicy": {"enabled": False},
    }


def cert_manager_values() -> dict:
    """cert-manager v1.21.1: CRDs, metrics for the certificate-expiry alert, and the Gateway API integration."""
    pod, container = hardened(NONROOT_UID)
    # values.yaml `securityContext` is the pod's, `containerSecurityContext` the container's (also under `webhook`,
    # `cainjector` and `startupapicheck`). `networkPolicy` (also under `webhook` and `cainjector`) stays off: the
    # chart's policies allow egress to ports 80, 443, 53 and 6443 anywhere; the platform's own allow less.
    security = {"securityContext": pod, "containerSecurityContext": container}
    pull = {"image": {"pullPolicy": PULL_ALWAYS}}
    return {
        "crds": {"enabled": True},
        # Its metrics feed the certificate-expiry alert.
        "prometheus": {"enabled": True, "servicemonitor": {"enabled": True}},
        # values.yaml `config` becomes the controller's ControllerConfiguration (templates/controller-config.yaml).
        # `gatewayAPI.enabled` is the v1.21 field; the top-level `enableGatewayAPI` is deprecated and only copied
        # into it (internal/apis/config/controller/v1alpha1/defaults.go). With it on, the controller exits at start
        # unless the Gateway API CRDs exist (pkg/controller/context.go).
        "config": {"gatewayAPI": {"enabled": True}},
        **pull,
        **security,
        "resources": CERT_MANAGER_CONTROLLER_RESOURCES,
        "networkPolicy": {"enabled": False},
        "webhook": {
            **pull,
            **security,
            "resources": CERT_MANAGER_WEBHOOK_RESOURCES,
            "networkPolicy": {"enabled": False},
        },
        "cainjector": {
            **pull,
            **security,
            "resources": CERT_MANAGER_CAINJECTOR_RESOURCES,
            "networkPolicy": {"enabled": False},
        },
        # The post-install hook job.
        "startupapicheck": {**pull, **security, "resources": HOOK_JOB_RESOURCES},
        # The solver pods cert-manager creates for ACME HTTP-01 challenges at run time.
        "acmesolver": pull,
    }


def envoy_gateway_values() -> dict:
    """gateway-helm v1.9.0 without its CRDs: the platform applies them from gateway-crds-helm (gateway_crds_values)."""
    pod, container = hardened(NONROOT_UID)
    return {
        # values.yaml `crds.enabled` is the condition of the `crds` subchart (Chart.yaml): false drops its crds/
        # folder (Gateway API experimental channel + Envoy Gateway) and its safe-upgrade ValidatingAdmissionPolicy.
        "crds": {"enabled": False},
        # values.yaml `global.images.envoyGateway.pullPolicy` wins over `deployment.envoyGateway.imagePullPolicy`
        # (_helpers.tpl `eg.image.pullPolicy`) and also sets the certgen hook job's policy.
        "global": {"images": {"envoyGateway": {"pullPolicy": PULL_ALWAYS}}},
        "deployment": {
            "envoyGateway": {"resources": ENVOY_GATEWAY_RESOURCES, "securityContext": container},
            "pod": {"securityContext": pod},
        },
        # The pre-install/pre-upgrade hook job that writes the control plane's certificates.
        "certgen": {
            "job": {"resources": HOOK_JOB_RESOURCES, "securityContext": container, "pod": {"securityContext": pod}}
        },
    }


def gateway_crds_values() -> dict:
    """gateway-crds-helm v1.9.0: Gateway API standard channel plus Envoy Gateway's CRDs, as templates."""
    return {
        "crds": {
            # values.yaml `crds.gatewayAPI.channel`: the chart defaults to "experimental".
            "gatewayAPI": {"enabled": True, "channel": "standard"},
            "envoyGateway": {"enabled": True},
        }
    }
