"""Offline preview diff for pull requests: what a change does to a stack, and what it would destroy.

Both sides are offline renders (no cluster, no credentials, so it also runs on pull requests from forks): the
working tree, and the base git ref checked out in a temporary worktree and rendered with its own code and
config. Resources are matched by URN. The report is Markdown for a PR comment: a summary per subsystem, the
field-level changes, and a **danger** section listing every delete or replacement of a stateful resource and
every change to a field Kubernetes cannot change in place (which forces a replacement).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.release_manifest import MIRROR_ENV
from infra.offline.mocks import DEFAULT_MANIFEST_MIRROR
from infra.offline.safety import STATEFUL_KINDS

SUBSYSTEM_COMPONENT = "settlement:platform:Subsystem"
SHARED = "infrastructure"

# Fields the API server will not change in place: changing them means delete and re-create.
IMMUTABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec.selector",),
    "StatefulSet": ("spec.selector", "spec.volumeClaimTemplates", "spec.serviceName", "spec.podManagementPolicy"),
    "DaemonSet": ("spec.selector",),
    "Job": ("spec.selector", "spec.template"),
    "Service": ("spec.clusterIP", "spec.clusterIPs", "spec.type", "spec.ipFamilies"),
    "PersistentVolumeClaim": ("spec.storageClassName", "spec.accessModes", "spec.volumeName", "spec.selector"),
    "Cluster": ("spec.bootstrap", "spec.storage.storageClass"),
    "RabbitmqCluster": ("spec.persistence.storageClassName",),
}
# Every Kubernetes object is identified by these: a change is a replacement.
IDENTITY_FIELDS = ("apiVersion", "kind", "metadata.name", "metadata.namespace")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists as {"a.b[0].c": leaf}; an empty dict or list is a leaf."""
    if isinstance(value, dict) and value:
        out = {}
        for key in sorted(value):
            out.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any


@dataclass
class ResourceChange:
    urn: str
    action: str  # created | deleted | changed | replaced
    label: str
    subsystem: str
    fields: list[FieldChange] = field(default_factory=list)
    dangers: list[str] = field(default_factory=list)


def _label(resource: dict) -> str:
    inputs = resource.get("inputs", {})
    if "kind" in inputs and "metadata" in inputs:
        ns = inputs["metadata"].get("namespace")
        return f"{inputs['kind']} {ns + '/' if ns else ''}{inputs['metadata'].get('name')}"
    return f"{resource['type'].rsplit(':', 1)[-1]} {resource['name']}"


def _subsystems(resources: list[dict]) -> dict[str, str]:
    """URN -> the subsystem whose component (transitively) parents it; everything else is shared."""
    by_urn = {r["urn"]: r for r in resources}
    out = {}
    for r in resources:
        node, owner = r, SHARED
        while node is not None:
            if node["type"] == SUBSYSTEM_COMPONENT:
                owner = node["inputs"].get("subsystem", node["name"])
                break
            node = by_urn.get(node.get("parent"))
        out[r["urn"]] = owner
    return out


def _subsystem_name(resource: dict, fallback: str) -> str:
    labels = resource.get("inputs", {}).get("metadata", {}).get("labels") or {}
    return labels.get("platform.settlement.io/subsystem", fallback)


def _immutable_hits(kind: str | None, changes: list[FieldChange]) -> list[str]:
    hits = []
    for prefix in (*IDENTITY_FIELDS, *IMMUTABLE_FIELDS.get(kind or "", ())):
        if any(c.path == prefix or c.path.startswith((f"{prefix}.", f"{prefix}[")) for c in changes):
            hits.append(prefix)
    return hits


def diff(base: list[dict], head: list[dict]) -> list[ResourceChange]:
    before = {r["urn"]: r for r in base}
    after = {r["urn"]: r for r in head}
    owners = {**_subsystems(base), **_subsystems(head)}
    changes = []
    for urn in sorted(before.keys() | after.keys()):
        old, new = before.get(urn), after.get(urn)
        resource = new or old
        kind = resource.get("inputs", {}).get("kind")
        change = ResourceChange(urn, "", _label(resource), _subsystem_name(resource, owners.get(urn, SHARED)))
        stateful = kind in STATEFUL_KINDS
        if old is None:
            change.action = "created"
        elif new is None:
            change.action = "deleted"
            if stateful:
                guard = "blocked by protect" if old.get("protect") else "NOT protected"
                change.dangers.append(f"deletes stateful {change.label} ({guard})")
        else:
            flat_old, flat_new = flatten(old["inputs"]), flatten(new["inputs"])
            change.fields = [
                FieldChange(p, flat_old.get(p), flat_new.get(p))
                for p in sorted(flat_old.keys() | flat_new.keys())
                if flat_old.get(p) != flat_new.get(p)
            ]
            for flag in ("protect", "retainOnDelete"):
                if old.get(flag) != new.get(flag):
                    change.fields.append(FieldChange(f"<option> {flag}", old.get(flag), new.get(flag)))
                    if stateful and old.get(flag) and not new.get(flag):
                        change.dangers.append(f"removes {flag} from stateful {change.label}")
            if not change.fields:
                continue
            hits = _immutable_hits(kind, change.fields)
            change.action = "replaced" if hits else "changed"
            for hit in hits:
                what = "stateful " if stateful else ""
                change.dangers.append(f"{hit} of {what}{change.label} cannot change in place: forces a replacement")
        changes.append(change)
    return changes


def _value(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"`{text}`" if v is not None else "_(none)_"


def report(stack: str, base_ref: str, changes: list[ResourceChange]) -> str:
    dangers = [d for c in changes for d in c.dangers]
    lines = [f"### `{stack}`: offline preview against `{base_ref}`", ""]
    if not changes:
        return "\n".join([*lines, "No changes."])
    if dangers:
        lines += ["#### :warning: Danger", ""] + [f"- {d}" for d in dangers] + [""]
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for c in changes:
        counts[c.subsystem][c.action] += 1
    lines += ["| subsystem | created | changed | replaced | deleted |", "|---|---|---|---|---|"]
    for sub in sorted(counts):
        row = counts[sub]
        lines.append(f"| {sub} | {row['created']} | {row['changed']} | {row['replaced']} | {row['deleted']} |")
    lines += ["", "<details><summary>Field-level changes</summary>", ""]
    for c in changes:
        lines.append(f"- **{c.action}** {c.label}")
        for f in c.fields:
            lines.append(f"  - `{f.path}`: {_value(f.before)} → {_value(f.after)}")
    lines += ["", "</details>"]
    return "\n".join(lines)


def render_ref(stack: str, ref: str, repo: Path) -> list[dict]:
    """Render `stack` as it is at git `ref`, with that ref's own code and config, in a temporary worktree."""
    with tempfile.TemporaryDirectory(prefix="settlement-diff-") as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "out"
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref], check=True, capture_output=True
        )
        try:
            if not (tree / f"Pulumi.{stack}.yaml").exists():
                return []  # the stack is new in this change: everything is created
            result = subprocess.run(
                [sys.executable, "-m", "infra", "render", stack, "--out", str(out)],
                cwd=tree,
                capture_output=True,
                text=True,
                # The worktree has no ../shared beside it: read release manifests from this checkout's mirror.
                env={**os.environ, MIRROR_ENV: os.environ.get(MIRROR_ENV) or str(DEFAULT_MANIFEST_MIRROR)},
            )
            if result.returncode != 0:
                raise RuntimeError(f"rendering {stack!r} at {ref} failed:\n{result.stderr.strip()}")
            return json.loads((out / "resources.json").read_text())
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True)
