"""The mesh's per-namespace objects, given as plain specs (their derivation lives with the platform's graph):
PeerAuthentications, AuthorizationPolicies, and the monitors that scrape the mesh."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.kube import KubeObject

SECURITY_API = "security.istio.io/v1"


@dataclass(frozen=True)
class MeshPolicy:
    kind: str
    namespace: str
    name: str
    spec: dict
    api_version: str = SECURITY_API


@dataclass(frozen=True)
class MeshPoliciesArgs:
    policies: list[MeshPolicy]
    namespaces: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    """Namespace name -> the created namespace's name output (the object then waits for its namespace)."""
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What serves the kinds (Istio's CRDs, the Prometheus operator's)."""


class MeshPolicies(pulumi.ComponentResource):
    names: list[str]

    def __init__(self, name: str, args: MeshPoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:security:MeshPolicies", name, None, opts)
        seen = set()
        for p in args.policies:
            key = f"{p.kind.lower()}-{p.namespace}-{p.name}"
            if key in seen:
                raise ValueError(f"{name}: {p.kind} {p.namespace}/{p.name} given twice")
            seen.add(key)
            KubeObject(
                f"{name}-{key}",
                {
                    "apiVersion": p.api_version,
                    "kind": p.kind,
                    "metadata": {
                        "name": p.name,
                        "namespace": args.namespaces.get(p.namespace, p.namespace),
                        "labels": args.labels,
                    },
                    "spec": p.spec,
                },
                pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
            )
        self.names = sorted(seen)
        self.register_outputs({"names": self.names})
