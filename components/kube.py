"""Every Kubernetes object the platform creates is a `KubeObject`: one Pulumi resource holding the whole object.

    KubeObject(
        f"{name}-calendar",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "calendar", "namespace": ns}, "data": {...}},
        pulumi.ResourceOptions(parent=self),
    )

Components never call pulumi-kubernetes' generated classes (`pulumi_kubernetes.core.v1.ConfigMap`,
`apiextensions.CustomResource`, ...); `tests/test_kube.py` names any call that does. A Helm release is a
`HelmRelease`, for the same reason; only the provider and the Helm v4 `Chart` (a component the provider implements)
use pulumi-kubernetes directly.

Why: the engine and the provider get exactly what a generated class would send - the same type token, the same
inputs, the package version (`_utilities.get_resource_opts_defaults`: the version, and a plugin download URL that is
None for this package), a Secret's data marked secret - without the work the generated classes do per resource to
serialise inputs and translate outputs through type metadata (pulumi/runtime/rpc.py `serialize_properties`,
`translate_output_properties`), which the platform never uses: its objects are plain dicts, checked against the
Kubernetes schemas offline. That work was about a tenth of a whole environment's run (docs/PERFORMANCE.md). The
generated classes' type aliases (`kubernetes:extensions/v1beta1:Deployment`, ...) only match state written under
those old API versions, which no stack of this platform has.
`tests/test_kube.py` compares a `KubeObject`'s request with a generated class's, field by field.

Keys are written as Kubernetes spells them (`matchLabels`): nothing renames snake_case keys as the generated classes
do; the strict schema check of every stack refuses a misspelt field. Outputs are the object's top-level fields as
dicts: `namespace.metadata["name"]`.
"""

from __future__ import annotations

import copy

import pulumi
from pulumi_kubernetes import _utilities

PLUGIN_VERSION = _utilities.get_version()
"""The provider version each resource asks the engine for: the one the generated classes send, the installed
package's version as semver (`_utilities.get_version`; PEP 440 and semver spell pre-releases differently)."""

SECRET_FIELDS = ("data", "stringData")
"""A Secret's fields the typed class marks secret, in its inputs and its outputs (pulumi_kubernetes/core/v1/Secret.py:
`pulumi.Output.secret(data)`, `additional_secret_outputs=["data", "stringData"]`), so the engine encrypts them in
the state whatever the caller passed."""


def type_token(api_version: str, kind: str) -> str:
    """The pulumi-kubernetes type token of an object: `kubernetes:<group>/<version>:<kind>`, the core group spelled
    `core` (`kubernetes:core/v1:Service`, the token of pulumi-kubernetes' own `core.v1.Service` class, which
    yaml.ConfigGroup uses for such an object). The provider reads the group and version back from the token and
    refuses one without both (pulumi-kubernetes provider/pkg/provider/provider.go `gvkFromURN`, called by `Check`:
    "apiVersion does not have both a group and a version"), so `kubernetes:v1:Service` would fail every preview."""
    group_version = api_version if "/" in api_version else f"core/{api_version}"
    return f"kubernetes:{group_version}:{kind}"


def with_package(
    opts: pulumi.ResourceOptions | None, version: str, secret_outputs: list[str] | None = None
) -> pulumi.ResourceOptions:
    """`opts` with a provider package's `version` (unless `opts` names one) and the class's `secret_outputs` after the
    caller's: what the generated classes give (pulumi_kubernetes core/v1/Secret.py, pulumi_random
    random_password.py: `merge(get_resource_opts_defaults(), opts)`, then `merge(opts, secret_opts)`), from one
    shallow copy, as the SDK copies options itself (pulumi/resource.py `Resource.__init__`: `opts._copy()`).
    `merge` copies both sides and merges every one of its fields (pulumi/resource.py `ResourceOptions.merge`), about
    12 us a resource; `tests/test_kube.py` compares the requests the two give."""
    merged = copy.copy(opts) if opts is not None else pulumi.ResourceOptions()
    if merged.version is None:
        merged.version = version
    if secret_outputs:
        merged.additional_secret_outputs = [*(merged.additional_secret_outputs or []), *secret_outputs]
    return merged


def is_secret(api_version: str, kind: str) -> bool:
    return api_version == "v1" and kind == "Secret"


class KubeObject(pulumi.CustomResource):
    """`manifest` (a whole object: `apiVersion`, `kind`, `metadata`, ...; values may be Outputs) registered as the
    pulumi-kubernetes resource of its kind. Fields set to None are left out (pulumi/runtime/rpc.py
    `serialize_properties` skips them), as by the generated classes.

    A class rather than a function, like the generated classes: the SDK reports as a resource's source position the
    caller of the third `__init__` on the stack (pulumi/runtime/resource.py `_get_stack_trace`), which is then the
    component line that creates the object, not the line that creates the component. No class annotations: the SDK
    would translate the outputs through them (pulumi/_types.py `resource_types`)."""

    def __init__(self, resource_name: str, manifest: dict, opts: pulumi.ResourceOptions | None = None):
        body = dict(manifest)
        api_version, kind = body["apiVersion"], body["kind"]
        secret = is_secret(api_version, kind)
        if secret:
            body.update({key: pulumi.Output.secret(body[key]) for key in SECRET_FIELDS if body.get(key) is not None})
        options = with_package(opts, PLUGIN_VERSION, list(SECRET_FIELDS) if secret else None)
        super().__init__(type_token(api_version, kind), resource_name, body, options)


RELEASE_TYPE = "kubernetes:helm.sh/v3:Release"


class HelmRelease(pulumi.CustomResource):
    """A Helm release (`kubernetes:helm.sh/v3:Release`) registered as `pulumi_kubernetes.helm.v3.Release` registers
    it, without the class's work per resource (its inputs and outputs translated through type metadata, about a
    millisecond a release): `inputs` keyed as the provider's schema spells them (`repositoryOpts`, `skipCrds`,
    `maxHistory`, ...), plus what the class always adds - `compat: "true"` and the `status` output (pulumi_kubernetes
    helm/v3/Release.py `_internal_init`) - and the package's version. Outputs keep the schema's names: `status` is a
    dict (`release.status["status"]`), not the class's `ReleaseStatus`. `tests/test_kube.py` compares the requests."""

    def __init__(self, resource_name: str, inputs: dict, opts: pulumi.ResourceOptions | None = None):
        props = {**inputs, "compat": "true", "status": None}
        super().__init__(RELEASE_TYPE, resource_name, props, with_package(opts, PLUGIN_VERSION))
