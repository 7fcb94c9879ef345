"""Golden subsets per stack: the facts that matter and resource counts, regenerated on purpose only."""

from __future__ import annotations

import json

from infra.offline import golden


def test_stack_matches_its_golden_subset(stack_run):
    expected = json.loads(golden.path(stack_run.stack).read_text())
    actual = json.loads(json.dumps(golden.subset(stack_run)))
    for section in sorted(expected.keys() | actual.keys()):
        assert actual.get(section) == expected.get(section), (
            f"{stack_run.stack}: '{section}' differs from tests/golden/{stack_run.stack}.json.\n"
            f"If the change is intended, regenerate and review the diff:\n  {golden.REGENERATE}"
        )


def test_golden_subsets_carry_the_facts_that_matter(prod):
    data = golden.subset(prod)
    assert data["databases"]["payment/payment-db"] == {
        "instances": 3,
        "synchronous": {"method": "any", "number": 1, "dataDurability": "required"},
        "backup": True,
        "protect": True,
    }
    assert data["deployments"]["payment/payment-api"]["scaling"] == ["hpa", 3, 6]
    # 7 platform workloads and the two RabbitMQ operators from their release manifests.
    assert data["resource_counts"]["kubernetes:apps/v1:Deployment"] == 9
    assert data["manifests"] == [
        "https://github.com/rabbitmq/cluster-operator/releases/download/v2.22.3/cluster-operator.yml",
        "https://github.com/rabbitmq/messaging-topology-operator/releases/download/v1.20.1/"
        "messaging-topology-operator-with-certmanager.yaml",
    ]
