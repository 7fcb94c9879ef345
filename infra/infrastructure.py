"""The infrastructure subsystem: what the application subsystems share (operators first)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pulumi

from components import pod_security
from components.crd_chart import CrdChart, CrdChartArgs
from components.credentials import GeneratedCredentialsArgs
from components.helm_operator import HelmOperator, HelmOperatorArgs
from components.internal_ca import TRUST_SECRET, InternalCA, InternalCAArgs, trust_bundle
from components.kube import KubeObject
from components.release_manifest import CaMount, ReleaseManifest, ReleaseManifestArgs
from components.service_mesh import ServiceMesh, ServiceMeshArgs
from infra.chart_values import (
    GRAFANA_ADMIN_SECRET,
    GRAFANA_ADMIN_USER,
    MESH_CA_SECRET,
    barman_cloud_values,
    cert_manager_values,
    cnpg_values,
    envoy_gateway_values,
    gateway_crds_values,
    host_agent_namespaces,
    istio_base_values,
    istio_cni_values,
    istiod_values,
    keda_values,
    monitoring_values,
    resources,
    ztunnel_values,
)
from infra.config import HelmChart, Infrastructure, ManifestRelease, Mesh, Monitoring

PART_OF = "settlement-platform"
INTERNAL_ISSUER = "settlement-internal-ca"
INFRASTRUCTURE_LABELS = {"app.kubernetes.io/part-of": PART_OF, "platform.settlement.io/subsystem": "infrastructure"}

# Both RabbitMQ operators call the brokers' management API, over HTTPS when the brokers are TLS-only, and verify
# it against Go's system pool (x509.SystemCertPool): each gets the internal CA in /etc/ssl/certs.
# - messaging-topology-operator v1.20.1: internal/controller/topology_controller.go (extractSystemCertPool);
#   README.md "RabbitMQCluster requirements" points to rabbitmq.com's tls-topology-operator guide, and
#   test/system/fixtures/patch-test-ca.yaml mounts the CA the same way (subPath under /etc/ssl/certs).
# - cluster-operator v2.22.3: internal/rabbitmqclient/client.go (managementHTTPSTransport: system pool plus
#   spec.tls.caSecretName, which the platform's clusters do not set), used for quorum and version checks.
# Deployment and container names as the pinned manifests have them.
QUEUE_CLUSTER_OPERATOR_CA = CaMount(deployment="rabbitmq-cluster-operator", container="operator", secret=TRUST_SECRET)
QUEUE_TOPOLOGY_OPERATOR_CA = CaMount(deployment="messaging-topology-operator", container="manager", secret=TRUST_SECRET)


@dataclass(frozen=True)
class InfrastructureArgs:
    config: Infrastructure
    pod_security_version: str
    monitoring: Monitoring
    protect_data: bool = True
    """guardrails.protectStatefulResources: the data operators' releases, namespaces and CRDs are protected."""
    mesh: Mesh | None = None
    """The ambient mesh, when enabled."""


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


# Accepted exceptions for the operators' pods, annotated on their Deployments (README: Security checks).
OPERATOR_CHECKOV_SKIPS = {
    "CKV_K8S_38": "an operator reconciles through the Kubernetes API with its service account token",
    "CKV_K8S_43": "the pinned release manifest names the image by its release tag; upstream publishes no digest in it",
}


# Upstream asks 200m/500Mi for the cluster operator and 300m/128Mi for the topology operator; a handful of queue
# clusters needs far less, and dev must fit a laptop (the figures: `python -m infra footprint <stack>`).
RABBITMQ_OPERATOR_RESOURCES = {
    "rabbitmq-cluster-operator/operator": resources("50m", "128Mi", "500m", "512Mi"),
    "messaging-topology-operator/manager": resources("50m", "128Mi", "500m", "512Mi"),
}


def manifest_args(
    release: ManifestRelease, ca: CaMount, depends_on: list[pulumi.Resource], protect_crds: bool = False
) -> ReleaseManifestArgs:
    return ReleaseManifestArgs(
        repository=release.repository,
        tag=release.tag,
        asset=release.asset,
        namespace=release.namespace,
        labels=INFRASTRUCTURE_LABELS,
        ca_mounts=[ca],
        checkov_skips=OPERATOR_CHECKOV_SKIPS,
        resources=RABBITMQ_OPERATOR_RESOURCES,
        depends_on=depends_on,
        protect_crds=protect_crds,
    )


def priority_class_name(tier: str) -> str:
    return f"settlement-{tier}"


class SharedInfrastructure(pulumi.ComponentResource):
    """Operators (and, as the platform grows, gateway, certificates and monitoring) for every subsystem."""

    postgres_operator: HelmOperator
    queue_cluster_operator: ReleaseManifest
    """Serves RabbitmqCluster: queue clusters depend on its `objects`."""
    queue_topology_operator: ReleaseManifest
    """Serves Queue, User, Permission, ...: a cluster's topology depends on its `objects`."""
    autoscaler: HelmOperator
    cert_manager: HelmOperator
    gateway_crds: CrdChart
    gateway_controller: HelmOperator
    monitoring: HelmOperator
    backup_plugin: HelmOperator
    internal_ca: InternalCA
    mesh: ServiceMesh | None
    """The ambient mesh; application namespaces depend on its `ready`."""
    priority_classes: dict[str, str]
    priority_class_resources: list[pulumi.Resource]
    """Pods may only name a PriorityClass that exists: whatever uses one depends on these."""
    operator_namespaces: dict[str, pulumi.Output[str]]
    """Every namespace the operators (and the host agents) run in, by name."""

    def __init__(self, name: str, args: InfrastructureArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:platform:Infrastructure", name, None, opts)
        operators = args.config.operators
        child = pulumi.ResourceOptions(parent=self)

        # The data operators - CloudNativePG with its backup plugin, the RabbitMQ cluster operator - are protected
        # with the data: uninstalling one (or deleting its namespace) would orphan or, through its CRDs, delete
        # every database or queue cluster.
        self.postgres_operator = HelmOperator(
            f"{name}-cnpg",
            dataclasses.replace(
                operator_args(operators.cloudnative_pg, args.pod_security_version, cnpg_values()),
                protect=args.protect_data,
            ),
            opts=child,
        )
        # Host agents (node-exporter) run apart, in the only namespaces Pod Security "privileged" admits, so that
        # every other namespace - monitoring included - enforces "restricted".
        host_agents = {
            namespace: KubeObject(
                f"{name}-{namespace}-namespace",
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": pod_security.namespace_metadata(
                        namespace,
                        {**INFRASTRUCTURE_LABELS, "platform.settlement.io/host-agents": "true"},
                        "privileged",
                        args.pod_security_version,
                    ),
                },
                child,
            )
            for namespace in host_agent_namespaces(operators.monitoring.namespace, args.mesh)
        }
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
                depends_on=list(host_agents.values()),
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
                operator_args(
                    operators.cert_manager,
                    args.pod_security_version,
                    cert_manager_values(operators.cert_manager.namespace),
                ),
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
                protect=args.protect_data,
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
        self.mesh = None
        if args.mesh is not None:
            self.mesh = ServiceMesh(
                f"{name}-mesh",
                ServiceMeshArgs(
                    namespace=args.mesh.namespace,
                    repository=args.mesh.repository,
                    version=args.mesh.version,
                    values={
                        "base": istio_base_values(args.mesh),
                        "istiod": istiod_values(args.mesh),
                        "cni": istio_cni_values(args.mesh),
                        "ztunnel": ztunnel_values(args.mesh),
                    },
                    node_namespace=args.mesh.node_namespace,
                    pod_security_version=args.pod_security_version,
                    ca_issuer=INTERNAL_ISSUER,
                    ca_secret=MESH_CA_SECRET,
                    labels=INFRASTRUCTURE_LABELS,
                    depends_on=[self.cert_manager.release, self.internal_ca.issuer],
                    # The node agents' namespace is a host-agent namespace (created above, privileged).
                    node_depends_on=[host_agents[args.mesh.node_namespace]],
                ),
                opts=child,
            )
        # RabbitMQ's operators install from their release manifests, which share one namespace and issue their
        # webhook certificates with cert-manager (required since cluster-operator 2.22).
        queue_ns = operators.rabbitmq_cluster_operator.namespace
        queue_namespace = KubeObject(
            f"{name}-rabbitmq-namespace",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": pod_security.namespace_metadata(
                    queue_ns, INFRASTRUCTURE_LABELS, "restricted", args.pod_security_version
                ),
            },
            pulumi.ResourceOptions(
                parent=self,
                protect=args.protect_data,
                retain_on_delete=args.protect_data,
                aliases=[
                    pulumi.Alias(parent=pulumi.create_urn(f"{name}-rabbitmq", "settlement:core:HelmOperator", self))
                ],
            ),
        )
        # The operators' objects depend on the trust bundle alone, which waits for cert-manager, the internal CA and
        # the namespace: the same ordering (ProgramRun.waits_for), without the SDK resolving and cycle-checking the
        # three again for each of the manifests' 44 objects together (docs/PERFORMANCE.md). A destroy deletes the
        # objects, then the bundle, then those three (ScheduleDeletes); after a refresh that finds the bundle gone,
        # until the next `pulumi up` recreates it, the objects no longer wait for the three (ProgramRun.waits_for).
        after_cert_manager = [self.cert_manager.release, self.internal_ca.issuer, queue_namespace]
        queue_trust = trust_bundle(
            f"{name}-rabbitmq-trust",
            queue_ns,
            INTERNAL_ISSUER,
            INFRASTRUCTURE_LABELS,
            pulumi.ResourceOptions(parent=self, depends_on=after_cert_manager),
        )
        self.queue_cluster_operator = ReleaseManifest(
            f"{name}-rabbitmq-cluster-operator",
            manifest_args(
                operators.rabbitmq_cluster_operator,
                QUEUE_CLUSTER_OPERATOR_CA,
                [queue_trust],
                protect_crds=args.protect_data,
            ),
            opts=child,
        )
        self.queue_topology_operator = ReleaseManifest(
            f"{name}-rabbitmq-topology-operator",
            manifest_args(
                operators.rabbitmq_topology_operator,
                QUEUE_TOPOLOGY_OPERATOR_CA,
                [queue_trust],
                protect_crds=args.protect_data,
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
            priority_class = KubeObject(
                f"{name}-priority-{tier}",
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": pc_name, "labels": {"app.kubernetes.io/part-of": PART_OF}},
                    "value": value,
                    "globalDefault": False,
                    "preemptionPolicy": "PreemptLowerPriority",
                    "description": f"settlement-platform {tier} workloads",
                },
                child,
            )
            self.priority_classes[tier] = pc_name
            self.priority_class_resources.append(priority_class)

        self.operator_namespaces = {queue_ns: queue_namespace.metadata["name"]}
        for operator in (
            self.postgres_operator,
            self.cert_manager,
            self.backup_plugin,
            self.gateway_controller,
            self.monitoring,
            self.autoscaler,
        ):
            self.operator_namespaces.setdefault(operator.namespace_name, operator.namespace)
        for namespace, resource in host_agents.items():
            self.operator_namespaces[namespace] = resource.metadata["name"]
        if self.mesh is not None:
            self.operator_namespaces[args.mesh.namespace] = self.mesh.namespace

        self.register_outputs(
            {
                "operator_namespaces": list(self.operator_namespaces.values()),
                "internal_issuer": self.internal_ca.issuer_name,
                "priority_classes": self.priority_classes,
            }
        )
