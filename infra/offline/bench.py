"""`make bench`: how long the offline render of each stack takes and how much memory it needs.

Speed and footprint are measured here, on purpose, rather than asserted by timed tests that would flake on a
loaded CI machine.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

from infra.offline.render import render_stack


@dataclass(frozen=True)
class Measurement:
    stack: str
    resources: int
    seconds: list[float]


def measure(stacks: list[str], repeat: int) -> list[Measurement]:
    results = []
    for stack in stacks:
        render_stack(stack)  # warm-up: imports and first-time SDK setup are not the render's cost
        seconds, count = [], 0
        for _ in range(repeat):
            start = time.perf_counter()
            count = len(render_stack(stack).registrations)
            seconds.append(time.perf_counter() - start)
        results.append(Measurement(stack, count, seconds))
    return results


def report(results: list[Measurement]) -> str:
    lines = ["| stack | resources | median s | min s | max s | resources/s |", "|---|---|---|---|---|---|"]
    for m in results:
        median = statistics.median(m.seconds)
        lines.append(
            f"| {m.stack} | {m.resources} | {median:.3f} | {min(m.seconds):.3f} | {max(m.seconds):.3f} "
            f"| {m.resources / median:.0f} |"
        )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines.append(f"\npeak resident memory of the whole run: {peak_mib:.0f} MiB")
    return "\n".join(lines)
