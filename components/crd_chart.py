"""CustomResourceDefinitions from a chart, applied as individual objects so that a chart bump upgrades them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.helm_operator import chart_reference


@dataclass(frozen=True)
class CrdChartArgs:
    repository: str
    chart: str
    version: str
    namespace: str
    """Release namespace for the render (CRDs themselves are cluster-scoped)."""
    values: dict = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class CrdChart(pulumi.ComponentResource):
    """A CRD-only chart rendered client-side and applied object by object (server-side apply).

    Helm installs a chart's `crds/` folder once and never upgrades it, and very large CRDs kept as templates
    overflow a Helm release record (helm/helm#12277). Envoy Gateway's install guide therefore applies
    `gateway-crds-helm` with `helm template | kubectl apply --server-side` (site/content/en/latest/install/
    install-helm.md at v1.9.0). pulumi-kubernetes' Helm v4 `Chart` does the same: it renders the templates and
    registers each object as its own resource, so `pulumi preview` shows every CRD change and a version bump
    upgrades the CRDs in the same `pulumi up`. Custom resources depend on this component.
    """

    chart: k8s.helm.v4.Chart

    def __init__(self, name: str, args: CrdChartArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:core:CrdChart", name, None, opts)
        chart, repo = chart_reference(args.repository, args.chart)
        self.chart = k8s.helm.v4.Chart(
            f"{name}-chart",
            # The chart name is the release name, as for the operators' Helm releases.
            name=args.chart,
            namespace=args.namespace,
            chart=chart,
            version=args.version,
            repository_opts={"repo": repo} if repo is not None else None,
            values=args.values,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.register_outputs({"chart": args.chart, "version": args.version})
