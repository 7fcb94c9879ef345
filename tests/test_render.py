"""The offline render: `python -m infra render <stack> --out DIR`, as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pulumi
import pulumi_kubernetes as k8s
import pytest
import yaml

from components.release_manifest import MIRROR_ENV
from infra.errors import ConfigError
from infra.offline import caches, render
from infra.offline.mocks import SECRET_MARKER, ProgramRun, Registration, run_program
from infra.stack_config import (
    PROJECT_ROOT,
    SECRET_PLACEHOLDER,
    StackConfig,
    plan_for_stack,
    read_stack_files,
    require_stack,
    stack_names,
)
from tests.cli import run_cli, run_cli_process
from tests.conftest import PLATFORM_STACKS, STACKS, STACKS_DIR


def test_render_writes_every_object_and_every_resource(tmp_path):
    stack = stack_names()[0]
    plan = plan_for_stack(stack)
    result = run_cli("render", stack, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    files = sorted(p.relative_to(tmp_path / "manifests").as_posix() for p in (tmp_path / "manifests").rglob("*.yaml"))
    for sub in plan.subsystems.values():
        assert f"_cluster/namespace-{sub.namespace}.yaml" in files
        assert {f"{sub.namespace}/deployment-{svc}.yaml" for svc in sub.services} <= set(files)
        if sub.postgres:
            assert f"{sub.namespace}/cluster-{sub.name}-db.yaml" in files
    svc = plan.services()[0]
    path = f"manifests/{plan.subsystems[svc.subsystem].namespace}/deployment-{svc.name}.yaml"
    deployment = yaml.safe_load((tmp_path / path).read_text())
    assert list(deployment)[:4] == ["apiVersion", "kind", "metadata", "spec"]
    assert type(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]) is int
    assert type(deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]) is int

    resources = json.loads((tmp_path / "resources.json").read_text())
    types = {r["type"] for r in resources}
    assert {
        "kubernetes:helm.sh/v3:Release",
        "settlement:platform:Platform",
        "kubernetes:apps/v1:Deployment",
    } <= types
    assert len(files) == sum(1 for r in resources if "kind" in r["inputs"] and "apiVersion" in r["inputs"])
    for r in resources:
        assert {"type", "name", "parent", "inputs"} <= set(r)


def test_render_is_deterministic(tmp_path, rendered):
    """The session's render, a fresh one, the session's read back from the run's render cache (its chart objects
    expanded again from its registrations) and a fresh one by the CLI in another process, under another hash seed,
    write the same resources.json."""
    assert os.environ.get(render.RENDER_CACHE_ENV), "the suite keeps its renders (tests/conftest.py)"
    stack = STACKS[0]
    runs = rendered[stack], render.render_stack(stack, STACKS_DIR, reuse=False), render.render_stack(stack, STACKS_DIR)
    for name, run in zip("abc", runs, strict=True):
        render.write(run, tmp_path / name, with_manifests=False)
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = {**os.environ, "PYTHONHASHSEED": seed, render.RENDER_CACHE_ENV: "", render.LIST_ONLY_ENV: "1"}
    other = run_cli_process("render", stack, "--out", str(tmp_path / "d"), "--project-dir", str(STACKS_DIR), env=env)
    assert other.returncode == 0, other.stderr
    texts = {(tmp_path / name / "resources.json").read_text() for name in "abcd"}
    assert len(texts) == 1 and '"type": "kubernetes:chart-object"' in texts.pop()


def test_a_render_is_kept_by_content_and_each_caller_gets_its_own_copy(project, tmp_path, monkeypatch):
    """`SETTLEMENT_RENDER_CACHE`: the same stack files (in another folder too) are one render; a changed file, a
    failed render, a render whose files changed while it ran and `reuse=False` render anew; an unknown stack names
    no file."""
    made, edits = [], []

    def program(stack, project_dir):  # stands in for the program: what is counted is how often it runs
        require_stack(stack, project_dir)  # as the render does first
        if "broken" in (project_dir / "Pulumi.yaml").read_text():
            raise RuntimeError("the program failed")
        for edit in edits:
            edit()
        made.append(stack)
        registration = Registration("urn:n", "t", "n", "", True, {"k": [len(made)]})
        return ProgramRun(stack=stack, registrations=[registration]), "v1.33.0"

    monkeypatch.setattr(render, "_render", program)
    monkeypatch.setenv(render.RENDER_CACHE_ENV, str(tmp_path / "renders"))
    stack = stack_names()[0]
    first = render.render_stack(stack, project.root)
    copy_dir = tmp_path / "copy"
    shutil.copytree(project.root, copy_dir)
    again = render.render_stack(stack, copy_dir)
    assert made == [stack] and again.registrations[0].inputs == first.registrations[0].inputs
    again.registrations[0].inputs["k"].append("changed by a caller")
    assert render.render_stack(stack, project.root).registrations[0].inputs == {"k": [1]}

    render.render_stack(stack, project.root, reuse=False)
    assert len(made) == 2
    (copy_dir / f"Pulumi.{stack}.yaml").write_text((copy_dir / f"Pulumi.{stack}.yaml").read_text() + "\n")
    render.render_stack(stack, copy_dir)
    assert len(made) == 3

    stack_file = copy_dir / f"Pulumi.{stack}.yaml"
    stack_file.write_text(stack_file.read_text() + "# not rendered yet\n")
    edits.append(lambda: stack_file.write_text(stack_file.read_text() + "# saved while it rendered\n"))
    render.render_stack(stack, copy_dir)  # not kept under the key of the files it started from ...
    edits.clear()
    stack_file.write_text(stack_file.read_text().removesuffix("# saved while it rendered\n"))
    render.render_stack(stack, copy_dir)  # ... so these files are rendered again
    assert len(made) == 5

    with pytest.raises(ConfigError):
        render.render_stack("../../escaped", copy_dir)
    assert not [p for p in tmp_path.parent.rglob("escaped*")], "a lock or render file named by the bad name"

    (copy_dir / "Pulumi.yaml").write_text((copy_dir / "Pulumi.yaml").read_text() + "# broken\n")
    for _ in range(2):  # a failure is not kept: the second call runs the program again and fails again
        with pytest.raises(RuntimeError):
            render.render_stack(stack, copy_dir)


def test_a_render_in_another_folder_finds_the_same_cache_folders(tmp_path, monkeypatch):
    """The diff renders another ref's code from a worktree (`caches.child_env`): a relative cache folder is made
    absolute for it; an empty chart cache (keep nothing) stays empty."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(caches.RENDER_CACHE_ENV, "renders")
    monkeypatch.setenv(caches.CHART_CACHE_ENV, "")
    env = caches.child_env()
    assert env[caches.RENDER_CACHE_ENV] == str(tmp_path.resolve() / "renders")
    assert env[caches.CHART_CACHE_ENV] == ""


def test_the_render_key_follows_everything_a_render_reads(project, tmp_path, monkeypatch):
    from infra.program import BUILD_ON_PREVIEW

    stacks = stack_names()
    stack, other = stacks[0], stacks[1]
    key = render.render_key(stack, project.root)
    copy_dir = tmp_path / "copy"
    shutil.copytree(project.root, copy_dir)
    assert render.render_key(stack, copy_dir) == key, "the project folder's path is not an input"
    assert render.render_key(other, project.root) != key
    # Another stack's file: a drill reads its source stack's, a disaster-recovery site its peers'.
    (copy_dir / f"Pulumi.{other}.yaml").write_text((copy_dir / f"Pulumi.{other}.yaml").read_text() + "\n")
    assert render.render_key(stack, copy_dir) != key
    # What the program reads from the environment.
    monkeypatch.setenv(BUILD_ON_PREVIEW, "true")
    assert render.render_key(stack, project.root) != key
    monkeypatch.delenv(BUILD_ON_PREVIEW)
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))
    assert render.render_key(stack, project.root) != key
    monkeypatch.delenv(MIRROR_ENV)
    monkeypatch.setenv("PULUMI_CONFIG", '{"settlement-platform:prometheusReplicas": "3"}')  # the SDK merges it in
    assert render.render_key(stack, project.root) != key
    monkeypatch.delenv("PULUMI_CONFIG")
    assert render.render_key(stack, project.root) == key


def test_a_manifest_is_written_as_yaml_dumps_it_whatever_its_keys():
    """Manifest text is cached by the object's JSON; an object JSON would change (a number as a key, which a
    chart's YAML may hold) is dumped as it is."""
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"}, "data": {8080: "x", 9090: 1.0}}
    assert render.manifest_text(obj) == yaml.dump(render.canonical(obj), Dumper=render.SAFE_DUMPER, sort_keys=False)
    assert "8080: x" in render.manifest_text(obj)


def test_a_list_only_render_writes_the_resource_list_without_manifests(tmp_path, monkeypatch):
    monkeypatch.setenv(render.LIST_ONLY_ENV, "1")
    result = run_cli("render", STACKS[0], "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "manifests").exists()
    assert json.loads((tmp_path / "resources.json").read_text())
    assert (tmp_path / render.REDACTED_ALERTMANAGER).exists() or plan_for_stack(STACKS[0]).config.alerting is None


def test_bad_config_exits_non_zero_with_the_field_named_and_no_traceback(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text((PROJECT_ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.dev.yaml").write_text(
        "config:\n  settlement-platform:defaults:\n    queue:\n      replicas: 4\n"
    )
    out = tmp_path / "out"
    # The real entry point, as a user meets a refused config. (The refusal that printed a traceback at exit before
    # infra/__main__.py closed the event loops is test_rabbitmq_operators' missing mirror file, also a process.)
    result = run_cli_process("render", "dev", "--out", str(out), "--project-dir", str(tmp_path))
    assert result.returncode == 2
    assert "defaults.queue.replicas: must be 1 or odd, got 4" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists(), "nothing is written for a refused config"


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize(
    "command", [["reachability", STACKS[0]], ["describe", STACKS[0]]], ids=["large-output", "small-output"]
)
def test_a_reader_that_stops_early_gets_no_traceback(command, buffered):
    """`python -m infra ... | head`: the reader has gone when the command writes. The entry point ends quietly with
    status 1 instead of a BrokenPipeError traceback: the reachability matrix (19 KB) fails at a write inside the
    command; buffered, the description (3 KB) fails at the flush after it; unbuffered (`PYTHONUNBUFFERED`, as CI
    machines often set), each write fails at once and leaves nothing to flush. The pipe is closed before the
    command has written anything, on every run."""
    env = {k: v for k, v in caches.child_env().items() if k != "PYTHONUNBUFFERED"}
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "infra", *command],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    process.stdout.close()  # as `head` does once it has its lines
    err = process.stderr.read().decode()
    assert process.wait(timeout=300) == 1, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_unknown_stack_is_named(tmp_path):
    result = run_cli("render", "no-such-stack", "--out", str(tmp_path))
    assert result.returncode == 2
    stacks = ", ".join(stack_names())
    assert f"'no-such-stack' has no Pulumi.no-such-stack.yaml (stacks: {stacks})" in result.stderr


def test_secure_values_become_placeholders_and_secret_keys(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text(
        "name: demo\nruntime: python\nconfig:\n  greeting:\n    value: hello\n  plain: 1\n"
    )
    (tmp_path / "Pulumi.s.yaml").write_text(
        "config:\n  demo:token:\n    secure: v1:AAAA\n  demo:nested:\n    a: {secure: v1:BBBB}\n    b: 2\n"
        "  demo:greeting: hi\n"
    )
    config = read_stack_files("s", tmp_path)
    assert config.values == {
        "demo:greeting": "hi",  # the stack file overrides the project value, key by key
        "demo:plain": 1,
        "demo:token": SECRET_PLACEHOLDER,
        "demo:nested": {"a": SECRET_PLACEHOLDER, "b": 2},
    }
    assert config.secret_keys == {"demo:token", "demo:nested"}
    assert config.runtime_config()["demo:nested"] == json.dumps({"a": SECRET_PLACEHOLDER, "b": 2}, sort_keys=True)


def test_secret_inputs_never_reach_the_output(tmp_path):
    def program():
        k8s.core.v1.Secret(
            "s",
            metadata={"name": "s", "namespace": "n"},
            string_data={"password": pulumi.Output.secret("hunter2")},
        )

    run = run_program(StackConfig("unit", "test", {}, frozenset()), program)
    render.write(run, tmp_path)
    written = (tmp_path / "resources.json").read_text() + (tmp_path / "manifests/n/secret-s.yaml").read_text()
    assert "hunter2" not in written
    assert SECRET_MARKER in written


def test_the_program_runs_on_a_stack_of_its_own(monkeypatch):
    """The harness runs a program on a new thread: the stack trace the SDK records per registration holds the
    program's frames and the SDK's, never pytest's (or any other caller's), which every resource would pay for."""
    from pulumi.runtime import resource as sdk_resource

    traces = []
    record = sdk_resource._get_stack_trace
    monkeypatch.setattr(sdk_resource, "_get_stack_trace", lambda: traces.append(record()) or traces[-1])

    def program():
        k8s.core.v1.ConfigMap("c", metadata={"name": "c", "namespace": "n"}, data={"k": "v"})

    run_program(StackConfig("unit", "test", {}, frozenset()), program)
    uris = [frame.pc.uri for trace in traces for frame in trace.frames]
    assert any(uri.endswith("/tests/test_render.py") for uri in uris), uris  # the program's own frame is there
    assert not [uri for uri in uris if "_pytest" in uri or "pluggy" in uri or "/runpy" in uri]


def test_the_recording_monitor_answers_as_the_sdks_mock_monitor(small_project, monkeypatch):
    """`RecordingMonitor._register` skips work the SDK's MockMonitor does (a second deserialisation, serialising the
    echoed outputs again): for every resource of an environment, what the program reads back from its answer is what
    it reads back from the SDK's."""
    from pulumi.runtime import mocks as sdk_mocks
    from pulumi.runtime import rpc

    from infra.offline import mocks

    compared = []
    fast = mocks.RecordingMonitor._register

    def both(self, request):
        response, inputs = fast(self, request)
        sdk = sdk_mocks.MockMonitor.RegisterResource(self, request)
        assert (response.urn, response.id) == (sdk.urn, sdk.id)
        assert rpc.deserialize_properties(response.object) == rpc.deserialize_properties(sdk.object), request.name
        compared.append(request.type)
        return response, inputs

    monkeypatch.setattr(mocks.RecordingMonitor, "_register", both)
    monkeypatch.delenv(render.RENDER_CACHE_ENV, raising=False)  # the program runs here, not read from the run's cache
    run = small_project.render(PLATFORM_STACKS[0])
    assert len(compared) == len(run.registrations)
    # Both kinds of answer were compared: echoed inputs, and outputs the mocks add (a generated password, a digest).
    assert {"random:index/randomPassword:RandomPassword", "kubernetes:apps/v1:Deployment"} <= set(compared)
