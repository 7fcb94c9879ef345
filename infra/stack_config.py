"""Reading the stack's configuration, the same way `pulumi up` does.

Online, the engine hands the program every config value of the stack (project-level values from `Pulumi.yaml`
overlaid by `Pulumi.<stack>.yaml`, key by key) through the SDK's runtime config. Offline, `read_stack_files`
reproduces that overlay from the files so the render and the tests feed the SDK exactly what the engine would.
Either way the program itself only ever reads the SDK's runtime config (`load_platform_config`).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from infra import overrides
from infra.config import (
    ALERT_SECRET_PATTERN,
    BACKUP_SECRET_KEYS,
    SECRET_CONFIG_KEYS,
    DisasterRecovery,
    PlatformConfig,
    alert_secret_keys,
)
from infra.errors import ConfigError, ConfigProblem, problems_from_validation_error
from infra.topology import PlatformPlan, resolve

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CODE_FOLDERS = ("infra", "components")
"""The packages the program and the offline tools import (beside the root's `__main__.py`): the code of a render."""


def code_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """The checkout's Python modules (the running one's by default): the root's (`__main__.py`) and every one in
    `CODE_FOLDERS`."""
    return sorted([*root.glob("*.py"), *(p for d in CODE_FOLDERS for p in (root / d).rglob("*.py"))])


# Stands in for a `secure:` value offline: the ciphertext can only be opened by the stack's secrets provider.
SECRET_PLACEHOLDER = "offline-placeholder-for-secret"
# A committed `secure:` value that is no ciphertext at all (the stack files start with these): the offline
# render runs, but `pulumi preview` cannot decrypt it. `python -m infra secrets <stack> --check` lists them.
PLACEHOLDER_CIPHERTEXT = "v1:placeholder"
_DECLARATION_KEYS = {"type", "description", "default", "value", "secret", "items"}


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    values: dict[str, Any]  # full key ("<namespace>:<key>") -> value as written in YAML
    secret_keys: frozenset[str]
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    """Full key -> the file its value comes from (the stack file overrides Pulumi.yaml key by key)."""

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


# Config namespaces a stack may set: the project's own, the engine's and the Kubernetes provider's. Anything else
# (`settlement:gateway`) is a typo that nothing would read: refused, not ignored.
FOREIGN_NAMESPACES_ALLOWED = ("pulumi", "kubernetes")


class _StrictLoader(yaml.SafeLoader):
    """YAML as Pulumi reads it: a key written twice in one mapping is an error, not "the last one wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {key!r} (first at line {first.line + 1}); Pulumi refuses the file",
                    problem_mark=key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


# Plain scalars as the engine reads them. Pulumi parses stack files with go-yaml v3 and decodes config untyped, where
# only true/false are booleans (an unquoted `yes`, `no`, `on` or `off` is text unless decoded into a typed Go bool:
# go-yaml v3 README) and base-60 numbers (`1:30`) are text (gone from YAML 1.2: README; go-yaml v3.0.1 resolve.go).
# PyYAML follows YAML 1.1, where `critical: yes` is true and `rpoSeconds: 1:30` is 90: the render would accept what
# `pulumi up` then refuses (config is validated strictly, infra/config.py). Timestamps: see `_timestamp_problems`.
_YAML_TEXT = "tag:yaml.org,2002:str"
_BASE_60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_StrictLoader.yaml_implicit_resolvers = {
    first: ([(_YAML_TEXT, _BASE_60)] if first in "+-0123456789" else [])
    + [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@functools.lru_cache(maxsize=64)
def _parsed(text: str) -> Any:
    """A stack file's text parsed once per process (a test run reads the same files a few hundred times); callers
    get their own copy. libyaml's parser would be faster, but it accepts and refuses some files differently (tabs as
    separators, `a: [x:, y]`), so the pure-Python one stays the judge."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> ConfigProblem:
    """`file:line:column: message`, on one line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or mark is None:
        return ConfigProblem(path.name, " ".join(f"is not valid YAML: {exc}".split()))
    message = exc.problem or "is not valid YAML"
    if exc.context:
        started = f" started at line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
        message += f" ({exc.context}{started})"
    return ConfigProblem(f"{path.name}:{mark.line + 1}:{mark.column + 1}", " ".join(message.split()))


def _nodes(value: Any, path: str | None) -> Iterator[tuple[str | None, Any]]:
    """`value` and everything inside it, each with its path (`a.b[0].c`; None for `value` itself at the top)."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _nodes(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _nodes(v, f"{path}[{i}]" if path else f"[{i}]")


def _timestamp_problems(value: Any) -> list[str]:
    """Unquoted dates and times, which no config value may be: go-yaml resolves one to a Go time, and Pulumi hands
    the program Go's rendering of it (`2026-11-30 10:00:00 +0000 UTC`: pulumi/pulumi
    sdk/go/common/resource/config/object.go `unmarshalObject`, `time.Time` case), not what the file says."""
    return [
        f"{where}: {node.isoformat()} is an unquoted date or time; quote it (the engine would pass the program Go's "
        "rendering of it, not this text)"
        for where, node in _nodes(value, None)
        if isinstance(node, datetime.date)
    ]


def _load_yaml(path: Path) -> dict:
    try:
        data = copy.deepcopy(_parsed(path.read_text()))
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(path, exc)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(path.name, f"cannot be read: {exc}")]) from None
    timestamps = _timestamp_problems(data)
    if timestamps:
        raise ConfigError([ConfigProblem(path.name, problem) for problem in timestamps])
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(path.name, f"must be a YAML mapping (got a {type(data).__name__})")])
    config = data.get("config")
    if config is not None and not isinstance(config, dict):
        raise ConfigError(
            [
                ConfigProblem(
                    f"{path.name}: config", f"must be a mapping of key to value (got a {type(config).__name__})"
                )
            ]
        )
    return data


def _project_file(project_dir: Path) -> dict:
    if not project_dir.is_dir():
        state = "is not a directory" if project_dir.exists() else "does not exist"
        raise ConfigError([ConfigProblem(str(project_dir), f"{state} (the project folder, holding Pulumi.yaml)")])
    path = project_dir / "Pulumi.yaml"
    if not path.is_file():
        raise ConfigError([ConfigProblem(str(project_dir), "holds no Pulumi.yaml (is it the project folder?)")])
    data = _load_yaml(path)
    if not data:
        raise ConfigError([ConfigProblem(path.name, "is empty; a project needs at least `name` and `runtime`")])
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise ConfigError(
            [
                ConfigProblem(
                    f"{path.name}: name",
                    f"is required: the project's name, its config namespace (got {data.get('name')!r})",
                )
            ]
        )
    return data


def namespace_problems(keys: list[str], project: str, where: str) -> list[ConfigProblem]:
    """Config keys in a namespace nothing reads (a typo of the project's name, most likely)."""
    allowed = (project, *FOREIGN_NAMESPACES_ALLOWED)
    return [
        ConfigProblem(
            where,
            f"config key {key!r}: namespace {key.partition(':')[0]!r} is not one this program or its providers read "
            f"(allowed: {', '.join(allowed)})",
        )
        for key in keys
        if key.partition(":")[0] not in allowed
    ]


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
    project_file = _project_file(project_dir)
    project = project_file["name"]
    stack_path = require_stack(stack, project_dir)
    project_config = project_file.get("config") or {}
    stack_config = _load_yaml(stack_path).get("config") or {}
    problems = namespace_problems([_full_key(project, str(k)) for k in project_config], project, "Pulumi.yaml")
    problems += namespace_problems([_full_key(project, str(k)) for k in stack_config], project, stack_path.name)
    if problems:
        raise ConfigError(problems)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, decl in project_config.items():
        sources[_full_key(project, key)] = "Pulumi.yaml"
        if isinstance(decl, dict) and set(decl) <= _DECLARATION_KEYS:
            if "value" in decl:
                values[_full_key(project, key)] = decl["value"]
            elif "default" in decl:
                values[_full_key(project, key)] = decl["default"]
        else:
            values[_full_key(project, key)] = decl
    for key, value in stack_config.items():
        values[_full_key(project, key)] = value
        sources[_full_key(project, key)] = stack_path.name

    secret_keys = set()
    for key in list(values):
        values[key], is_secret = _strip_secure(values[key])
        if is_secret:
            secret_keys.add(key)
    return StackConfig(project=project, stack=stack, values=values, secret_keys=frozenset(secret_keys), sources=sources)


@dataclass(frozen=True)
class PlaceholderSecret:
    key: str
    """The config key as `pulumi config` names it: the project's own keys without the namespace."""
    path: str | None
    """Inside a structured value (`pulumi config set --path`), or None for the whole value."""
    file: str

    def command(self, stack: str) -> str:
        """Sets it under the stack's secrets provider; the value is prompted for (or read from stdin), never
        typed on the command line where shell history would keep it (pulumi pkg/cmd/pulumi/config/config.go)."""
        if self.path is None:
            return f"pulumi config set --stack {stack} --secret {self.key}"
        return f"pulumi config set --stack {stack} --secret --path '{self.key}.{self.path}'"


def _placeholders(value: Any, path: str | None) -> list[str | None]:
    return [
        where
        for where, node in _nodes(value, path)
        if isinstance(node, dict) and set(node) == {"secure"} and str(node["secure"]).startswith(PLACEHOLDER_CIPHERTEXT)
    ]


def placeholder_secrets(stack: str, project_dir: Path = PROJECT_ROOT) -> list[PlaceholderSecret]:
    """Every `secure:` value of the stack (its file, and Pulumi.yaml's project config) that is still a committed
    placeholder rather than a ciphertext of the stack's secrets provider, in file order."""
    project = _project_file(project_dir)["name"]
    found = []
    for path in (project_dir / "Pulumi.yaml", require_stack(stack, project_dir)):
        for key, value in (_load_yaml(path).get("config") or {}).items():
            if path.name == "Pulumi.yaml" and isinstance(value, dict) and set(value) <= _DECLARATION_KEYS:
                value = value.get("value")
            short = str(key).removeprefix(f"{project}:")
            found += [PlaceholderSecret(short, p, path.name) for p in _placeholders(value, None)]
    return found


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

    `overrides` (a JSON merge patch) is applied to `subsystems` first; problems it introduces are named by their
    path under `overrides`. Secret keys never enter the model (their values stay Pulumi secrets, read by
    `read_secrets`); only their presence is checked here.
    """
    patch = values.get(overrides.KEY)
    if patch is None or overrides.KEY in secret_keys:
        return _parse(values, secret_keys)
    problems = overrides.shape_problems(values.get("subsystems"), patch)
    if problems:
        raise ConfigError(problems)
    try:
        return _parse({**values, "subsystems": overrides.merge_patch(values.get("subsystems"), patch)}, secret_keys)
    except ConfigError as error:
        # Which problems did the patch introduce? Those the same config without it does not have.
        try:
            _parse({**values, overrides.KEY: {}}, secret_keys)
            without_patch = set()
        except ConfigError as unpatched:
            without_patch = set(unpatched.problems)
        raise ConfigError([overrides.attribute(p, patch, without_patch) for p in error.problems]) from None


def _parse(values: dict[str, Any], secret_keys: frozenset[str]) -> PlatformPlan:
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


def site_checks(plan: PlatformPlan, stack: str, project_dir: Path) -> PlatformPlan:
    """The rules that read other stack files: disaster recovery's other sites (infra.dr.site_file_problems), and a
    drill's source stack, whose server names the drill's plan takes (infra.drill.with_source_server_names)."""
    from infra.dr import site_file_problems

    def read_dr(peer: str) -> DisasterRecovery | None:
        config = read_stack_files(peer, project_dir)
        value = config.values.get(f"{config.project}:dr")
        if value is None:
            return None
        try:
            return DisasterRecovery.model_validate(value)
        except ValidationError as exc:
            problems = problems_from_validation_error(exc, DisasterRecovery, ("dr",))
            raise ConfigError([ConfigProblem(f"Pulumi.{peer}.yaml: {p.path}", p.message) for p in problems]) from None

    problems = []
    if plan.config.dr is not None:  # only a DR site's own file is read again: its secrets provider
        provider = _load_yaml(project_dir / f"Pulumi.{stack}.yaml").get("secretsprovider")
        problems = site_file_problems(plan.config, stack, project_dir, read_dr, provider)
    if problems:
        raise ConfigError(problems)
    drill = plan.config.drill
    if drill is None:
        return plan
    from infra import drill as drill_rules

    source_file = f"Pulumi.{drill.source_stack}.yaml"
    if drill.source_stack == stack or not (project_dir / source_file).exists():
        raise ConfigError(
            [
                ConfigProblem(
                    f"Pulumi.{stack}.yaml: drill.sourceStack",
                    f"{drill.source_stack!r}: no other stack file {source_file} in {project_dir}",
                )
            ]
        )
    source = plan_for_stack(drill.source_stack, project_dir)
    problems = drill_rules.source_problems(plan, source)
    if problems:
        raise ConfigError([ConfigProblem(f"Pulumi.{stack}.yaml: {p.path}", p.message) for p in problems])
    return drill_rules.with_source_server_names(plan, source)


def load_platform_config(project_dir: Path = PROJECT_ROOT) -> PlatformPlan:
    """The plan for the running stack, from the SDK's runtime config (engine or mocks alike). `project_dir`: where
    the other stack files are (the engine runs the program from the project root)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    project = pulumi.get_project()
    keys = sorted({**runtime_config.get_config_env(), **runtime_config.CONFIG.get()})
    # Offline, read_stack_files refused these already, naming the file; online the engine does not say which.
    problems = namespace_problems(keys, project, "stack config")
    try:
        plan = parse_platform_config(*_runtime_values(project))
    except ConfigError as error:
        raise ConfigError(problems + error.problems) from None
    if problems:
        raise ConfigError(problems)
    return site_checks(plan, pulumi.get_stack(), project_dir)


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
    """The plan a stack's files produce, without running the program (offline tools and tests). A refused config
    names, for each problem, the file that holds the offending key."""
    return site_checks(plan_of(read_stack_files(stack, project_dir)), stack, project_dir)


def plan_of(config: StackConfig) -> PlatformPlan:
    prefix = f"{config.project}:"
    values = {k.removeprefix(prefix): v for k, v in config.values.items() if k.startswith(prefix)}
    try:
        return parse_platform_config(values, frozenset(k.removeprefix(prefix) for k in config.secret_keys))
    except ConfigError as error:
        raise ConfigError([_in_file(p, config, prefix) for p in error.problems]) from None


def _in_file(problem: ConfigProblem, config: StackConfig, prefix: str) -> ConfigProblem:
    """`gateway.hostnam: unknown key` -> `Pulumi.dev.yaml: gateway.hostnam: unknown key`, when the key's file is
    known (problems that already name a file, or relate several keys, stay as they are)."""
    top = re.split(r"[.\[]", problem.path, maxsplit=1)[0]
    source = config.sources.get(f"{prefix}{top}")
    if source is None or problem.path.startswith(("Pulumi.", str(PROJECT_ROOT))):
        return problem
    return ConfigProblem(f"{source}: {problem.path}", problem.message)
