"""Istio in ambient mode from its four pinned charts, in one namespace, with its CA chained to a cert-manager
issuer: base (CRDs), istiod (control plane and CA), istio-cni (node agent), ztunnel (node proxy)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.helm_operator import HelmOperator, HelmOperatorArgs
from components.internal_ca import CERT_MANAGER_API, issuer_ref
from components.kube import KubeObject
from components.readiness import CERTIFICATE_TIMEOUTS, READY

# The charts in install order: base's CRDs before istiod, istiod (the CA) before the node agents.
CHARTS = ("base", "istiod", "cni", "ztunnel")
NODE_CHARTS = ("cni", "ztunnel")
"""In the node namespace: the only mesh pods that need Pod Security `privileged`."""


@dataclass(frozen=True)
class ServiceMeshArgs:
    namespace: str
    repository: str
    version: str
    values: dict[str, dict]
    """Helm values per chart of `CHARTS`."""
    node_namespace: str
    """Where the node agents run; created by the caller (privileged), see `node_depends_on`."""
    pod_security_version: str
    ca_issuer: str
    """ClusterIssuer that signs the mesh's intermediate CA."""
    ca_secret: str
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """cert-manager and the issuer."""
    node_depends_on: list[pulumi.Resource] = field(default_factory=list)
    """The node namespace."""


def intermediate_ca_spec(issuer: str, secret: str, namespace: str) -> dict:
    """The mesh's signing CA: an intermediate of the platform's internal CA, renewed by cert-manager 30 days
    before its year is up with a new key. istiod watches the mounted files and reloads the new intermediate
    (istio/istio 1.30.3 pilot/pkg/bootstrap/istio_ca.go `handleEvent`); workload certificates (24 h) chain to the
    unchanged root, so the rotation drops no connection."""
    return {
        "isCA": True,
        "commonName": f"{namespace} mesh intermediate CA",
        "secretName": secret,
        "duration": "8760h",
        "renewBefore": "720h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["cert sign", "crl sign", "digital signature"],
        "issuerRef": issuer_ref(issuer),
    }


class ServiceMesh(pulumi.ComponentResource):
    """Releases by chart; whatever enrols pods depends on `ready` (the node agents)."""

    releases: dict[str, HelmOperator]
    namespace: pulumi.Output[str]
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: ServiceMeshArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:security:ServiceMesh", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.releases = {}
        before: list[pulumi.Resource] = list(args.depends_on)
        ca = None
        for chart in CHARTS:
            node = chart in NODE_CHARTS
            release = HelmOperator(
                f"{name}-{chart}",
                HelmOperatorArgs(
                    namespace=args.node_namespace if node else args.namespace,
                    repository=args.repository,
                    chart=chart,
                    version=args.version,
                    values=args.values[chart],
                    pod_security_version=args.pod_security_version,
                    extra_labels=args.labels,
                    # The first release owns the control plane's namespace (restricted); the others install into
                    # it or into the node namespace.
                    create_namespace=chart == CHARTS[0],
                    depends_on=[*before, *(args.node_depends_on if node else [])],
                ),
                opts=child,
            )
            self.releases[chart] = release
            if chart == CHARTS[0]:
                # istiod must find its signing CA at start: it mounts the optional Secret and falls back to a
                # self-signed root of its own without it.
                ca = KubeObject(
                    f"{name}-ca",
                    {
                        "apiVersion": CERT_MANAGER_API,
                        "kind": "Certificate",
                        "metadata": {
                            "name": args.ca_secret,
                            "namespace": args.namespace,
                            "labels": args.labels,
                            "annotations": READY,
                        },
                        "spec": intermediate_ca_spec(args.ca_issuer, args.ca_secret, args.namespace),
                    },
                    pulumi.ResourceOptions(
                        parent=self,
                        depends_on=[*args.depends_on, release.release],
                        custom_timeouts=CERTIFICATE_TIMEOUTS,
                    ),
                )
                before = [release.release, ca]
            else:
                before = [release.release]
        self.namespace = self.releases[CHARTS[0]].namespace
        self.ready = [self.releases["cni"].release, self.releases["ztunnel"].release]
        self.register_outputs(
            {"namespace": self.namespace, "releases": [r.release.status for r in self.releases.values()]}
        )
