"""The infrastructure subsystem: what the application subsystems share (operators first)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import pod_security
from components.crd_chart import CrdChart, CrdChartArgs
from components.credentials import GeneratedCredentialsArgs
from components.helm_operator import HelmOperator, HelmOperatorArgs
from components.internal_ca import InternalCA, InternalCAArgs
from infra.chart_values import (
    GRAFANA_ADMIN_SECRET,
    GRAFANA_ADMIN_USER,
    barman_cloud_values,
    cert_manager_values,
    cnpg_values,
    envoy_gateway_values,
    gateway_crds_values,
    host_agent_namespaces,
    keda_values,
    monitoring_values,
)
from infra.config import HelmChart, Infrastructure, Monitoring

PART_OF = "settlement-platform"
INTERNAL_ISSUER = "settlement-internal-ca"
INFRASTRUCTURE_LABELS = {"app.kubernetes.io/part-of": PART_OF, "platform.settlement.io/subsystem": "infrastructure"}


@dataclass(frozen=True)
class InfrastructureArgs:
    config: Infrastructure
    pod_security_version: str
    monitoring: Monitoring


def operator_args(chart: HelmChart, pod_security_version: str, values: dict) -> HelmOperatorArgs:
    return HelmOperatorArgs(
        namespace=chart.namespace,
        repository=chart.repository,
        chart=chart.chart,
        version=chart.version,
        values=values,
        pod_security_version=pod_security_version,
        extra_labels=INFRASTRUCTURE_LABELS,
    )


def priority_class_name(tier: str) -> str:
    return f"settlement-{tier}"


class SharedInfrastructure(pulumi.ComponentResource):
    """Operators (and, as the platform grows, gateway, certificates and monitoring) for every subsystem."""

    postgres_operator: HelmOperator
    queue_operator: HelmOperator
    autoscaler: HelmOperator
    cert_manager: HelmOperator
    gateway_crds: CrdChart
    gateway_controller: HelmOperator
    monitoring: HelmOperator
    backup_plugin: HelmOperator
    internal_ca: InternalCA
    priority_classes: dict[str, str]
    priority_class_resources: list[pulumi.Resource]
    """Pods may only name a PriorityClass that exists: whatever uses one depends on these."""

    def __init__(self, name: str, args: InfrastructureArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:platform:Infrastructure", name, None, opts)
        operators = args.config.operators
        child = pulumi.ResourceOptions(parent=self)

        self.postgres_operator = HelmOperator(
            f"{name}-cnpg",
            operator_args(operators.cloudnative_pg, args.pod_security_version, cnpg_values()),
            opts=child,
        )
        self.queue_operator = HelmOperator(
            f"{name}-rabbitmq",
            operator_args(
                operators.rabbitmq_cluster_operator,
                args.pod_security_version,
                # One chart, two operators: the cluster operator and the messaging-topology operator.
                {"clusterOperator": {"enabled": True}, "msgTopologyOperator": {"enabled": True}},
            ),
            opts=child,
        )
        # Host agents (node-exporter) run apart, in the only namespaces Pod Security "privileged" admits, so that
        # every other namespace - monitoring included - enforces "restricted".
        host_agents = [
            k8s.core.v1.Namespace(
                f"{name}-{namespace}-namespace",
                metadata=pod_security.namespace_metadata(
                    namespace,
                    {**INFRASTRUCTURE_LABELS, "platform.settlement.io/host-agents": "true"},
                    "privileged",
                    args.pod_security_version,
                ),
                opts=child,
            )
            for namespace in host_agent_namespaces(operators.monitoring.namespace)
        ]
        self.monitoring = HelmOperator(
            f"{name}-monitoring",
            dataclasses.replace(
                operator_args(
                    operators.monitoring,
                    args.pod_security_version,
                    monitoring_values(args.monitoring, operators.monitoring.namespace),
                ),
                # Grafana's admin login from a generated password: without an existing Secret the chart makes up a
                # new random one on every render (and every `pulumi up`).
                generated_secrets=[
                    GeneratedCredentialsArgs(
                        username=GRAFANA_ADMIN_USER,
                        secret_name=GRAFANA_ADMIN_SECRET,
                        namespaces=[],
                        labels=INFRASTRUCTURE_LABELS,
                    )
                ],
                depends_on=host_agents,
            ),
            opts=child,
        )
        gateway_crds = operators.gateway_crds
        self.gateway_crds = CrdChart(
            f"{name}-gateway-crds",
            CrdChartArgs(
                repository=gateway_crds.repository,
                chart=gateway_crds.chart,
                version=gateway_crds.version,
                namespace=gateway_crds.namespace,
                values=gateway_crds_values(),
            ),
            opts=child,
        )
        self.gateway_controller = HelmOperator(
            f"{name}-envoy-gateway",
            dataclasses.replace(
                operator_args(operators.envoy_gateway, args.pod_security_version, envoy_gateway_values()),
                skip_crds=True,
                depends_on=[self.gateway_crds],
            ),
            opts=child,
        )
        self.cert_manager = HelmOperator(
            f"{name}-cert-manager",
            dataclasses.replace(
                operator_args(operators.cert_manager, args.pod_security_version, cert_manager_values()),
                # Its ServiceMonitor needs the Prometheus operator's CRDs; with Gateway API support on, the
                # controller exits at start unless the Gateway API CRDs are served (cert-manager v1.21.1
                # pkg/controller/context.go), so Envoy Gateway and its CRDs come first.
                depends_on=[self.monitoring.release, self.gateway_controller.release],
            ),
            opts=child,
        )
        self.backup_plugin = HelmOperator(
            f"{name}-barman-cloud",
            dataclasses.replace(
                operator_args(operators.barman_cloud, args.pod_security_version, barman_cloud_values()),
                create_namespace=False,
                # The plugin serves CloudNativePG over mTLS with certificates from cert-manager.
                depends_on=[self.postgres_operator.release, self.cert_manager.release],
            ),
            opts=child,
        )
        self.internal_ca = InternalCA(
            f"{name}-ca",
            InternalCAArgs(
                issuer_name=INTERNAL_ISSUER,
                cert_manager_namespace=operators.cert_manager.namespace,
                depends_on=[self.cert_manager.release],
            ),
            opts=child,
        )
        self.autoscaler = HelmOperator(
            f"{name}-keda",
            operator_args(operators.keda, args.pod_security_version, keda_values()),
            opts=child,
        )

        self.priority_classes = {}
        self.priority_class_resources = []
        for tier, value in args.config.priority_classes.model_dump().items():
            pc_name = priority_class_name(tier)
            priority_class = k8s.scheduling.v1.PriorityClass(
                f"{name}-priority-{tier}",
                metadata={"name": pc_name, "labels": {"app.kubernetes.io/part-of": PART_OF}},
                value=value,
                global_default=False,
                preemption_policy="PreemptLowerPriority",
                description=f"settlement-platform {tier} workloads",
                opts=child,
            )
            self.priority_classes[tier] = pc_name
            self.priority_class_resources.append(priority_class)

        self.register_outputs(
            {
                "operator_namespaces": [
                    self.postgres_operator.namespace,
                    self.queue_operator.namespace,
                    self.autoscaler.namespace,
                    self.cert_manager.namespace,
                    self.gateway_controller.namespace,
                    self.monitoring.namespace,
                ],
                "internal_issuer": self.internal_ca.issuer_name,
                "priority_classes": self.priority_classes,
            }
        )

    def operators(self) -> list[HelmOperator]:
        return [
            self.postgres_operator,
            self.queue_operator,
            self.cert_manager,
            self.backup_plugin,
            self.gateway_controller,
            self.monitoring,
            self.autoscaler,
        ]
