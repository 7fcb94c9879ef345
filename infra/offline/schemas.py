"""Offline schema checks for rendered objects.

Built-in kinds: Kubernetes' own OpenAPI schemas for the stack's version (kubernetes-validate, strict: unknown
fields are errors). Custom resources: the `openAPIV3Schema` of the upstream CRD the operator installs
(`../shared/crds`), made strict the way the API server prunes - an object schema without
`x-kubernetes-preserve-unknown-fields` admits only the properties it lists.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from infra.stack_config import PROJECT_ROOT

CRDS_DIR = Path(os.environ.get("SETTLEMENT_CRDS_DIR", PROJECT_ROOT.parent / "shared" / "crds"))


class _CrdLoader(yaml.SafeLoader):
    """Some CRDs carry an unquoted `=` enum value, which YAML 1.1 tags as `value`; read it as the string."""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def strict_schema(schema: dict) -> dict:
    """OpenAPI v3 (Kubernetes dialect) to JSON Schema with unknown fields refused and `nullable` honoured."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("nullable") and isinstance(node.get("type"), str):
                node["type"] = [node["type"], "null"]
            if (
                node.get("type") in ("object", ["object", "null"])
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@dataclass(frozen=True)
class CrdSchemas:
    by_kind: dict[tuple[str, str], dict]
    """(apiVersion, kind) -> strict JSON schema."""

    def validate(self, obj: dict) -> list[str]:
        key = (obj["apiVersion"], obj["kind"])
        if key not in self.by_kind:
            return [f"no CRD in {CRDS_DIR} serves {key[0]} {key[1]}"]
        validator = jsonschema.Draft7Validator(self.by_kind[key])
        return [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]


@cache
def load_crd_schemas(crds_dir: Path = CRDS_DIR) -> CrdSchemas:
    if not crds_dir.is_dir():
        raise FileNotFoundError(f"CRD folder {crds_dir} not found (set SETTLEMENT_CRDS_DIR)")
    by_kind = {}
    for path in sorted(crds_dir.glob("*/*.yaml")):
        crd = yaml.load(path.read_text(), Loader=_CrdLoader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = version["schema"]["openAPIV3Schema"]
                by_kind[(f"{group}/{version['name']}", kind)] = strict_schema(schema)
    return CrdSchemas(by_kind)


def is_builtin(obj: dict) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return group == "" or "." not in group or (group.endswith(".k8s.io") and not group.startswith("gateway."))


def validate_builtin(obj: dict, kubernetes_version: str) -> list[str]:
    try:
        kubernetes_validate.validate(obj, f"{kubernetes_version}.0", strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(str(p) for p in error.path) or '<root>'}: {error.message}"]
    return []


def validate(obj: dict, kubernetes_version: str, crds: CrdSchemas | None = None) -> list[str]:
    """Problems with one rendered object, empty when it is valid."""
    if is_builtin(obj):
        return validate_builtin(obj, kubernetes_version)
    return (crds or load_crd_schemas()).validate(obj)
