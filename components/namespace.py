"""A namespace with Pod Security admission labels, a ResourceQuota and a LimitRange."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components import internal_ca, pod_security
from components.kube import KubeObject


@dataclass(frozen=True)
class NamespaceArgs:
    name: str
    labels: dict[str, str]
    quota: dict[str, str]
    """ResourceQuota `hard`; see `components.sizing.namespace_quota`."""
    default_request: dict[str, str]
    """LimitRange defaults for containers that declare no requests."""
    default_limit: dict[str, str]
    """LimitRange defaults for containers that declare no limits."""
    pod_security_level: str = "restricted"
    pod_security_version: str = pod_security.PSS_VERSION
    annotations: dict[str, str] = field(default_factory=dict)
    trust_issuer: str | None = None
    """A cert-manager ClusterIssuer whose root CA the namespace's pods trust (Secret `internal-ca`, `ca.crt`)."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What the namespace's own objects need first (the trust issuer)."""
    enrol_after: list[pulumi.Resource] = field(default_factory=list)
    """What must exist before the namespace itself: with a data-plane label (a service mesh's), its pods are
    enrolled from the start, so the mesh's node agents come first."""
    protect: bool = False
    """It holds data (database or queue clusters): deleting the namespace deletes everything in it, protection or
    not, so the namespace itself is protected and retained on delete."""


class Namespace(pulumi.ComponentResource):
    """Namespace plus the admission and capacity guards every tenant namespace carries."""

    name: pulumi.Output[str]

    def __init__(self, name: str, args: NamespaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:core:Namespace", name, None, opts)
        metadata = pod_security.namespace_metadata(
            args.name, args.labels, args.pod_security_level, args.pod_security_version
        )

        namespace = KubeObject(
            f"{name}-namespace",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {**metadata, "annotations": args.annotations}},
            pulumi.ResourceOptions(
                parent=self, protect=args.protect, retain_on_delete=args.protect, depends_on=args.enrol_after
            ),
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        KubeObject(
            f"{name}-quota",
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "compute", "namespace": args.name, "labels": args.labels},
                "spec": {"hard": args.quota},
            },
            in_namespace,
        )
        KubeObject(
            f"{name}-limits",
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": "container-defaults", "namespace": args.name, "labels": args.labels},
                "spec": {
                    "limits": [
                        {
                            "type": "Container",
                            "defaultRequest": args.default_request,
                            "default": args.default_limit,
                        }
                    ]
                },
            },
            in_namespace,
        )

        if args.trust_issuer is not None:
            internal_ca.trust_bundle(
                f"{name}-trust",
                args.name,
                args.trust_issuer,
                args.labels,
                pulumi.ResourceOptions(parent=self, depends_on=[namespace, *args.depends_on]),
            )

        self.name = namespace.metadata["name"]
        self.register_outputs({"name": self.name})
