"""A namespace's NetworkPolicies, given as plain specs (their derivation lives with the platform's graph)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.kube import KubeObject


@dataclass(frozen=True)
class NetworkPoliciesArgs:
    namespace: pulumi.Input[str]
    policies: dict[str, dict]
    """Policy name -> NetworkPolicy spec."""
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """The namespace's creator."""


class NetworkPolicies(pulumi.ComponentResource):
    names: list[str]

    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:network:NetworkPolicies", name, None, opts)
        if "default-deny" not in args.policies:
            raise ValueError(f"{name}: a namespace's policies start with default-deny")
        for policy_name, spec in sorted(args.policies.items()):
            KubeObject(
                f"{name}-{policy_name}",
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": policy_name, "namespace": args.namespace, "labels": args.labels},
                    "spec": spec,
                },
                pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
            )
        self.names = sorted(args.policies)
        self.register_outputs({"names": self.names})
