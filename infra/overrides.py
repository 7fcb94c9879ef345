"""JSON merge patch (RFC 7386, the semantics Pulumi ESC uses to merge environments). The config model completes a
partial `defaults.*.resources` block with it; per-stack overrides of the topology follow. Pure, no Pulumi.
"""

from __future__ import annotations

import copy
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 section 2: `patch` applied to `target`. A mapping merges key by key, `None` (null) removes a key,
    anything else (a list, a scalar) replaces the value whole. Neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
