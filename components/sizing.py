"""Kubernetes resource quantities and the arithmetic of sizing, as pure functions."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

_SUFFIX = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def parse_quantity(quantity: str) -> float:
    """A Kubernetes quantity as a number: cores for CPU (`250m` -> 0.25), bytes for memory (`1Ki` -> 1024)."""
    match = _QUANTITY.match(quantity)
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2) or ""]


def format_cpu(cores: float) -> str:
    """Cores as millicores, rounded up so a quota never comes out below what it was derived from."""
    return f"{math.ceil(round(cores * 1000, 6))}m"


def format_memory(num_bytes: float) -> str:
    """Bytes as whole mebibytes, rounded up."""
    return f"{math.ceil(num_bytes / 2**20)}Mi"


@dataclass(frozen=True)
class PodSize:
    """What one pod of a workload asks for and may use, and how many of it there can be."""

    requests_cpu: str
    requests_memory: str
    limits_cpu: str
    limits_memory: str
    max_pods: int


def namespace_quota(pods: Iterable[PodSize], headroom_percent: int, extra_pods: int = 0) -> dict[str, str]:
    """ResourceQuota `hard` for a namespace whose workloads may all run at their maximum scale at once.

    The headroom covers the surge pods of a rolling update and short-lived jobs; `extra_pods` counts pods
    that no workload here declares (e.g. ones an operator adds).
    """
    pods = list(pods)
    factor = 1 + headroom_percent / 100

    def total(attr: str) -> float:
        return sum(parse_quantity(getattr(p, attr)) * p.max_pods for p in pods) * factor

    pod_count = sum(p.max_pods for p in pods) + extra_pods
    return {
        "requests.cpu": format_cpu(total("requests_cpu")),
        "requests.memory": format_memory(total("requests_memory")),
        "limits.cpu": format_cpu(total("limits_cpu")),
        "limits.memory": format_memory(total("limits_memory")),
        "pods": str(math.ceil(pod_count * factor)),
    }
