"""Observability of the ambient mesh (pure): its scrape targets, its alerts and a dashboard of service-to-service
traffic by identity. Kept apart from infra/alerts.py and infra/dashboards.py; the platform adds them beside theirs.

Metrics, at istio/ztunnel 1.30.3 src/proxy/metrics.rs (registry prefix `istio`, src/metrics.rs; counters get
`_total`): `istio_tcp_connections_opened`, `_closed`, `_failed` and `istio_tcp_sent_bytes`/`_received_bytes`
carry source/destination principal, workload and workload namespace, `connection_security_policy`
(`mutual_tls` or `unknown`) and `response_flags`. A closed connection counts as failed when its flag is CONNECT,
DENY (an AuthorizationPolicy refused it), TLS_FAILURE, H2_HANDSHAKE_FAILURE, NETWORK_POLICY or IDENTITY_ERROR
(`ConnectionResult::record_internal`). ztunnel serves them on 15020 `/metrics` (src/metrics/server.rs; the
chart's port `ztunnel-stats`); istiod on 15014 `/metrics` (port `http-monitoring`).
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

from components.mesh_policies import MeshPolicy
from infra.config import Mesh

MONITORING_API = "monitoring.coreos.com/v1"
FAILED = "istio_tcp_connections_failed_total"
OPENED = "istio_tcp_connections_opened_total"
SENT = "istio_tcp_sent_bytes_total"
CONTRACT = {
    OPENED: "ztunnel: connections opened, by source/destination principal and workload",
    FAILED: "ztunnel: connections that failed, label response_flags",
    SENT: "ztunnel: bytes sent, by source/destination principal and workload",
}
HANDSHAKE_FLAGS = ("TLS_FAILURE", "H2_HANDSHAKE_FAILURE", "IDENTITY_ERROR")
DENIED_FLAG = "DENY"
# The pods' selectors and metrics ports (istio/istio 1.30.3 manifests/charts: istio-control/istio-discovery
# templates/deployment.yaml, ztunnel templates/daemonset.yaml).
SCRAPES = {
    "istiod": ({"istio": "pilot"}, "http-monitoring"),
    "ztunnel": ({"app": "ztunnel"}, "ztunnel-stats"),
}


def mesh_monitors(mesh: Mesh) -> list[MeshPolicy]:
    """PodMonitors for istiod (control-plane namespace) and ztunnel (node namespace), each beside its pods."""
    where = {"istiod": mesh.namespace, "ztunnel": mesh.node_namespace}
    return [
        MeshPolicy(
            "PodMonitor",
            where[name],
            f"mesh-{name}",
            {
                "selector": {"matchLabels": labels},
                "namespaceSelector": {"matchNames": [where[name]]},
                "podMetricsEndpoints": [{"port": port, "path": "/metrics", "interval": "30s"}],
            },
            api_version=MONITORING_API,
        )
        for name, (labels, port) in SCRAPES.items()
    ]


def mesh_rule_groups() -> dict:
    """The mesh's alerts, as a PrometheusRule spec."""
    handshake = "|".join(HANDSHAKE_FLAGS)
    keys = "destination_workload_namespace, destination_workload, source_principal"
    # Route by what is called: ztunnel's series carry the ztunnel pod's namespace, so the alert's `namespace`
    # (what Alertmanager routes on, infra/alertmanager.py) is the destination's, through a templated label.
    routed = {"namespace": "{{ $labels.destination_workload_namespace }}"}
    return {
        "groups": [
            {
                "name": "settlement-mesh",
                "rules": [
                    {
                        "alert": "MeshMtlsHandshakeFailures",
                        "expr": f'sum by ({keys}) (rate({FAILED}{{response_flags=~"{handshake}"}}[5m])) > 0',
                        "for": "10m",
                        "labels": {"severity": "page", **routed},
                        "annotations": {
                            "summary": "mTLS handshakes to {{ $labels.destination_workload }} fail",
                            "description": "Connections from {{ $labels.source_principal }} to "
                            "{{ $labels.destination_workload_namespace }}/{{ $labels.destination_workload }} fail "
                            "their mTLS or identity check: expired or untrusted workload certificates (check the "
                            "cacerts intermediate and istiod), or a caller outside the mesh.",
                        },
                    },
                    {
                        "alert": "MeshRequestsDenied",
                        "expr": f'sum by ({keys}) (increase({FAILED}{{response_flags="{DENIED_FLAG}"}}[10m])) > 0',
                        "labels": {"severity": "ticket", **routed},
                        "annotations": {
                            "summary": "Connections to {{ $labels.destination_workload }} denied by policy",
                            "description": "{{ $labels.source_principal }} tried to reach "
                            "{{ $labels.destination_workload_namespace }}/{{ $labels.destination_workload }} and "
                            "its AuthorizationPolicy refused: a caller missing from the service graph, or a "
                            "compromised pod probing.",
                        },
                    },
                ],
            }
        ]
    }


DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")


def mesh_panels() -> list[tuple[str, str, str, str]]:
    """(title, unit, PromQL, legend) of the traffic-by-identity dashboard."""
    pair = "source_principal, destination_principal"
    workload = "destination_workload_namespace, destination_workload"
    plaintext = 'connection_security_policy!="mutual_tls"'
    return [
        (
            "Connections per second by identity",
            "cps",
            f"sum by ({pair}) (rate({OPENED}[5m]))",
            "{{source_principal}} -> {{destination_principal}}",
        ),
        (
            "Bytes sent by identity",
            "Bps",
            f"sum by ({pair}) (rate({SENT}[5m]))",
            "{{source_principal}} -> {{destination_principal}}",
        ),
        (
            "Connections without mTLS",
            "cps",
            f"sum by ({workload}) (rate({OPENED}{{{plaintext}}}[5m]))",
            "{{destination_workload_namespace}}/{{destination_workload}}",
        ),
        (
            "Denied and failed connections",
            "cps",
            f"sum by ({pair}, response_flags) (rate({FAILED}[5m]))",
            "{{response_flags}}: {{source_principal}} -> {{destination_principal}}",
        ),
    ]


def mesh_dashboard() -> dict:
    board = (
        dashboard.Dashboard("Settlement platform / mesh traffic by identity")
        .uid("settlement-mesh")
        .tags(["settlement-platform", "mesh"])
        .refresh("30s")
        .time("now-6h", "now")
        .readonly()
    )
    for i, (title, unit, expr, legend) in enumerate(mesh_panels()):
        panel = (
            timeseries.Panel()
            .title(title)
            .unit(unit)
            .datasource(DATASOURCE)
            .grid_pos(GridPos(h=8, w=12, x=(i % 2) * 12, y=(i // 2) * 8))
            .with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id("A"))
        )
        board = board.with_panel(panel)
    return json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
