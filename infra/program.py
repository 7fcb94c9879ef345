"""The Pulumi program: read the stack's config, refuse it whole or build the whole platform."""

from __future__ import annotations

import os
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from infra.config import Cluster
from infra.drill import RestoreDrill
from infra.errors import ConfigError
from infra.platform import Platform, PlatformArgs
from infra.stack_config import PROJECT_ROOT, load_platform_config, read_secrets
from infra.topology import PlatformPlan

PROVIDER_NAME = "platform-kubernetes"
BUILD_ON_PREVIEW = "SETTLEMENT_BUILD_ON_PREVIEW"
"""`true` in pull-request preview jobs: built services' images are built (not pushed) during the preview, so it
shows their new image and a broken build fails there; deploy jobs leave it unset (`up` builds, pushes, deploys
the digest)."""


def deployment_refusal(plan: PlatformPlan, stack: str) -> str | None:
    """Why the engine must not run this stack against a cluster, or None.

    Without `cluster` the provider would follow whatever kubeconfig context is current where `pulumi` runs: a
    `pulumi refresh` against the wrong cluster finds none of the stack's objects and drops them all from state.
    """
    if plan.config.cluster is not None:
        return None
    return (
        f"stack {stack!r} names no target cluster: set `settlement-platform:cluster` in Pulumi.{stack}.yaml "
        "(`context`: the kubeconfig context, `identifier`: the cluster's stable name) before `pulumi preview` or "
        "`pulumi up` (README: Deploying). The offline render works without it."
    )


def kubernetes_provider(cluster: Cluster | None) -> k8s.Provider:
    """The one provider every Kubernetes resource of the stack uses (the default provider is never used).

    pulumi-kubernetes (provider/pkg/provider/provider.go, DiffConfig): with `clusterIdentifier` set, the
    provider is replaced - and with it every resource - only when the identifier changes, not when the
    kubeconfig or context does. provider/pkg/provider/diff.go (forceNewProperties): without the
    `enable*Mutable` flags a change to a Secret's or a ConfigMap's data replaces the object (delete, then create
    under the same name); with them it is patched in place, as every other object.
    """
    return k8s.Provider(
        PROVIDER_NAME,
        context=cluster.context if cluster is not None else None,
        cluster_identifier=cluster.identifier if cluster is not None else None,
        enable_secret_mutable=True,
        enable_config_map_mutable=True,
    )


def run(offline: bool = False, project_dir: Path = PROJECT_ROOT) -> None:
    """The program. `offline`: under the offline tools' mocks, where a stack without a cluster still renders.
    `project_dir`: where the stack files are (the other disaster-recovery sites' are read from there)."""
    try:
        plan = load_platform_config(project_dir)
    except ConfigError as error:
        # RunError makes the engine print the message alone, without a Python traceback.
        raise pulumi.RunError(error.report(pulumi.get_stack())) from None
    refusal = deployment_refusal(plan, pulumi.get_stack())
    if refusal is not None and not offline:
        raise pulumi.RunError(refusal)

    provider = kubernetes_provider(plan.config.cluster)
    providers = {"kubernetes": provider}
    if plan.config.drill is not None:
        # A drill stack builds the drill alone (infra/drill.py), in a cluster whose operators another stack runs.
        drill = RestoreDrill("drill", plan, opts=pulumi.ResourceOptions(providers=providers))
        pulumi.export("namespace", drill.namespace)
        pulumi.export("verifiers", drill.verifiers)
        return
    platform = Platform(
        "platform",
        PlatformArgs(
            plan=plan,
            secrets=read_secrets(plan),
            # Which job runs the program, not what the stack is: an environment variable, not stack config.
            build_on_preview=os.environ.get(BUILD_ON_PREVIEW) == "true",
        ),
        # Every child inherits it (parent chain); `pulumi:disable-default-providers` in Pulumi.yaml makes the
        # engine refuse any Kubernetes resource that would still reach for the default provider.
        opts=pulumi.ResourceOptions(providers=providers),
    )
    pulumi.export("namespaces", platform.namespaces)
    pulumi.export("services", platform.service_addresses)
