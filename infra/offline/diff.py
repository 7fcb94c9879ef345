"""Offline preview diff for pull requests: what a change does to a stack, and what it would destroy.

Both sides are offline renders (no cluster, no credentials, so it also runs on pull requests from forks): the
working tree, and the base git ref checked out in a temporary worktree and rendered with its own code and config (in
this process when that code is the running code, `_runs_this_code`). Resources are matched by URN. The report is
Markdown for a PR comment: a **danger** section listing every delete or replacement of a stateful resource and every
change to a field Kubernetes cannot change in place (which forces a replacement); then the changes grouped by
subsystem, namespace or Helm release, one line per resource with its field-level changes below; then the
Alertmanager routing, with secret values redacted.

List items are matched by identity, not position (`IDENTITIES`), so adding one service or one consumer shows
what was added, not a cascade of shifted indices.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.sizing import parse_quantity
from infra.offline import caches, upstream
from infra.offline.render import DR_STATE, LIST_ONLY_ENV, REDACTED_ALERTMANAGER
from infra.offline.safety import STATEFUL_KINDS
from infra.stack_config import PROJECT_ROOT, code_files

SUBSYSTEM_COMPONENT = "settlement:platform:Subsystem"
SUBSYSTEM_LABEL = "platform.settlement.io/subsystem"
HELM_RELEASE_TYPES = frozenset({"kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart"})
# An object a Helm chart installs, recorded with the release as its parent (urn: <release urn>$<apiVersion>/...).
CHART_OBJECT = "kubernetes:chart-object"
SHARED = "infrastructure"

# Fields whose change makes pulumi-kubernetes replace the object (delete and re-create) instead of patching it:
# `forceNew` in provider/pkg/provider/diff.go (pulumi-kubernetes 4.34), plus metadata.name/namespace for every
# kind. A custom resource (CloudNativePG Cluster, RabbitmqCluster, ...) is replaced only when its name or
# namespace changes; what its operator refuses or ignores is `OPERATOR_RULES` below. Secrets and ConfigMaps:
# data changes are patched in place because the platform's provider sets enableSecretMutable and
# enableConfigMapMutable (infra/program.py); only an `immutable: true` one is still replaced (`_replaced_paths`).
IMMUTABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec.selector",),
    "DaemonSet": ("spec.selector",),
    "StatefulSet": (
        "spec.podManagementPolicy",
        "spec.revisionHistoryLimit",
        "spec.selector",
        "spec.serviceName",
        "spec.volumeClaimTemplates",
    ),
    "Job": ("spec.completions", "spec.parallelism", "spec.selector", "spec.template"),
    "Service": ("spec.clusterIP",),
    "PersistentVolumeClaim": ("spec.accessModes", "spec.selector", "spec.storageClassName", "spec.volumeName"),
    "ResourceQuota": ("spec.scopes",),
    "Secret": ("type",),
    "RoleBinding": ("roleRef",),
    "ClusterRoleBinding": ("roleRef",),
    "StorageClass": ("parameters", "provisioner"),
}
# Every Kubernetes object is identified by these: a change is a replacement.
IDENTITY_FIELDS = ("apiVersion", "kind", "metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Identity:
    """How the items of one list of mappings are told apart.

    `fields`: an item's identity is the value of the first of these it has; every item must have one.
    `qualifiers`: added to the identity only when `fields` alone repeat within the list (Prometheus, for one,
    tells two rules of the same name apart by their static labels).
    """

    fields: tuple[str, ...]
    qualifiers: tuple[str, ...] = ()


# Tried in order; the first that every item of both versions of a list has, and that is unique within each
# version, keys the list. Mostly Kubernetes' own strategic-merge keys (volumeMounts by mountPath, containers,
# volumes and env by name), then the identities of the generated configs: alert and recording rules, network
# policy rules by their peer, Alertmanager routes by their matchers. A list no identity fits is compared by
# position.
IDENTITIES: tuple[Identity, ...] = (
    Identity(("mountPath",)),
    Identity(("name",)),
    Identity(("alert", "record"), ("labels",)),
    Identity(("from",), ("ports",)),
    Identity(("to",), ("ports",)),
    Identity(("matchers",)),
    Identity(("source_matchers",), ("target_matchers",)),
    Identity(("key",)),
    Identity(("topologyKey",)),
    Identity(("containerPort",)),
    Identity(("port",), ("protocol",)),
)


def _brief(value: Any) -> str:
    """An identity written short: label sets as `k=v,k=v` (selector wrappers dropped), lists joined by `|`."""
    if isinstance(value, dict):
        return ",".join(_brief(v) if isinstance(v, dict | list) else f"{k}={v}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return "|".join(_brief(v) for v in value)
    return str(value)


def _identity(item: dict, identity: Identity, qualified: bool) -> tuple[str, str] | None:
    """(key to match on, label to show), or None when the item has none of the identity's fields."""
    name = next((f for f in identity.fields if f in item), None)
    if name is None:
        return None
    quals = {q: item[q] for q in identity.qualifiers if q in item} if qualified else {}
    key = json.dumps([name, item[name], quals], sort_keys=True)
    label = _brief(item[name]) + (f"{{{_brief(quals)}}}" if quals else "")
    return key, label


def _keyed(old: list, new: list) -> tuple[dict[str, tuple[str, Any]], dict[str, tuple[str, Any]]] | None:
    """Both lists as {key: (label, item)} under the first identity that fits both, or None (by position)."""
    if not all(isinstance(item, dict) for item in (*old, *new)) or not (old or new):
        return None
    for identity in IDENTITIES:
        for qualified in (False, True) if identity.qualifiers else (False,):
            sides = []
            for items in (old, new):
                ids = [_identity(item, identity, qualified) for item in items]
                if None in ids or len({i[0] for i in ids}) != len(ids):
                    break
                sides.append({key: (label, item) for (key, label), item in zip(ids, items, strict=True)})
            else:
                labels = [label for side in sides for label, _ in side.values()]
                keys = [key for side in sides for key in side]
                if len(set(labels)) < len(set(keys)):  # short labels collide: show the full identity
                    sides = [{key: (key, item) for key, (_, item) in side.items()} for side in sides]
                return sides[0], sides[1]
    return None


def _is_scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, dict | list) for v in value)


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any


def compare(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Field-level changes from `old` to `new`: mappings by key, lists of mappings by item identity.

    A list of plain values is one field. An item only one side has is one change holding the whole item.
    """
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(old.keys() | new.keys()):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                changes.append(FieldChange(sub, old.get(key), new.get(key)))
            else:
                changes += compare(old[key], new[key], sub)
        return changes
    if isinstance(old, list) and isinstance(new, list) and not (_is_scalar_list(old) and _is_scalar_list(new)):
        keyed = _keyed(old, new)
        if keyed is None:  # by position, in index order
            changes = []
            for i in range(max(len(old), len(new))):
                if i < len(old) and i < len(new):
                    changes += compare(old[i], new[i], f"{path}[{i}]")
                else:
                    changes.append(
                        FieldChange(f"{path}[{i}]", old[i] if i < len(old) else None, new[i] if i < len(new) else None)
                    )
            return changes
        before, after = keyed
        changes = []
        # The new version's order (the program's), then what it dropped in the old order.
        for key in [*after, *(k for k in before if k not in after)]:
            label = (after.get(key) or before.get(key))[0]
            sub = f"{path}[{label}]"
            if key in before and key in after:
                changes += compare(before[key][1], after[key][1], sub)
            else:
                changes.append(FieldChange(sub, before.get(key, (None, None))[1], after.get(key, (None, None))[1]))
        return changes
    return [FieldChange(path, old, new)]


@dataclass
class ResourceChange:
    urn: str
    action: str  # created | deleted | changed | replaced
    label: str
    group: str
    """The subsystem, namespace or Helm release it belongs to, for the report's sections."""
    fields: list[FieldChange] = field(default_factory=list)
    dangers: list[str] = field(default_factory=list)
    expected: str | None = None
    """The declared switchover or failover step this change belongs to (README "Disaster recovery")."""


def _label(resource: dict) -> str:
    inputs = resource.get("inputs", {})
    if "kind" in inputs and "metadata" in inputs:
        ns = inputs["metadata"].get("namespace")
        return f"{inputs['kind']} {ns + '/' if ns else ''}{inputs['metadata'].get('name')}"
    return f"{resource['type'].rsplit(':', 1)[-1]} {resource['name']}"


def _release_group(release: dict | None, urn: str) -> str:
    name = (release or {}).get("inputs", {}).get("name") or urn.rsplit("::", 1)[-1]
    return f"{name} (Helm release)"


def groups(resources: list[dict]) -> dict[str, str]:
    """URN -> the section of the report it belongs in.

    A Helm release and everything under it (the objects its chart installs) form one section, named after the
    release; then the subsystem (its label, or the Subsystem component that parents it); then the object's
    namespace; anything else (cluster-scoped objects, shared components) is `infrastructure`.
    """
    by_urn = {r["urn"]: r for r in resources}
    return {urn: _group(r, by_urn) for urn, r in by_urn.items()}


def _group(resource: dict, by_urn: dict[str, dict]) -> str:
    subsystem = None
    node: dict | None = resource
    while node is not None:
        if node["type"] in HELM_RELEASE_TYPES:
            return _release_group(node, node["urn"])
        if node["type"] == CHART_OBJECT and node.get("parent") not in by_urn:
            return _release_group(None, node["parent"])  # its release is not in this list: name it from the URN
        if node["type"] == SUBSYSTEM_COMPONENT and subsystem is None:
            subsystem = node.get("inputs", {}).get("subsystem", node["name"])
        node = by_urn.get(node.get("parent"))
    metadata = resource.get("inputs", {}).get("metadata") or {}
    return (metadata.get("labels") or {}).get(SUBSYSTEM_LABEL) or subsystem or metadata.get("namespace") or SHARED


def _immutable_hits(replaced: tuple[str, ...], changes: list[FieldChange]) -> list[str]:
    hits = []
    for prefix in (*IDENTITY_FIELDS, *replaced):
        if any(c.path == prefix or c.path.startswith((f"{prefix}.", f"{prefix}[")) for c in changes):
            hits.append(prefix)
    return hits


def _replaced_paths(kind: str | None, inputs: dict) -> tuple[str, ...]:
    """Replacement fields of this object: its kind's, plus the data of an immutable Secret or ConfigMap
    (forceNewProperties: clients.IsImmutable keeps them replace-on-change even with the mutable flags)."""
    paths = IMMUTABLE_FIELDS.get(kind or "", ())
    if kind in ("Secret", "ConfigMap") and inputs.get("immutable") is True:
        paths += ("data", "stringData", "binaryData")
    return paths


def _quantity(value: Any) -> float | None:
    try:
        return parse_quantity(str(value))
    except (ValueError, TypeError):
        return None


def _get(obj: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _shrinks(path: str):
    def rule(old: dict, new: dict) -> bool:
        before, after = _quantity(_get(old, path)), _quantity(_get(new, path))
        return before is not None and after is not None and after < before

    return rule


def _decreases(path: str):
    def rule(old: dict, new: dict) -> bool:
        before, after = _get(old, path), _get(new, path)
        return isinstance(before, int | float) and isinstance(after, int | float) and after < before

    return rule


def _changes(path: str):
    return lambda old, new: _get(old, path) != _get(new, path)


def _major(image: Any) -> int | None:
    tag = str(image or "").rpartition(":")[2].split("@")[0]
    head = tag.split(".")[0].split("-")[0]
    return int(head) if head.isdigit() else None


def _major_downgrade(old: dict, new: dict) -> bool:
    before, after = _major(_get(old, "spec.imageName")), _major(_get(new, "spec.imageName"))
    return before is not None and after is not None and after < before


@dataclass(frozen=True)
class OperatorRule:
    kind: str
    path: str
    applies: Any
    """(old inputs, new inputs) -> whether the change breaks the rule."""
    reason: str


# What the data operators refuse (the update fails half-way) or silently ignore on an existing cluster (the
# review would believe something changed), read in their sources:
# - CloudNativePG v1.30.0 internal/webhook/v1/cluster_webhook.go: validateClusterChanges (storage and WAL storage
#   cannot shrink, postgresUID/GID are immutable, no major-version downgrade); spec.bootstrap is read only when the
#   cluster is created, and storage.storageClass only for new volumes (existing PVCs keep theirs).
# - RabbitMQ cluster-operator v2.22.3: internal/controller/reconcile_scale_down.go (scale down is refused),
#   internal/scaling/scaling.go (volumes cannot shrink), internal/resource/statefulset.go Update (only the
#   storage size of volumeClaimTemplates is reconciled, so a new storageClassName never reaches a volume).
OPERATOR_RULES: tuple[OperatorRule, ...] = (
    OperatorRule(
        "Cluster",
        "spec.storage.size",
        _shrinks("spec.storage.size"),
        "refused by CloudNativePG's webhook: storage cannot shrink",
    ),
    OperatorRule(
        "Cluster",
        "spec.walStorage.size",
        _shrinks("spec.walStorage.size"),
        "refused by CloudNativePG's webhook: WAL storage cannot shrink",
    ),
    OperatorRule(
        "Cluster",
        "spec.postgresUID",
        _changes("spec.postgresUID"),
        "refused by CloudNativePG's webhook: the UID is immutable",
    ),
    OperatorRule(
        "Cluster",
        "spec.postgresGID",
        _changes("spec.postgresGID"),
        "refused by CloudNativePG's webhook: the GID is immutable",
    ),
    OperatorRule(
        "Cluster",
        "spec.imageName",
        _major_downgrade,
        "refused by CloudNativePG's webhook: no PostgreSQL major-version downgrade",
    ),
    OperatorRule(
        "Cluster",
        "spec.bootstrap",
        _changes("spec.bootstrap"),
        "ignored by CloudNativePG on an existing cluster: bootstrap runs only at creation (restore into a "
        "new cluster instead)",
    ),
    OperatorRule(
        "Cluster",
        "spec.storage.storageClass",
        _changes("spec.storage.storageClass"),
        "ignored by CloudNativePG for existing volumes: only new instances get the new class",
    ),
    OperatorRule(
        "RabbitmqCluster",
        "spec.replicas",
        _decreases("spec.replicas"),
        "refused by the RabbitMQ cluster operator: scale down is not supported",
    ),
    OperatorRule(
        "RabbitmqCluster",
        "spec.persistence.storage",
        _shrinks("spec.persistence.storage"),
        "refused by the RabbitMQ cluster operator: persistent volumes cannot shrink",
    ),
    OperatorRule(
        "RabbitmqCluster",
        "spec.persistence.storageClassName",
        _changes("spec.persistence.storageClassName"),
        "ignored by the RabbitMQ cluster operator: existing volumes keep their class",
    ),
)


# Which site's database accepts writes (CloudNativePG distributed topology, cloudnative-pg v1.30.0
# docs/src/replica_cluster.md): changing it demotes or promotes a cluster. Only a declared switchover step or a
# recorded failover makes that expected (`switchover_context`); otherwise it is danger.
ROLE_PATHS = ("spec.replica.primary", "spec.replica.promotionToken")


def _role_change(kind: str | None, fields: list[FieldChange]) -> bool:
    return kind == "Cluster" and any(f.path in ROLE_PATHS for f in fields)


def switchover_context(base: dict | None, head: dict | None) -> str | None:
    """What the config says is in progress (the `dr-state.json` of both renders), or None.

    A switchover step is declared by `dr.switchover` on either side (its last change removes it); a failover by a
    site newly in `dr.fencedSites` together with a new primary site."""
    if head is None:
        return None
    for side, when in ((head, ""), (base, "ending ")):
        sw = (side or {}).get("switchover")
        if sw is not None:
            return f"{when}switchover from site {sw['fromSite']}, step `{sw['step']}`"
    newly_fenced = sorted(set(head.get("fencedSites", [])) - set((base or {}).get("fencedSites", [])))
    if newly_fenced and base is not None and base.get("primarySite") != head.get("primarySite"):
        return f"failover to site {head['primarySite']} (site {', '.join(newly_fenced)} fenced; data loss possible)"
    return None


def _switchover_expected(kind: str | None, change: ResourceChange) -> bool:
    """The objects a switchover or failover step changes, and nothing else: the databases' roles, the
    applications' size (their autoscalers, pause and disruption budgets) and the role-dependent alert rules."""
    if change.action in ("created", "deleted"):
        return kind == "PodDisruptionBudget"
    paths = [f.path for f in change.fields]
    allowed = {
        "Cluster": ("spec.replica.",),
        "HorizontalPodAutoscaler": ("spec.minReplicas",),
        "PodDisruptionBudget": ("spec.minAvailable",),
        "ScaledObject": ("spec.minReplicaCount", "metadata.annotations"),
        "PrometheusRule": ("spec.groups[disaster-recovery]",),
    }.get(kind or "")
    return allowed is not None and all(any(p.startswith(a) for a in allowed) for p in paths)


def _operator_dangers(kind: str | None, label: str, old: dict, new: dict) -> list[str]:
    return [
        f"`{rule.path}` of {label}: {rule.reason}"
        for rule in OPERATOR_RULES
        if rule.kind == kind and rule.applies(old, new)
    ]


def _identity_key(resource: dict) -> tuple | None:
    """(apiVersion, kind, namespace, name) of an object the program registers itself (Helm's are Helm's)."""
    inputs = resource.get("inputs", {})
    if resource.get("type") == CHART_OBJECT or "kind" not in inputs or "metadata" not in inputs:
        return None
    meta = inputs["metadata"]
    return inputs.get("apiVersion"), inputs["kind"], meta.get("namespace"), meta.get("name")


def _renames(before: dict[str, dict], after: dict[str, dict]) -> dict[str, str]:
    """New URN -> old URN of the same Kubernetes object registered under another URN (renamed resource, moved
    component): the engine creates the new one before deleting the old, and since pulumi-kubernetes 4.29 that
    create fails with AlreadyExists (await.go Creation) - which `pulumi preview` does not show
    (provider.go Create: in a preview an AlreadyExists error is swallowed)."""
    gone = {_identity_key(before[u]): u for u in before.keys() - after.keys()}
    gone.pop(None, None)
    return {
        urn: gone[key]
        for urn in sorted(after.keys() - before.keys())
        if (key := _identity_key(after[urn])) is not None and key in gone
    }


def diff(base: list[dict], head: list[dict], switchover: str | None = None) -> list[ResourceChange]:
    """Changes from `base` to `head`; `switchover` (`switchover_context`): the declared step, whose changes are
    marked expected instead of danger."""
    before = {r["urn"]: r for r in base}
    after = {r["urn"]: r for r in head}
    owners = {**groups(base), **groups(head)}
    renames = _renames(before, after)
    renamed_from = set(renames.values())
    changes = []
    for urn in sorted(before.keys() | after.keys()):
        old, new = before.get(urn), after.get(urn)
        resource = new or old
        kind = resource.get("inputs", {}).get("kind")
        change = ResourceChange(urn, "", _label(resource), owners[urn])
        stateful = kind in STATEFUL_KINDS
        if old is None:
            change.action = "created"
            if urn in renames:
                change.dangers.append(
                    f"{change.label} moves from `{renames[urn]}` to `{urn}`: the create fails with AlreadyExists "
                    f'(and preview does not show it); add `aliases=[pulumi.Alias(urn="{renames[urn]}")]` to the '
                    "new resource"
                )
        elif new is None:
            change.action = "deleted"
            if stateful and urn not in renamed_from:
                guard = "blocked by protect" if old.get("protect") else "NOT protected"
                change.dangers.append(f"deletes stateful {change.label} ({guard})")
        else:
            change.fields = compare(old["inputs"], new["inputs"])
            for flag in ("protect", "retainOnDelete"):
                if old.get(flag) != new.get(flag):
                    change.fields.append(FieldChange(f"<option> {flag}", old.get(flag), new.get(flag)))
                    if stateful and old.get(flag) and not new.get(flag):
                        change.dangers.append(f"removes {flag} from stateful {change.label}")
            if not change.fields:
                continue
            hits = _immutable_hits(_replaced_paths(kind, new["inputs"]), change.fields)
            change.action = "replaced" if hits else "changed"
            for hit in hits:
                what = "stateful " if stateful else ""
                change.dangers.append(f"{hit} of {what}{change.label} cannot change in place: forces a replacement")
            change.dangers += _operator_dangers(kind, change.label, old["inputs"], new["inputs"])
            if _role_change(kind, change.fields):
                change.dangers.append(
                    f"`spec.replica` of {change.label} moves the primary role between sites, but no switchover "
                    "(dr.switchover) or failover (dr.fencedSites) is declared"
                )
        if switchover is not None and _switchover_expected(kind, change):
            change.expected, change.dangers = switchover, []
        changes.append(change)
    return changes


@dataclass(frozen=True)
class Rendered:
    """One side of the diff: what `python -m infra render` wrote."""

    resources: list[dict]
    alertmanager: dict | None
    """The redacted Alertmanager config; None when that side's code did not write it (older refs)."""
    dr_state: dict | None = None
    """The disaster-recovery state (`DR_STATE`); None without `dr` or from older refs."""


def _value(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    # Long enough for a whole NetworkPolicy rule or alert rule, so a reviewer sees the new peer or expression.
    text = text if len(text) <= 400 else text[:397] + "..."
    return f"`{text}`" if v is not None else "_(none)_"


def _field_line(f: FieldChange) -> str:
    return f"`{f.path}`: {_value(f.before)} → {_value(f.after)}"


SYMBOLS = {"created": "+", "changed": "~", "replaced": "+-", "deleted": "-"}
ACTIONS = ("created", "changed", "replaced", "deleted")


def _counts(changes: list[ResourceChange]) -> str:
    counts = Counter(c.action for c in changes)
    return ", ".join(f"{counts[a]} object{'s' if counts[a] != 1 else ''} {a}" for a in ACTIONS if counts[a])


def _summary(c: ResourceChange) -> str:
    n = len(c.fields)
    fields = f": {n} field{'s' if n != 1 else ''}" if c.action in ("changed", "replaced") else ""
    return f"`{SYMBOLS[c.action]}` {c.label}{fields}"


def report(
    stack: str,
    base_ref: str,
    changes: list[ResourceChange],
    alertmanager: tuple[dict | None, dict | None] = (None, None),
) -> str:
    """Markdown for a PR comment. `alertmanager`: the redacted Alertmanager config of the base and the head."""
    lines = [f"### `{stack}`: offline preview against `{base_ref}`", ""]
    old_am, new_am = alertmanager
    routing = compare(old_am, new_am) if old_am is not None and new_am is not None else []
    if old_am is None and new_am is not None:
        lines += [f"_`{base_ref}` renders no `{REDACTED_ALERTMANAGER}`: Alertmanager routing not compared._", ""]
    if not changes and not routing:
        return "\n".join([*lines, "No changes."])
    dangers = [d for c in changes for d in c.dangers]
    if dangers:
        lines += ["#### :warning: Danger", ""] + [f"- {d}" for d in dangers] + [""]
    expected = [c for c in changes if c.expected is not None]
    if expected:
        lines += [f"#### Expected: {expected[0].expected}", ""]
        lines += ['The config declares this step (README "Disaster recovery"); these changes are it:', ""]
        lines += [f"- {_summary(c)}" + "".join(f"; {_field_line(f)}" for f in c.fields) for c in expected]
        lines.append("")
    by_group: dict[str, list[ResourceChange]] = {}
    for c in changes:
        by_group.setdefault(c.group, []).append(c)
    for group in sorted(by_group):
        members = by_group[group]
        lines += [f"#### {group}: {_counts(members)}", ""]
        lines += [f"- {_summary(c)}" for c in members]
        detailed = [c for c in members if c.fields]
        if detailed:
            lines += ["", f"<details><summary>{group}: field-level changes</summary>", ""]
            for c in detailed:
                lines.append(f"- {_summary(c)}")
                lines += [f"  - {_field_line(f)}" for f in c.fields]
            lines += ["", "</details>"]
        lines.append("")
    if routing:
        lines += ["#### Alertmanager routing (secret values redacted)", ""]
        lines += [f"- {_field_line(f)}" for f in routing]
    return "\n".join(lines).rstrip()


class DiffError(Exception):
    """The diff cannot be made (bad ref, the base does not render): a tool or config error, not danger."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise DiffError("git is not installed: the diff renders the base ref from a git worktree") from None


def _render_failure(stack: str, ref: str, stderr: str) -> DiffError:
    """The base's own error report; for a crash only its last line (the traceback is the base's, not ours)."""
    text = stderr.strip()
    if "Traceback (most recent call last)" in text:
        last = text.splitlines()[-1]
        text = f"{last}\n(`git checkout {ref} && python -m infra render {stack} --out <dir>` shows the traceback)"
    return DiffError(f"rendering {stack!r} at {ref} failed:\n{text}")


BASE_CACHE_ENV = "SETTLEMENT_DIFF_BASE_CACHE"
"""A folder where the base renders are kept, by git tree: a base is rendered once however often it is compared
(several stacks' previews against one base, a diff re-run locally, the tests). Unset: nothing is kept."""


def render_ref(stack: str, ref: str, repo: Path) -> Rendered:
    """Render `stack` as it is at git `ref`, with that ref's own code and config, in a temporary worktree.

    With `BASE_CACHE_ENV` set, a render is kept under the ref's tree hash (its code and config, byte for byte),
    the stack, the Python version and the upstream bytes, and reused."""
    resolved = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        where = _git(repo, "rev-parse", "--show-toplevel")
        if where.returncode != 0:
            raise DiffError(f"--base {ref!r}: {repo} is not in a git repository")
        raise DiffError(f"--base {ref!r} is not a commit in {where.stdout.strip()} (fetched? try origin/main)")
    commit = resolved.stdout.strip()
    _check_upstream_for(ref, commit, repo)
    cache = os.environ.get(BASE_CACHE_ENV)
    if not cache:
        with tempfile.TemporaryDirectory(prefix="settlement-diff-") as tmp:
            return _render_commit(stack, ref, commit, repo, Path(tmp) / "out")
    tree = _git(repo, "rev-parse", f"{commit}^{{tree}}").stdout.strip()
    python = ".".join(map(str, sys.version_info[:3]))
    kept = Path(cache) / f"{stack}-{tree}-py{python}-{caches.upstream_digest()[:16]}"
    Path(cache).mkdir(parents=True, exist_ok=True)
    with open(f"{kept}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process renders a base; the others wait, then read it
        if not kept.exists():
            with tempfile.TemporaryDirectory(prefix="settlement-diff-", dir=cache) as tmp:
                _render_commit(stack, ref, commit, repo, Path(tmp) / "out")
                shutil.move(Path(tmp) / "out", kept)
        return _read_render(kept)


def _render_commit(stack: str, ref: str, commit: str, repo: Path, out: Path) -> Rendered:
    """`python -m infra render` of the commit's own code and config, from a temporary worktree, into `out`."""
    with tempfile.TemporaryDirectory(prefix="settlement-diff-") as tmp:
        tree = Path(tmp) / "tree"
        added = _git(repo, "worktree", "add", "--detach", str(tree), commit)
        if added.returncode != 0:
            raise DiffError(f"cannot check out --base {ref!r}: {added.stderr.strip()}")
        try:
            if not (tree / f"Pulumi.{stack}.yaml").exists():
                out.mkdir(parents=True)  # the stack is new in this change: everything is created
                (out / "resources.json").write_text("[]\n")
                return _read_render(out)
            if _runs_this_code(tree):
                return _render_here(stack, ref, tree, out)
            result = subprocess.run(
                [sys.executable, "-m", "infra", "render", stack, "--out", str(out)],
                cwd=tree,
                capture_output=True,
                text=True,
                # The worktree has no ../shared beside it: read release manifests from this checkout's mirror.
                # Only resources.json and the side files are read back: no manifests/ to write.
                env={**caches.child_env(), LIST_ONLY_ENV: "1"},
            )
            if result.returncode != 0:
                raise _render_failure(stack, ref, result.stderr)
            return _read_render(out)
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree))


def _check_upstream_for(ref: str, commit: str, repo: Path) -> None:
    """The base reads the same folders of upstream bytes, maybe other chart versions in them: what it reads is checked
    against the base's own lock (`upstream.base_problems`), before a kept render of it is reused too. A base from
    before the lock has none to check against."""
    shown = _git(repo, "show", f"{commit}:{upstream.LOCK_IN_PROJECT.as_posix()}")
    if shown.returncode != 0:
        return
    found = upstream.base_problems(shown.stdout, upstream.roots())
    if found:
        listed = "\n".join(f"  {problem}" for problem in found)
        raise DiffError(f"the upstream bytes differ from --base {ref!r}'s {upstream.LOCK_IN_PROJECT}:\n{listed}")


def _runs_this_code(tree: Path) -> bool:
    """Is the base's code the code running now? Every file the base commit holds, but its stack files, is byte for
    byte the running checkout's, and the running checkout has no Python module the base lacks. Then rendering the
    base's stack files here is rendering them with the base's own code (a change of config only: most previews)."""
    listed = _git(tree, "ls-files", "-z")
    if listed.returncode != 0:
        return False
    tracked = {p for p in listed.stdout.split("\0") if p and not _is_stack_file(p)}
    for path in tracked:
        here = PROJECT_ROOT / path
        if not here.is_file() or here.read_bytes() != (tree / path).read_bytes():
            return False
    return all(p.relative_to(PROJECT_ROOT).as_posix() in tracked for p in code_files(PROJECT_ROOT))


def _is_stack_file(path: str) -> bool:
    return "/" not in path and path.startswith("Pulumi") and path.endswith(".yaml")


def _render_here(stack: str, ref: str, tree: Path, out: Path) -> Rendered:
    """`python -m infra render` of the worktree's stack files, in this process (`_runs_this_code`): the same
    command, its output and its error report captured as the process's would be, without an interpreter start and
    a cold render (about two seconds of every preview)."""
    import contextlib
    import io

    from infra.offline import cli

    previous = os.environ.get(LIST_ONLY_ENV)
    os.environ[LIST_ONLY_ENV] = "1"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            code = cli.main(["render", stack, "--out", str(out), "--project-dir", str(tree)])
    except Exception as error:  # the base's crash: reported as the process's last line would be
        crash = f"Traceback (most recent call last):\n{type(error).__name__}: {error}"
        raise _render_failure(stack, ref, crash) from error
    finally:
        if previous is None:
            del os.environ[LIST_ONLY_ENV]
        else:
            os.environ[LIST_ONLY_ENV] = previous
    if code != 0:
        raise _render_failure(stack, ref, errors.getvalue())
    return _read_render(out)


def _read_render(out: Path) -> Rendered:
    redacted, state = out / REDACTED_ALERTMANAGER, out / DR_STATE
    return Rendered(
        json.loads((out / "resources.json").read_text()),
        yaml.safe_load(redacted.read_text()) if redacted.exists() else None,
        json.loads(state.read_text()) if state.exists() else None,
    )
