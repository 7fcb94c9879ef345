"""A private certificate authority run by cert-manager: a self-signed root and a ClusterIssuer that signs with it.

Internal endpoints (queue brokers) get certificates from it; clients trust its root through a bundle
distributed into their namespace (`trust_bundle_spec`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.kube import KubeObject
from components.readiness import CERTIFICATE_TIMEOUTS, READY

CERT_MANAGER_API = "cert-manager.io/v1"
TRUST_SECRET = "internal-ca"
"""Secret name, in every namespace that trusts the CA, whose `ca.crt` is the root certificate."""


@dataclass(frozen=True)
class InternalCAArgs:
    issuer_name: str
    cert_manager_namespace: str
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """The cert-manager install."""


def issuer_ref(issuer: str) -> dict:
    return {"name": issuer, "kind": "ClusterIssuer", "group": "cert-manager.io"}


def trust_bundle_spec(issuer: str, namespace: str) -> dict:
    """A short-lived leaf whose Secret carries the issuer's `ca.crt`: how a namespace receives the root.

    The private key it also holds signs nothing of value; the point is the CA certificate next to it.
    """
    return {
        "secretName": TRUST_SECRET,
        "commonName": f"{namespace} trust bundle",
        "issuerRef": issuer_ref(issuer),
        "duration": "2160h",
        "renewBefore": "720h",
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "usages": ["digital signature"],
    }


def trust_bundle(
    resource_name: str, namespace: str, issuer: str, labels: dict[str, str], opts: pulumi.ResourceOptions
) -> pulumi.CustomResource:
    """The Certificate that puts the issuer's root into `namespace` as Secret `TRUST_SECRET` (`ca.crt`)."""
    return KubeObject(
        resource_name,
        {
            "apiVersion": CERT_MANAGER_API,
            "kind": "Certificate",
            "metadata": {
                "name": f"{TRUST_SECRET}-trust",
                "namespace": namespace,
                "labels": labels,
                "annotations": READY,
            },
            "spec": trust_bundle_spec(issuer, namespace),
        },
        pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(custom_timeouts=CERTIFICATE_TIMEOUTS)),
    )


class InternalCA(pulumi.ComponentResource):
    issuer_name: str
    issuer: pulumi.Resource

    def __init__(self, name: str, args: InternalCAArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:security:InternalCA", name, None, opts)
        # Each step waits until cert-manager reports it Ready, so what depends on the issuer finds it working.
        after_cert_manager = pulumi.ResourceOptions(
            parent=self, depends_on=args.depends_on, custom_timeouts=CERTIFICATE_TIMEOUTS
        )
        root_secret = f"{args.issuer_name}-root"

        bootstrap = KubeObject(
            f"{name}-bootstrap-issuer",
            {
                "apiVersion": CERT_MANAGER_API,
                "kind": "ClusterIssuer",
                "metadata": {"name": f"{args.issuer_name}-bootstrap", "annotations": READY},
                "spec": {"selfSigned": {}},
            },
            after_cert_manager,
        )
        root = KubeObject(
            f"{name}-root",
            {
                "apiVersion": CERT_MANAGER_API,
                "kind": "Certificate",
                "metadata": {"name": root_secret, "namespace": args.cert_manager_namespace, "annotations": READY},
                "spec": {
                    "isCA": True,
                    "commonName": f"{args.issuer_name} root",
                    "secretName": root_secret,
                    "duration": "87600h",
                    "privateKey": {"algorithm": "ECDSA", "size": 384},
                    "issuerRef": issuer_ref(f"{args.issuer_name}-bootstrap"),
                },
            },
            pulumi.ResourceOptions(
                parent=self, depends_on=[bootstrap, *args.depends_on], custom_timeouts=CERTIFICATE_TIMEOUTS
            ),
        )
        self.issuer = KubeObject(
            f"{name}-issuer",
            {
                "apiVersion": CERT_MANAGER_API,
                "kind": "ClusterIssuer",
                "metadata": {"name": args.issuer_name, "annotations": READY},
                "spec": {"ca": {"secretName": root_secret}},
            },
            pulumi.ResourceOptions(
                parent=self, depends_on=[root, *args.depends_on], custom_timeouts=CERTIFICATE_TIMEOUTS
            ),
        )
        self.issuer_name = args.issuer_name
        self.register_outputs({"issuer_name": self.issuer_name})
