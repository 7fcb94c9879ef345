"""The metric contract: every metric the alert rules and dashboards use, who must expose it, and where upstream
the name (and its labels) comes from, at the version the platform pins.

Services must expose, on `metricsPort` at `metricsPath`:
- `http_requests_total` (counter) with a `code` label (HTTP status), and
- `http_request_duration_seconds` (histogram) with a bucket bound equal to the service's `slo.latencySeconds`;
- queue consumers acknowledge manually (the delivery limit that dead-letters a poison message needs it), which
  RabbitMQ counts per queue.
Everything else comes from components the platform installs and scrapes. A test extracts every metric name from
every rule and dashboard query and checks it is listed here (or is a recording rule defined by the platform).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    meaning: str
    source: str
    """Upstream `repository@version path` the name is defined in, or `service contract` for the services'."""


SERVICE = "service contract (README: Observability)"
PROMETHEUS = "prometheus/prometheus@v3.14.0 scrape/scrape.go (the `up` series of every target)"
CNPG = "cloudnative-pg/cloudnative-pg@v1.30.0 "
BARMAN = "cloudnative-pg/plugin-barman-cloud@v0.14.0 internal/cnpgi/instance/metrics.go"
# RabbitMQ's image rabbitmq:4.1.4: scraped on /metrics with `prometheus.return_per_object_metrics = true`
# (components/queue_cluster.py), which collect_mf/2 answers with every METRICS_RAW family per object (queue, vhost).
RABBITMQ = (
    "rabbitmq/rabbitmq-server@v4.1.4 "
    "deps/rabbitmq_prometheus/src/collectors/prometheus_rabbitmq_core_metrics_collector.erl"
)
KSM = "kubernetes/kube-state-metrics@v2.20.0 internal/store/"
CERT_MANAGER = "cert-manager/cert-manager@v1.21.1 pkg/metrics/certificates.go"

CONTRACT: dict[str, Metric] = {
    # Application services (the contract above).
    "http_requests_total": Metric("requests served, label code", SERVICE),
    "http_request_duration_seconds_bucket": Metric("latency histogram buckets", SERVICE),
    "http_request_duration_seconds_count": Metric("latency histogram count", SERVICE),
    # Prometheus: one per target of every ServiceMonitor and PodMonitor (labels from prometheus-operator
    # v0.93.0 pkg/prometheus/promcfg.go: job, namespace, service, pod).
    "up": Metric("1 when the last scrape of a target succeeded, 0 when it failed", PROMETHEUS),
    # CloudNativePG instance exporter (port 9187, PodMonitor per cluster).
    "cnpg_collector_up": Metric(
        "1 when PostgreSQL answers",
        CNPG + "pkg/management/postgres/webserver/metricserver/pg_collector.go (PostgreSQLUp)",
    ),
    "cnpg_pg_replication_lag": Metric(
        "standby lag in seconds", CNPG + "config/manager/default-monitoring.yaml (pg_replication: lag)"
    ),
    "cnpg_pg_replication_in_recovery": Metric(
        "1 on a standby, 0 on the primary",
        CNPG + "config/manager/default-monitoring.yaml (pg_replication: in_recovery)",
    ),
    "cnpg_backends_total": Metric(
        "open connections", CNPG + "config/manager/default-monitoring.yaml (backends: total)"
    ),
    "cnpg_pg_stat_archiver_seconds_since_last_archival": Metric(
        "seconds since WAL was last archived",
        CNPG + "config/manager/default-monitoring.yaml (pg_stat_archiver: seconds_since_last_archival)",
    ),
    "cnpg_collector_replica_mode": Metric(
        "1 on every instance of a replica cluster, 0 otherwise",
        CNPG + "pkg/management/postgres/webserver/metricserver/pg_collector.go L154-159 (ReplicaCluster), set in "
        "internal/management/controller/instance_controller.go L980-984 from cluster.IsReplica()",
    ),
    "cnpg_collector_pg_wal_archive_status": Metric(
        "WAL segments by archive status (value=ready|done)",
        CNPG + "pkg/management/postgres/webserver/metricserver/pg_collector.go L163, wal.go L42",
    ),
    # Barman Cloud plugin (exported by the instances; the cnpg_collector_*backup* metrics are 0 with plugins).
    # All three read 0 until the object store records a first backup.
    "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp": Metric("newest base backup", BARMAN),
    "barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp": Metric("last failed backup", BARMAN),
    "barman_cloud_cloudnative_pg_io_first_recoverability_point": Metric("oldest recovery point", BARMAN),
    # RabbitMQ built-in Prometheus plugin (port 15691 TLS, per-object metrics enabled). Queue depths come from the
    # quorum queue's leader (deps/rabbit/src/rabbit_quorum_queue.erl, handle_tick); acknowledgements from the
    # channels of every node (deps/rabbit/src/rabbit_channel.erl incr_queue_stats; counted at stats level
    # `fine`, which the management plugin of the -management image sets: rabbit_mgmt_db_handler.erl).
    "rabbitmq_queue_messages_ready": Metric("ready messages per queue (queue_coarse_metrics)", RABBITMQ),
    "rabbitmq_queue_messages": Metric("all messages per queue (queue_coarse_metrics)", RABBITMQ),
    "rabbitmq_queue_consumers": Metric("consumers per queue (queue_metrics)", RABBITMQ),
    "rabbitmq_queue_messages_acked_total": Metric(
        "messages acknowledged by consumers, per queue (queue_delivery_metrics)", RABBITMQ
    ),
    # kube-state-metrics (kube-prometheus-stack; its ServiceMonitor honours the exporter's `namespace`).
    "kube_pod_container_status_restarts_total": Metric("container restarts", KSM + "pod.go"),
    "kube_horizontalpodautoscaler_status_current_replicas": Metric(
        "HPA current replicas", KSM + "horizontalpodautoscaler.go"
    ),
    "kube_horizontalpodautoscaler_spec_max_replicas": Metric("HPA maximum", KSM + "horizontalpodautoscaler.go"),
    "kube_deployment_status_replicas_available": Metric("available replicas per Deployment", KSM + "deployment.go"),
    # cert-manager controller (port 9402, ServiceMonitor from its chart, honorLabels: the Certificate's namespace).
    "certmanager_certificate_expiration_timestamp_seconds": Metric("certificate expiry", CERT_MANAGER),
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
    "label_replace",
    "avg_over_time",
    "max_over_time",
    "delta",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"^\d")
_DURATIONS = re.compile(r"\b\d+(?:ms|[smhdwy])\b")  # `offset 26h`


def metric_names(expr: str) -> set[str]:
    """Metric (and recording rule) names a PromQL expression reads."""
    text = _STRINGS.sub(" ", expr)
    text = _BRACES.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _DURATIONS.sub(" ", text)
    return {t for t in _IDENT.findall(text) if t not in _FUNCTIONS and not _NUMBER.match(t) and t != "e"}
