"""What the monitoring stack is told: alert rules, dashboards and Alertmanager's routing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi

from components.kube import KubeObject

DASHBOARD_LABEL = "grafana_dashboard"
"""The label kube-prometheus-stack's Grafana sidecar watches ConfigMaps for."""


@dataclass(frozen=True)
class MonitoringConfigArgs:
    namespace: pulumi.Input[str]
    name: str
    rule_groups: dict
    """`{"groups": [...]}` as in a Prometheus rule file."""
    dashboards: dict[str, dict]
    """File name -> dashboard JSON."""
    alertmanager_config: pulumi.Input[str]
    """alertmanager.yaml text; a secret (it carries receiver credentials)."""
    alertmanager_secret: str
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """The monitoring stack's install (CRDs)."""


class MonitoringConfig(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringConfigArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:observability:MonitoringConfig", name, None, opts)
        after = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        meta = {"namespace": args.namespace, "labels": args.labels}

        KubeObject(
            f"{name}-rules",
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {**meta, "name": args.name},
                "spec": args.rule_groups,
            },
            after,
        )
        for file_name, board in sorted(args.dashboards.items()):
            KubeObject(
                f"{name}-dashboard-{file_name.removesuffix('.json')}",
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        **meta,
                        "name": f"dashboard-{file_name.removesuffix('.json')}",
                        "labels": {**args.labels, DASHBOARD_LABEL: "1"},
                    },
                    "data": {file_name: json.dumps(board, sort_keys=True)},
                },
                after,
            )
        KubeObject(
            f"{name}-alertmanager",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {**meta, "name": args.alertmanager_secret},
                "type": "Opaque",
                "stringData": {"alertmanager.yaml": pulumi.Output.secret(args.alertmanager_config)},
            },
            after,
        )
        self.register_outputs({"dashboards": sorted(args.dashboards), "rule_groups": len(args.rule_groups["groups"])})
