"""Queue topology as code and least privilege for every service's RabbitMQ user (issue 4)."""

from __future__ import annotations

import pytest

from components.queue_topology import QueueUser, access, exact, granted, permissions
from infra.platform import queue_users
from infra.topology import PlatformPlan
from tests.fixture_config import IMAGE, plan_of


def owners(plan: PlatformPlan) -> dict[str, dict]:
    """Queue-cluster owner (its namespace and vhost are the subsystem's name) -> its declared queues."""
    return {sub.name: sub.queue.queues for sub in plan.subsystems.values() if sub.queue}


def in_vhost(run, kind, owner):
    return [o for o in run.objects(kind) if o["metadata"]["namespace"] == owner]


def test_every_declared_queue_is_a_quorum_queue_with_dead_lettering(stack_run, stack_plan):
    for owner, declared in owners(stack_plan).items():
        queues = set(declared)
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
            assert spec["arguments"]["x-delivery-limit"] == declared[queue].delivery_limit
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


def test_queues_survive_their_objects_when_stateful_resources_are_protected(stack_run, stack_plan):
    want = "retain" if stack_plan.config.guardrails.protect_stateful_resources else "delete"
    queues = stack_run.objects("Queue")
    assert len(queues) == 2 * sum(len(q) for q in owners(stack_plan).values())  # each with its dead-letter queue
    assert {q["spec"]["deletionPolicy"] for q in queues} <= {want}


def _grants(run, owner):
    exchanges = [e["spec"]["name"] for e in in_vhost(run, "Exchange", owner)]
    queues = [q["spec"]["name"] for q in in_vhost(run, "Queue", owner)]
    return {
        p["spec"]["userReference"]["name"]: access(p["spec"]["permissions"], exchanges, queues)
        for p in in_vhost(run, "Permission", owner)
    }


def test_no_user_can_read_or_write_beyond_what_its_service_declares(stack_run, stack_plan):
    plan = stack_plan
    for owner in owners(plan):
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


@pytest.mark.parametrize("widen", [{"write": ".*"}, {"read": "events"}, {"configure": ".*"}])
def test_the_check_catches_a_widened_permission(widen):
    permission = permissions(QueueUser("s", publishes=("events",), consumes=("warnings",)))
    before = access(permission, ["events", "warnings"], ["events", "warnings"])
    assert before.writable == {"events"} and before.readable == {"warnings"}
    permission.update(widen)
    after = access(permission, ["events", "warnings"], ["events", "warnings"])
    assert after != before


def test_permission_regexes_are_exact():
    assert granted(exact(("a.b",)), ["a.b", "axb", "a.b.c", "xa.b"]) == {"a.b"}
    assert granted(exact(()), ["anything", "dead-letter"]) == set()
    assert permissions(QueueUser("s", publishes=("x",))) == {"configure": "^$", "write": "^(x)$", "read": "^$"}


def test_each_user_imports_generated_credentials_kept_as_secrets(stack_run, stack_plan):
    for owner in owners(stack_plan):
        secrets = {s["metadata"]["name"]: s for s in in_vhost(stack_run, "Secret", owner)}
        for user in in_vhost(stack_run, "User", owner):
            name = user["spec"]["importCredentialsSecret"]["name"]
            assert name in secrets, f"{name} must exist beside the User in {owner}"
            assert set(secrets[name]["stringData"].values()) == {"[secret]"}
    passwords = [p for p in stack_run.of_type("random:index/randomPassword:RandomPassword") if "-amqp-" in p.name]
    # One identity per service and queue cluster it uses.
    identities = sum(len(svc.queue_subsystems) for svc in stack_plan.services())
    assert len(passwords) == len(stack_run.objects("User")) == identities
    assert all(p.inputs["length"] >= 32 for p in passwords)


def test_queue_users_derive_from_the_service_graph():
    plan = plan_of(
        {
            "shop": {
                "queue": {"queues": {"orders": {}, "alerts": {}}},
                "services": {
                    "api": {"image": IMAGE, "publishes": ["orders"]},
                    "alerter": {"image": IMAGE, "consumes": ["alerts"]},
                },
            },
            "audit": {
                "services": {"engine": {"image": IMAGE, "consumes": ["shop/orders"], "publishes": ["shop/alerts"]}}
            },
        }
    )
    users = queue_users(plan, "shop")
    assert {k: (u.publishes, u.consumes) for k, (_, u) in users.items()} == {
        "shop-api": (("orders",), ()),
        "shop-alerter": ((), ("alerts",)),
        "audit-engine": (("alerts",), ("orders",)),
    }
