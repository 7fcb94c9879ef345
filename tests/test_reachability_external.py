"""Reachability beyond the pod network: ipBlock destinations as `external <cidr>` rows, and a checked `--to`."""

from __future__ import annotations

import subprocess

import pytest

from infra.network import NAMESPACE_LABEL, declared_edges, namespace_policies, pod_groups
from infra.offline.reachability import EXTERNAL, Model, Pod, matrix
from infra.stack_config import PROJECT_ROOT, parse_platform_config
from tests.cli import run_cli

IMAGE = "registry.example/x@sha256:" + "0" * 64


def fixture_plan():
    """A small stack: one service with external egress, a backed-up database, Alertmanager egress, nodes."""
    return parse_platform_config(
        {
            "subsystems": {
                "shop": {
                    "postgres": {},
                    "services": {
                        "front": {
                            "image": IMAGE,
                            "database": True,
                            "egress": {"psp": {"cidrs": ["192.0.2.0/24"], "ports": [8443]}},
                        },
                        "back": {"image": IMAGE, "calls": ["front"]},
                    },
                }
            },
            "network": {
                "apiServerCidrs": ["10.9.0.1/32"],
                "nodeCidrs": ["10.9.16.0/20"],
                "objectStoreCidrs": ["10.9.64.0/28"],
            },
            "backup": {"objectStore": {"destinationPath": "s3://shop-backups/wal"}},
            "alerting": {
                "receivers": {"chat": {"webhook": {"urlSecret": "alertChat"}}},
                "routes": {"shop": {"page": "chat", "ticket": "chat"}, "platform": {"page": "chat", "ticket": "chat"}},
                "egress": {"chat": {"cidrs": ["198.51.100.0/28"], "ports": [443]}},
            },
        },
        frozenset({"alertChat"}),
    )


def model_of_plan(plan) -> Model:
    """The generated policies as rendered objects, and the pods the plan implies."""
    groups = pod_groups(plan)
    policies = [
        {"metadata": {"namespace": p.namespace, "name": p.name}, "spec": p.spec}
        for p in namespace_policies(plan, groups, declared_edges(plan, groups))
    ]
    pods = [Pod(g.id, g.namespace, g.labels) for g in groups.by_id.values()]
    return Model(pods, policies, {p.namespace: {NAMESPACE_LABEL: p.namespace} for p in pods})


def by_destination(model: Model) -> dict[str, set[tuple[str, int]]]:
    """External rows of pods in the namespaces the policies cover (the cluster DNS is not the stack's)."""
    managed = {p["metadata"]["namespace"] for p in model.policies}
    out: dict[str, set[tuple[str, int]]] = {}
    for src, dst, port, protocol in model.external_edges():
        if src.split("/")[0] not in managed:
            continue
        assert protocol == "TCP"
        out.setdefault(dst.removeprefix(EXTERNAL), set()).add((src, port))
    return out


def test_egress_to_external_networks_is_evaluated_from_the_policies():
    model = model_of_plan(fixture_plan())
    rows = by_destination(model)
    assert rows["192.0.2.0/24"] == {("shop/front", 8443)}, "only the service that declares it, only its port"
    assert rows["10.9.64.0/28"] == {("shop/shop-db", 443)}, "backups: the database pods, HTTPS"
    assert rows["198.51.100.0/28"] == {("monitoring/alertmanager", 443)}
    assert rows["10.9.16.0/20"] == {("monitoring/prometheus", 9100), ("monitoring/prometheus", 10250)}
    assert ("shop/shop-db", 6443) in rows["10.9.0.1/32"] and ("cnpg-system/cloudnative-pg", 443) in rows["10.9.0.1/32"]
    assert not any(src == "shop/back" for edges in rows.values() for src, _ in edges), "no egress declared, none"


def test_external_rows_in_the_matrix():
    edges = {e for e in model_of_plan(fixture_plan()).external_edges() if e[0] != "kube-system/dns"}
    text = matrix(edges, "external 192.0.2.0/24")
    assert text.splitlines()[2:] == ["| external 192.0.2.0/24 | shop/front | 8443/TCP |"]


def _model(egress_rule: dict, policy_types=("Egress",)) -> Model:
    pod = Pod("ns/app", "ns", (("app", "x"),))
    policy = {
        "metadata": {"namespace": "ns", "name": "p"},
        "spec": {"podSelector": {}, "policyTypes": list(policy_types), "egress": [egress_rule]},
    }
    return Model([pod], [policy], {})


@pytest.mark.parametrize(
    ("rule", "cidr", "allowed"),
    [
        ({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}, "203.0.113.0/24", True),
        ({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["203.0.113.0/25"]}}]}, "203.0.113.0/24", False),
        ({"to": [{"ipBlock": {"cidr": "203.0.113.0/25"}}]}, "203.0.113.0/24", False),  # only half of it
        ({"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 80}]}, "203.0.113.0/24", False),
        ({"to": [{"podSelector": {}}]}, "203.0.113.0/24", False),  # pods are not addresses outside
        ({}, "203.0.113.0/24", True),  # a rule without peers allows every destination
    ],
)
def test_ipblock_semantics(rule, cidr, allowed):
    assert _model(rule).allows_external(Pod("ns/app", "ns", (("app", "x"),)), cidr, 443, "TCP") is allowed


def test_a_pod_without_egress_isolation_reaches_everything():
    model = _model({"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}, policy_types=("Ingress",))
    assert model.allows_external(Pod("ns/app", "ns", (("app", "x"),)), "192.0.2.0/24", 1, "TCP")


# --- The CLI on a fixture stack -----------------------------------------------------------------------------


def run_reachability(project_dir, *args: str) -> subprocess.CompletedProcess:
    return run_cli("reachability", "dev", "--project-dir", str(project_dir), *args)


@pytest.fixture(scope="module")
def fixture_stack(tmp_path_factory):
    """The project's files with one extra egress endpoint the sample stacks do not have."""
    import yaml

    root = tmp_path_factory.mktemp("reach")
    project = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())
    topology = project["config"]["subsystems"]["value"]
    sub, entry = next(iter(topology.items()))
    name, service = next(iter(entry["services"].items()))
    service["egress"] = {"fixture": {"cidrs": ["192.0.2.64/26"], "ports": [8443]}}
    (root / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    (root / "Pulumi.dev.yaml").write_text((PROJECT_ROOT / "Pulumi.dev.yaml").read_text())
    return root, f"{sub}/{name}"


def test_cli_lists_external_egress_rows(fixture_stack):
    root, service = fixture_stack
    result = run_reachability(root, "--to", "external 192.0.2.64/26")
    assert result.returncode == 0, result.stderr
    assert (
        f"| external 192.0.2.64/26 | {service} | 8443/TCP | declared by the service graph |"
        in result.stdout.splitlines()
    )


def test_cli_refuses_an_unknown_destination_and_lists_the_known_ones(fixture_stack):
    root, service = fixture_stack
    result = run_reachability(root, "--to", "nowhere/nothing")
    assert result.returncode == 2
    assert "'nowhere/nothing'" in result.stderr and "Traceback" not in result.stderr
    known = result.stderr.splitlines()[-1].split(", ")
    assert service in known and "external 192.0.2.64/26" in [k.strip() for k in known]
    assert service.split("/")[0] in [k.strip() for k in known], "a namespace is a valid --to"
