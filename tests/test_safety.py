"""Nothing stateful is lost by a config change in prod: renaming or dropping a data cluster is refused."""

from __future__ import annotations

from infra.offline.safety import stateful_removals
from tests import topology_changes


def test_dropping_a_prod_database_and_queue_cluster_is_blocked(prod, project):
    topology = project.topology()
    business = topology["business"]
    del business["postgres"]
    for svc in business["services"].values():
        svc["database"] = False
    project.set_topology(topology)
    removals = {(r.kind, r.name): r for r in stateful_removals(prod, project.render("prod"))}
    cluster = removals[("Cluster", "business-db")]
    assert cluster.blocked and cluster.retained, "the engine must refuse the delete and keep the data"
    assert ("RabbitmqCluster", "business-mq") not in removals


def test_renaming_a_prod_subsystem_cannot_delete_its_data(prod, project):
    topology_changes.rename_subsystem(project.root, "business", "settlement")
    removals = {(r.kind, r.name): r for r in stateful_removals(prod, project.render("prod"))}
    for key in (("Cluster", "business-db"), ("RabbitmqCluster", "business-mq")):
        assert removals[key].blocked and removals[key].retained, key
    # Queues lose their Kubernetes object but not their messages: the operator retains them in RabbitMQ.
    assert ("Queue", "settlement-requests") in removals


def test_in_dev_the_same_change_would_delete_and_the_check_says_so(dev, project):
    topology = project.topology()
    del topology["business"]["postgres"]
    for svc in topology["business"]["services"].values():
        svc["database"] = False
    project.set_topology(topology)
    (removal,) = [r for r in stateful_removals(dev, project.render("dev")) if r.kind == "Cluster"]
    assert not removal.blocked and "WOULD BE DELETED" in str(removal)


def test_an_unchanged_config_removes_nothing(prod, project):
    assert stateful_removals(prod, project.render("prod")) == []
