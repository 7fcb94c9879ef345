"""`components.kube.KubeObject` registers what pulumi-kubernetes' own classes register for the same object;
`components.password.Password` what pulumi-random's `RandomPassword` registers."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random
import pytest
from google.protobuf import json_format
from pulumi_kubernetes import _utilities

from components import password
from components.kube import PLUGIN_VERSION, RELEASE_TYPE, SECRET_FIELDS, HelmRelease, KubeObject, with_package
from infra.offline.mocks import SECRET_MARKER, RecordingMonitor, Registration, run_program
from infra.stack_config import PROJECT_ROOT, StackConfig

UNIT = StackConfig("unit", "test", {}, frozenset())
METADATA = {"name": "api", "namespace": "payment", "labels": {"app": "api"}}
SPEC = {
    "replicas": 2,
    "selector": {"matchLabels": {"app": "api"}},
    "template": {
        "metadata": {"labels": {"app": "api"}},
        "spec": {"containers": [{"name": "api", "image": "registry.example/api:1"}]},
    },
}


def child(parent: pulumi.Resource) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent)


def registered(program) -> Registration:
    [registration] = run_program(UNIT, program).registrations
    return registration


def same_registration(typed: Registration, plain: Registration, old_types: tuple[str, ...] = ()) -> None:
    """Everything the engine gets is the same but the generated class's aliases to the kind's old API versions."""
    assert typed.aliases == [f"type={old}" for old in old_types]
    assert plain.to_json() == {**typed.to_json(), "aliases": []}
    assert (plain.version, sorted(plain.additional_secret_outputs)) == (
        typed.version,
        sorted(typed.additional_secret_outputs),
    )
    assert plain.version == _utilities.get_version()


def test_a_deployment_is_registered_as_the_typed_class_registers_it_without_its_old_api_aliases():
    """The generated class aliases the kind's pre-apps/v1 types (pulumi_kubernetes/apps/v1/Deployment.py): they only
    match state written under those API versions, which no stack of this platform has."""
    typed = registered(lambda: k8s.apps.v1.Deployment("api", metadata=METADATA, spec=SPEC))
    plain = registered(
        lambda: KubeObject("api", {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": METADATA, "spec": SPEC})
    )
    old = ("kubernetes:apps/v1beta1:Deployment", "kubernetes:apps/v1beta2:Deployment")
    same_registration(typed, plain, (*old, "kubernetes:extensions/v1beta1:Deployment"))


def test_a_core_object_and_a_custom_resource_are_registered_as_their_classes_register_them():
    typed = registered(lambda: k8s.core.v1.ConfigMap("c", metadata=METADATA, data={"k": "v"}))
    plain = registered(
        lambda: KubeObject("c", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": METADATA, "data": {"k": "v"}})
    )
    same_registration(typed, plain)
    assert plain.type == "kubernetes:core/v1:ConfigMap"

    spec = {"instances": 3}
    typed = registered(
        lambda: k8s.apiextensions.CustomResource(
            "db", api_version="postgresql.cnpg.io/v1", kind="Cluster", metadata=METADATA, spec=spec
        )
    )
    plain = registered(
        lambda: KubeObject(
            "db", {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": METADATA, "spec": spec}
        )
    )
    same_registration(typed, plain)


@pytest.mark.parametrize("field", SECRET_FIELDS)
def test_a_secrets_data_is_secret_even_when_given_in_the_clear(field):
    """The typed Secret class marks its data secret (pulumi_kubernetes/core/v1/Secret.py); so does `KubeObject`,
    so the engine encrypts it in the state however a caller built it."""
    typed = registered(lambda: k8s.core.v1.Secret("s", metadata=METADATA, **{field.replace("D", "_d"): {"k": "v"}}))
    plain = registered(
        lambda: KubeObject("s", {"apiVersion": "v1", "kind": "Secret", "metadata": METADATA, field: {"k": "v"}})
    )
    same_registration(typed, plain)
    assert plain.inputs[field] == {"k": SECRET_MARKER}
    assert sorted(plain.additional_secret_outputs) == sorted(SECRET_FIELDS)


def test_unset_fields_are_left_out_and_outputs_are_the_objects_fields_as_dicts():
    names = []

    def program():
        namespace = KubeObject("n", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}, "spec": None})
        namespace.metadata["name"].apply(names.append)

    assert registered(program).inputs == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}
    assert names == ["n"]


def _pulumi_kubernetes_names(tree: ast.Module) -> dict[str, str]:
    """Each name a module binds to pulumi-kubernetes, with the dotted path inside the package it stands for:
    `import pulumi_kubernetes as k8s` -> {"k8s": ""}, `from pulumi_kubernetes.core import v1` -> {"v1": "core.v1"}."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pulumi_kubernetes":
                    inside = alias.name.partition(".")[2]
                    names[alias.asname or "pulumi_kubernetes"] = inside if alias.asname else ""
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pulumi_kubernetes":
            inside = node.module.partition(".")[2]
            for alias in node.names:
                names[alias.asname or alias.name] = f"{inside}.{alias.name}".lstrip(".")
    return names


def _calls_into_pulumi_kubernetes(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, path inside the package) of every call of something pulumi-kubernetes provides."""
    names = _pulumi_kubernetes_names(tree)
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            head, _, rest = ast.unparse(node.func).partition(".")
            if head in names:
                calls.append((node.lineno, ".".join(part for part in (names[head], rest) if part)))
    return calls


def test_no_component_registers_an_object_through_a_generated_class():
    """Every Kubernetes object is a `KubeObject` and every Helm release a `HelmRelease`, so each is registered one way
    (and the bench's figures hold); pulumi-kubernetes is used directly only for the provider and the Helm v4 `Chart`
    (a component the provider implements)."""
    allowed = ("Provider", "helm.v4.Chart", "_utilities.")
    found = [
        f"{path.relative_to(PROJECT_ROOT)}:{line} pulumi_kubernetes.{used}"
        for path in sorted([*PROJECT_ROOT.glob("components/*.py"), *PROJECT_ROOT.glob("infra/*.py")])
        for line, used in _calls_into_pulumi_kubernetes(ast.parse(path.read_text()))
        if not used.startswith(allowed)
    ]
    assert not found, (
        "register Kubernetes objects as components.kube.KubeObject(name, {'apiVersion': ..., 'kind': ..., "
        "'metadata': ..., ...}, opts), not through pulumi-kubernetes' generated classes (see components/kube.py): "
        + ", ".join(found)
    )


@pytest.mark.parametrize(
    "source",
    [
        "import pulumi_kubernetes as k8s\nk8s.core.v1.ConfigMap('c')",
        "import pulumi_kubernetes.core.v1 as core_v1\ncore_v1.ConfigMap('c')",
        "from pulumi_kubernetes import core\ncore.v1.ConfigMap('c')",
        "from pulumi_kubernetes.core.v1 import ConfigMap as CM\nCM('c')",
    ],
)
def test_every_way_of_importing_a_generated_class_is_seen(source):
    assert _calls_into_pulumi_kubernetes(ast.parse(source)) == [(2, "core.v1.ConfigMap")]


def test_an_objects_source_position_is_the_line_that_creates_it():
    """The engine shows where each resource was created (pulumi/runtime/resource.py `_get_source_position`): for an
    object made in a component, the component's line, as with the generated classes."""

    class Component(pulumi.ComponentResource):
        def __init__(self, name: str):
            super().__init__("test:index:Component", name)
            self.line = inspect.currentframe().f_lineno + 1
            KubeObject(f"{name}-c", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, child(self))
            self.register_outputs({})

    made = []
    run = run_program(UNIT, lambda: made.append(Component("x")))
    [config_map] = [r for r in run.registrations if r.custom]
    assert config_map.source_position == f"{Path(__file__).as_uri()}:{made[0].line}"


def test_a_helm_release_is_registered_as_the_generated_class_registers_it():
    """Everything the engine gets, and the `status` output a component registers (pulumi_kubernetes helm/v3/Release.py
    sets `compat` and `status` itself)."""
    values = {"replicaCount": 2, "nested": {"list": [1, "two"], "empty": {}}}
    # An Output input, made inside each program: an Output belongs to the event loop of the run that makes it.
    typed = registered(
        lambda: k8s.helm.v3.Release(
            "op",
            name="op",
            namespace=pulumi.Output.from_input("operators"),
            chart="cert-manager",
            version="v1.21.1",
            repository_opts={"repo": "https://charts.example"},
            values=values,
            skip_crds=False,
            atomic=True,
            cleanup_on_fail=True,
            max_history=5,
        )
    )
    statuses = []

    def plain_program():
        release = HelmRelease(
            "op",
            {
                "name": "op",
                "namespace": pulumi.Output.from_input("operators"),
                "chart": "cert-manager",
                "version": "v1.21.1",
                "repositoryOpts": {"repo": "https://charts.example"},
                "values": values,
                "skipCrds": False,
                "atomic": True,
                "cleanupOnFail": True,
                "maxHistory": 5,
            },
        )
        release.status.apply(statuses.append)

    plain = registered(plain_program)
    same_registration(typed, plain)
    assert plain.type == RELEASE_TYPE and plain.inputs["compat"] == "true" and plain.inputs["repositoryOpts"]
    assert statuses and statuses[0]["status"] == "deployed"  # the mocks' answer (infra/offline/mocks.py)


class Parent(pulumi.ComponentResource):
    def __init__(self, make):
        super().__init__("test:index:Parent", "p")
        make(child(self))
        self.register_outputs({"made": True})


def requests(program, monkeypatch) -> list[dict]:
    """Every RegisterResourceRequest the run sends, whole (as JSON), but for where in the source it was made."""
    sent = []
    original = RecordingMonitor.RegisterResource

    def register(monitor, request):
        sent.append(json_format.MessageToDict(request))
        return original(monitor, request)

    monkeypatch.setattr(RecordingMonitor, "RegisterResource", register)
    run_program(UNIT, program)
    monkeypatch.undo()
    return [{k: v for k, v in r.items() if k not in ("sourcePosition", "stackTrace")} for r in sent]


def test_a_password_is_registered_as_the_generated_class_registers_it(monkeypatch):
    """pulumi_random/random_password.py `_internal_init`: the engine gets the same request, field for field (inputs,
    version, plugin download URL, secret outputs, options), for a password made in a component as the platform makes
    them; and the `result` a component reads."""
    typed = requests(
        lambda: Parent(lambda opts: pulumi_random.RandomPassword("pw", length=32, special=False, opts=opts)),
        monkeypatch,
    )
    results = []
    plain = requests(
        lambda: Parent(lambda opts: password.Password("pw", 32, False, opts).result.apply(results.append)),
        monkeypatch,
    )
    assert plain == typed and [r["type"] for r in plain] == ["pulumi:pulumi:Stack", "test:index:Parent", password.TYPE]
    assert typed[2]["version"] == pulumi_random._utilities.get_version()
    assert sorted(typed[2]["additionalSecretOutputs"]) == ["bcryptHash", "result"]
    assert len(results) == 1 and len(results[0]) == 32  # the mocks' answer (infra/offline/mocks.py)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"protect": True, "retain_on_delete": True, "delete_before_replace": True},
        {"custom_timeouts": pulumi.CustomTimeouts(create="5m", update="5m"), "ignore_changes": ["spec"]},
        {"additional_secret_outputs": ["spec"], "replace_on_changes": ["spec"]},
        {"version": "9.9.9", "depends_on": True},
    ],
    ids=["none", "safety", "timeouts-ignore", "secrets-replace", "version-depends-on"],
)
def test_with_package_gives_the_request_resource_options_merge_gives(options, monkeypatch):
    """`with_package` copies the caller's options once instead of merging them as the generated classes do: the engine
    gets the same."""

    def program(defaults):
        def make(opts):
            dependency = KubeObject("dep", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}}, opts)
            given = {k: v for k, v in options.items() if k != "depends_on"}
            if options.get("depends_on"):
                given["depends_on"] = [dependency]
            mine = pulumi.ResourceOptions(parent=opts.parent, **given)
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}}
            pulumi.CustomResource("kubernetes:core/v1:Secret", "s", body, defaults(mine))

        return lambda: Parent(make)

    secret = list(SECRET_FIELDS)

    def as_generated_classes(o):  # pulumi_kubernetes core/v1/Secret.py `_internal_init`
        o = pulumi.ResourceOptions.merge(pulumi.ResourceOptions(version=PLUGIN_VERSION), o)
        return pulumi.ResourceOptions.merge(o, pulumi.ResourceOptions(additional_secret_outputs=secret))

    merged = requests(program(as_generated_classes), monkeypatch)
    copied = requests(program(lambda o: with_package(o, PLUGIN_VERSION, secret)), monkeypatch)
    assert copied == merged and merged[-1]["type"] == "kubernetes:core/v1:Secret"
