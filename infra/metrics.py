"""The metric contract: every metric the alert rules and dashboards use, and who must expose it.

Services must expose, on `metricsPort` at `metricsPath`:
- `http_requests_total` (counter) with a `code` label (HTTP status), and
- `http_request_duration_seconds` (histogram) with a bucket bound equal to the service's `slo.latencySeconds`.
Everything else comes from components the platform installs and scrapes. A test extracts every metric name from
every rule and dashboard query and checks it is listed here (or is a recording rule defined by the platform).
"""

from __future__ import annotations

import re

CONTRACT: dict[str, str] = {
    # Application services (the contract above).
    "http_requests_total": "service: requests served, label code",
    "http_request_duration_seconds_bucket": "service: latency histogram buckets",
    "http_request_duration_seconds_count": "service: latency histogram count",
    # CloudNativePG instance exporter (port 9187, PodMonitor per cluster).
    "cnpg_collector_up": "CloudNativePG: 1 when PostgreSQL answers",
    "cnpg_pg_replication_lag": "CloudNativePG: standby lag in seconds",
    "cnpg_pg_replication_in_recovery": "CloudNativePG: 1 on a standby, 0 on the primary",
    "cnpg_backends_total": "CloudNativePG: open connections",
    "cnpg_pg_stat_archiver_seconds_since_last_archival": "CloudNativePG: seconds since WAL was last archived",
    "cnpg_collector_pg_wal_archive_status": "CloudNativePG: WAL segments by archive status (value=ready|done)",
    # Barman Cloud plugin (exported by the instances; the cnpg_collector_*backup* metrics are 0 with plugins).
    "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp": "Barman Cloud plugin: newest base backup",
    "barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp": "Barman Cloud plugin: last failed backup",
    "barman_cloud_cloudnative_pg_io_first_recoverability_point": "Barman Cloud plugin: oldest recovery point",
    # RabbitMQ built-in Prometheus plugin (port 15691 TLS, per-object metrics enabled).
    "rabbitmq_queue_messages_ready": "RabbitMQ: ready messages per queue",
    "rabbitmq_queue_messages": "RabbitMQ: all messages per queue",
    "rabbitmq_queue_consumers": "RabbitMQ: consumers per queue",
    # kube-state-metrics (kube-prometheus-stack).
    "kube_pod_container_status_restarts_total": "kube-state-metrics: container restarts",
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics: HPA current replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas": "kube-state-metrics: HPA maximum",
    # cert-manager controller (port 9402, ServiceMonitor from its chart).
    "certmanager_certificate_expiration_timestamp_seconds": "cert-manager: certificate expiry",
}

_FUNCTIONS = {
    "sum",
    "rate",
    "irate",
    "increase",
    "deriv",
    "changes",
    "time",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "abs",
    "topk",
    "bottomk",
    "absent",
    "vector",
    "scalar",
    "bool",
    "offset",
    "le",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"^\d")


def metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names a PromQL expression reads."""
    text = _STRINGS.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {t for t in _IDENT.findall(text) if t not in _FUNCTIONS and not _NUMBER.match(t) and t != "e"}
