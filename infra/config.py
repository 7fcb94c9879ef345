"""The stack's configuration: one pydantic model for the whole platform.

Every field's default is written here and nowhere else; its description says what the default is. Keys in the
stack files are camelCase (the Pulumi convention); Python attributes are snake_case. Unknown keys are errors.
Maps, not lists, hold subsystems, services, queues and operators: the key becomes part of resource names, so
reordering a file never renames or replaces anything.

Structural rules (types, ranges, min <= max) live on the models; rules that relate one part of the config to
another (a call to an unknown service, a queue nobody declares) live in `infra.topology`.
"""

from __future__ import annotations

import decimal
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from components.sizing import parse_quantity
from infra.overrides import merge_patch

# RFC 1123 label, short enough that "<subsystem>-<service>-<suffix>" names stay under 63 characters.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z]([-a-z0-9]{0,28}[a-z0-9])?$")]


def _number_as_text(value: Any) -> Any:
    """A quantity written as a YAML number (`cpu: 2`, `cpu: 0.5`, or set so by `pulumi config set --path`) read as
    its text, as the API server reads a bare number (k8s.io/apimachinery pkg/api/resource/quantity.go
    `UnmarshalJSON`); the text is then checked as any other."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


_CPU = re.compile(r"[0-9]+m|[0-9]+(\.[0-9]+)?")
_MEMORY = re.compile(r"[0-9]+(Ki|Mi|Gi|Ti)")


def _cpu_quantity(value: str) -> str:
    if not _CPU.fullmatch(value):
        raise ValueError(f"{value!r} is not a CPU amount: millicores such as 250m, or cores such as 0.5 or 2")
    millicores = decimal.Decimal(value[:-1]) if value.endswith("m") else decimal.Decimal(value) * 1000
    if millicores < 1 or millicores % 1:
        # Kubernetes allows no CPU amount finer than 1m (kubernetes.io, "Assign CPU Resources to Containers and
        # Pods", CPU units); a zero request leaves the autoscalers' utilisation target without a base.
        raise ValueError(f"{value!r} is not a whole number of millicores of at least 1m")
    return value


def _memory_quantity(value: str) -> str:
    if not _MEMORY.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a memory amount: a whole number with a unit, Ki, Mi, Gi or Ti, such as 256Mi"
        )
    return value


CpuQuantity = Annotated[str, BeforeValidator(_number_as_text), AfterValidator(_cpu_quantity)]
MemoryQuantity = Annotated[str, BeforeValidator(_number_as_text), AfterValidator(_memory_quantity)]
Port = Annotated[int, Field(ge=1024, le=65535)]
# A reference to a service or a queue: "name" in the same subsystem, or "subsystem/name".
Reference = Annotated[str, StringConstraints(pattern=r"^([a-z][-a-z0-9]*/)?[a-z][-a-z0-9]*$")]

_DECIMAL_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _decimal_text(value: Any) -> Any:
    """A decimal written as text read as its number: `pulumi config set --path` stores `99.95` as a string (the
    engine turns only integers and true/false into typed values: pulumi/pulumi sdk/go/common/resource/config/value.go
    `coerceObject`), and PyYAML (YAML 1.1) reads an unquoted `5e-1` as text where the engine's go-yaml reads a number.
    Anything else is left to the strict check of the field."""
    return float(value) if isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value) else value


# A number that may be fractional: given as a number, or as a decimal in text (see `_decimal_text`).
Number = Annotated[float, BeforeValidator(_decimal_text), Field(allow_inf_nan=False)]

# Bounds that catch typos (an extra digit, a wrong unit) before they reach a cluster or a bill. Generous for
# this platform's scale; a real need beyond them is a design conversation, and a one-line change here.
MAX_REPLICAS = 100
STORAGE_BOUNDS = ("1Gi", "64Ti")
MAX_REQUESTS_PER_SECOND = 100_000


def _storage_in_bounds(size: str) -> str:
    low, high = STORAGE_BOUNDS
    if not parse_quantity(low) <= parse_quantity(size) <= parse_quantity(high):
        raise ValueError(f"{size!r} is outside {low}..{high}")
    return size


StorageSize = Annotated[MemoryQuantity, AfterValidator(_storage_in_bounds)]
STORAGE_RULE = f"Between {STORAGE_BOUNDS[0]} and {STORAGE_BOUNDS[1]}."

_DAYS = {"h": 1 / 24, "d": 1, "w": 7, "m": 30}


def _at_most(days: int):
    def check(duration: str) -> str:
        count, unit = int(duration[:-1]), duration[-1]
        if count * _DAYS[unit] > days:
            raise ValueError(f"{duration!r} is longer than {days} days")
        return duration

    return AfterValidator(check)


# Prometheus keeps samples on local disk; longer history belongs in remote storage.
MonitoringRetention = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*[dhw]$"), _at_most(365)]
# CloudNativePG retention policy: days, weeks or months, up to ten years of recovery points.
BackupRetention = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]*[dwm]$"), _at_most(3650)]


# Config keys whose values are secrets. They never enter the model: the program reads them as Pulumi secret
# Outputs, so they stay encrypted in state and masked in previews. Set with `pulumi config set --secret`.
BACKUP_SECRET_KEYS = ("backupAccessKeyId", "backupSecretAccessKey")
SECRET_CONFIG_KEYS = {
    "backupAccessKeyId": "S3 access key id for backups, when backup.objectStore.credentials is `secret`.",
    "backupSecretAccessKey": "S3 secret access key for backups, when backup.objectStore.credentials is `secret`.",
}


ALERT_SECRET_PATTERN = r"^alert[A-Z][A-Za-z0-9]*$"


def alert_secret_keys(config: PlatformConfig) -> dict[str, str]:
    """Secret config keys the alerting receivers name -> where they are named."""
    keys = {}
    for name, receiver in (config.alerting.receivers if config.alerting is not None else {}).items():
        path = f"alerting.receivers.{name}"
        if receiver.pager is not None:
            keys[receiver.pager.routing_key_secret] = f"{path}.pager.routingKeySecret"
        if receiver.email is not None:
            keys[receiver.email.password_secret] = f"{path}.email.passwordSecret"
        if receiver.webhook is not None:
            keys[receiver.webhook.url_secret] = f"{path}.webhook.urlSecret"
    return keys


class Model(BaseModel):
    # strict: a value must already have its field's type - `max: "3"` or `database: "yes"` is refused, naming the
    # field, where pydantic's lax mode would quietly read 3 and True. The engine keeps YAML's types inside an object
    # value (pulumi/pulumi sdk/go/common/resource/config/object.go `MarshalString`: an object is passed as JSON),
    # `pulumi config set --path` stores integers and true/false typed (value.go `coerceObject`; a decimal as text,
    # which `Number` fields read), the top-level values the model reads as scalars are strings, and the offline
    # reader takes booleans and base-60 numbers as go-yaml does (infra/stack_config.py). Offline stays the stricter
    # where the two still differ (an integer written `3.0` is refused here, passed as 3 by the engine).
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True, validate_default=True, strict=True
    )


class ComputeResources(Model):
    cpu: CpuQuantity = Field(description="CPU, Kubernetes quantity (e.g. `250m`).")
    memory: MemoryQuantity = Field(description="Memory, Kubernetes quantity (e.g. `256Mi`).")


class Resources(Model):
    """Complete requests and limits. As a default (`defaults.*.resources`) a partial block is accepted: what it
    leaves out keeps the built-in default of that field (`merge_with_default`)."""

    requests: ComputeResources = Field(description="What the scheduler reserves per pod.")
    limits: ComputeResources = Field(description="The most a pod may use.")

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        for dim in ("cpu", "memory"):
            req, lim = getattr(self.requests, dim), getattr(self.limits, dim)
            if parse_quantity(lim) < parse_quantity(req):
                raise ValueError(f"limits.{dim} ({lim}) must be >= requests.{dim} ({req})")
        return self


def merge_with_default(value: Any, info: ValidationInfo, cls: type[BaseModel]) -> Any:
    """A partial mapping given for a field, completed from the field's built-in default (merge-patch rules)."""
    if not isinstance(value, dict):
        return value
    default = cls.model_fields[info.field_name].get_default(call_default_factory=True)
    return merge_patch(default.model_dump(by_alias=True), value)


class PartialComputeResources(Model):
    cpu: CpuQuantity | None = Field(
        default=None, description="CPU, Kubernetes quantity (e.g. `250m`). Default: from defaults.workload.resources."
    )
    memory: MemoryQuantity | None = Field(
        default=None,
        description="Memory, Kubernetes quantity (e.g. `256Mi`). Default: from defaults.workload.resources.",
    )


class PartialResources(Model):
    requests: PartialComputeResources = Field(
        default_factory=PartialComputeResources, description="What the scheduler reserves per pod."
    )
    limits: PartialComputeResources = Field(
        default_factory=PartialComputeResources, description="The most a pod may use."
    )

    def over(self, base: Resources) -> dict:
        """The values given here laid over `base` (validate the result as `Resources`)."""
        given = self.model_dump(by_alias=True, exclude_none=True)
        return merge_patch(base.model_dump(by_alias=True), given)


class Replicas(Model):
    min: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REPLICAS,
        description=f"Fewest pods, 1..{MAX_REPLICAS}. Default: defaults.workload.minReplicas, or "
        "criticalMinReplicas for a critical service.",
    )
    max: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REPLICAS,
        description=f"Most pods, 1..{MAX_REPLICAS}. Default: defaults.workload.maxReplicas.",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Replicas:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class ImageBuild(Model):
    context: str = Field(description="Build context, relative to the project root. Required.")
    dockerfile: str = Field(default="Dockerfile", description="Dockerfile inside the context. Default: Dockerfile.")
    repository: str = Field(description="Repository the built image is pushed to (no tag). Required.")
    target: str | None = Field(default=None, description="Multi-stage build target. Default: the last stage.")


class ProbePaths(Model):
    startup_path: str = Field(default="/livez", description="HTTP path of the startup probe. Default: /livez.")
    liveness_path: str = Field(default="/livez", description="HTTP path of the liveness probe. Default: /livez.")
    readiness_path: str = Field(default="/readyz", description="HTTP path of the readiness probe. Default: /readyz.")


class Autoscaling(Model):
    cpu_utilization: int | None = Field(
        default=None, ge=10, le=100, description="HPA CPU target, % of requests. Default: defaults.workload."
    )
    memory_utilization: int | None = Field(
        default=None, ge=10, le=100, description="HPA memory target, % of requests. Default: defaults.workload."
    )
    messages_per_replica: int | None = Field(
        default=None, ge=1, description="Queue consumers: ready messages per replica. Default: defaults.workload."
    )


def _ipv4_network(cidr: str) -> str:
    """An IPv4 network as a NetworkPolicy's `ipBlock.cidr` must be unambiguously: octets up to 255 without leading
    zeros, a prefix up to 32, no host bits set (kubernetes/enhancements keps/sig-network/4858-ip-cidr-validation:
    `192.168.1.5/24` may be read as the /24 or as the one address, and leading zeros as octal; the apiserver warns
    about both and its stricter validation refuses them)."""
    try:
        ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as error:
        hint = ""
        if "has host bits set" in str(error):
            address = cidr.split("/")[0]
            hint = f"; the network is {ipaddress.IPv4Network(cidr, strict=False)}, the one address {address}/32"
        raise ValueError(f"{cidr!r} is not an IPv4 network ({error}{hint})") from None
    return cidr


Cidr = Annotated[str, StringConstraints(pattern=r"^(\d{1,3}\.){3}\d{1,3}/\d{1,2}$"), AfterValidator(_ipv4_network)]
AnyPort = Annotated[int, Field(ge=1, le=65535)]


class ExternalEgress(Model):
    cidrs: list[Cidr] = Field(min_length=1, description="Destination networks (IPv4 CIDR). Required.")
    ports: list[AnyPort] = Field(min_length=1, description="Destination TCP ports. Required.")


class Expose(Model):
    path: Annotated[str, StringConstraints(pattern=r"^/[-a-z0-9/]*$")] = Field(
        description="Path prefix on the gateway's hostname routed to this service. Required."
    )
    requests_per_second: int = Field(
        default=100,
        ge=1,
        le=MAX_REQUESTS_PER_SECOND,
        description=f"Rate limit per gateway replica, requests per second, 1..{MAX_REQUESTS_PER_SECOND}. Default: 100.",
    )
    timeout_seconds: int = Field(default=10, ge=1, le=300, description="Request timeout. Default: 10.")
    max_connections: int = Field(
        default=1024, ge=1, description="Circuit breaker: connections to the service. Default: 1024."
    )
    max_pending_requests: int = Field(
        default=256, ge=1, description="Circuit breaker: requests waiting for a connection. Default: 256."
    )
    max_parallel_requests: int = Field(
        default=1024, ge=1, description="Circuit breaker: requests in flight. Default: 1024."
    )


class ServiceSlo(Model):
    availability: Number | None = Field(
        default=None,
        gt=90,
        lt=100,
        description="Target % of non-5xx responses over 30 days. Default: "
        "defaults.slo.availability (criticalAvailability for a critical service).",
    )
    latency_seconds: Number | None = Field(
        default=None, gt=0, description="Latency threshold; must be a histogram bucket bound. Default: defaults.slo."
    )
    latency_target: Number | None = Field(
        default=None,
        gt=50,
        lt=100,
        description="Target % of requests faster than latencySeconds. Default: defaults.slo.latencyTarget.",
    )
    # Queue SLOs: for each queue the service consumes (only services that serve no HTTP get no HTTP SLOs).
    processing_seconds: Number | None = Field(
        default=None,
        gt=0,
        description="Queue SLO: the ready messages of each queue it consumes should drain within this many "
        "seconds at its current processing rate. Default: defaults.slo.processingSeconds.",
    )
    processing_target: Number | None = Field(
        default=None,
        gt=50,
        lt=100,
        description="Queue SLO: target % of the time its queues drain within processingSeconds. Default: "
        "defaults.slo.processingTarget.",
    )
    dead_letter_target: Number | None = Field(
        default=None,
        gt=90,
        lt=100,
        description="Queue SLO: target % of consumed messages processed without being dead-lettered, over 30 "
        "days. Default: defaults.slo.deadLetterTarget.",
    )


class Service(Model):
    image: str | None = Field(
        default=None,
        description="Image reference. Exactly one of image or build. With guardrails.requireImageDigest it "
        "must be pinned by `@sha256:` digest.",
    )
    build: ImageBuild | None = Field(
        default=None, description="Build the image from source with pulumi-docker and deploy its digest."
    )
    port: Port = Field(default=8080, description="Port the service listens on for traffic. Default: 8080.")
    metrics_port: Port = Field(default=9090, description="Port serving Prometheus metrics. Default: 9090.")
    replicas: Replicas = Field(default_factory=Replicas, description="Replica bounds. Default: from defaults.")
    resources: PartialResources = Field(
        default_factory=PartialResources,
        description="Requests and limits per pod; each value not given comes from defaults.workload.resources "
        "(e.g. only `requests.cpu`). Default: defaults.workload.resources.",
    )
    critical: bool = Field(
        default=False,
        description="On the payment path: higher priority class and criticalMinReplicas. Default: false.",
    )
    database: bool = Field(default=False, description="Uses its subsystem's PostgreSQL cluster. Default: false.")
    expose: Expose | None = Field(
        default=None, description="Publish through the gateway (HTTPS, rate-limited). Default: not exposed."
    )
    egress: dict[Name, ExternalEgress] = Field(
        default_factory=dict,
        description="External endpoints (banks, acquirers) this service may open connections to, keyed by "
        "name. Nothing else outside the cluster is reachable. Default: none.",
    )
    metrics_path: str = Field(default="/metrics", description="Path of the Prometheus endpoint. Default: /metrics.")
    slo: ServiceSlo = Field(default_factory=ServiceSlo, description="Objectives. Default: from defaults.")
    probes: ProbePaths = Field(default_factory=ProbePaths, description="Health-check paths on `port`.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="Autoscaler targets.")
    mount_service_account_token: bool = Field(
        default=False,
        description="Mount a Kubernetes API token in the pods (only for services that call the Kubernetes API). "
        "Default: false.",
    )
    calls: list[Reference] = Field(
        default_factory=list,
        description="Services this one calls (`name` or `subsystem/name`). Default: none.",
    )
    publishes: list[Reference] = Field(
        default_factory=list, description="Queues this service publishes to (`name` or `subsystem/name`)."
    )
    consumes: list[Reference] = Field(
        default_factory=list, description="Queues this service consumes (`name` or `subsystem/name`)."
    )

    @model_validator(mode="after")
    def _one_image_source(self) -> Service:
        if (self.image is None) == (self.build is None):
            given = "both" if self.image is not None else "neither"
            raise ValueError(f"needs exactly one of `image` or `build` (got {given})")
        for field in ("calls", "publishes", "consumes"):
            refs = getattr(self, field)
            dupes = sorted({r for r in refs if refs.count(r) > 1})
            if dupes:
                raise ValueError(f"{field} lists {', '.join(dupes)} more than once")
        return self


def odd_quorum(replicas: int | None) -> int | None:
    # Quorum queues need a majority: an even node count adds cost without adding fault tolerance.
    if replicas is not None and replicas > 1 and replicas % 2 == 0:
        raise ValueError(f"must be 1 or odd, got {replicas} (quorum queues need a majority)")
    return replicas


class Storage(Model):
    size: StorageSize | None = Field(default=None, description=f"Volume size. {STORAGE_RULE} Default: from defaults.")
    storage_class: str | None = Field(
        default=None,
        description="StorageClass. Default: defaults.*.storageClass (the cluster's default class).",
    )


class Recovery(Model):
    from_server_name: Name = Field(
        description="Server name (in the object store) whose base backup and WAL the new cluster restores. Required."
    )
    target_time: str | None = Field(
        default=None,
        pattern=r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:?\d{2}|Z)$",
        description="Point in time to recover to (RFC 3339 with offset). Default: the end of the archived WAL.",
    )


class Postgres(Model):
    instances: int | None = Field(
        default=None,
        ge=1,
        le=9,
        description="PostgreSQL instances (1 primary + replicas). Default: defaults.postgres.instances.",
    )
    storage: Storage = Field(default_factory=Storage, description="Data volume. Default: from defaults.")
    database: Name | None = Field(default=None, description="Application database name. Default: `app`.")
    server_name: Name | None = Field(
        default=None,
        description="Name this cluster archives under in the object store. Default: the cluster name "
        "(`<subsystem>-db`). Give a recovered cluster a new one so it never writes over the history it came from.",
    )
    recovery: Recovery | None = Field(
        default=None,
        description="Bootstrap by point-in-time recovery from the object store instead of an empty database. "
        "Read only when the cluster is first created. Default: none.",
    )


class Queue(Model):
    delivery_limit: int = Field(
        default=5, ge=1, le=100, description="Deliveries before a message is dead-lettered. Default: 5."
    )
    unconsumed: Annotated[str, StringConstraints(min_length=10)] | None = Field(
        default=None,
        description="Why no service consumes this queue (a sentence, e.g. `held for the ledger migration, "
        "consumer lands in 2.4`). A queue that services publish to and none consumes is refused without it: "
        "its messages pile up and its QueueConsumersAbsent alert would page; with it that alert leaves the "
        "queue out. Refused on a queue that has a consumer. Default: none.",
    )


class QueueCluster(Model):
    replicas: int | None = Field(
        default=None, ge=1, le=9, description="RabbitMQ nodes. Default: defaults.queue.replicas."
    )
    storage: Storage = Field(default_factory=Storage, description="Per-node volume. Default: from defaults.")
    queues: dict[Name, Queue] = Field(
        default_factory=dict, description="Queues in this cluster, keyed by name. Default: none."
    )

    _odd_quorum = field_validator("replicas")(lambda v: odd_quorum(v))


class Subsystem(Model):
    services: dict[Name, Service] = Field(default_factory=dict, description="Services, keyed by name.")
    postgres: Postgres | None = Field(default=None, description="This subsystem's PostgreSQL cluster. Default: none.")
    queue: QueueCluster | None = Field(default=None, description="This subsystem's RabbitMQ cluster. Default: none.")


class WorkloadDefaults(Model):
    min_replicas: int = Field(
        default=2,
        ge=1,
        le=MAX_REPLICAS,
        description=f"Default fewest pods per service that is not critical (those follow criticalMinReplicas), "
        f"1..{MAX_REPLICAS}. Default: 2.",
    )
    critical_min_replicas: int = Field(
        default=3,
        ge=1,
        le=MAX_REPLICAS,
        description=f"Fewest pods for a critical (payment-path) service, 1..{MAX_REPLICAS}. Default: 3.",
    )
    max_replicas: int = Field(
        default=6, ge=1, le=MAX_REPLICAS, description=f"Default most pods per service, 1..{MAX_REPLICAS}. Default: 6."
    )
    resources: Resources = Field(
        default=Resources(
            requests=ComputeResources(cpu="100m", memory="128Mi"),
            limits=ComputeResources(cpu="500m", memory="256Mi"),
        ),
        description="Requests and limits of a service's pod; a partial block keeps the rest of the default. "
        "Default: requests 100m/128Mi, limits 500m/256Mi.",
    )
    _resources = field_validator("resources", mode="before")(
        lambda v, info: merge_with_default(v, info, WorkloadDefaults)
    )
    cpu_utilization: int = Field(default=70, ge=10, le=100, description="HPA CPU target (%). Default: 70.")
    memory_utilization: int = Field(default=80, ge=10, le=100, description="HPA memory target (%). Default: 80.")
    messages_per_replica: int = Field(
        default=20, ge=1, description="KEDA target of ready messages per consumer replica. Default: 20."
    )
    pre_stop_sleep_seconds: int = Field(
        default=5, ge=0, le=60, description="Pause before SIGTERM so load balancers stop routing. Default: 5."
    )
    drain_seconds: int = Field(
        default=25, ge=1, le=600, description="Time after SIGTERM to finish in-flight work. Default: 25."
    )
    quota_headroom_percent: int = Field(
        default=25,
        ge=0,
        le=200,
        description="Namespace quota above what the workloads need at max scale, for rollouts. Default: 25.",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> WorkloadDefaults:
        for field in ("min_replicas", "critical_min_replicas"):
            if getattr(self, field) > self.max_replicas:
                raise ValueError(
                    f"{to_camel(field)} ({getattr(self, field)}) must be <= maxReplicas ({self.max_replicas})"
                )
        return self


class PostgresDefaults(Model):
    instances: int = Field(default=3, ge=1, le=9, description="Instances per cluster. Default: 3.")
    storage_size: StorageSize = Field(default="20Gi", description=f"Data volume size. {STORAGE_RULE} Default: 20Gi.")
    storage_class: str | None = Field(default=None, description="StorageClass. Default: the cluster default.")
    synchronous: bool = Field(
        default=True,
        description="Synchronous replication with zero data loss on failover (one standby must confirm each "
        "commit; dataDurability required) whenever a cluster has more than one instance. Default: true.",
    )
    image: str = Field(
        default="ghcr.io/cloudnative-pg/postgresql:17.6-standard-bookworm",
        description="PostgreSQL operand image. Default: ghcr.io/cloudnative-pg/postgresql:17.6-standard-bookworm.",
    )
    resources: Resources = Field(
        default=Resources(
            requests=ComputeResources(cpu="500m", memory="1Gi"),
            limits=ComputeResources(cpu="2", memory="1Gi"),
        ),
        description="Per instance; a partial block keeps the rest of the default. Default: requests 500m/1Gi, "
        "limits 2/1Gi.",
    )
    _resources = field_validator("resources", mode="before")(
        lambda v, info: merge_with_default(v, info, PostgresDefaults)
    )


class QueueDefaults(Model):
    replicas: int = Field(default=3, ge=1, le=9, description="Nodes per cluster (1 or odd). Default: 3.")
    _odd_quorum = field_validator("replicas")(lambda v: odd_quorum(v))
    storage_size: StorageSize = Field(
        default="10Gi", description=f"Per-node volume size. {STORAGE_RULE} Default: 10Gi."
    )
    storage_class: str | None = Field(default=None, description="StorageClass. Default: the cluster default.")
    image: str = Field(default="rabbitmq:4.1.4-management", description="Default: rabbitmq:4.1.4-management.")
    resources: Resources = Field(
        default=Resources(
            requests=ComputeResources(cpu="500m", memory="2Gi"),
            limits=ComputeResources(cpu="2", memory="2Gi"),
        ),
        description="Per node; a partial block keeps the rest of the default. Default: requests 500m/2Gi, "
        "limits 2/2Gi.",
    )
    _resources = field_validator("resources", mode="before")(lambda v, info: merge_with_default(v, info, QueueDefaults))


class SloDefaults(Model):
    availability: Number = Field(default=99.9, gt=90, lt=100, description="Availability target %. Default: 99.9.")
    critical_availability: Number = Field(
        default=99.95, gt=90, lt=100, description="Availability target % of critical services. Default: 99.95."
    )
    latency_seconds: Number = Field(default=0.5, gt=0, description="Latency threshold (s). Default: 0.5.")
    latency_target: Number = Field(default=99.0, gt=50, lt=100, description="Latency target %. Default: 99.0.")
    processing_seconds: Number = Field(
        default=60, gt=0, description="Queue SLO: backlog drain-time objective (s). Default: 60."
    )
    processing_target: Number = Field(
        default=99.0, gt=50, lt=100, description="Queue SLO: % of the time within processingSeconds. Default: 99.0."
    )
    dead_letter_target: Number = Field(
        default=99.9, gt=90, lt=100, description="Queue SLO: % of messages not dead-lettered. Default: 99.9."
    )


class Defaults(Model):
    workload: WorkloadDefaults = Field(default_factory=WorkloadDefaults, description="Service defaults.")
    postgres: PostgresDefaults = Field(default_factory=PostgresDefaults, description="Database defaults.")
    queue: QueueDefaults = Field(default_factory=QueueDefaults, description="Queue cluster defaults.")
    slo: SloDefaults = Field(default_factory=SloDefaults, description="Service level objectives.")


class ObjectStore(Model):
    destination_path: Annotated[str, StringConstraints(pattern=r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/.*)?$")] = (
        Field(description="S3 URL backups and WAL are written to (`s3://bucket/prefix`). Required.")
    )
    endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO, Ceph). Default: AWS S3.")
    service_account_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations for the database pods' ServiceAccount, e.g. `eks.amazonaws.com/role-arn` for "
        "credentials `iamRole`. Default: none.",
    )
    credentials: Literal["iamRole", "secret"] = Field(
        default="iamRole",
        description="`iamRole`: the pods' cloud identity (no static keys). `secret`: the Pulumi secrets "
        "`backupAccessKeyId` and `backupSecretAccessKey` (`pulumi config set --secret`). Default: iamRole.",
    )


class Backup(Model):
    object_store: ObjectStore = Field(description="Where base backups and WAL go. Required.")
    retention: BackupRetention = Field(
        default="30d",
        description="How long recovery points are kept (CloudNativePG retention: days, weeks or months), at most "
        "3650 days. Default: 30d.",
    )
    schedule: str = Field(
        default="0 0 2 * * *",
        pattern=r"^(\S+ ){5}\S+$",
        description="Base backup schedule, cron with seconds. Default: `0 0 2 * * *` (daily 02:00).",
    )


S3Path = Annotated[str, StringConstraints(pattern=r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/.*)?$")]


class Drill(Model):
    """A restore drill: this stack restores every database of the topology from another stack's backups into a
    scratch namespace, verifies each with SQL, and is then destroyed (README "Restore drill"). A drill stack
    runs nothing else: no operators, no services, no archiving."""

    namespace: Name = Field(
        default="restore-drill",
        description="The scratch namespace the drill restores into (and that its identity may write). "
        "Default: restore-drill.",
    )
    source_stack: Name = Field(
        description="The stack whose backups are drilled (its `Pulumi.<stack>.yaml`, read from the same checkout): "
        "the restored databases recover the server names that stack archives under (with `dr`, per site and "
        "generation), and `source.destinationPath` must equal its `backup.objectStore.destinationPath`. Required."
    )
    source: ObjectStore = Field(
        description="The object store holding the backups to restore: the source stack's `backup.objectStore` "
        "path, read through a read-only identity (`serviceAccountAnnotations`, e.g. an IRSA role allowed only "
        "s3:GetObject/s3:ListBucket there). Only `iamRole` credentials. Required."
    )
    results_path: S3Path = Field(
        description="Where each drill's result is kept after teardown (`s3://bucket/drill-results/<stack>`), "
        "written by the drill workflow, never by a database pod. Must not overlap `source.destinationPath`. "
        "Required."
    )
    max_age_days: int = Field(
        default=8,
        ge=1,
        le=31,
        description="The freshness check fails when the last successful drill is older than this many days "
        "(the weekly schedule plus a day of slack). Default: 8.",
    )
    rto_minutes: int = Field(
        default=60,
        ge=1,
        le=1440,
        description="Restore time objective for databases whose subsystem has none in the source stack's "
        "`dr.objectives` (those are judged against their own `rtoMinutes`): a drill whose restore of such a "
        "database took longer fails. Default: 60.",
    )
    point_queries: dict[Name, Annotated[str, StringConstraints(min_length=8)]] = Field(
        default_factory=dict,
        description="Per subsystem, SQL returning one timestamptz: the newest point the restored data holds "
        "(e.g. `SELECT max(created_at) FROM ledger_entries`). CloudNativePG records no recovered point, and "
        "`pg_last_xact_replay_timestamp()` is NULL once the restored instance restarts after recovery "
        '(README "Restore drill"). Default: none (the replay timestamp, often NULL).',
    )
    verifier_resources: Resources = Field(
        default=Resources(
            requests=ComputeResources(cpu="50m", memory="64Mi"), limits=ComputeResources(cpu="200m", memory="128Mi")
        ),
        description="Requests and limits of each verifying Job's pod. Default: requests 50m/64Mi, limits 200m/128Mi.",
    )

    @model_validator(mode="after")
    def _read_only_and_apart(self) -> Drill:
        if self.source.credentials != "iamRole":
            raise ValueError(
                "source.credentials must be `iamRole`: the drill reads the backups through a read-only role, "
                "never with the archiving keys"
            )
        src, res = (p.rstrip("/") + "/" for p in (self.source.destination_path, self.results_path))
        if src.startswith(res) or res.startswith(src):
            raise ValueError(
                f"resultsPath ({self.results_path!r}) overlaps source.destinationPath "
                f"({self.source.destination_path!r}): the drill would write where the backups are"
            )
        return self


class Guardrails(Model):
    require_image_digest: bool = Field(
        default=True, description="Refuse service images not pinned by `@sha256:` digest. Default: true."
    )
    protect_stateful_resources: bool = Field(
        default=True,
        description="Protect database and queue clusters from deletion and replacement. Default: true.",
    )
    require_backups: bool = Field(
        default=True,
        description="Refuse a stack with PostgreSQL clusters but no `backup` configured. Default: true.",
    )
    require_mesh: bool = Field(
        default=True,
        description="Refuse `mesh.enabled: false`: service-to-service traffic unencrypted and authorised by "
        "address alone. Default: true.",
    )


class HelmChart(Model):
    repository: str = Field(description="Helm repository URL.")
    chart: str = Field(description="Chart name.")
    version: Annotated[str, StringConstraints(pattern=r"^v?[0-9]+\.[0-9]+\.[0-9]+$")] = Field(
        description="Exact chart version (no ranges: what is tested is what deploys)."
    )
    namespace: Name = Field(description="Namespace the operator runs in.")


def _chart(repository: str, chart: str, version: str, namespace: str) -> HelmChart:
    return HelmChart(repository=repository, chart=chart, version=version, namespace=namespace)


class ManifestRelease(Model):
    repository: Annotated[str, StringConstraints(pattern=r"^https://github\.com/[-\w.]+/[-\w.]+$")] = Field(
        description="GitHub repository that publishes the manifest with its releases."
    )
    tag: Annotated[str, StringConstraints(pattern=r"^v[0-9]+\.[0-9]+\.[0-9]+$")] = Field(
        description="Exact release tag (no ranges: what is tested is what deploys)."
    )
    asset: Annotated[str, StringConstraints(pattern=r"^[-\w.]+\.ya?ml$")] = Field(
        description="Manifest file attached to the release; installed from "
        "`<repository>/releases/download/<tag>/<asset>`."
    )
    namespace: Name = Field(description="Namespace the operator runs in; the upstream manifest fixes it.")


def _manifest(repository: str, tag: str, asset: str, namespace: str) -> ManifestRelease:
    return ManifestRelease(repository=repository, tag=tag, asset=asset, namespace=namespace)


class Operators(Model):
    cloudnative_pg: HelmChart = Field(
        default=_chart("https://cloudnative-pg.github.io/charts", "cloudnative-pg", "0.29.0", "cnpg-system"),
        description="CloudNativePG operator. Default: chart cloudnative-pg 0.29.0 (app 1.30.0).",
    )
    # The RabbitMQ team publishes no chart; Bitnami's withdrew its images (bitnami/charts#35164,
    # rabbitmq-website#2330). Both operators install from their release manifests and need cert-manager.
    rabbitmq_cluster_operator: ManifestRelease = Field(
        default=_manifest(
            "https://github.com/rabbitmq/cluster-operator", "v2.22.3", "cluster-operator.yml", "rabbitmq-system"
        ),
        description="RabbitMQ cluster operator (RabbitmqCluster). Default: release v2.22.3, cluster-operator.yml, "
        "namespace rabbitmq-system.",
    )
    rabbitmq_topology_operator: ManifestRelease = Field(
        default=_manifest(
            "https://github.com/rabbitmq/messaging-topology-operator",
            "v1.20.1",
            "messaging-topology-operator-with-certmanager.yaml",
            "rabbitmq-system",
        ),
        description="RabbitMQ messaging-topology operator (Queue, User, Permission, ...). Default: release "
        "v1.20.1, messaging-topology-operator-with-certmanager.yaml, namespace rabbitmq-system.",
    )
    cert_manager: HelmChart = Field(
        default=_chart("https://charts.jetstack.io", "cert-manager", "v1.21.1", "cert-manager"),
        description="cert-manager, issuer of internal TLS certificates and the gateway's public certificate. "
        "Default: chart cert-manager v1.21.1 (app v1.21.1).",
    )
    barman_cloud: HelmChart = Field(
        default=_chart("https://cloudnative-pg.github.io/charts", "plugin-barman-cloud", "0.7.0", "cnpg-system"),
        description="Barman Cloud plugin for CloudNativePG backups; must share the CloudNativePG operator's "
        "namespace. Default: chart plugin-barman-cloud 0.7.0 (app v0.14.0: the chart carries v0.13.0, the "
        "platform overrides the images; v0.14.0 fixes replica-cluster WAL restore).",
    )
    envoy_gateway: HelmChart = Field(
        default=_chart("oci://docker.io/envoyproxy", "gateway-helm", "v1.9.0", "envoy-gateway-system"),
        description="Envoy Gateway (Gateway API implementation); its CRDs come from `gatewayCrds`. Default: "
        "chart gateway-helm v1.9.0 (app v1.9.0).",
    )
    gateway_crds: HelmChart = Field(
        default=_chart("oci://docker.io/envoyproxy", "gateway-crds-helm", "v1.9.0", "envoy-gateway-system"),
        description="Gateway API (standard channel) and Envoy Gateway CRDs, applied object by object so a chart "
        "bump upgrades them. Keep its version equal to envoyGateway's. Default: chart gateway-crds-helm v1.9.0 "
        "(app v1.9.0).",
    )
    monitoring: HelmChart = Field(
        default=_chart(
            "https://prometheus-community.github.io/helm-charts", "kube-prometheus-stack", "88.5.3", "monitoring"
        ),
        description="Prometheus, Alertmanager, Grafana. Default: chart kube-prometheus-stack 88.5.3 "
        "(app v0.93.1, the prometheus-operator).",
    )
    keda: HelmChart = Field(
        default=_chart("https://kedacore.github.io/charts", "keda", "2.20.2", "keda"),
        description="KEDA, event-driven autoscaling for queue consumers. Default: chart keda 2.20.2 (app 2.20.2).",
    )


class PriorityClasses(Model):
    critical: int = Field(
        default=100000, ge=1, le=1000000000, description="Priority of critical (payment-path) pods. Default: 100000."
    )
    standard: int = Field(default=10000, ge=1, le=1000000000, description="Priority of other pods. Default: 10000.")

    @model_validator(mode="after")
    def _critical_above_standard(self) -> PriorityClasses:
        if self.critical <= self.standard:
            raise ValueError(f"critical ({self.critical}) must be > standard ({self.standard})")
        return self


class Infrastructure(Model):
    operators: Operators = Field(
        default_factory=Operators, description="Operators, at pinned chart or release versions."
    )
    priority_classes: PriorityClasses = Field(default_factory=PriorityClasses, description="Pod priorities.")


class Network(Model):
    api_server_cidrs: list[Cidr] = Field(
        min_length=1,
        description="Where the Kubernetes API server's endpoints are (operators, database and queue pods talk "
        "to it; webhooks are called from it). Cluster-specific. Required.",
    )
    api_server_ports: list[AnyPort] = Field(
        default_factory=lambda: [443, 6443], description="API server ports. Default: 443, 6443."
    )
    node_cidrs: list[Cidr] = Field(
        min_length=1,
        description="Node addresses: node-exporter runs on every node's own network (hostNetwork), and Prometheus "
        "scrapes it and the kubelets there. Cluster-specific. Required.",
    )
    object_store_cidrs: list[Cidr] = Field(
        default_factory=lambda: ["0.0.0.0/0"],
        description="Where the backup object store is (HTTPS egress from database pods). Default: anywhere; "
        "narrow it to the S3 endpoint's ranges or a VPC endpoint.",
    )
    dns_namespace: Name = Field(default="kube-system", description="Namespace of cluster DNS. Default: kube-system.")
    dns_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"k8s-app": "kube-dns"},
        description="Labels of the cluster DNS pods. Default: k8s-app=kube-dns.",
    )


class Gateway(Model):
    hostname: str | None = Field(
        default=None,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}$",
        description="Public hostname of the HTTPS listener. Required when a service is exposed.",
    )
    acme_email: str | None = Field(
        default=None,
        description="Account e-mail for a publicly trusted certificate from Let's Encrypt (HTTP-01). Default: "
        "none, the certificate comes from the internal CA. Needs publicAddresses.",
    )
    public_addresses: list[Cidr] = Field(
        default_factory=list,
        description="Where the public hostname resolves to (the load balancer in front of the gateway; outside "
        "the cluster, so config). cert-manager's HTTP-01 self-check fetches `http://<hostname>/` there on port "
        "80 before asking Let's Encrypt; its egress allows exactly that. Required with acmeEmail. Default: none.",
    )
    namespace: Name = Field(default="edge", description="Namespace of the Gateway. Default: edge.")

    @model_validator(mode="after")
    def _acme_self_check_target(self) -> Gateway:
        if self.acme_email is not None and not self.public_addresses:
            raise ValueError(
                "acmeEmail needs publicAddresses: cert-manager checks the HTTP-01 challenge at the addresses the "
                "hostname resolves to before Let's Encrypt does"
            )
        return self


# Istio's `global.platform` values (istio/istio 1.30.3 manifests/charts/*/files/profile-platform-*.yaml): any other
# value makes the charts `fail` ("unknown platform").
MeshPlatform = Literal["gke", "openshift", "k3s", "k3d", "microk8s", "minikube"]


class Mesh(Model):
    """Istio in ambient mode (no sidecars): mTLS and identity-based authorisation between services (README:
    Encryption in transit)."""

    enabled: bool = Field(
        default=True,
        description="Enrol every application namespace in the ambient mesh, mTLS STRICT. `false` is refused "
        "while guardrails.requireMesh is true. Default: true.",
    )
    repository: str = Field(
        default="https://istio-release.storage.googleapis.com/charts",
        description="Helm repository of Istio's charts (base, istiod, cni, ztunnel). Default: "
        "https://istio-release.storage.googleapis.com/charts.",
    )
    version: Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")] = Field(
        default="1.30.3", description="Exact version of all four charts (and their images). Default: 1.30.3."
    )
    namespace: Name = Field(
        default="istio-system",
        description="Namespace of the control plane (istiod, Pod Security restricted). Default: istio-system.",
    )
    node_namespace: Name = Field(
        default="istio-node",
        description="Namespace of the node agents istio-cni and ztunnel, the only mesh pods that need Pod Security "
        "`privileged` (a listed exception). Default: istio-node.",
    )
    hub: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][-a-z0-9.:/]*[a-z0-9]$")] = Field(
        default="registry.istio.io/release",
        description="Image registry of istiod, istio-cni and ztunnel (a mirror, when clusters pull from one). "
        "Default: registry.istio.io/release.",
    )
    platform: MeshPlatform | None = Field(
        default=None,
        description="Istio's `global.platform` for clusters whose CNI paths differ (gke, openshift, k3s, k3d, "
        "microk8s, minikube). Default: none (standard paths: EKS, kind, kubeadm).",
    )
    istiod_replicas: int = Field(default=2, ge=1, le=5, description="istiod replicas. Default: 2.")
    istiod_resources: Resources = Field(
        default_factory=lambda: Resources.model_validate(
            {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
        ),
        description="istiod's container. Default: requests 200m/256Mi, limits 1/1Gi.",
    )
    ztunnel_resources: Resources = Field(
        default_factory=lambda: Resources.model_validate(
            {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
        ),
        description="ztunnel's container, on every node. Default: requests 100m/128Mi, limits 1/512Mi.",
    )
    cni_resources: Resources = Field(
        default_factory=lambda: Resources.model_validate(
            {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}
        ),
        description="istio-cni's container, on every node. Default: requests 50m/64Mi, limits 500m/256Mi.",
    )


class Monitoring(Model):
    retention: MonitoringRetention = Field(
        default="15d",
        description="How long Prometheus keeps samples (hours, days or weeks), at most 365 days. Default: 15d.",
    )
    storage_size: StorageSize = Field(default="50Gi", description=f"Prometheus volume. {STORAGE_RULE} Default: 50Gi.")
    alertmanager_storage_size: StorageSize = Field(
        default="2Gi", description=f"Alertmanager volume. {STORAGE_RULE} Default: 2Gi."
    )
    storage_class: str | None = Field(default=None, description="StorageClass. Default: the cluster default.")
    prometheus_replicas: int = Field(default=2, ge=1, le=5, description="Prometheus replicas. Default: 2.")
    alertmanager_replicas: int = Field(
        default=2,
        ge=1,
        le=5,
        description="Alertmanager replicas (they gossip, so one surviving is enough). Default: 2.",
    )
    backup_max_age_hours: int = Field(
        default=26, ge=1, description="Alert when the newest base backup is older than this. Default: 26."
    )
    replication_lag_seconds: int = Field(
        default=30, ge=1, description="Alert when a standby lags more than this. Default: 30."
    )
    queue_backlog_messages: int = Field(
        default=1000, ge=1, description="Alert when ready messages exceed this and keep growing. Default: 1000."
    )
    certificate_expiry_days: int = Field(
        default=14, ge=1, description="Alert when a certificate expires within this many days. Default: 14."
    )


class PagerReceiver(Model):
    routing_key_secret: Annotated[str, StringConstraints(pattern=ALERT_SECRET_PATTERN)] = Field(
        description="Name of the Pulumi secret config key holding the PagerDuty routing key. Required."
    )


class EmailReceiver(Model):
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", description="Recipient address. Required.")
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", description="From address. Required.")
    smarthost: str = Field(pattern=r"^[a-z0-9.-]+:[0-9]+$", description="SMTP host:port (TLS required). Required.")
    username: str = Field(description="SMTP user. Required.")
    password_secret: Annotated[str, StringConstraints(pattern=ALERT_SECRET_PATTERN)] = Field(
        description="Name of the Pulumi secret config key holding the SMTP password. Required."
    )


class WebhookReceiver(Model):
    url_secret: Annotated[str, StringConstraints(pattern=ALERT_SECRET_PATTERN)] = Field(
        description="Name of the Pulumi secret config key holding the webhook URL (it carries a token). Required."
    )


class Receiver(Model):
    pager: PagerReceiver | None = Field(default=None, description="PagerDuty (Events API v2).")
    email: EmailReceiver | None = Field(default=None, description="E-mail.")
    webhook: WebhookReceiver | None = Field(default=None, description="Webhook (chat, ticketing).")

    @model_validator(mode="after")
    def _one_kind(self) -> Receiver:
        kinds = [k for k in ("pager", "email", "webhook") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"needs exactly one of pager, email, webhook (got {', '.join(kinds) or 'none'})")
        return self


class AlertRoute(Model):
    page: Name = Field(description="Receiver of `severity=page` alerts (wake someone up). Required.")
    ticket: Name = Field(description="Receiver of `severity=ticket` alerts (next working day). Required.")


class Alerting(Model):
    receivers: dict[Name, Receiver] = Field(description="Receivers, keyed by name. Required.")
    routes: dict[Name, AlertRoute] = Field(
        description="Per subsystem (and `platform` for the shared infrastructure): who gets pages and tickets. "
        "Every subsystem and `platform` must be routed. Required."
    )
    egress: dict[Name, ExternalEgress] = Field(
        default_factory=dict,
        description="Where Alertmanager may send notifications (PagerDuty, SMTP, chat), keyed by name. "
        "Default: nowhere.",
    )


class Budget(Model):
    cpu: CpuQuantity = Field(description="Most CPU the environment may request at minimum scale. Required.")
    memory: MemoryQuantity = Field(description="Most memory it may request at minimum scale. Required.")


class Cluster(Model):
    """Which cluster the stack deploys to. Every Kubernetes resource goes through one explicit provider built
    from this, never through the default provider (which follows whatever kubeconfig context is current)."""

    context: str = Field(
        min_length=1,
        description="kubeconfig context of the target cluster (the kubeconfig itself: `$KUBECONFIG` or "
        "~/.kube/config where `pulumi` runs). Required.",
    )
    identifier: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.:/]*$")] = Field(
        description="Stable identity of the cluster (e.g. its EKS cluster name), the provider's "
        "`clusterIdentifier`: a kubeconfig change (new context name, rotated credentials) then updates the "
        "provider in place instead of replacing every resource; changing this value replaces them all. Required.",
    )


Region = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")]
StackName = Annotated[str, StringConstraints(pattern=r"^[a-z][-a-z0-9]{0,48}$")]
S3Path = Annotated[str, StringConstraints(pattern=r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9](/.*)?$")]


class DrSite(Model):
    """One site of the disaster-recovery topology: a cluster in its own region, deployed by its own stack."""

    stack: StackName = Field(description="The stack that deploys this site (`Pulumi.<stack>.yaml`). Required.")
    region: Region = Field(description="Cloud region of the site, e.g. `eu-west-1`. Required.")
    destination_path: S3Path = Field(
        description="The site's own object store (`s3://bucket/prefix`): its databases archive WAL and base "
        "backups there, and every other site reads it. Must equal the site stack's backup.objectStore."
        "destinationPath. Required."
    )
    object_store_cidrs: list[Cidr] = Field(
        min_length=1,
        description="Where the other site's database pods reach this site's object store (HTTPS): they read its WAL "
        "and base backups. A VPC endpoint for S3 serves its own region, so the other site's own "
        "network.objectStoreCidrs do not reach this bucket: name e.g. this site's S3 interface endpoint addresses, "
        "routed over VPC peering or Transit Gateway. Required.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="The S3 endpoint the other site reads this site's store through (its ObjectStore's "
        "endpointURL), resolving into objectStoreCidrs: e.g. the interface endpoint's DNS name "
        "`https://bucket.vpce-<id>.s3.<region>.vpce.amazonaws.com`. Required when objectStoreCidrs are private "
        "addresses only. Default: AWS S3's public regional endpoint.",
    )
    generation: int = Field(
        default=1,
        ge=1,
        le=99,
        description="How many times this site's databases were built. Part of their server names, so a site "
        "rebuilt as a replica after a failover archives under a new name and never over the history that "
        "diverged. Default: 1.",
    )
    bootstrap_from: Name | None = Field(
        default=None,
        description="Site whose object store this site's databases were first restored from (they were born "
        "replicas); none: they were created empty (`initdb`), the founding primary. Read by CloudNativePG only "
        "when a cluster is created. Default: none.",
    )
    state_backend: Annotated[
        str, StringConstraints(pattern=r"^s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]\?region=[a-z0-9-]+$")
    ] = Field(
        description="The Pulumi state backend of the site's stack (`s3://<bucket>?region=<region>`; the "
        "deploy job's PULUMI_BACKEND_URL of the site's environment). In the site's own region, so the site "
        "can be deployed when every other region is gone. Required."
    )
    postgres_addresses: list[Cidr] = Field(
        default_factory=list,
        description="Where this site's PostgreSQL clusters are reachable from other sites (5432): TLS streaming "
        "replication (`streaming: true`) connects there. Default: none.",
    )
    postgres_host: Annotated[str, StringConstraints(pattern=r"^[a-z0-9.-]*\{subsystem\}[a-z0-9.-]*$")] | None = Field(
        default=None,
        description="Host name other sites stream a database of this site from, with `{subsystem}` standing for "
        "the subsystem (e.g. `{subsystem}-db.eu-west.db.settlement.internal`, a private load balancer in front "
        "of the `-rw` service); added to the cluster certificate's names. Required with `streaming`. Default: none.",
    )


class Switchover(Model):
    """A planned switchover in progress (README "Disaster recovery"): each step is one reviewed change."""

    from_site: Name = Field(description="The site that was primary when the switchover began. Required.")
    step: Literal["demote", "promote", "consumers"] = Field(
        description="`demote`: the old primary's stack sets primarySite to the new site (its databases become "
        "replicas and write their demotion tokens). `promote`: the new primary's stack sets primarySite to "
        "itself with promotionTokens. `consumers`: both stacks move the applications (the new site runs them, "
        "the old one holds them at the standby size). Remove the block when DNS points at the new site. Required."
    )
    promotion_tokens: dict[Name, Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/=]{16,}$")]] = Field(
        default_factory=dict,
        description="Per subsystem with a database: the old primary cluster's `.status.demotionToken` (base64). "
        "Required on the promoting site at step `promote`, for every database. Default: none.",
    )


class FencedSite(Model):
    generation: int = Field(ge=1, le=99, description="The generation of the site's databases that was lost. Required.")
    reason: Annotated[str, StringConstraints(min_length=10)] = Field(
        description="What happened (incident, date). Required."
    )


class RecoveryObjective(Model):
    rpo_seconds: int = Field(
        ge=1,
        le=86400,
        description="Recovery point objective: most seconds of committed data a site loss may cost. The archive "
        "timeout and the replication mode must meet it; alerts fire when replication or archiving falls behind "
        "it. Required.",
    )
    rto_minutes: int = Field(
        ge=1, le=10080, description="Recovery time objective: minutes until the subsystem serves again. Required."
    )


class QueueContinuity(Model):
    mode: Literal["drain"] = Field(
        description="What happens to messages in a site's queues when the primary moves. `drain`: queues are not "
        "replicated across sites. A planned switchover stops intake and lets the old primary's consumers empty "
        "its queues before the demotion (README: Switchover, step 0); a failover loses the messages that were "
        "in the lost site's queues, and producers must re-send what was not confirmed as processed: consumers "
        "are idempotent (a re-sent message is processed at most once). Required."
    )
    reason: Annotated[str, StringConstraints(min_length=10)] = Field(
        description="Why this choice (what loss a failover may cause and who recovers it). Required."
    )


class DisasterRecovery(Model):
    """This stack as one site of a primary/standby pair (README "Disaster recovery")."""

    site: Name = Field(description="The site this stack deploys (a key of `sites`). Required.")
    primary_site: Name = Field(
        description="THE key naming the primary site: its databases accept writes, the others replicate from "
        "its object store. Every site's stack carries it; a switchover changes it in a documented order, a "
        "failover on the surviving site alone. Required."
    )
    sites: dict[Name, DrSite] = Field(
        min_length=2,
        max_length=2,
        description="Both sites of the pair, keyed by name; identical in every site's stack file. Required.",
    )
    objectives: dict[Name, RecoveryObjective] = Field(
        description="RTO and RPO per subsystem (every subsystem). Required."
    )
    queue_continuity: QueueContinuity = Field(description="What happens to messages when a site is lost. Required.")
    switchover: Switchover | None = Field(
        default=None, description="A planned switchover in progress, and its step. Default: none."
    )
    fenced_sites: dict[Name, FencedSite] = Field(
        default_factory=dict,
        description="Sites lost in a failover, written by the failover change on the surviving site. A fenced "
        "site's stack refuses to run until its generation is above the fenced one and it is not the primary "
        "(rebuilt as a replica). Default: none.",
    )
    streaming: bool = Field(
        default=False,
        description="Also stream WAL over TLS from the primary site (hybrid replication: lower lag, the object "
        "store stays the fallback). Needs every site's postgresAddresses and postgresHost, and the other site's "
        "`<subsystem>-db-replication` and `<subsystem>-db-ca` Secrets copied to this site as "
        "`<member>-replication` and `<member>-ca` (README). Default: false (WAL shipping only).",
    )
    archive_timeout_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="PostgreSQL archive_timeout: a WAL segment is archived at least this often, so without "
        "streaming a standby is at most this far behind. Must not exceed any subsystem's RPO without streaming. "
        "Default: 300 (CloudNativePG's 5min).",
    )
    standby_api_replicas: int = Field(
        default=1,
        ge=1,
        le=MAX_REPLICAS,
        description="Pods per API service while this site does not serve (an HPA's floor is 1). Consumers on a "
        "site that does not serve run zero pods (their autoscaler is paused): their databases are read-only "
        "replicas. Default: 1.",
    )


class PlatformConfig(Model):
    cluster: Cluster | None = Field(
        default=None,
        description="The target cluster. Default: none - the stack renders offline, but `pulumi preview` and "
        "`pulumi up` refuse to run (README: Deploying).",
    )
    kubernetes_version: Annotated[str, StringConstraints(pattern=r"^1\.(2[5-9]|3[0-7])$")] = Field(
        default="1.33",
        description="Target Kubernetes minor version (manifests are validated for it). Default: 1.33.",
    )
    subsystems: dict[Name, Subsystem] = Field(description="Application subsystems, keyed by name. Required.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="This stack's changes to `subsystems`, as a JSON merge patch (RFC 7386): mappings merge key "
        "by key, `null` removes a key, lists and values replace. Applied before validation; it may not add a "
        "subsystem or a service. Default: none.",
    )
    infrastructure: Infrastructure = Field(
        default_factory=Infrastructure, description="The shared infrastructure subsystem."
    )
    defaults: Defaults = Field(default_factory=Defaults, description="Defaults for services and data clusters.")
    network: Network = Field(description="Network facts of the target cluster. Required.")
    gateway: Gateway = Field(default_factory=Gateway, description="The HTTPS entry point.")
    mesh: Mesh = Field(default_factory=Mesh, description="The Istio ambient mesh (encryption in transit).")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Prometheus, Alertmanager, Grafana.")
    alerting: Alerting | None = Field(
        default=None,
        description="Who is told about alerts, and how. Required, except in a drill stack (`drill`), which runs "
        "no Alertmanager.",
    )
    guardrails: Guardrails = Field(default_factory=Guardrails, description="Production guard rails.")
    backup: Backup | None = Field(
        default=None,
        description="Continuous WAL archiving and scheduled base backups for every PostgreSQL "
        "cluster (Barman Cloud plugin). Default: none (refused while guardrails.requireBackups is true).",
    )
    dr: DisasterRecovery | None = Field(
        default=None,
        description='Disaster recovery: this stack as one site of a primary/standby pair (README "Disaster '
        'recovery"). Default: none (a single-site environment).',
    )
    drill: Drill | None = Field(
        default=None,
        description="Make this stack a restore drill of the topology's databases instead of an environment "
        '(README "Restore drill"). Default: none.',
    )
    budget: Budget | None = Field(
        default=None,
        description="What the whole environment (applications, data, operators, monitoring, and the pods operators "
        "create) may request at minimum scale, DaemonSets counted once (a one-node cluster). The offline render "
        "refuses an environment over budget, naming each part's share and the largest workloads "
        "(`python -m infra footprint`). Default: none.",
    )
