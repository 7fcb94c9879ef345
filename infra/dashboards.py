"""Grafana dashboards as code, one per subsystem, built with grafana-foundation-sdk (pure).

Each shows, per service, request rate, error ratio and p99 latency; for its queue consumers, the queue SLOs
(share of time the backlog is over the processing objective, share of messages dead-lettered); and, where the
subsystem has them, its database's and queue cluster's health. Provisioned through Grafana's dashboard sidecar
(a labelled ConfigMap).
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

from infra.alerts import DEAD_LETTER_RULE, ERROR_RULE, PROCESSING_RULE
from infra.topology import PlatformPlan, SubsystemPlan

DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
WIDTH = 8


def _panel(title: str, unit: str, queries: list[tuple[str, str]], position: int) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .unit(unit)
        .datasource(DATASOURCE)
        .grid_pos(GridPos(h=8, w=WIDTH, x=(position % 3) * WIDTH, y=(position // 3) * 8))
    )
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref))
    return panel


def panels(sub: SubsystemPlan) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(title, unit, [(PromQL, legend)]) for every panel of a subsystem's dashboard."""
    ns = f'namespace="{sub.namespace}"'
    out = [
        (
            "Requests per second",
            "reqps",
            [(f"sum by (service) (rate(http_requests_total{{{ns}}}[5m]))", "{{service}}")],
        ),
        ("Error ratio (5xx)", "percentunit", [(f"{ERROR_RULE}5m{{{ns}}}", "{{service}}")]),
        (
            "Latency p99",
            "s",
            [
                (
                    "histogram_quantile(0.99, sum by (le, service) "
                    f"(rate(http_request_duration_seconds_bucket{{{ns}}}[5m])))",
                    "{{service}}",
                )
            ],
        ),
    ]
    if any(svc.consumes for svc in sub.services.values()):
        # The queue SLOs' recorded series carry the consumer's namespace, wherever the queue lives.
        out += [
            (
                "Queue SLO: time over processing objective (1h)",
                "percentunit",
                [(f"{PROCESSING_RULE}1h{{{ns}}}", "{{service}} {{queue}}")],
            ),
            (
                "Queue SLO: dead-lettered ratio (1h)",
                "percentunit",
                [(f"{DEAD_LETTER_RULE}1h{{{ns}}}", "{{service}} {{queue}}")],
            ),
        ]
    if sub.postgres is not None:
        out += [
            ("PostgreSQL up", "short", [(f"cnpg_collector_up{{{ns}}}", "{{pod}}")]),
            ("Replication lag", "s", [(f"cnpg_pg_replication_lag{{{ns}}}", "{{pod}}")]),
            (
                "Newest base backup age",
                "s",
                [(f"time() - barman_cloud_cloudnative_pg_io_last_available_backup_timestamp{{{ns}}}", "{{pod}}")],
            ),
        ]
    if sub.queue is not None:
        out += [
            ("Ready messages", "short", [(f"rabbitmq_queue_messages_ready{{{ns}}}", "{{queue}}")]),
            ("Consumers", "short", [(f"rabbitmq_queue_consumers{{{ns}}}", "{{queue}}")]),
            (
                "Dead-lettered messages",
                "short",
                [(f'rabbitmq_queue_messages{{{ns}, queue=~".*-dlq"}}', "{{queue}}")],
            ),
        ]
    return out


def subsystem_dashboard(sub: SubsystemPlan) -> dict:
    board = (
        dashboard.Dashboard(f"Settlement platform / {sub.name}")
        .uid(f"settlement-{sub.name}")
        .tags(["settlement-platform", sub.name])
        .refresh("30s")
        .time("now-6h", "now")
        .readonly()
    )
    for i, (title, unit, queries) in enumerate(panels(sub)):
        board = board.with_panel(_panel(title, unit, queries, i))
    return json.loads(JSONEncoder(sort_keys=True).encode(board.build()))


def dashboards(plan: PlatformPlan) -> dict[str, dict]:
    """File name -> dashboard JSON."""
    return {f"{name}.json": subsystem_dashboard(sub) for name, sub in sorted(plan.subsystems.items())}
