"""Whole-stack tests: the real program on the real Pulumi.<stack>.yaml files."""

from __future__ import annotations

import pytest

from infra.offline import schemas
from infra.offline.render import manifests
from tests.conftest import platform_deployments

APP_SUBSYSTEMS = {"payment", "business", "risk"}
DATA_OWNERS = {"payment", "business"}


def test_every_subsystem_is_built(stack_run):
    components = {r.name for r in stack_run.of_type("settlement:platform:Subsystem")}
    assert components == {f"platform-{s}" for s in APP_SUBSYSTEMS}
    assert len(stack_run.of_type("settlement:platform:Infrastructure")) == 1
    namespaces = {o["metadata"]["name"] for o in stack_run.objects("Namespace")}
    assert namespaces >= APP_SUBSYSTEMS


def test_payment_and_business_each_own_a_database_and_a_queue_cluster(stack_run):
    assert {c["metadata"]["namespace"] for c in stack_run.objects("Cluster")} == DATA_OWNERS
    assert {c["metadata"]["namespace"] for c in stack_run.objects("RabbitmqCluster")} == DATA_OWNERS


def test_seed_topology_is_wired(stack_run):
    """payment <-> business call each other; risk reads payment events and warns payment back."""

    def env(name):
        container = stack_run.object("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert env("payment-api")["UPSTREAM_BUSINESS_SETTLEMENT_API_URL"] == (
        "http://settlement-api.business.svc.cluster.local:8080"
    )
    assert env("settlement-api")["UPSTREAM_PAYMENT_PAYMENT_API_URL"] == (
        "http://payment-api.payment.svc.cluster.local:8080"
    )


def test_prod_and_dev_differ_only_where_the_stack_files_say(dev, prod):
    assert prod.object("Cluster", "payment-db")["spec"]["instances"] == 3
    assert dev.object("Cluster", "payment-db")["spec"]["instances"] == 1
    assert prod.object("RabbitmqCluster", "business-mq")["spec"]["replicas"] == 3
    assert dev.object("RabbitmqCluster", "business-mq")["spec"]["replicas"] == 1
    assert prod.object("HorizontalPodAutoscaler", "payment-api")["spec"]["minReplicas"] == 3
    assert prod.object("ScaledObject", "reporting")["spec"]["minReplicaCount"] == 2
    assert dev.object("HorizontalPodAutoscaler", "payment-api")["spec"]["minReplicas"] == 1
    # The same objects in both stacks, except disruption budgets (dev runs single replicas, which a PDB would pin)
    # backups (dev opts out with guardrails.requireBackups: false) and the public certificate's ACME pieces.
    only_prod = (
        "/poddisruptionbudget-",
        "/objectstore-",
        "/scheduledbackup-",
        "-letsencrypt.yaml",
        "/networkpolicy-allow-acme-http01-solver.yaml",
    )
    assert not dev.objects("PodDisruptionBudget") and not dev.objects("ObjectStore")
    assert sorted(p for p in manifests(prod) if not any(k in p for k in only_prod)) == sorted(manifests(dev))


def test_stateful_resources_are_protected_in_prod_only(dev, prod):
    def protected(run):
        return {
            r.name: (r.protect, r.retain_on_delete)
            for r in run.registrations
            if r.type.endswith("CustomResource") or r.inputs.get("kind") in ("Cluster", "RabbitmqCluster")
        }

    assert protected(prod) and all(p == (True, True) for p in protected(prod).values())
    assert all(p == (False, False) for p in protected(dev).values())


def operators(run) -> dict[str, str]:
    """Operator -> URN of what must exist first: the Helm release, or the Deployment a release manifest applies."""
    found = {r.inputs["chart"].rsplit("/", 1)[-1]: r.urn for r in run.of_type("kubernetes:helm.sh/v3:Release")}
    for reg in run.registrations:
        if reg.inputs.get("kind") == "Deployment" and reg.inputs["metadata"]["namespace"] == "rabbitmq-system":
            found[reg.inputs["metadata"]["name"]] = reg.urn
    return found


def test_data_clusters_depend_on_their_operator(stack_run):
    installed = operators(stack_run)
    crd = next(
        r.urn
        for r in stack_run.registrations
        if r.inputs.get("kind") == "CustomResourceDefinition"
        and r.inputs["metadata"]["name"] == "rabbitmqclusters.rabbitmq.com"
    )
    for reg in stack_run.registrations:
        kind = reg.inputs.get("kind")
        if kind == "Cluster":
            assert installed["cloudnative-pg"] in reg.dependencies, reg.name
        elif kind == "RabbitmqCluster":
            assert {installed["rabbitmq-cluster-operator"], crd} <= set(reg.dependencies), reg.name
            assert installed["messaging-topology-operator"] not in reg.dependencies, reg.name


def test_operators_are_pinned_helm_releases(stack_run):
    releases = stack_run.of_type("kubernetes:helm.sh/v3:Release")
    assert {r.inputs["chart"].rsplit("/", 1)[-1] for r in releases} >= {"cloudnative-pg", "cert-manager"}
    for release in releases:
        assert release.inputs["version"].lstrip("v")[0].isdigit(), release.inputs


def test_workloads_wait_for_the_data_they_use(stack_run):
    by_urn = {r.urn: r for r in stack_run.registrations}
    deployment = next(
        r
        for r in stack_run.registrations
        if r.inputs.get("kind") == "Deployment" and r.inputs["metadata"]["name"] == "risk-engine"
    )
    # risk-engine consumes a queue of the payment subsystem: it must wait for payment's queue cluster.
    dep_names = {by_urn[u].name for u in deployment.dependencies if u in by_urn}
    assert "platform-payment-mq-cluster" in dep_names


def test_every_child_is_named_after_its_parent_component(stack_run):
    by_urn = {r.urn: r for r in stack_run.registrations}
    for reg in stack_run.registrations:
        parent = by_urn.get(reg.parent)
        if parent is not None:
            assert reg.name.startswith(f"{parent.name}-"), (reg.name, parent.name)


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("Deployment", ("spec", "template", "spec", "containers", 0), {"imagePullPolice": "Always"}),
        ("Cluster", ("spec", "storage"), {"sizee": "1Gi"}),
        ("RabbitmqCluster", ("spec",), {"replicas": "three"}),
    ],
)
def test_schema_checks_catch_what_they_should(prod, kind, path, bad):
    import copy

    obj = copy.deepcopy(prod.objects(kind)[0])
    target = obj
    for step in path:
        target = target[step]
    target.update(bad)
    crds = schemas.environment_crd_schemas(prod.all_objects(), fallback=None)
    assert schemas.validate(obj, "1.33", crds), f"{kind} with {bad} should be refused"


def test_whatever_names_a_priority_class_is_created_after_it(stack_run):
    classes = {
        r.inputs["metadata"]["name"]: r.urn for r in stack_run.registrations if r.inputs.get("kind") == "PriorityClass"
    }
    for reg in stack_run.registrations:
        if reg.inputs.get("kind") == "Deployment" and reg.inputs in platform_deployments(stack_run):
            name = reg.inputs["spec"]["template"]["spec"]["priorityClassName"]
        elif reg.inputs.get("kind") == "Cluster":
            name = reg.inputs["spec"]["priorityClassName"]
        else:
            continue
        assert classes[name] in reg.dependencies, reg.name
