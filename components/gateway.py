"""The HTTPS entry point: a Gateway API Gateway served by Envoy Gateway, and per-service routes with flow control.

Plain HTTP only redirects to HTTPS (and serves ACME HTTP-01 challenges when a public certificate is used).
Every exposed route has a rate limit, a request timeout and circuit breaking (Envoy Gateway's
BackendTrafficPolicy); the listener accepts TLS 1.2 and newer only (ClientTrafficPolicy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components import internal_ca, pod_security
from components.kube import KubeObject
from components.readiness import CERTIFICATE_TIMEOUTS, READY

GATEWAY_API = "gateway.networking.k8s.io/v1"
ENVOY_API = "gateway.envoyproxy.io/v1alpha1"
ENVOY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
TLS_SECRET = "gateway-tls"


@dataclass(frozen=True)
class Route:
    """One exposed service."""

    namespace: pulumi.Input[str]
    service: str
    port: int
    path: str
    requests_per_second: int
    timeout_seconds: int
    max_connections: int
    max_pending_requests: int
    max_parallel_requests: int


@dataclass(frozen=True)
class GatewayArgs:
    name: str
    namespace: str
    hostname: str
    route_namespace_labels: dict[str, str]
    """Only namespaces with these labels may attach routes to the Gateway."""
    internal_issuer: str
    acme_email: str | None = None
    pod_security_version: str = pod_security.PSS_VERSION
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """The Envoy Gateway and cert-manager installs."""
    proxy: ProxySettings | None = None
    """How the controller runs the proxy pods (an EnvoyProxy on the GatewayClass); None: its defaults."""


@dataclass(frozen=True)
class ProxySettings:
    namespace: str
    """Where the EnvoyProxy lives (the controller's namespace)."""
    pod_labels: dict[str, str] = field(default_factory=dict)
    service_account: str | None = None
    """A fixed ServiceAccount name for the proxy pods (their identity); None: the controller's hashed name."""


def envoy_proxy_spec(proxy: ProxySettings) -> dict:
    """EnvoyProxy spec.provider.kubernetes (Envoy Gateway v1.9.0): the proxy pods' labels (merged into the pod
    template, internal/infrastructure/kubernetes/proxy/resource_provider.go) and their ServiceAccount's name
    (`serviceAccountName()`, there too)."""
    kubernetes: dict = {}
    if proxy.pod_labels:
        kubernetes["envoyDeployment"] = {"pod": {"labels": proxy.pod_labels}}
    if proxy.service_account is not None:
        kubernetes["envoyServiceAccount"] = {"name": proxy.service_account}
    return {"provider": {"type": "Kubernetes", "kubernetes": kubernetes}}


def listeners(args: GatewayArgs) -> list[dict]:
    allowed = {"namespaces": {"from": "Selector", "selector": {"matchLabels": args.route_namespace_labels}}}
    return [
        {
            "name": "https",
            "hostname": args.hostname,
            "port": 443,
            "protocol": "HTTPS",
            "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": TLS_SECRET}]},
            "allowedRoutes": allowed,
        },
        # Only the redirect route (this namespace) and ACME challenges attach here.
        {
            "name": "http",
            "hostname": args.hostname,
            "port": 80,
            "protocol": "HTTP",
            "allowedRoutes": {"namespaces": {"from": "Same"}},
        },
    ]


def route_spec(gateway: GatewayArgs, route: Route) -> dict:
    return {
        "parentRefs": [
            {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": gateway.name,
                "namespace": gateway.namespace,
                "sectionName": "https",
            }
        ],
        "hostnames": [gateway.hostname],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": route.path}}],
                "backendRefs": [{"name": route.service, "port": route.port}],
            }
        ],
    }


def traffic_policy_spec(route: Route) -> dict:
    return {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route.service}],
        "rateLimit": {
            "type": "Local",
            "local": {"rules": [{"limit": {"requests": route.requests_per_second, "unit": "Second"}}]},
        },
        "timeout": {"http": {"requestTimeout": f"{route.timeout_seconds}s"}},
        "circuitBreaker": {
            "maxConnections": route.max_connections,
            "maxPendingRequests": route.max_pending_requests,
            "maxParallelRequests": route.max_parallel_requests,
        },
    }


class Gateway(pulumi.ComponentResource):
    """The shared entry point with one HTTPRoute and one BackendTrafficPolicy per exposed service (`routes`)."""

    gateway_name: str
    namespace: pulumi.Output[str]

    def __init__(
        self, name: str, args: GatewayArgs, routes: dict[str, Route], opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("settlement:network:Gateway", name, None, opts)
        after = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)

        namespace = KubeObject(
            f"{name}-namespace",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": pod_security.namespace_metadata(
                    args.namespace, args.labels, "restricted", args.pod_security_version
                ),
            },
            pulumi.ResourceOptions(parent=self),
        )
        in_namespace = [namespace, *args.depends_on]
        meta = {"namespace": args.namespace, "labels": args.labels}

        class_spec: dict = {"controllerName": ENVOY_CONTROLLER}
        class_opts = after
        if args.proxy is not None:
            envoy_proxy = KubeObject(
                f"{name}-proxy",
                {
                    "apiVersion": ENVOY_API,
                    "kind": "EnvoyProxy",
                    "metadata": {
                        "name": f"{args.name}-proxy",
                        "namespace": args.proxy.namespace,
                        "labels": args.labels,
                    },
                    "spec": envoy_proxy_spec(args.proxy),
                },
                after,
            )
            class_spec["parametersRef"] = {
                "group": "gateway.envoyproxy.io",
                "kind": "EnvoyProxy",
                "name": f"{args.name}-proxy",
                "namespace": args.proxy.namespace,
            }
            class_opts = pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, envoy_proxy])
        gateway_class = KubeObject(
            f"{name}-class",
            {
                "apiVersion": GATEWAY_API,
                "kind": "GatewayClass",
                "metadata": {"name": args.name, "labels": args.labels},
                "spec": class_spec,
            },
            class_opts,
        )
        issuer = args.internal_issuer
        if args.acme_email is not None:
            issuer = f"{args.name}-letsencrypt"
            KubeObject(
                f"{name}-acme-issuer",
                {
                    "apiVersion": internal_ca.CERT_MANAGER_API,
                    "kind": "ClusterIssuer",
                    "metadata": {"name": issuer, "labels": args.labels},
                    "spec": {
                        "acme": {
                            "email": args.acme_email,
                            "server": LETS_ENCRYPT,
                            "privateKeySecretRef": {"name": f"{issuer}-account"},
                            "solvers": [
                                {
                                    "http01": {
                                        "gatewayHTTPRoute": {
                                            "parentRefs": [
                                                {
                                                    "name": args.name,
                                                    "namespace": args.namespace,
                                                    "kind": "Gateway",
                                                    "sectionName": "http",
                                                }
                                            ]
                                        }
                                    }
                                }
                            ],
                        }
                    },
                },
                after,
            )
        # An internal certificate is issued in seconds: wait for it. A public one waits on Let's Encrypt reaching
        # the gateway's address over HTTP-01, which needs this very update to finish (and DNS): never wait on it.
        public = args.acme_email is not None
        certificate = KubeObject(
            f"{name}-certificate",
            {
                "apiVersion": internal_ca.CERT_MANAGER_API,
                "kind": "Certificate",
                "metadata": {**meta, "name": TLS_SECRET, **({} if public else {"annotations": READY})},
                "spec": {
                    "secretName": TLS_SECRET,
                    "dnsNames": [args.hostname],
                    "issuerRef": internal_ca.issuer_ref(issuer),
                    "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                    "renewBefore": "720h",
                },
            },
            pulumi.ResourceOptions(
                parent=self, depends_on=in_namespace, custom_timeouts=None if public else CERTIFICATE_TIMEOUTS
            ),
        )
        gateway = KubeObject(
            f"{name}-gateway",
            {
                "apiVersion": GATEWAY_API,
                "kind": "Gateway",
                "metadata": {**meta, "name": args.name},
                "spec": {"gatewayClassName": args.name, "listeners": listeners(args)},
            },
            pulumi.ResourceOptions(parent=self, depends_on=[gateway_class, certificate, *in_namespace]),
        )
        KubeObject(
            f"{name}-client-policy",
            {
                "apiVersion": ENVOY_API,
                "kind": "ClientTrafficPolicy",
                "metadata": {**meta, "name": args.name},
                "spec": {
                    "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": args.name}],
                    "tls": {"minVersion": "1.2"},
                },
            },
            pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
        )
        KubeObject(
            f"{name}-https-redirect",
            {
                "apiVersion": GATEWAY_API,
                "kind": "HTTPRoute",
                "metadata": {**meta, "name": "https-redirect"},
                "spec": {
                    "parentRefs": [{"name": args.name, "sectionName": "http"}],
                    "hostnames": [args.hostname],
                    "rules": [
                        {
                            "filters": [
                                {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}
                            ]
                        }
                    ],
                },
            },
            pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
        )
        for key, route in sorted(routes.items()):
            route_meta = {"namespace": route.namespace, "name": route.service, "labels": args.labels}
            http_route = KubeObject(
                f"{name}-route-{key}",
                {
                    "apiVersion": GATEWAY_API,
                    "kind": "HTTPRoute",
                    "metadata": route_meta,
                    "spec": route_spec(args, route),
                },
                pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
            )
            KubeObject(
                f"{name}-traffic-{key}",
                {
                    "apiVersion": ENVOY_API,
                    "kind": "BackendTrafficPolicy",
                    "metadata": route_meta,
                    "spec": traffic_policy_spec(route),
                },
                pulumi.ResourceOptions(parent=self, depends_on=[http_route]),
            )

        self.gateway_name = args.name
        self.namespace = namespace.metadata["name"]
        self.register_outputs({"gateway_name": self.gateway_name, "hostname": args.hostname})
