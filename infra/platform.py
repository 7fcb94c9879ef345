"""The whole environment of one stack: shared infrastructure plus every application subsystem.

The functions here translate the resolved plan (`infra.topology`) into the generic component args of
`components/`; the `Platform` component only wires them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker
import yaml

from components.autoscaling import QueueScaling, ResourceScaling
from components.credentials import GeneratedCredentialsArgs
from components.gateway import Gateway, GatewayArgs, ProxySettings, Route
from components.internal_ca import TRUST_SECRET, InternalCA
from components.mesh_policies import MeshPolicies, MeshPoliciesArgs
from components.monitoring_config import MonitoringConfig, MonitoringConfigArgs
from components.namespace import NamespaceArgs
from components.network_policies import NetworkPolicies, NetworkPoliciesArgs
from components.postgres_cluster import (
    BackupArgs,
    DistributedTopologyArgs,
    PostgresClusterArgs,
    RecoveryArgs,
    TopologyMember,
)
from components.queue_cluster import QueueClusterArgs
from components.queue_topology import QueueTopology, QueueTopologyArgs, QueueUser
from components.sizing import PodSize, namespace_quota
from components.subsystem import Subsystem, SubsystemArgs, SubsystemWorkload
from components.workload import Probes, SecretMount, Shutdown, WorkloadArgs
from infra import dr as dr_rules
from infra.alertmanager import alertmanager_config
from infra.alerts import rule_groups
from infra.chart_values import ALERTMANAGER_SECRET
from infra.config import BACKUP_SECRET_KEYS, Resources, alert_secret_keys
from infra.dashboards import dashboards
from infra.infrastructure import (
    PART_OF,
    InfrastructureArgs,
    SharedInfrastructure,
    priority_class_name,
)
from infra.mesh import AMBIENT, DATAPLANE_MODE_LABEL, OUT_OF_MESH, mesh_policies
from infra.mesh_monitoring import mesh_dashboard, mesh_monitors, mesh_rule_groups
from infra.network import (
    ENVOY_PROXY_SERVICE_ACCOUNT,
    GATEWAY_NAME,
    declared_edges,
    namespace_policies,
    pod_groups,
    wiring_edges,
)
from infra.topology import PlatformPlan, ServicePlan, SubsystemPlan

SUBSYSTEM_LABEL = "platform.settlement.io/subsystem"


def env_name(*parts: str) -> str:
    return "_".join(p.upper().replace("-", "_") for p in parts)


def service_host(subsystem: str, service: str) -> str:
    return f"{service}.{subsystem}.svc.cluster.local"


AMQPS_PORT = 5671
INTERNAL_CA_DIR = "/etc/settlement/internal-ca"


def queue_cluster_name(subsystem: str) -> str:
    return f"{subsystem}-mq"


def amqp_secret_name(svc: ServicePlan, queue_subsystem: str) -> str:
    # Prefixed with the service's subsystem: a copy also lives in the queue owner's namespace (for its User).
    return f"{svc.subsystem}-{svc.name}-amqp-{queue_subsystem}"


def amqp_credentials(svc: ServicePlan) -> list[GeneratedCredentialsArgs]:
    """One generated RabbitMQ identity per service and queue cluster it uses; the vhost is the owner's name."""
    return [
        GeneratedCredentialsArgs(
            username=f"{svc.subsystem}.{svc.name}",
            secret_name=amqp_secret_name(svc, q_sub),
            # The client's copy, and the queue owner's copy that the messaging-topology operator imports.
            namespaces=sorted({svc.subsystem, q_sub}),
            uri_template="amqps://{username}:{password}@"
            + f"{service_host(q_sub, queue_cluster_name(q_sub))}:{AMQPS_PORT}/{q_sub}",
            labels={"app.kubernetes.io/part-of": PART_OF, SUBSYSTEM_LABEL: svc.subsystem},
            static_data={"tls": "enable"},
        )
        for q_sub in sorted(svc.queue_subsystems)
    ]


def queue_users(plan: PlatformPlan, owner: str) -> dict[str, tuple[tuple[str, str], QueueUser]]:
    """Users of `owner`'s queue cluster: one per service that uses it, allowed exactly its declared traffic.

    Value: ((service subsystem, credentials Secret name), user).
    """
    users = {}
    for svc in plan.services():
        if owner not in svc.queue_subsystems:
            continue
        secret = amqp_secret_name(svc, owner)
        users[f"{svc.subsystem}-{svc.name}"] = (
            (svc.subsystem, secret),
            QueueUser(
                credentials_secret=secret,
                publishes=tuple(q.queue for q in svc.publishes if q.subsystem == owner),
                consumes=tuple(q.queue for q in svc.consumes if q.subsystem == owner),
            ),
        )
    return users


def scaling(svc: ServicePlan) -> ResourceScaling | QueueScaling:
    """Consumers scale on the depth of what they consume; everything else on CPU and memory."""
    if svc.consumes:
        q_sub = svc.consumes[0].subsystem  # config allows one consumed cluster per service
        return QueueScaling(
            queues=tuple(q.queue for q in svc.consumes),
            vhost=q_sub,
            messages_per_replica=svc.messages_per_replica,
            credentials_secret=amqp_secret_name(svc, q_sub),
            ca_secret=TRUST_SECRET,
        )
    return ResourceScaling(cpu_utilization=svc.cpu_utilization, memory_utilization=svc.memory_utilization)


POSTGRES_CREDENTIALS_DIR = "/etc/settlement/postgres"
POSTGRES_CA_DIR = "/etc/settlement/postgres-ca"


def postgres_cluster_name(subsystem: str) -> str:
    return f"{subsystem}-db"


def postgres_files(svc: ServicePlan) -> dict[str, SecretMount]:
    """CloudNativePG's generated app credentials and CA certificate, as files for services that use the database.

    `<cluster>-ca` also holds the CA's private key; only `ca.crt` is mounted.
    """
    if not svc.database:
        return {}
    cluster = postgres_cluster_name(svc.subsystem)
    return {
        f"{cluster}-app": SecretMount(POSTGRES_CREDENTIALS_DIR),
        f"{cluster}-ca": SecretMount(POSTGRES_CA_DIR, keys=("ca.crt",)),
    }


def amqp_dir(queue_subsystem: str) -> str:
    return f"/etc/settlement/amqp-{queue_subsystem}"


def amqp_files(svc: ServicePlan) -> dict[str, SecretMount]:
    """The service's RabbitMQ credentials (username, password, uri) per queue cluster, as files."""
    return {
        amqp_secret_name(svc, q_sub): SecretMount(amqp_dir(q_sub), keys=("username", "password", "uri"))
        for q_sub in sorted(svc.queue_subsystems)
    }


def trust_files(svc: ServicePlan) -> dict[str, SecretMount]:
    """The internal CA certificate (not the key beside it) for services that connect to a queue over AMQPS."""
    return {TRUST_SECRET: SecretMount(INTERNAL_CA_DIR, keys=("ca.crt",))} if svc.queue_subsystems else {}


def service_env(svc: ServicePlan) -> dict[str, str]:
    """What a service is told about its surroundings: its identity and the addresses of what it calls."""
    env = {"SERVICE_NAME": svc.name, "SUBSYSTEM": svc.subsystem}
    if svc.queue_subsystems:
        env["AMQP_CA_FILE"] = f"{INTERNAL_CA_DIR}/ca.crt"
    for q_sub in sorted(svc.queue_subsystems):
        env[env_name("amqp", q_sub, "uri", "file")] = f"{amqp_dir(q_sub)}/uri"
    if svc.database:
        env.update(
            {
                # libpq reads these: TLS with the server's certificate verified against the cluster's CA.
                "PGHOST": service_host(svc.subsystem, f"{postgres_cluster_name(svc.subsystem)}-rw"),
                "PGSSLMODE": "verify-full",
                "PGSSLROOTCERT": f"{POSTGRES_CA_DIR}/ca.crt",
                "POSTGRES_CREDENTIALS_DIR": POSTGRES_CREDENTIALS_DIR,
            }
        )
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


def with_mesh_rules(plan: PlatformPlan, groups: dict) -> dict:
    """The platform's rule groups, and the mesh's when it is on (infra/mesh_monitoring.py)."""
    if not plan.config.mesh.enabled:
        return groups
    return {**groups, "groups": [*groups["groups"], *mesh_rule_groups()["groups"]]}


def mesh_dashboards(plan: PlatformPlan) -> dict[str, dict]:
    """The mesh's dashboard, named after its namespace (reserved: no subsystem can take the name)."""
    return {f"{plan.config.mesh.namespace}.json": mesh_dashboard()} if plan.config.mesh.enabled else {}


def mesh_labels(plan: PlatformPlan, enrolled: bool) -> dict[str, str]:
    """The ambient data-plane label: on application namespaces (enrolled), on database and queue pods (out: they
    speak TLS already, and their operators check them from outside the mesh; infra/mesh.py). None without a mesh."""
    if not plan.config.mesh.enabled:
        return {}
    return {DATAPLANE_MODE_LABEL: AMBIENT if enrolled else OUT_OF_MESH}


def namespace_args(
    plan: PlatformPlan, sub: SubsystemPlan, trust: InternalCA, mesh_ready: list[pulumi.Resource] = ()
) -> NamespaceArgs:
    """Namespace with a quota sized for every pod it may hold at once: services at max scale plus data pods.
    With the mesh it is enrolled in the ambient data plane, after the mesh's node agents are installed."""
    defaults = plan.config.defaults.workload
    pods = [pod_size(s.resources, s.max_replicas) for s in sub.services.values()]
    if sub.postgres is not None:
        pods.append(pod_size(sub.postgres.resources, sub.postgres.instances))
    if sub.queue is not None:
        pods.append(pod_size(sub.queue.resources, sub.queue.replicas))
    return NamespaceArgs(
        name=sub.namespace,
        labels={"app.kubernetes.io/part-of": PART_OF, SUBSYSTEM_LABEL: sub.name, **mesh_labels(plan, True)},
        quota=namespace_quota(pods, defaults.quota_headroom_percent),
        default_request=defaults.resources.requests.model_dump(),
        default_limit=defaults.resources.limits.model_dump(),
        pod_security_version=f"v{plan.config.kubernetes_version}",
        trust_issuer=trust.issuer_name,
        depends_on=[trust.issuer],
        enrol_after=list(mesh_ready),
        # Deleting a namespace deletes its database and queue clusters whatever their own protection says.
        protect=plan.config.guardrails.protect_stateful_resources
        and (sub.postgres is not None or sub.queue is not None),
    )


def workload_args(
    plan: PlatformPlan,
    svc: ServicePlan,
    image: pulumi.Input[str],
    depends_on: list[pulumi.Resource],
    keda: pulumi.Resource | None,
    monitoring: pulumi.Resource | None,
) -> WorkloadArgs:
    defaults = plan.config.defaults.workload
    return WorkloadArgs(
        name=svc.name,
        namespace=svc.subsystem,
        image=image,
        port=svc.port,
        metrics_port=svc.metrics_port,
        min_replicas=svc.min_replicas,
        max_replicas=svc.max_replicas,
        resources=svc.resources.model_dump(),
        part_of=PART_OF,
        component="worker" if svc.consumes else "api",
        scaling=scaling(svc),
        paused=svc.paused,
        priority_class=priority_class_name("critical" if svc.critical else "standard"),
        extra_labels={SUBSYSTEM_LABEL: svc.subsystem},
        env=service_env(svc),
        secret_files={**postgres_files(svc), **amqp_files(svc), **trust_files(svc)},
        probes=Probes(
            startup_path=svc.probes.startup_path,
            liveness_path=svc.probes.liveness_path,
            readiness_path=svc.probes.readiness_path,
        ),
        shutdown=Shutdown(pre_stop_sleep_seconds=defaults.pre_stop_sleep_seconds, drain_seconds=defaults.drain_seconds),
        mount_service_account_token=svc.mount_service_account_token,
        metrics_path=svc.metrics_path,
        monitoring=monitoring,
        depends_on=depends_on,
        autoscaler_operator=keda,
    )


def backup_args(plan: PlatformPlan, sub: SubsystemPlan, secrets: dict[str, pulumi.Output[str]]) -> BackupArgs | None:
    backup = plan.config.backup
    if backup is None:
        return None
    store = backup.object_store
    return BackupArgs(
        destination_path=store.destination_path,
        server_name=sub.postgres.server_name,
        retention=backup.retention,
        schedule=backup.schedule,
        endpoint_url=store.endpoint_url,
        credentials=tuple(secrets[k] for k in BACKUP_SECRET_KEYS) if store.credentials == "secret" else None,
        service_account_annotations=store.service_account_annotations,
    )


def topology_args(plan: PlatformPlan, sub: SubsystemPlan) -> DistributedTopologyArgs | None:
    """The subsystem's database as one member of the disaster-recovery pair (infra/dr.py), or None."""
    dr = plan.config.dr
    if dr is None:
        return None
    members = tuple(
        TopologyMember(
            name=dr_rules.member(sub.name, name),
            server_name=dr_rules.server_name(sub.name, name, site.generation),
            destination_path=site.destination_path,
            endpoint_url=site.endpoint_url,
            host=site.postgres_host.format(subsystem=sub.name) if dr.streaming and site.postgres_host else None,
        )
        for name, site in sorted(dr.sites.items())
    )
    own = dr.sites[dr.site]
    token = None
    if dr.switchover is not None and dr.switchover.step == "promote" and dr_rules.is_primary(dr):
        token = dr.switchover.promotion_tokens[sub.name]
    return DistributedTopologyArgs(
        self_name=dr_rules.member(sub.name, dr.site),
        primary=dr_rules.member(sub.name, dr.primary_site),
        members=members,
        promotion_token=token,
        bootstrap_from=dr_rules.member(sub.name, own.bootstrap_from) if own.bootstrap_from is not None else None,
        archive_timeout=f"{dr.archive_timeout_seconds}s",
    )


def postgres_args(
    plan: PlatformPlan,
    sub: SubsystemPlan,
    depends_on: list[pulumi.Resource],
    secrets: dict[str, pulumi.Output[str]],
    monitoring: pulumi.Resource | None,
) -> PostgresClusterArgs:
    pg = sub.postgres
    recovery = pg.recovery
    return PostgresClusterArgs(
        name=postgres_cluster_name(sub.name),
        namespace=sub.namespace,
        instances=pg.instances,
        storage_size=pg.storage_size,
        storage_class=pg.storage_class,
        image=pg.image,
        resources=pg.resources.model_dump(),
        database=pg.database,
        synchronous=pg.synchronous,
        monitoring=monitoring,
        backup=backup_args(plan, sub, secrets),
        recovery=RecoveryArgs(recovery.from_server_name, recovery.target_time) if recovery is not None else None,
        topology=topology_args(plan, sub),
        priority_class=priority_class_name("critical" if sub.critical else "standard"),
        part_of=PART_OF,
        extra_labels={SUBSYSTEM_LABEL: sub.name, **mesh_labels(plan, False)},
        protect=plan.config.guardrails.protect_stateful_resources,
        depends_on=depends_on,
    )


def queue_args(
    plan: PlatformPlan,
    sub: SubsystemPlan,
    depends_on: list[pulumi.Input[pulumi.Resource]],
    tls_issuer: str,
    monitoring: pulumi.Resource | None,
) -> QueueClusterArgs:
    q = sub.queue
    return QueueClusterArgs(
        name=queue_cluster_name(sub.name),
        namespace=sub.namespace,
        replicas=q.replicas,
        storage_size=q.storage_size,
        storage_class=q.storage_class,
        image=q.image,
        resources=q.resources.model_dump(),
        tls_issuer=tls_issuer,
        monitoring=monitoring,
        part_of=PART_OF,
        extra_labels={SUBSYSTEM_LABEL: sub.name},
        pod_labels=mesh_labels(plan, False),
        protect=plan.config.guardrails.protect_stateful_resources,
        depends_on=depends_on,
    )


@dataclass(frozen=True)
class PlatformArgs:
    plan: PlatformPlan
    secrets: dict[str, pulumi.Output[str]] = field(default_factory=dict)
    """Secret config values the plan needs (see `infra.stack_config.read_secrets`)."""
    build_on_preview: bool = False
    """Build the services' images during `pulumi preview` too (never pushed: the preview shows the new image and
    a broken build fails the pull request); otherwise a preview builds nothing (`infra.program.BUILD_ON_PREVIEW`)."""


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
            InfrastructureArgs(
                plan.config.infrastructure,
                f"v{plan.config.kubernetes_version}",
                plan.config.monitoring,
                protect_data=plan.config.guardrails.protect_stateful_resources,
                mesh=plan.config.mesh if plan.config.mesh.enabled else None,
            ),
            opts=child,
        )

        subsystems: dict[str, Subsystem] = {}
        for sub_name in plan.order:
            sub = plan.subsystems[sub_name]
            workloads = {}
            for svc in sub.services.values():
                foreign_queues = [subsystems[s].queue for s in sorted(svc.queue_subsystems - {sub_name})]
                after = [*foreign_queues, *infrastructure.priority_class_resources]
                workloads[svc.name] = SubsystemWorkload(
                    args=workload_args(
                        plan,
                        svc,
                        self._image(name, svc, args.build_on_preview),
                        after,
                        infrastructure.autoscaler.release,
                        infrastructure.monitoring.release,
                    ),
                    uses_postgres=svc.database,
                    uses_queue=sub_name in svc.queue_subsystems,
                    credentials=amqp_credentials(svc),
                )
            subsystems[sub_name] = Subsystem(
                f"{name}-{sub_name}",
                SubsystemArgs(
                    namespace=namespace_args(
                        plan, sub, infrastructure.internal_ca, infrastructure.mesh.ready if infrastructure.mesh else []
                    ),
                    workloads=workloads,
                    postgres=postgres_args(
                        plan,
                        sub,
                        [
                            infrastructure.postgres_operator.release,
                            infrastructure.backup_plugin.release,
                            *infrastructure.priority_class_resources,
                        ],
                        args.secrets,
                        infrastructure.monitoring.release,
                    )
                    if sub.postgres
                    else None,
                    queue=queue_args(
                        plan,
                        sub,
                        [infrastructure.queue_cluster_operator, infrastructure.internal_ca.issuer],
                        infrastructure.internal_ca.issuer_name,
                        infrastructure.monitoring.release,
                    )
                    if sub.queue
                    else None,
                ),
                opts=child,
            )

        # Topology last: its users import credentials that the subsystems of their services generate.
        for owner in plan.order:
            sub = plan.subsystems[owner]
            if sub.queue is None:
                continue
            users = queue_users(plan, owner)
            credentials = [
                subsystems[s_sub].credentials[secret] for s_sub, secret in sorted(u[0] for u in users.values())
            ]
            QueueTopology(
                f"{name}-{owner}-topology",
                QueueTopologyArgs(
                    cluster=queue_cluster_name(owner),
                    namespace=owner,
                    vhost=owner,
                    queues={q.name: q.delivery_limit for q in sub.queue.queues.values()},
                    users={key: user for key, (_, user) in users.items()},
                    retain=plan.config.guardrails.protect_stateful_resources,
                    labels={"app.kubernetes.io/part-of": PART_OF, SUBSYSTEM_LABEL: owner},
                    depends_on=[
                        subsystems[owner].queue,
                        infrastructure.queue_topology_operator,
                        *credentials,
                    ],
                ),
                opts=child,
            )

        routes = {
            f"{svc.subsystem}-{svc.name}": Route(
                namespace=subsystems[svc.subsystem].namespace,
                service=svc.name,
                port=svc.port,
                path=svc.expose.path,
                requests_per_second=svc.expose.requests_per_second,
                timeout_seconds=svc.expose.timeout_seconds,
                max_connections=svc.expose.max_connections,
                max_pending_requests=svc.expose.max_pending_requests,
                max_parallel_requests=svc.expose.max_parallel_requests,
            )
            for svc in plan.services()
            if svc.expose is not None
        }
        namespaces: dict[str, pulumi.Input[str]] = {n: s.namespace for n, s in subsystems.items()}
        for namespace_name, namespace in infrastructure.operator_namespaces.items():
            namespaces.setdefault(namespace_name, namespace)
        if routes:
            gateway_config = plan.config.gateway
            gateway = Gateway(
                f"{name}-gateway",
                GatewayArgs(
                    name=GATEWAY_NAME,
                    namespace=gateway_config.namespace,
                    hostname=gateway_config.hostname,
                    route_namespace_labels={"app.kubernetes.io/part-of": PART_OF},
                    internal_issuer=infrastructure.internal_ca.issuer_name,
                    acme_email=gateway_config.acme_email,
                    pod_security_version=f"v{plan.config.kubernetes_version}",
                    labels={"app.kubernetes.io/part-of": PART_OF},
                    # With the mesh, the proxies are enrolled under a fixed identity (README: Encryption in transit).
                    proxy=ProxySettings(
                        namespace=plan.config.infrastructure.operators.envoy_gateway.namespace,
                        pod_labels=mesh_labels(plan, True),
                        service_account=ENVOY_PROXY_SERVICE_ACCOUNT,
                    )
                    if plan.config.mesh.enabled
                    else None,
                    depends_on=[
                        infrastructure.gateway_controller.release,
                        infrastructure.cert_manager.release,
                        infrastructure.internal_ca.issuer,
                    ],
                ),
                routes,
                opts=child,
            )
            namespaces[gateway_config.namespace] = gateway.namespace

        # Default deny and exact allows, in every namespace this program creates (infra/network.py).
        groups = pod_groups(plan)
        declared = declared_edges(plan, groups)
        by_namespace: dict[str, dict[str, dict]] = {}
        for policy in namespace_policies(plan, groups, declared):
            by_namespace.setdefault(policy.namespace, {})[policy.name] = policy.spec
        for ns, policies in sorted(by_namespace.items()):
            NetworkPolicies(
                f"{name}-{ns}-network",
                NetworkPoliciesArgs(
                    namespace=namespaces.get(ns, ns),
                    policies=policies,
                    labels={"app.kubernetes.io/part-of": PART_OF},
                ),
                opts=child,
            )

        # Identity: mTLS STRICT and one AuthorizationPolicy per service, from the same edges (infra/mesh.py).
        if infrastructure.mesh is not None:
            MeshPolicies(
                f"{name}-mesh-policies",
                MeshPoliciesArgs(
                    policies=[
                        *mesh_policies(declared | wiring_edges(plan, groups), plan, groups),
                        *mesh_monitors(plan.config.mesh),
                    ],
                    namespaces=namespaces,
                    labels={"app.kubernetes.io/part-of": PART_OF},
                    depends_on=[infrastructure.mesh.releases["istiod"].release, infrastructure.monitoring.release],
                ),
                opts=child,
            )

        alert_keys = sorted(alert_secret_keys(plan.config))
        MonitoringConfig(
            f"{name}-monitoring-config",
            MonitoringConfigArgs(
                namespace=infrastructure.monitoring.namespace,
                name="settlement-platform",
                rule_groups=with_mesh_rules(plan, rule_groups(plan)),
                dashboards={
                    **dashboards(plan),
                    **mesh_dashboards(plan),
                },
                alertmanager_config=pulumi.Output.all(*[args.secrets[k] for k in alert_keys]).apply(
                    lambda values: yaml.safe_dump(alertmanager_config(plan, dict(zip(alert_keys, values, strict=True))))
                ),
                alertmanager_secret=ALERTMANAGER_SECRET,
                labels={"app.kubernetes.io/part-of": PART_OF},
                depends_on=[infrastructure.monitoring.release],
            ),
            opts=child,
        )

        self.namespaces = {n: s.namespace for n, s in subsystems.items()}
        self.service_addresses = {
            f"{svc.subsystem}/{svc.name}": f"{service_host(svc.subsystem, svc.name)}:{svc.port}"
            for svc in plan.services()
        }
        self.register_outputs({"namespaces": self.namespaces, "service_addresses": self.service_addresses})

    def _image(self, name: str, svc: ServicePlan, build_on_preview: bool) -> pulumi.Input[str]:
        """The reference a Deployment runs: as configured, or the digest of an image this program builds.

        pulumi-docker v5.1.0 provider/image.go (dockerBuild): in a preview, or with skipPush, the image is built
        but never pushed, and `repoDigest` is the local image ID; provider/provider.go (canPreview): without
        buildOnPreview a preview builds nothing and `repoDigest` is unknown, so the Deployment's image shows as
        "computed" whenever the build context changed (Check hashes it: build.contextDigest). `pulumi up` builds,
        pushes and deploys the pushed digest."""
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
            build_on_preview=build_on_preview,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Deploy the pushed digest, never the moving tag: what runs is exactly what was built.
        return image.repo_digest
