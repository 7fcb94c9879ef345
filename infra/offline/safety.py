"""What an update from one render to another would do to data, judged the way the Pulumi engine would.

The engine refuses to delete or replace a resource registered with `protect`, and `retainOnDelete` leaves
the Kubernetes object in the cluster even when Pulumi forgets it. From two renders (before and after a config
change) these functions list the stateful resources the change would remove, and whether the engine would
stop it. The offline preview diff builds on the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.offline.mocks import ProgramRun, Registration

STATEFUL_KINDS = frozenset({"Cluster", "RabbitmqCluster", "PersistentVolumeClaim", "Namespace", "Queue", "Vhost"})


@dataclass(frozen=True)
class Removal:
    kind: str
    namespace: str | None
    name: str
    urn: str
    blocked: bool
    """The engine refuses it (protect): the update fails and nothing is deleted."""
    retained: bool
    """Even a forced delete (unprotect, destroy) leaves the object, and its data, in the cluster."""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        verdict = "blocked by protect" if self.blocked else "WOULD BE DELETED"
        return f"{self.kind} {where}{self.name}: {verdict}{', retained on delete' if self.retained else ''}"


def _kind(reg: Registration) -> str | None:
    return reg.inputs.get("kind") if reg.is_kubernetes_object else None


def stateful_removals(before: ProgramRun, after: ProgramRun) -> list[Removal]:
    """Stateful objects registered before and gone after (deleted, or replaced under a new name)."""
    remaining = {r.urn for r in after.registrations}
    removals = []
    for reg in before.registrations:
        kind = _kind(reg)
        if kind in STATEFUL_KINDS and reg.urn not in remaining:
            meta = reg.inputs["metadata"]
            removals.append(
                Removal(kind, meta.get("namespace"), meta["name"], reg.urn, reg.protect, reg.retain_on_delete)
            )
    return sorted(removals, key=lambda r: (r.kind, r.namespace or "", r.name))
