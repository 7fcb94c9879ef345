"""A RabbitMQ vhost's topology as code, via the messaging-topology operator.

Every queue gets its own direct exchange (publishers write there), is a quorum queue with a delivery limit,
and dead-letters into `<queue>-dlq` through the vhost's `dead-letter` exchange. Each user gets exactly the
permissions its declared traffic needs: write on the exchanges it publishes to, read on the queues it
consumes, configure on nothing (applications never declare or delete topology).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pulumi

from components.kube import KubeObject

API = "rabbitmq.com/v1beta1"
DEAD_LETTER_EXCHANGE = "dead-letter"
NOTHING = "^$"


@dataclass(frozen=True)
class QueueUser:
    credentials_secret: str
    """Secret in the topology's namespace with `username` and `password` (imported by the operator)."""
    publishes: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueTopologyArgs:
    cluster: str
    namespace: pulumi.Input[str]
    vhost: str
    queues: dict[str, int]
    """Queue name -> delivery limit (deliveries before the message is dead-lettered)."""
    users: dict[str, QueueUser]
    """Kubernetes-safe key -> user."""
    retain: bool = True
    """Keep vhost and queues (and their messages) in RabbitMQ if their Kubernetes objects are deleted."""
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: list[pulumi.Input[pulumi.Resource]] = field(default_factory=list)


def dead_letter_queue(queue: str) -> str:
    return f"{queue}-dlq"


def exact(names: tuple[str, ...]) -> str:
    """A permission regex matching exactly these names, or nothing."""
    if not names:
        return NOTHING
    return "^(" + "|".join(re.escape(n) for n in sorted(names)) + ")$"


def permissions(user: QueueUser) -> dict[str, str]:
    return {"configure": NOTHING, "write": exact(user.publishes), "read": exact(user.consumes)}


def granted(pattern: str, names: list[str]) -> set[str]:
    """Which of `names` a RabbitMQ permission regex grants (RabbitMQ matches with an unanchored search)."""
    return {n for n in names if re.search(pattern, n)}


@dataclass(frozen=True)
class Access:
    configurable: set[str]
    writable: set[str]
    readable: set[str]


def access(permission: dict[str, str], exchanges: list[str], queues: list[str]) -> Access:
    """What a Permission lets its user do among the vhost's exchanges and queues (the auditor's view)."""
    everything = exchanges + queues
    return Access(
        configurable=granted(permission["configure"], everything),
        writable=granted(permission["write"], exchanges),
        readable=granted(permission["read"], queues),
    )


def queue_arguments(queue: str, delivery_limit: int) -> dict:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": queue,
        # At-least-once dead-lettering: a poison message is moved, never dropped on the way.
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


class QueueTopology(pulumi.ComponentResource):
    def __init__(self, name: str, args: QueueTopologyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:data:QueueTopology", name, None, opts)
        for key, user in args.users.items():
            unknown = sorted(set(user.publishes + user.consumes) - set(args.queues))
            if unknown:
                raise ValueError(f"{name}: user {key!r} refers to queues not in this vhost: {unknown}")
        cluster_ref = {"name": args.cluster}
        deletion = "retain" if args.retain else "delete"

        def cr(logical: str, kind: str, k8s_name: str, spec: dict, after: list[pulumi.Resource]) -> pulumi.Resource:
            return KubeObject(
                f"{name}-{logical}",
                {
                    "apiVersion": API,
                    "kind": kind,
                    "metadata": {"name": k8s_name, "namespace": args.namespace, "labels": args.labels},
                    "spec": {"rabbitmqClusterReference": cluster_ref, **spec},
                },
                pulumi.ResourceOptions(parent=self, depends_on=after or args.depends_on),
            )

        vhost = cr(
            "vhost",
            "Vhost",
            args.vhost,
            {"name": args.vhost, "defaultQueueType": "quorum", "deletionPolicy": deletion},
            [],
        )
        in_vhost = {"vhost": args.vhost}
        dlx = cr(
            "exchange-dead-letter",
            "Exchange",
            DEAD_LETTER_EXCHANGE,
            {**in_vhost, "name": DEAD_LETTER_EXCHANGE, "type": "direct", "durable": True},
            [vhost],
        )
        # What a Permission waits for: every binding (each waits for its exchange and queue, and those for the
        # vhost and the dead-letter exchange), plus the dead-letter exchange for a vhost without queues: the same
        # transitive closure as listing the exchanges and queues again. Creates follow the chain (the SDK sends a
        # registration only once every dependency's URN has resolved: pulumi/runtime/resource.py
        # prepare_resource). Deletes too (pulumi/pulumi pkg/resource/deploy/step_generator.go ScheduleDeletes
        # orders a delete after its condemned direct dependents; a queue's bindings exist only with it, so they
        # are condemned together and the Permission goes first). The extra edges only cost SDK walks for cycles
        # (pulumi/runtime/resource_cycle_breaker.py declare_dependency: the dependency's closure, once per edge).
        topology: list[pulumi.Resource] = [dlx]
        for queue, delivery_limit in sorted(args.queues.items()):
            exchange = cr(
                f"exchange-{queue}",
                "Exchange",
                queue,
                {**in_vhost, "name": queue, "type": "direct", "durable": True},
                [vhost],
            )
            main = cr(
                f"queue-{queue}",
                "Queue",
                queue,
                {
                    **in_vhost,
                    "name": queue,
                    "type": "quorum",
                    "durable": True,
                    "arguments": queue_arguments(queue, delivery_limit),
                    "deletionPolicy": deletion,
                },
                [vhost, dlx],
            )
            dlq = cr(
                f"queue-{queue}-dlq",
                "Queue",
                dead_letter_queue(queue),
                {
                    **in_vhost,
                    "name": dead_letter_queue(queue),
                    "type": "quorum",
                    "durable": True,
                    "deletionPolicy": deletion,
                },
                [vhost],
            )
            binding = {"destinationType": "queue", "routingKey": queue}
            topology += [
                cr(
                    f"binding-{queue}",
                    "Binding",
                    queue,
                    {**in_vhost, **binding, "source": queue, "destination": queue},
                    [exchange, main],
                ),
                cr(
                    f"binding-{queue}-dlq",
                    "Binding",
                    dead_letter_queue(queue),
                    {**in_vhost, **binding, "source": DEAD_LETTER_EXCHANGE, "destination": dead_letter_queue(queue)},
                    [dlx, dlq],
                ),
            ]

        for key, user in sorted(args.users.items()):
            user_cr = cr(
                f"user-{key}",
                "User",
                key,
                {"importCredentialsSecret": {"name": user.credentials_secret}},
                [vhost],  # through it, everything the topology waits for (credentials, cluster, operator)
            )
            cr(
                f"permission-{key}",
                "Permission",
                key,
                {**in_vhost, "userReference": {"name": key}, "permissions": permissions(user)},
                [user_cr, *topology],
            )

        self.vhost = args.vhost
        self.register_outputs({"vhost": self.vhost, "queues": sorted(args.queues), "users": sorted(args.users)})
