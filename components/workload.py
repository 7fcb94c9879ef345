"""A stateless HTTP workload: ServiceAccount, Deployment and ClusterIP Service."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components import labels as labels_lib
from components import pod_security

DIGEST_MARKER = "@sha256:"


@dataclass(frozen=True)
class Probes:
    startup_path: str = "/livez"
    liveness_path: str = "/livez"
    readiness_path: str = "/readyz"


@dataclass(frozen=True)
class WorkloadArgs:
    name: str
    """Kubernetes name of the ServiceAccount, Deployment and Service (what callers address)."""
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    port: int
    metrics_port: int
    replicas: int
    resources: dict
    """Container `resources`: {"requests": {...}, "limits": {...}}."""
    part_of: str
    component: str
    extra_labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    probes: Probes = field(default_factory=Probes)
    mount_service_account_token: bool = False
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """Resources that must exist before the pods start (the databases and queues it uses)."""


def image_pull_policy(image: str) -> str:
    """A digest never changes, so the node cache is always right; a tag may move, so pull it every time."""
    return "IfNotPresent" if DIGEST_MARKER in image else "Always"


def deployment_spec(args: WorkloadArgs, image: str, labels: dict[str, str]) -> dict:
    """The Deployment spec, as a plain dict (pure: tested without Pulumi)."""
    name = args.name
    container = {
        "name": "app",
        "image": image,
        "imagePullPolicy": image_pull_policy(image),
        "ports": [
            {"name": "http", "containerPort": args.port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": args.metrics_port, "protocol": "TCP"},
        ],
        "env": [{"name": k, "value": v} for k, v in sorted(args.env.items())],
        "resources": args.resources,
        "securityContext": pod_security.container_security_context(),
        "startupProbe": {
            "httpGet": {"path": args.probes.startup_path, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": args.probes.liveness_path, "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": args.probes.readiness_path, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "replicas": args.replicas,
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": labels_lib.selector_labels(name)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": name,
                "automountServiceAccountToken": args.mount_service_account_token,
                "enableServiceLinks": False,
                "securityContext": pod_security.pod_security_context(),
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }


class Workload(pulumi.ComponentResource):
    """One service: its identity (ServiceAccount), its pods (Deployment) and its address (Service)."""

    service_name: pulumi.Output[str]
    port: int

    def __init__(self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:apps:Workload", name, None, opts)
        labels = labels_lib.standard_labels(args.name, args.part_of, args.component, args.extra_labels)
        metadata = {"name": args.name, "namespace": args.namespace, "labels": labels}

        account = k8s.core.v1.ServiceAccount(
            f"{name}-account",
            metadata=metadata,
            automount_service_account_token=args.mount_service_account_token,
            opts=pulumi.ResourceOptions(parent=self),
        )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=metadata,
            spec=pulumi.Output.from_input(args.image).apply(lambda image: deployment_spec(args, image, labels)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[account, *args.depends_on]),
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=metadata,
            spec={
                "type": "ClusterIP",
                "selector": labels_lib.selector_labels(args.name),
                "ports": [
                    {"name": "http", "port": args.port, "targetPort": "http", "protocol": "TCP"},
                    {
                        "name": "metrics",
                        "port": args.metrics_port,
                        "targetPort": "metrics",
                        "protocol": "TCP",
                    },
                ],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.service_name = service.metadata.name
        self.port = args.port
        self.register_outputs({"service_name": self.service_name, "port": self.port})
