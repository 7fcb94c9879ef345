"""The policy pack's rules: silent on both real stacks, firing on crafted bad resources."""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest

from infra.stack_config import PROJECT_ROOT
from policy import rules
from policy.rules import Resource
from tests.conftest import STACKS_DIR


def resources_of(run) -> list[Resource]:
    return [Resource(r.type, r.name, r.inputs, r.protect) for r in run.registrations if r.custom]


def disabled(stack: str) -> frozenset[str]:
    config = json.loads((STACKS_DIR / "policy" / f"config.{stack}.json").read_text())
    return frozenset(name for name, c in config.items() if c.get("enforcementLevel") == "disabled")


def test_every_rule_passes_on_the_real_stacks(any_stack_run):
    results = rules.evaluate(resources_of(any_stack_run), disabled(any_stack_run.stack))
    assert {name: v for name, v in results.items() if v} == {}
    assert len(results) == len(rules.RULES) - len(disabled(any_stack_run.stack))


def test_only_configurable_rules_are_relaxed_and_a_stack_with_every_guardrail_relaxes_none(plans):
    configurable = {r.name for r in rules.RULES if r.configurable}
    for stack, plan in plans.items():
        assert disabled(stack) <= configurable, stack
        guardrails = plan.config.guardrails
        if guardrails.require_image_digest and guardrails.protect_stateful_resources:
            assert disabled(stack) == frozenset(), stack


def _one(run, kind, name=None, namespace=None):
    reg = next(
        r
        for r in run.registrations
        if r.inputs.get("kind") == kind
        and (name is None or r.inputs["metadata"]["name"] == name)
        and (namespace is None or r.inputs["metadata"].get("namespace") == namespace)
    )
    return Resource(reg.type, reg.name, copy.deepcopy(reg.inputs), reg.protect)


def _app(rendered, plans) -> Resource:
    """A platform service's Deployment (the first of the first stack), as the policy pack sees it: the good base
    that a `fires` test breaks."""
    stack = next(iter(rendered))
    svc = plans[stack].services()[0]
    return _one(rendered[stack], "Deployment", svc.name, plans[stack].subsystems[svc.subsystem].namespace)


def _pod(resource):
    return resource.props["spec"]["template"]["spec"]


def test_restricted_pod_security_fires(rendered, plans):
    bad = _app(rendered, plans)
    _pod(bad)["containers"][0]["securityContext"]["privileged"] = True
    assert rules.restricted_pod_security(bad)


def test_requests_and_limits_fires(rendered, plans):
    bad = _app(rendered, plans)
    del _pod(bad)["containers"][0]["resources"]["limits"]
    assert rules.requests_and_limits(bad) == [f"{bad.label}: container app sets no limits for ['cpu', 'memory']"]


def test_no_node_ports_fires_and_spares_the_gateway():
    service = Resource(
        "kubernetes:core/v1:Service",
        "s",
        {"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}},
    )
    assert rules.no_node_ports(service)
    gateway = copy.deepcopy(service.props)
    gateway["metadata"]["labels"] = {"gateway.envoyproxy.io/owning-gateway-name": "settlement"}
    assert rules.no_node_ports(Resource(service.type, "g", gateway)) == []


def test_images_pinned_by_digest_fires(rendered, plans):
    bad = _app(rendered, plans)
    _pod(bad)["containers"][0]["image"] = "registry.example/app:latest"
    assert rules.images_pinned_by_digest(bad)


def test_an_image_digest_exemption_needs_a_listed_skip_with_a_reason(rendered):
    """Operators applied from release manifests name tags; the one accepted exception is the recorded skip."""
    operator = _one(next(iter(rendered.values())), "Deployment", "messaging-topology-operator")
    assert rules.images_pinned_by_digest(operator) == []
    annotations = operator.props["metadata"]["annotations"]
    skip = next(k for k, v in annotations.items() if v.startswith(f"{rules.DIGEST_CHECK}="))
    annotations[skip] = f"{rules.DIGEST_CHECK}="
    assert rules.images_pinned_by_digest(operator), "a skip without a reason exempts nothing"
    del annotations[skip]
    assert rules.images_pinned_by_digest(operator)


def test_stateful_resources_protected_fires(rendered):
    run = next(r for r in rendered.values() if r.objects("Cluster"))
    cluster = _one(run, "Cluster")
    assert rules.stateful_resources_protected(Resource(cluster.type, cluster.name, cluster.props, protect=False))


def test_no_secret_literals_fires(rendered, plans):
    bad = _app(rendered, plans)
    _pod(bad)["containers"][0]["env"].append({"name": "DB_PASSWORD", "value": "hunter2"})
    assert rules.no_secret_literals(bad)
    config_map = Resource(
        "kubernetes:core/v1:ConfigMap",
        "c",
        {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"app.ini": "password = hunter2"}},
    )
    assert rules.no_secret_literals(config_map)


def test_pdb_rule_fires_when_a_budget_is_missing(rendered):
    run = next(r for r in rendered.values() if r.objects("PodDisruptionBudget"))
    budgets = {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in run.objects("PodDisruptionBudget")}
    hpa = next(
        h
        for h in run.objects("HorizontalPodAutoscaler")
        if (h["metadata"]["namespace"], h["metadata"]["name"]) in budgets
    )
    ns, name = hpa["metadata"]["namespace"], hpa["metadata"]["name"]
    resources = [
        r
        for r in resources_of(run)
        if not (
            r.kind == "PodDisruptionBudget"
            and (r.props["metadata"]["namespace"], r.props["metadata"]["name"]) == (ns, name)
        )
    ]
    assert rules.pdb_for_replicated_workloads(resources) == [
        f"Deployment {ns}/{name}: runs {hpa['spec']['minReplicas']} replicas but no PodDisruptionBudget protects them"
    ]


def test_default_deny_rule_fires_when_a_namespace_lacks_it(rendered, plans):
    stack = next(iter(rendered))
    namespace = next(iter(plans[stack].subsystems.values())).namespace
    resources = [
        r
        for r in resources_of(rendered[stack])
        if not (
            r.kind == "NetworkPolicy"
            and r.props["metadata"]["name"] == "default-deny"
            and r.props["metadata"]["namespace"] == namespace
        )
    ]
    assert rules.default_deny_everywhere(resources) == [
        f"Namespace {namespace}: no default-deny NetworkPolicy (ingress and egress)"
    ]


def test_the_pack_wraps_every_rule(tmp_path):
    """In the pack's own virtualenv (pulumi-policy pins older grpc/protobuf): adapters report violations."""
    python = PROJECT_ROOT / ".venv-policy" / "bin" / "python"
    if not python.exists():
        pytest.fail("the policy pack's virtualenv is missing: run `make test` (it builds .venv-policy)")
    script = """
import sys, types
sys.path.insert(0, sys.argv[1])
from policy.pack import POLICIES
from policy import rules
assert [p.name for p in POLICIES] == [r.name for r in rules.RULES]
seen = []
service = types.SimpleNamespace(resource_type="kubernetes:core/v1:Service", name="s",
    props={"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "NodePort"}},
    opts=types.SimpleNamespace(protect=False))
next(p for p in POLICIES if p.name == "no-node-ports").validate(service, lambda m, urn=None: seen.append(m))
assert seen and "NodePort" in seen[0], seen
print(len(POLICIES))
"""
    result = subprocess.run(
        [str(python), "-c", script, str(PROJECT_ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(len(rules.RULES))
