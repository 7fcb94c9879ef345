"""The network follows from the declared service graph, exactly (PCI DSS 1.3, 1.4).

Two pure steps:
1. `declared_edges(plan)`: every pod-to-pod connection the platform needs, from the plan - service calls,
   database and queue use, replication inside a data cluster, operators reaching what they manage, monitoring
   scraping metrics ports, the gateway reaching exposed services, DNS.
2. `namespace_policies(plan, edges)`: per namespace, a default deny (ingress and egress) plus one policy per
   pod group that allows exactly its edges, in both directions, and the few non-pod destinations the config
   names (API server, object store, external endpoints, clients of the gateway).

`infra.offline.reachability` evaluates the rendered policies independently and must arrive back at step 1.
Peers are always namespace + pod labels; no rule selects "all namespaces".
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from components.labels import selector_labels
from infra.topology import PlatformPlan, infrastructure_namespaces, operator_namespaces

NAMESPACE_LABEL = "kubernetes.io/metadata.name"
POSTGRES_PORT = 5432
POSTGRES_STATUS_PORT = 8000
POSTGRES_METRICS_PORT = 9187
AMQPS_PORT = 5671
RABBITMQ_MANAGEMENT_TLS_PORT = 15671
RABBITMQ_PROMETHEUS_TLS_PORT = 15691
# Erlang distribution between RabbitMQ nodes: epmd, inter-node, CLI tools.
RABBITMQ_CLUSTER_PORTS = ((4369, None), (25672, None), (35672, 35682))
BARMAN_PLUGIN_PORT = 9090
ENVOY_XDS_PORT = 18000
# Envoy Gateway maps privileged listener ports to port + 10000 inside the proxy pod.
ENVOY_HTTP_PORT, ENVOY_HTTPS_PORT = 10080, 10443
ACME_SOLVER_PORT = 8089
DNS_PORT = 53


GATEWAY_NAME = "settlement"

# Pods the operators run (from a Helm chart or a release manifest), with the labels the pinned versions put on
# them. The reachability model uses the same table to know which chart pods exist; keep it in step with the
# charts and manifests when a version moves. The RabbitMQ operators' labels: their Deployments' pod templates in
# cluster-operator.yml v2.22.3 and messaging-topology-operator-with-certmanager.yaml v1.20.1.
CHART_PODS: dict[str, tuple[str, str, dict[str, str]]] = {
    "cnpg": ("cloudnative_pg", "cloudnative-pg", {"app.kubernetes.io/name": "cloudnative-pg"}),
    "barman": ("barman_cloud", "plugin-barman-cloud", {"app.kubernetes.io/name": "plugin-barman-cloud"}),
    "rabbitmq-cluster-operator": (
        "rabbitmq_cluster_operator",
        "rabbitmq-cluster-operator",
        {"app.kubernetes.io/name": "rabbitmq-cluster-operator"},
    ),
    "rabbitmq-topology-operator": (
        "rabbitmq_topology_operator",
        "messaging-topology-operator",
        {"app.kubernetes.io/name": "messaging-topology-operator"},
    ),
    "keda": ("keda", "keda-operator", {"app.kubernetes.io/name": "keda-operator"}),
    "cert-manager": ("cert_manager", "cert-manager", {"app.kubernetes.io/name": "cert-manager"}),
    "prometheus": ("monitoring", "prometheus", {"app.kubernetes.io/name": "prometheus"}),
    "alertmanager": ("monitoring", "alertmanager", {"app.kubernetes.io/name": "alertmanager"}),
    "grafana": ("monitoring", "grafana", {"app.kubernetes.io/name": "grafana"}),
    "kube-state-metrics": ("monitoring", "kube-state-metrics", {"app.kubernetes.io/name": "kube-state-metrics"}),
    "envoy-gateway": ("envoy_gateway", "envoy-gateway", {"control-plane": "envoy-gateway"}),
    "envoy": (
        "envoy_gateway",
        "envoy-proxy",
        {"app.kubernetes.io/name": "envoy", "gateway.envoyproxy.io/owning-gateway-name": GATEWAY_NAME},
    ),
}


@dataclass(frozen=True, order=True)
class PodGroup:
    """Pods the platform can name: a namespace and the labels that select them."""

    namespace: str
    name: str
    labels: tuple[tuple[str, str], ...]

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selector(self) -> dict[str, str]:
        return dict(self.labels)


def group(namespace: str, name: str, labels: dict[str, str]) -> PodGroup:
    return PodGroup(namespace, name, tuple(sorted(labels.items())))


@dataclass(frozen=True, order=True)
class Edge:
    source: str
    destination: str
    port: int
    end_port: int | None = None
    protocol: str = "TCP"


@dataclass(frozen=True)
class Groups:
    """Every pod group of the platform, by id, and the data-cluster/operator groups by role."""

    by_id: dict[str, PodGroup]
    services: dict[tuple[str, str], PodGroup]
    databases: dict[str, PodGroup]
    queues: dict[str, PodGroup]
    infra: dict[str, PodGroup] = field(default_factory=dict)


def pod_groups(plan: PlatformPlan) -> Groups:
    operators = plan.config.infrastructure.operators
    net = plan.config.network
    services = {(s.subsystem, s.name): group(s.subsystem, s.name, selector_labels(s.name)) for s in plan.services()}
    databases = {
        sub.name: group(sub.name, f"{sub.name}-db", {"cnpg.io/cluster": f"{sub.name}-db"})
        for sub in plan.subsystems.values()
        if sub.postgres is not None
    }
    queues = {
        sub.name: group(sub.name, f"{sub.name}-mq", {"app.kubernetes.io/name": f"{sub.name}-mq"})
        for sub in plan.subsystems.values()
        if sub.queue is not None
    }
    # Pods the charts run, by role: (chart config, group name, labels the pinned chart puts on them).
    infra = {"dns": group(net.dns_namespace, "dns", net.dns_pod_labels)}
    for role, (chart, name, labels) in CHART_PODS.items():
        if role in ("envoy",) and not any(s.expose for s in plan.services()):
            continue
        infra[role] = group(getattr(operators, chart).namespace, name, labels)
    if plan.config.gateway.acme_email is not None:
        infra["acme-solver"] = group(
            plan.config.gateway.namespace, "acme-http01-solver", {"acme.cert-manager.io/http01-solver": "true"}
        )
    by_id = {g.id: g for g in [*services.values(), *databases.values(), *queues.values(), *infra.values()]}
    return Groups(by_id, services, databases, queues, infra)


def declared_edges(plan: PlatformPlan, groups: Groups) -> set[Edge]:
    """Every pod-to-pod connection the platform needs, derived from the plan alone."""
    edges: set[Edge] = set()
    infra = groups.infra

    def add(src: PodGroup, dst: PodGroup, port: int, end_port: int | None = None, protocol: str = "TCP") -> None:
        edges.add(Edge(src.id, dst.id, port, end_port, protocol))

    for svc in plan.services():
        me = groups.services[(svc.subsystem, svc.name)]
        for call in svc.calls:
            add(me, groups.services[(call.subsystem, call.service)], call.port)
        if svc.database:
            add(me, groups.databases[svc.subsystem], POSTGRES_PORT)
        for q_sub in svc.queue_subsystems:
            add(me, groups.queues[q_sub], AMQPS_PORT)
        if svc.consumes:
            # KEDA reads the depth of the queues this service consumes.
            add(infra["keda"], groups.queues[svc.consumes[0].subsystem], AMQPS_PORT)
        add(infra["prometheus"], me, svc.metrics_port)
        if svc.expose is not None:
            add(infra["envoy"], me, svc.port)

    for db in groups.databases.values():
        add(db, db, POSTGRES_PORT)  # streaming replication
        add(db, db, POSTGRES_STATUS_PORT)  # instance manager status during failover
        add(infra["cnpg"], db, POSTGRES_STATUS_PORT)
        add(infra["prometheus"], db, POSTGRES_METRICS_PORT)
    if groups.databases:
        add(infra["cnpg"], infra["barman"], BARMAN_PLUGIN_PORT)

    for mq in groups.queues.values():
        for port, end in RABBITMQ_CLUSTER_PORTS:
            add(mq, mq, port, end)
        # Both operators call the management API (HTTPS, the brokers are TLS-only): the topology operator to
        # declare queues, users and permissions; the cluster operator for its quorum and version checks
        # (cluster-operator v2.22.3 internal/rabbitmqclient/client.go).
        add(infra["rabbitmq-cluster-operator"], mq, RABBITMQ_MANAGEMENT_TLS_PORT)
        add(infra["rabbitmq-topology-operator"], mq, RABBITMQ_MANAGEMENT_TLS_PORT)
        add(infra["prometheus"], mq, RABBITMQ_PROMETHEUS_TLS_PORT)

    add(infra["grafana"], infra["prometheus"], 9090)
    add(infra["prometheus"], infra["cert-manager"], 9402)
    add(infra["prometheus"], infra["alertmanager"], 9093)
    add(infra["prometheus"], infra["kube-state-metrics"], 8080)
    if "envoy" in infra:
        add(infra["envoy"], infra["envoy-gateway"], ENVOY_XDS_PORT)
    if "acme-solver" in infra:
        add(infra["envoy"], infra["acme-solver"], ACME_SOLVER_PORT)

    dns = infra["dns"]
    for g in groups.by_id.values():
        if g is not dns:
            add(g, dns, DNS_PORT, protocol="UDP")
            add(g, dns, DNS_PORT, protocol="TCP")
    return edges


# --- From edges to NetworkPolicies --------------------------------------------------------------------------


def _peer(g: PodGroup) -> dict:
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: g.namespace}},
        "podSelector": {"matchLabels": g.selector()},
    }


def _port(edge: Edge) -> dict:
    port = {"protocol": edge.protocol, "port": edge.port}
    if edge.end_port is not None:
        port["endPort"] = edge.end_port
    return port


def _ip_rule(cidrs: list[str], ports: list[int], direction: str) -> dict:
    key = "to" if direction == "egress" else "from"
    return {key: [{"ipBlock": {"cidr": c}} for c in cidrs], "ports": [{"protocol": "TCP", "port": p} for p in ports]}


def _rules(edges: list[Edge], groups: Groups, direction: str) -> list[dict]:
    """One rule per peer, listing its ports: `to` peers for egress, `from` peers for ingress."""
    by_peer: dict[str, list[Edge]] = defaultdict(list)
    for e in edges:
        by_peer[e.destination if direction == "egress" else e.source].append(e)
    key = "to" if direction == "egress" else "from"
    return [
        {key: [_peer(groups.by_id[peer])], "ports": [_port(e) for e in sorted(by_peer[peer])]}
        for peer in sorted(by_peer)
    ]


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    spec: dict


def namespace_policies(plan: PlatformPlan, groups: Groups, edges: set[Edge]) -> list[Policy]:
    """Default deny plus exact allows for every namespace the platform creates."""
    net = plan.config.network
    managed_namespaces = sorted(
        {sub.namespace for sub in plan.subsystems.values()} | infrastructure_namespaces(plan.config)
    )
    api = (net.api_server_cidrs, net.api_server_ports)
    # Non-pod destinations (ipBlock) per group: API server, object store, external endpoints, the internet.
    # (Pods in operator namespaces reach the API server through their namespace's allow-control-plane.)
    extra_egress: dict[str, list[dict]] = defaultdict(list)
    extra_ingress: dict[str, list[dict]] = defaultdict(list)
    for g in [*groups.databases.values(), *groups.queues.values()]:
        # Instance managers and RabbitMQ's peer discovery read the Kubernetes API.
        extra_egress[g.id].append(_ip_rule(*api, "egress"))
    if plan.config.backup is not None:
        for g in groups.databases.values():
            extra_egress[g.id].append(_ip_rule(net.object_store_cidrs, [443], "egress"))
    for endpoint in plan.config.alerting.egress.values():
        extra_egress[groups.infra["alertmanager"].id].append(_ip_rule(endpoint.cidrs, endpoint.ports, "egress"))
    if net.node_cidrs:
        extra_egress[groups.infra["prometheus"].id].append(_ip_rule(net.node_cidrs, [9100, 10250], "egress"))
    for svc in plan.services():
        me = groups.services[(svc.subsystem, svc.name)].id
        for endpoint in svc.egress.values():
            extra_egress[me].append(_ip_rule(endpoint.cidrs, endpoint.ports, "egress"))
    if "envoy" in groups.infra:
        # The gateway's proxies are the one entry point from outside the cluster.
        extra_ingress[groups.infra["envoy"].id].append(
            _ip_rule(["0.0.0.0/0"], [ENVOY_HTTP_PORT, ENVOY_HTTPS_PORT], "ingress")
        )
    if plan.config.gateway.acme_email is not None:
        # ACME: the controller talks to Let's Encrypt over HTTPS, and before that checks the HTTP-01 challenge
        # itself at `http://<hostname>/.well-known/acme-challenge/...` (cert-manager pkg/issuer/acme/http/http.go,
        # the self check), i.e. port 80 of the addresses the public hostname resolves to.
        cert_manager = groups.infra["cert-manager"].id
        extra_egress[cert_manager].append(_ip_rule(["0.0.0.0/0"], [443], "egress"))
        extra_egress[cert_manager].append(_ip_rule(plan.config.gateway.public_addresses, [80], "egress"))

    dns = groups.infra["dns"]
    dns_rule = {
        "to": [_peer(dns)],
        "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
    }
    policies = []
    for ns in managed_namespaces:
        policies.append(Policy(ns, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
        # Name resolution for every pod, and only against the cluster DNS.
        policies.append(Policy(ns, "allow-dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [dns_rule]}))
    # Webhooks, API aggregation and controllers in operator namespaces are called by the API server.
    for ns in sorted(operator_namespaces(plan.config)):
        policies.append(
            Policy(
                ns,
                "allow-control-plane",
                {
                    "podSelector": {},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [_ip_rule(net.api_server_cidrs, [443, 6443, 8443, 9443, 10250], "ingress")],
                    "egress": [_ip_rule(*api, "egress")],
                },
            )
        )
    for g in sorted(groups.by_id.values()):
        if g.namespace not in managed_namespaces:
            continue
        outgoing = [e for e in edges if e.source == g.id and e.destination != dns.id]
        incoming = [e for e in edges if e.destination == g.id]
        egress = _rules(outgoing, groups, "egress") + extra_egress[g.id]
        ingress = _rules(incoming, groups, "ingress") + extra_ingress[g.id]
        if not egress and not ingress:
            continue
        policies.append(
            Policy(
                g.namespace,
                f"allow-{g.name}",
                {
                    "podSelector": {"matchLabels": g.selector()},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": ingress,
                    "egress": egress,
                },
            )
        )
    return policies
