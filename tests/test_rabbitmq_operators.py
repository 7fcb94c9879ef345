"""RabbitMQ's operators from their release manifests (issue 10 item 4): what both stacks apply."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from components import release_manifest
from components.release_manifest import SOURCE_ANNOTATION
from infra.config import Operators
from infra.offline.caches import MANIFESTS_DIR as DEFAULT_MANIFEST_MIRROR
from infra.stack_config import PROJECT_ROOT

NAMESPACE = "rabbitmq-system"
CLUSTER_URL = "https://github.com/rabbitmq/cluster-operator/releases/download/v2.22.3/cluster-operator.yml"
TOPOLOGY_URL = (
    "https://github.com/rabbitmq/messaging-topology-operator/releases/download/v1.20.1/"
    "messaging-topology-operator-with-certmanager.yaml"
)


def from_manifest(run, url: str) -> list[dict]:
    return [o for o in run.kubernetes_objects() if o["metadata"].get("annotations", {}).get(SOURCE_ANNOTATION) == url]


def names(objects: list[dict], kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objects if o["kind"] == kind}


def test_the_cluster_operator_manifest_is_applied_object_by_object(stack_run):
    objects = from_manifest(stack_run, CLUSTER_URL)
    assert names(objects, "Deployment") == {"rabbitmq-cluster-operator"}
    assert names(objects, "CustomResourceDefinition") == {"rabbitmqclusters.rabbitmq.com"}
    assert names(objects, "MutatingWebhookConfiguration") == {"cluster-operator-mutating-webhook-configuration"}
    assert names(objects, "ValidatingWebhookConfiguration") == {"cluster-operator-validating-webhook-configuration"}
    assert names(objects, "Issuer") == {"selfsigned-issuer"}
    assert names(objects, "Certificate") == {"cluster-operator-serving-cert", "metrics-certs"}
    assert len(objects) == 15  # the manifest's 16 objects but its Namespace


def test_the_topology_operator_manifest_is_applied_object_by_object(stack_run):
    objects = from_manifest(stack_run, TOPOLOGY_URL)
    assert names(objects, "Deployment") == {"messaging-topology-operator"}
    crds = names(objects, "CustomResourceDefinition")
    assert len(crds) == 13 and {"queues.rabbitmq.com", "users.rabbitmq.com", "permissions.rabbitmq.com"} <= crds
    assert names(objects, "MutatingWebhookConfiguration") == {"messaging-topology-mutating-webhook-configuration"}
    assert names(objects, "ValidatingWebhookConfiguration") == {"messaging-topology-validating-webhook-configuration"}
    assert names(objects, "Issuer") == {"messaging-topology-selfsigned-issuer"}
    assert names(objects, "Certificate") == {"messaging-topology-serving-cert", "messaging-topology-metrics-certs"}
    assert len(objects) == 29  # the manifest's 30 objects but its Namespace


def test_the_platform_owns_the_one_namespace_both_manifests_install_into(stack_run):
    (namespace,) = [o for o in stack_run.objects("Namespace") if o["metadata"]["name"] == NAMESPACE]
    assert SOURCE_ANNOTATION not in namespace["metadata"].get("annotations", {})
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["kubernetes.io/metadata.name"] == NAMESPACE
    namespaced = [*from_manifest(stack_run, CLUSTER_URL), *from_manifest(stack_run, TOPOLOGY_URL)]
    assert {o["metadata"].get("namespace", NAMESPACE) for o in namespaced} == {NAMESPACE}


def test_the_namespace_keeps_its_identity_from_the_helm_install(stack_run):
    """Same name, new parent: an alias to the old parent, so `pulumi up` does not replace (delete) it."""
    (reg,) = [
        r
        for r in stack_run.registrations
        if r.inputs.get("kind") == "Namespace" and r.inputs["metadata"]["name"] == NAMESPACE
    ]
    assert reg.name == "platform-infrastructure-rabbitmq-namespace"
    assert any(a.endswith("settlement:core:HelmOperator::platform-infrastructure-rabbitmq") for a in reg.aliases)


@pytest.mark.parametrize(
    ("deployment", "container"), [("messaging-topology-operator", "manager"), ("rabbitmq-cluster-operator", "operator")]
)
def test_the_operators_trust_the_internal_ca_to_reach_tls_only_brokers(stack_run, deployment, container):
    pod = stack_run.object("Deployment", deployment, NAMESPACE)["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == container]
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"].startswith("/etc/ssl/certs/")]
    assert mount == {
        "name": "trust-internal-ca",
        "mountPath": "/etc/ssl/certs/internal-ca.crt",
        "subPath": "internal-ca.crt",
        "readOnly": True,
    }
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"] == {"secretName": "internal-ca", "items": [{"key": "ca.crt", "path": "internal-ca.crt"}]}
    trust = stack_run.object("Certificate", "internal-ca-trust", NAMESPACE)["spec"]
    assert trust["secretName"] == "internal-ca" and trust["issuerRef"]["name"] == "settlement-internal-ca"


def test_the_manifests_wait_for_cert_manager_and_the_internal_ca(stack_run):
    by_urn = {r.urn: r for r in stack_run.registrations}
    checked = 0
    for reg in stack_run.registrations:
        if SOURCE_ANNOTATION not in reg.inputs.get("metadata", {}).get("annotations", {}):
            continue
        deps = {by_urn[u].name for u in stack_run.waits_for(reg.urn)}
        assert {
            "platform-infrastructure-cert-manager-release",
            "platform-infrastructure-ca-issuer",
            "platform-infrastructure-rabbitmq-namespace",
            "platform-infrastructure-rabbitmq-trust",
        } <= deps, reg.name
        assert reg.retain_on_delete == (reg.inputs["kind"] == "CustomResourceDefinition"), reg.name
        checked += 1
    operators = [r for r in stack_run.registrations if r.type == "settlement:core:ReleaseManifest"]
    assert checked and len(operators) == 2  # both operators' objects were checked


def test_the_operator_pods_keep_upstream_labels_and_get_the_platform_hardening(stack_run):
    deployment = stack_run.object("Deployment", "rabbitmq-cluster-operator", NAMESPACE)
    assert deployment["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "rabbitmq-cluster-operator"}}
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "rabbitmq"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/part-of"] == "settlement-platform"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["containers"][0]["imagePullPolicy"] == "Always"


def test_the_release_urls_are_pinned_to_their_tags():
    operators = Operators()
    for release, url in (
        (operators.rabbitmq_cluster_operator, CLUSTER_URL),
        (operators.rabbitmq_topology_operator, TOPOLOGY_URL),
    ):
        assert release_manifest.release_url(release.repository, release.tag, release.asset) == url
        # The offline mirror holds the same release under the same version.
        assert (DEFAULT_MANIFEST_MIRROR / release_manifest.mirror_file_name(release.asset, release.tag)).is_file()


def test_the_cli_closes_the_loops_the_sdk_leaves_open_before_it_exits():
    """The refusal below printed, on some runs, a traceback from a loop the SDK's executor threads had made and
    interpreter shutdown collected too late; the CLI closes every open loop before it exits. (In its own process:
    closing this one's loops would close the SDK's for the tests after it.)"""
    probe = (
        "import asyncio, threading\n"
        "from infra.offline.cli import close_event_loops\n"
        "loops = []\n"
        "for _ in range(3):\n"
        "    t = threading.Thread(target=lambda: loops.append(asyncio.new_event_loop())); t.start(); t.join()\n"
        "before = [loop.is_closed() for loop in loops]\n"
        "close_event_loops()\n"
        "print(before, [loop.is_closed() for loop in loops])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "[False, False, False] [True, True, True]", result.stderr


def test_a_missing_mirror_file_is_a_clear_message_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "infra", "render", "dev", "--out", str(tmp_path / "out")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, release_manifest.MIRROR_ENV: str(tmp_path)},
    )
    assert result.returncode == 2
    assert "release manifest cluster-operator.yml v2.22.3 not found" in result.stderr
    assert f"expected cluster-operator-v2.22.3.yml in {tmp_path}" in result.stderr
    assert "Traceback" not in result.stderr
