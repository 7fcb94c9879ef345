"""Credentials the program generates (`components.password`) and hands to Kubernetes as Secrets, never in plaintext."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.kube import KubeObject
from components.password import Password


@dataclass(frozen=True)
class GeneratedCredentialsArgs:
    username: str
    secret_name: str
    namespaces: list[str]
    """A copy of the Secret in each namespace (e.g. the client's and the server's)."""
    uri_template: str | None = None
    """If set, a `uri` key is added: the template with `{username}` and `{password}` filled in."""
    labels: dict[str, str] = field(default_factory=dict)
    static_data: dict[str, str] = field(default_factory=dict)
    """Non-secret keys the consumers of the Secret also read (e.g. KEDA's `tls: enable`)."""


class GeneratedCredentials(pulumi.ComponentResource):
    """A username with a random password, as Kubernetes Secrets (`username`, `password`, optional `uri`)."""

    password: pulumi.Output[str]
    secret_name: str

    def __init__(self, name: str, args: GeneratedCredentialsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:security:GeneratedCredentials", name, None, opts)
        # Alphanumeric only: the password goes into URIs and config files without escaping.
        password = Password(f"{name}-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self))
        data: dict[str, pulumi.Input[str]] = {
            **args.static_data,
            "username": args.username,
            "password": password.result,
        }
        if args.uri_template is not None:
            data["uri"] = pulumi.Output.secret(
                password.result.apply(lambda p: args.uri_template.format(username=args.username, password=p))
            )
        for namespace in args.namespaces:
            KubeObject(
                f"{name}-{namespace}",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": args.secret_name, "namespace": namespace, "labels": args.labels},
                    "type": "Opaque",
                    "stringData": data,
                },
                pulumi.ResourceOptions(parent=self),
            )
        self.password = password.result
        self.secret_name = args.secret_name
        self.register_outputs({"secret_name": self.secret_name})
