"""The network follows from the declared service graph and the charts' wiring, exactly (PCI DSS 1.3, 1.4).

Pure steps:
1. `declared_edges(plan)`: every connection the platform declares, from the plan - service calls, database and
   queue use, replication inside a data cluster, operators reaching what they manage, the gateway, DNS, the API
   server, and the addresses outside the cluster the config names (object store, external endpoints, clients
   of the gateway).
2. `wiring_edges(plan)`: the connections the installed charts and operators need (Prometheus' targets, the API
   server's webhook calls, KEDA's metrics server, Alertmanager's mesh, Grafana's datasources), from facts kept
   here because `pulumi up` does not expand the charts.
3. `namespace_policies(plan, edges)`: per namespace, a default deny (ingress and egress) plus one policy per
   pod group that allows exactly its edges of 1 and 2, in both directions.

The offline checks evaluate the rendered policies independently (`infra.offline.reachability`), derive the
charts' wiring from the rendered objects (`infra.offline.wiring`), and must arrive back at exactly 1 + 2.
Peers are namespace + pod labels, or an address block; no rule selects "all namespaces".
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
# A peer outside the pod network, as an edge end: "external 203.0.113.0/24".
EXTERNAL = "external "

# What the operators' charts and release manifests wire together, as facts the generator needs at `pulumi up`
# (the chart expansion is offline-only). Each is checked offline against the rendered charts: the offline
# reachability test derives the same connections from the rendered objects (infra/offline/wiring.py) and fails
# when a fact here drifts from them - a renamed label selects no pod, a moved port leaves a derived edge unallowed.
PROMETHEUS_WEB_PORT = 9090
CONFIG_RELOADER_PORT = 8080  # prometheus-operator v0.93.0 pkg/operator/config_reloader.go, `reloader-web`
ALERTMANAGER_WEB_PORT = 9093
ALERTMANAGER_MESH_PORT = 9094  # TCP and UDP: pkg/alertmanager/statefulset.go, mesh-tcp / mesh-udp
PROMETHEUS_OPERATOR_PORT = 10250  # kps templates/prometheus-operator/deployment.yaml, `https` (web + webhooks)
GRAFANA_PORT = 3000  # kps charts/grafana templates/_pod.tpl, container port `grafana`
KUBE_STATE_METRICS_PORT = 8080  # kps charts/kube-state-metrics templates/deployment.yaml, `http`
CERT_MANAGER_METRICS_PORT = 9402  # cert-manager v1.21.1 templates/*deployment.yaml, `http-metrics`
CERT_MANAGER_WEBHOOK_PORT = 10250  # templates/webhook-deployment.yaml, `--secure-port`
KEDA_METRICS_SERVICE_PORT = 9666  # keda 2.20.2 templates/manager/deployment.yaml, `metricsservice`
KEDA_METRICS_API_PORT = 6443  # templates/metrics-server/deployment.yaml, `--secure-port`
WEBHOOK_PORT = 9443  # cnpg, RabbitMQ operators, KEDA admission, Envoy Gateway: `webhook-server` / `http` / `webhook`
COREDNS_METRICS_PORT = 9153  # the cluster DNS (CoreDNS): kps ServiceMonitor kube-prometheus-stack-coredns
NODE_EXPORTER_PORT = 9100  # hostNetwork: kps charts/prometheus-node-exporter templates/daemonset.yaml
KUBELET_PORT = 10250  # the kubelet Service prometheus-operator keeps (pkg/kubelet/controller.go, https-metrics)

# The Istio ambient mesh (istio/istio 1.30.3; the enrolment and authorisation rules are in infra/mesh.py).
# HBONE: between two enrolled pods a connection leaves the caller's network namespace as TCP to the callee pod's IP
# on 15008, from the caller pod's own IP (architecture/ambient/ztunnel.md; ztunnel opens its sockets inside the
# pod's network namespace), so NetworkPolicies see 15008 between enrolled pods, never the application port.
HBONE_PORT = 15008
# Kubelet probes of enrolled pods are SNATed to this link-local address (cni/pkg/nodeagent/options.go
# `DefaultHostProbeSNATIP`; istio.io docs/ambient/usage/networkpolicy: allow it in deny-by-default ingress).
PROBE_SNAT_CIDR = "169.254.7.127/32"
# manifests/charts/istio-control/istio-discovery templates/deployment.yaml and service.yaml; ztunnel's
# CA_ADDRESS/XDS_ADDRESS default to istiod.<namespace>.svc:15012 (manifests/charts/ztunnel templates/daemonset.yaml).
ISTIOD_XDS_TLS_PORT = 15012
ISTIOD_WEBHOOK_PORT = 15017  # Service istiod 443 -> 15017: the validation and injection webhooks
ISTIOD_MONITORING_PORT = 15014  # http-monitoring, /metrics
ZTUNNEL_STATS_PORT = 15020  # ztunnel-stats, /metrics (manifests/charts/ztunnel/templates/daemonset.yaml)
# The gateway's proxies join the mesh too (an EnvoyProxy labels their pods and names their ServiceAccount,
# components/gateway.py). Their kubelet probes (envoyproxy/gateway v1.9.0 internal/infrastructure/kubernetes/proxy/
# resource.go): envoy on EnvoyReadinessPort 19003 (internal/xds/bootstrap/bootstrap.go), the shutdown-manager
# sidecar on ShutdownManagerPort 19002 (internal/cmd/envoy/shutdown_manager.go).
ENVOY_PROXY_SERVICE_ACCOUNT = f"envoy-{GATEWAY_NAME}"
ENVOY_PROBE_PORTS = (19002, 19003)


def chart_pods(plan: PlatformPlan) -> dict[str, tuple[str, str, dict[str, str]]]:
    """Pods the operators run, by role: (namespace, group name, selector). Chart pods are selected by their
    workload's `spec.selector` (immutable on a Deployment, so charts keep it across versions; `instance` is the
    release name, which components/helm_operator.py sets to the chart's name); operator-created pods by the
    labels their operator sets. Sources, at the pinned versions (../shared/charts unless a repository is named):
    cloudnative-pg-0.29.0 and plugin-barman-cloud-0.7.0 templates/deployment.yaml; keda-2.20.2
    templates/{manager,metrics-server,webhooks}/deployment.yaml; cert-manager-v1.21.1
    templates/{deployment,cainjector-deployment,webhook-deployment}.yaml; gateway-helm-v1.9.0
    templates/envoy-gateway-deployment.yaml; kube-prometheus-stack-88.5.3 templates/prometheus-operator/
    deployment.yaml, charts/grafana templates/_helpers.tpl (selectorLabels), charts/kube-state-metrics
    templates/_helpers.tpl; the RabbitMQ operators' Deployments in cluster-operator.yml v2.22.3 and
    messaging-topology-operator-with-certmanager.yaml v1.20.1; prometheus-operator v0.93.0
    pkg/operator/kubernetes.go (Prometheus and Alertmanager pods); envoyproxy/gateway v1.9.0
    internal/infrastructure/kubernetes/proxy/resource.go (proxy pods, in the controller's namespace)."""
    ops = plan.config.infrastructure.operators
    cnpg, barman, keda, cm = ops.cloudnative_pg, ops.barman_cloud, ops.keda, ops.cert_manager
    eg, mon = ops.envoy_gateway, ops.monitoring

    def chart(install, name: str, **extra: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": install.chart, **extra}

    def cert_manager(name: str, component: str) -> tuple[str, str, dict[str, str]]:
        group_name = "cert-manager" if component == "controller" else f"cert-manager-{name}"
        return cm.namespace, group_name, chart(cm, name, **{"app.kubernetes.io/component": component})

    def operator_created(app: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": app, "app.kubernetes.io/managed-by": "prometheus-operator"}

    pods = {
        "cnpg": (cnpg.namespace, "cloudnative-pg", chart(cnpg, "cloudnative-pg")),
        "barman": (barman.namespace, "plugin-barman-cloud", chart(barman, "plugin-barman-cloud")),
        "rabbitmq-cluster-operator": (
            ops.rabbitmq_cluster_operator.namespace,
            "rabbitmq-cluster-operator",
            {"app.kubernetes.io/name": "rabbitmq-cluster-operator"},
        ),
        "rabbitmq-topology-operator": (
            ops.rabbitmq_topology_operator.namespace,
            "messaging-topology-operator",
            {"app.kubernetes.io/name": "messaging-topology-operator"},
        ),
        "keda": (keda.namespace, "keda-operator", {"app": "keda-operator"}),
        "keda-metrics-apiserver": (
            keda.namespace,
            "keda-operator-metrics-apiserver",
            {"app": "keda-operator-metrics-apiserver"},
        ),
        "keda-admission": (keda.namespace, "keda-admission-webhooks", {"app": "keda-admission-webhooks"}),
        "cert-manager": cert_manager("cert-manager", "controller"),
        "cert-manager-cainjector": cert_manager("cainjector", "cainjector"),
        "cert-manager-webhook": cert_manager("webhook", "webhook"),
        "envoy-gateway": (eg.namespace, "envoy-gateway", chart(eg, eg.chart, **{"control-plane": "envoy-gateway"})),
        "prometheus": (mon.namespace, "prometheus", operator_created("prometheus")),
        "alertmanager": (mon.namespace, "alertmanager", operator_created("alertmanager")),
        "prometheus-operator": (
            mon.namespace,
            "prometheus-operator",
            {"app": f"{mon.chart}-operator", "release": mon.chart},
        ),
        "grafana": (mon.namespace, "grafana", chart(mon, "grafana")),
        "kube-state-metrics": (mon.namespace, "kube-state-metrics", chart(mon, "kube-state-metrics")),
    }
    mesh = plan.config.mesh
    if mesh.enabled:
        # The workloads' selectors (istio/istio 1.30.3 manifests/charts: istio-control/istio-discovery
        # templates/deployment.yaml, istio-cni templates/daemonset.yaml, ztunnel templates/daemonset.yaml).
        pods["istiod"] = (mesh.namespace, "istiod", {"istio": "pilot"})
        pods["ztunnel"] = (mesh.node_namespace, "ztunnel", {"app": "ztunnel"})
        pods["istio-cni"] = (mesh.node_namespace, "istio-cni-node", {"k8s-app": "istio-cni-node"})
    if any(s.expose for s in plan.services()):
        pods["envoy"] = (
            eg.namespace,
            "envoy-proxy",
            {
                "app.kubernetes.io/name": "envoy",
                "app.kubernetes.io/component": "proxy",
                "app.kubernetes.io/managed-by": "envoy-gateway",
                "gateway.envoyproxy.io/owning-gateway-name": GATEWAY_NAME,
                "gateway.envoyproxy.io/owning-gateway-namespace": plan.config.gateway.namespace,
            },
        )
    return pods


# The API server calls these pods (role -> port): admission webhooks and the external metrics APIService.
API_SERVER_CALLS = {
    "cnpg": WEBHOOK_PORT,
    "rabbitmq-cluster-operator": WEBHOOK_PORT,
    "rabbitmq-topology-operator": WEBHOOK_PORT,
    "keda-admission": WEBHOOK_PORT,
    "keda-metrics-apiserver": KEDA_METRICS_API_PORT,
    "cert-manager-webhook": CERT_MANAGER_WEBHOOK_PORT,
    "envoy-gateway": WEBHOOK_PORT,
    "prometheus-operator": PROMETHEUS_OPERATOR_PORT,
}
# With the mesh: the same for istiod's webhooks, and Prometheus scraping the mesh (infra/mesh_monitoring.py).
MESH_API_SERVER_CALLS = {"istiod": ISTIOD_WEBHOOK_PORT}
MESH_SCRAPES = {"istiod": (ISTIOD_MONITORING_PORT,), "ztunnel": (ZTUNNEL_STATS_PORT,)}
# What Prometheus scrapes among the charts' pods (role -> ports): the charts' own ServiceMonitors.
CHART_SCRAPES = {
    "cert-manager": (CERT_MANAGER_METRICS_PORT,),
    "cert-manager-cainjector": (CERT_MANAGER_METRICS_PORT,),
    "cert-manager-webhook": (CERT_MANAGER_METRICS_PORT,),
    "prometheus-operator": (PROMETHEUS_OPERATOR_PORT,),
    "grafana": (GRAFANA_PORT,),
    "kube-state-metrics": (KUBE_STATE_METRICS_PORT,),
    "prometheus": (PROMETHEUS_WEB_PORT, CONFIG_RELOADER_PORT),
    "alertmanager": (ALERTMANAGER_WEB_PORT, CONFIG_RELOADER_PORT),
    "dns": (COREDNS_METRICS_PORT,),
}


@dataclass(frozen=True, order=True)
class PodGroup:
    """Pods the platform can name: a namespace and the labels that select them (none: every pod there)."""

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


# The group of every pod in a namespace (hook Jobs included): what allow-dns and allow-control-plane select.
EVERY_POD = "*"


@dataclass(frozen=True, order=True)
class Edge:
    source: str
    """A group id, or `external <cidr>`."""
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
    namespaces: dict[str, PodGroup] = field(default_factory=dict)
    """Every pod of each namespace the platform creates."""


def managed_namespaces(plan: PlatformPlan) -> list[str]:
    return sorted({sub.namespace for sub in plan.subsystems.values()} | infrastructure_namespaces(plan.config))


def pod_groups(plan: PlatformPlan) -> Groups:
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
    infra = {"dns": group(net.dns_namespace, "dns", net.dns_pod_labels)}
    for role, (namespace, name, labels) in chart_pods(plan).items():
        infra[role] = group(namespace, name, labels)
    if plan.config.gateway.acme_email is not None:
        infra["acme-solver"] = group(
            plan.config.gateway.namespace, "acme-http01-solver", {"acme.cert-manager.io/http01-solver": "true"}
        )
    namespaces = {ns: group(ns, EVERY_POD, {}) for ns in managed_namespaces(plan)}
    everything = [*services.values(), *databases.values(), *queues.values(), *infra.values(), *namespaces.values()]
    return Groups({g.id: g for g in everything}, services, databases, queues, infra, namespaces)


def _externals(cidrs: list[str]) -> list[str]:
    return [f"{EXTERNAL}{c}" for c in cidrs]


def declared_edges(plan: PlatformPlan, groups: Groups) -> set[Edge]:
    """Every connection the service graph and the config declare: service calls, database and queue use,
    replication inside a data cluster, operators reaching what they manage, the gateway, DNS, the API server,
    and the addresses outside the cluster the config names."""
    edges: set[Edge] = set()
    infra = groups.infra
    net = plan.config.network

    def add(src: PodGroup | str, dst: PodGroup | str, port: int, end_port: int | None = None, protocol="TCP"):
        src_id = src if isinstance(src, str) else src.id
        dst_id = dst if isinstance(dst, str) else dst.id
        edges.add(Edge(src_id, dst_id, port, end_port, protocol))

    def add_out(src: PodGroup, cidrs: list[str], ports: list[int]) -> None:
        for cidr in _externals(cidrs):
            for port in ports:
                add(src, cidr, port)

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
        if svc.expose is not None:
            add(infra["envoy"], me, svc.port)
        for endpoint in svc.egress.values():
            add_out(me, endpoint.cidrs, endpoint.ports)

    for db in groups.databases.values():
        add(db, db, POSTGRES_PORT)  # streaming replication
        add(db, db, POSTGRES_STATUS_PORT)  # instance manager status during failover
        add(infra["cnpg"], db, POSTGRES_STATUS_PORT)
        if plan.config.backup is not None:
            add_out(db, net.object_store_cidrs, [443])
        dr = plan.config.dr
        if dr is not None:
            # The other site's object store (README "Disaster recovery"): this site's members read its WAL and
            # base backups there, through the addresses that site declares reachable from here - a VPC endpoint for
            # S3 serves its own region, so this site's network.objectStoreCidrs do not reach the other's bucket.
            for name, site in sorted(dr.sites.items()):
                if name != dr.site:
                    add_out(db, site.object_store_cidrs, [443])
        if dr is not None and dr.streaming:
            # TLS streaming between the sites' databases (README "Disaster recovery"): this site's members
            # stream from the other site's, and the other's from this one's, whichever is primary.
            for name, site in sorted(dr.sites.items()):
                if name != dr.site:
                    add_out(db, site.postgres_addresses, [POSTGRES_PORT])
                    for cidr in _externals(site.postgres_addresses):
                        add(cidr, db, POSTGRES_PORT)
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
    for g in [*groups.databases.values(), *groups.queues.values()]:
        # Instance managers and RabbitMQ's peer discovery read the Kubernetes API.
        add_out(g, net.api_server_cidrs, net.api_server_ports)

    if "envoy" in infra:
        add(infra["envoy"], infra["envoy-gateway"], ENVOY_XDS_PORT)
        # The gateway's proxies are the one entry point from outside the cluster.
        for port in (ENVOY_HTTP_PORT, ENVOY_HTTPS_PORT):
            add(f"{EXTERNAL}0.0.0.0/0", infra["envoy"], port)
    if "acme-solver" in infra:
        add(infra["envoy"], infra["acme-solver"], ACME_SOLVER_PORT)
        # ACME: the controller talks to Let's Encrypt over HTTPS, and before that checks the HTTP-01 challenge
        # itself at `http://<hostname>/.well-known/acme-challenge/...` (cert-manager pkg/issuer/acme/http/http.go,
        # the self check), i.e. port 80 of the addresses the public hostname resolves to.
        add_out(infra["cert-manager"], ["0.0.0.0/0"], [443])
        add_out(infra["cert-manager"], plan.config.gateway.public_addresses, [80])
    for endpoint in plan.config.alerting.egress.values():
        add_out(infra["alertmanager"], endpoint.cidrs, endpoint.ports)

    # Every pod resolves names, against the cluster DNS only; in operator namespaces every pod (controllers and
    # hook jobs) calls the API server.
    operators = operator_namespaces(plan.config)
    for ns, every in groups.namespaces.items():
        add(every, infra["dns"], DNS_PORT, protocol="UDP")
        add(every, infra["dns"], DNS_PORT, protocol="TCP")
        if ns in operators:
            add_out(every, net.api_server_cidrs, net.api_server_ports)
    return edges


def wiring_edges(plan: PlatformPlan, groups: Groups) -> set[Edge]:
    """The connections the installed charts and operators need, from the facts above: Prometheus scraping what
    the ServiceMonitors and PodMonitors select, the API server calling webhooks, KEDA's metrics server calling
    its operator, Alertmanager's mesh, Grafana's datasources. The offline checker derives the same set from the
    rendered objects."""
    edges: set[Edge] = set()
    infra, net = groups.infra, plan.config.network
    prometheus, alertmanager, grafana = infra["prometheus"], infra["alertmanager"], infra["grafana"]

    def add(src: str, dst: str, port: int, protocol: str = "TCP") -> None:
        edges.add(Edge(src, dst, port, None, protocol))

    for svc in plan.services():
        add(prometheus.id, groups.services[(svc.subsystem, svc.name)].id, svc.metrics_port)
    for db in groups.databases.values():
        add(prometheus.id, db.id, POSTGRES_METRICS_PORT)
    for mq in groups.queues.values():
        add(prometheus.id, mq.id, RABBITMQ_PROMETHEUS_TLS_PORT)
    for role, ports in CHART_SCRAPES.items():
        for port in ports:
            add(prometheus.id, infra[role].id, port)
    for cidr in _externals(net.node_cidrs):
        add(prometheus.id, cidr, NODE_EXPORTER_PORT)  # node-exporter runs on the nodes' network
        add(prometheus.id, cidr, KUBELET_PORT)
    add(prometheus.id, alertmanager.id, ALERTMANAGER_WEB_PORT)  # Prometheus' spec.alerting
    add(grafana.id, prometheus.id, PROMETHEUS_WEB_PORT)  # Grafana's datasources
    add(grafana.id, alertmanager.id, ALERTMANAGER_WEB_PORT)
    if plan.config.monitoring.alertmanager_replicas > 1:
        for protocol in ("TCP", "UDP"):
            add(alertmanager.id, alertmanager.id, ALERTMANAGER_MESH_PORT, protocol)
    add(infra["keda-metrics-apiserver"].id, infra["keda"].id, KEDA_METRICS_SERVICE_PORT)
    api_calls, scrapes = dict(API_SERVER_CALLS), {}
    if plan.config.mesh.enabled:
        api_calls |= MESH_API_SERVER_CALLS
        scrapes = MESH_SCRAPES
        add(infra["ztunnel"].id, infra["istiod"].id, ISTIOD_XDS_TLS_PORT)  # certificates and xDS
    for role, ports in scrapes.items():
        for port in ports:
            add(prometheus.id, infra[role].id, port)
    for role, port in api_calls.items():
        for cidr in _externals(net.api_server_cidrs):
            add(cidr, infra[role].id, port)
    return edges


def mesh_members(plan: PlatformPlan, groups: Groups) -> dict[str, str]:
    """Enrolled pod groups (group id -> SPIFFE principal `cluster.local/ns/<namespace>/sa/<service account>`;
    the trust domain is istiod's meshConfig.trustDomain default): every service, whose ServiceAccount is its own
    name (components/workload.py), and the gateway's proxies. Database and queue pods stay out (infra/mesh.py
    says why)."""
    if not plan.config.mesh.enabled:
        return {}
    enrolled = {g.id: principal(g.namespace, g.name) for g in groups.services.values()}
    if "envoy" in groups.infra:
        envoy = groups.infra["envoy"]
        enrolled[envoy.id] = principal(envoy.namespace, ENVOY_PROXY_SERVICE_ACCOUNT)
    return enrolled


def principal(namespace: str, service_account: str) -> str:
    return f"cluster.local/ns/{namespace}/sa/{service_account}"


def transport(plan: PlatformPlan, groups: Groups, edges: set[Edge]) -> set[Edge]:
    """The edges as the network sees them once the mesh is on: between enrolled pods HBONE (15008) instead of
    the application port (callers outside the mesh keep it); kubelet probes of enrolled pods from the SNAT
    address, on the port the probes use (the service's own, components/workload.py)."""
    enrolled = mesh_members(plan, groups)
    out = {
        Edge(e.source, e.destination, HBONE_PORT) if {e.source, e.destination} <= set(enrolled) else e for e in edges
    }
    if enrolled:
        for svc in plan.services():
            out.add(Edge(f"{EXTERNAL}{PROBE_SNAT_CIDR}", groups.services[(svc.subsystem, svc.name)].id, svc.port))
        if "envoy" in groups.infra:
            for port in ENVOY_PROBE_PORTS:
                out.add(Edge(f"{EXTERNAL}{PROBE_SNAT_CIDR}", groups.infra["envoy"].id, port))
    return out


# --- From edges to NetworkPolicies --------------------------------------------------------------------------


def _peer(peer: str, groups: Groups) -> dict:
    if peer.startswith(EXTERNAL):
        return {"ipBlock": {"cidr": peer.removeprefix(EXTERNAL)}}
    g = groups.by_id[peer]
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: g.namespace}},
        "podSelector": {"matchLabels": g.selector()},
    }


def _port(edge: Edge) -> dict:
    port = {"protocol": edge.protocol, "port": edge.port}
    if edge.end_port is not None:
        port["endPort"] = edge.end_port
    return port


def _rules(edges: list[Edge], groups: Groups, direction: str) -> list[dict]:
    """One rule per peer, listing its ports: `to` peers for egress, `from` peers for ingress."""
    by_peer: dict[str, list[Edge]] = defaultdict(list)
    for e in edges:
        by_peer[e.destination if direction == "egress" else e.source].append(e)
    key = "to" if direction == "egress" else "from"
    # Pods first, then addresses.
    return [
        {key: [_peer(peer, groups)], "ports": [_port(e) for e in sorted(set(by_peer[peer]))]}
        for peer in sorted(by_peer, key=lambda p: (p.startswith(EXTERNAL), p))
    ]


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    spec: dict


def namespace_policies(plan: PlatformPlan, groups: Groups, declared: set[Edge]) -> list[Policy]:
    """Default deny plus exact allows, for every namespace the platform creates, of the `declared` edges and the
    charts' wiring (`wiring_edges`, added here so no caller can forget it)."""
    edges = transport(plan, groups, set(declared) | wiring_edges(plan, groups))
    return policies_for(managed_namespaces(plan), groups, edges)


def policies_for(managed: list[str], groups: Groups, edges: set[Edge]) -> list[Policy]:
    """Default deny plus exact allows of `edges`, in each of the `managed` namespaces."""
    everywhere = set(groups.namespaces.values())
    # Each edge filed under both its ends once: a scan of every edge per pod group is quadratic in the services.
    outgoing_of: dict[str, list[Edge]] = defaultdict(list)
    incoming_of: dict[str, list[Edge]] = defaultdict(list)
    for e in edges:
        outgoing_of[e.source].append(e)
        incoming_of[e.destination].append(e)
    policies = []
    # Namespace-wide allows (every pod, hook Jobs included): allow-dns, and allow-control-plane in operator
    # namespaces for the API server.
    for ns in managed:
        every = groups.namespaces[ns]
        policies.append(Policy(ns, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))
        outgoing = outgoing_of.get(every.id, [])
        dns_id = groups.infra["dns"].id
        dns = [e for e in outgoing if e.destination == dns_id]
        api = [e for e in outgoing if e not in dns]
        policies.append(
            Policy(
                ns, "allow-dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": _rules(dns, groups, "egress")}
            )
        )
        if api:
            policies.append(
                Policy(
                    ns,
                    "allow-control-plane",
                    {"podSelector": {}, "policyTypes": ["Egress"], "egress": _rules(api, groups, "egress")},
                )
            )
    for g in sorted(groups.by_id.values()):
        if g.namespace not in managed or g in everywhere:
            continue
        egress = _rules(outgoing_of.get(g.id, []), groups, "egress")
        ingress = _rules(incoming_of.get(g.id, []), groups, "ingress")
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
