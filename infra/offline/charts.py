"""Expand Helm releases offline into the objects the cluster will run, with the real Helm engine.

Under mock mode a `helm.v3.Release` (and a Helm v4 `Chart`, implemented inside the provider) registers one
resource and no children. The cluster, though, runs everything the chart renders. This module renders each
release from the pinned chart folder in the offline cache (`../shared/charts/<chart>-<version>/`, what
`helm pull --untar` gives) with exactly the values the program passed, through helm-python-sdk (Helm v4's Go SDK,
no helm binary and no cluster), so every check - schemas, Pod Security, checkov, reachability, diff - sees them.

helm-python-sdk is an offline extra (wheels only for Linux x86_64 and macOS arm64): `pulumi up` never imports
this module, and deploying works from any platform.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from components import release_manifest
from components.release_manifest import KubernetesLoader
from infra.offline.caches import CHART_CACHE_ENV, CHARTS_DIR, CHARTS_ENV

RELEASE_TYPES = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")
CHART_OBJECT_TYPE = "kubernetes:chart-object"

# Marks every expanded object with where it comes from, for a reader of out/<stack>/manifests. Offline only:
# in the cluster Helm marks what it installs with `meta.helm.sh/release-name` / `-namespace` itself
# (helm pkg/action/validate.go, setMetadataVisitor), which this render reproduces for templated objects.
SOURCE_ANNOTATION = "offline.settlement.io/source"
HELM_RELEASE_NAME = "meta.helm.sh/release-name"
HELM_RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"

# Kubernetes' built-in cluster-scoped kinds (`kubectl api-resources --namespaced=false` on Kubernetes 1.33).
# Helm leaves metadata.namespace out of most templates; the kube client then puts namespaced objects into the
# release namespace (helm pkg/kube/client.go, `Build` with the release namespace) - which we reproduce.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "APIService",
        "CSIDriver",
        "CSINode",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "ComponentStatus",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)

# Helm's own manifest separator (helm pkg/release/v1/util/manifest.go, SplitManifests): `---` at a line start,
# whatever follows on that line (cert-manager's templates have `---# ...`). A YAML multi-document loader is
# stricter than Helm and fails on those.
_SEPARATOR = re.compile(r"(?:^|\s*\n)---\s*")


class ChartCacheError(RuntimeError):
    """A pinned chart is not in the offline cache: names the chart, the version and where it looked."""


def load_documents(text: str) -> list[dict]:
    """Kubernetes objects in a rendered template or manifest file, split the way Helm splits them."""
    out = []
    for doc in _SEPARATOR.split(text):
        if not doc.strip():
            continue
        obj = yaml.load(doc, Loader=KubernetesLoader)
        if isinstance(obj, dict) and obj.get("kind"):
            if obj["kind"].endswith("List") and "items" in obj:
                out.extend(i for i in obj["items"] if i)
            else:
                out.append(obj)
    return out


@dataclass(frozen=True)
class Release:
    """What the program asked Helm to install (the registration's inputs)."""

    urn: str
    name: str
    namespace: str
    chart: str
    version: str
    values: dict
    skip_crds: bool

    @property
    def folder(self) -> str:
        return f"{self.chart}-{self.version}"


def release_of(registration) -> Release:
    inputs = registration.inputs
    chart = inputs["chart"].rstrip("/").rsplit("/", 1)[-1]
    return Release(
        urn=registration.urn,
        name=inputs.get("name") or registration.name,
        namespace=inputs.get("namespace") or "default",
        chart=chart,
        version=str(inputs.get("version", "")),
        values=inputs.get("values") or {},
        skip_crds=bool(inputs.get("skipCrds", False)),
    )


@dataclass(frozen=True)
class ChartObject:
    """One object a release installs."""

    release: Release
    source: str
    """`crds/<file>` for install-only CRDs, else the template path."""
    hook: str | None
    """The `helm.sh/hook` value for objects Helm runs around install/upgrade (Jobs, their RBAC)."""
    object: dict

    @property
    def urn(self) -> str:
        obj, meta = self.object, self.object["metadata"]
        return f"{self.release.urn}${obj['apiVersion']}/{obj['kind']}/{meta.get('namespace', '')}/{meta['name']}"

    def to_json(self) -> dict:
        """The shape of a resources.json entry, so the diff treats it like any other resource."""
        return {
            "urn": self.urn,
            "type": CHART_OBJECT_TYPE,
            "name": f"{self.object['kind']}/{self.object['metadata']['name']}",
            "parent": self.release.urn,
            "custom": True,
            "protect": False,
            "retainOnDelete": False,
            "dependencies": [],
            "ignoreChanges": [],
            "aliases": [],
            "inputs": self.object,
        }


def chart_folder(chart: str, version: str, charts_dir: Path = CHARTS_DIR) -> Path:
    if not charts_dir.is_dir():
        named = os.environ.get(CHARTS_ENV)
        where = (
            f"check {CHARTS_ENV}, which names it"
            if named and Path(named).resolve() == charts_dir.resolve()
            else f"or set {CHARTS_ENV} to the folder that holds them"
        )
        raise ChartCacheError(
            f"the offline chart cache {charts_dir} does not exist: the offline render needs the pinned charts "
            f"(`helm pull <repo>/<chart> --version <v> --untar`, one folder <chart>-<version> each); {where}"
        )
    folder = charts_dir / f"{chart}-{version}"
    if not (folder / "Chart.yaml").is_file():
        cached = sorted(p.name for p in charts_dir.iterdir() if p.name.startswith(f"{chart}-"))
        raise ChartCacheError(
            f"chart {chart!r} version {version!r} is not in the offline cache {charts_dir} "
            f"(cached: {', '.join(cached) or 'no version of it'}); add {chart}-{version}/ "
            f"(`helm pull <repo>/{chart} --version {version} --untar`)"
        )
    return folder


@functools.cache
def _load_chart(folder: str):
    from helm_python import Chart

    return Chart.load(folder)


def chart_cache_dir() -> Path | None:
    configured = os.environ.get(CHART_CACHE_ENV)
    if configured is not None:
        return Path(configured) if configured else None
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(home) / "settlement-platform" / "charts"


def _expansion_key(folder: str, *inputs: str) -> str:
    """Everything an expansion depends on: the chart's files (name, size, modification time), the inputs, the
    Helm engine's version and this module's and the YAML loader's code."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for file_name in sorted(files):
            path = os.path.join(root, file_name)
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, folder)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    digest.update("\0".join([folder, *inputs, importlib.metadata.version("helm-python-sdk")]).encode())
    for module in (__file__, release_manifest.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()


@functools.cache
def _render(folder: str, values_json: str, name: str, namespace: str, kube_version: str) -> tuple:
    """`_expand_chart`, kept in this process and (unless disabled) on disk: a new process reads an expansion it
    has made before instead of parsing the chart's CRDs again (most of a cold render's time)."""
    cache = chart_cache_dir()
    if cache is None:
        return _expand_chart(folder, values_json, name, namespace, kube_version)
    path = cache / f"{_expansion_key(folder, values_json, name, namespace, kube_version)}.pickle"
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        pass  # not there yet (or torn): expand and keep it
    result = _expand_chart(folder, values_json, name, namespace, kube_version)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, delete=False) as tmp:  # atomic: readers never see half a file
            tmp.write(pickle.dumps(result, protocol=-1))
        os.replace(tmp.name, path)
    except OSError:
        pass  # a read-only or full cache only costs the next process the expansion
    return result


def _expand_chart(folder: str, values_json: str, name: str, namespace: str, kube_version: str) -> tuple:
    """((source, object), ...) for the crds/ files and the rendered templates (NOTES.txt left out).

    Cached per (chart, version, values, release, Kubernetes version): parsing the CRDs is most of the cost.
    Each object is kept pickled, for the disk cache; `_objects` unpickles them once per process.
    """
    chart = _load_chart(folder)
    rendered = _helm_render(chart, values_json, name, namespace, kube_version)
    disabled = disabled_dependencies(
        chart.metadata.get("dependencies") or [], chart.merge_values(json.loads(values_json))
    )
    crds = tuple(
        (f"crds/{c['filename'].split('/crds/', 1)[-1]}", blob)
        for c in sorted(chart.crds, key=lambda c: c["filename"])
        if _subchart_of(c["filename"]) not in disabled
        for blob in _pickled_documents(c["data"])
    )
    templates = tuple(
        (path, pickle.dumps(obj, protocol=-1))
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for obj in load_documents(text)
    )
    return crds, templates


def _helm_render(chart, values_json: str, name: str, namespace: str, kube_version: str) -> dict[str, str]:
    """Template path -> the text Helm renders for it, as `helm install` would (capabilities included)."""
    from helm_python import _native

    # The wrapper's render() does not expose capabilities; the C ABI takes them in the same options object.
    options = {"name": name, "namespace": namespace, "is_install": True, "kube_version": kube_version}
    return json.loads(_native.call_string("helm_render", chart._raw(), values_json, json.dumps(options)))


def helm_templates(release: Release, kube_version: str, charts_dir: Path = CHARTS_DIR) -> dict[str, str]:
    """What Helm renders for `release` now, uncached: template path -> text (what `expand` parses)."""
    folder = str(chart_folder(release.chart, release.version, charts_dir))
    values = json.dumps(release.values, sort_keys=True)
    return _helm_render(_load_chart(folder), values, release.name, release.namespace, kube_version)


@functools.cache
def _pickled_documents(text: str) -> tuple[bytes, ...]:
    """The objects of a file Helm does not template, pickled. A chart's `crds/` files are the same for every
    release and values (Helm installs them as they are), so each is parsed once per process, not once per stack."""
    return tuple(pickle.dumps(obj, protocol=-1) for obj in load_documents(text))


def disabled_dependencies(dependencies: list[dict], values: dict) -> set[str]:
    """Subcharts whose `condition` is false for these values: Helm prunes them, `crds/` folders included, before
    it installs anything (helm pkg/chart/util/dependencies.go, ProcessDependencies). A condition is a comma-separated
    list of value paths; the first that holds a boolean decides, and none means enabled."""
    out = set()
    for dep in dependencies:
        for path in filter(None, (p.strip() for p in (dep.get("condition") or "").split(","))):
            node = values
            for key in path.split("."):
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, bool):
                if not node:
                    out.add(dep.get("alias") or dep["name"])
                break
    return out


def _subchart_of(filename: str) -> str | None:
    """`<chart>/charts/<sub>/crds/x.yaml` -> `<sub>`; a file of the chart itself -> None."""
    parts = filename.split("/")
    return parts[2] if len(parts) > 3 and parts[1] == "charts" else None


def clear_cache() -> None:
    _render.cache_clear()
    _objects.cache_clear()


def chart_metadata(chart: str, version: str, charts_dir: Path = CHARTS_DIR) -> dict:
    """The chart's Chart.yaml (appVersion, dependencies) from the cache."""
    return yaml.safe_load((chart_folder(chart, version, charts_dir) / "Chart.yaml").read_text())


def expand(release: Release, kube_version: str, charts_dir: Path = CHARTS_DIR) -> list[ChartObject]:
    """Every object `release` installs: its crds/ files (unless skipped), templates and hooks (not tests)."""
    folder = chart_folder(release.chart, release.version, charts_dir)
    crds, templates = _objects(
        str(folder), json.dumps(release.values, sort_keys=True), release.name, release.namespace, kube_version
    )
    out = [] if release.skip_crds else [_object(release, path, None, obj, templated=False) for path, obj in crds]
    for path, obj in templates:
        hook = (obj.get("metadata", {}).get("annotations") or {}).get("helm.sh/hook")
        if hook is not None and {h.strip() for h in hook.split(",")} <= {"test", "test-success", "test-failure"}:
            continue  # `helm test` only: a Release never runs them
        out.append(_object(release, path, hook, obj, templated=True))
    return out


@functools.cache
def _objects(folder: str, values_json: str, name: str, namespace: str, kube_version: str) -> tuple:
    """`_render`'s objects, unpickled once per process and shared by every render in it: unpickling a stack's
    chart objects anew (about 8 MB, most of it CRDs) was a sixth of each render. `_object` gives each caller its own
    top-level mapping, `metadata` mapping and annotations; everything else - `metadata.labels`, `spec`, ... - is
    shared and read, never written, by the renders, the offline tools and the tests alike (a test that changes
    one works on a deep copy)."""
    crds, templates = _render(folder, values_json, name, namespace, kube_version)
    return tuple((path, pickle.loads(blob)) for path, blob in crds), tuple(
        (path, pickle.loads(blob)) for path, blob in templates
    )


def _object(release: Release, source: str, hook: str | None, obj: dict, templated: bool) -> ChartObject:
    """The object as the release installs it: its own top level, `metadata` and annotations (annotated here, and
    given its namespace by `expand_run`) over the shared rest of `obj` (`_objects`)."""
    meta = dict(obj.get("metadata") or {})
    annotations = dict(meta.get("annotations") or {})
    if templated and hook is None:
        annotations[HELM_RELEASE_NAME] = release.name
        annotations[HELM_RELEASE_NAMESPACE] = release.namespace
    annotations[SOURCE_ANNOTATION] = f"helm {release.namespace}/{release.name} {release.folder} {source}"
    meta["annotations"] = annotations
    return ChartObject(release, source, hook, {**obj, "metadata": meta})


def cluster_scoped_kinds(objects: list[dict]) -> set[str]:
    """Built-in cluster-scoped kinds plus the custom kinds whose CRD (among `objects`) says `scope: Cluster`."""
    custom = {
        o["spec"]["names"]["kind"]
        for o in objects
        if o.get("kind") == "CustomResourceDefinition" and o["spec"].get("scope") == "Cluster"
    }
    return set(CLUSTER_SCOPED_KINDS) | custom


def expand_run(registrations, kube_version: str, charts_dir: Path = CHARTS_DIR) -> list[ChartObject]:
    """The objects of every release a program run registered, ordered by release, each namespaced object
    placed in its release's namespace when its template leaves the namespace out."""
    out = []
    # By URN: registration order under the SDK is asynchronous, and renders must be identical.
    for registration in sorted(registrations, key=lambda r: r.urn):
        if registration.type in RELEASE_TYPES:
            out.extend(expand(release_of(registration), kube_version, charts_dir))
    every = [o.object for o in out] + [r.inputs for r in registrations if r.is_kubernetes_object]
    cluster_scoped = cluster_scoped_kinds(every)
    for item in out:
        meta = item.object["metadata"]
        if item.object["kind"] not in cluster_scoped and not meta.get("namespace"):
            meta["namespace"] = item.release.namespace
    return out
