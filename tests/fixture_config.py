"""Small configurations for behaviour tests, written here instead of borrowed from the sample topology.

A behaviour test (a field does what it says, a rule refuses what it should) sets up the few services it needs, so
the sample topology in `Pulumi.yaml` can change without touching it; only whole-stack tests read the real stacks.
"""

from __future__ import annotations

from infra.stack_config import parse_platform_config
from infra.topology import PlatformPlan

IMAGE = "registry.example/x@sha256:" + "0" * 64


def plan_of(topology: dict, **config) -> PlatformPlan:
    """The plan of `topology` with a minimal valid rest of the config (every subsystem routed to one receiver)."""
    routes = {name: {"page": "chat", "ticket": "chat"} for name in [*topology, "platform"]}
    values = {
        "subsystems": topology,
        "network": {"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"]},
        "gateway": {"hostname": "api.example.com"},
        "guardrails": {"requireBackups": False},
        "alerting": {"receivers": {"chat": {"webhook": {"urlSecret": "alertChat"}}}, "routes": routes},
        **config,
    }
    return parse_platform_config(values, frozenset({"alertChat"}))


# Two subsystems, every feature a behaviour test needs once: a critical API with a database that publishes and is
# exposed, a consumer with a database, and a service in another subsystem that calls the API and consumes across.
SMALL_TOPOLOGY = {
    "shop": {
        "postgres": {},
        "queue": {"queues": {"orders": {}, "alerts": {}}},
        "services": {
            "api": {
                "image": IMAGE,
                "critical": True,
                "database": True,
                "publishes": ["orders"],
                "expose": {"path": "/shop"},
            },
            "worker": {"image": IMAGE, "database": True, "consumes": ["alerts"]},
        },
    },
    "audit": {
        "services": {
            "engine": {
                "image": IMAGE,
                "calls": ["shop/api"],
                "consumes": ["shop/orders"],
                "publishes": ["shop/alerts"],
            },
        },
    },
}
