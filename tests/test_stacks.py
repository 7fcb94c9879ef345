"""Whole-stack tests: the real program on the real Pulumi.<stack>.yaml files."""

from __future__ import annotations

import pytest

from infra.offline import schemas
from infra.offline.render import manifests
from tests.conftest import platform_deployments


def test_every_subsystem_is_built(stack_run, stack_plan):
    components = {r.name for r in stack_run.of_type("settlement:platform:Subsystem")}
    assert components == {f"platform-{s}" for s in stack_plan.subsystems}
    assert len(stack_run.of_type("settlement:platform:Infrastructure")) == 1
    namespaces = {o["metadata"]["name"] for o in stack_run.objects("Namespace")}
    assert namespaces >= {sub.namespace for sub in stack_plan.subsystems.values()}


def test_each_subsystem_owns_exactly_the_data_clusters_it_declares(stack_run, stack_plan):
    subs = stack_plan.subsystems.values()
    assert sorted((c["metadata"]["namespace"], c["metadata"]["name"]) for c in stack_run.objects("Cluster")) == sorted(
        (s.namespace, f"{s.name}-db") for s in subs if s.postgres
    )
    assert sorted(
        (c["metadata"]["namespace"], c["metadata"]["name"]) for c in stack_run.objects("RabbitmqCluster")
    ) == sorted((s.namespace, f"{s.name}-mq") for s in subs if s.queue)


def test_every_call_is_wired_to_the_service_it_names(stack_run, stack_plan):
    """A caller gets one URL per declared call, pointing at the callee's Service in the callee's namespace."""
    for svc in stack_plan.services():
        ns = stack_plan.subsystems[svc.subsystem].namespace
        container = stack_run.object("Deployment", svc.name, ns)["spec"]["template"]["spec"]["containers"][0]
        urls = {e["name"]: e.get("value") for e in container["env"] if e["name"].startswith("UPSTREAM_")}
        expected = {}
        for call in svc.calls:
            target_ns = stack_plan.subsystems[call.subsystem].namespace
            key = f"UPSTREAM_{call.subsystem}_{call.service}_URL".upper().replace("-", "_")
            expected[key] = f"http://{call.service}.{target_ns}.svc.cluster.local:{call.port}"
            assert stack_run.object("Service", call.service, target_ns)["spec"]["ports"][0]["port"] == call.port
        assert urls == expected, f"{svc.subsystem}/{svc.name}"


def test_sizes_and_scaling_bounds_follow_the_stack_config(stack_run, stack_plan):
    """What differs between stacks is what their config says: data-cluster sizes and autoscaler bounds."""
    for sub in stack_plan.subsystems.values():
        if sub.postgres:
            assert stack_run.object("Cluster", f"{sub.name}-db", sub.namespace)["spec"]["instances"] == (
                sub.postgres.instances
            )
        if sub.queue:
            assert stack_run.object("RabbitmqCluster", f"{sub.name}-mq", sub.namespace)["spec"]["replicas"] == (
                sub.queue.replicas
            )
        for svc in sub.services.values():
            if svc.consumes:
                spec = stack_run.object("ScaledObject", svc.name, sub.namespace)["spec"]
                bounds = (spec["minReplicaCount"], spec["maxReplicaCount"])
            else:
                spec = stack_run.object("HorizontalPodAutoscaler", svc.name, sub.namespace)["spec"]
                bounds = (spec["minReplicas"], spec["maxReplicas"])
            assert bounds == (svc.min_replicas, svc.max_replicas), f"{sub.name}/{svc.name}"


def _stack_dependent(run, plan) -> set[str]:
    """Objects whose presence follows from stack-wide settings rather than the topology: disruption budgets
    (only above one replica), backups (`backup`) and the public certificate's ACME pieces (`gateway.acmeEmail`)."""
    families = ("/poddisruptionbudget-", "/objectstore-", "/scheduledbackup-")
    acme = ("-letsencrypt.yaml", "/networkpolicy-allow-acme-http01-solver.yaml")
    found = {p for p in manifests(run) if any(k in p for k in families + acme)}
    if plan.config.backup is None:
        assert not run.objects("ObjectStore") and not run.objects("ScheduledBackup"), run.stack
    if plan.config.gateway.acme_email is None:
        assert not any(any(k in p for k in acme) for p in found), run.stack
    if all(svc.min_replicas <= 1 for svc in plan.services()):
        # No workload has a budget (a replicated queue cluster has its own, whatever the services' sizes).
        services = {svc.name for svc in plan.services()}
        assert not [p for p in run.objects("PodDisruptionBudget") if p["metadata"]["name"] in services], run.stack
    return found


def test_stacks_differ_only_where_their_stack_files_say(rendered, plans):
    """The topology is the same in every environment: stacks without per-stack overrides render the same objects,
    apart from those that stack-wide settings switch on or off (drill stacks build no environment)."""
    same_topology = [stack for stack, plan in plans.items() if not plan.config.overrides and plan.config.drill is None]
    objects = {
        stack: sorted(set(manifests(rendered[stack])) - _stack_dependent(rendered[stack], plans[stack]))
        for stack in same_topology
    }
    for stack in same_topology[1:]:
        assert objects[stack] == objects[same_topology[0]], (stack, same_topology[0])


def test_stateful_resources_are_protected_exactly_when_the_guardrail_says(stack_run, stack_plan):
    protected = {
        r.name: (r.protect, r.retain_on_delete)
        for r in stack_run.registrations
        if r.type.endswith("CustomResource") or r.inputs.get("kind") in ("Cluster", "RabbitmqCluster")
    }
    want = stack_plan.config.guardrails.protect_stateful_resources
    assert sum(1 for r in stack_run.registrations if r.inputs.get("kind") in ("Cluster", "RabbitmqCluster")) == sum(
        bool(sub.postgres) + bool(sub.queue) for sub in stack_plan.subsystems.values()
    )
    assert all(p == (want, want) for p in protected.values()), stack_run.stack


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


def test_workloads_wait_for_the_data_they_use(stack_run, stack_plan):
    """A service starts after its subsystem's database (if it uses it) and every queue cluster it uses."""
    by_urn = {r.urn: r for r in stack_run.registrations}
    for svc in stack_plan.services():
        ns = stack_plan.subsystems[svc.subsystem].namespace
        deployment = next(
            r
            for r in stack_run.registrations
            if r.inputs.get("kind") == "Deployment"
            and (r.inputs["metadata"]["name"], r.inputs["metadata"]["namespace"]) == (svc.name, ns)
        )
        needs = {f"platform-{q}-mq-cluster" for q in svc.queue_subsystems}
        if svc.database:
            needs.add(f"platform-{svc.subsystem}-db-cluster")
        dep_names = {by_urn[u].name for u in deployment.dependencies if u in by_urn}
        assert needs <= dep_names, (svc.subsystem, svc.name, needs - dep_names)


def test_every_child_is_named_after_its_parent_component(any_stack_run):
    by_urn = {r.urn: r for r in any_stack_run.registrations}
    for reg in any_stack_run.registrations:
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
def test_schema_checks_catch_what_they_should(rendered, kind, path, bad):
    import copy

    run = next(r for r in rendered.values() if r.objects(kind))
    obj = copy.deepcopy(run.objects(kind)[0])
    target = obj
    for step in path:
        target = target[step]
    target.update(bad)
    crds = schemas.environment_crd_schemas(run.all_objects(), fallback=None)
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
