"""Alert and recording rules, generated from the plan (pure; deployed as PrometheusRule objects).

Service SLOs use multi-window, multi-burn-rate alerts (Google SRE workbook, "Alerting on SLOs"): over a 30-day
budget, a 2% burn in 1 hour (14.4x) or 5% in 6 hours (6x) pages; 10% in 3 days (1x) or a 3x burn over a day
opens a ticket. Each long window is paired with a short one (1/12) so an alert stops soon after the burn stops.

Which SLOs a service gets follows from the declared graph, never from its name:
- a service that serves HTTP (another service `calls` it, or it is exposed through the gateway) gets the HTTP
  availability and latency SLOs;
- a service that consumes queues gets, per queue it consumes, the queue SLOs: processing (the ready backlog
  drains within `slo.processingSeconds` at the rate the consumer acknowledges, `slo.processingTarget`% of the
  time) and dead-letter (at most 100 - `slo.deadLetterTarget`% of its messages are dead-lettered);
- a queue-only worker therefore gets no HTTP SLO (nothing calls it, its HTTP ratios would stay empty).

Every alert carries `severity` (page | ticket), the `namespace` of what it is about and its `subsystem`
(`platform` for shared infrastructure); Alertmanager routes on `namespace` and `severity`. A queue SLO alert is
about the consuming service, so it carries the consumer's namespace even when the queue lives in another
subsystem. Metric names used here are listed, with their upstream source, in `infra.metrics.CONTRACT`.
"""

from __future__ import annotations

from components.queue_topology import dead_letter_queue
from infra.topology import PLATFORM_ROUTE, PlatformPlan, QueueRef, ServicePlan, operator_namespaces

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (long window, short window, burn rate, severity)
BURN_ALERTS = (
    ("1h", "5m", 14.4, "page"),
    ("6h", "30m", 6.0, "page"),
    ("1d", "2h", 3.0, "ticket"),
    ("3d", "6h", 1.0, "ticket"),
)
SLOW_RULE = "service:http_slow_requests:ratio_rate"
ERROR_RULE = "service:http_errors:ratio_rate"
# 1 while a consumed queue's ready backlog would take longer than the objective to drain, else 0.
PROCESSING_BAD = "queue:processing_over_objective:bool"
PROCESSING_RULE = "queue:processing_over_objective:ratio_avg"
DEAD_LETTER_RULE = "queue:dead_lettered:ratio_rate"
RATE_WINDOW = "5m"
"""The rate a consumer acknowledges at, for the processing SLO's drain-time estimate."""
RUNBOOK = "https://runbooks.settlement.example/alerts/"
SLO_ALERTS = ("ServiceAvailabilityBudgetBurn", "ServiceLatencyBudgetBurn")
QUEUE_SLO_ALERTS = ("QueueProcessingBudgetBurn", "QueueDeadLetterBudgetBurn")
# Scraped through a ServiceMonitor whose `jobLabel` is app.kubernetes.io/name (prometheus-operator v0.93.0
# pkg/prometheus/promcfg.go: `job` is the Service's value of that label): the alerts that read them go blind
# when they vanish. Tests check the rendered ServiceMonitors and Services yield these job names.
METRICS_SOURCES = {
    "kube-state-metrics": "monitoring",
    "cert-manager": "cert_manager",
}
"""job -> the operator (config `infrastructure.operators.<field>`) whose namespace it runs in."""


def prometheus_float(value: float) -> str:
    """A bucket bound as Prometheus 3 stores the `le` label: normalised on ingestion to Go's shortest 'g' format
    with ".0" appended when that has neither "." nor "e" (prometheus v3 model/labels/float.go
    FormatOpenMetricsFloat; docs/migration.md "le and quantile label values"): 1 -> "1.0", 0.5 -> "0.5"."""
    if value == 0:
        return "0.0"
    digits = repr(float(value)).lstrip("-")
    mantissa, _, exp = digits.partition("e")
    shift = int(exp) if exp else 0
    whole, _, frac = mantissa.partition(".")
    frac = "" if frac == "0" else frac
    sig = (whole + frac).lstrip("0")
    # Decimal exponent of the first significant digit.
    point = len(whole) + shift if whole != "0" else shift - (len(frac) - len(frac.lstrip("0")))
    exponent = point - 1
    sig = sig.rstrip("0") or "0"
    sign = "-" if value < 0 else ""
    # strconv.FormatFloat(f, 'g', -1, 64): exponent form below 1e-4 and from 1e6 (shortest: precision 6 decides).
    if exponent < -4 or exponent >= 6:
        body = sig[0] + ("." + sig[1:] if len(sig) > 1 else "")
        return f"{sign}{body}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent < 0:
        text = "0." + "0" * (-exponent - 1) + sig
    elif len(sig) <= exponent + 1:
        text = sig + "0" * (exponent + 1 - len(sig))
    else:
        text = sig[: exponent + 1] + "." + sig[exponent + 1 :]
    return sign + (text if "." in text else text + ".0")


def http_services(plan: PlatformPlan) -> list[ServicePlan]:
    """Services something calls over HTTP in the declared graph: another service's `calls`, or the gateway."""
    called = {(e.subsystem, e.service) for s in plan.services() for e in s.calls}
    return [s for s in plan.services() if s.expose is not None or (s.subsystem, s.name) in called]


def consumed_queues(plan: PlatformPlan) -> list[tuple[ServicePlan, QueueRef]]:
    """(consumer, queue) for every queue a service consumes: the queue SLOs' subjects."""
    return [(s, q) for s in plan.services() for q in s.consumes]


def _selector(svc: ServicePlan) -> str:
    return f'namespace="{svc.subsystem}", service="{svc.name}"'


def _queue_selector(svc: ServicePlan, queue: QueueRef) -> str:
    return f'{_selector(svc)}, queue="{queue.queue}"'


def _queue_labels(svc: ServicePlan, queue: QueueRef) -> dict[str, str]:
    return {"namespace": svc.subsystem, "subsystem": svc.subsystem, "service": svc.name, "queue": queue.queue}


def _dead_lettered(queue: QueueRef, window: str) -> str:
    dlq = f'namespace="{queue.subsystem}", queue="{dead_letter_queue(queue.queue)}"'
    # The dead-letter queue is consumed by nobody (QueueConsumersAbsent leaves it out): its growth is what was
    # dead-lettered into it; a drain by an operator counts as zero, not as negative. RabbitMQ counts no
    # dead-lettering per source queue (its dead-lettered counters carry only queue type and strategy:
    # deps/rabbit/src/rabbit_global_counters.erl at v4.1.4), and a quorum queue's depth is reported by its
    # leader: summed per node, a leader change loses at most a sample.
    return f"clamp_min(sum(delta(rabbitmq_queue_messages{{{dlq}}}[{window}])), 0)"


def recording_rules(plan: PlatformPlan) -> list[dict]:
    rules = []
    for window in WINDOWS:
        rules.append(
            {
                "record": f"{ERROR_RULE}{window}",
                "expr": (
                    f'sum by (namespace, service) (rate(http_requests_total{{code=~"5.."}}[{window}]))\n'
                    f"/\nsum by (namespace, service) (rate(http_requests_total[{window}]))"
                ),
            }
        )
    for svc in http_services(plan):
        for window in WINDOWS:
            sel = _selector(svc)
            rules.append(
                {
                    "record": f"{SLOW_RULE}{window}",
                    # Static labels equal to what the expression yields: one distinct rule per service.
                    "labels": {"namespace": svc.subsystem, "service": svc.name},
                    "expr": (
                        f"1 - (\n  sum by (namespace, service) (rate(http_request_duration_seconds_bucket"
                        f'{{{sel}, le="{prometheus_float(svc.latency_seconds)}"}}[{window}]))\n'
                        f"  /\n  sum by (namespace, service) (rate(http_request_duration_seconds_count"
                        f"{{{sel}}}[{window}]))\n)"
                    ),
                }
            )
    for svc, queue in consumed_queues(plan):
        where = f'namespace="{queue.subsystem}", queue="{queue.queue}"'
        acked = f"rabbitmq_queue_messages_acked_total{{{where}}}"
        # Drain time = ready messages / acknowledgements per second. No acknowledgement counted yet makes the
        # rate 0: a waiting backlog is then infinitely late (bad), an empty queue 0/0 (good).
        rules.append(
            {
                "record": PROCESSING_BAD,
                "labels": _queue_labels(svc, queue),
                "expr": (
                    f"max(rabbitmq_queue_messages_ready{{{where}}})\n"
                    f"/ (sum(rate({acked}[{RATE_WINDOW}])) or vector(0))\n"
                    f"> bool {prometheus_float(svc.processing_seconds)}"
                ),
            }
        )
        for window in WINDOWS:
            dead = _dead_lettered(queue, window)
            rules.append(
                {
                    "record": f"{DEAD_LETTER_RULE}{window}",
                    "labels": _queue_labels(svc, queue),
                    "expr": f"{dead}\n/\n((sum(increase({acked}[{window}])) or vector(0)) + {dead})",
                }
            )
    if consumed_queues(plan):
        for window in WINDOWS:
            rules.append({"record": f"{PROCESSING_RULE}{window}", "expr": f"avg_over_time({PROCESSING_BAD}[{window}])"})
    return rules


def _burn_expr(rule: str, sel: str, budget: float, severity: str) -> str:
    parts = [
        f"({rule}{long}{{{sel}}} > {rate * budget:.6g} and {rule}{short}{{{sel}}} > {rate * budget:.6g})"
        for long, short, rate, sev in BURN_ALERTS
        if sev == severity
    ]
    return "\nor\n".join(parts)


def _burn_alerts(name: str, slo: str, rule: str, sel: str, budget: float, labels: dict, summary: str) -> list[dict]:
    return [
        {
            "alert": name,
            "expr": _burn_expr(rule, sel, budget, severity),
            "for": "2m" if severity == "page" else "15m",
            "labels": {"severity": severity, "slo": slo, **labels},
            "annotations": {"summary": summary, "runbook_url": f"{RUNBOOK}{name}"},
        }
        for severity in ("page", "ticket")
    ]


def slo_alerts(plan: PlatformPlan) -> list[dict]:
    alerts = []
    for svc in http_services(plan):
        labels = {"namespace": svc.subsystem, "subsystem": svc.subsystem, "service": svc.name}
        objectives = (
            ("Availability", ERROR_RULE, 1 - svc.availability_target / 100, f"{svc.availability_target}% non-5xx"),
            (
                "Latency",
                SLOW_RULE,
                1 - svc.latency_target / 100,
                f"{svc.latency_target}% under {svc.latency_seconds:g}s",
            ),
        )
        for kind, rule, budget, objective in objectives:
            summary = f"{{{{ $labels.service }}}} is burning its {kind.lower()} error budget ({objective} over 30 days)"
            alerts += _burn_alerts(
                f"Service{kind}BudgetBurn", kind.lower(), rule, _selector(svc), budget, labels, summary
            )
    for svc, queue in consumed_queues(plan):
        sel, labels = _queue_selector(svc, queue), _queue_labels(svc, queue)
        source = f"{queue.subsystem}/{queue.queue}"
        alerts += _burn_alerts(
            "QueueProcessingBudgetBurn",
            "processing",
            PROCESSING_RULE,
            sel,
            1 - svc.processing_target / 100,
            labels,
            f"{{{{ $labels.service }}}} falls behind on {source}: its backlog would take more than "
            f"{svc.processing_seconds:g}s to drain (objective: {svc.processing_target}% of the time)",
        )
        alerts += _burn_alerts(
            "QueueDeadLetterBudgetBurn",
            "dead-letter",
            DEAD_LETTER_RULE,
            sel,
            1 - svc.dead_letter_target / 100,
            labels,
            f"{{{{ $labels.service }}}} dead-letters messages of {source} into {dead_letter_queue(queue.queue)} "
            f"(objective: {svc.dead_letter_target}% processed over 30 days)",
        )
    return alerts


def alert_rule(name: str, expr: str, for_: str, severity: str, summary: str, labels: dict | None = None) -> dict:
    """One alerting rule: its severity (what Alertmanager routes on) and `labels`, a summary and its runbook."""
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **(labels or {})},
        "annotations": {"summary": summary, "runbook_url": f"{RUNBOOK}{name}"},
    }


def owned(plan: PlatformPlan, expr: str) -> str:
    """`expr` with a `subsystem` label: the subsystem whose namespace the series is in, `platform` otherwise."""
    subsystems = "|".join(sorted(sub.namespace for sub in plan.subsystems.values()))
    platform = f'label_replace({expr}, "subsystem", "{PLATFORM_ROUTE}", "", "")'
    return f'label_replace(\n{platform},\n"subsystem", "$1", "namespace", "({subsystems})")'


def consumers_absent_expr(plan: PlatformPlan) -> str:
    """Queues without consumers, except dead-letter queues and those the config says are unconsumed on purpose."""
    expr = 'rabbitmq_queue_consumers{queue!~".*-dlq"} == 0'
    exempt = [
        f'rabbitmq_queue_consumers{{namespace="{sub.namespace}",queue="{q.name}"}}'
        for sub in plan.subsystems.values()
        if sub.queue is not None
        for q in sub.queue.queues.values()
        if q.unconsumed is not None
    ]
    return f"{expr}\nunless on(namespace, queue) ({' or '.join(exempt)})" if exempt else expr


def backup_too_old_expr(max_age_hours: int) -> str:
    """The newest base backup is older than allowed, or there has been none although one was expected.

    The Barman Cloud plugin reports 0 until the object store records a first backup (plugin-barman-cloud v0.14.0
    internal/cnpgi/instance/metrics.go, Collect: no recovery window yet). Zero is "too old" only once the series
    has existed for the whole allowed age and stayed 0 all along: a new cluster stays silent until its first
    backup is overdue, and the rule needs no long `for` (which a Prometheus restart would reset)."""
    ts = "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp"
    window = f"{max_age_hours}h"
    return (
        f"(time() - max by (namespace) ({ts}) > {max_age_hours * 3600} and max by (namespace) ({ts}) > 0)\n"
        f"or\n(max by (namespace) (max_over_time({ts}[{window}])) == 0\n"
        f" and on(namespace) count by (namespace) ({ts} offset {window}))"
    )


def _targets_missing(selector: str, minimum: int | None = None) -> str:
    """A scrape target failing (`up == 0`), fewer targets than declared, or none at all (`absent`)."""
    parts = [f"up{{{selector}}} == 0"]
    if minimum is not None:
        parts.append(f"count(up{{{selector}}}) < {minimum}")
    parts.append(f"absent(up{{{selector}}})")
    return "\nor\n".join(parts)


def gap_alerts(plan: PlatformPlan) -> list[dict]:
    """No silent gaps: a target that cannot be scraped or has vanished would silence every alert on its metrics."""
    from infra.platform import postgres_cluster_name, queue_cluster_name  # infra.platform imports this module

    alerts = []
    for sub in plan.subsystems.values():
        ns = sub.namespace
        mine = {"namespace": ns, "subsystem": sub.name}
        for svc in sub.services.values():
            # ServiceMonitor targets: `job` and `service` are the Service's name (promcfg.go, v0.93.0).
            alerts.append(
                alert_rule(
                    "ServiceTargetMissing",
                    _targets_missing(f'namespace="{ns}", job="{svc.name}"'),
                    "5m",
                    "page",
                    f"{svc.name} in {ns} cannot be scraped or has no pods: its SLO and pod alerts are blind",
                    {**mine, "service": svc.name},
                )
            )
        # PodMonitor targets: `job` is "<namespace>/<PodMonitor name>" (promcfg.go, v0.93.0). A dead instance or
        # node reports nothing, so fewer targets than declared alerts too.
        clusters = []
        if sub.postgres is not None:
            clusters.append(("PostgresTargetMissing", postgres_cluster_name(sub.name), sub.postgres.instances))
        if sub.queue is not None:
            clusters.append(("QueueClusterTargetMissing", queue_cluster_name(sub.name), sub.queue.replicas))
        for name, cluster, declared in clusters:
            alerts.append(
                alert_rule(
                    name,
                    _targets_missing(f'namespace="{ns}", job="{ns}/{cluster}"', declared),
                    "5m",
                    "page",
                    f"A member of {cluster} in {ns} cannot be scraped or is gone ({declared} declared)",
                    mine,
                )
            )
        if sub.queue is not None:
            # One rule per declared queue: a new queue adds a rule and changes none (the offline diff shows it).
            for queue in (n for q in sub.queue.queues for n in (q, dead_letter_queue(q))):
                alerts.append(
                    alert_rule(
                        "QueueMissing",
                        f'absent(rabbitmq_queue_messages_ready{{namespace="{ns}", queue="{queue}"}})',
                        "10m",
                        "page",
                        f"Queue {queue} declared for {ns} is not reported: deleted, or its cluster is down",
                        {**mine, "queue": queue},
                    )
                )
    operators = plan.config.infrastructure.operators
    platform = {"subsystem": PLATFORM_ROUTE}
    for job, operator in METRICS_SOURCES.items():
        namespace = getattr(operators, operator).namespace
        alerts.append(
            alert_rule(
                "MetricsSourceMissing",
                _targets_missing(f'namespace="{namespace}", job="{job}"'),
                "5m",
                "page",
                f"{job} cannot be scraped: the alerts built on its metrics are blind",
                {**platform, "namespace": namespace, "job": job},
            )
        )
    namespaces = sorted(operator_namespaces(plan.config, with_controller=True))
    deployments = "kube_deployment_status_replicas_available"
    alerts.append(
        alert_rule(
            "OperatorUnavailable",
            f'{deployments}{{namespace=~"{"|".join(namespaces)}"}} == 0\nor\n'
            + "\nor\n".join(f'absent({deployments}{{namespace="{ns}"}})' for ns in namespaces),
            "10m",
            "page",
            "An operator in {{ $labels.namespace }} has no available replica (or none is reported): failover, "
            "certificates and queue topology are not reconciled",
            platform,
        )
    )
    return alerts


def platform_alerts(plan: PlatformPlan) -> list[dict]:
    m = plan.config.monitoring
    app_namespaces = "|".join(sorted(plan.subsystems))
    alerts = [
        alert_rule(
            "PostgresInstanceDown",
            "cnpg_collector_up == 0",
            "2m",
            "page",
            "PostgreSQL instance {{ $labels.pod }} in {{ $labels.namespace }} is down",
        ),
        alert_rule(
            "PostgresReplicationLagging",
            # Not on the instances of a replica cluster (a disaster-recovery standby site): there the designated
            # primary replays the other site's archived WAL, and its lag (seconds since the last replayed commit,
            # never 0 without a WAL receiver) is the distance to the other site, watched against the RPO by
            # `StandbyReplicationBehindRpo` (infra/dr_alerts.py); at this threshold it would page all day.
            "max by (namespace, pod) (\ncnpg_pg_replication_lag\n"
            "unless on (namespace, pod) (cnpg_collector_replica_mode == 1)\n"
            f") > {m.replication_lag_seconds}",
            "5m",
            "page",
            "Standby {{ $labels.pod }} lags {{ $value }}s behind its primary: a failover now could be slow",
        ),
        alert_rule(
            "PostgresFailoverHappened",
            "changes(cnpg_pg_replication_in_recovery[10m]) > 0",
            "0m",
            "ticket",
            "A PostgreSQL instance in {{ $labels.namespace }} changed role (failover or switchover)",
        ),
        alert_rule(
            "PostgresBackupFailed",
            "barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp\n"
            "> barman_cloud_cloudnative_pg_io_last_available_backup_timestamp",
            "5m",
            "ticket",
            "The last base backup of {{ $labels.namespace }} failed",
        ),
        alert_rule(
            "PostgresBackupTooOld",
            backup_too_old_expr(m.backup_max_age_hours),
            "10m",
            "ticket",
            f"No base backup of {{{{ $labels.namespace }}}} for more than {m.backup_max_age_hours}h",
        ),
        alert_rule(
            "QueueBacklogGrowing",
            f'rabbitmq_queue_messages_ready{{queue!~".*-dlq"}} > {m.queue_backlog_messages}\n'
            'and deriv(rabbitmq_queue_messages_ready{queue!~".*-dlq"}[15m]) > 0',
            "15m",
            "ticket",
            "Queue {{ $labels.queue }} in {{ $labels.namespace }} keeps growing ({{ $value }} ready)",
        ),
        alert_rule(
            "QueueConsumersAbsent",
            consumers_absent_expr(plan),
            "10m",
            "page",
            "Nobody consumes {{ $labels.queue }} in {{ $labels.namespace }}: work is not progressing",
        ),
        alert_rule(
            "DeadLetterQueueNotEmpty",
            'rabbitmq_queue_messages{queue=~".*-dlq"} > 0',
            "5m",
            "ticket",
            "{{ $value }} messages were dead-lettered into {{ $labels.queue }} in {{ $labels.namespace }}",
        ),
        alert_rule(
            "PodCrashLooping",
            f'increase(kube_pod_container_status_restarts_total{{namespace=~"{app_namespaces}"}}[15m]) > 3',
            "5m",
            "ticket",
            "{{ $labels.pod }} in {{ $labels.namespace }} restarted more than 3 times in 15 minutes",
        ),
        alert_rule(
            "AutoscalerPinnedAtMaximum",
            "kube_horizontalpodautoscaler_status_current_replicas\n>= kube_horizontalpodautoscaler_spec_max_replicas",
            "15m",
            "ticket",
            "{{ $labels.horizontalpodautoscaler }} in {{ $labels.namespace }} is at its maximum: raise it or "
            "find the bottleneck",
        ),
        # `namespace` is the Certificate's: cert-manager's ServiceMonitor honours the exporter's labels
        # (infra/chart_values.py cert_manager_values), so the owning team gets the alert.
        alert_rule(
            "CertificateExpiringSoon",
            f"certmanager_certificate_expiration_timestamp_seconds - time() < {m.certificate_expiry_days * 86400}",
            "1h",
            "ticket",
            f"Certificate {{{{ $labels.name }}}} in {{{{ $labels.namespace }}}} expires within "
            f"{m.certificate_expiry_days} days and was not renewed",
        ),
    ]
    for alert in alerts:
        alert["expr"] = owned(plan, alert["expr"])
    return alerts + gap_alerts(plan)


def rule_groups(plan: PlatformPlan) -> dict:
    """The `groups` of a Prometheus rule file (and of the PrometheusRule spec); disaster-recovery rules from
    `infra.dr_alerts`."""
    from infra.dr_alerts import dr_rule_groups  # it imports this module

    return {
        "groups": [
            {"name": "slo-recording", "interval": "30s", "rules": recording_rules(plan)},
            {"name": "slo-alerts", "rules": slo_alerts(plan)},
            {"name": "platform-alerts", "rules": platform_alerts(plan)},
            *dr_rule_groups(plan),
        ]
    }
