"""Config problems as one readable line each: the field path, the value, the rule."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True, order=True)
class ConfigProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The stack's config was refused; raised before any resource is registered."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))

    def report(self, stack: str) -> str:
        count = len(self.problems)
        lines = [f"stack {stack!r}: configuration refused ({count} problem{'s' if count != 1 else ''}):"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def unwrap(annotation: object) -> object:
    """The model, dict or list type behind Optional/Annotated wrappers."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    current: object = root
    for part in loc:
        current = unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or n: f for n, f in current.model_fields.items()}
            if part not in fields:
                return None
            current = fields[part].annotation
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _keys(model: type[BaseModel] | None) -> list[str]:
    """The keys a config section takes, as the stack files spell them."""
    return sorted(f.alias or n for n, f in model.model_fields.items()) if model else []


def problems_from_validation_error(error: ValidationError, root: type[BaseModel], prefix: tuple = ()) -> list:
    problems = []
    for err in error.errors():
        loc = prefix + tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _keys(_model_at(root, tuple(err["loc"])[:-1]))
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
            message = f"unknown key{f'; did you mean {close[0]!r}?' if close else ''}{hint}"
        elif kind == "missing":
            message = "is required"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            # pydantic's "Input should be a valid dictionary or instance of <class>" names a Python class.
            keys = _keys(_model_at(root, tuple(err["loc"])))
            hint = f" of keys ({', '.join(keys)})" if keys else ""
            message = f"must be a section{hint}, not {err['input']!r}"
        elif kind == "value_error":
            message = err["msg"].removeprefix("Value error, ")
        elif kind == "string_pattern_mismatch":
            message = f"{err['input']!r} does not match the pattern {err['ctx']['pattern']}"
        else:
            message = f"{err['msg'][0].lower()}{err['msg'][1:]} (got {err['input']!r})"
        if loc and loc[-1] == "[key]":
            # pydantic marks a bad map key with "[key]"; the key itself is the previous element.
            loc = loc[:-1]
            message = f"key {message}"
        problems.append(ConfigProblem(format_path(loc), message))
    return problems
