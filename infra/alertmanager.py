"""Alertmanager's configuration, generated from the plan (pure; checked with `amtool check-config`).

Routing: by subsystem (the alert's `namespace`), then by `severity` - `page` to the subsystem's pager
receiver, `ticket` to its ticket receiver. Anything not from an application namespace goes to the `platform`
route. Pages inhibit tickets for the same alert and target; a down database inhibits the SLO burn alerts of
its subsystem, a down queue cluster its queue alerts, a missing kube-state-metrics the operator alerts (one page
for one cause).
"""

from __future__ import annotations

from collections.abc import Mapping

from infra.alerts import QUEUE_SLO_ALERTS, SLO_ALERTS
from infra.config import Receiver
from infra.topology import PLATFORM_ROUTE, PlatformPlan

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"


def _receiver(name: str, receiver: Receiver, secrets: Mapping[str, str]) -> dict:
    if receiver.pager is not None:
        return {
            "name": name,
            "pagerduty_configs": [
                {"routing_key": secrets[receiver.pager.routing_key_secret], "url": PAGERDUTY_URL, "send_resolved": True}
            ],
        }
    if receiver.email is not None:
        e = receiver.email
        return {
            "name": name,
            "email_configs": [
                {
                    "to": e.to,
                    "from": e.sender,
                    "smarthost": e.smarthost,
                    "auth_username": e.username,
                    "auth_password": secrets[e.password_secret],
                    "require_tls": True,
                    "send_resolved": True,
                }
            ],
        }
    return {"name": name, "webhook_configs": [{"url": secrets[receiver.webhook.url_secret], "send_resolved": True}]}


def alertmanager_config(plan: PlatformPlan, secrets: Mapping[str, str]) -> dict:
    """The whole alertmanager.yml. `secrets` maps the secret config keys the receivers name to their values."""
    alerting = plan.config.alerting
    platform = alerting.routes[PLATFORM_ROUTE]
    routes = []
    for subsystem in sorted(plan.subsystems):
        route = alerting.routes[subsystem]
        routes.append(
            {
                "matchers": [f'namespace="{subsystem}"'],
                "receiver": route.ticket,
                "routes": [{"matchers": ['severity="page"'], "receiver": route.page, "group_wait": "10s"}],
            }
        )
    routes.append({"matchers": ['severity="page"'], "receiver": platform.page, "group_wait": "10s"})
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": platform.ticket,
            "group_by": ["alertname", "namespace", "service"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "inhibit_rules": [
            {
                "source_matchers": ['severity="page"'],
                "target_matchers": ['severity="ticket"'],
                "equal": ["alertname", "namespace", "service"],
            },
            {
                "source_matchers": ['alertname=~"PostgresInstanceDown|PostgresTargetMissing"'],
                "target_matchers": [f'alertname=~"{"|".join(SLO_ALERTS + QUEUE_SLO_ALERTS)}"'],
                "equal": ["namespace"],
            },
            # A queue cluster that is down or unscrapable reports none of its queues.
            {
                "source_matchers": ['alertname="QueueClusterTargetMissing"'],
                "target_matchers": ['alertname=~"QueueMissing|QueueConsumersAbsent"'],
                "equal": ["namespace"],
            },
            # Without kube-state-metrics every Deployment looks absent.
            {
                "source_matchers": ['alertname="MetricsSourceMissing"', 'job="kube-state-metrics"'],
                "target_matchers": ['alertname="OperatorUnavailable"'],
                "equal": [],
            },
        ],
        "receivers": [_receiver(n, r, secrets) for n, r in sorted(alerting.receivers.items())],
    }
