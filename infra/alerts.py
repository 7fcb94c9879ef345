"""Alert and recording rules, generated from the plan (pure; deployed as PrometheusRule objects).

Service SLOs use multi-window, multi-burn-rate alerts (Google SRE workbook, "Alerting on SLOs"): over a 30-day
budget, a 2% burn in 1 hour (14.4x) or 5% in 6 hours (6x) pages; 10% in 3 days (1x) or a 3x burn over a day
opens a ticket. Each long window is paired with a short one (1/12) so an alert stops soon after the burn stops.

Every alert carries `severity` (page | ticket) and the `namespace` of what it is about; Alertmanager routes on
those. Metric names used here are listed, with their source, in `infra.metrics.CONTRACT`.
"""

from __future__ import annotations

from infra.topology import PlatformPlan, ServicePlan

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
RUNBOOK = "https://runbooks.settlement.example/alerts/"


def _selector(svc: ServicePlan) -> str:
    return f'namespace="{svc.subsystem}", service="{svc.name}"'


def _bucket(seconds: float) -> str:
    """A bucket bound as client libraries write the `le` label: 0.5, 1, 2.5."""
    return f"{seconds:g}"


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
    for svc in plan.services():
        for window in WINDOWS:
            sel = _selector(svc)
            rules.append(
                {
                    "record": f"{SLOW_RULE}{window}",
                    # Static labels equal to what the expression yields: one distinct rule per service.
                    "labels": {"namespace": svc.subsystem, "service": svc.name},
                    "expr": (
                        f"1 - (\n  sum by (namespace, service) (rate(http_request_duration_seconds_bucket"
                        f'{{{sel}, le="{_bucket(svc.latency_seconds)}"}}[{window}]))\n'
                        f"  /\n  sum by (namespace, service) (rate(http_request_duration_seconds_count"
                        f"{{{sel}}}[{window}]))\n)"
                    ),
                }
            )
    return rules


def _burn_expr(rule: str, svc: ServicePlan, budget: float, severity: str) -> str:
    sel = _selector(svc)
    parts = [
        f"({rule}{long}{{{sel}}} > {rate * budget:.6g} and {rule}{short}{{{sel}}} > {rate * budget:.6g})"
        for long, short, rate, sev in BURN_ALERTS
        if sev == severity
    ]
    return "\nor\n".join(parts)


def slo_alerts(plan: PlatformPlan) -> list[dict]:
    alerts = []
    for svc in plan.services():
        objectives = (
            ("Availability", ERROR_RULE, 1 - svc.availability_target / 100, f"{svc.availability_target}% non-5xx"),
            (
                "Latency",
                SLOW_RULE,
                1 - svc.latency_target / 100,
                f"{svc.latency_target}% under {_bucket(svc.latency_seconds)}s",
            ),
        )
        for kind, rule, budget, objective in objectives:
            for severity in ("page", "ticket"):
                alerts.append(
                    {
                        "alert": f"Service{kind}BudgetBurn",
                        "expr": _burn_expr(rule, svc, budget, severity),
                        "for": "2m" if severity == "page" else "15m",
                        "labels": {
                            "severity": severity,
                            "slo": kind.lower(),
                            "namespace": svc.subsystem,
                            "service": svc.name,
                        },
                        "annotations": {
                            "summary": f"{{{{ $labels.service }}}} is burning its {kind.lower()} error budget "
                            f"({objective} over 30 days)",
                            "runbook_url": f"{RUNBOOK}service-{kind.lower()}-budget-burn",
                        },
                    }
                )
    return alerts


def _alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "runbook_url": f"{RUNBOOK}{name}"},
    }


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


def platform_alerts(plan: PlatformPlan) -> list[dict]:
    m = plan.config.monitoring
    app_namespaces = "|".join(sorted(plan.subsystems))
    return [
        _alert(
            "PostgresInstanceDown",
            "cnpg_collector_up == 0",
            "2m",
            "page",
            "PostgreSQL instance {{ $labels.pod }} in {{ $labels.namespace }} is down",
        ),
        _alert(
            "PostgresReplicationLagging",
            f"max by (namespace, pod) (cnpg_pg_replication_lag) > {m.replication_lag_seconds}",
            "5m",
            "page",
            "Standby {{ $labels.pod }} lags {{ $value }}s behind its primary: a failover now could be slow",
        ),
        _alert(
            "PostgresFailoverHappened",
            "changes(cnpg_pg_replication_in_recovery[10m]) > 0",
            "0m",
            "ticket",
            "A PostgreSQL instance in {{ $labels.namespace }} changed role (failover or switchover)",
        ),
        _alert(
            "PostgresBackupFailed",
            "barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp\n"
            "> barman_cloud_cloudnative_pg_io_last_available_backup_timestamp",
            "5m",
            "ticket",
            "The last base backup of {{ $labels.namespace }} failed",
        ),
        _alert(
            "PostgresBackupTooOld",
            "time() - barman_cloud_cloudnative_pg_io_last_available_backup_timestamp\n"
            f"> {m.backup_max_age_hours * 3600}",
            "10m",
            "ticket",
            f"No base backup of {{{{ $labels.namespace }}}} for more than {m.backup_max_age_hours}h",
        ),
        _alert(
            "QueueBacklogGrowing",
            f'rabbitmq_queue_messages_ready{{queue!~".*-dlq"}} > {m.queue_backlog_messages}\n'
            'and deriv(rabbitmq_queue_messages_ready{queue!~".*-dlq"}[15m]) > 0',
            "15m",
            "ticket",
            "Queue {{ $labels.queue }} in {{ $labels.namespace }} keeps growing ({{ $value }} ready)",
        ),
        _alert(
            "QueueConsumersAbsent",
            consumers_absent_expr(plan),
            "10m",
            "page",
            "Nobody consumes {{ $labels.queue }} in {{ $labels.namespace }}: work is not progressing",
        ),
        _alert(
            "DeadLetterQueueNotEmpty",
            'rabbitmq_queue_messages{queue=~".*-dlq"} > 0',
            "5m",
            "ticket",
            "{{ $value }} messages were dead-lettered into {{ $labels.queue }} in {{ $labels.namespace }}",
        ),
        _alert(
            "PodCrashLooping",
            f'increase(kube_pod_container_status_restarts_total{{namespace=~"{app_namespaces}"}}[15m]) > 3',
            "5m",
            "ticket",
            "{{ $labels.pod }} in {{ $labels.namespace }} restarted more than 3 times in 15 minutes",
        ),
        _alert(
            "AutoscalerPinnedAtMaximum",
            "kube_horizontalpodautoscaler_status_current_replicas\n>= kube_horizontalpodautoscaler_spec_max_replicas",
            "15m",
            "ticket",
            "{{ $labels.horizontalpodautoscaler }} in {{ $labels.namespace }} is at its maximum: raise it or "
            "find the bottleneck",
        ),
        _alert(
            "CertificateExpiringSoon",
            f"certmanager_certificate_expiration_timestamp_seconds - time() < {m.certificate_expiry_days * 86400}",
            "1h",
            "ticket",
            f"Certificate {{{{ $labels.name }}}} expires within {m.certificate_expiry_days} days and was not renewed",
        ),
    ]


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
