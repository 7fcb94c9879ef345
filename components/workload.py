"""A stateless HTTP workload: ServiceAccount, Deployment, Service, autoscaler and disruption budget."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components import autoscaling, pod_security
from components import labels as labels_lib
from components.kube import KubeObject

DIGEST_MARKER = "@sha256:"


@dataclass(frozen=True)
class Probes:
    startup_path: str = "/livez"
    liveness_path: str = "/livez"
    readiness_path: str = "/readyz"


@dataclass(frozen=True)
class Shutdown:
    pre_stop_sleep_seconds: int = 5
    """Time for endpoints and load balancers to stop sending traffic before the process is told to stop."""
    drain_seconds: int = 25
    """Time the process gets after SIGTERM to finish in-flight requests."""

    @property
    def termination_grace_period_seconds(self) -> int:
        return self.pre_stop_sleep_seconds + self.drain_seconds


@dataclass(frozen=True)
class SecretMount:
    """A Secret mounted read-only as files. `keys` limits it to those keys: a CA bundle Secret often also holds
    the CA's private key, which a client must never receive."""

    path: str
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkloadArgs:
    name: str
    """Kubernetes name of the ServiceAccount, Deployment and Service (what callers address)."""
    namespace: pulumi.Input[str]
    image: pulumi.Input[str]
    port: int
    metrics_port: int
    min_replicas: int
    max_replicas: int
    resources: dict
    """Container `resources`: {"requests": {...}, "limits": {...}}."""
    part_of: str
    component: str
    scaling: autoscaling.ResourceScaling | autoscaling.QueueScaling | None = None
    """None: a fixed `min_replicas`. Otherwise the autoscaler owns `replicas` and the Deployment leaves it out."""
    paused: bool = False
    """Queue consumers: hold the Deployment at zero pods with KEDA's pause annotation (the ScaledObject stays, so
    removing the pause restores autoscaling in place)."""
    priority_class: str | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    secret_files: dict[str, SecretMount] = field(default_factory=dict)
    """Secret name -> where (and which keys) to mount it: credentials as files, not env values."""
    probes: Probes = field(default_factory=Probes)
    shutdown: Shutdown = field(default_factory=Shutdown)
    mount_service_account_token: bool = False
    metrics_path: str = "/metrics"
    monitoring: pulumi.Resource | None = None
    """The Prometheus operator install: when set, a ServiceMonitor scrapes the `metrics` port."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """Resources that must exist before the pods start (the databases and queues it uses)."""
    autoscaler_operator: pulumi.Resource | None = None
    """The KEDA install, which a ScaledObject must wait for."""


def image_pull_policy(image: str) -> str:
    """A digest never changes, so the node cache is always right; a tag may move, so pull it every time."""
    return "IfNotPresent" if DIGEST_MARKER in image else "Always"


def secret_volume_source(secret: str, mount: SecretMount) -> dict:
    source: dict = {"secretName": secret, "defaultMode": 0o440}
    if mount.keys:
        source["items"] = [{"key": key, "path": key} for key in mount.keys]
    return source


def container_spec(args: WorkloadArgs, image: str) -> dict:
    # Only non-secret settings travel as env; credentials are mounted files (`secret_files`).
    env = [{"name": k, "value": v} for k, v in sorted(args.env.items())]
    return {
        "name": "app",
        "image": image,
        "imagePullPolicy": image_pull_policy(image),
        "ports": [
            {"name": "http", "containerPort": args.port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": args.metrics_port, "protocol": "TCP"},
        ],
        "env": env,
        "resources": args.resources,
        "securityContext": pod_security.container_security_context(),
        # Startup gives a slow boot up to 150 s before liveness may kill it.
        "startupProbe": {
            "httpGet": {"path": args.probes.startup_path, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 30,
        },
        # Liveness restarts a stuck process; lenient so a slow dependency does not cause a restart storm.
        "livenessProbe": {
            "httpGet": {"path": args.probes.liveness_path, "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # Readiness takes a pod out of rotation quickly and brings it back when its dependencies are back.
        "readinessProbe": {
            "httpGet": {"path": args.probes.readiness_path, "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
            "successThreshold": 1,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": args.shutdown.pre_stop_sleep_seconds}}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
        + [
            {"name": f"secret-{secret}", "mountPath": mount.path, "readOnly": True}
            for secret, mount in sorted(args.secret_files.items())
        ],
    }


def deployment_spec(args: WorkloadArgs, image: str, labels: dict[str, str]) -> dict:
    """The Deployment spec, as a plain dict (pure: tested without Pulumi)."""
    selector = labels_lib.selector_labels(args.name)
    pod = {
        "serviceAccountName": args.name,
        "automountServiceAccountToken": args.mount_service_account_token,
        "enableServiceLinks": False,
        "securityContext": pod_security.pod_security_context(),
        "terminationGracePeriodSeconds": args.shutdown.termination_grace_period_seconds,
        "topologySpreadConstraints": autoscaling.topology_spread(selector),
        "containers": [container_spec(args, image)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
        + [
            {"name": f"secret-{secret}", "secret": secret_volume_source(secret, mount)}
            for secret, mount in sorted(args.secret_files.items())
        ],
    }
    if args.priority_class is not None:
        pod["priorityClassName"] = args.priority_class
    spec = {
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector},
        # Surge first, never drop below the desired count during a rollout.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if args.scaling is None:
        spec["replicas"] = args.min_replicas
    return spec


class Workload(pulumi.ComponentResource):
    """One service: identity, pods, address, autoscaler (HPA or KEDA) and disruption budget."""

    service_name: pulumi.Output[str]
    port: int

    def __init__(self, name: str, args: WorkloadArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:apps:Workload", name, None, opts)
        if args.min_replicas > args.max_replicas:
            raise ValueError(f"{name}: min_replicas ({args.min_replicas}) > max_replicas ({args.max_replicas})")
        labels = labels_lib.standard_labels(args.name, args.part_of, args.component, args.extra_labels)
        selector = labels_lib.selector_labels(args.name)
        metadata = {"name": args.name, "namespace": args.namespace, "labels": labels}
        child = pulumi.ResourceOptions(parent=self)

        account = KubeObject(
            f"{name}-account",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": metadata,
                "automountServiceAccountToken": args.mount_service_account_token,
            },
            child,
        )
        deployment = KubeObject(
            f"{name}-deployment",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": metadata,
                "spec": pulumi.Output.from_input(args.image).apply(lambda image: deployment_spec(args, image, labels)),
            },
            pulumi.ResourceOptions(parent=self, depends_on=[account, *args.depends_on]),
        )
        service = KubeObject(
            f"{name}-service",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {
                    "type": "ClusterIP",
                    "selector": selector,
                    "ports": [
                        {"name": "http", "port": args.port, "targetPort": "http", "protocol": "TCP"},
                        {"name": "metrics", "port": args.metrics_port, "targetPort": "metrics", "protocol": "TCP"},
                    ],
                },
            },
            child,
        )

        if isinstance(args.scaling, autoscaling.ResourceScaling):
            KubeObject(
                f"{name}-hpa",
                {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": metadata,
                    "spec": autoscaling.hpa_spec(args.name, args.min_replicas, args.max_replicas, args.scaling),
                },
                pulumi.ResourceOptions(parent=self, depends_on=[deployment]),
            )
        elif isinstance(args.scaling, autoscaling.QueueScaling):
            after_keda = [args.autoscaler_operator] if args.autoscaler_operator is not None else []
            auth = KubeObject(
                f"{name}-trigger-auth",
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "TriggerAuthentication",
                    "metadata": metadata,
                    "spec": autoscaling.trigger_auth_spec(args.scaling),
                },
                pulumi.ResourceOptions(parent=self, depends_on=after_keda),
            )
            KubeObject(
                f"{name}-scaler",
                {
                    "apiVersion": "keda.sh/v1alpha1",
                    "kind": "ScaledObject",
                    "metadata": {**metadata, **autoscaling.pause_metadata(args.paused)},
                    "spec": autoscaling.scaled_object_spec(
                        args.name, args.min_replicas, args.max_replicas, args.scaling, args.name
                    ),
                },
                pulumi.ResourceOptions(parent=self, depends_on=[deployment, auth, *after_keda]),
            )

        if args.monitoring is not None:
            KubeObject(
                f"{name}-monitor",
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "ServiceMonitor",
                    "metadata": metadata,
                    "spec": {
                        "selector": {"matchLabels": selector},
                        "endpoints": [{"port": "metrics", "path": args.metrics_path, "interval": "30s"}],
                    },
                },
                pulumi.ResourceOptions(parent=self, depends_on=[service, args.monitoring]),
            )

        min_available = autoscaling.pdb_min_available(args.min_replicas)
        if min_available is not None:
            KubeObject(
                f"{name}-pdb",
                {
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": metadata,
                    "spec": {"minAvailable": min_available, "selector": {"matchLabels": selector}},
                },
                child,
            )

        self.service_name = service.metadata["name"]
        self.port = args.port
        self.register_outputs({"service_name": self.service_name, "port": self.port})
