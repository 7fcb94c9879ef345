"""Disaster-recovery alerts (pure): WAL archiving and replication to the other site, against each subsystem's RPO.

Kept apart from `infra.alerts` (the SLO and platform rules) and joined in `infra.alerts.rule_groups` as one
extra group. Metric sources (cloudnative-pg v1.30.0 config/manager/default-monitoring.yaml, ../shared/DR-FACTS.md §4):
- `cnpg_pg_stat_archiver_seconds_since_last_archival`: collected on a primary, and on every instance of a replica
  cluster (archive_mode=always; the query's predicate_query). Postgres archives only when there is WAL to archive,
  so an idle database's value grows harmlessly: the alert also needs WAL waiting to be archived,
  `cnpg_collector_pg_wal_archive_status{value="ready"}` (segments with a `.ready` file: cloudnative-pg v1.30.0
  pkg/management/postgres/webserver/metricserver/pg_collector.go L163, wal.go L42; docs/src/monitoring.md).
- `cnpg_pg_replication_lag`: seconds since the last replayed transaction on an instance in recovery, 0 when it has
  replayed all it received (the `pg_replication` query). On a site that is not primary every instance is in
  recovery and the designated primary replays the other site's WAL, so its lag is the site's distance from the
  primary. Without writes at the primary it grows too: the rule holds for `for` as long as the RPO.
"""

from __future__ import annotations

from infra.alerts import alert_rule
from infra.dr import is_primary
from infra.topology import PlatformPlan, SubsystemPlan

GROUP = "disaster-recovery"


def _alert(name: str, expr: str, for_: str, severity: str, sub: SubsystemPlan, summary: str) -> dict:
    # `subsystem` as on every other alert (infra.alerts `owned`): the label alerts are owned and grouped by.
    return alert_rule(name, expr, for_, severity, summary, {"namespace": sub.namespace, "subsystem": sub.name})


def _duration(seconds: int) -> str:
    return f"{seconds}s"


def dr_alerts(plan: PlatformPlan) -> list[dict]:
    """Per subsystem with a database: archiving delayed beyond its RPO (every site: the primary's archive feeds
    the other site, a replica's archive is its own copy), and, on a site that is not primary, replication lag
    beyond its RPO (a failover now would lose more than the objective)."""
    dr = plan.config.dr
    if dr is None:
        return []
    alerts = []
    for sub in sorted(plan.subsystems.values(), key=lambda s: s.name):
        if sub.postgres is None or sub.name not in dr.objectives:
            continue
        rpo = dr.objectives[sub.name].rpo_seconds
        severity = "page" if sub.critical else "ticket"
        ns = f'namespace="{sub.namespace}"'
        alerts.append(
            _alert(
                "WalArchivingBehindRpo",
                f"max by (namespace) (cnpg_pg_stat_archiver_seconds_since_last_archival{{{ns}}}) > {rpo}\nand on "
                f'(namespace) max by (namespace) (cnpg_collector_pg_wal_archive_status{{{ns}, value="ready"}}) > 0',
                "1m",
                severity,
                sub,
                f"WAL of {sub.namespace} waits to be archived and nothing was archived for more than its RPO "
                f"({rpo}s): the other site and point-in-time recovery fall behind",
            )
        )
        if not is_primary(dr):
            alerts.append(
                _alert(
                    "StandbyReplicationBehindRpo",
                    f"max by (namespace) (cnpg_pg_replication_lag{{{ns}}}) > {rpo}",
                    _duration(rpo),
                    severity,
                    sub,
                    f"The standby copy of {sub.namespace} at site {dr.site} is more than its RPO ({rpo}s) behind "
                    f"site {dr.primary_site}: a failover now would lose more than the objective",
                )
            )
    return alerts


def dr_rule_groups(plan: PlatformPlan) -> list[dict]:
    alerts = dr_alerts(plan)
    return [{"name": GROUP, "rules": alerts}] if alerts else []
