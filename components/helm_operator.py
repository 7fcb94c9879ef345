"""An operator installed from its Helm chart at a pinned version, in its own namespace."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pulumi

from components import pod_security
from components.credentials import GeneratedCredentials, GeneratedCredentialsArgs
from components.kube import HelmRelease, KubeObject


@dataclass(frozen=True)
class HelmOperatorArgs:
    namespace: str
    repository: str
    chart: str
    version: str
    values: dict = field(default_factory=dict)
    pod_security_level: str = "restricted"
    pod_security_version: str = pod_security.PSS_VERSION
    extra_labels: dict[str, str] = field(default_factory=dict)
    create_namespace: bool = True
    """False: install into a namespace another release owns (a plugin that must sit beside its operator)."""
    skip_crds: bool = False
    """True when the chart's install-only `crds/` folder is applied another way (see `CrdChart`)."""
    generated_secrets: list[GeneratedCredentialsArgs] = field(default_factory=list)
    """Credentials the chart expects to exist (its `existingSecret`-style values), generated in the namespace
    before the release."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    protect: bool = False
    """The operator runs data (databases): the release and its namespace are protected, so neither an edit nor a
    destroy uninstalls it (an uninstall deletes the chart's templated objects, CRDs included unless they carry
    `helm.sh/resource-policy: keep`, and every custom resource with a CRD)."""


def chart_reference(repository: str, chart: str) -> tuple[str, str | None]:
    """Helm's (chart, repo) pair: an OCI registry is addressed by a chart URL, a classic repository by name."""
    if repository.startswith("oci://"):
        return f"{repository.rstrip('/')}/{chart}", None
    return chart, repository


class HelmOperator(pulumi.ComponentResource):
    """Namespace plus Helm release. Custom resources of this operator depend on the `release` output."""

    release: HelmRelease
    namespace: pulumi.Output[str]
    namespace_name: str

    def __init__(self, name: str, args: HelmOperatorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:core:HelmOperator", name, None, opts)
        in_namespace: list[pulumi.Resource] = []
        if args.create_namespace:
            namespace = KubeObject(
                f"{name}-namespace",
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": pod_security.namespace_metadata(
                        args.namespace, args.extra_labels, args.pod_security_level, args.pod_security_version
                    ),
                },
                pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect),
            )
            namespace_name = namespace.metadata["name"]
            in_namespace.append(namespace)
        else:
            namespace_name = pulumi.Output.from_input(args.namespace)
        secrets = [
            GeneratedCredentials(
                f"{name}-{secret.secret_name}",
                dataclasses.replace(secret, namespaces=[args.namespace]),
                opts=pulumi.ResourceOptions(parent=self, depends_on=in_namespace),
            )
            for secret in args.generated_secrets
        ]
        chart, repo = chart_reference(args.repository, args.chart)
        self.release = HelmRelease(
            f"{name}-release",
            {
                # The chart name is the release name: stable, and what `helm list` shows on-call engineers.
                "name": args.chart,
                "namespace": namespace_name,
                "chart": chart,
                "version": args.version,
                "repositoryOpts": {"repo": repo} if repo is not None else None,
                "values": args.values,
                "skipCrds": args.skip_crds,
                # Roll back a failed upgrade instead of leaving a half-upgraded operator behind.
                "atomic": True,
                "cleanupOnFail": True,
                "maxHistory": 5,
            },
            pulumi.ResourceOptions(
                parent=self,
                depends_on=[*args.depends_on, *secrets],
                protect=args.protect,
                retain_on_delete=args.protect,
            ),
        )
        self.namespace = namespace_name
        self.namespace_name = args.namespace
        self.register_outputs({"namespace": self.namespace, "release": self.release.status})
