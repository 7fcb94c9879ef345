"""A PostgreSQL cluster run by the CloudNativePG operator (`postgresql.cnpg.io/v1` Cluster)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components import labels as labels_lib
from components.kube import KubeObject
from components.readiness import DATA_CLUSTER_TIMEOUTS, READY
from components.stateful import stateful_options

BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"


@dataclass(frozen=True)
class BackupArgs:
    """Continuous WAL archiving plus scheduled base backups to an S3 object store (Barman Cloud plugin)."""

    destination_path: str
    server_name: str
    """Folder name of this cluster's history inside the store."""
    retention: str
    schedule: str
    endpoint_url: str | None = None
    credentials: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None
    """(access key id, secret access key) as Pulumi secrets; None: the pods' cloud identity (IAM role)."""
    service_account_annotations: dict[str, str] = field(default_factory=dict)
    """For the IAM-role case, e.g. `eks.amazonaws.com/role-arn`."""
    sidecar_resources: dict = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        }
    )
    """Of the archiving sidecar the plugin injects into every instance pod (without it the namespace's
    LimitRange defaults apply)."""


@dataclass(frozen=True)
class RecoveryArgs:
    """Bootstrap from the object store: the base backup and WAL of `from_server_name`, up to `target_time`."""

    from_server_name: str
    target_time: str | None = None
    object_store: str | None = None
    """The ObjectStore (in the cluster's namespace) to read; None: the cluster's own backup store."""
    service_account_annotations: dict[str, str] = field(default_factory=dict)
    """The reading identity (e.g. a read-only IAM role) when the cluster has no `backup` of its own."""


@dataclass(frozen=True)
class TopologyMember:
    """One Cluster of a distributed topology (one per site), as every member lists it in `externalClusters`."""

    name: str
    """Its externalClusters entry; also the name of the ObjectStore that points at its archive."""
    server_name: str
    destination_path: str
    endpoint_url: str | None = None
    host: str | None = None
    """Where its `-rw` service is reachable from the other members: TLS streaming from it (hybrid replication).
    None: WAL shipping through its object store only."""


@dataclass(frozen=True)
class DistributedTopologyArgs:
    """CloudNativePG's distributed topology (cloudnative-pg v1.30.0 docs/src/replica_cluster.md "Distributed
    Topology"): the member named `primary` accepts writes, every other one replays its WAL."""

    self_name: str
    primary: str
    members: tuple[TopologyMember, ...]
    """Every member, this one included."""
    promotion_token: str | None = None
    """The old primary's `.status.demotionToken`, set together with `primary: self` (a switchover, no data loss)."""
    bootstrap_from: str | None = None
    """The member this one was first restored from (a replica is born from an object store); None: initdb."""
    archive_timeout: str = "5min"


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
    backup: BackupArgs | None = None
    recovery: RecoveryArgs | None = None
    """Requires `backup` (the same store); read by the operator only when the cluster is first created."""
    topology: DistributedTopologyArgs | None = None
    """This cluster as one member of a distributed topology (disaster recovery); requires `backup`."""
    monitoring: pulumi.Resource | None = None
    """The Prometheus operator install: when set, a PodMonitor scrapes every instance's exporter."""
    protect: bool = True
    """Refuse deletion and replacement (the engine fails the update instead of dropping data)."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """Created first: the operator install (so its CRD exists) and what the pods reference (priority class)."""


def object_store_name(args: PostgresClusterArgs) -> str:
    return f"{args.name}-backup"


def object_store_spec(args: PostgresClusterArgs, credentials_secret: str | None) -> dict:
    backup = args.backup
    s3: dict = (
        {
            "accessKeyId": {"name": credentials_secret, "key": "ACCESS_KEY_ID"},
            "secretAccessKey": {"name": credentials_secret, "key": "ACCESS_SECRET_KEY"},
        }
        if credentials_secret is not None
        else {"inheritFromIAMRole": True}
    )
    configuration: dict = {
        "destinationPath": backup.destination_path,
        "s3Credentials": s3,
        "wal": {"compression": "gzip", "maxParallel": 4},
        "data": {"compression": "gzip"},
    }
    if backup.endpoint_url is not None:
        configuration["endpointURL"] = backup.endpoint_url
    return {
        "configuration": configuration,
        "retentionPolicy": backup.retention,
        # ObjectStore spec.instanceSidecarConfiguration (plugin-barman-cloud 0.7.0 CRD): the injected sidecar.
        "instanceSidecarConfiguration": {"resources": backup.sidecar_resources},
    }


def member_store_spec(args: PostgresClusterArgs, member: TopologyMember, credentials_secret: str | None) -> dict:
    """Another member's archive: its destination and endpoint, this site's credentials (which may read it)."""
    spec = object_store_spec(args, credentials_secret)
    configuration = {**spec["configuration"], "destinationPath": member.destination_path}
    configuration.pop("endpointURL", None)
    if member.endpoint_url is not None:
        configuration["endpointURL"] = member.endpoint_url
    # No retentionPolicy: pruning that history is its own site's job, never a reader's.
    return {k: v for k, v in {**spec, "configuration": configuration}.items() if k != "retentionPolicy"}


def scheduled_backup_spec(args: PostgresClusterArgs) -> dict:
    return {
        "cluster": {"name": args.name},
        "schedule": args.backup.schedule,
        "method": "plugin",
        "pluginConfiguration": {"name": BARMAN_PLUGIN},
        # A first base backup right away: point-in-time recovery is impossible until one exists.
        "immediate": True,
        "backupOwnerReference": "self",
    }


def cluster_spec(args: PostgresClusterArgs) -> dict:
    """The CloudNativePG Cluster spec (pure)."""
    if args.recovery is not None and args.backup is None and args.recovery.object_store is None:
        raise ValueError(f"{args.name}: recovery needs backup or recovery.object_store (the store to recover from)")
    if args.topology is not None and (args.backup is None or args.recovery is not None):
        raise ValueError(f"{args.name}: a distributed topology needs backup and no recovery")
    storage = {"size": args.storage_size}
    if args.storage_class is not None:
        storage["storageClass"] = args.storage_class
    postgresql: dict = {
        "parameters": {"ssl_min_protocol_version": "TLSv1.3", "password_encryption": "scram-sha-256"},
        # Refuse every connection that is not TLS (PCI DSS 4.2); CloudNativePG appends its own rules after these.
        "pg_hba": ["hostnossl all all all reject"],
    }
    if args.topology is not None:
        postgresql["parameters"]["archive_timeout"] = args.topology.archive_timeout
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
    if args.topology is not None:
        spec.update(distributed_topology(args))
    if args.backup is not None:
        spec["plugins"] = [
            {
                "name": BARMAN_PLUGIN,
                "isWALArchiver": True,
                "parameters": {"barmanObjectName": object_store_name(args), "serverName": args.backup.server_name},
            }
        ]
        if args.backup.service_account_annotations:
            spec["serviceAccountTemplate"] = {"metadata": {"annotations": args.backup.service_account_annotations}}
    elif args.recovery is not None and args.recovery.service_account_annotations:
        spec["serviceAccountTemplate"] = {"metadata": {"annotations": args.recovery.service_account_annotations}}
    if args.recovery is not None:
        recovery: dict = {"source": "origin", "database": args.database, "owner": args.database}
        if args.recovery.target_time is not None:
            recovery["recoveryTarget"] = {"targetTime": args.recovery.target_time}
        spec["bootstrap"] = {"recovery": recovery}
        spec["externalClusters"] = [
            {
                "name": "origin",
                "plugin": {
                    "name": BARMAN_PLUGIN,
                    "parameters": {
                        "barmanObjectName": args.recovery.object_store or object_store_name(args),
                        # Always explicit: omitted, it defaults to this Cluster's own name (plugin-barman-cloud
                        # v0.14.0 internal/cnpgi/operator/config/config.go L157-175).
                        "serverName": args.recovery.from_server_name,
                    },
                },
            }
        ]
    return spec


def member_entry(member: TopologyMember, local: bool, store: str) -> dict:
    """An externalClusters entry: the member's archive through the plugin (serverName always written: omitted, it
    defaults to the *current* Cluster's name - plugin-barman-cloud v0.14.0 internal/cnpgi/operator/config/config.go),
    plus TLS streaming from another member when it has a host (cloudnative-pg v1.30.0 docs/src/replica_cluster.md
    L468-490, samples/cluster-replica-tls.yaml: the source's `-replication` client certificate and `-ca`)."""
    entry: dict = {
        "name": member.name,
        "plugin": {"name": BARMAN_PLUGIN, "parameters": {"barmanObjectName": store, "serverName": member.server_name}},
    }
    if member.host is not None and not local:
        entry["connectionParameters"] = {
            "host": member.host,
            # CloudNativePG's replication user: client-certificate login only (cloudnative-pg v1.30.0
            # docs/src/bootstrap.md "About the replication user").
            "user": "streaming_replica",
            "sslmode": "verify-full",
            "dbname": "postgres",
        }
        entry["sslKey"] = {"name": f"{member.name}-replication", "key": "tls.key"}
        entry["sslCert"] = {"name": f"{member.name}-replication", "key": "tls.crt"}
        entry["sslRootCert"] = {"name": f"{member.name}-ca", "key": "ca.crt"}
    return entry


def distributed_topology(args: PostgresClusterArgs) -> dict:
    """`replica`, `externalClusters` and the bootstrap of one member: `source` is the primary for a replica and
    the other member for the primary (the upstream two-site example); the webhook requires self, primary and
    source to name entries (internal/webhook/v1/cluster_webhook.go L2102-2180)."""
    topo = args.topology
    others = [m.name for m in topo.members if m.name != topo.self_name]
    source = topo.primary if topo.primary != topo.self_name else others[0]
    replica: dict = {"self": topo.self_name, "primary": topo.primary, "source": source}
    if topo.promotion_token is not None:
        replica["promotionToken"] = topo.promotion_token
    part: dict = {
        "replica": replica,
        "externalClusters": [
            member_entry(m, m.name == topo.self_name, object_store_name(args) if m.name == topo.self_name else m.name)
            for m in topo.members
        ],
    }
    own = next(m for m in topo.members if m.name == topo.self_name)
    if own.host is not None:
        # The other member verifies this name (sslmode verify-full); the operator's server certificate carries it.
        part["certificates"] = {"serverAltDNSNames": [own.host]}
    if topo.bootstrap_from is not None:
        part["bootstrap"] = {
            "recovery": {"source": topo.bootstrap_from, "database": args.database, "owner": args.database}
        }
    return part


def _creation_timestamp(metadata: dict) -> str:
    return metadata.get("creationTimestamp") or ""


class PostgresCluster(pulumi.ComponentResource):
    """A highly available PostgreSQL cluster; the operator runs failover, replication and credentials."""

    cluster_name: pulumi.Output[str]
    rw_service: pulumi.Output[str]
    app_secret: pulumi.Output[str]
    ca_secret: pulumi.Output[str]
    created: pulumi.Output[str]
    """The Cluster's creationTimestamp (set by the API server): when its bootstrap began."""

    def __init__(self, name: str, args: PostgresClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:data:PostgresCluster", name, None, opts)
        labels = labels_lib.standard_labels(args.name, args.part_of, "database", args.extra_labels)
        metadata = {"namespace": args.namespace, "labels": labels}
        before_cluster: list[pulumi.Resource] = []
        if args.backup is not None:
            credentials_secret = None
            if args.backup.credentials is not None:
                credentials_secret = f"{args.name}-backup-credentials"
                access_key, secret_key = args.backup.credentials
                before_cluster.append(
                    KubeObject(
                        f"{name}-backup-credentials",
                        {
                            "apiVersion": "v1",
                            "kind": "Secret",
                            "metadata": {**metadata, "name": credentials_secret},
                            "type": "Opaque",
                            "stringData": {
                                "ACCESS_KEY_ID": pulumi.Output.secret(access_key),
                                "ACCESS_SECRET_KEY": pulumi.Output.secret(secret_key),
                            },
                        },
                        pulumi.ResourceOptions(parent=self),
                    )
                )
            before_cluster.append(
                KubeObject(
                    f"{name}-object-store",
                    {
                        "apiVersion": "barmancloud.cnpg.io/v1",
                        "kind": "ObjectStore",
                        "metadata": {**metadata, "name": object_store_name(args)},
                        "spec": object_store_spec(args, credentials_secret),
                    },
                    pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *before_cluster]),
                )
            )
            # The other members' archives, read-only from here: WAL to replay, or the base backup to start from.
            for member in args.topology.members if args.topology is not None else ():
                if member.name == args.topology.self_name:
                    continue
                before_cluster.append(
                    KubeObject(
                        f"{name}-member-{member.name}",
                        {
                            "apiVersion": "barmancloud.cnpg.io/v1",
                            "kind": "ObjectStore",
                            "metadata": {**metadata, "name": member.name},
                            "spec": member_store_spec(args, member, credentials_secret),
                        },
                        pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *before_cluster]),
                    )
                )
        cluster = KubeObject(
            f"{name}-cluster",
            {
                "apiVersion": "postgresql.cnpg.io/v1",
                "kind": "Cluster",
                "metadata": {"name": args.name, "namespace": args.namespace, "labels": labels, "annotations": READY},
                "spec": cluster_spec(args),
            },
            stateful_options(self, args.protect, [*args.depends_on, *before_cluster], DATA_CLUSTER_TIMEOUTS),
        )
        if args.monitoring is not None:
            KubeObject(
                f"{name}-monitor",
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "PodMonitor",
                    "metadata": {**metadata, "name": args.name},
                    "spec": {
                        "selector": {"matchLabels": {"cnpg.io/cluster": args.name}},
                        "podMetricsEndpoints": [{"port": "metrics", "interval": "30s"}],
                    },
                },
                pulumi.ResourceOptions(parent=self, depends_on=[cluster, args.monitoring]),
            )
        if args.backup is not None:
            KubeObject(
                f"{name}-scheduled-backup",
                {
                    "apiVersion": "postgresql.cnpg.io/v1",
                    "kind": "ScheduledBackup",
                    "metadata": {**metadata, "name": f"{args.name}-scheduled"},
                    "spec": scheduled_backup_spec(args),
                },
                pulumi.ResourceOptions(parent=self, depends_on=[cluster]),
            )
        self.cluster_name = cluster.metadata["name"]
        # CloudNativePG's naming contract: "<cluster>-rw" Service, "<cluster>-app" credentials Secret.
        self.rw_service = self.cluster_name.apply(lambda n: f"{n}-rw")
        self.app_secret = self.cluster_name.apply(lambda n: f"{n}-app")
        self.ca_secret = self.cluster_name.apply(lambda n: f"{n}-ca")
        self.created = cluster.metadata.apply(_creation_timestamp)
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "rw_service": self.rw_service,
                "app_secret": self.app_secret,
                "ca_secret": self.ca_secret,
                "created": self.created,
            }
        )
