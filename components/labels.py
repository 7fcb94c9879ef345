"""Kubernetes recommended labels (app.kubernetes.io/*), as pure functions."""

from __future__ import annotations

MANAGED_BY = "pulumi"


def selector_labels(name: str) -> dict[str, str]:
    """The labels a workload's selector matches. Kept minimal and stable: a selector cannot change in place."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name}


def standard_labels(name: str, part_of: str, component: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Selector labels plus the descriptive ones every object carries."""
    return {
        **selector_labels(name),
        "app.kubernetes.io/part-of": part_of,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **(extra or {}),
    }
