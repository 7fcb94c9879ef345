"""Run the real Pulumi program under the SDK's mock mode and record everything it registers.

One harness serves the offline render, the diff and every test. The recording monitor keeps what the engine
would receive for each resource: type, logical name, parent, inputs and the options that matter for data
safety (protect, retainOnDelete, dependencies, ignoreChanges, aliases).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as sdk_mocks
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from components.release_manifest import MIRROR_ENV
from infra.offline.caches import MANIFESTS_DIR
from infra.stack_config import StackConfig

SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"
SECRET_MARKER = "[secret]"
# Offline copies of the release manifests the platform installs (../shared/manifests/README.md).


def fake_digest(*parts: str) -> str:
    return "sha256:" + hashlib.sha256("/".join(parts).encode()).hexdigest()


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    inputs: dict
    protect: bool = False
    retain_on_delete: bool = False
    dependencies: list[str] = field(default_factory=list)
    ignore_changes: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    provider: str = ""
    """The provider reference the engine would use ("<provider urn>::<id>"); empty for the default provider
    (and for components, which have none)."""
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    """customTimeouts as set (create/update/delete); how long the engine waits, e.g. for `pulumi.com/waitFor`."""
    version: str = ""
    """The provider plugin version the resource asks the engine for."""
    additional_secret_outputs: list[str] = field(default_factory=list)
    """Output properties the engine keeps secret in the state whatever their value."""
    source_position: str = ""
    """Where the program created the resource, as the SDK reports it ("<file URI>:<line>"); kept out of `to_json`,
    where every edit of a line above it would show as a change."""

    @property
    def is_kubernetes_object(self) -> bool:
        return self.type.startswith("kubernetes:") and "kind" in self.inputs and "apiVersion" in self.inputs

    def to_json(self) -> dict:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "custom": self.custom,
            "protect": self.protect,
            "retainOnDelete": self.retain_on_delete,
            "dependencies": sorted(self.dependencies),
            "ignoreChanges": sorted(self.ignore_changes),
            "aliases": self.aliases,
            "provider": self.provider,
            "customTimeouts": self.custom_timeouts,
            "inputs": self.inputs,
        }


def _mask(value: Any) -> Any:
    """Every scalar of a secret replaced by the marker; the shape (keys, lists) stays so schemas still apply."""
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items() if k != SECRET_SIGNATURE}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return SECRET_MARKER


def clean(value: Any) -> Any:
    """SDK wire values to plain data: secrets masked, integral floats back to ints."""
    if isinstance(value, dict):
        if SECRET_SIGNATURE in value:
            return _mask(value.get("value"))
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


MOCK_CREATION_TIMESTAMP = "2026-01-01T00:00:00Z"


class PlatformMocks(pulumi.runtime.Mocks):
    """Outputs the engine would fill in, fabricated deterministically so renders are reproducible."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        outputs = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = hashlib.sha256(args.name.encode()).hexdigest()[: int(args.inputs.get("length", 32))]
        elif args.typ == "docker:index/image:Image":
            repository = str(args.inputs.get("imageName", args.name)).rsplit(":", 1)[0]
            digest = fake_digest(args.name, str(args.inputs.get("build", {})))
            outputs["repoDigest"] = f"{repository}@{digest}"
        elif args.typ == "kubernetes:helm.sh/v3:Release":
            outputs["status"] = {"status": "deployed", "version": args.inputs.get("version", "")}
        elif args.typ == "kubernetes:postgresql.cnpg.io/v1:Cluster":
            # The API server stamps every object; the restore drill's verifier measures from this one.
            outputs["metadata"] = {**outputs.get("metadata", {}), "creationTimestamp": MOCK_CREATION_TIMESTAMP}
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict:
        return {}


def _alias_text(alias) -> str:
    """An alias as a URN, or as "name=<old name>" / "type=<old type>" / "parent=<old parent>" ... for the spec
    form (pulumi/runtime/proto/alias_pb2.pyi `Alias.Spec`)."""
    if alias.urn:
        return alias.urn
    spec = alias.spec
    parts = [f"{key}={getattr(spec, key)}" for key in ("name", "type", "stack", "project") if getattr(spec, key)]
    if spec.parentUrn:
        parts.append(f"parent={spec.parentUrn}")
    if spec.noParent:
        parts.append("noParent")
    return ",".join(parts)


class RecordingMonitor(sdk_mocks.MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):
        wire = None
        if request.type == "pulumi:pulumi:Stack" or pulumi.runtime.is_dry_run():
            response = super().RegisterResource(request)
        else:
            response, wire = self._register(request)
        if request.type != "pulumi:pulumi:Stack":
            if wire is None:
                wire = pulumi.runtime.rpc.deserialize_properties(request.object, keep_unknowns=True)
            inputs = clean(wire)
            self.registrations.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    custom=request.custom,
                    inputs=inputs,
                    protect=bool(request.protect),
                    retain_on_delete=bool(request.retainOnDelete),
                    dependencies=list(request.dependencies),
                    ignore_changes=list(request.ignoreChanges),
                    aliases=[t for t in map(_alias_text, request.aliases) if t] + list(request.aliasURNs),
                    provider=request.provider,
                    custom_timeouts={
                        k: v for k in ("create", "update", "delete") if (v := getattr(request.customTimeouts, k, ""))
                    },
                    version=request.version,
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    source_position=(
                        f"{request.sourcePosition.uri}:{request.sourcePosition.line}"
                        if request.HasField("sourcePosition")
                        else ""
                    ),
                )
            )
        return response

    def _register(self, request) -> tuple[resource_pb2.RegisterResourceResponse, dict]:
        """The SDK's `MockMonitor.RegisterResource` (pulumi/runtime/mocks.py, pulumi 3.272.0) for a run that is not a
        preview, doing less of the same work: the request's properties are deserialised once, for the mocks and for
        the record (the SDK's and the record's deserialisations differ only in keeping unknowns, which a run that is
        not a preview never sends); and outputs the mocks echo unchanged are answered with the request's own struct
        instead of being serialised again (what the SDK does with the response, `deserialize_properties`, reads the
        same values from both: `tests/test_render.py` checks it on a whole environment). Serialising every echo was
        most of the monitor's time per resource (sampled over the test suite)."""
        urn = self.make_urn(request.parent, request.type, request.name)
        _ensure_event_loop()  # deserialising a resource reference needs a loop on this executor thread
        inputs = pulumi.runtime.rpc.deserialize_properties(request.object, keep_unknowns=True)
        args = pulumi.runtime.MockResourceArgs(
            typ=request.type,
            name=request.name,
            inputs=inputs,
            provider=request.provider,
            resource_id=request.importId,
            custom=request.custom or False,
            transforms=sdk_mocks._resolve_callbacks(request.transforms),
        )
        id_, state = self.mocks.new_resource(args)
        outputs = request.object if state == inputs else _sync_await(pulumi.runtime.rpc.serialize_properties(state, {}))
        self.resources[urn] = sdk_mocks.MockMonitor.ResourceRegistration(urn, id_, state)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_, object=outputs), inputs


@dataclass
class ProgramRun:
    stack: str
    registrations: list[Registration]
    chart_objects: list = field(default_factory=list)
    """What the Helm releases install (`infra.offline.charts.ChartObject`), once the run is expanded."""

    def all_objects(self) -> list[dict]:
        """Every object the cluster will run: the program's own and those its Helm releases install."""
        return self.kubernetes_objects() + [c.object for c in self.chart_objects]

    def of_type(self, type_token: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_token]

    def waits_for(self, urn: str) -> set[str]:
        """The URNs of every resource this one is created after through its dependencies: theirs too, transitively
        (the SDK registers a resource once each dependency's URN has resolved: pulumi/runtime/resource.py
        `prepare_resource`; its parent and provider come first as well). Deletes follow direct dependencies among the
        resources being deleted (pulumi/pulumi pkg/resource/deploy/step_generator.go `ScheduleDeletes`), so a destroy
        deletes in the reverse of this closure too; a dependency implied only through another resource is lost for
        deletes if that resource stays, or leaves the state without a delete (a refresh that finds it gone drops the
        edges to it: pkg/resource/deploy/deployment_executor.go `rebuildBaseState`) until the next `pulumi up`."""
        by_urn = {r.urn: r for r in self.registrations}
        seen: set[str] = set()
        pending = list(by_urn[urn].dependencies)
        while pending:
            dependency = pending.pop()
            if dependency not in seen and dependency in by_urn:
                seen.add(dependency)
                pending.extend(by_urn[dependency].dependencies)
        return seen

    def kubernetes_objects(self) -> list[dict]:
        return [r.inputs for r in self.registrations if r.is_kubernetes_object]

    def objects(self, kind: str) -> list[dict]:
        return [o for o in self.kubernetes_objects() if o["kind"] == kind]

    def object(self, kind: str, name: str, namespace: str | None = None) -> dict:
        found = [
            o
            for o in self.objects(kind)
            if o["metadata"]["name"] == name and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} {kind} objects named {name!r} in {namespace!r}")
        return found[0]


class ProgramFailed(Exception):
    """The program raised; `registrations` is what it had registered by then (for a refused config: none)."""

    def __init__(self, cause: BaseException, registrations: list[Registration]):
        super().__init__(str(cause))
        self.cause = cause
        self.registrations = registrations


def run_program(stack_config: StackConfig, program: Callable[[], None]) -> ProgramRun:
    """Run `program` for one stack under mocks, in a fresh context so runs never share SDK state.

    Release manifests are read from the mirror folder ($SETTLEMENT_MANIFEST_MIRROR, else ../shared/manifests),
    never downloaded."""

    def _run() -> ProgramRun:
        monitor = RecordingMonitor(PlatformMocks())
        pulumi.runtime.set_all_config(stack_config.runtime_config(), sorted(stack_config.secret_keys))
        pulumi.runtime.set_mocks(
            monitor.mocks,
            project=stack_config.project,
            stack=stack_config.stack,
            preview=False,
            monitor=monitor,
        )
        try:
            _sync_await(run_pulumi_func(program))
        except Exception as error:
            raise ProgramFailed(error, monitor.registrations) from error
        return ProgramRun(stack=stack_config.stack, registrations=monitor.registrations)

    previous = os.environ.get(MIRROR_ENV)
    os.environ[MIRROR_ENV] = previous or str(MANIFESTS_DIR)
    try:
        return _on_own_thread(lambda: contextvars.Context().run(_run), f"pulumi-program-{stack_config.stack}")
    finally:
        if previous is None:
            del os.environ[MIRROR_ENV]


def _on_own_thread(work: Callable[[], ProgramRun], name: str) -> ProgramRun:
    """`work()` on a new thread with its own event loop; its result returned or its exception raised here.

    The SDK records a stack trace with every registration: each frame below the resource's constructor, turned
    into a file URI and a protobuf message (pulumi/runtime/resource.py `_get_stack_trace`,
    `_get_source_position_for_frame`). A new thread's stack starts empty, as the language host's does, so the
    frames of whatever called the harness (pytest's forty or so, the bench's, the CLI's) are not paid again on every
    resource of every run."""
    outcome: list[tuple[bool, object]] = []

    def target() -> None:
        # asyncio.Runner makes the thread's loop and, on exit, cancels what a failed program left pending, stops the
        # default executor (the SDK registers resources from its threads) and closes the loop (cpython
        # Lib/asyncio/runners.py, `Runner.close`): no task destroyed pending, no thread outliving the run.
        try:
            with asyncio.Runner() as runner:
                runner.get_loop()  # the thread's current loop from here on, as the SDK expects
                outcome.append((True, work()))
        except BaseException as error:  # re-raised on the caller's thread, whatever it is
            outcome.append((False, error))

    # A daemon, so an interrupted render (Ctrl-C lands on the waiting caller) does not keep the process alive.
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]
