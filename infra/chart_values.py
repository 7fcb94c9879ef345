"""Values the platform passes to the Helm charts it installs, as pure functions of the stack's config."""

from __future__ import annotations

from infra.config import Monitoring

ALERTMANAGER_SECRET = "alertmanager-settlement"


def monitoring_values(m: Monitoring) -> dict:
    """kube-prometheus-stack values: retention and storage from config, and Prometheus picking up every
    ServiceMonitor, PodMonitor and PrometheusRule the platform creates (not only the chart's own)."""

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
            }
        },
        "grafana": {"sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard"}}},
    }
