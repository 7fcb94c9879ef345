"""Helm values the platform passes to the operators' charts, one pure function per chart: sizes, pod hardening
and feature switches, through keys each pinned chart reads.

Comments name the upstream values.yaml path a key comes from when its name does not say it (for
kube-prometheus-stack: `kps:` is the chart's values.yaml, `grafana:`, `ksm:` and `node-exporter:` its subcharts').
What values cannot fix is listed, with the reason, in infra/offline/checkov_skips.yaml.
"""

from __future__ import annotations

from components import pod_security
from infra.config import Mesh as MeshConfig
from infra.config import Monitoring

ALERTMANAGER_SECRET = "alertmanager-settlement"

# The platform creates this Secret (components/credentials.py: a generated password, keys `username` and
# `password`) before the release: with it, the chart renders no random password and two renders are identical.
# The chart reads the keys named by grafana: admin.userKey / admin.passwordKey.
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER = "admin"
GRAFANA_ADMIN_USER_KEY = "username"
GRAFANA_ADMIN_PASSWORD_KEY = "password"

# Pinned instead of the chart's `latest` (kps: crds.upgradeJob.image.busybox.tag): the job only runs `bzcat`.
CRD_UPGRADE_BUSYBOX_TAG = "1.37.0"

# The Grafana sidecars each serve /healthz on HEALTH_PORT (default 8080 for both: in one pod the second cannot bind),
# so each gets its own port; the chart's helpers use the same numbers for its init-container variants.
DASHBOARD_SIDECAR_HEALTH_PORT = 8081
DATASOURCE_SIDECAR_HEALTH_PORT = 8082


def resources(cpu_request: str, memory_request: str, cpu_limit: str, memory_limit: str) -> dict:
    return {
        "requests": {"cpu": cpu_request, "memory": memory_request},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


# Sizes for a small cluster; dev must fit the whole environment in 3 CPU / 6 GiB, so requests stay near idle use.
PROMETHEUS_RESOURCES = resources("200m", "512Mi", "1", "1536Mi")
ALERTMANAGER_RESOURCES = resources("20m", "64Mi", "100m", "128Mi")
# Every Prometheus and Alertmanager pod runs a config-reloader sidecar and init container with these.
CONFIG_RELOADER_RESOURCES = resources("10m", "32Mi", "50m", "64Mi")
OPERATOR_RESOURCES = resources("50m", "128Mi", "200m", "256Mi")
KUBE_STATE_METRICS_RESOURCES = resources("50m", "64Mi", "200m", "256Mi")
GRAFANA_RESOURCES = resources("100m", "128Mi", "500m", "512Mi")
GRAFANA_SIDECAR_RESOURCES = resources("20m", "64Mi", "100m", "128Mi")
NODE_EXPORTER_RESOURCES = resources("20m", "32Mi", "100m", "64Mi")
# The admission webhook's certificate jobs (kube-webhook-certgen) and the CRD upgrade job (busybox + kubectl).
ADMISSION_JOB_RESOURCES = resources("10m", "32Mi", "50m", "64Mi")
CRD_UPGRADE_JOB_RESOURCES = resources("50m", "64Mi", "500m", "256Mi")

# Chart images are tags (digests cannot be resolved offline): pull them every time, as components/workload.py does.
PULL_ALWAYS = "Always"


# The Barman Cloud plugin runs v0.14.0 (replica-cluster WAL restore fix) on chart 0.7.0, which ships v0.13.0:
# nothing under upstream's `config/` changed between the two tags (see the shared NOTES).
BARMAN_CLOUD_PLUGIN_TAG = "v0.14.0"

# distroless "nonroot", the user Envoy Gateway's chart already sets. KEDA and cert-manager set no UID (their images
# pick one); a UID >= 10000 keeps a container escape away from host users (checkov CKV_K8S_40). These images are
# static binaries that write only to mounted volumes, so any UID runs them (OpenShift runs them under random UIDs).
NONROOT_UID = 65532
# cloudnative-pg's and plugin-barman-cloud's charts already run as pod_security.DEFAULT_UID (10001).


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


def cert_manager_values(namespace: str) -> dict:
    """cert-manager v1.21.1 in `namespace`: CRDs, metrics for the certificate-expiry alert, the Gateway API
    integration, and leader election in its own namespace."""
    pod, container = hardened(NONROOT_UID)
    # values.yaml `securityContext` is the pod's, `containerSecurityContext` the container's (also under `webhook`,
    # `cainjector` and `startupapicheck`). `networkPolicy` (also under `webhook` and `cainjector`) stays off: the
    # chart's policies allow egress to ports 80, 443, 53 and 6443 anywhere; the platform's own allow less.
    security = {"securityContext": pod, "containerSecurityContext": container}
    pull = {"image": {"pullPolicy": PULL_ALWAYS}}
    return {
        # values.yaml `global.leaderElection.namespace` defaults to kube-system: its leases (and the Roles that
        # grant them) stay in cert-manager's own namespace instead.
        "global": {"leaderElection": {"namespace": namespace}},
        "crds": {"enabled": True},
        # Its metrics feed the certificate-expiry alert. values.yaml `prometheus.servicemonitor.honorLabels`
        # defaults to false: the Certificate's `namespace` label would be renamed `exported_namespace` and
        # `namespace` read cert-manager, sending every certificate's alert to the platform route. Honoured, it
        # stays the Certificate's (the controller's own series carry no `namespace`, so they keep the target's).
        "prometheus": {"enabled": True, "servicemonitor": {"enabled": True, "honorLabels": True}},
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


def node_exporter_namespace(monitoring_namespace: str) -> str:
    """node-exporter's own namespace: a host agent (hostNetwork, hostPID, hostPath) that only Pod Security
    "privileged" admits, kept apart so the monitoring namespace itself can enforce "restricted"."""
    return f"{monitoring_namespace}-node"


def host_agent_namespaces(monitoring_namespace: str, mesh: MeshConfig | None = None) -> dict[str, str]:
    """The only namespaces below Pod Security "restricted", each holding only host agents, and why. `mesh`: the
    ambient mesh, when enabled (its node agents get their own namespace; istiod stays restricted)."""
    namespaces = {
        node_exporter_namespace(monitoring_namespace): (
            "node-exporter reads the node's /proc, /sys and root filesystem through hostPID, hostNetwork and "
            "hostPath volumes (prometheus-node-exporter 4.56.1 templates/daemonset.yaml): only `privileged` admits it"
        )
    }
    if mesh is not None and mesh.enabled:
        namespaces[mesh.node_namespace] = (
            "istio-cni-node and ztunnel run as root with NET_ADMIN, SYS_ADMIN and NET_RAW and hostPath volumes to "
            "redirect every enrolled pod's traffic inside its network namespace (istio/istio 1.30.3 "
            "manifests/charts/istio-cni and ztunnel templates/daemonset.yaml); istio.io "
            "docs/setup/additional-setup/pod-security-admission: only `privileged` admits them"
        )
    return namespaces


def _sidecar_probe() -> dict:
    # One probe serves every Grafana sidecar (grafana: sidecar.livenessProbe/readinessProbe) while each listens on
    # its own HEALTH_PORT, so it is an exec probe that reads the container's own variable (k8s-sidecar is Python).
    # /healthz answers 200 after the first sync and while the watchers run (k8s-sidecar 2.10.1 src/healthz.py).
    script = (
        "import os, urllib.request; "
        "urllib.request.urlopen('http://localhost:' + os.environ['HEALTH_PORT'] + '/healthz', timeout=3)"
    )
    return {"exec": {"command": ["python", "-c", script]}, "periodSeconds": 30, "timeoutSeconds": 5}


def monitoring_values(m: Monitoring, namespace: str) -> dict:
    """kube-prometheus-stack values for the release in `namespace`: retention and storage from config, Prometheus
    picking up every ServiceMonitor, PodMonitor and PrometheusRule the platform creates (not only the chart's own),
    and every pod sized, probed and locked down as far as the chart allows."""

    def volume(size: str) -> dict:
        spec: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
        if m.storage_class is not None:
            spec["storageClassName"] = m.storage_class
        return {"volumeClaimTemplate": {"spec": spec}}

    return {
        "crds": {
            # Helm installs crds/ once and never upgrades it; this pre-install/pre-upgrade/pre-rollback hook Job
            # server-side applies the chart's CRDs (kps: crds.upgradeJob). It calls the API, so it keeps its token.
            "upgradeJob": {
                "enabled": True,
                "image": {
                    "busybox": {"tag": CRD_UPGRADE_BUSYBOX_TAG, "pullPolicy": PULL_ALWAYS},
                    # The tag defaults to the cluster's Kubernetes version, which keeps kubectl within skew.
                    "kubectl": {"pullPolicy": PULL_ALWAYS},
                },
                "resources": CRD_UPGRADE_JOB_RESOURCES,
                # kubectl keeps its discovery cache under $HOME, and the root filesystem is read-only.
                "env": {"HOME": "/tmp"},
            }
        },
        # The control plane's own components are not reachable from the pod network on managed clusters (EKS,
        # GKE, AKS), and kube-proxy is often replaced by the CNI: scraping them would only raise TargetDown and
        # their `...Down` alerts. Turning each off drops its Service, ServiceMonitor and rules together (kps:
        # kubeControllerManager/kubeScheduler/kubeEtcd/kubeProxy.enabled gate templates/prometheus/rules-1.14).
        # The API server, the kubelets and CoreDNS stay monitored.
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "prometheusOperator": {
            "image": {"pullPolicy": PULL_ALWAYS},
            "resources": OPERATOR_RESOURCES,
            # kps: prometheusOperator.prometheusConfigReloader: becomes the operator's --config-reloader-* flags,
            # applied to the reloader sidecar and init container of every Prometheus and Alertmanager pod.
            "prometheusConfigReloader": {"resources": CONFIG_RELOADER_RESOURCES, "enableProbe": True},
            "admissionWebhooks": {
                # kps: prometheusOperator.admissionWebhooks.patch: the hook Jobs that create the webhook certificate
                # and patch it into the webhook configurations (cert-manager cannot: it installs after this chart).
                "patch": {
                    "image": {"pullPolicy": PULL_ALWAYS},
                    "resources": ADMISSION_JOB_RESOURCES,
                    "securityContext": {
                        "runAsUser": pod_security.DEFAULT_UID,
                        "runAsGroup": pod_security.DEFAULT_UID,
                    },
                }
            },
        },
        "prometheus": {
            "prometheusSpec": {
                "replicas": m.prometheus_replicas,
                "retention": m.retention,
                "storageSpec": volume(m.storage_size),
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "resources": PROMETHEUS_RESOURCES,
                # Also the config-reloader's pull policy: the operator passes it to every container it adds.
                "image": {"pullPolicy": PULL_ALWAYS},
            }
        },
        "alertmanager": {
            # Alertmanager never calls the API (its reloader watches mounted files): no token in its pods.
            "serviceAccount": {"automountServiceAccountToken": False},
            "alertmanagerSpec": {
                "replicas": m.alertmanager_replicas,
                "storage": volume(m.alertmanager_storage_size),
                # Routing and receivers come from the platform's generated, secret configuration.
                "configSecret": ALERTMANAGER_SECRET,
                "resources": ALERTMANAGER_RESOURCES,
                "image": {"pullPolicy": PULL_ALWAYS},
                "automountServiceAccountToken": False,
            },
        },
        "grafana": {
            # grafana: admin.existingSecret/userKey/passwordKey (kps passes them through as grafana.admin).
            "admin": {
                "existingSecret": GRAFANA_ADMIN_SECRET,
                "userKey": GRAFANA_ADMIN_USER_KEY,
                "passwordKey": GRAFANA_ADMIN_PASSWORD_KEY,
            },
            "image": {"pullPolicy": PULL_ALWAYS},
            "resources": GRAFANA_RESOURCES,
            # grafana: securityContext (pod): a UID outside the image's 472 and the host's system range; storage
            # is an emptyDir, so no existing files change owner.
            "securityContext": pod_security.pod_security_context(),
            "containerSecurityContext": {"readOnlyRootFilesystem": True},
            # grafana: extraEmptyDirMounts: a writable /tmp once the root filesystem is read-only.
            "extraEmptyDirMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            # grafana: rbac.namespaced: a Role in this namespace instead of a ClusterRole reading every ConfigMap and
            # Secret in the cluster; the platform's dashboards and the chart's datasource live here.
            "rbac": {"namespaced": True},
            "sidecar": {
                "imagePullPolicy": PULL_ALWAYS,
                "resources": GRAFANA_SIDECAR_RESOURCES,
                "securityContext": {"readOnlyRootFilesystem": True},
                "livenessProbe": _sidecar_probe(),
                "readinessProbe": _sidecar_probe(),
                "dashboards": {
                    "enabled": True,
                    "label": "grafana_dashboard",
                    # kps sets ALL; null drops the override, so the sidecar reads only its own namespace.
                    "searchNamespace": None,
                    # Dashboards are ConfigMaps: the sidecar need not read Secrets (grafana: sidecar.*.resource).
                    "resource": "configmap",
                    "env": {"HEALTH_PORT": str(DASHBOARD_SIDECAR_HEALTH_PORT)},
                },
                "datasources": {
                    "resource": "configmap",
                    "env": {"HEALTH_PORT": str(DATASOURCE_SIDECAR_HEALTH_PORT)},
                },
            },
        },
        "kube-state-metrics": {
            "image": {"pullPolicy": PULL_ALWAYS},
            "resources": KUBE_STATE_METRICS_RESOURCES,
        },
        "prometheus-node-exporter": {
            # node-exporter: namespaceOverride: the DaemonSet, its Service, ServiceAccount and ServiceMonitor.
            "namespaceOverride": node_exporter_namespace(namespace),
            "image": {"pullPolicy": PULL_ALWAYS},
            "resources": NODE_EXPORTER_RESOURCES,
            # It reads the host through read-only mounts and needs no capability or privilege for that.
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containerSecurityContext": {
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        },
    }


# --- The Istio ambient mesh (istio/istio 1.30.3 manifests/charts: base, istio-control/istio-discovery = istiod,
# istio-cni = cni, ztunnel). Each chart reads its values at the top level (its values.yaml nests the defaults under
# `_internal_defaults_do_not_set`, which must not be set) and `profile: ambient` loads files/profile-ambient.yaml.
MESH_PROFILE = "ambient"
# The root namespace's cacerts Secret: istiod mounts it at /etc/cacerts (istio-discovery templates/deployment.yaml,
# volume `cacerts`, optional) and, finding `tls.crt` there, signs with tls.crt/tls.key and trusts ca.crt
# (pilot/pkg/bootstrap/istio_ca.go `detectSigningCABundleAndCRL`, security/pkg/pki/ca/ca.go TLSSecret*File).
MESH_CA_SECRET = "cacerts"


def _mesh_common(mesh: MeshConfig) -> dict:
    common: dict = {"profile": MESH_PROFILE, "global": {"hub": mesh.hub}}
    if mesh.platform is not None:
        common["global"]["platform"] = mesh.platform
    return common


def istio_base_values(mesh: MeshConfig) -> dict:
    """base: Istio's CRDs (templates, so upgrades upgrade them) and the default-revision validating webhook."""
    return {"profile": MESH_PROFILE, **({"global": {"platform": mesh.platform}} if mesh.platform else {})}


def istiod_values(mesh: MeshConfig) -> dict:
    """istiod: fixed replicas (no HPA: the footprint stays what config says), hardened to Pod Security
    "restricted" (the chart sets no seccomp profile unless given), certificates signed with the platform's
    intermediate in `cacerts`."""
    values = _mesh_common(mesh)
    values["global"]["imagePullPolicy"] = PULL_ALWAYS
    # istiod signs certificates only for the node agent it trusts (templates/deployment.yaml
    # CA_TRUSTED_NODE_ACCOUNTS = trustedZtunnelNamespace/ztunnel): ztunnel runs in the node namespace.
    values["trustedZtunnelNamespace"] = mesh.node_namespace
    values["pilot"] = {
        "autoscaleEnabled": False,
        "replicaCount": mesh.istiod_replicas,
        "resources": mesh.istiod_resources.model_dump(),
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return values


def istio_cni_values(mesh: MeshConfig) -> dict:
    """istio-cni in ambient mode: the node agent that redirects enrolled pods' traffic to ztunnel."""
    values = _mesh_common(mesh)
    values["global"]["imagePullPolicy"] = PULL_ALWAYS
    values["resources"] = mesh.cni_resources.model_dump()
    return values


def ztunnel_values(mesh: MeshConfig) -> dict:
    """ztunnel: the per-node proxy (mTLS, identity, L4 authorisation). Its image registry is `hub` (not
    `global.hub`: ztunnel values.yaml)."""
    values = _mesh_common(mesh)
    values["hub"] = mesh.hub
    # ztunnel finds istiod (CA and xDS) at istiod.<istioNamespace>.svc:15012 (templates/daemonset.yaml).
    values["istioNamespace"] = mesh.namespace
    values["imagePullPolicy"] = PULL_ALWAYS
    values["resources"] = mesh.ztunnel_resources.model_dump()
    return values
