"""The whole environment of one stack: shared infrastructure plus every application subsystem.

The functions here translate the resolved plan (`infra.topology`) into the generic component args of
`components/`; the `Platform` component only wires them together.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from components.namespace import NamespaceArgs
from components.postgres_cluster import PostgresClusterArgs
from components.queue_cluster import QueueClusterArgs
from components.sizing import PodSize, namespace_quota
from components.subsystem import Subsystem, SubsystemArgs, SubsystemWorkload
from components.workload import WorkloadArgs
from infra.config import Resources
from infra.infrastructure import PART_OF, InfrastructureArgs, SharedInfrastructure
from infra.topology import PlatformPlan, ServicePlan, SubsystemPlan

SUBSYSTEM_LABEL = "platform.settlement.io/subsystem"


def env_name(*parts: str) -> str:
    return "_".join(p.upper().replace("-", "_") for p in parts)


def service_host(subsystem: str, service: str) -> str:
    return f"{service}.{subsystem}.svc.cluster.local"


def service_env(svc: ServicePlan) -> dict[str, str]:
    """What a service is told about its surroundings: its identity and the addresses of what it calls."""
    env = {"SERVICE_NAME": svc.name, "SUBSYSTEM": svc.subsystem}
    for call in svc.calls:
        env[env_name("upstream", call.subsystem, call.service, "url")] = (
            f"http://{service_host(call.subsystem, call.service)}:{call.port}"
        )
    return env


def pod_size(resources: Resources, max_pods: int) -> PodSize:
    return PodSize(
        requests_cpu=resources.requests.cpu,
        requests_memory=resources.requests.memory,
        limits_cpu=resources.limits.cpu,
        limits_memory=resources.limits.memory,
        max_pods=max_pods,
    )


def namespace_args(plan: PlatformPlan, sub: SubsystemPlan) -> NamespaceArgs:
    """Namespace with a quota sized for every pod it may hold at once: services at max scale plus data pods."""
    defaults = plan.config.defaults.workload
    pods = [pod_size(s.resources, s.max_replicas) for s in sub.services.values()]
    if sub.postgres is not None:
        pods.append(pod_size(sub.postgres.resources, sub.postgres.instances))
    if sub.queue is not None:
        pods.append(pod_size(sub.queue.resources, sub.queue.replicas))
    return NamespaceArgs(
        name=sub.namespace,
        labels={"app.kubernetes.io/part-of": PART_OF, SUBSYSTEM_LABEL: sub.name},
        quota=namespace_quota(pods, defaults.quota_headroom_percent),
        default_request=defaults.resources.requests.model_dump(),
        default_limit=defaults.resources.limits.model_dump(),
        pod_security_version=f"v{plan.config.kubernetes_version}",
    )


def workload_args(svc: ServicePlan, image: pulumi.Input[str], depends_on: list[pulumi.Resource]) -> WorkloadArgs:
    return WorkloadArgs(
        name=svc.name,
        namespace=svc.subsystem,
        image=image,
        port=svc.port,
        metrics_port=svc.metrics_port,
        replicas=svc.min_replicas,
        resources=svc.resources.model_dump(),
        part_of=PART_OF,
        component="worker" if svc.consumes else "api",
        extra_labels={SUBSYSTEM_LABEL: svc.subsystem},
        env=service_env(svc),
        depends_on=depends_on,
    )


def postgres_args(plan: PlatformPlan, sub: SubsystemPlan, operator: pulumi.Resource) -> PostgresClusterArgs:
    pg = sub.postgres
    return PostgresClusterArgs(
        name=f"{sub.name}-db",
        namespace=sub.namespace,
        instances=pg.instances,
        storage_size=pg.storage_size,
        storage_class=pg.storage_class,
        image=pg.image,
        resources=pg.resources.model_dump(),
        database=pg.database,
        part_of=PART_OF,
        extra_labels={SUBSYSTEM_LABEL: sub.name},
        protect=plan.config.guardrails.protect_stateful_resources,
        operator=operator,
    )


def queue_args(plan: PlatformPlan, sub: SubsystemPlan, operator: pulumi.Resource) -> QueueClusterArgs:
    q = sub.queue
    return QueueClusterArgs(
        name=f"{sub.name}-mq",
        namespace=sub.namespace,
        replicas=q.replicas,
        storage_size=q.storage_size,
        storage_class=q.storage_class,
        image=q.image,
        resources=q.resources.model_dump(),
        part_of=PART_OF,
        extra_labels={SUBSYSTEM_LABEL: sub.name},
        protect=plan.config.guardrails.protect_stateful_resources,
        operator=operator,
    )


@dataclass(frozen=True)
class PlatformArgs:
    plan: PlatformPlan


class Platform(pulumi.ComponentResource):
    """One whole environment: infrastructure first, then the subsystems in dependency order."""

    namespaces: dict[str, pulumi.Output[str]]
    service_addresses: dict[str, str]

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:platform:Platform", name, None, opts)
        plan = args.plan
        child = pulumi.ResourceOptions(parent=self)

        infrastructure = SharedInfrastructure(
            f"{name}-infrastructure",
            InfrastructureArgs(plan.config.infrastructure, f"v{plan.config.kubernetes_version}"),
            opts=child,
        )

        subsystems: dict[str, Subsystem] = {}
        for sub_name in plan.order:
            sub = plan.subsystems[sub_name]
            workloads = {}
            for svc in sub.services.values():
                foreign_queues = [subsystems[s].queue for s in sorted(svc.queue_subsystems - {sub_name})]
                workloads[svc.name] = SubsystemWorkload(
                    args=workload_args(svc, self._image(name, svc), foreign_queues),
                    uses_postgres=svc.database,
                    uses_queue=sub_name in svc.queue_subsystems,
                )
            subsystems[sub_name] = Subsystem(
                f"{name}-{sub_name}",
                SubsystemArgs(
                    namespace=namespace_args(plan, sub),
                    workloads=workloads,
                    postgres=postgres_args(plan, sub, infrastructure.postgres_operator.release)
                    if sub.postgres
                    else None,
                    queue=queue_args(plan, sub, infrastructure.queue_operator.release) if sub.queue else None,
                ),
                opts=child,
            )

        self.namespaces = {n: s.namespace for n, s in subsystems.items()}
        self.service_addresses = {
            f"{svc.subsystem}/{svc.name}": f"{service_host(svc.subsystem, svc.name)}:{svc.port}"
            for svc in plan.services()
        }
        self.register_outputs({"namespaces": self.namespaces, "service_addresses": self.service_addresses})

    def _image(self, name: str, svc: ServicePlan) -> pulumi.Input[str]:
        """The reference a Deployment runs: as configured, or the digest of an image this program builds."""
        if svc.build is None:
            return svc.image
        image = docker.Image(
            f"{name}-{svc.subsystem}-{svc.name}-image",
            image_name=f"{svc.build.repository}:{pulumi.get_stack()}",
            build=docker.DockerBuildArgs(
                context=svc.build.context,
                dockerfile=f"{svc.build.context}/{svc.build.dockerfile}",
                target=svc.build.target,
                platform="linux/amd64",
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Deploy the pushed digest, never the moving tag: what runs is exactly what was built.
        return image.repo_digest
