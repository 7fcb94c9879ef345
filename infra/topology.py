"""From validated config to a resolved plan of the platform: every default applied, every reference resolved.

Pure functions, no Pulumi: the rules that relate one part of the config to another (calls, queues, databases,
image pinning) are checked here, all at once, so one run reports every problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from infra import dr as dr_rules
from infra.chart_values import host_agent_namespaces
from infra.config import (
    Expose,
    ExternalEgress,
    ImageBuild,
    PlatformConfig,
    ProbePaths,
    Recovery,
    Resources,
    SloDefaults,
)
from infra.errors import ConfigError, ConfigProblem, problems_from_validation_error

DIGEST_SUFFIX = "@sha256:"

# Namespaces the shared infrastructure owns; a subsystem of the same name would share them.
RESERVED_NAMESPACES = frozenset(
    {"default", "kube-system", "kube-public", "kube-node-lease", "infrastructure", "monitoring"}
)


@dataclass(frozen=True)
class Endpoint:
    """A service another one may call: where it lives and on which port."""

    subsystem: str
    service: str
    port: int


@dataclass(frozen=True)
class QueueRef:
    subsystem: str
    queue: str


@dataclass(frozen=True)
class ServicePlan:
    subsystem: str
    name: str
    image: str | None
    build: ImageBuild | None
    port: int
    metrics_port: int
    min_replicas: int
    max_replicas: int
    resources: Resources
    critical: bool
    database: bool
    calls: tuple[Endpoint, ...]
    publishes: tuple[QueueRef, ...]
    consumes: tuple[QueueRef, ...]
    probes: ProbePaths
    mount_service_account_token: bool
    cpu_utilization: int
    memory_utilization: int
    messages_per_replica: int
    paused: bool = False
    """Held at zero pods, its autoscaler paused: a consumer on a disaster-recovery site that does not serve
    (its database is a read-only replica)."""
    availability_target: float = 99.9
    latency_seconds: float = 0.5
    latency_target: float = 99.0
    # Queue SLOs of the queues it consumes (the defaults live in config.SloDefaults; resolve() always sets them).
    processing_seconds: float = SloDefaults.model_fields["processing_seconds"].default
    processing_target: float = SloDefaults.model_fields["processing_target"].default
    dead_letter_target: float = SloDefaults.model_fields["dead_letter_target"].default
    metrics_path: str = "/metrics"
    expose: Expose | None = None
    egress: dict[str, ExternalEgress] = field(default_factory=dict)

    @property
    def queue_subsystems(self) -> frozenset[str]:
        """Subsystems whose queue cluster this service connects to."""
        return frozenset(q.subsystem for q in self.publishes + self.consumes)


@dataclass(frozen=True)
class PostgresPlan:
    instances: int
    storage_size: str
    storage_class: str | None
    image: str
    resources: Resources
    database: str
    synchronous: bool
    server_name: str
    """Folder of this cluster's history in the backup object store."""
    recovery: Recovery | None
    rto_minutes: int | None = None
    """The subsystem's recovery time objective (`dr.objectives`), when the stack states one."""


@dataclass(frozen=True)
class QueueSpec:
    name: str
    delivery_limit: int
    unconsumed: str | None = None
    """Why no service consumes it (config `unconsumed`); its consumers-absent alert leaves it out."""


@dataclass(frozen=True)
class QueueClusterPlan:
    replicas: int
    storage_size: str
    storage_class: str | None
    image: str
    resources: Resources
    queues: dict[str, QueueSpec]


@dataclass(frozen=True)
class SubsystemPlan:
    name: str
    services: dict[str, ServicePlan]
    postgres: PostgresPlan | None
    queue: QueueClusterPlan | None

    @property
    def critical(self) -> bool:
        """On the payment path: one of its services is."""
        return any(s.critical for s in self.services.values())

    @property
    def namespace(self) -> str:
        return self.name


@dataclass(frozen=True)
class PlatformPlan:
    config: PlatformConfig
    subsystems: dict[str, SubsystemPlan] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    """Subsystems in creation order: one whose services use another's queue cluster comes after it."""

    def service(self, subsystem: str, name: str) -> ServicePlan:
        return self.subsystems[subsystem].services[name]

    def services(self) -> list[ServicePlan]:
        return [s for sub in self.subsystems.values() for s in sub.services.values()]


def _split(ref: str, home: str) -> tuple[str, str]:
    subsystem, _, name = ref.rpartition("/")
    return (subsystem or home, name)


def resolve(config: PlatformConfig) -> PlatformPlan:
    """Apply defaults and resolve references; raise ConfigError listing every problem found."""
    problems: list[ConfigProblem] = []
    defaults = config.defaults

    reserved = RESERVED_NAMESPACES | infrastructure_namespaces(config)
    for name in config.subsystems:
        if name in reserved:
            problems.append(ConfigProblem(f"subsystems.{name}", f"{name!r} is reserved for shared infrastructure"))

    consumers: dict[QueueRef, str] = {}
    publishers: dict[QueueRef, str] = {}
    broken_consumes = False
    subsystems: dict[str, SubsystemPlan] = {}
    for sub_name, sub in config.subsystems.items():
        services: dict[str, ServicePlan] = {}
        for svc_name, svc in sub.services.items():
            path = f"subsystems.{sub_name}.services.{svc_name}"
            calls: list[Endpoint] = []
            for i, ref in enumerate(svc.calls):
                target_sub, target = _split(ref, sub_name)
                target_cfg = config.subsystems.get(target_sub)
                if target_cfg is None or target not in target_cfg.services:
                    known = sorted(f"{s}/{n}" for s, c in config.subsystems.items() for n in c.services)
                    problems.append(
                        ConfigProblem(
                            f"{path}.calls[{i}]",
                            f"{ref!r} is not a declared service (declared: {', '.join(known)})",
                        )
                    )
                elif (target_sub, target) == (sub_name, svc_name):
                    problems.append(ConfigProblem(f"{path}.calls[{i}]", f"{ref!r} is the service itself"))
                else:
                    calls.append(Endpoint(target_sub, target, target_cfg.services[target].port))

            queue_refs: dict[str, list[QueueRef]] = {"publishes": [], "consumes": []}
            for direction, refs in queue_refs.items():
                for i, ref in enumerate(getattr(svc, direction)):
                    q_sub, q_name = _split(ref, sub_name)
                    owner = config.subsystems.get(q_sub)
                    if owner is None or owner.queue is None or q_name not in owner.queue.queues:
                        declared = sorted(
                            f"{s}/{q}" for s, c in config.subsystems.items() if c.queue for q in c.queue.queues
                        )
                        problems.append(
                            ConfigProblem(
                                f"{path}.{direction}[{i}]",
                                f"{ref!r} is not a queue declared under subsystems.<name>.queue.queues "
                                f"(declared: {', '.join(declared) or 'none'})",
                            )
                        )
                        broken_consumes = broken_consumes or direction == "consumes"
                        continue
                    qref = QueueRef(q_sub, q_name)
                    refs.append(qref)
                    if direction == "publishes":
                        publishers.setdefault(qref, f"{sub_name}/{svc_name}")
                    if direction == "consumes":
                        if qref in consumers:
                            problems.append(
                                ConfigProblem(
                                    f"{path}.consumes[{i}]",
                                    f"{ref!r} is already consumed by {consumers[qref]}; competing services on one "
                                    "queue split its messages, give each consumer its own queue",
                                )
                            )
                        consumers[qref] = f"{sub_name}/{svc_name}"

            if svc.database and sub.postgres is None:
                problems.append(
                    ConfigProblem(f"{path}.database", f"is true but subsystems.{sub_name}.postgres is not declared")
                )
            if svc.port == svc.metrics_port:
                problems.append(
                    ConfigProblem(f"{path}.metricsPort", f"({svc.metrics_port}) must differ from port ({svc.port})")
                )
            if svc.image is not None and config.guardrails.require_image_digest and DIGEST_SUFFIX not in svc.image:
                problems.append(
                    ConfigProblem(
                        f"{path}.image",
                        f"{svc.image!r} is not pinned by digest; guardrails.requireImageDigest requires "
                        "'<repository>@sha256:<digest>'",
                    )
                )

            wl = defaults.workload
            floor = wl.critical_min_replicas if svc.critical else wl.min_replicas
            min_replicas = svc.replicas.min if svc.replicas.min is not None else floor
            max_replicas = svc.replicas.max if svc.replicas.max is not None else max(wl.max_replicas, min_replicas)
            if min_replicas > max_replicas:
                problems.append(
                    ConfigProblem(f"{path}.replicas", f"min ({min_replicas}) must be <= max ({max_replicas})")
                )
            # A disaster-recovery site that does not serve: consumers at zero (their database is a read-only
            # replica), APIs at dr.standbyApiReplicas. The only way a minimum of 0 is accepted.
            paused = not dr_rules.serves(config) and bool(svc.consumes)
            if not dr_rules.serves(config):
                min_replicas = 0 if paused else min(config.dr.standby_api_replicas, max_replicas)

            consumed_from = sorted({q.subsystem for q in queue_refs["consumes"]})
            if len(consumed_from) > 1:
                problems.append(
                    ConfigProblem(
                        f"{path}.consumes",
                        f"queues of {len(consumed_from)} subsystems ({', '.join(consumed_from)}); a consumer scales on "
                        "one queue cluster, split it into one service per cluster",
                    )
                )

            try:
                resources = Resources.model_validate(svc.resources.over(wl.resources))
            except ValidationError as exc:
                resources = wl.resources
                where = ("subsystems", sub_name, "services", svc_name, "resources")
                problems += [
                    ConfigProblem(p.path, f"{p.message} (what is not given comes from defaults.workload.resources)")
                    for p in problems_from_validation_error(exc, Resources, where)
                ]

            scaling = svc.autoscaling
            services[svc_name] = ServicePlan(
                subsystem=sub_name,
                name=svc_name,
                image=svc.image,
                build=svc.build,
                port=svc.port,
                metrics_port=svc.metrics_port,
                min_replicas=min_replicas,
                max_replicas=max_replicas,
                resources=resources,
                critical=svc.critical,
                database=svc.database,
                calls=tuple(calls),
                publishes=tuple(queue_refs["publishes"]),
                consumes=tuple(queue_refs["consumes"]),
                probes=svc.probes,
                availability_target=svc.slo.availability
                if svc.slo.availability is not None
                else (defaults.slo.critical_availability if svc.critical else defaults.slo.availability),
                latency_seconds=svc.slo.latency_seconds
                if svc.slo.latency_seconds is not None
                else defaults.slo.latency_seconds,
                latency_target=svc.slo.latency_target
                if svc.slo.latency_target is not None
                else defaults.slo.latency_target,
                **{
                    name: getattr(svc.slo, name) if getattr(svc.slo, name) is not None else getattr(defaults.slo, name)
                    for name in ("processing_seconds", "processing_target", "dead_letter_target")
                },
                metrics_path=svc.metrics_path,
                expose=svc.expose,
                egress=dict(svc.egress),
                mount_service_account_token=svc.mount_service_account_token,
                cpu_utilization=scaling.cpu_utilization if scaling.cpu_utilization is not None else wl.cpu_utilization,
                memory_utilization=scaling.memory_utilization
                if scaling.memory_utilization is not None
                else wl.memory_utilization,
                messages_per_replica=scaling.messages_per_replica
                if scaling.messages_per_replica is not None
                else wl.messages_per_replica,
                paused=paused,
            )

        postgres = None
        if sub.postgres is not None:
            pg, pgd = sub.postgres, defaults.postgres
            postgres = PostgresPlan(
                instances=pg.instances if pg.instances is not None else pgd.instances,
                storage_size=pg.storage.size if pg.storage.size is not None else pgd.storage_size,
                storage_class=pg.storage.storage_class if pg.storage.storage_class is not None else pgd.storage_class,
                image=pgd.image,
                resources=pgd.resources,
                database=pg.database if pg.database is not None else "app",
                synchronous=pgd.synchronous,
                server_name=postgres_server_name(config, sub_name),
                recovery=pg.recovery,
                rto_minutes=config.dr.objectives[sub_name].rto_minutes
                if config.dr is not None and sub_name in config.dr.objectives
                else None,
            )
        queue = None
        if sub.queue is not None:
            qc, qd = sub.queue, defaults.queue
            replicas = qc.replicas if qc.replicas is not None else qd.replicas
            queue = QueueClusterPlan(
                replicas=replicas,
                storage_size=qc.storage.size if qc.storage.size is not None else qd.storage_size,
                storage_class=qc.storage.storage_class if qc.storage.storage_class is not None else qd.storage_class,
                image=qd.image,
                resources=qd.resources,
                queues={n: QueueSpec(n, q.delivery_limit, q.unconsumed) for n, q in qc.queues.items()},
            )
        subsystems[sub_name] = SubsystemPlan(sub_name, services, postgres, queue)

    # A consumer whose reference is broken is already reported; its queue looking unconsumed is the consequence.
    problems += consumer_problems(config, {} if broken_consumes else publishers, consumers)
    problems += data_safety_problems(config, subsystems)
    databases = sorted(n for n, s in subsystems.items() if s.postgres is not None)
    problems += dr_rules.dr_problems(config, databases)
    if config.drill is None:  # a drill stack routes nothing
        problems += exposure_problems(config, subsystems)
    problems += alerting_problems(config)
    problems += mesh_problems(config)
    order, cycle = creation_order(subsystems)
    if cycle:
        problems.append(
            ConfigProblem(
                "subsystems",
                f"queue dependencies form a cycle ({' -> '.join(cycle)}); a subsystem's data must exist before the "
                "services of another subsystem that use it",
            )
        )
    if problems:
        raise ConfigError(problems)
    return PlatformPlan(config=config, subsystems=subsystems, order=order)


def postgres_server_name(config: PlatformConfig, subsystem: str) -> str:
    """Where the subsystem's database archives in the object store: per site and generation with `dr`."""
    pg = config.subsystems[subsystem].postgres
    dr = config.dr
    if dr is not None and dr.site in dr.sites:
        return dr_rules.server_name(subsystem, dr.site, dr.sites[dr.site].generation)
    return pg.server_name if pg.server_name is not None else f"{subsystem}-db"


# Installs that run no controller of their own (only CRDs): nothing in their namespace to be available.
CONTROLLERLESS_OPERATORS = frozenset({"gateway_crds"})


def operator_namespaces(config: PlatformConfig, with_controller: bool = False) -> set[str]:
    """Namespaces of the operator installs (`with_controller`: only those that run a controller)."""
    operators = config.infrastructure.operators
    # The mesh's control plane and node agents (istio-cni watches pods) call the API server too; only istiod is a
    # controller Deployment (ztunnel and istio-cni are DaemonSets, watched as host agents).
    mesh = set()
    if config.mesh.enabled:
        mesh = {config.mesh.namespace} if with_controller else {config.mesh.namespace, config.mesh.node_namespace}
    return {
        getattr(operators, name).namespace
        for name in type(operators).model_fields
        if not (with_controller and name in CONTROLLERLESS_OPERATORS)
    } | mesh


def infrastructure_namespaces(config: PlatformConfig) -> set[str]:
    """Namespaces the shared infrastructure creates: the operators', the host agents' and the gateway's."""
    host_agents = host_agent_namespaces(config.infrastructure.operators.monitoring.namespace, config.mesh)
    return operator_namespaces(config) | set(host_agents) | {config.gateway.namespace}


def mesh_problems(config: PlatformConfig) -> list[ConfigProblem]:
    """`mesh.enabled: false` only where the guard rail is relaxed (prod keeps the default)."""
    if not config.mesh.enabled and config.guardrails.require_mesh:
        return [
            ConfigProblem(
                "mesh.enabled",
                "is false, but guardrails.requireMesh requires the ambient mesh: service-to-service traffic would be "
                "unencrypted and authorised by address alone (PCI DSS 4.2, 8)",
            )
        ]
    return []


PLATFORM_ROUTE = "platform"


def alerting_problems(config: PlatformConfig) -> list[ConfigProblem]:
    """Every subsystem's alerts (and the shared infrastructure's) must reach a declared receiver."""
    problems = []
    alerting = config.alerting
    if alerting is None:
        if config.drill is not None:
            return []  # a drill stack runs no Alertmanager
        return [ConfigProblem("alerting", "is required: who is told about alerts (only a drill stack omits it)")]
    for name in sorted(set(config.subsystems) | {PLATFORM_ROUTE}):
        if name not in alerting.routes:
            problems.append(ConfigProblem(f"alerting.routes.{name}", "is missing: its alerts would reach nobody"))
    for name, route in sorted(alerting.routes.items()):
        if name not in config.subsystems and name != PLATFORM_ROUTE:
            problems.append(ConfigProblem(f"alerting.routes.{name}", f"{name!r} is not a subsystem or `platform`"))
        for severity in ("page", "ticket"):
            receiver = getattr(route, severity)
            if receiver not in alerting.receivers:
                problems.append(
                    ConfigProblem(
                        f"alerting.routes.{name}.{severity}",
                        f"{receiver!r} is not a declared receiver (declared: {', '.join(sorted(alerting.receivers))})",
                    )
                )
    return problems


def consumer_problems(
    config: PlatformConfig, publishers: dict[QueueRef, str], consumers: dict[QueueRef, str]
) -> list[ConfigProblem]:
    """A queue that is published to needs a consumer, or a stated reason (`unconsumed`) why it has none: its
    messages would pile up and its QueueConsumersAbsent alert would page from the first deploy."""
    problems = []
    for sub_name, sub in config.subsystems.items():
        for q_name, queue in (sub.queue.queues if sub.queue else {}).items():
            ref, path = QueueRef(sub_name, q_name), f"subsystems.{sub_name}.queue.queues.{q_name}"
            if ref in publishers and ref not in consumers and queue.unconsumed is None:
                problems.append(
                    ConfigProblem(
                        path,
                        f"{publishers[ref]} publishes to it but no service consumes it; add the consumer, or state "
                        "why there is none in `unconsumed` (its QueueConsumersAbsent alert would page)",
                    )
                )
            if ref in consumers and queue.unconsumed is not None:
                problems.append(
                    ConfigProblem(f"{path}.unconsumed", f"is set but {consumers[ref]} consumes the queue; remove it")
                )
    return problems


def exposure_problems(config: PlatformConfig, subsystems: dict[str, SubsystemPlan]) -> list[ConfigProblem]:
    problems = []
    paths: dict[str, str] = {}
    for sub in subsystems.values():
        for svc in sub.services.values():
            if svc.expose is None:
                continue
            where = f"subsystems.{sub.name}.services.{svc.name}.expose"
            if config.gateway.hostname is None:
                problems.append(ConfigProblem(where, "needs gateway.hostname (the HTTPS listener's name)"))
            owner = paths.setdefault(svc.expose.path, f"{sub.name}/{svc.name}")
            if owner != f"{sub.name}/{svc.name}":
                problems.append(ConfigProblem(f"{where}.path", f"{svc.expose.path!r} is already routed to {owner}"))
    return problems


def data_safety_problems(config: PlatformConfig, subsystems: dict[str, SubsystemPlan]) -> list[ConfigProblem]:
    """Backups required where databases exist, and recoveries that cannot overwrite their own source."""
    problems = []
    databases = sorted(name for name, sub in subsystems.items() if sub.postgres is not None)
    if config.drill is not None:
        problems += drill_problems(config, databases)
    elif databases and config.backup is None and config.guardrails.require_backups:
        problems.append(
            ConfigProblem(
                "backup",
                f"is not configured but subsystems {', '.join(databases)} have PostgreSQL clusters; "
                "guardrails.requireBackups requires an object store for WAL archiving and base backups",
            )
        )
    for name in databases:
        pg = subsystems[name].postgres
        if pg.recovery is None:
            continue
        path = f"subsystems.{name}.postgres"
        if config.backup is None and config.drill is None:
            problems.append(ConfigProblem(f"{path}.recovery", "needs `backup` (the object store to recover from)"))
        if pg.recovery.from_server_name == pg.server_name:
            problems.append(
                ConfigProblem(
                    f"{path}.recovery.fromServerName",
                    f"({pg.recovery.from_server_name!r}) must differ from serverName ({pg.server_name!r}): "
                    "the recovered cluster would archive over the history it recovers from",
                )
            )
    operators = config.infrastructure.operators
    if operators.barman_cloud.namespace != operators.cloudnative_pg.namespace:
        problems.append(
            ConfigProblem(
                "infrastructure.operators.barmanCloud.namespace",
                f"({operators.barman_cloud.namespace!r}) must equal cloudnativePg.namespace "
                f"({operators.cloudnative_pg.namespace!r}): the plugin runs beside the operator",
            )
        )
    return problems


def drill_problems(config: PlatformConfig, databases: list[str]) -> list[ConfigProblem]:
    """A drill stack restores and verifies; it never archives, so it can never write into the backups it reads."""
    problems = []
    if config.backup is not None:
        problems.append(
            ConfigProblem(
                "backup",
                "must not be set in a drill stack (`drill`): its restored databases never archive or back up, so "
                "nothing it runs can write into the object store it restores from",
            )
        )
    if not databases:
        problems.append(ConfigProblem("drill", "the topology has no PostgreSQL cluster to restore"))
    if config.guardrails.protect_stateful_resources:
        problems.append(
            ConfigProblem(
                "guardrails.protectStatefulResources",
                "must be false in a drill stack (`drill`): its restored databases are scratch copies that "
                "`pulumi destroy` removes after every drill; say so in the stack file",
            )
        )
    taken = set(config.subsystems) | RESERVED_NAMESPACES | infrastructure_namespaces(config)
    if config.drill.namespace in taken:
        problems.append(
            ConfigProblem(
                "drill.namespace",
                f"({config.drill.namespace!r}) is a namespace the environment itself uses: the drill's teardown "
                "would delete it; choose a scratch namespace of its own",
            )
        )
    for name in sorted(set(config.drill.point_queries) - set(databases)):
        problems.append(
            ConfigProblem(
                f"drill.pointQueries.{name}",
                f"{name!r} is not a subsystem with a PostgreSQL cluster (those with one: {', '.join(databases)})",
            )
        )
    return problems


def creation_order(subsystems: dict[str, SubsystemPlan]) -> tuple[tuple[str, ...], list[str]]:
    """Depth-first topological order over "uses the queue cluster of"; returns (order, cycle or [])."""
    needs = {
        name: sorted({q for s in sub.services.values() for q in s.queue_subsystems} - {name})
        for name, sub in subsystems.items()
    }
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str]:
        if state.get(name) == "done":
            return []
        if state.get(name) == "visiting":
            return [*path[path.index(name) :], name]
        state[name] = "visiting"
        for dep in needs[name]:
            cycle = visit(dep, [*path, name])
            if cycle:
                return cycle
        state[name] = "done"
        order.append(name)
        return []

    for name in subsystems:
        cycle = visit(name, [])
        if cycle:
            return tuple(order), cycle
    return tuple(order), []
