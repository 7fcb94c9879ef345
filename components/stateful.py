"""Resource options for objects that hold data (database and queue clusters)."""

from __future__ import annotations

import pulumi


def stateful_options(
    parent: pulumi.Resource,
    protect: bool,
    depends_on: list[pulumi.Resource],
    custom_timeouts: pulumi.CustomTimeouts | None = None,
) -> pulumi.ResourceOptions:
    """Protected resources make the engine fail an update that would delete or replace them, and a destroy
    leaves them in the cluster (retainOnDelete); `depends_on` (the operator install first of all) comes first."""
    return pulumi.ResourceOptions(
        parent=parent,
        protect=protect,
        retain_on_delete=protect,
        depends_on=depends_on,
        custom_timeouts=custom_timeouts,
    )
