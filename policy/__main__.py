"""Entry point Pulumi runs for `--policy-pack policy`: builds the pack and serves it (blocks)."""

import sys
from pathlib import Path

# The pack runs in its own virtualenv (requirements.txt); the rules reuse the project's pod-security checks.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policy.pack import POLICIES

PolicyPack(name="settlement-platform", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
