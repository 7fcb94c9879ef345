"""A RabbitMQ cluster run by the RabbitMQ cluster operator (`rabbitmq.com/v1beta1` RabbitmqCluster)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components import labels as labels_lib
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
    protect: bool = True
    """Refuse deletion and replacement (the engine fails the update instead of dropping messages)."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """Created first: the operator install (so its CRD exists) and what the pods reference (priority class)."""


def cluster_spec(args: QueueClusterArgs) -> dict:
    """The RabbitmqCluster spec (pure)."""
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
        "rabbitmq": {
            # Quorum queues are the only replicated queue type in RabbitMQ 4; make them the default.
            "additionalConfig": "default_queue_type = quorum\n",
        },
    }


class QueueCluster(pulumi.ComponentResource):
    """A RabbitMQ cluster; the operator runs the StatefulSet, its volumes and the default credentials."""

    cluster_name: pulumi.Output[str]

    def __init__(self, name: str, args: QueueClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:data:QueueCluster", name, None, opts)
        labels = labels_lib.standard_labels(args.name, args.part_of, "queue", args.extra_labels)
        cluster = k8s.apiextensions.CustomResource(
            f"{name}-cluster",
            api_version="rabbitmq.com/v1beta1",
            kind="RabbitmqCluster",
            metadata={"name": args.name, "namespace": args.namespace, "labels": labels},
            spec=cluster_spec(args),
            opts=stateful_options(self, args.protect, args.depends_on),
        )
        if args.replicas > 1:
            # The cluster operator labels its pods app.kubernetes.io/name=<cluster>; allow one node down at a time.
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb",
                metadata={"name": args.name, "namespace": args.namespace, "labels": labels},
                spec={"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": args.name}}},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster]),
            )
        self.cluster_name = cluster.metadata["name"]
        self.register_outputs({"cluster_name": self.cluster_name})
