"""Queue topology as code and least privilege for every service's RabbitMQ user (issue 4)."""

from __future__ import annotations

import copy

import pytest

from components.queue_topology import QueueUser, access, exact, granted, permissions
from infra.platform import queue_users
from infra.stack_config import plan_for_stack

OWNERS = {
    "payment": {"payment-events", "risk-warnings"},
    "business": {"settlement-requests", "clearing-batches", "report-requests"},
}


plan_for = plan_for_stack


def in_vhost(run, kind, owner):
    return [o for o in run.objects(kind) if o["metadata"]["namespace"] == owner]


def test_every_declared_queue_is_a_quorum_queue_with_dead_lettering(stack_run):
    for owner, queues in OWNERS.items():
        assert stack_run.object("Vhost", owner, owner)["spec"]["defaultQueueType"] == "quorum"
        by_name = {q["spec"]["name"]: q["spec"] for q in in_vhost(stack_run, "Queue", owner)}
        assert set(by_name) == queues | {f"{q}-dlq" for q in queues}
        bindings = {
            (b["spec"]["source"], b["spec"]["destination"], b["spec"]["routingKey"])
            for b in in_vhost(stack_run, "Binding", owner)
        }
        for queue in queues:
            spec = by_name[queue]
            assert spec["type"] == "quorum" and spec["durable"] is True and spec["vhost"] == owner
            assert spec["arguments"]["x-delivery-limit"] == 5
            assert spec["arguments"]["x-dead-letter-exchange"] == "dead-letter"
            assert spec["arguments"]["x-dead-letter-routing-key"] == queue
            assert (queue, queue, queue) in bindings
            assert ("dead-letter", f"{queue}-dlq", queue) in bindings


def test_delivery_limit_comes_from_config(project):
    topology = project.topology()
    topology["business"]["queue"]["queues"]["report-requests"] = {"deliveryLimit": 2}
    project.set_topology(topology)
    queue = project.render("dev").object("Queue", "report-requests", "business")
    assert queue["spec"]["arguments"]["x-delivery-limit"] == 2


def test_queues_survive_their_objects_in_prod_only(prod, dev):
    assert {q["spec"]["deletionPolicy"] for q in prod.objects("Queue")} == {"retain"}
    assert {q["spec"]["deletionPolicy"] for q in dev.objects("Queue")} == {"delete"}


def _grants(run, owner):
    exchanges = [e["spec"]["name"] for e in in_vhost(run, "Exchange", owner)]
    queues = [q["spec"]["name"] for q in in_vhost(run, "Queue", owner)]
    return {
        p["spec"]["userReference"]["name"]: access(p["spec"]["permissions"], exchanges, queues)
        for p in in_vhost(run, "Permission", owner)
    }


def test_no_user_can_read_or_write_beyond_what_its_service_declares(stack_run):
    plan = plan_for(stack_run.stack)
    for owner in OWNERS:
        grants = _grants(stack_run, owner)
        expected = {
            f"{svc.subsystem}-{svc.name}": (
                {q.queue for q in svc.publishes if q.subsystem == owner},
                {q.queue for q in svc.consumes if q.subsystem == owner},
            )
            for svc in plan.services()
            if owner in svc.queue_subsystems
        }
        assert set(grants) == set(expected), owner
        for user, (publishes, consumes) in expected.items():
            assert grants[user].writable == publishes, user
            assert grants[user].readable == consumes, user
            assert grants[user].configurable == set(), user


def test_risk_engine_reads_payment_events_and_writes_only_risk_warnings(prod):
    grant = _grants(prod, "payment")["risk-risk-engine"]
    assert grant.readable == {"payment-events"} and grant.writable == {"risk-warnings"}


@pytest.mark.parametrize("widen", [{"write": ".*"}, {"read": "payment"}, {"configure": ".*"}])
def test_the_check_catches_a_widened_permission(prod, widen):
    permission = copy.deepcopy(prod.object("Permission", "payment-payment-api", "payment")["spec"]["permissions"])
    before = access(permission, ["payment-events", "risk-warnings"], ["payment-events", "risk-warnings"])
    permission.update(widen)
    after = access(permission, ["payment-events", "risk-warnings"], ["payment-events", "risk-warnings"])
    assert after != before


def test_permission_regexes_are_exact():
    assert granted(exact(("a.b",)), ["a.b", "axb", "a.b.c", "xa.b"]) == {"a.b"}
    assert granted(exact(()), ["anything", "dead-letter"]) == set()
    assert permissions(QueueUser("s", publishes=("x",))) == {"configure": "^$", "write": "^(x)$", "read": "^$"}


def test_each_user_imports_generated_credentials_kept_as_secrets(stack_run):
    for owner in OWNERS:
        secrets = {s["metadata"]["name"]: s for s in in_vhost(stack_run, "Secret", owner)}
        for user in in_vhost(stack_run, "User", owner):
            name = user["spec"]["importCredentialsSecret"]["name"]
            assert name in secrets, f"{name} must exist beside the User in {owner}"
            assert set(secrets[name]["stringData"].values()) == {"[secret]"}
    imported = {u["spec"]["importCredentialsSecret"]["name"] for u in stack_run.objects("User")}
    passwords = [
        r
        for r in stack_run.of_type("random:index/randomPassword:RandomPassword")
        if r.parent.endswith(tuple(f"-{name}" for name in imported))
    ]
    generators = {p.parent for p in passwords}
    # One generated identity per service and queue cluster it uses.
    assert len(generators) == len(stack_run.objects("User")) == len(imported)
    assert all(p.inputs["length"] >= 32 for p in passwords)


def test_queue_users_derive_from_the_service_graph():
    users = queue_users(plan_for("prod"), "payment")
    assert {k: (u.publishes, u.consumes) for k, (_, u) in users.items()} == {
        "payment-payment-api": (("payment-events",), ()),
        "payment-risk-warning-handler": ((), ("risk-warnings",)),
        "risk-risk-engine": (("risk-warnings",), ("payment-events",)),
    }
