"""An upstream install manifest (a release asset) applied object by object, at a pinned release tag.

Some operators ship no Helm chart: their supported install is a YAML file attached to each GitHub release
(`https://github.com/<owner>/<repo>/releases/download/<tag>/<asset>`). This component reads that file at the
pinned tag, decodes it here, and registers every object as its own pulumi-kubernetes resource
(`components.kube`, the type `yaml.ConfigGroup` would give it), so each shows in `pulumi preview` and in the
offline render. Transformations adapt it to the platform without forking it:
the manifest's own Namespace is dropped (the platform creates namespaces, with Pod Security labels), every
object carries the platform's labels and the URL it came from, and a CA bundle can be mounted into a container.

Offline (no network) the same file is read from a mirror folder named by `SETTLEMENT_MANIFEST_MIRROR`, as
`<asset stem>-<tag><asset suffix>` (e.g. `cluster-operator-v2.22.3.yml`).
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pulumi
import yaml

from components import pod_security
from components.kube import KubeObject

MIRROR_ENV = "SETTLEMENT_MANIFEST_MIRROR"
SOURCE_ANNOTATION = "platform.settlement.io/source"
CA_DIR = "/etc/ssl/certs"
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
DOWNLOAD_TIMEOUT_SECONDS = 60


class ManifestUnavailable(pulumi.RunError):
    """The manifest could not be read. A RunError: the engine (and the offline CLI) print it without a traceback."""


@dataclass(frozen=True)
class CaMount:
    """A CA certificate from a Secret, added to a container's system trust store as `/etc/ssl/certs/<file>.crt`."""

    deployment: str
    container: str
    secret: str
    key: str = "ca.crt"
    file: str = "internal-ca"


@dataclass(frozen=True)
class ReleaseManifestArgs:
    repository: str
    """`https://github.com/<owner>/<repo>`."""
    tag: str
    """Release tag, e.g. `v2.22.3`: what is tested is what deploys."""
    asset: str
    """File attached to the release, e.g. `cluster-operator.yml`."""
    namespace: str
    """Namespace the manifest installs into. The upstream file names it; the two must agree."""
    labels: dict[str, str] = field(default_factory=dict)
    ca_mounts: list[CaMount] = field(default_factory=list)
    restricted: bool = True
    """Hold the manifest's pods to the platform's hardening (`components.pod_security`): high UID, read-only root."""
    checkov_skips: dict[str, str] = field(default_factory=dict)
    """checkov check id -> why it cannot hold for this software; annotated on its pod templates' owners."""
    resources: dict[str, dict] = field(default_factory=dict)
    """`<workload>/<container>` -> requests and limits in place of upstream's (sized for the platform)."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What every object needs first (cert-manager for the manifest's Issuer and Certificates)."""
    protect_crds: bool = False
    """The CRDs define data (queue clusters): protect them too, so no edit or destroy can delete them."""


# --- Where the text comes from --------------------------------------------------------------------------------


def release_url(repository: str, tag: str, asset: str) -> str:
    return f"{repository.rstrip('/')}/releases/download/{tag}/{asset}"


def mirror_file_name(asset: str, tag: str) -> str:
    """`cluster-operator.yml` at `v2.22.3` -> `cluster-operator-v2.22.3.yml`."""
    path = PurePosixPath(asset)
    return f"{path.stem}-{tag}{path.suffix}"


def read_manifest(repository: str, tag: str, asset: str, mirror: str | None) -> str:
    """The manifest's text: from the mirror folder when one is set, else downloaded from the release."""
    if mirror is not None:
        path = Path(mirror) / mirror_file_name(asset, tag)
        if not path.is_file():
            raise ManifestUnavailable(
                f"release manifest {asset} {tag} not found: expected {path.name} in {Path(mirror).resolve()} "
                f"(the offline manifest mirror: ../shared/manifests, or the folder {MIRROR_ENV} names)"
            )
        return path.read_text()
    url = release_url(repository, tag, asset)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            return response.read().decode()
    except (urllib.error.URLError, TimeoutError) as error:
        raise ManifestUnavailable(
            f"release manifest {asset} {tag} could not be downloaded from {url}: {error} "
            f"(offline, set {MIRROR_ENV} to a folder holding {mirror_file_name(asset, tag)})"
        ) from None


class KubernetesLoader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):
    """YAML as Kubernetes reads it: an unquoted `=` and timestamps stay strings (YAML 1.1 would type them)."""


for _tag in ("tag:yaml.org,2002:value", "tag:yaml.org,2002:timestamp"):
    KubernetesLoader.add_constructor(_tag, lambda loader, node: loader.construct_scalar(node))


def load_documents(text: str) -> list[dict]:
    """Every non-empty document of a multi-document manifest."""
    return [d for d in yaml.load_all(text, Loader=KubernetesLoader) if d]


def decode(text: str) -> list[dict]:
    """Every object of a manifest (documents with a kind and an apiVersion), the caller's own copy."""
    return pickle.loads(_decoded(text))


@functools.lru_cache(maxsize=8)
def _decoded(text: str) -> bytes:
    """The YAML parse of a manifest, once per process and manifest (the RabbitMQ manifests' CRDs are megabytes):
    a process that runs the program again (tests, bench) unpickles a copy, which is several times faster."""
    return pickle.dumps([d for d in load_documents(text) if d.get("kind") and d.get("apiVersion")], protocol=-1)


# --- Transformations: plain functions from an object to the object the platform applies ----------------------

EMPTY = {"apiVersion": "v1", "kind": "List"}
"""An object the platform does not apply (an empty `v1 List`, pulumi-kubernetes yaml.py's omit pattern)."""


def drop_namespace(obj: dict) -> dict:
    """The manifest's Namespace is left out: the platform's own Namespace (Pod Security labels) owns the name."""
    return dict(EMPTY) if obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1" else obj


def with_metadata(obj: dict, labels: dict[str, str], source: str) -> dict:
    """The platform's labels and the source URL on the object's own metadata. Pod templates and selectors keep
    upstream's labels: Services, webhooks and NetworkPolicies select the pods by them."""
    if obj == EMPTY:
        return obj
    # A new top level and metadata, sharing the rest: nothing here changes an object in place, and a deep copy of
    # every object (the CRDs are megabytes) was most of the program's own time.
    metadata = obj.get("metadata") or {}
    return {
        **obj,
        "metadata": {
            **metadata,
            "labels": {**(metadata.get("labels") or {}), **labels},
            "annotations": {**(metadata.get("annotations") or {}), SOURCE_ANNOTATION: source},
        },
    }


def with_ca(obj: dict, mount: CaMount) -> dict:
    """Mount `mount.key` of Secret `mount.secret` read-only at /etc/ssl/certs/<file>.crt in the named container.

    One file (subPath) beside the image's own bundle, not over the folder: Go's x509.SystemCertPool, which the
    RabbitMQ operators use, reads every file in /etc/ssl/certs. A subPath mount is not refreshed when the
    Secret changes; the internal root is valid for ten years, and Go reads the pool once per process anyway.
    """
    if obj.get("kind") != "Deployment" or obj["metadata"]["name"] != mount.deployment:
        return obj
    out = copy.deepcopy(obj)
    pod = out["spec"]["template"]["spec"]
    containers = [c for c in pod["containers"] if c["name"] == mount.container]
    if not containers:
        names = [c["name"] for c in pod["containers"]]
        raise ValueError(f"Deployment {mount.deployment} has no container {mount.container!r} (it has {names})")
    volume = f"trust-{mount.file}"
    file_name = f"{mount.file}.crt"
    pod["volumes"] = [
        *(pod.get("volumes") or []),
        {"name": volume, "secret": {"secretName": mount.secret, "items": [{"key": mount.key, "path": file_name}]}},
    ]
    containers[0]["volumeMounts"] = [
        *(containers[0].get("volumeMounts") or []),
        {"name": volume, "mountPath": f"{CA_DIR}/{file_name}", "subPath": file_name, "readOnly": True},
    ]
    return out


def hardened(obj: dict) -> dict:
    """Pods as the platform's own: the security contexts of `components.pod_security` over upstream's, and a
    tag (not a digest) pulled every time, so a re-pushed tag cannot run a stale cached image."""
    if obj.get("kind") not in POD_TEMPLATE_KINDS:
        return obj
    out = copy.deepcopy(obj)
    pod = out["spec"]["template"]["spec"]
    pod["securityContext"] = {**(pod.get("securityContext") or {}), **pod_security.pod_security_context()}
    for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
        context = {**(container.get("securityContext") or {}), **pod_security.container_security_context()}
        container["securityContext"] = context
        if "@sha256:" not in container["image"]:
            container["imagePullPolicy"] = "Always"
    return out


def with_resources(obj: dict, resources: dict[str, dict]) -> dict:
    """Requests and limits of the named containers replaced by the platform's sizes."""
    if obj.get("kind") not in POD_TEMPLATE_KINDS:
        return obj
    out = copy.deepcopy(obj)
    for container in out["spec"]["template"]["spec"]["containers"]:
        sized = resources.get(f"{out['metadata']['name']}/{container['name']}")
        if sized is not None:
            container["resources"] = copy.deepcopy(sized)
    return out


def with_checkov_skips(obj: dict, skips: dict[str, str]) -> dict:
    """`checkov.io/skipN: <check>=<reason>` on workloads: an accepted exception, visible on the object."""
    if obj.get("kind") not in POD_TEMPLATE_KINDS or not skips:
        return obj
    metadata = obj.get("metadata") or {}
    annotations = dict(metadata.get("annotations") or {})
    for i, (check, reason) in enumerate(sorted(skips.items()), start=1):
        annotations[f"checkov.io/skip{i}"] = f"{check}={reason}"
    return {**obj, "metadata": {**metadata, "annotations": annotations}}


def transform(obj: dict, args: ReleaseManifestArgs, source: str) -> dict:
    """Every transformation, in order, for one object of the manifest."""
    obj = with_checkov_skips(with_metadata(drop_namespace(obj), args.labels, source), args.checkov_skips)
    if args.restricted:
        obj = hardened(obj)
    obj = with_resources(obj, args.resources)
    for mount in args.ca_mounts:
        obj = with_ca(obj, mount)
    return obj


def manifest_problems(objects: list[dict], args: ReleaseManifestArgs) -> list[str]:
    """What makes the manifest unusable as configured: objects in another namespace, a CA mount target missing."""
    problems = [
        f"{o['kind']} {o['metadata']['name']} is in namespace {o['metadata']['namespace']!r}, not {args.namespace!r}"
        for o in objects
        if o["metadata"].get("namespace") not in (None, args.namespace)
    ]
    problems += [
        f"{o['kind']} {o['metadata']['name']} is namespace {o['metadata']['name']!r}, not {args.namespace!r}"
        for o in objects
        if o["kind"] == "Namespace" and o["metadata"]["name"] != args.namespace
    ]
    deployments = {o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"}
    problems += [
        f"no Deployment {m.deployment} to mount the CA into (Deployments: {sorted(deployments)})"
        for m in args.ca_mounts
        if m.deployment not in deployments
    ]
    return problems


class ReleaseManifest(pulumi.ComponentResource):
    """An upstream release manifest, one resource per object. Whatever needs the installed software (its CRDs,
    webhooks, controller) depends on the component: the SDK expands a local component in `depends_on` to its
    children, exactly `objects` (pulumi/runtime/rpc.py `_add_dependency`), and resolves one entry instead of one
    per object (pulumi/runtime/_depends_on.py `_resolve_depends_on`: an Output and two awaits per entry)."""

    url: str
    objects: list[pulumi.Resource]
    """Every applied object, the component's only children."""

    def __init__(self, name: str, args: ReleaseManifestArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:core:ReleaseManifest", name, None, opts)
        self.url = release_url(args.repository, args.tag, args.asset)
        text = read_manifest(args.repository, args.tag, args.asset, os.environ.get(MIRROR_ENV))
        upstream = decode(text)
        problems = manifest_problems(upstream, args)
        if problems:
            raise ManifestUnavailable(f"release manifest {args.asset} {args.tag}: " + "; ".join(problems))
        applied = [o for o in (transform(o, args, self.url) for o in upstream) if o != EMPTY]

        # Each object is registered as itself, already decoded and transformed here: the resource type and inputs
        # pulumi-kubernetes' yaml.ConfigGroup would register (`KubeObject`, the whole object), without
        # ConfigGroup's Output-wrapped decode of the whole manifest, which costs seconds on these CRDs.
        self.objects = []
        for obj in applied:
            meta = obj["metadata"]
            identity = f"{meta['namespace']}-{meta['name']}" if meta.get("namespace") else meta["name"]
            options = pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                # Deleting a CRD deletes every custom resource of it (every queue cluster): never on a refactor.
                # Helm leaves CRDs behind for the same reason.
                retain_on_delete=obj["kind"] == "CustomResourceDefinition",
                protect=obj["kind"] == "CustomResourceDefinition" and args.protect_crds,
            )
            self.objects.append(KubeObject(f"{name}-{obj['kind'].lower()}-{identity}", obj, options))
        self.register_outputs({"url": self.url, "objects": len(self.objects)})
