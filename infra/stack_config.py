"""Reading the stack's configuration, the same way `pulumi up` does.

Online, the engine hands the program every config value of the stack (project-level values from `Pulumi.yaml`
overlaid by `Pulumi.<stack>.yaml`, key by key) through the SDK's runtime config. Offline, `read_stack_files`
reproduces that overlay from the files so the render and the tests feed the SDK exactly what the engine would.
Either way the program itself only ever reads the SDK's runtime config (`load_platform_config`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infra.config import (
    ALERT_SECRET_PATTERN,
    BACKUP_SECRET_KEYS,
    SECRET_CONFIG_KEYS,
    PlatformConfig,
    alert_secret_keys,
)
from infra.errors import ConfigError, ConfigProblem, problems_from_validation_error
from infra.topology import PlatformPlan, resolve

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Stands in for a `secure:` value offline: the ciphertext can only be opened by the stack's secrets provider.
SECRET_PLACEHOLDER = "offline-placeholder-for-secret"
_DECLARATION_KEYS = {"type", "description", "default", "value", "secret", "items"}


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    values: dict[str, Any]  # full key ("<namespace>:<key>") -> value as written in YAML
    secret_keys: frozenset[str]

    def runtime_config(self) -> dict[str, str]:
        """The values as the engine passes them to a program: strings, structured values as JSON."""
        return {k: _as_config_string(v) for k, v in self.values.items()}


def _as_config_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _full_key(project: str, key: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def _strip_secure(value: Any) -> tuple[Any, bool]:
    """Replace `{secure: <ciphertext>}` leaves by the placeholder; report whether there was one."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return SECRET_PLACEHOLDER, True
        found = False
        out = {}
        for k, v in value.items():
            out[k], hit = _strip_secure(v)
            found = found or hit
        return out, found
    if isinstance(value, list):
        pairs = [_strip_secure(v) for v in value]
        return [p[0] for p in pairs], any(p[1] for p in pairs)
    return value, False


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(path.name, f"is not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(path.name, "must be a YAML mapping")])
    return data


class UnknownStack(ConfigError):
    """A stack name without a stack file: one line is the whole story, so it is reported as one."""

    def report(self, stack: str) -> str:
        return f"stack {self.problems[0].message}"


def stack_names(project_dir: Path = PROJECT_ROOT) -> list[str]:
    """Every stack of the project, one per `Pulumi.<stack>.yaml`: the files are the only list of stacks."""
    return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))


def require_stack(stack: str, project_dir: Path = PROJECT_ROOT) -> Path:
    """The stack's file, or UnknownStack naming the stacks that exist."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = ", ".join(stack_names(project_dir)) or "none"
        raise UnknownStack([ConfigProblem("stack", f"{stack!r} has no Pulumi.{stack}.yaml (stacks: {known})")])
    return path


def read_stack_files(stack: str, project_dir: Path = PROJECT_ROOT) -> StackConfig:
    """Overlay Pulumi.<stack>.yaml on Pulumi.yaml's project-level config, key by key, as the engine does."""
    project_file = _load_yaml(project_dir / "Pulumi.yaml")
    project = project_file["name"]
    stack_path = require_stack(stack, project_dir)

    values: dict[str, Any] = {}
    for key, decl in (project_file.get("config") or {}).items():
        if isinstance(decl, dict) and set(decl) <= _DECLARATION_KEYS:
            if "value" in decl:
                values[_full_key(project, key)] = decl["value"]
            elif "default" in decl:
                values[_full_key(project, key)] = decl["default"]
        else:
            values[_full_key(project, key)] = decl
    for key, value in (_load_yaml(stack_path).get("config") or {}).items():
        values[_full_key(project, key)] = value

    secret_keys = set()
    for key in list(values):
        values[key], is_secret = _strip_secure(values[key])
        if is_secret:
            secret_keys.add(key)
    return StackConfig(project=project, stack=stack, values=values, secret_keys=frozenset(secret_keys))


def _runtime_values(project: str) -> tuple[dict[str, Any], frozenset[str]]:
    """Every config value of `project`'s namespace as the SDK holds it for this run, and which keys are secret."""
    from pulumi.runtime import config as runtime_config

    raw = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    values = {}
    secret = set()
    for full_key, text in raw.items():
        namespace, _, key = full_key.partition(":")
        if namespace != project:
            continue
        if runtime_config.is_config_secret(full_key):
            secret.add(key)
        try:
            values[key] = json.loads(text) if text[:1] in "{[" else text
        except json.JSONDecodeError:
            values[key] = text
    return values, frozenset(secret)


def parse_platform_config(values: dict[str, Any], secret_keys: frozenset[str] = frozenset()) -> PlatformPlan:
    """Validate raw config values (keyed by config key) and resolve them into a plan, or raise ConfigError.

    Secret keys never enter the model (their values stay Pulumi secrets, read by `read_secrets`); only their
    presence is checked here.
    """
    problems = []
    values = dict(values)
    secretish = (set(SECRET_CONFIG_KEYS) | {k for k in values if re.match(ALERT_SECRET_PATTERN, k)}) & set(values)
    for key in sorted(secretish | secret_keys):
        values.pop(key, None)
        if key not in secret_keys:
            problems.append(ConfigProblem(key, f"is a secret: set it with `pulumi config set --secret {key} ...`"))
    try:
        config = PlatformConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(problems + problems_from_validation_error(exc, PlatformConfig)) from None
    referenced = alert_secret_keys(config)
    for key in sorted(secret_keys - set(SECRET_CONFIG_KEYS) - set(referenced)):
        problems.append(
            ConfigProblem(
                key,
                f"unknown secret key (allowed: {', '.join(sorted(SECRET_CONFIG_KEYS))}, or one that "
                "alerting.receivers names)",
            )
        )
    for key, where in sorted(referenced.items()):
        if key not in secret_keys:
            problems.append(ConfigProblem(key, f"is required by {where} (`pulumi config set --secret {key} ...`)"))
    if config.backup is not None and config.backup.object_store.credentials == "secret":
        for key in BACKUP_SECRET_KEYS:
            if key not in secret_keys:
                problems.append(
                    ConfigProblem(
                        key, "is required by backup.objectStore.credentials: secret (`pulumi config set --secret`)"
                    )
                )
    try:
        plan = resolve(config)
    except ConfigError as error:
        problems += error.problems
    if problems:
        raise ConfigError(problems)
    return plan


def load_platform_config() -> PlatformPlan:
    """The plan for the running stack, from the SDK's runtime config (engine or mocks alike)."""
    import pulumi

    return parse_platform_config(*_runtime_values(pulumi.get_project()))


def read_secrets(plan: PlatformPlan) -> dict[str, Any]:
    """The secret config values the plan needs, as Pulumi secret Outputs (never plain strings)."""
    import pulumi

    config = pulumi.Config()
    needed = []
    if plan.config.backup is not None and plan.config.backup.object_store.credentials == "secret":
        needed += BACKUP_SECRET_KEYS
    needed += sorted(alert_secret_keys(plan.config))
    return {key: config.require_secret(key) for key in needed}


def plan_for_stack(stack: str, project_dir: Path = PROJECT_ROOT) -> PlatformPlan:
    """The plan a stack's files produce, without running the program (offline tools and tests)."""
    config = read_stack_files(stack, project_dir)
    prefix = f"{config.project}:"
    values = {k.removeprefix(prefix): v for k, v in config.values.items() if k.startswith(prefix)}
    return parse_platform_config(values, frozenset(k.removeprefix(prefix) for k in config.secret_keys))
