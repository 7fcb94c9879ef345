"""The restore drill: a stack (`drill` in its config) that restores every database of the topology from another
stack's backups into a scratch namespace, proves each with SQL, and is destroyed again (README "Restore drill").

Pure functions (what is restored from where, the drill's pod groups and connections, the identity's scope, the
judgement of a result) and the `RestoreDrill` component that wires them. The drill never archives: its Clusters
carry no `spec.plugins` (restore alone does not archive: plugin-barman-cloud docs usage.md "Restoring a
Cluster"), it writes no Backup or ScheduledBackup, and its ObjectStore has no retention policy (retention is the
one thing a store's reader could delete with).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pulumi

from components.kube import KubeObject
from components.namespace import Namespace, NamespaceArgs
from components.network_policies import NetworkPolicies, NetworkPoliciesArgs
from components.postgres_cluster import BackupArgs, PostgresCluster, PostgresClusterArgs, RecoveryArgs
from components.restore_verifier import RESULT_PREFIX, RestoreVerifier, RestoreVerifierArgs
from components.sizing import namespace_quota
from infra.config import Drill
from infra.errors import ConfigProblem
from infra.infrastructure import PART_OF
from infra.network import (
    DNS_PORT,
    EVERY_POD,
    EXTERNAL,
    POSTGRES_PORT,
    POSTGRES_STATUS_PORT,
    Edge,
    Groups,
    PodGroup,
    chart_pods,
    group,
    policies_for,
)
from infra.platform import SUBSYSTEM_LABEL, pod_size, postgres_cluster_name
from infra.topology import PlatformPlan, PostgresPlan

SOURCE_STORE = "drill-source"
"""The ObjectStore in the scratch namespace that points at the source stack's backups."""
DRILL_LABEL = "platform.settlement.io/drill"
SIDECAR_RESOURCES = next(f for f in dataclasses.fields(BackupArgs) if f.name == "sidecar_resources").default_factory()


def source_problems(plan: PlatformPlan, source: PlatformPlan) -> list[ConfigProblem]:
    """The drill must read the store its source stack archives to, and restore databases that stack has."""
    drill = plan.config.drill
    where = f"drill.sourceStack ({drill.source_stack})"
    if source.config.drill is not None:
        return [
            ConfigProblem(
                "drill.sourceStack",
                f"{drill.source_stack!r} is itself a drill stack: name the stack whose databases archive the backups",
            )
        ]
    backup = source.config.backup
    if backup is None:
        return [ConfigProblem("drill.sourceStack", f"{drill.source_stack!r} has no `backup`: it archives nothing")]
    problems = []
    if backup.object_store.destination_path != drill.source.destination_path:
        problems.append(
            ConfigProblem(
                "drill.source.destinationPath",
                f"{drill.source.destination_path!r} must equal {where}'s backup.objectStore.destinationPath "
                f"{backup.object_store.destination_path!r} (the store its databases archive to)",
            )
        )
    missing = sorted(set(databases(plan)) - set(databases(source)))
    if missing:
        problems.append(ConfigProblem("drill.sourceStack", f"{where} has no database for {missing}"))
    return problems


def with_source_server_names(plan: PlatformPlan, source: PlatformPlan) -> PlatformPlan:
    """The drill's plan with each database's server name taken from the source stack (what it archives under),
    and its RTO (`dr.objectives`, when the source states them: the drill then judges each restore against it)."""
    archived = databases(source)
    subsystems = {
        name: dataclasses.replace(
            sub,
            postgres=dataclasses.replace(
                sub.postgres, server_name=archived[name].server_name, rto_minutes=archived[name].rto_minutes
            ),
        )
        if sub.postgres is not None
        else sub
        for name, sub in plan.subsystems.items()
    }
    return dataclasses.replace(plan, subsystems=subsystems)


def databases(plan: PlatformPlan) -> dict[str, PostgresPlan]:
    """Every database the topology runs, by subsystem: what the drill restores."""
    return {name: sub.postgres for name, sub in sorted(plan.subsystems.items()) if sub.postgres is not None}


def verifier_name(subsystem: str) -> str:
    return f"{postgres_cluster_name(subsystem)}-verify"


def source_store_spec(drill: Drill) -> dict:
    """The source's ObjectStore, for reading: no `retentionPolicy` (plugin-barman-cloud v0.14.0 applies it by
    deleting backups from the store), the pods' read-only role for credentials."""
    source = drill.source
    configuration: dict = {
        "destinationPath": source.destination_path,
        "s3Credentials": {"inheritFromIAMRole": True},
        "wal": {"maxParallel": 4},  # parallel WAL fetch during the replay (objectstores CRD, wal.maxParallel)
    }
    if source.endpoint_url is not None:
        configuration["endpointURL"] = source.endpoint_url
    return {"configuration": configuration, "instanceSidecarConfiguration": {"resources": SIDECAR_RESOURCES}}


def cluster_args(plan: PlatformPlan, subsystem: str, pg: PostgresPlan, depends_on: list) -> PostgresClusterArgs:
    """One instance restored from the latest base backup and all archived WAL of the source's server name (no
    recovery target: CloudNativePG replays to the end of the archive, recovery.md), no backup of its own."""
    drill = plan.config.drill
    return PostgresClusterArgs(
        name=postgres_cluster_name(subsystem),
        namespace=drill.namespace,
        instances=1,
        storage_size=pg.storage_size,
        storage_class=pg.storage_class,
        image=pg.image,
        resources=pg.resources.model_dump(),
        database=pg.database,
        part_of=PART_OF,
        extra_labels={SUBSYSTEM_LABEL: subsystem, DRILL_LABEL: "true"},
        synchronous=False,
        backup=None,
        recovery=RecoveryArgs(
            from_server_name=pg.server_name,
            object_store=SOURCE_STORE,
            service_account_annotations=drill.source.service_account_annotations,
        ),
        protect=plan.config.guardrails.protect_stateful_resources,  # false: required of a drill stack
        depends_on=depends_on,
    )


def verifier_args(plan: PlatformPlan, subsystem: str, pg: PostgresPlan, created, depends_on) -> RestoreVerifierArgs:
    drill = plan.config.drill
    return RestoreVerifierArgs(
        name=verifier_name(subsystem),
        namespace=drill.namespace,
        cluster=postgres_cluster_name(subsystem),
        database=pg.database,
        server_name=pg.server_name,
        image=pg.image,
        resources=drill.verifier_resources.model_dump(),
        part_of=PART_OF,
        cluster_created=created,
        point_query=drill.point_queries.get(subsystem),
        extra_labels={SUBSYSTEM_LABEL: subsystem, DRILL_LABEL: "true"},
        depends_on=depends_on,
    )


def quota(plan: PlatformPlan) -> dict[str, str]:
    """Room for, per database, the recovery Job's pod and the instance (each with the plugin's sidecar) and the
    verifier."""
    drill = plan.config.drill
    sidecar = {"requests": SIDECAR_RESOURCES["requests"], "limits": SIDECAR_RESOURCES["limits"]}
    pods = []
    for pg in databases(plan).values():
        pods.append(pod_size(pg.resources, 2))
        pods.append(pod_size(type(pg.resources).model_validate(sidecar), 2))
        pods.append(pod_size(drill.verifier_resources, 1))
    return namespace_quota(pods, plan.config.defaults.workload.quota_headroom_percent)


# --- Network: the drill's own pod groups and connections -----------------------------------------------------


def pod_groups(plan: PlatformPlan) -> Groups:
    """The drill's pods (restored instances with their recovery Jobs, verifiers, every pod of the namespace) and
    the pods of other stacks they talk to (cluster DNS, the CloudNativePG operator that prod installed)."""
    ns, net = plan.config.drill.namespace, plan.config.network
    dbs = {
        s: group(ns, postgres_cluster_name(s), {"cnpg.io/cluster": postgres_cluster_name(s)}) for s in databases(plan)
    }
    verifiers = {
        (ns, verifier_name(s)): group(
            ns,
            verifier_name(s),
            {"app.kubernetes.io/name": verifier_name(s), "app.kubernetes.io/instance": verifier_name(s)},
        )
        for s in databases(plan)
    }
    cnpg_ns, cnpg_name, cnpg_labels = chart_pods(plan)["cnpg"]
    infra = {"dns": group(net.dns_namespace, "dns", net.dns_pod_labels), "cnpg": group(cnpg_ns, cnpg_name, cnpg_labels)}
    namespaces = {ns: group(ns, EVERY_POD, {})}
    everything = [*dbs.values(), *verifiers.values(), *infra.values(), *namespaces.values()]
    return Groups({g.id: g for g in everything}, verifiers, dbs, {}, infra, namespaces)


def foreign_pods(plan: PlatformPlan) -> list[PodGroup]:
    """Pods the drill relies on that another stack runs (its render cannot show them): the operator."""
    return [pod_groups(plan).infra["cnpg"]]


def declared_edges(plan: PlatformPlan, groups: Groups) -> set[Edge]:
    """Verifier -> its restored database; the operator -> each instance's status port; instances (and their
    recovery Jobs) -> the object store over HTTPS and the API server; every pod -> DNS. Nothing else."""
    net = plan.config.network
    edges: set[Edge] = set()
    for subsystem, db in groups.databases.items():
        edges.add(Edge(groups.services[(db.namespace, verifier_name(subsystem))].id, db.id, POSTGRES_PORT))
        edges.add(Edge(groups.infra["cnpg"].id, db.id, POSTGRES_STATUS_PORT))
        for cidr in net.object_store_cidrs:
            edges.add(Edge(db.id, f"{EXTERNAL}{cidr}", 443))
        for cidr in net.api_server_cidrs:
            for port in net.api_server_ports:
                edges.add(Edge(db.id, f"{EXTERNAL}{cidr}", port))
    for every in groups.namespaces.values():
        for protocol in ("UDP", "TCP"):
            edges.add(Edge(every.id, groups.infra["dns"].id, DNS_PORT, None, protocol))
    return edges


def network_policies(plan: PlatformPlan) -> dict[str, dict]:
    groups = pod_groups(plan)
    return {p.name: p.spec for p in policies_for(sorted(groups.namespaces), groups, declared_edges(plan, groups))}


# --- The drill identity's scope (what the scheduled workflow's role may do) ----------------------------------


WRITE_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
DRILL_WRITES = {
    "": ["serviceaccounts", "resourcequotas", "limitranges"],
    "networking.k8s.io": ["networkpolicies"],
    "batch": ["jobs"],
    "postgresql.cnpg.io": ["clusters"],
    "barmancloud.cnpg.io": ["objectstores"],
}
"""API group -> resources the drill stack creates in its namespace (tests hold it equal to the render)."""


def _bucket_and_prefix(path: str) -> tuple[str, str]:
    bucket, _, prefix = path.removeprefix("s3://").partition("/")
    return bucket, prefix.rstrip("/")


def identity_scope(plan: PlatformPlan) -> dict:
    """The least the drill's identities need, as data (README "Restore drill" shows it; tests check it):
    - `iam.workflow`: the scheduled workflow's OIDC role: read the results, write new ones (nothing else in S3);
    - `iam.database`: the role the restored pods assume (IRSA): read the source backups, nothing else;
    - `kubernetes`: the workflow's access entry: the scratch namespace only (EKS access policy scoped to it).
    """
    drill = plan.config.drill
    src_bucket, src_prefix = _bucket_and_prefix(drill.source.destination_path)
    res_bucket, res_prefix = _bucket_and_prefix(drill.results_path)

    def objects(bucket: str, prefix: str) -> str:
        return f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*"

    def listing(bucket: str, prefix: str) -> dict:
        statement = {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{bucket}"}
        if prefix:
            statement["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}
        return statement

    return {
        "results": drill.results_path.rstrip("/"),
        "iam": {
            "database": [
                {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": objects(src_bucket, src_prefix)},
                listing(src_bucket, src_prefix),
            ],
            "workflow": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": objects(res_bucket, res_prefix),
                },
                listing(res_bucket, res_prefix),
            ],
        },
        "kubernetes": {
            "namespaces": [drill.namespace],
            "clusterScoped": [
                # The namespace itself: RBAC cannot restrict `create` by name (resourceNames does not apply to
                # create); everything else on namespaces is limited to the scratch one.
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]},
                {
                    "apiGroups": [""],
                    "resources": ["namespaces"],
                    "resourceNames": [drill.namespace],
                    "verbs": ["get", "patch", "update", "delete"],
                },
            ],
            # A Role in the scratch namespace, bound to the role's Kubernetes group: exactly the kinds the drill
            # writes, and the verifiers' logs to read.
            "namespaced": [
                {"apiGroups": [group], "resources": resources, "verbs": WRITE_VERBS}
                for group, resources in DRILL_WRITES.items()
            ]
            + [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}],
        },
    }


# --- Judging a drill's result (the scheduled workflow's pass/fail) -------------------------------------------


def parse_results(logs: str) -> list[dict]:
    """The verifiers' result lines from their logs (`RESULT_PREFIX` + JSON)."""
    return [
        json.loads(line.removeprefix(RESULT_PREFIX)) for line in logs.splitlines() if line.startswith(RESULT_PREFIX)
    ]


def judge(plan: PlatformPlan, results: list[dict]) -> list[str]:
    """Why this drill failed (empty: it passed): a database not verified, or restored slower than the RTO."""
    drill = plan.config.drill
    # Each database's RTO: its subsystem's `dr.objectives` in the source stack, else drill.rtoMinutes.
    limits = {
        pg.server_name: (pg.rto_minutes, f"dr.objectives.{sub}.rtoMinutes of {drill.source_stack}")
        if pg.rto_minutes is not None
        else (drill.rto_minutes, "drill.rtoMinutes")
        for sub, pg in databases(plan).items()
    }
    by_server = {r.get("server"): r for r in results}
    problems = [f"{server}: no verification result" for server in sorted(set(limits) - set(by_server))]
    for server in sorted(set(limits) & set(by_server)):
        seconds = by_server[server].get("restoreSeconds")
        minutes, source = limits[server]
        if not isinstance(seconds, int | float):
            problems.append(f"{server}: no restore time in the result")
        elif seconds > minutes * 60:
            problems.append(f"{server}: restore took {seconds / 60:.1f} min, over the RTO of {minutes} min ({source})")
    return problems


def record(plan: PlatformPlan, results: list[dict], finished: datetime) -> dict:
    """What the workflow stores under `drill.resultsPath`: the results, the verdict, and when."""
    problems = judge(plan, results)
    return {
        "finished": finished.astimezone(UTC).isoformat(),
        "passed": not problems,
        "problems": problems,
        "results": results,
    }


def staleness(plan: PlatformPlan, last_success: dict | None, now: datetime) -> str | None:
    """Why the last successful drill is too old (None: recent enough)."""
    limit = timedelta(days=plan.config.drill.max_age_days)
    if last_success is None:
        return "no successful drill is recorded"
    finished = datetime.fromisoformat(last_success["finished"])
    finished = finished if finished.tzinfo is not None else finished.replace(tzinfo=UTC)
    if now - finished > limit:
        return (
            f"the last successful drill finished {finished.isoformat()}, more than {limit.days} days ago "
            "(drill.maxAgeDays)"
        )
    return None


class RestoreDrill(pulumi.ComponentResource):
    """The scratch namespace, the source ObjectStore, and per database a restored Cluster and its verifier."""

    def __init__(self, name: str, plan: PlatformPlan, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:drill:RestoreDrill", name, None, opts)
        drill = plan.config.drill
        child = pulumi.ResourceOptions(parent=self)
        labels = {"app.kubernetes.io/part-of": PART_OF, DRILL_LABEL: "true"}
        workload_defaults = plan.config.defaults.workload
        namespace = Namespace(
            f"{name}-namespace",
            NamespaceArgs(
                name=drill.namespace,
                labels=labels,
                quota=quota(plan),
                default_request=workload_defaults.resources.requests.model_dump(),
                default_limit=workload_defaults.resources.limits.model_dump(),
                pod_security_version=f"v{plan.config.kubernetes_version}",
            ),
            opts=child,
        )
        policies = NetworkPolicies(
            f"{name}-network",
            NetworkPoliciesArgs(namespace=namespace.name, policies=network_policies(plan), labels=labels),
            opts=child,
        )
        store = KubeObject(
            f"{name}-source-store",
            {
                "apiVersion": "barmancloud.cnpg.io/v1",
                "kind": "ObjectStore",
                "metadata": {"name": SOURCE_STORE, "namespace": namespace.name, "labels": labels},
                "spec": source_store_spec(drill),
            },
            child,
        )
        self.verifiers: dict[str, pulumi.Output[str]] = {}
        for subsystem, pg in databases(plan).items():
            cluster = PostgresCluster(
                f"{name}-{subsystem}-db",
                cluster_args(plan, subsystem, pg, [store, policies]),
                opts=child,
            )
            verifier = RestoreVerifier(
                f"{name}-{subsystem}-verify",
                verifier_args(plan, subsystem, pg, cluster.created, [cluster]),
                opts=child,
            )
            self.verifiers[subsystem] = verifier.job_name
        self.namespace = namespace.name
        self.register_outputs({"namespace": self.namespace, "verifiers": self.verifiers})
