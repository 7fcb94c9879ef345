"""ReleaseManifest: an upstream release manifest applied object by object, from the release URL or a mirror."""

from __future__ import annotations

import io
import urllib.error

import pulumi
import pytest

from components import release_manifest
from components.release_manifest import (
    EMPTY,
    SOURCE_ANNOTATION,
    CaMount,
    ManifestUnavailable,
    ReleaseManifest,
    ReleaseManifestArgs,
)
from infra.offline.mocks import run_program
from infra.stack_config import StackConfig

CLUSTER_URL = "https://github.com/rabbitmq/cluster-operator/releases/download/v2.22.3/cluster-operator.yml"


# --- Where the text comes from ------------------------------------------------------------------------------


def test_the_deploy_path_downloads_the_release_url(monkeypatch):
    opened = []

    def fake_urlopen(url, timeout):
        opened.append((url, timeout))
        return io.BytesIO(b"kind: List\n")

    monkeypatch.setattr(release_manifest.urllib.request, "urlopen", fake_urlopen)
    text = release_manifest.read_manifest(
        "https://github.com/rabbitmq/cluster-operator", "v2.22.3", "cluster-operator.yml", mirror=None
    )
    assert text == "kind: List\n"
    assert opened == [(CLUSTER_URL, release_manifest.DOWNLOAD_TIMEOUT_SECONDS)]


def test_a_failed_download_names_the_url_and_the_offline_way(monkeypatch):
    def unreachable(url, timeout):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(release_manifest.urllib.request, "urlopen", unreachable)
    with pytest.raises(ManifestUnavailable, match=r"could not be downloaded from https://github\.com/.*/v2\.22\.3/"):
        release_manifest.read_manifest(
            "https://github.com/rabbitmq/cluster-operator", "v2.22.3", "cluster-operator.yml", None
        )


# --- The component on a small manifest ----------------------------------------------------------------------

SMALL = """\
apiVersion: v1
kind: Namespace
metadata: {name: demo-system}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]
---
# an empty document, as kustomize output can carry
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: demo, namespace: demo-system, labels: {app: demo}}
spec:
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec:
      containers: [{name: manager, image: example/demo:1.0.0}]
"""


def small_args(**overrides) -> ReleaseManifestArgs:
    args = {
        "repository": "https://github.com/example/demo",
        "tag": "v1.0.0",
        "asset": "demo.yaml",
        "namespace": "demo-system",
        "labels": {"team": "platform"},
        "ca_mounts": [CaMount(deployment="demo", container="manager", secret="ca")],
    }
    return ReleaseManifestArgs(**{**args, **overrides})


def run_small(tmp_path, monkeypatch, args: ReleaseManifestArgs):
    (tmp_path / "demo-v1.0.0.yaml").write_text(SMALL)
    monkeypatch.setenv(release_manifest.MIRROR_ENV, str(tmp_path))

    def program():
        first = ReleaseManifest("demo", args)
        second = ReleaseManifest("again", args)  # a second instance must not collide with the first
        pulumi.export("objects", [len(first.objects), len(second.objects)])

    return run_program(StackConfig("unit", "test", {}, frozenset()), program)


def test_each_object_is_its_own_resource_and_the_namespace_is_left_out(tmp_path, monkeypatch):
    run = run_small(tmp_path, monkeypatch, small_args())
    kinds = sorted(o["kind"] for o in run.kubernetes_objects())
    assert kinds == ["CustomResourceDefinition", "CustomResourceDefinition", "Deployment", "Deployment"]
    names_ = {r.name for r in run.registrations if r.inputs.get("kind")}
    # Children named after their component: two manifests never collide.
    assert names_ == {
        "demo-customresourcedefinition-widgets.example.com",
        "demo-deployment-demo-system-demo",
        "again-customresourcedefinition-widgets.example.com",
        "again-deployment-demo-system-demo",
    }
    deployment = run.objects("Deployment")[0]
    assert deployment["metadata"]["labels"] == {"app": "demo", "team": "platform"}
    assert deployment["metadata"]["annotations"][SOURCE_ANNOTATION] == (
        "https://github.com/example/demo/releases/download/v1.0.0/demo.yaml"
    )
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"app": "demo"}


def test_a_manifest_for_another_namespace_is_refused(tmp_path, monkeypatch):
    with pytest.raises(Exception, match=r"demo-system.*not 'elsewhere'"):
        run_small(tmp_path, monkeypatch, small_args(namespace="elsewhere"))


def test_a_ca_mount_into_a_missing_deployment_is_refused(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="no Deployment nope to mount the CA into"):
        run_small(tmp_path, monkeypatch, small_args(ca_mounts=[CaMount(deployment="nope", container="x", secret="ca")]))


def test_transformations_are_pure_functions():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    assert release_manifest.drop_namespace(namespace) == EMPTY
    assert namespace["kind"] == "Namespace", "the input is not changed"
    (deployment,) = [o for o in release_manifest.decode(SMALL) if o["kind"] == "Deployment"]
    mounted = release_manifest.with_ca(deployment, CaMount("demo", "manager", "ca", file="corp"))
    assert "volumeMounts" not in deployment["spec"]["template"]["spec"]["containers"][0]
    assert (
        mounted["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
        == "/etc/ssl/certs/corp.crt"
    )
    with pytest.raises(ValueError, match="has no container 'sidecar'"):
        release_manifest.with_ca(deployment, CaMount("demo", "sidecar", "ca"))


def test_mirror_names_follow_the_shared_manifests_folder():
    assert release_manifest.mirror_file_name("cluster-operator.yml", "v2.22.3") == "cluster-operator-v2.22.3.yml"
    assert (
        release_manifest.mirror_file_name("messaging-topology-operator-with-certmanager.yaml", "v1.20.1")
        == "messaging-topology-operator-with-certmanager-v1.20.1.yaml"
    )
