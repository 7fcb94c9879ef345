"""What an environment asks of the cluster: CPU and memory requests and limits at minimum and maximum scale,
persistent storage and object counts, per subsystem and for the shared infrastructure.

Read from the rendered objects, the charts' included, so it is what the cluster will be asked for: every
Deployment (its replicas bounded by its HPA or KEDA ScaledObject), StatefulSet and DaemonSet (once: the figures
are for a one-node cluster, a developer's kind or minikube), and the pods operators create at run time from
custom resources - CloudNativePG instances (with the Barman Cloud sidecar the plugin injects), RabbitMQ nodes,
Prometheus and Alertmanager (with the config-reloader the prometheus-operator adds) and the Envoy proxies of a
Gateway. Containers that declare nothing get their namespace's LimitRange defaults, as admission gives them.
Jobs are left out: they run to completion, for seconds or minutes (Helm hooks around an install or upgrade, the
restore drill's verifiers), not alongside the environment.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from components.sizing import parse_quantity

SUBSYSTEM_LABEL = "platform.settlement.io/subsystem"
SHARED = "infrastructure"

# Envoy Gateway's defaults for a proxy Deployment when no EnvoyProxy resource says otherwise
# (envoyproxy/gateway v1.9.0 api/v1alpha1/shared_types.go: DefaultDeploymentReplicas, DefaultDeployment*Requests,
# DefaultShutdownManager*Requests; the proxy pod runs envoy and the shutdown-manager).
ENVOY_DEFAULT_REPLICAS = 1
ENVOY_DEFAULT_CONTAINERS = (
    {"name": "envoy", "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}}},
    {"name": "shutdown-manager", "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
)
# The prometheus-operator passes these to the config-reloader sidecar of every Prometheus and Alertmanager pod
# (prometheus-operator v0.93 cmd/operator/main.go flags --config-reloader-{cpu,memory}-{request,limit}).
RELOADER_FLAG = re.compile(r"^--config-reloader-(cpu|memory)-(request|limit)=(\S+)$")


@dataclass
class Usage:
    """Per-pod quantities in base units: CPU in cores, memory and storage in bytes."""

    cpu_requests: float = 0.0
    memory_requests: float = 0.0
    cpu_limits: float = 0.0
    memory_limits: float = 0.0
    storage: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def __mul__(self, n: int) -> Usage:
        return Usage(*(a * n for a in self.astuple()))

    def astuple(self) -> tuple[float, ...]:
        return (self.cpu_requests, self.memory_requests, self.cpu_limits, self.memory_limits, self.storage)


@dataclass(frozen=True)
class PodGroup:
    """Pods of one workload: per-pod usage and how many run at minimum and at maximum scale."""

    group: str
    kind: str
    namespace: str
    name: str
    per_pod: Usage
    min_pods: int
    max_pods: int


@dataclass
class Footprint:
    groups: dict[str, dict] = field(default_factory=dict)
    pods: list[PodGroup] = field(default_factory=list)

    def total(self, scale: str) -> Usage:
        out = Usage()
        for pod in self.pods:
            out = out + pod.per_pod * (pod.min_pods if scale == "min" else pod.max_pods)
        return out


def _quantity(value) -> float:
    return float(parse_quantity(str(value))) if value is not None else 0.0


def _container_usage(container: dict, limit_range: dict) -> Usage:
    """Requests and limits as admission leaves them: a limit without a request makes the request (API
    defaulting); a container with neither gets the LimitRange's `default` limit and `defaultRequest` request
    (which itself defaults to `default`) - kubernetes plugin/pkg/admission/limitranger."""
    resources = container.get("resources") or {}
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    default_limit = limit_range.get("default") or {}
    default_request = {**default_limit, **(limit_range.get("defaultRequest") or {})}
    for dim in ("cpu", "memory"):
        if dim not in requests and dim in limits:
            requests[dim] = limits[dim]
        if dim not in limits and dim in default_limit:
            limits[dim] = default_limit[dim]
        if dim not in requests and dim in default_request:
            requests[dim] = default_request[dim]
    return Usage(
        _quantity(requests.get("cpu")),
        _quantity(requests.get("memory")),
        _quantity(limits.get("cpu")),
        _quantity(limits.get("memory")),
    )


def pod_usage(spec: dict, defaults: dict) -> Usage:
    """A pod's effective requests and limits: the sum of its containers, or its largest init container if that
    is more (Kubernetes' rule for scheduling)."""
    total = Usage()
    for c in spec.get("containers") or []:
        total = total + _container_usage(c, defaults)
    for c in spec.get("initContainers") or []:
        init = _container_usage(c, defaults)
        if c.get("restartPolicy") == "Always":  # a native sidecar runs beside the containers
            total = total + init
            continue
        total = Usage(*(max(a, b) for a, b in zip(total.astuple(), init.astuple(), strict=True)))
    return total


def _limit_range_defaults(run_objects: list[dict]) -> dict[str, dict]:
    out = {}
    for obj in run_objects:
        if obj["kind"] == "LimitRange":
            for limit in obj["spec"].get("limits", []):
                if limit.get("type") == "Container":
                    out[obj["metadata"]["namespace"]] = limit
    return out


def _groups_of_namespaces(objects: list[dict]) -> dict[str, str]:
    return {
        o["metadata"]["name"]: (o["metadata"].get("labels") or {}).get(SUBSYSTEM_LABEL, SHARED)
        for o in objects
        if o["kind"] == "Namespace"
    }


def _scaling(objects: list[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    """(namespace, Deployment) -> (min, max) replicas from its HPA or ScaledObject."""
    out = {}
    for o in objects:
        ns = o["metadata"].get("namespace")
        if o["kind"] == "HorizontalPodAutoscaler":
            target = o["spec"]["scaleTargetRef"]["name"]
            out[(ns, target)] = (o["spec"].get("minReplicas", 1), o["spec"]["maxReplicas"])
        elif o["kind"] == "ScaledObject":
            target = o["spec"]["scaleTargetRef"]["name"]
            out[(ns, target)] = (o["spec"].get("minReplicaCount", 0), o["spec"].get("maxReplicaCount", 100))
    return out


def _reloader(objects: list[dict]) -> dict:
    """The config-reloader container's resources, from the prometheus-operator's own arguments."""
    resources: dict = {"requests": {}, "limits": {}}
    for o in objects:
        if o["kind"] != "Deployment":
            continue
        for c in o["spec"]["template"]["spec"].get("containers", []):
            for arg in c.get("args") or []:
                if m := RELOADER_FLAG.match(arg):
                    resources[f"{m.group(2)}s"][m.group(1)] = m.group(3)
    return {"resources": resources}


def _storage(claim_spec: dict | None) -> float:
    return _quantity(((claim_spec or {}).get("resources") or {}).get("requests", {}).get("storage"))


def pod_groups(objects: list[dict]) -> list[PodGroup]:
    defaults = _limit_range_defaults(objects)
    group_of = _groups_of_namespaces(objects)
    scaling = _scaling(objects)
    reloader = _reloader(objects)
    object_stores = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"] for o in objects if o["kind"] == "ObjectStore"
    }
    envoy_proxies = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"] for o in objects if o["kind"] == "EnvoyProxy"
    }
    out: list[PodGroup] = []

    def add(kind: str, meta: dict, per_pod: Usage, low: int, high: int) -> None:
        ns = meta.get("namespace", "")
        out.append(PodGroup(group_of.get(ns, SHARED), kind, ns, meta["name"], per_pod, low, high))

    for o in objects:
        kind, meta, spec = o["kind"], o["metadata"], o.get("spec") or {}
        ns = meta.get("namespace", "")
        if kind in ("Deployment", "StatefulSet", "DaemonSet"):
            usage = pod_usage(spec["template"]["spec"], defaults.get(ns, {}))
            if kind == "StatefulSet":
                usage.storage = sum(_storage(t.get("spec")) for t in spec.get("volumeClaimTemplates") or [])
            if kind == "DaemonSet":
                low = high = 1
            elif (ns, meta["name"]) in scaling:
                low, high = scaling[(ns, meta["name"])]
            else:
                low = high = spec.get("replicas", 1)
            add(kind, meta, usage, low, high)
        elif kind == "Cluster" and o["apiVersion"].startswith("postgresql.cnpg.io/"):
            containers = [{"resources": spec.get("resources") or {}}]
            for plugin in spec.get("plugins") or []:
                store = object_stores.get((ns, (plugin.get("parameters") or {}).get("barmanObjectName")))
                if store is not None:
                    sidecar = store.get("instanceSidecarConfiguration") or {}
                    containers.append({"resources": sidecar.get("resources") or {}})
            usage = pod_usage({"containers": containers}, defaults.get(ns, {}))
            usage.storage = _quantity((spec.get("storage") or {}).get("size")) + _quantity(
                (spec.get("walStorage") or {}).get("size")
            )
            add(kind, meta, usage, spec.get("instances", 1), spec.get("instances", 1))
        elif kind == "RabbitmqCluster":
            usage = pod_usage({"containers": [{"resources": spec.get("resources") or {}}]}, defaults.get(ns, {}))
            usage.storage = _quantity((spec.get("persistence") or {}).get("storage", "10Gi"))
            replicas = spec.get("replicas", 1)
            add(kind, meta, usage, replicas, replicas)
        elif kind in ("Prometheus", "Alertmanager") and o["apiVersion"].startswith("monitoring.coreos.com/"):
            containers = [{"resources": spec.get("resources") or {}}, reloader]
            usage = pod_usage({"containers": containers}, defaults.get(ns, {}))
            usage.storage = _storage(((spec.get("storage") or {}).get("volumeClaimTemplate") or {}).get("spec"))
            replicas = spec.get("replicas", 1)
            add(kind, meta, usage, replicas, replicas)
        elif kind == "GatewayClass":
            ref = spec.get("parametersRef") or {}
            proxy = envoy_proxies.get((ref.get("namespace"), ref.get("name")))
            deployment = (((proxy or {}).get("provider") or {}).get("kubernetes") or {}).get("envoyDeployment") or {}
            containers = (
                [{"resources": (deployment.get("container") or {}).get("resources") or {}}, ENVOY_DEFAULT_CONTAINERS[1]]
                if deployment.get("container")
                else list(ENVOY_DEFAULT_CONTAINERS)
            )
            replicas = deployment.get("replicas", ENVOY_DEFAULT_REPLICAS)
            per_gateway = pod_usage({"containers": containers}, {})
            for gw in objects:
                if gw["kind"] == "Gateway" and gw["spec"].get("gatewayClassName") == meta["name"]:
                    controller_ns = ref.get("namespace") or _controller_namespace(objects)
                    add(
                        "Envoy proxy",
                        {"namespace": controller_ns, "name": f"envoy-{gw['metadata']['name']}"},
                        per_gateway,
                        replicas,
                        replicas,
                    )
    return out


def _controller_namespace(objects: list[dict]) -> str:
    """Envoy Gateway runs the proxies in its own namespace by default (gateway v1.9.0, ControllerNamespace)."""
    for o in objects:
        labels = (o.get("spec", {}).get("template", {}).get("metadata", {}) or {}).get("labels") or {}
        if o["kind"] == "Deployment" and labels.get("control-plane") == "envoy-gateway":
            return o["metadata"]["namespace"]
    return ""


def footprint(objects: list[dict]) -> Footprint:
    """The footprint of an environment's objects (`ProgramRun.all_objects()`, or a render's resources.json)."""
    pods = pod_groups(objects)
    group_of = _groups_of_namespaces(objects)
    counts: dict[str, int] = defaultdict(int)
    for o in objects:
        counts[group_of.get(o["metadata"].get("namespace", ""), SHARED)] += 1
    groups = {}
    for name in sorted({p.group for p in pods} | set(counts)):
        mine = [p for p in pods if p.group == name]
        groups[name] = {
            "min": sum((p.per_pod * p.min_pods for p in mine), Usage()),
            "max": sum((p.per_pod * p.max_pods for p in mine), Usage()),
            "objects": counts[name],
        }
    return Footprint(groups, pods)


def cpu(cores: float) -> str:
    return f"{cores:.2f}"


def gib(amount: float) -> str:
    return f"{amount / 2**30:.2f}"


COLUMNS = [
    ("CPU req min", "min", "cpu_requests", cpu),
    ("CPU req max", "max", "cpu_requests", cpu),
    ("mem req min (GiB)", "min", "memory_requests", gib),
    ("mem req max (GiB)", "max", "memory_requests", gib),
    ("CPU lim min", "min", "cpu_limits", cpu),
    ("CPU lim max", "max", "cpu_limits", cpu),
    ("mem lim min (GiB)", "min", "memory_limits", gib),
    ("mem lim max (GiB)", "max", "memory_limits", gib),
    ("storage (GiB)", "min", "storage", gib),
]
"""The table's figures: (header, scale, `Usage` field, format). Storage is shown at minimum scale: the pods that hold
volumes (databases, queue nodes, Prometheus) do not autoscale."""


def markdown(stack: str, fp: Footprint, base: Footprint | None = None, budget=None) -> str:
    """One table, a row per group and the total; with `base`, the change against it beside each changed figure;
    with the stack's `budget` (config), how much of it the minimum-scale requests take."""

    def cell(now: float, before: float | None, fmt) -> str:
        if before is None or abs(now - before) < 1e-9:
            return fmt(now)
        return f"{fmt(now)} ({'+' if now > before else ''}{fmt(now - before)})"

    headers = ["group", *(header for header, *_ in COLUMNS), "objects"]
    lines = [f"### Footprint of `{stack}`", "", f"| {' | '.join(headers)} |", "|" + "---|" * len(headers)]
    rows = {**fp.groups, "total": _total(fp)}
    base_rows = {**base.groups, "total": _total(base)} if base else {}
    for name, row in rows.items():
        b = base_rows.get(name)
        cells = [
            cell(getattr(row[scale], attr), getattr(b[scale], attr) if b else None, fmt)
            for _, scale, attr, fmt in COLUMNS
        ]
        cells.append(cell(row["objects"], b["objects"] if b else None, lambda v: str(int(v))))
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", "CPU in cores. Min: every workload at its fewest pods; max: every autoscaler at its most."]
    if budget is not None:
        total = fp.total("min")
        cpu_budget, memory_budget = budget_limits(budget)
        lines.append("")  # a paragraph of its own
        lines.append(
            f"Budget of `{stack}` (`budget`, at minimum scale: the `req min` columns): CPU {cpu(total.cpu_requests)} "
            f"of {cpu(cpu_budget)} ({total.cpu_requests / cpu_budget:.0%}), memory {gib(total.memory_requests)} of "
            f"{gib(memory_budget)} GiB ({total.memory_requests / memory_budget:.0%})."
        )
    return "\n".join(lines)


def _total(fp: Footprint) -> dict:
    return {
        "min": sum((g["min"] for g in fp.groups.values()), Usage()),
        "max": sum((g["max"] for g in fp.groups.values()), Usage()),
        "objects": sum(g["objects"] for g in fp.groups.values()),
    }


def budget_limits(budget) -> tuple[float, float]:
    """A stack's `budget` (config) as cores and bytes."""
    return float(parse_quantity(budget.cpu)), float(parse_quantity(budget.memory))


def _rank(usage: Usage, by: str) -> tuple[float, float]:
    """Requests as a sort key: memory then CPU (`by="memory"`), or CPU then memory (`by="cpu"`)."""
    return (usage.cpu_requests, usage.memory_requests) if by == "cpu" else (usage.memory_requests, usage.cpu_requests)


def largest(fp: Footprint, n: int = 5, by: str = "memory") -> list[PodGroup]:
    """The workloads that request the most memory (`by="memory"`, then CPU) or CPU (`by="cpu"`, then memory) at
    minimum scale; none that requests nothing there."""
    ranked = [(_rank(p.per_pod * p.min_pods, by), p) for p in fp.pods]
    return [p for key, p in sorted(ranked, key=lambda item: item[0], reverse=True) if any(key)][:n]


class BudgetExceeded(RuntimeError):
    """The environment asks more of the cluster at minimum scale than its stack's `budget` allows."""


BUDGET_ADVICE = (
    "Shrink what Pulumi.{stack}.yaml sizes: the `defaults` (workload, postgres, queue: resources, replicas, "
    "instances), an `overrides` entry of a subsystem's service or data cluster, `monitoring` (prometheusReplicas, "
    "alertmanagerReplicas) or `mesh` (istiodReplicas, istiodResources, ztunnelResources, cniResources); the "
    "operators, Grafana and the gateway's proxy are sized by the platform. Or raise `budget`."
)
"""Where a stack's config sizes what its budget bounds (infra/config.py: Defaults, the overrides, Monitoring, Mesh)."""


def check_budget(stack: str, fp: Footprint, budget) -> None:
    """Refuse `fp` when its minimum-scale requests exceed `budget` (config `budget`): one line per exceeded field
    (as a refused config names field, value and rule), each part's share (the subsystems and the shared
    infrastructure), the largest workloads by the exceeded resource, and what the stack file can shrink."""
    total = fp.total("min")
    cpu_budget, memory_budget = budget_limits(budget)
    cpu_over, memory_over = total.cpu_requests > cpu_budget + 1e-9, total.memory_requests > memory_budget + 1e-9
    over = []
    if cpu_over:
        over.append(
            f"  budget.cpu: {cpu(total.cpu_requests)} CPU requested, more than the budget of {budget.cpu} "
            f"({cpu(cpu_budget)} CPU)"
        )
    if memory_over:
        over.append(
            f"  budget.memory: {gib(total.memory_requests)} GiB requested, more than the budget of {budget.memory} "
            f"({gib(memory_budget)} GiB)"
        )
    if not over:
        return
    by = "memory" if memory_over else "cpu"
    parts = sorted(
        ((name, g["min"]) for name, g in fp.groups.items() if g["min"].cpu_requests or g["min"].memory_requests),
        key=lambda item: _rank(item[1], by),
        reverse=True,
    )
    shares = ", ".join(
        f"{name} {cpu(u.cpu_requests)} CPU ({u.cpu_requests / total.cpu_requests:.0%}) / "
        f"{gib(u.memory_requests)} GiB ({u.memory_requests / total.memory_requests:.0%})"
        for name, u in parts
    )
    top = "\n".join(
        f"  {p.kind} {p.namespace}/{p.name} ({p.group}): {p.min_pods} x ({cpu(p.per_pod.cpu_requests)} CPU, "
        f"{gib(p.per_pod.memory_requests)} GiB) = {cpu(p.per_pod.cpu_requests * p.min_pods)} CPU, "
        f"{gib(p.per_pod.memory_requests * p.min_pods)} GiB"
        for p in largest(fp, by=by)
    )
    raise BudgetExceeded(
        f"stack {stack!r}: the environment requests more than its budget at minimum scale:\n" + "\n".join(over) + "\n"
        f"By part: {shares}.\n"
        f"Largest workloads by {by} (pods at minimum scale x each pod's requests):\n{top}\n"
        + BUDGET_ADVICE.format(stack=stack)
    )


def objects_of(resources: list[dict]) -> list[dict]:
    """The Kubernetes objects among resources.json entries (the platform's and the charts')."""
    return [r["inputs"] for r in resources if "kind" in r["inputs"] and "apiVersion" in r["inputs"]]
