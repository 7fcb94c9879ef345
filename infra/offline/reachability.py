"""Who can open a connection to whom: Kubernetes NetworkPolicy semantics evaluated over rendered objects.

This model knows nothing of how the policies were generated. It takes the rendered NetworkPolicies, the
rendered Namespaces' labels and the pods that will exist - every Deployment, StatefulSet, DaemonSet and Job
template the program and its Helm charts render, and the pods operators create for rendered custom resources
(PostgreSQL and RabbitMQ clusters, Prometheus, Alertmanager, Gateways, ACME challenges), each with its labels and
container ports - and answers, per port and protocol, whether a connection is allowed: between pods both the
source's egress and the destination's ingress must allow it; to or from an address outside the pod network
(`external <cidr>`: the API server, the nodes, the internet) only the pod's side decides. It is the answer to
an auditor's "who can reach the payment database?".
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from dataclasses import dataclass

from infra import drill
from infra.network import EXTERNAL, NAMESPACE_LABEL
from infra.offline.mocks import ProgramRun
from infra.topology import PlatformPlan

PROTOCOLS = ("TCP", "UDP")


Port = tuple[str | None, int, str]  # (name, number, protocol) of a container port


@dataclass(frozen=True)
class Pod:
    id: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[Port, ...] = ()
    host_network: bool = False
    """On the node's own network: addressed by the node's IPs, outside every NetworkPolicy's pod selector."""
    service_account: str = "default"
    """Its identity in the mesh (infra/offline/mesh_layer.py)."""

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def port(self, ref: int | str) -> list[tuple[int, str]]:
        """A container port by name (every protocol it is declared with) or by number (as TCP)."""
        if isinstance(ref, int):
            found = [(n, proto) for _, n, proto in self.ports if n == ref]
            return found or [(ref, "TCP")]
        return [(n, proto) for name, n, proto in self.ports if name == ref]


def _pod(
    namespace: str,
    name: str,
    labels: dict[str, str],
    ports: list[Port] = (),
    host_network: bool = False,
    service_account: str = "default",
) -> Pod:
    return Pod(
        f"{namespace}/{name}", namespace, tuple(sorted(labels.items())), tuple(ports), host_network, service_account
    )


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

# Pods operators create at run time, from their custom resources: what the pinned versions put on them.
# CloudNativePG v1.30.0 pkg/specs/pods.go: container ports of every instance pod.
CNPG_INSTANCE_PORTS: list[Port] = [("postgresql", 5432, "TCP"), ("metrics", 9187, "TCP"), ("status", 8000, "TCP")]
# RabbitMQ cluster-operator v2.22.3 internal/resource/statefulset.go (updateContainerPorts): epmd and the TLS
# listeners always, the plain ones unless `tls.disableNonTLSListeners`; internal/metadata/label.go for labels.
RABBITMQ_TLS_PORTS: list[Port] = [
    ("amqps", 5671, "TCP"),
    ("management-tls", 15671, "TCP"),
    ("prometheus-tls", 15691, "TCP"),
]
RABBITMQ_PLAIN_PORTS: list[Port] = [("amqp", 5672, "TCP"), ("management", 15672, "TCP"), ("prometheus", 15692, "TCP")]
# prometheus-operator v0.93.0: pkg/operator/kubernetes.go (the app.kubernetes.io labels),
# pkg/prometheus/server/statefulset.go and pkg/alertmanager/statefulset.go (web port named spec.portName, the
# Alertmanager mesh 9094 as mesh-tcp and mesh-udp), pkg/operator/config_reloader.go (reloader-web 8080). The
# StatefulSets are named prometheus-<name> and alertmanager-<name>.
PROMETHEUS_WEB_PORT, ALERTMANAGER_WEB_PORT, ALERTMANAGER_MESH_PORT, CONFIG_RELOADER_PORT = 9090, 9093, 9094, 8080
# Envoy Gateway v1.9.0: internal/infrastructure/kubernetes/proxy/resource.go (labels, the stats port 19001 named
# metrics) and internal/gatewayapi/listener.go (a listener port below 1024 listens on port + 10000 in the pod).
# Proxies run in the controller's namespace, in a Deployment envoy-<gateway namespace>-<gateway name>-<hash>.
ENVOY_STATS_PORT = 19001
# The envoy container's readiness port (bootstrap.EnvoyReadinessPort, declared as `readiness`), and the ports the
# kubelet probes: envoy on 19003, the shutdown-manager sidecar on ShutdownManagerPort 19002
# (internal/cmd/envoy/shutdown_manager.go).
ENVOY_READINESS_PORT = 19003
ENVOY_PROBE_PORTS = (19002, 19003)
# cert-manager v1.21.1 pkg/issuer/acme/http/pod.go and http.go: solver pods in the challenge's (the
# Certificate's) namespace, listening on 8089.
ACME_SOLVER_PORT = 8089
# The cluster's DNS (CoreDNS as kube-dns: kubernetes cluster/addons/dns/coredns): 53 UDP+TCP, metrics 9153.
DNS_PORTS: list[Port] = [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]


def _template_pod(obj: dict) -> Pod:
    meta = obj["metadata"]
    spec = obj["spec"]["template"]
    pod_spec = spec["spec"]
    ports = [
        (p.get("name"), p["containerPort"], p.get("protocol", "TCP"))
        for c in pod_spec.get("containers") or []
        for p in c.get("ports") or []
    ]
    labels = (spec.get("metadata") or {}).get("labels") or {}
    return _pod(
        meta["namespace"],
        meta["name"],
        labels,
        ports,
        bool(pod_spec.get("hostNetwork")),
        pod_spec.get("serviceAccountName") or "default",
    )


def _operator_pods(obj: dict, envoy_namespace: str, proxies: dict[str, dict] | None = None) -> list[Pod]:
    """The pods an operator creates for one of its custom resources (none for other kinds). `proxies`: the
    EnvoyProxy spec of each GatewayClass that names one (its pod labels and ServiceAccount apply to the proxies,
    Envoy Gateway v1.9.0 internal/infrastructure/kubernetes/proxy/resource_provider.go)."""
    meta, kind, spec = obj["metadata"], obj["kind"], obj.get("spec") or {}
    name, ns = meta["name"], meta.get("namespace")
    if kind == "Cluster" and obj["apiVersion"].startswith("postgresql.cnpg.io/"):
        inherited = spec.get("inheritedMetadata", {}).get("labels", {})
        labels = {**inherited, "cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}
        return [_pod(ns, name, labels, CNPG_INSTANCE_PORTS)]
    if kind == "RabbitmqCluster":
        # spec.override.statefulSet.spec.template.metadata labels are copied onto the pods' (cluster-operator
        # v2.22.3 internal/resource/statefulset.go applyStsOverride, copyObjectMeta).
        template = (((spec.get("override") or {}).get("statefulSet") or {}).get("spec") or {}).get("template") or {}
        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/component": "rabbitmq",
            "app.kubernetes.io/part-of": "rabbitmq",
        }
        tls = spec.get("tls") or {}
        ports = [("epmd", 4369, "TCP")]
        ports += [] if tls.get("disableNonTLSListeners") else RABBITMQ_PLAIN_PORTS
        ports += RABBITMQ_TLS_PORTS if tls.get("secretName") else []
        return [_pod(ns, name, labels, ports)]
    if kind in ("Prometheus", "Alertmanager") and obj["apiVersion"].startswith("monitoring.coreos.com/"):
        app = kind.lower()
        labels = {
            **((spec.get("podMetadata") or {}).get("labels") or {}),
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "prometheus-operator",
            app: name,
            "operator.prometheus.io/name": name,
        }
        web = PROMETHEUS_WEB_PORT if kind == "Prometheus" else ALERTMANAGER_WEB_PORT
        ports: list[Port] = [] if spec.get("listenLocal") else [(spec.get("portName", "web"), web, "TCP")]
        if kind == "Alertmanager":
            ports += [("mesh-tcp", ALERTMANAGER_MESH_PORT, "TCP"), ("mesh-udp", ALERTMANAGER_MESH_PORT, "UDP")]
        ports.append(("reloader-web", CONFIG_RELOADER_PORT, "TCP"))
        return [_pod(ns, f"{app}-{name}", labels, ports)]
    if kind == "Gateway" and obj["apiVersion"].startswith("gateway.networking.k8s.io/"):
        kube = (((proxies or {}).get(spec.get("gatewayClassName")) or {}).get("provider") or {}).get("kubernetes") or {}
        pod = (kube.get("envoyDeployment") or {}).get("pod") or {}
        labels = {
            **(pod.get("labels") or {}),
            "app.kubernetes.io/name": "envoy",
            "app.kubernetes.io/component": "proxy",
            "app.kubernetes.io/managed-by": "envoy-gateway",
            "gateway.envoyproxy.io/owning-gateway-name": name,
            "gateway.envoyproxy.io/owning-gateway-namespace": ns,
        }
        listeners = {x["port"] + 10000 if x["port"] < 1024 else x["port"] for x in spec.get("listeners") or []}
        ports = [(None, p, "TCP") for p in sorted(listeners)] + [("metrics", ENVOY_STATS_PORT, "TCP")]
        ports.append(("readiness", ENVOY_READINESS_PORT, "TCP"))
        account = (kube.get("envoyServiceAccount") or {}).get("name") or "default"
        return [_pod(envoy_namespace, f"envoy-{ns}-{name}", labels, ports, service_account=account)]
    return []


def inventory(run: ProgramRun, plan: PlatformPlan) -> list[Pod]:
    """The pods the rendered stack will run, with their labels and ports: every workload template the program
    and its charts render, and the pods operators create for rendered custom resources. From the plan only
    facts about the cluster and where operators run: the cluster DNS, the Envoy Gateway controller's namespace."""
    net = plan.config.network
    envoy_namespace = plan.config.infrastructure.operators.envoy_gateway.namespace
    pods = [_pod(net.dns_namespace, "dns", net.dns_pod_labels, DNS_PORTS)]
    if plan.config.drill is not None:
        # A drill stack's render holds the drill alone; the operator it relies on is another stack's pod.
        pods += [_pod(g.namespace, g.name, g.selector()) for g in drill.foreign_pods(plan)]
    objects = run.all_objects()
    envoy_proxies = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"] for o in objects if o["kind"] == "EnvoyProxy"
    }
    proxies = {}
    for o in objects:
        ref = (o.get("spec") or {}).get("parametersRef") or {} if o["kind"] == "GatewayClass" else {}
        if ref.get("kind") == "EnvoyProxy":
            proxies[o["metadata"]["name"]] = envoy_proxies.get((ref.get("namespace", "default"), ref["name"]))
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            pods.append(_template_pod(obj))
        else:
            pods.extend(_operator_pods(obj, envoy_namespace, proxies))
    # A ClusterIssuer with an ACME HTTP-01 solver: cert-manager runs solver pods for each challenge of a
    # Certificate it issues.
    acme = {o["metadata"]["name"] for o in objects if o["kind"] == "ClusterIssuer" and "acme" in o["spec"]}
    solver_namespaces = {
        o["metadata"]["namespace"]
        for o in objects
        if o["kind"] == "Certificate"
        and o["spec"]["issuerRef"].get("kind") == "ClusterIssuer"
        and o["spec"]["issuerRef"]["name"] in acme
    }
    for ns in sorted(solver_namespaces):
        pods.append(
            _pod(
                ns,
                "acme-http01-solver",
                {"acme.cert-manager.io/http01-solver": "true"},
                [("http", ACME_SOLVER_PORT, "TCP")],
            )
        )
    return sorted(pods, key=lambda p: p.id)


def namespace_labels(run: ProgramRun) -> dict[str, dict[str, str]]:
    labels: dict[str, dict[str, str]] = defaultdict(dict)
    for ns in run.objects("Namespace"):
        labels[ns["metadata"]["name"]] = dict(ns["metadata"].get("labels", {}))
    return labels


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """Label selector semantics: an empty selector selects everything."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and present and labels[key] in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return True


Connection = tuple[str, str, int, str]
"""(source, destination, port, protocol): a pod id, or `external <cidr>` for addresses outside the pod network."""


@functools.cache  # networks are immutable; an audit compares the same few CIDRs many times
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def _by_address(cidrs: set[str]) -> list[str]:
    return sorted(cidrs, key=lambda c: (_network(c).version, _network(c)))


class Model:
    def __init__(self, pods: list[Pod], policies: list[dict], ns_labels: dict[str, dict[str, str]]):
        # hostNetwork pods share their node's addresses: no pod selector applies to them (CNIs do not enforce
        # NetworkPolicy on the host network), so they are reached as the node addresses, not as pods.
        self.pods = [p for p in pods if not p.host_network]
        self.by_id = {p.id: p for p in self.pods}
        self.policies = policies
        self.ns_labels = ns_labels
        self._rules: dict[tuple[str, str], list[dict] | None] = {}

    def _ns_labels(self, namespace: str) -> dict[str, str]:
        # The API server sets this label on every namespace, including those this program does not create.
        return {NAMESPACE_LABEL: namespace, **self.ns_labels.get(namespace, {})}

    def _peer_matches(self, peer: dict, policy_ns: str, other: Pod) -> bool:
        if "ipBlock" in peer:
            return False  # addresses outside the pod network; pods are matched by labels only
        if "namespaceSelector" in peer:
            ns_ok = selects(peer["namespaceSelector"], self._ns_labels(other.namespace))
        else:
            ns_ok = other.namespace == policy_ns
        return ns_ok and selects(peer.get("podSelector"), other.label_map())

    @staticmethod
    def _port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
        if not ports:
            return True
        for p in ports:
            if p.get("protocol", "TCP") != protocol:
                continue
            if "port" not in p:
                return True
            if isinstance(p["port"], str):
                raise ValueError(f"named port {p['port']!r}: the model resolves numbers only")
            if p["port"] <= port <= p.get("endPort", p["port"]):
                return True
        return False

    def _applicable(self, pod: Pod, direction: str) -> list[dict] | None:
        """The `direction` rules that apply to `pod`, or None when no policy isolates it in that direction."""
        key = (pod.id, direction)
        if key not in self._rules:
            kind = "Ingress" if direction == "ingress" else "Egress"
            policies = [
                p
                for p in self.policies
                if p["metadata"]["namespace"] == pod.namespace
                and selects(p["spec"].get("podSelector") or {}, pod.label_map())
                and kind in p["spec"].get("policyTypes", ["Ingress"])
            ]
            self._rules[key] = None if not policies else [r for p in policies for r in p["spec"].get(direction) or []]
        return self._rules[key]

    def _peer_rules(self, direction: str, pod: Pod, other: Pod) -> list[dict] | None:
        """The `direction` rules of `pod` whose peers admit `other` (any port), or None when no policy isolates
        `pod` in that direction."""
        rules = self._applicable(pod, direction)
        if rules is None:
            return None
        peers_key = "from" if direction == "ingress" else "to"
        return [
            rule
            for rule in rules
            if not rule.get(peers_key) or any(self._peer_matches(p, pod.namespace, other) for p in rule[peers_key])
        ]

    def _rules_allow(self, rules: list[dict] | None, port: int, protocol: str) -> bool:
        return rules is None or any(self._port_matches(rule.get("ports"), port, protocol) for rule in rules)

    def allows(self, direction: str, pod: Pod, other: Pod, port: int, protocol: str) -> bool:
        """Does `pod`'s side allow this connection (`direction` ingress: from `other`; egress: to `other`)?"""
        return self._rules_allow(self._peer_rules(direction, pod, other), port, protocol)

    @staticmethod
    def _block_contains(block: dict, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        """An ipBlock peer covers a whole network: inside `cidr`, clear of every `except`."""
        cidr = _network(block["cidr"])
        if cidr.version != network.version or not network.subnet_of(cidr):
            return False
        return not any(network.overlaps(_network(e)) for e in block.get("except") or [])

    def _named_blocks(self, direction: str) -> list[str]:
        peers_key = "from" if direction == "ingress" else "to"
        return _by_address(
            {
                peer["ipBlock"]["cidr"]
                for policy in self.policies
                for rule in policy["spec"].get(direction) or []
                for peer in rule.get(peers_key) or []
                if "ipBlock" in peer
            }
        )

    def external_destinations(self) -> list[str]:
        """Every network an egress ipBlock names: the candidates for connections leaving the pod network."""
        return self._named_blocks("egress")

    def external_sources(self) -> list[str]:
        """Every network an ingress ipBlock names: the API server calling webhooks, clients of the gateway."""
        return self._named_blocks("ingress")

    def _block_rules(self, direction: str, pod: Pod, cidr: str) -> list[dict] | None:
        """The `direction` rules of `pod` whose peers admit every address of `cidr` (any port), or None when no
        policy isolates `pod` in that direction."""
        rules = self._applicable(pod, direction)
        if rules is None:
            return None
        network = _network(cidr)
        peers_key = "from" if direction == "ingress" else "to"
        return [
            rule
            for rule in rules
            if not rule.get(peers_key)
            or any("ipBlock" in p and self._block_contains(p["ipBlock"], network) for p in rule[peers_key])
        ]

    def _allows_block(self, direction: str, pod: Pod, cidr: str, port: int, protocol: str) -> bool:
        """May every address of `cidr` be `pod`'s peer? Only the pod's side decides: the far end is outside the
        pod network, where no NetworkPolicy applies."""
        return self._rules_allow(self._block_rules(direction, pod, cidr), port, protocol)

    def allows_external(self, pod: Pod, cidr: str, port: int, protocol: str) -> bool:
        """May `pod` open a connection to every address of `cidr`?"""
        return self._allows_block("egress", pod, cidr, port, protocol)

    def allows_from_external(self, pod: Pod, cidr: str, port: int, protocol: str) -> bool:
        """May every address of `cidr` open a connection to `pod`?"""
        return self._allows_block("ingress", pod, cidr, port, protocol)

    def reaches(self, connection: Connection) -> bool:
        """Is this one connection allowed? Pod to pod needs both sides; an address only the pod's side."""
        src, dst, port, protocol = connection
        if src.startswith(EXTERNAL):
            return dst in self.by_id and self.allows_from_external(
                self.by_id[dst], src.removeprefix(EXTERNAL), port, protocol
            )
        if src not in self.by_id:
            return False
        if dst.startswith(EXTERNAL):
            return self.allows_external(self.by_id[src], dst.removeprefix(EXTERNAL), port, protocol)
        return dst in self.by_id and (
            self.allows("egress", self.by_id[src], self.by_id[dst], port, protocol)
            and self.allows("ingress", self.by_id[dst], self.by_id[src], port, protocol)
        )

    def probe_ports(self, extra: set[int]) -> set[int]:
        ports = set(extra) | {1, 65535}  # sentinels catch rules that allow every port
        for policy in self.policies:
            for direction in ("ingress", "egress"):
                for rule in policy["spec"].get(direction) or []:
                    for p in rule.get("ports") or []:
                        if isinstance(p.get("port"), int):
                            ports.update(range(p["port"], p.get("endPort", p["port"]) + 1))
        return ports

    def edges(self, extra_ports: set[int] = frozenset()) -> set[Connection]:
        """Every (source pod, destination pod, port, protocol) both sides allow."""
        out = set()
        ports = sorted(self.probe_ports(set(extra_ports)))
        for src in self.pods:
            for dst in self.pods:
                # The peers are matched once per pair, the ports then per probe (what `allows` does, per port).
                egress, ingress = self._peer_rules("egress", src, dst), self._peer_rules("ingress", dst, src)
                if egress == [] or ingress == []:
                    continue  # a side isolated with no rule for this peer: no port passes
                for protocol in PROTOCOLS:
                    for port in ports:
                        if self._rules_allow(egress, port, protocol) and self._rules_allow(ingress, port, protocol):
                            out.add((src.id, dst.id, port, protocol))
        return out

    def external_edges(self, extra_ports: set[int] = frozenset()) -> set[Connection]:
        """Every (source pod, "external <cidr>", port, protocol) the source's egress allows."""
        ports = sorted(self.probe_ports(set(extra_ports)))
        return {
            (src.id, f"{EXTERNAL}{cidr}", port, protocol)
            for cidr in self.external_destinations()
            for src in self.pods
            if (rules := self._block_rules("egress", src, cidr)) != []  # the peers once, then the ports
            for protocol in PROTOCOLS
            for port in ports
            if self._rules_allow(rules, port, protocol)
        }

    def connections(self, namespaces: set[str], extra_ports: set[int] = frozenset()) -> set[Connection]:
        """Every allowed connection - pod to pod, pod to address, address to pod - with a pod end in
        `namespaces` (the rest is not the stack's to judge)."""
        edges = self.edges(extra_ports) | self.external_edges(extra_ports) | self.inbound_external_edges(extra_ports)
        return {
            e for e in edges if any(not end.startswith(EXTERNAL) and end.split("/")[0] in namespaces for end in e[:2])
        }

    def inbound_external_edges(self, extra_ports: set[int] = frozenset()) -> set[Connection]:
        """Every ("external <cidr>", destination pod, port, protocol) the destination's ingress allows."""
        ports = sorted(self.probe_ports(set(extra_ports)))
        return {
            (f"{EXTERNAL}{cidr}", dst.id, port, protocol)
            for cidr in self.external_sources()
            for dst in self.pods
            if (rules := self._block_rules("ingress", dst, cidr)) != []
            for protocol in PROTOCOLS
            for port in ports
            if self._rules_allow(rules, port, protocol)
        }


def destinations(edges: set[Connection], pods: list[Pod]) -> list[str]:
    """What `--to` may name: every pod, every external network, every namespace."""
    names = {p.id for p in pods} | {e[1] for e in edges}
    return sorted(names | {n.split("/")[0] for n in names if not n.startswith(EXTERNAL)})


def expand(edges) -> set[Connection]:
    """Edges (with port ranges) as single-port tuples, comparable with `Model.edges`."""
    return {
        (e.source, e.destination, port, e.protocol) for e in edges for port in range(e.port, (e.end_port or e.port) + 1)
    }


def _covers(wide: str, narrow: str) -> bool:
    """Same pod, or an address block that contains the other."""
    if wide == narrow:
        return True
    if not (wide.startswith(EXTERNAL) and narrow.startswith(EXTERNAL)):
        return False
    w, n = _network(wide.removeprefix(EXTERNAL)), _network(narrow.removeprefix(EXTERNAL))
    return w.version == n.version and n.subnet_of(w)


def explained(edge: Connection, expected: set[Connection]) -> bool:
    """A reachable connection some expected one accounts for: the same, or to/from a block inside an expected
    block (0.0.0.0/0 on 443 accounts for the API server's addresses on 443)."""
    if edge in expected:
        return True
    src, dst, port, protocol = edge
    return any(
        e[2] == port and e[3] == protocol and _covers(e[0], src) and _covers(e[1], dst)
        for e in expected
        if e[0].startswith(EXTERNAL) or e[1].startswith(EXTERNAL)
    )


def matrix(edges: set[Connection], destination: str | None = None, why=None) -> str:
    """Markdown: for each destination, who may connect and on which ports; with `why` (connection -> reasons),
    a column saying why, one row per source and set of reasons."""
    inbound: dict[str, dict[tuple[str, tuple[str, ...]], set[str]]] = defaultdict(lambda: defaultdict(set))
    for edge in edges:
        src, dst, port, protocol = edge
        if destination is None or dst == destination or dst.startswith(f"{destination}/"):
            reasons = tuple(why(edge)) if why else ()
            inbound[dst][(src, reasons)].add(f"{port}/{protocol}")
    header = ["destination", "may be reached by", "ports"] + (["why"] if why else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # Pods first, then the networks outside the cluster.
    for dst in sorted(inbound, key=lambda d: (d.startswith(EXTERNAL), d)):
        for src, reasons in sorted(inbound[dst]):
            ports = sorted(inbound[dst][(src, reasons)], key=lambda p: (p.split("/")[1], int(p.split("/")[0])))
            cells = [dst, src, ", ".join(_compress(ports))] + (["; ".join(reasons) or "NEITHER"] if why else [])
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _compress(ports: list[str]) -> list[str]:
    """35672/TCP..35682/TCP as one range."""
    out: list[str] = []
    for p in ports:
        num, proto = p.split("/")
        if out and "/" in out[-1]:
            last_num, last_proto = out[-1].split("/")
            start, _, end = last_num.partition("-")
            if last_proto == proto and int(end or start) + 1 == int(num):
                out[-1] = f"{start}-{num}/{proto}"
                continue
        out.append(p)
    return out
