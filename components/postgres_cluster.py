"""A PostgreSQL cluster run by the CloudNativePG operator (`postgresql.cnpg.io/v1` Cluster)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components import labels as labels_lib
from components.stateful import stateful_options


@dataclass(frozen=True)
class PostgresClusterArgs:
    name: str
    """Kubernetes name of the cluster (services and secrets the operator creates derive from it)."""
    namespace: pulumi.Input[str]
    instances: int
    storage_size: str
    storage_class: str | None
    image: str
    resources: dict
    database: str
    part_of: str
    extra_labels: dict[str, str] = field(default_factory=dict)
    synchronous: bool = True
    """Zero data loss: a commit waits for one standby (quorum), and writes stop rather than run unreplicated.
    Applies only with more than one instance."""
    priority_class: str | None = None
    protect: bool = True
    """Refuse deletion and replacement (the engine fails the update instead of dropping data)."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """Created first: the operator install (so its CRD exists) and what the pods reference (priority class)."""


def cluster_spec(args: PostgresClusterArgs) -> dict:
    """The CloudNativePG Cluster spec (pure)."""
    storage = {"size": args.storage_size}
    if args.storage_class is not None:
        storage["storageClass"] = args.storage_class
    postgresql: dict = {
        "parameters": {"ssl_min_protocol_version": "TLSv1.3", "password_encryption": "scram-sha-256"},
        # Refuse every connection that is not TLS (PCI DSS 4.2); CloudNativePG appends its own rules after these.
        "pg_hba": ["hostnossl all all all reject"],
    }
    if args.synchronous and args.instances > 1:
        postgresql["synchronous"] = {"method": "any", "number": 1, "dataDurability": "required"}
    spec = {
        "instances": args.instances,
        "imageName": args.image,
        "primaryUpdateStrategy": "unsupervised",
        "enablePDB": True,
        "storage": storage,
        "resources": args.resources,
        "postgresql": postgresql,
        "bootstrap": {"initdb": {"database": args.database, "owner": args.database}},
        # One instance per host, required; spread over zones where the cluster has them.
        "affinity": {
            "enablePodAntiAffinity": True,
            "podAntiAffinityType": "required",
            "topologyKey": "kubernetes.io/hostname",
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"cnpg.io/cluster": args.name}},
            }
        ],
        "inheritedMetadata": {
            "labels": labels_lib.standard_labels(args.name, args.part_of, "database", args.extra_labels)
        },
    }
    if args.priority_class is not None:
        spec["priorityClassName"] = args.priority_class
    return spec


class PostgresCluster(pulumi.ComponentResource):
    """A highly available PostgreSQL cluster; the operator runs failover, replication and credentials."""

    cluster_name: pulumi.Output[str]
    rw_service: pulumi.Output[str]
    app_secret: pulumi.Output[str]
    ca_secret: pulumi.Output[str]

    def __init__(self, name: str, args: PostgresClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:data:PostgresCluster", name, None, opts)
        labels = labels_lib.standard_labels(args.name, args.part_of, "database", args.extra_labels)
        cluster = k8s.apiextensions.CustomResource(
            f"{name}-cluster",
            api_version="postgresql.cnpg.io/v1",
            kind="Cluster",
            metadata={"name": args.name, "namespace": args.namespace, "labels": labels},
            spec=cluster_spec(args),
            opts=stateful_options(self, args.protect, args.depends_on),
        )
        self.cluster_name = cluster.metadata["name"]
        # CloudNativePG's naming contract: "<cluster>-rw" Service, "<cluster>-app" credentials Secret.
        self.rw_service = self.cluster_name.apply(lambda n: f"{n}-rw")
        self.app_secret = self.cluster_name.apply(lambda n: f"{n}-app")
        self.ca_secret = self.cluster_name.apply(lambda n: f"{n}-ca")
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "rw_service": self.rw_service,
                "app_secret": self.app_secret,
                "ca_secret": self.ca_secret,
            }
        )
