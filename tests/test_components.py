"""Each component on its own, under the same mocks harness as the whole stack."""

from __future__ import annotations

import pulumi
import pytest

from components.helm_operator import HelmOperator, HelmOperatorArgs, chart_reference
from components.namespace import Namespace, NamespaceArgs
from components.postgres_cluster import PostgresCluster, PostgresClusterArgs
from components.queue_cluster import QueueCluster, QueueClusterArgs
from components.subsystem import Subsystem, SubsystemArgs, SubsystemWorkload
from components.workload import Workload, WorkloadArgs, image_pull_policy
from infra.offline.mocks import ProgramFailed, run_program
from infra.stack_config import StackConfig

UNIT = StackConfig(project="unit", stack="test", values={}, secret_keys=frozenset())
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}}
DIGEST_IMAGE = "registry.example/app@sha256:" + "a" * 64


def namespace_args(name="team") -> NamespaceArgs:
    return NamespaceArgs(
        name=name,
        labels={"team": name},
        quota={"pods": "10"},
        default_request={"cpu": "50m", "memory": "64Mi"},
        default_limit={"cpu": "100m", "memory": "128Mi"},
        pod_security_version="v1.33",
    )


def workload_args(**overrides) -> WorkloadArgs:
    values = dict(
        name="api",
        namespace="team",
        image=DIGEST_IMAGE,
        port=8080,
        metrics_port=9090,
        min_replicas=2,
        max_replicas=4,
        resources=RESOURCES,
        part_of="test",
        component="api",
    )
    values.update(overrides)
    return WorkloadArgs(**values)


def postgres_args(**overrides) -> PostgresClusterArgs:
    values = dict(
        name="team-db",
        namespace="team",
        instances=3,
        storage_size="10Gi",
        storage_class="fast",
        image="ghcr.io/cloudnative-pg/postgresql:17",
        resources=RESOURCES,
        database="app",
        part_of="test",
    )
    values.update(overrides)
    return PostgresClusterArgs(**values)


def queue_args(**overrides) -> QueueClusterArgs:
    values = dict(
        name="team-mq",
        namespace="team",
        replicas=3,
        storage_size="5Gi",
        storage_class=None,
        image="rabbitmq:4",
        resources=RESOURCES,
        part_of="test",
    )
    values.update(overrides)
    return QueueClusterArgs(**values)


def test_namespace_enforces_restricted_pod_security_and_carries_quota_and_limits():
    run = run_program(UNIT, lambda: Namespace("team", namespace_args()))
    ns = run.object("Namespace", "team")
    for mode in ("enforce", "audit", "warn"):
        assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert ns["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}-version"] == "v1.33"
    assert run.object("ResourceQuota", "compute", "team")["spec"]["hard"] == {"pods": "10"}
    limits = run.object("LimitRange", "container-defaults", "team")["spec"]["limits"][0]
    assert limits["defaultRequest"] == {"cpu": "50m", "memory": "64Mi"}
    assert limits["default"] == {"cpu": "100m", "memory": "128Mi"}


def test_two_namespaces_do_not_collide():
    def program():
        Namespace("a", namespace_args("a"))
        Namespace("b", namespace_args("b"))

    run = run_program(UNIT, program)
    urns = [r.urn for r in run.registrations]
    assert len(urns) == len(set(urns)) == 8


def test_workload_is_hardened_and_addressable():
    run = run_program(UNIT, lambda: Workload("team-api", workload_args()))
    deployment = run.object("Deployment", "api", "team")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 10000
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "api"
    assert container["resources"] == RESOURCES
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    service = run.object("Service", "api", "team")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8080, 9090}


def test_image_pull_policy_follows_pinning():
    assert image_pull_policy(DIGEST_IMAGE) == "IfNotPresent"
    assert image_pull_policy("registry.example/app:1.0") == "Always"


def test_postgres_cluster_spec_and_protection():
    run = run_program(UNIT, lambda: PostgresCluster("team-db", postgres_args()))
    cluster = run.object("Cluster", "team-db", "team")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["storage"] == {"size": "10Gi", "storageClass": "fast"}
    assert cluster["spec"]["bootstrap"]["initdb"]["database"] == "app"
    reg = next(r for r in run.registrations if r.inputs.get("kind") == "Cluster")
    assert reg.protect and reg.retain_on_delete


def test_postgres_cluster_outputs_follow_the_operator_naming_contract():
    def program():
        db = PostgresCluster("team-db", postgres_args(protect=False))

        def check(values):
            name, rw, secret = values
            assert (rw, secret) == (f"{name}-rw", f"{name}-app")

        pulumi.Output.all(db.cluster_name, db.rw_service, db.app_secret).apply(check)

    run = run_program(UNIT, program)
    assert not next(r for r in run.registrations if r.inputs.get("kind") == "Cluster").protect


def test_an_assertion_inside_apply_fails_the_run():
    """The harness waits for every output: a failing check inside apply can never pass silently."""

    def program():
        db = PostgresCluster("team-db", postgres_args())

        def check(name):
            assert name == "something-else"

        db.cluster_name.apply(check)

    with pytest.raises(ProgramFailed) as failure:
        run_program(UNIT, program)
    assert isinstance(failure.value.cause, AssertionError)


def test_queue_cluster_is_internal_and_defaults_to_quorum_queues():
    run = run_program(UNIT, lambda: QueueCluster("team-mq", queue_args()))
    cluster = run.object("RabbitmqCluster", "team-mq", "team")
    assert cluster["spec"]["replicas"] == 3
    assert cluster["spec"]["service"]["type"] == "ClusterIP"
    assert "default_queue_type = quorum" in cluster["spec"]["rabbitmq"]["additionalConfig"]
    assert "storageClassName" not in cluster["spec"]["persistence"]


def test_helm_operator_pins_its_chart():
    args = HelmOperatorArgs(namespace="op-system", repository="https://charts.example", chart="op", version="1.2.3")
    run = run_program(UNIT, lambda: HelmOperator("op", args))
    release = run.of_type("kubernetes:helm.sh/v3:Release")[0]
    assert release.inputs["version"] == "1.2.3"
    assert release.inputs["repositoryOpts"] == {"repo": "https://charts.example"}
    assert release.inputs["namespace"] == "op-system"
    assert run.object("Namespace", "op-system")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]


def test_chart_reference_handles_oci_and_classic_repositories():
    assert chart_reference("oci://registry.example/charts/", "op") == (
        "oci://registry.example/charts/op",
        None,
    )
    assert chart_reference("https://charts.example", "op") == ("op", "https://charts.example")


def test_subsystem_wires_data_before_workloads():
    def program():
        Subsystem(
            "team",
            SubsystemArgs(
                namespace=namespace_args(),
                workloads={
                    "api": SubsystemWorkload(workload_args(), uses_postgres=True),
                    "worker": SubsystemWorkload(workload_args(name="worker"), uses_queue=True),
                },
                postgres=postgres_args(),
                queue=queue_args(),
            ),
        )

    run = run_program(UNIT, program)
    by_urn = {r.urn: r.name for r in run.registrations}

    def deps(name):
        reg = next(
            r
            for r in run.registrations
            if r.inputs.get("kind") == "Deployment" and r.inputs["metadata"]["name"] == name
        )
        return {by_urn.get(u) for u in reg.dependencies}

    assert "team-db-cluster" in deps("api") and "team-mq-cluster" not in deps("api")
    assert "team-mq-cluster" in deps("worker") and "team-db-cluster" not in deps("worker")
    assert {r.name for r in run.registrations if r.parent.endswith("::team")} >= {
        "team-namespace",
        "team-db",
        "team-mq",
        "team-api",
        "team-worker",
    }


def test_subsystem_refuses_a_workload_using_data_it_does_not_have():
    args = SubsystemArgs(
        namespace=namespace_args(), workloads={"api": SubsystemWorkload(workload_args(), uses_postgres=True)}
    )
    with pytest.raises(ProgramFailed, match="uses postgres but subsystem 'team' declares none"):
        run_program(UNIT, lambda: Subsystem("team", args))
