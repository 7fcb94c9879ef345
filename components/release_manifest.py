"""An upstream install manifest (a release asset) applied object by object, at a pinned release tag.

Some operators ship no Helm chart: their supported install is a YAML file attached to each GitHub release
(`https://github.com/<owner>/<repo>/releases/download/<tag>/<asset>`). This component reads that file at the
pinned tag and applies it with pulumi-kubernetes' `yaml.ConfigGroup`, so every object is its own resource in
`pulumi preview` and in the offline render. Transformations adapt it to the platform without forking it:
the manifest's own Namespace is dropped (the platform creates namespaces, with Pod Security labels), every
object carries the platform's labels and the URL it came from, and a CA bundle can be mounted into a container.

Offline (no network) the same file is read from a mirror folder named by `SETTLEMENT_MANIFEST_MIRROR`, as
`<asset stem>-<tag><asset suffix>` (e.g. `cluster-operator-v2.22.3.yml`).
"""

from __future__ import annotations

import copy
import operator
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components import pod_security

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
                f"(the folder named by {MIRROR_ENV})"
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


class _ManifestLoader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):
    """YAML as Kubernetes reads it: an unquoted `=` and timestamps stay strings (YAML 1.1 would type them)."""


for _tag in ("tag:yaml.org,2002:value", "tag:yaml.org,2002:timestamp"):
    _ManifestLoader.add_constructor(_tag, lambda loader, node: loader.construct_scalar(node))


def load_documents(text: str) -> list[dict]:
    """Every non-empty document of a multi-document manifest."""
    return [d for d in yaml.load_all(text, Loader=_ManifestLoader) if d]


def decode(text: str) -> list[dict]:
    """Every object of a manifest (documents with a kind and an apiVersion)."""
    return [d for d in load_documents(text) if d.get("kind") and d.get("apiVersion")]


# --- Transformations: plain functions from an object to the object the platform applies ----------------------

EMPTY = {"apiVersion": "v1", "kind": "List"}
"""What ConfigGroup registers nothing for (pulumi-kubernetes yaml.py: the omit-a-resource pattern)."""


def drop_namespace(obj: dict) -> dict:
    """The manifest's Namespace is left out: the platform's own Namespace (Pod Security labels) owns the name."""
    return dict(EMPTY) if obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1" else obj


def with_metadata(obj: dict, labels: dict[str, str], source: str) -> dict:
    """The platform's labels and the source URL on the object's own metadata. Pod templates and selectors keep
    upstream's labels: Services, webhooks and NetworkPolicies select the pods by them."""
    if obj == EMPTY:
        return obj
    out = copy.deepcopy(obj)
    metadata = out.setdefault("metadata", {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), SOURCE_ANNOTATION: source}
    return out


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


def with_checkov_skips(obj: dict, skips: dict[str, str]) -> dict:
    """`checkov.io/skipN: <check>=<reason>` on workloads: an accepted exception, visible on the object."""
    if obj.get("kind") not in POD_TEMPLATE_KINDS or not skips:
        return obj
    out = copy.deepcopy(obj)
    annotations = out["metadata"].setdefault("annotations", {})
    for i, (check, reason) in enumerate(sorted(skips.items()), start=1):
        annotations[f"checkov.io/skip{i}"] = f"{check}={reason}"
    return out


def transform(obj: dict, args: ReleaseManifestArgs, source: str) -> dict:
    """Every transformation, in order, for one object of the manifest."""
    obj = with_checkov_skips(with_metadata(drop_namespace(obj), args.labels, source), args.checkov_skips)
    if args.restricted:
        obj = hardened(obj)
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


def resource_key(obj: dict, prefix: str) -> str:
    """The key of an object in ConfigGroup's `resources`: "<apiVersion>/<kind>:<prefix>-[<namespace>/]<name>"."""
    meta = obj["metadata"]
    identity = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
    return f"{obj['apiVersion']}/{obj['kind']}:{prefix}-{identity}"


class ReleaseManifest(pulumi.ComponentResource):
    """An upstream release manifest, one resource per object. Whatever needs the installed software (its CRDs,
    webhooks, controller) depends on `objects`."""

    url: str
    objects: list[pulumi.Output[pulumi.Resource]]
    """Every applied object. Depend on these, not on the component: ConfigGroup creates them once the YAML is
    decoded, and a dependency on a component only covers the children it has at that moment."""

    def __init__(self, name: str, args: ReleaseManifestArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:core:ReleaseManifest", name, None, opts)
        self.url = release_url(args.repository, args.tag, args.asset)
        text = read_manifest(args.repository, args.tag, args.asset, os.environ.get(MIRROR_ENV))
        upstream = decode(text)
        problems = manifest_problems(upstream, args)
        if problems:
            raise ManifestUnavailable(f"release manifest {args.asset} {args.tag}: " + "; ".join(problems))
        applied = [o for o in (transform(o, args, self.url) for o in upstream) if o != EMPTY]

        def apply_transformations(obj: dict, opts: pulumi.ResourceOptions) -> None:
            # ConfigGroup hands each object over to be changed in place.
            result = transform(obj, args, self.url)
            obj.clear()
            obj.update(result)
            opts.depends_on = list(args.depends_on)
            if result.get("kind") == "CustomResourceDefinition":
                # Deleting a CRD deletes every custom resource of it (every queue cluster): never on a refactor.
                # Helm leaves CRDs behind for the same reason.
                opts.retain_on_delete = True
                opts.protect = args.protect_crds

        objects = k8s.yaml.ConfigGroup(
            "objects",
            yaml=[text],
            transformations=[apply_transformations],
            # Children are named "<name>-<namespace>/<object>": a second manifest never collides with this one.
            resource_prefix=name,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # (ConfigGroup.get_resource ignores resource_prefix, so look the keys up directly.)
        self.objects = [objects.resources.apply(operator.itemgetter(resource_key(o, name))) for o in applied]
        self.register_outputs({"url": self.url, "objects": len(self.objects)})
