"""Autoscaling and availability rules for a workload, as pure functions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceScaling:
    """Scale on CPU and memory utilisation (an `autoscaling/v2` HorizontalPodAutoscaler)."""

    cpu_utilization: int
    memory_utilization: int


@dataclass(frozen=True)
class QueueScaling:
    """Scale on queue depth (a KEDA ScaledObject with a RabbitMQ trigger)."""

    queues: tuple[str, ...]
    vhost: str
    messages_per_replica: int
    credentials_secret: str
    """Secret in the workload's namespace whose `uri` key is the AMQP URI KEDA connects with (and whose `tls`
    key says `enable` when `ca_secret` is set)."""
    ca_secret: str | None = None
    """Secret whose `ca.crt` verifies the broker's certificate (AMQPS)."""


def trigger_auth_spec(scaling: QueueScaling) -> dict:
    refs = [{"parameter": "host", "name": scaling.credentials_secret, "key": "uri"}]
    if scaling.ca_secret is not None:
        refs += [
            {"parameter": "tls", "name": scaling.credentials_secret, "key": "tls"},
            {"parameter": "ca", "name": scaling.ca_secret, "key": "ca.crt"},
        ]
    return {"secretTargetRef": refs}


def hpa_behavior() -> dict:
    """React fast to load, shed capacity slowly: a payment burst must not wait, a dip must not flap."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 30},
                {"type": "Pods", "value": 4, "periodSeconds": 30},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "selectPolicy": "Min",
            "policies": [{"type": "Percent", "value": 20, "periodSeconds": 60}],
        },
    }


def hpa_spec(deployment: str, min_replicas: int, max_replicas: int, scaling: ResourceScaling) -> dict:
    def target(resource: str, utilization: int) -> dict:
        return {
            "type": "Resource",
            "resource": {"name": resource, "target": {"type": "Utilization", "averageUtilization": utilization}},
        }

    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "metrics": [target("cpu", scaling.cpu_utilization), target("memory", scaling.memory_utilization)],
        "behavior": hpa_behavior(),
    }


def scaled_object_spec(deployment: str, min_replicas: int, max_replicas: int, scaling: QueueScaling, auth: str) -> dict:
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicaCount": min_replicas,
        "maxReplicaCount": max_replicas,
        "pollingInterval": 15,
        "cooldownPeriod": 300,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa_behavior()}},
        "triggers": [
            {
                "type": "rabbitmq",
                "metadata": {
                    "protocol": "amqp",
                    "mode": "QueueLength",
                    "value": str(scaling.messages_per_replica),
                    "queueName": queue,
                    "vhostName": scaling.vhost,
                },
                "authenticationRef": {"name": auth},
            }
            for queue in scaling.queues
        ],
    }


# KEDA "Pause autoscaling" (keda.sh/docs/2.20/concepts/scaling-deployments, kedacore/keda#944): with this
# annotation KEDA scales the target to the given count and stops autoscaling until the annotation is removed.
PAUSED_REPLICAS_ANNOTATION = "autoscaling.keda.sh/paused-replicas"


def pause_metadata(paused: bool) -> dict:
    """Metadata to merge into a ScaledObject's: the pause at zero pods, or nothing."""
    return {"annotations": {PAUSED_REPLICAS_ANNOTATION: "0"}} if paused else {}


def pdb_min_available(min_replicas: int) -> int | None:
    """Keep all but one pod through voluntary disruptions; no PDB for a single replica (it would block drains)."""
    if min_replicas <= 1:
        return None
    return min_replicas - 1


def topology_spread(selector: dict[str, str]) -> list[dict]:
    """Spread over zones (preferred: a single-zone cluster must still schedule) and hosts (required)."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        },
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": selector},
        },
    ]
