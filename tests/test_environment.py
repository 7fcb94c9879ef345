"""The whole environment - the platform's objects and everything its operators' charts install - checked as the
cluster will run it: schemas, Pod Security, namespaces, and custom resources after the CRDs that serve them."""

from __future__ import annotations

from components.pod_security import pss_restricted_violations
from infra.chart_values import host_agent_namespaces
from infra.offline import schemas
from infra.offline.mocks import ProgramRun
from infra.stack_config import plan_for_stack
from tests.conftest import STACKS_DIR

POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
ENFORCE = "pod-security.kubernetes.io/enforce"


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in POD_TEMPLATE_KINDS:
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] == "Pod":
        return obj["spec"]
    return None


def namespaces(run: ProgramRun) -> dict[str, dict]:
    return {ns["metadata"]["name"]: ns["metadata"].get("labels", {}) for ns in run.objects("Namespace")}


# What may live in the cluster's own kube-system: an aggregated API server's binding to the
# `extension-apiserver-authentication-reader` Role (which only exists there), and the Service through which
# Prometheus finds the cluster DNS pods.
KUBE_SYSTEM_KINDS = {"RoleBinding", "Service"}


def test_every_object_lands_in_a_namespace_the_platform_creates(any_stack_run):
    created = namespaces(any_stack_run)
    stray = {
        f"{o['kind']}/{o['metadata']['namespace']}/{o['metadata']['name']}"
        for o in any_stack_run.all_objects()
        if o["metadata"].get("namespace") and o["metadata"]["namespace"] not in created
        if not (o["metadata"]["namespace"] == "kube-system" and o["kind"] in KUBE_SYSTEM_KINDS)
    }
    assert not stray


def host_agents(run: ProgramRun) -> dict[str, str]:
    config = plan_for_stack(run.stack, STACKS_DIR).config
    return host_agent_namespaces(config.infrastructure.operators.monitoring.namespace, config.mesh)


def test_every_pod_outside_the_listed_host_agent_namespaces_meets_restricted(any_stack_run):
    labels = namespaces(any_stack_run)
    exempt = host_agents(any_stack_run)
    failures = {}
    pods = 0
    for obj in any_stack_run.all_objects():
        spec = pod_spec(obj)
        namespace = obj["metadata"].get("namespace")
        if spec is None or namespace in exempt:
            continue
        pods += 1
        assert labels[namespace].get(ENFORCE) == "restricted", namespace
        if problems := pss_restricted_violations(spec):
            failures[f"{obj['kind']} {namespace}/{obj['metadata']['name']}"] = problems
    assert pods > len(any_stack_run.objects("Deployment")), "the charts' pods were not checked"
    assert not failures


def test_only_listed_host_agents_run_below_restricted(stack_run):
    relaxed = {name for name, labels in namespaces(stack_run).items() if labels.get(ENFORCE) != "restricted"}
    assert relaxed == set(host_agents(stack_run)), relaxed
    for namespace, reason in host_agents(stack_run).items():
        assert len(reason) > 40, f"{namespace}: say why it cannot be restricted"
        kinds = {o["kind"] for o in stack_run.all_objects() if o["metadata"].get("namespace") == namespace}
        assert "Deployment" not in kinds and "StatefulSet" not in kinds, f"only host agents in {namespace}"


def test_every_builtin_object_passes_strict_kubernetes_schema(any_stack_run):
    version = plan_for_stack(any_stack_run.stack, STACKS_DIR).config.kubernetes_version
    failures = {
        f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}": errors
        for o in any_stack_run.all_objects()
        if schemas.is_builtin(o) and (errors := schemas.validate_builtin(o, version))
    }
    assert not failures


def test_every_custom_resource_passes_the_schema_of_the_crd_the_environment_installs(stack_run):
    objects = stack_run.all_objects()
    # No fallback: what deploys is what validates.
    crds = schemas.environment_crd_schemas(objects, fallback=None)
    custom = [o for o in objects if not schemas.is_builtin(o)]
    assert len(custom) > len(stack_run.chart_objects) // 10
    failures = {
        f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}": errs
        for o in custom
        if (errs := crds.validate(o))
    }
    assert not failures


def _installers(run: ProgramRun) -> dict[tuple[str, str], str]:
    """(group, kind) -> the URN of the resource that installs its CRD (a release, or the CRD object itself)."""
    out = {}
    for chart_object in run.chart_objects:
        obj = chart_object.object
        if obj["kind"] == "CustomResourceDefinition":
            out[(obj["spec"]["group"], obj["spec"]["names"]["kind"])] = chart_object.release.urn
    for reg in run.registrations:
        if reg.is_kubernetes_object and reg.inputs["kind"] == "CustomResourceDefinition":
            out[(reg.inputs["spec"]["group"], reg.inputs["spec"]["names"]["kind"])] = reg.urn
    return out


def test_every_custom_resource_is_created_after_whatever_installs_its_crd(stack_run):
    by_urn = {r.urn: r for r in stack_run.registrations}
    installers = _installers(stack_run)

    def upstream(urn: str, seen: set[str]) -> set[str]:
        reg = by_urn[urn]
        for dep in [*reg.dependencies, reg.parent]:
            if dep in by_urn and dep not in seen:
                seen.add(dep)
                upstream(dep, seen)
        return seen

    checked = 0
    for reg in stack_run.registrations:
        if not reg.is_kubernetes_object or schemas.is_builtin(reg.inputs):
            continue
        key = (reg.inputs["apiVersion"].split("/")[0], reg.inputs["kind"])
        assert key in installers, f"nothing installs the CRD of {key}"
        if installers[key] == reg.urn:
            continue
        # A Helm v4 Chart's objects are its children under the engine: depending on the chart covers them.
        assert installers[key] in upstream(reg.urn, set()), (reg.inputs["kind"], reg.name)
        checked += 1
    assert checked
