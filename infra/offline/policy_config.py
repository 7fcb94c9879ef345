"""The policy pack's per-stack configuration (`policy/config.<stack>.json`), generated from the stack's guardrails.

A stack that opts out of a guardrail in its stack file (dev: images by tag, unprotected data) would otherwise
be refused by the rule enforcing it on every preview. Deriving the pack's configuration from that same field
keeps one place to decide: a new stack needs no hand-written policy file, and a stack that keeps its guardrails
(prod) relaxes nothing. The files are committed so `pulumi preview --policy-pack-config` can name them and a
reviewer sees a relaxation in the diff; `make golden` regenerates them and the tests refuse a stale one.
"""

from __future__ import annotations

import json
from pathlib import Path

from infra.stack_config import PROJECT_ROOT
from infra.topology import PlatformPlan

# Rule of the policy pack -> the guardrail (field of infra.config.Guardrails) whose opt-out disables it.
RELAXED_BY_GUARDRAIL = {
    "images-pinned-by-digest": "require_image_digest",
    "stateful-resources-protected": "protect_stateful_resources",
}


def policy_config(plan: PlatformPlan) -> dict:
    guardrails = plan.config.guardrails
    return {
        rule: {"enforcementLevel": "disabled"}
        for rule, guardrail in sorted(RELAXED_BY_GUARDRAIL.items())
        if not getattr(guardrails, guardrail)
    }


def text(plan: PlatformPlan) -> str:
    return json.dumps(policy_config(plan), indent=2, sort_keys=True) + "\n"


def path(stack: str, project_dir: Path = PROJECT_ROOT) -> Path:
    return project_dir / "policy" / f"config.{stack}.json"
