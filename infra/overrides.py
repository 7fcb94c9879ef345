"""Per-stack overrides: a JSON merge patch (RFC 7386) of the project-level `subsystems` value. (`merge_patch` also
completes a partial `defaults.*.resources` block in the config model.)

Pulumi overlays a stack file on `Pulumi.yaml` key by key: a stack that sets `subsystems` replaces the whole
topology, so changing one service's replicas in prod would mean copying every subsystem into the stack file,
where it silently stops following `Pulumi.yaml`. A stack sets `overrides` instead: the patch is applied to the
topology when the config is parsed, the same way online and offline (Pulumi ESC merges environments with the
same RFC 7386 semantics). Pure functions, no Pulumi.
"""

from __future__ import annotations

import copy
from typing import Any

from infra.errors import ConfigProblem

KEY = "overrides"


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


def patched_paths(patch: dict, prefix: str = "") -> list[str]:
    """The dotted paths a patch writes or removes (its leaves), e.g. `payment.services.payment-api.replicas.max`."""
    paths = []
    for key, value in patch.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        paths += patched_paths(value, path) if isinstance(value, dict) and value else [path]
    return paths


def shape_problems(subsystems: Any, patch: Any) -> list[ConfigProblem]:
    """What makes a patch unusable before it is applied.

    The topology is the same in every stack: an override changes what `Pulumi.yaml` declares (or removes it with
    null) but never adds a subsystem or a service, which is almost always a typo of an existing name (merge patch
    would quietly create a half-declared one). Anything inside a service or a data cluster may be added.
    """
    if not isinstance(patch, dict):
        return [ConfigProblem(KEY, f"must be a mapping of subsystem name to patch (got {patch!r})")]
    declared = subsystems if isinstance(subsystems, dict) else {}
    problems = []
    for sub_name, sub_patch in patch.items():
        if sub_name not in declared:
            problems.append(
                ConfigProblem(
                    f"{KEY}.{sub_name}",
                    f"is not a subsystem declared in subsystems (declared: {', '.join(sorted(declared)) or 'none'}); "
                    "overrides change the topology, they do not add to it",
                )
            )
            continue
        services_patch = sub_patch.get("services") if isinstance(sub_patch, dict) else None
        if not isinstance(services_patch, dict):
            continue
        base = declared[sub_name] if isinstance(declared[sub_name], dict) else {}
        services = base.get("services") if isinstance(base.get("services"), dict) else {}
        for svc_name in services_patch:
            if svc_name not in services:
                problems.append(
                    ConfigProblem(
                        f"{KEY}.{sub_name}.services.{svc_name}",
                        f"is not a service of subsystems.{sub_name} (declared: {', '.join(sorted(services)) or 'none'})"
                        "; overrides change the topology, they do not add to it",
                    )
                )
    return problems


def _on_branch(problem_path: str, patch_path: str) -> bool:
    """One path lies on the other's branch: equal, or one extends the other by a key or an index."""
    shorter, longer = sorted((problem_path, patch_path), key=len)
    return longer == shorter or longer.startswith((f"{shorter}.", f"{shorter}["))


def attribute(problem: ConfigProblem, patch: dict, without_patch: set[ConfigProblem]) -> ConfigProblem:
    """Name the override for a problem it introduced, so the reader edits the stack file, not Pulumi.yaml.

    A problem that the config without overrides has too comes from `Pulumi.yaml` and keeps its path. A new one
    under a path the patch wrote (`replicas.max`), or on an object the patch changed (`replicas`: min <= max),
    is reported at `overrides.<path>`; a new one elsewhere (a removed service leaves its queue unconsumed) keeps
    its path and says which override caused it.
    """
    if problem in without_patch or not problem.path.startswith("subsystems."):
        return problem
    inner = problem.path.removeprefix("subsystems.")
    written = patched_paths(patch)
    if any(_on_branch(inner, path) for path in written):
        return ConfigProblem(f"{KEY}.{inner}", problem.message)
    return ConfigProblem(problem.path, f"{problem.message} (after {KEY}: {', '.join(written)})")
