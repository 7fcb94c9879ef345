"""The Pulumi program: read the stack's config, refuse it whole or build the whole platform."""

from __future__ import annotations

import pulumi

from infra.errors import ConfigError
from infra.platform import Platform, PlatformArgs
from infra.stack_config import load_platform_config, read_secrets


def run() -> None:
    try:
        plan = load_platform_config()
    except ConfigError as error:
        # RunError makes the engine print the message alone, without a Python traceback.
        raise pulumi.RunError(error.report(pulumi.get_stack())) from None

    platform = Platform("platform", PlatformArgs(plan=plan, secrets=read_secrets(plan)))
    pulumi.export("namespaces", platform.namespaces)
    pulumi.export("services", platform.service_addresses)
