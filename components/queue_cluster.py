"""A RabbitMQ cluster run by the RabbitMQ cluster operator (`rabbitmq.com/v1beta1` RabbitmqCluster)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components import internal_ca
from components import labels as labels_lib
from components.kube import KubeObject
from components.readiness import ALL_REPLICAS_READY, CERTIFICATE_TIMEOUTS, DATA_CLUSTER_TIMEOUTS, READY
from components.stateful import stateful_options


@dataclass(frozen=True)
class QueueClusterArgs:
    name: str
    """Kubernetes name of the cluster (services and secrets the operator creates derive from it)."""
    namespace: pulumi.Input[str]
    replicas: int
    storage_size: str
    storage_class: str | None
    image: str
    resources: dict
    part_of: str
    extra_labels: dict[str, str] = field(default_factory=dict)
    pod_labels: dict[str, str] = field(default_factory=dict)
    """Extra labels on the broker pods only (the StatefulSet's pod template override)."""
    tls_issuer: str | None = None
    """cert-manager ClusterIssuer of the broker certificate. Set: AMQPS only, the plaintext listener is off."""
    monitoring: pulumi.Resource | None = None
    """The Prometheus operator install: when set, a PodMonitor scrapes every node's Prometheus endpoint."""
    protect: bool = True
    """Refuse deletion and replacement (the engine fails the update instead of dropping messages)."""
    depends_on: list[pulumi.Input[pulumi.Resource]] = field(default_factory=list)
    """Created first: the operator install (so its CRD exists) and what the pods reference (priority class)."""


def tls_secret_name(args: QueueClusterArgs) -> str:
    return f"{args.name}-tls"


def certificate_spec(args: QueueClusterArgs, namespace: str) -> dict:
    """Server certificate for the client Service and for every node's stable name."""
    service = f"{args.name}.{namespace}.svc"
    return {
        "secretName": tls_secret_name(args),
        "commonName": service,
        "dnsNames": [
            args.name,
            service,
            f"{service}.cluster.local",
            f"*.{args.name}-nodes.{namespace}.svc",
            f"*.{args.name}-nodes.{namespace}.svc.cluster.local",
        ],
        "issuerRef": internal_ca.issuer_ref(args.tls_issuer),
        "duration": "2160h",
        "renewBefore": "720h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["server auth", "digital signature", "key encipherment"],
    }


def cluster_spec(args: QueueClusterArgs) -> dict:
    """The RabbitmqCluster spec (pure)."""
    # Per-queue metrics (depth, consumers) on /metrics, which the platform's alerts need.
    additional_config = "default_queue_type = quorum\nprometheus.return_per_object_metrics = true\n"
    tls = None
    if args.tls_issuer is not None:
        tls = {"secretName": tls_secret_name(args), "disableNonTLSListeners": True}
        additional_config += "ssl_options.versions.1 = tlsv1.3\nssl_options.versions.2 = tlsv1.2\n"
    persistence = {"storage": args.storage_size}
    if args.storage_class is not None:
        persistence["storageClassName"] = args.storage_class
    return {
        "replicas": args.replicas,
        "image": args.image,
        "persistence": persistence,
        "resources": args.resources,
        "service": {"type": "ClusterIP"},
        # One node per host: losing a host costs a quorum queue one replica, never its majority.
        "affinity": {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": args.name}},
                    }
                ]
            }
        },
        # Zones as well as hosts, where the cluster has them (preferred, so single-zone clusters still schedule).
        "override": {
            "statefulSet": {
                "spec": {
                    "template": {
                        **({"metadata": {"labels": args.pod_labels}} if args.pod_labels else {}),
                        "spec": {
                            # Required by the schema; empty keeps the operator's containers (strategic merge).
                            "containers": [],
                            "topologySpreadConstraints": [
                                {
                                    "maxSkew": 1,
                                    "topologyKey": "topology.kubernetes.io/zone",
                                    "whenUnsatisfiable": "ScheduleAnyway",
                                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": args.name}},
                                }
                            ],
                        },
                    }
                }
            }
        },
        # Quorum queues are the only replicated queue type in RabbitMQ 4; make them the default.
        "rabbitmq": {"additionalConfig": additional_config},
        **({"tls": tls} if tls is not None else {}),
    }


class QueueCluster(pulumi.ComponentResource):
    """A RabbitMQ cluster; the operator runs the StatefulSet, its volumes and the default credentials."""

    cluster_name: pulumi.Output[str]

    def __init__(self, name: str, args: QueueClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:data:QueueCluster", name, None, opts)
        labels = labels_lib.standard_labels(args.name, args.part_of, "queue", args.extra_labels)
        before_cluster: list[pulumi.Resource] = []
        if args.tls_issuer is not None:
            before_cluster.append(
                KubeObject(
                    f"{name}-certificate",
                    {
                        "apiVersion": internal_ca.CERT_MANAGER_API,
                        "kind": "Certificate",
                        "metadata": {
                            "name": tls_secret_name(args),
                            "namespace": args.namespace,
                            "labels": labels,
                            "annotations": READY,
                        },
                        "spec": pulumi.Output.from_input(args.namespace).apply(lambda ns: certificate_spec(args, ns)),
                    },
                    pulumi.ResourceOptions(
                        parent=self, depends_on=args.depends_on, custom_timeouts=CERTIFICATE_TIMEOUTS
                    ),
                )
            )
        cluster = KubeObject(
            f"{name}-cluster",
            {
                "apiVersion": "rabbitmq.com/v1beta1",
                "kind": "RabbitmqCluster",
                "metadata": {
                    "name": args.name,
                    "namespace": args.namespace,
                    "labels": labels,
                    "annotations": ALL_REPLICAS_READY,
                },
                "spec": cluster_spec(args),
            },
            stateful_options(self, args.protect, [*args.depends_on, *before_cluster], DATA_CLUSTER_TIMEOUTS),
        )
        if args.monitoring is not None:
            endpoint: dict = {"port": "prometheus", "interval": "30s"}
            if args.tls_issuer is not None:
                endpoint = {
                    "port": "prometheus-tls",
                    "scheme": "https",
                    "interval": "30s",
                    "tlsConfig": {
                        "ca": {"secret": {"name": internal_ca.TRUST_SECRET, "key": "ca.crt"}},
                        "serverName": pulumi.Output.from_input(args.namespace).apply(
                            lambda ns: f"{args.name}.{ns}.svc"
                        ),
                    },
                }
            KubeObject(
                f"{name}-monitor",
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "PodMonitor",
                    "metadata": {"name": args.name, "namespace": args.namespace, "labels": labels},
                    "spec": {
                        "selector": {"matchLabels": {"app.kubernetes.io/name": args.name}},
                        "podMetricsEndpoints": [endpoint],
                    },
                },
                pulumi.ResourceOptions(parent=self, depends_on=[cluster, args.monitoring]),
            )
        if args.replicas > 1:
            # The cluster operator labels its pods app.kubernetes.io/name=<cluster>; allow one node down at a time.
            KubeObject(
                f"{name}-pdb",
                {
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": {"name": args.name, "namespace": args.namespace, "labels": labels},
                    "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": args.name}}},
                },
                pulumi.ResourceOptions(parent=self, depends_on=[cluster]),
            )
        self.cluster_name = cluster.metadata["name"]
        self.register_outputs({"cluster_name": self.cluster_name})
