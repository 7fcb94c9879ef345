"""Offline schema checks for rendered objects.

Built-in kinds: Kubernetes' own OpenAPI schemas for the stack's version (kubernetes-validate, strict: unknown
fields are errors). Custom resources: the `openAPIV3Schema` of the CRD the environment itself installs (the
pinned charts' and manifests' own CRDs: what deploys is what validates), made strict the way the API server
prunes - an object schema without `x-kubernetes-preserve-unknown-fields` admits only the properties it lists.
`../shared/crds` serves only kinds that nothing in the environment ships.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

from components.release_manifest import KubernetesLoader
from infra.offline.caches import CRDS_DIR, content_key


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
    # apiVersion, kind and metadata are implicitly specified at the root of every CRD's schema (Kubernetes
    # apiextensions "Specifying a structural schema"); some CRDs (Istio's) list only spec and status.
    if schema.get("additionalProperties") is False:
        for key in ("apiVersion", "kind", "metadata"):
            schema["properties"].setdefault(key, {})
    return schema


@dataclass(frozen=True)
class CrdSchemas:
    by_kind: dict[tuple[str, str], dict]
    """(apiVersion, kind) -> strict JSON schema."""

    def validate(self, obj: dict) -> list[str]:
        key = (obj["apiVersion"], obj["kind"])
        if key not in self.by_kind:
            return [f"no CRD the environment installs (nor one in {CRDS_DIR}) serves {key[0]} {key[1]}"]
        validator = jsonschema.Draft7Validator(self.by_kind[key])
        return [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]


def _served(crd: dict) -> dict[tuple[str, str], dict]:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    return {
        (f"{group}/{version['name']}", kind): version["schema"]["openAPIV3Schema"]
        for version in crd["spec"]["versions"]
        if version.get("served")
    }


@cache
def load_crd_schemas(crds_dir: Path = CRDS_DIR) -> CrdSchemas:
    """Strict schemas of the upstream CRDs in `crds_dir` (`../shared/crds`)."""
    if not crds_dir.is_dir():
        raise FileNotFoundError(f"CRD folder {crds_dir} not found (set SETTLEMENT_CRDS_DIR)")
    by_kind = {}
    for path in sorted(crds_dir.glob("*/*.yaml")):
        for key, schema in _served(yaml.load(path.read_text(), Loader=KubernetesLoader)).items():
            by_kind[key] = strict_schema(schema)
    return CrdSchemas(by_kind)


def environment_crd_schemas(objects: list[dict], fallback: Path | None = CRDS_DIR) -> CrdSchemas:
    """Strict schemas of the CRDs among `objects` (what the environment installs), plus, for kinds none of them
    serves, those of `fallback` when it exists."""
    by_kind = {}
    if fallback is not None and fallback.is_dir():
        by_kind.update(load_crd_schemas(fallback).by_kind)
    for crd in objects:
        if crd.get("kind") == "CustomResourceDefinition":
            by_kind.update({key: _strict_cached(schema) for key, schema in _served(crd).items()})
    return CrdSchemas(by_kind)


@cache
def _strict_from_json(schema_json: str) -> dict:
    return strict_schema(json.loads(schema_json))


def _strict_cached(schema: dict) -> dict:
    """The same CRD is rendered once per stack and test: make each schema strict once per process."""
    return _strict_from_json(json.dumps(schema, sort_keys=True))


def is_builtin(obj: dict) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return group == "" or "." not in group or (group.endswith(".k8s.io") and not group.startswith("gateway."))


# kubernetes-validate 1.37.0 (`kubernetes_validate/utils.py`, `validate`) opens and parses the kind's schema and the
# whole `_definitions.json` again on every call: 10 ms an object, 90% of a stack's validation. They are the package's
# own read-only data, and jsonschema only reads a schema, so each file is parsed once per process; the validation
# itself is the library's, unchanged.
kubernetes_validate.utils.schema_contents = cache(kubernetes_validate.utils.schema_contents)


def validate_builtin(obj: dict, kubernetes_version: str) -> list[str]:
    """Problems with a built-in object under Kubernetes' strict schema for the version. Cached per process by the
    object's content: most objects (the charts') are the same in every stack, and their validation too."""
    key = content_key(obj)
    if key is None:
        return _validate_builtin(obj, kubernetes_version)
    return list(_validate_builtin_cached(key, kubernetes_version))


@cache
def _validate_builtin_cached(key: str, kubernetes_version: str) -> tuple[str, ...]:
    return tuple(_validate_builtin(json.loads(key), kubernetes_version))


def _validate_builtin(obj: dict, kubernetes_version: str) -> list[str]:
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
