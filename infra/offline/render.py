"""Offline render: the real program for one stack under mocks, written out as manifests and a resource list."""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import yaml

from infra.alertmanager import alertmanager_config
from infra.config import Budget, PlatformConfig, alert_secret_keys
from infra.offline import charts, footprint
from infra.offline.caches import MANIFESTS_DIR, MIRROR_ENV, RENDER_CACHE_ENV, content_key, upstream_digest
from infra.offline.mocks import ProgramRun, run_program
from infra.stack_config import PROJECT_ROOT, StackConfig, code_files, plan_for_stack, read_stack_files

CLUSTER_SCOPED = "_cluster"
# libyaml's emitter when PyYAML has it: the same YAML (long strings wrap at other points), about four times faster
# over a stack's megabytes of CRDs.
SAFE_DUMPER = yaml.CSafeDumper if yaml.__with_libyaml__ else yaml.SafeDumper
# Read by `python -m infra diff` from renders of other git refs: keep the names stable.
REDACTED_ALERTMANAGER = "alertmanager.redacted.yaml"
DR_STATE = "dr-state.json"


def render_stack(stack: str, project_dir: Path = PROJECT_ROOT, *, reuse: bool = True) -> ProgramRun:
    """Run the program for `stack` from its real stack files and expand what its Helm releases install.

    With `RENDER_CACHE_ENV` set (and `reuse`), a render of the same content made before is read back instead: each
    caller gets its own copy. Processes share the folder; one renders a key while the others wait on its lock.
    `reuse=False`: made anew whatever the folder holds (the bench's timings, the determinism check).

    Raises ConfigError, pulumi.RunError (inside ProgramFailed) or charts.ChartCacheError; a failed render is not
    kept.
    """
    folder = os.environ.get(RENDER_CACHE_ENV) if reuse else None
    if not folder or "/" in stack or not (project_dir / f"Pulumi.{stack}.yaml").is_file():
        return _render(stack, project_dir)[0]  # (no such stack: the render says so, and nothing names a file)
    key = render_key(stack, project_dir)
    path = Path(folder) / f"{stack}-{key}.pickle"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            registered, kube_version = pickle.loads(path.read_bytes())
            return _with_charts(registered, kube_version)
        result, kube_version = _render(stack, project_dir)
        if render_key(stack, project_dir) != key:
            return result  # a stack file changed while the program ran: this render is of neither content
        # The registrations only: the chart objects are expanded again from them when read back (a millisecond
        # from the process's chart cache; pickled, they were nine tenths of the file).
        kept = pickle.dumps((dataclasses.replace(result, chart_objects=[]), kube_version), pickle.HIGHEST_PROTOCOL)
        path.with_suffix(".tmp").write_bytes(kept)
        path.with_suffix(".tmp").rename(path)
        return result


def render_key(stack: str, project_dir: Path) -> str:
    """Everything a render reads, by content: the stack's name; every stack file of the project (a drill reads its
    source stack's file, a disaster-recovery site its peers'); the running code; the upstream bytes, with the
    manifest mirror a program run reads from `MIRROR_ENV`; what else it reads from the environment (the build
    switch `BUILD_ON_PREVIEW`; config the SDK takes from `PULUMI_CONFIG`, pulumi/runtime/config.py `get_config_env`,
    read by `infra.stack_config`); the Python and every installed package's version. Not the project folder's path:
    a render holds none, so two copies of the same stack files are one render."""
    from infra.program import BUILD_ON_PREVIEW

    digest = hashlib.sha256(f"{stack}\0{_running_code()}\0".encode())
    _digest_files(digest, project_dir, sorted(project_dir.glob("Pulumi*.yaml")))
    mirror = Path(os.environ.get(MIRROR_ENV) or MANIFESTS_DIR)
    read = sorted(f"{k}={v}" for k, v in os.environ.items() if k == BUILD_ON_PREVIEW or k.startswith("PULUMI_CONFIG"))
    digest.update("\0".join([upstream_digest(mirror), *read]).encode())
    return digest.hexdigest()[:32]


@functools.cache
def _running_code() -> str:
    """The code this process runs, read once per process: its modules' bytes (`code_files`), the interpreter and
    every installed package's version."""
    digest = hashlib.sha256()
    _digest_files(digest, PROJECT_ROOT, code_files())
    # A set: a checkout's own egg-info, on the path when the process runs from it, lists the project a second time.
    installed = sorted({f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions()})
    digest.update("\n".join([sys.version, *installed]).encode())
    return digest.hexdigest()


def _digest_files(digest, root: Path, paths: list[Path]) -> None:
    for path in paths:
        digest.update(f"{path.relative_to(root)}\0".encode() + path.read_bytes() + b"\0")


def _render(stack: str, project_dir: Path) -> tuple[ProgramRun, str]:
    """The program's run with its charts expanded, within the stack's budget; and the Kubernetes version the charts
    were expanded for."""
    from infra.program import run

    config = read_stack_files(stack, project_dir)
    kube_version = f"v{kubernetes_version(config)}.0"
    result = _with_charts(run_program(config, lambda: run(offline=True, project_dir=project_dir)), kube_version)
    budget = config.values.get(f"{config.project}:budget")
    if budget is not None:
        footprint.check_budget(stack, footprint.footprint(result.all_objects()), Budget.model_validate(budget))
    return result, kube_version


def _with_charts(result: ProgramRun, kube_version: str) -> ProgramRun:
    result.chart_objects = charts.expand_run(result.registrations, kube_version)
    return result


def kubernetes_version(config: StackConfig) -> str:
    """The stack's target Kubernetes minor version, which the charts are rendered for (they gate on it)."""
    key = f"{config.project}:kubernetesVersion"
    return str(config.values.get(key, PlatformConfig.model_fields["kubernetes_version"].default))


_FIRST = ("apiVersion", "kind", "metadata", "spec")


def canonical(obj: dict) -> dict:
    """Keys in a stable order (apiVersion, kind, metadata, spec first; the rest sorted) for reviewable diffs."""

    def deep_sort(value):
        if isinstance(value, dict):
            return {k: deep_sort(value[k]) for k in sorted(value)}
        if isinstance(value, list):
            return [deep_sort(v) for v in value]
        return value

    ordered = {k: deep_sort(obj[k]) for k in _FIRST if k in obj}
    ordered.update({k: deep_sort(obj[k]) for k in sorted(obj) if k not in ordered})
    return ordered


def manifest_path(obj: dict) -> str:
    namespace = obj["metadata"].get("namespace") or CLUSTER_SCOPED
    return f"{namespace}/{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def manifests(result: ProgramRun) -> dict[str, dict]:
    """Every Kubernetes object - the program's and its releases' - keyed by its path under manifests/; two
    objects on one path is an error (in the cluster one would overwrite the other)."""
    out: dict[str, dict] = {}
    sources = [(r.urn, r.inputs) for r in result.registrations if r.is_kubernetes_object]
    sources += [(c.urn, c.object) for c in result.chart_objects]
    for urn, obj in sources:
        path = manifest_path(obj)
        if path in out:
            raise ValueError(f"two objects render to manifests/{path} (second: {urn})")
        out[path] = obj
    return out


def resources(result: ProgramRun) -> list[dict]:
    """resources.json: every registered resource and every object its Helm releases install, by URN."""
    entries = [r.to_json() for r in result.registrations] + [c.to_json() for c in result.chart_objects]
    return sorted(entries, key=lambda r: r["urn"])


def manifest_text(obj: dict) -> str:
    """The object as its manifest file holds it: canonical key order, YAML."""
    key = content_key(obj)
    if key is None:
        return yaml.dump(canonical(obj), Dumper=SAFE_DUMPER, sort_keys=False)
    return _manifest_text(key)


@functools.lru_cache(maxsize=4096)
def _manifest_text(key: str) -> str:
    # By content: the charts' objects (their CRDs most of the bytes) are the same in every stack, and YAML's
    # representer is pure Python even with libyaml's emitter; a process writing several renders dumps each once.
    return yaml.dump(canonical(json.loads(key)), Dumper=SAFE_DUMPER, sort_keys=False)


LIST_ONLY_ENV = "SETTLEMENT_RENDER_LIST_ONLY"
"""`1`: `python -m infra render` writes resources.json and the side files but no manifests/. The diff sets it for
its base renders, which it reads only through those (a base from before this setting writes manifests/ too)."""


def write(result: ProgramRun, out_dir: Path, with_manifests: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_dir = out_dir / "manifests"
    if manifest_dir.exists():
        shutil.rmtree(manifest_dir)
    for path, obj in sorted(manifests(result).items()) if with_manifests else ():
        target = manifest_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(manifest_text(obj))
    # One resource a line: as greppable as an indented file, and written by json's C encoder (indenting makes json
    # fall back to its pure-Python encoder, a second of a prod render).
    lines = (json.dumps(entry, sort_keys=True) for entry in resources(result))
    (out_dir / "resources.json").write_text("[\n" + ",\n".join(lines) + "\n]\n")


def redacted_alertmanager(stack: str, project_dir: Path = PROJECT_ROOT) -> dict:
    """alertmanager.yaml as the program generates it, each secret value shown as `<secret:KEY>`.

    The render masks the Alertmanager Secret whole, so its routing tree and receivers would never show in a
    review; this is the same generated config with only the values of the named secret keys left out.
    """
    plan = plan_for_stack(stack, project_dir)
    if plan.config.alerting is None:
        return {}  # a drill stack runs no Alertmanager
    return alertmanager_config(plan, {key: f"<secret:{key}>" for key in alert_secret_keys(plan.config)})


def write_redacted_alertmanager(stack: str, project_dir: Path, out_dir: Path) -> None:
    config = redacted_alertmanager(stack, project_dir)
    (out_dir / REDACTED_ALERTMANAGER).write_text(yaml.safe_dump(config, sort_keys=False))


def dr_state(stack: str, project_dir: Path = PROJECT_ROOT) -> dict | None:
    """The stack's disaster-recovery role as the diff needs it (which step of a switchover the config declares),
    or None for a stack without `dr`."""
    dr = plan_for_stack(stack, project_dir).config.dr
    if dr is None:
        return None
    sw = dr.switchover
    return {
        "site": dr.site,
        "primarySite": dr.primary_site,
        "switchover": {"fromSite": sw.from_site, "step": sw.step} if sw is not None else None,
        "fencedSites": sorted(dr.fenced_sites),
    }


def write_dr_state(stack: str, project_dir: Path, out_dir: Path) -> None:
    state = dr_state(stack, project_dir)
    target = out_dir / DR_STATE
    if state is None:
        target.unlink(missing_ok=True)
    else:
        target.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
