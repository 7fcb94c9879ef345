"""The platform's rules as plain functions over resources (testable without the policy-pack runtime).

A resource is what the engine hands a policy: its type token, logical name, input properties (for Kubernetes
objects, the manifest) and whether it is protected. Resource rules return violations for one resource; stack
rules look at all of them together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from components.pod_security import restricted_violations

POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
STATEFUL_KINDS = {"Cluster", "RabbitmqCluster", "PersistentVolumeClaim"}
SECRETISH = re.compile(r"(password|passwd|secret|token|api[_-]?key|private[_-]?key|credential)", re.IGNORECASE)
GATEWAY_SERVICE_LABEL = "gateway.envoyproxy.io/owning-gateway-name"


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    props: dict
    protect: bool = False

    @property
    def kind(self) -> str | None:
        return self.props.get("kind") if self.type.startswith("kubernetes:") else None

    @property
    def label(self) -> str:
        meta = self.props.get("metadata") or {}
        return f"{self.kind} {meta.get('namespace', '')}/{meta.get('name', self.name)}".replace(" /", " ")


def pod_spec(resource: Resource) -> dict | None:
    if resource.kind == "Pod":
        return resource.props.get("spec")
    if resource.kind in POD_TEMPLATE_KINDS:
        return ((resource.props.get("spec") or {}).get("template") or {}).get("spec")
    if resource.kind == "CronJob":
        return resource.props["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def restricted_pod_security(resource: Resource) -> list[str]:
    spec = pod_spec(resource)
    return [f"{resource.label}: {v}" for v in restricted_violations(spec)] if spec is not None else []


def requests_and_limits(resource: Resource) -> list[str]:
    spec = pod_spec(resource)
    if spec is None:
        return []
    out = []
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        res = c.get("resources") or {}
        for section in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(res.get(section) or {})
            if missing:
                out.append(f"{resource.label}: container {c.get('name')} sets no {section} for {sorted(missing)}")
    return out


def no_node_ports(resource: Resource) -> list[str]:
    if resource.kind != "Service":
        return []
    kind = (resource.props.get("spec") or {}).get("type", "ClusterIP")
    labels = (resource.props.get("metadata") or {}).get("labels") or {}
    if kind in ("NodePort", "LoadBalancer") and GATEWAY_SERVICE_LABEL not in labels:
        return [f"{resource.label}: type {kind}; only the gateway's own Service may face outside the cluster"]
    return []


SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
DIGEST_CHECK = "CKV_K8S_43"
"""checkov's image-digest check: an object that skips it, with a reason, is exempt here too (one record)."""


def skips(resource: Resource, check: str) -> bool:
    annotations = (resource.props.get("metadata") or {}).get("annotations") or {}
    return any(
        SKIP_ANNOTATION.match(key) and value.partition("=")[0] == check and value.partition("=")[2].strip()
        for key, value in annotations.items()
    )


def images_pinned_by_digest(resource: Resource) -> list[str]:
    spec = pod_spec(resource)
    if spec is None or skips(resource, DIGEST_CHECK):
        return []
    return [
        f"{resource.label}: image {c.get('image')!r} is not pinned by @sha256 digest"
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        if "@sha256:" not in str(c.get("image", ""))
    ]


def stateful_resources_protected(resource: Resource) -> list[str]:
    if resource.kind in STATEFUL_KINDS and not resource.protect:
        return [f"{resource.label}: holds data but is not protected (a delete or replace would lose it)"]
    return []


def no_secret_literals(resource: Resource) -> list[str]:
    out = []
    spec = pod_spec(resource)
    if spec is not None:
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            for env in c.get("env") or []:
                if (
                    "value" in env
                    and SECRETISH.search(env.get("name", ""))
                    and not env["name"].endswith(("_FILE", "_DIR", "_PATH"))
                ):
                    out.append(f"{resource.label}: env {env['name']} carries a secret as a literal")
    if resource.kind == "ConfigMap":
        for key, value in (resource.props.get("data") or {}).items():
            if SECRETISH.search(key) or re.search(r"(?i)(password|token|secret)\s*[:=]\s*\S", str(value)):
                out.append(f"{resource.label}: key {key} looks like a secret; use a Secret")
    return out


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def pdb_for_replicated_workloads(resources: Iterable[Resource]) -> list[str]:
    resources = list(resources)
    minimum: dict[tuple[str, str], int] = {}
    for r in resources:
        meta = r.props.get("metadata") or {}
        key = (meta.get("namespace"), meta.get("name"))
        if r.kind == "HorizontalPodAutoscaler":
            minimum[key] = r.props["spec"].get("minReplicas", 1)
        elif r.kind == "ScaledObject":
            minimum[key] = r.props["spec"].get("minReplicaCount", 1)
    pdbs = [r for r in resources if r.kind == "PodDisruptionBudget"]
    out = []
    for r in resources:
        if r.kind not in ("Deployment", "StatefulSet"):
            continue
        meta = r.props["metadata"]
        replicas = minimum.get((meta.get("namespace"), meta["name"]), r.props["spec"].get("replicas", 1))
        labels = r.props["spec"]["template"]["metadata"].get("labels") or {}
        covered = any(
            p.props["metadata"].get("namespace") == meta.get("namespace")
            and _selects(p.props["spec"]["selector"], labels)
            for p in pdbs
        )
        if replicas > 1 and not covered:
            out.append(f"{r.label}: runs {replicas} replicas but no PodDisruptionBudget protects them")
    return out


def default_deny_everywhere(resources: Iterable[Resource]) -> list[str]:
    resources = list(resources)
    denied = {
        (r.props.get("metadata") or {}).get("namespace")
        for r in resources
        if r.kind == "NetworkPolicy"
        and (r.props.get("spec") or {}).get("podSelector") in ({}, None)
        and set((r.props.get("spec") or {}).get("policyTypes") or []) == {"Ingress", "Egress"}
        and not r.props["spec"].get("ingress")
        and not r.props["spec"].get("egress")
    }
    return [
        f"Namespace {r.props['metadata']['name']}: no default-deny NetworkPolicy (ingress and egress)"
        for r in resources
        if r.kind == "Namespace" and r.props["metadata"]["name"] not in denied
    ]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable
    stack: bool = False
    configurable: bool = False
    """Stacks may turn it off in their policy config (e.g. dev: tags and unprotected data)."""
    tags: tuple[str, ...] = field(default_factory=tuple)


RULES = (
    Rule(
        "restricted-pod-security",
        "Every pod meets Pod Security 'restricted' (UID >= 10000, read-only root).",
        restricted_pod_security,
    ),
    Rule("requests-and-limits", "Every container sets CPU and memory requests and limits.", requests_and_limits),
    Rule("no-node-ports", "No NodePort or LoadBalancer Service except the gateway's own.", no_node_ports),
    Rule(
        "images-pinned-by-digest",
        "Every image is pinned by @sha256 digest.",
        images_pinned_by_digest,
        configurable=True,
    ),
    Rule(
        "stateful-resources-protected",
        "Database and queue clusters and volume claims are protected.",
        stateful_resources_protected,
        configurable=True,
    ),
    Rule("no-secret-literals", "No secret in an env literal or a ConfigMap.", no_secret_literals),
    Rule(
        "pdb-for-replicated-workloads",
        "Every replicated workload has a PodDisruptionBudget.",
        pdb_for_replicated_workloads,
        stack=True,
    ),
    Rule(
        "default-deny-everywhere",
        "Every namespace has a default-deny NetworkPolicy.",
        default_deny_everywhere,
        stack=True,
    ),
)


def evaluate(resources: list[Resource], disabled: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Every rule over every resource, as the pack would run them: rule name -> violations."""
    out = {}
    for rule in RULES:
        if rule.name in disabled:
            continue
        if rule.stack:
            out[rule.name] = rule.check(resources)
        else:
            out[rule.name] = [v for r in resources for v in rule.check(r)]
    return out
