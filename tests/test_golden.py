"""Golden subsets per stack: the facts that matter and resource counts, regenerated on purpose only."""

from __future__ import annotations

import json

from infra.offline import golden
from tests.conftest import STACKS_DIR


def test_stack_matches_its_golden_subset(any_stack_run):
    # The golden files of the project under test (tests/test_any_topology.py writes a changed copy's).
    expected = json.loads((STACKS_DIR / golden.path(any_stack_run.stack).relative_to(golden.PROJECT_ROOT)).read_text())
    actual = json.loads(json.dumps(golden.subset(any_stack_run)))
    for section in sorted(expected.keys() | actual.keys()):
        assert actual.get(section) == expected.get(section), (
            f"{any_stack_run.stack}: '{section}' differs from tests/golden/{any_stack_run.stack}.json.\n"
            f"If the change is intended, regenerate and review the diff:\n  {golden.REGENERATE}"
        )


def test_golden_subsets_carry_the_facts_that_matter(stack_run, stack_plan):
    """The subset records, per stack, what the plan decides: data-cluster sizes, synchronous replication, backups and
    protection, each service's autoscaler and bounds, and the release manifests the operators come from."""
    data = golden.subset(stack_run)
    config = stack_plan.config
    protect = config.guardrails.protect_stateful_resources
    for sub in stack_plan.subsystems.values():
        if sub.postgres:
            replicated = sub.postgres.synchronous and sub.postgres.instances > 1
            assert data["databases"][f"{sub.namespace}/{sub.name}-db"] == {
                "instances": sub.postgres.instances,
                "synchronous": {"method": "any", "number": 1, "dataDurability": "required"} if replicated else None,
                "backup": config.backup is not None,
                "protect": protect,
            }
        if sub.queue:
            assert data["queues"][f"{sub.namespace}/{sub.name}-mq"]["protect"] == protect
        for svc in sub.services.values():
            kind = "keda" if svc.consumes else "hpa"
            scaling = [kind, svc.min_replicas, svc.max_replicas]
            assert data["deployments"][f"{sub.namespace}/{svc.name}"]["scaling"] == scaling
    operators = config.infrastructure.operators
    releases = [operators.rabbitmq_cluster_operator, operators.rabbitmq_topology_operator]
    assert data["manifests"] == sorted(f"{r.repository}/releases/download/{r.tag}/{r.asset}" for r in releases)
    # The platform's workloads and the two RabbitMQ operators from their release manifests.
    assert data["resource_counts"]["kubernetes:apps/v1:Deployment"] == len(stack_plan.services()) + len(releases)


def test_writing_says_whether_the_file_changed(tmp_path, monkeypatch, dev):
    """`make golden` names the files it changed, not every file it looked at."""
    monkeypatch.setattr(golden, "GOLDEN_DIR", tmp_path)
    assert golden.write("dev", dev) is True
    written = golden.path("dev").read_text()
    assert golden.write("dev", dev) is False and golden.path("dev").read_text() == written
    golden.path("dev").write_text("{}\n")
    assert golden.write("dev", dev) is True and golden.path("dev").read_text() == written
