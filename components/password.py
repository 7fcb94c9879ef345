"""A random password (pulumi-random's `RandomPassword`) registered as a plain resource.

Why not `pulumi_random.RandomPassword`: the generated class passes its twelve inputs (ten of them None here,
which the SDK does not send) and registers an Output for each of its fourteen properties, translated through type
metadata (pulumi/runtime/rpc.py `serialize_properties`, `translate_output_properties`), about half a millisecond a
password, for the one output the platform reads (`result`). `Password` sends the engine the same request - the
type token, the inputs set, the package's version, `result` and `bcryptHash` kept secret
(pulumi_random/random_password.py `_internal_init`: `additional_secret_outputs=["bcryptHash", "result"]`) - as
`components.kube` does for Kubernetes objects; `tests/test_kube.py` compares the two requests field by field.
"""

from __future__ import annotations

import pulumi
from pulumi_random import _utilities

from components.kube import with_package

TYPE = "random:index/randomPassword:RandomPassword"
PLUGIN_VERSION = _utilities.get_version()
SECRET_OUTPUTS = ["bcryptHash", "result"]


class Password(pulumi.CustomResource):
    """`length` characters from the provider's alphabet: letters and digits, and special characters unless
    `special=False`. `result` is the password, a secret Output. Options that name properties (`ignore_changes`,
    `replace_on_changes`) take the engine's names (`overrideSpecial`): without the generated class's type metadata
    the SDK does not translate Python names (pulumi/runtime/resource.py `_translate_ignore_changes`)."""

    def __init__(self, resource_name: str, length: int, special: bool, opts: pulumi.ResourceOptions | None = None):
        # Outputs the generated class declares as None inputs: the engine gets no value for them (serialize_properties
        # skips None) and this resource gets an Output for each.
        props = {"length": length, "special": special, "result": None, "bcryptHash": None}
        super().__init__(TYPE, resource_name, props, with_package(opts, PLUGIN_VERSION, SECRET_OUTPUTS))
