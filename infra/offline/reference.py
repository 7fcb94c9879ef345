"""The configuration reference, generated from the model so the README can never drift from the code."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from infra.config import SECRET_CONFIG_KEYS, PlatformConfig
from infra.errors import unwrap


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}{key}"
        rows.append((path, (field.description or "").replace("|", "\\|")))
        inner = unwrap(field.annotation)
        if typing.get_origin(inner) is dict:
            inner, path = unwrap(typing.get_args(inner)[1]), f"{path}.<name>"
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            rows.extend(_rows(inner, f"{path}."))
    return rows


def markdown() -> str:
    lines = ["| key | meaning and default |", "|---|---|"]
    lines += [f"| `{path}` | {text} |" for path, text in _rows(PlatformConfig, "")]
    lines += ["", "Secret keys (`pulumi config set --secret <key> <value>`; never part of the model above):", ""]
    lines += ["| secret key | meaning |", "|---|---|"]
    lines += [f"| `{key}` | {text} |" for key, text in sorted(SECRET_CONFIG_KEYS.items())]
    lines.append(
        "| `alert<Name>` | A receiver's credential (PagerDuty routing key, SMTP password, webhook URL), named by the "
        "receiver's `routingKeySecret`, `passwordSecret` or `urlSecret` (e.g. `alertPagerdutyRoutingKey`). |"
    )
    return "\n".join(lines) + "\n"


README_TABLE_START = "| key | meaning and default |\n"
README_TABLE_LAST_ROW = "| `alert<Name>` |"


def readme_with_reference(readme: str) -> str:
    """README with its configuration reference (from its header row through the `alert<Name>` row) replaced by
    `markdown()`."""
    for marker in (README_TABLE_START, README_TABLE_LAST_ROW):
        if marker not in readme:
            raise RuntimeError(f"README has no configuration reference to rewrite: no line starting {marker.strip()!r}")
    start = readme.index(README_TABLE_START)
    end = readme.index("\n", readme.index(README_TABLE_LAST_ROW, start)) + 1
    return readme[:start] + markdown() + readme[end:]
