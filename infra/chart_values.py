"""Values the platform passes to kube-prometheus-stack 88.5.3 (prometheus-operator v0.93, subcharts grafana 12.11.1,
kube-state-metrics 8.4.0, prometheus-node-exporter 4.56.1).

Comments name the upstream values.yaml path a key comes from: `kps:` is the chart's values.yaml, `grafana:`,
`ksm:` and `node-exporter:` the subcharts' (charts/<name>/values.yaml in the chart archive).
"""

from __future__ import annotations

from infra.config import Monitoring

ALERTMANAGER_SECRET = "alertmanager-settlement"

# The platform creates this Secret (from a generated password) before the release: with it, the chart renders no
# random password and two renders are identical. Keys are the chart's defaults (grafana: admin.userKey/passwordKey).
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER_KEY = "admin-user"
GRAFANA_ADMIN_PASSWORD_KEY = "admin-password"


def node_exporter_namespace(monitoring_namespace: str) -> str:
    """node-exporter's own namespace: a host agent (hostNetwork, hostPID, hostPath) that only Pod Security
    "privileged" admits, kept apart so the monitoring namespace itself can enforce "restricted"."""
    return f"{monitoring_namespace}-node"


def monitoring_values(m: Monitoring, namespace: str) -> dict:
    """kube-prometheus-stack values for the release in `namespace`: retention and storage from config, Prometheus
    picking up every ServiceMonitor, PodMonitor and PrometheusRule the platform creates (not only the chart's own)."""

    def volume(size: str) -> dict:
        spec: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
        if m.storage_class is not None:
            spec["storageClassName"] = m.storage_class
        return {"volumeClaimTemplate": {"spec": spec}}

    return {
        "prometheus": {
            "prometheusSpec": {
                "replicas": m.prometheus_replicas,
                "retention": m.retention,
                "storageSpec": volume(m.storage_size),
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
            }
        },
        "alertmanager": {
            "alertmanagerSpec": {
                "replicas": m.alertmanager_replicas,
                "storage": volume(m.alertmanager_storage_size),
                # Routing and receivers come from the platform's generated, secret configuration.
                "configSecret": ALERTMANAGER_SECRET,
            },
        },
        "grafana": {
            # grafana: admin.existingSecret/userKey/passwordKey (kps passes them through as grafana.admin).
            "admin": {
                "existingSecret": GRAFANA_ADMIN_SECRET,
                "userKey": GRAFANA_ADMIN_USER_KEY,
                "passwordKey": GRAFANA_ADMIN_PASSWORD_KEY,
            },
            "sidecar": {
                "dashboards": {
                    "enabled": True,
                    "label": "grafana_dashboard",
                },
            },
        },
        "prometheus-node-exporter": {
            # node-exporter: namespaceOverride: the DaemonSet, its Service, ServiceAccount and ServiceMonitor.
            "namespaceOverride": node_exporter_namespace(namespace),
        },
    }
