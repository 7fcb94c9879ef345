"""A subsystem: its namespace, its data clusters and its workloads, wired so data exists before the pods."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pulumi

from components.credentials import GeneratedCredentials, GeneratedCredentialsArgs
from components.namespace import Namespace, NamespaceArgs
from components.postgres_cluster import PostgresCluster, PostgresClusterArgs
from components.queue_cluster import QueueCluster, QueueClusterArgs
from components.workload import Workload, WorkloadArgs


@dataclass(frozen=True)
class SubsystemWorkload:
    args: WorkloadArgs
    uses_postgres: bool = False
    uses_queue: bool = False
    """Uses this subsystem's own queue cluster (foreign clusters go in `args.depends_on`)."""
    credentials: list[GeneratedCredentialsArgs] = field(default_factory=list)
    """Generated credentials the workload needs; their Secrets exist before its pods."""


@dataclass(frozen=True)
class SubsystemArgs:
    namespace: NamespaceArgs
    workloads: dict[str, SubsystemWorkload] = field(default_factory=dict)
    postgres: PostgresClusterArgs | None = None
    queue: QueueClusterArgs | None = None


class Subsystem(pulumi.ComponentResource):
    namespace: pulumi.Output[str]
    postgres: PostgresCluster | None
    queue: QueueCluster | None
    workloads: dict[str, Workload]
    credentials: dict[str, GeneratedCredentials]
    """Generated credentials by Secret name."""

    def __init__(self, name: str, args: SubsystemArgs, opts: pulumi.ResourceOptions | None = None):
        # The subsystem's name travels with the component (resources.json, preview diffs group by it).
        super().__init__("settlement:platform:Subsystem", name, {"subsystem": args.namespace.name}, opts)
        for key, workload in args.workloads.items():
            if workload.uses_postgres and args.postgres is None:
                raise ValueError(f"workload {key!r} uses postgres but subsystem {name!r} declares none")
            if workload.uses_queue and args.queue is None:
                raise ValueError(f"workload {key!r} uses the queue but subsystem {name!r} declares none")
        child = pulumi.ResourceOptions(parent=self)

        namespace = Namespace(f"{name}-namespace", args.namespace, opts=child)
        # Taking the namespace from the component's output makes everything below wait for it.
        self.postgres = (
            PostgresCluster(f"{name}-db", dataclasses.replace(args.postgres, namespace=namespace.name), opts=child)
            if args.postgres is not None
            else None
        )
        self.queue = (
            QueueCluster(f"{name}-mq", dataclasses.replace(args.queue, namespace=namespace.name), opts=child)
            if args.queue is not None
            else None
        )
        self.workloads = {}
        self.credentials = {}
        for key, workload in args.workloads.items():
            depends_on = [*workload.args.depends_on]
            for creds in workload.credentials:
                # A copy may go to another subsystem's namespace: wait for what the workload waits for too.
                self.credentials[creds.secret_name] = GeneratedCredentials(
                    f"{name}-{creds.secret_name}",
                    creds,
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, *workload.args.depends_on]),
                )
                depends_on.append(self.credentials[creds.secret_name])
            if workload.uses_postgres:
                depends_on.append(self.postgres)
            if workload.uses_queue:
                depends_on.append(self.queue)
            self.workloads[key] = Workload(
                f"{name}-{key}",
                dataclasses.replace(workload.args, namespace=namespace.name, depends_on=depends_on),
                opts=child,
            )

        self.namespace = namespace.name
        self.register_outputs(
            {
                "namespace": self.namespace,
                "services": {k: w.service_name for k, w in self.workloads.items()},
                "postgres": self.postgres.cluster_name if self.postgres else None,
                "queue": self.queue.cluster_name if self.queue else None,
            }
        )
