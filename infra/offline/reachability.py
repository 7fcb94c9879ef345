"""Who can open a connection to whom: Kubernetes NetworkPolicy semantics evaluated over rendered objects.

This model knows nothing of how the policies were generated. It takes the rendered NetworkPolicies, the
rendered Namespaces' labels and the pods that will exist (Deployments' templates, the pods operators create
for rendered Cluster/RabbitmqCluster objects, the pods of the installed charts), and answers, per port and
protocol, whether a connection is allowed - which needs the source's egress and the destination's ingress to
allow it. It is the answer to an auditor's "who can reach the payment database?".
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass

from infra.config import HelmChart
from infra.network import CHART_PODS, NAMESPACE_LABEL
from infra.offline.mocks import ProgramRun
from infra.topology import PlatformPlan

PROTOCOLS = ("TCP", "UDP")
EXTERNAL = "external "  # destination ids outside the pod network: "external 203.0.113.0/24"


@dataclass(frozen=True)
class Pod:
    id: str
    namespace: str
    labels: tuple[tuple[str, str], ...]

    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


def _pod(namespace: str, name: str, labels: dict[str, str]) -> Pod:
    return Pod(f"{namespace}/{name}", namespace, tuple(sorted(labels.items())))


def inventory(run: ProgramRun, plan: PlatformPlan) -> list[Pod]:
    """The pods the rendered stack will run, with their labels. From the plan only the cluster's facts: where
    its DNS runs, and which chart each operator comes from (operators installed from release manifests render
    their Deployments, so they are counted with the platform's own)."""
    net, operators = plan.config.network, plan.config.infrastructure.operators
    pods = [_pod(net.dns_namespace, "dns", net.dns_pod_labels)]
    for obj in run.kubernetes_objects():
        meta, kind = obj["metadata"], obj["kind"]
        if kind == "Deployment":
            pods.append(_pod(meta["namespace"], meta["name"], obj["spec"]["template"]["metadata"]["labels"]))
        elif kind == "Cluster":
            inherited = obj["spec"].get("inheritedMetadata", {}).get("labels", {})
            labels = {**inherited, "cnpg.io/cluster": meta["name"], "cnpg.io/podRole": "instance"}
            pods.append(_pod(meta["namespace"], meta["name"], labels))
        elif kind == "RabbitmqCluster":
            labels = {"app.kubernetes.io/name": meta["name"], "app.kubernetes.io/component": "rabbitmq"}
            pods.append(_pod(meta["namespace"], meta["name"], labels))
        elif kind == "ClusterIssuer" and "acme" in obj["spec"]:
            gateway_ns = next(g["metadata"]["namespace"] for g in run.objects("Gateway"))
            pods.append(_pod(gateway_ns, "acme-http01-solver", {"acme.cert-manager.io/http01-solver": "true"}))
    releases = {
        r.inputs["chart"].rsplit("/", 1)[-1]: r.inputs["namespace"]
        for r in run.of_type("kubernetes:helm.sh/v3:Release")
    }
    has_gateway = bool(run.objects("Gateway"))
    for role, (install_field, name, labels) in CHART_PODS.items():
        install = getattr(operators, install_field)
        if not isinstance(install, HelmChart):
            continue  # a release manifest: its Deployments are rendered objects, counted above
        if install.chart in releases and (role != "envoy" or has_gateway):
            pods.append(_pod(releases[install.chart], name, labels))
    return pods


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


class Model:
    def __init__(self, pods: list[Pod], policies: list[dict], ns_labels: dict[str, dict[str, str]]):
        self.pods = pods
        self.policies = policies
        self.ns_labels = ns_labels

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

    def allows(self, direction: str, pod: Pod, other: Pod, port: int, protocol: str) -> bool:
        """Does `pod`'s side allow this connection (`direction` ingress: from `other`; egress: to `other`)?"""
        kind = "Ingress" if direction == "ingress" else "Egress"
        peers_key = "from" if direction == "ingress" else "to"
        applicable = [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == pod.namespace
            and selects(p["spec"].get("podSelector") or {}, pod.label_map())
            and kind in p["spec"].get("policyTypes", ["Ingress"])
        ]
        if not applicable:
            return True  # not isolated in this direction
        for policy in applicable:
            for rule in policy["spec"].get(direction) or []:
                peers = rule.get(peers_key)
                peer_ok = not peers or any(self._peer_matches(p, pod.namespace, other) for p in peers)
                if peer_ok and self._port_matches(rule.get("ports"), port, protocol):
                    return True
        return False

    def _applicable_egress(self, pod: Pod) -> list[dict] | None:
        """The egress rules that apply to `pod`, or None when no policy isolates its egress."""
        policies = [
            p
            for p in self.policies
            if p["metadata"]["namespace"] == pod.namespace
            and selects(p["spec"].get("podSelector") or {}, pod.label_map())
            and "Egress" in p["spec"].get("policyTypes", ["Ingress"])
        ]
        return None if not policies else [rule for p in policies for rule in p["spec"].get("egress") or []]

    @staticmethod
    def _block_contains(block: dict, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        """An ipBlock peer covers a whole destination network: inside `cidr`, clear of every `except`."""
        cidr = ipaddress.ip_network(block["cidr"], strict=False)
        if cidr.version != network.version or not network.subnet_of(cidr):
            return False
        return not any(network.overlaps(ipaddress.ip_network(e, strict=False)) for e in block.get("except") or [])

    def external_destinations(self) -> list[str]:
        """Every network an egress ipBlock names: the candidates for connections leaving the pod network."""
        cidrs = {
            peer["ipBlock"]["cidr"]
            for policy in self.policies
            for rule in policy["spec"].get("egress") or []
            for peer in rule.get("to") or []
            if "ipBlock" in peer
        }
        return sorted(
            cidrs, key=lambda c: (ipaddress.ip_network(c, strict=False).version, ipaddress.ip_network(c, strict=False))
        )

    def allows_external(self, pod: Pod, cidr: str, port: int, protocol: str) -> bool:
        """May `pod` open a connection to every address of `cidr`? Only its own egress decides: the far end is
        outside the cluster, where no NetworkPolicy applies."""
        rules = self._applicable_egress(pod)
        if rules is None:
            return True
        network = ipaddress.ip_network(cidr, strict=False)
        for rule in rules:
            peers = rule.get("to")
            peer_ok = not peers or any("ipBlock" in p and self._block_contains(p["ipBlock"], network) for p in peers)
            if peer_ok and self._port_matches(rule.get("ports"), port, protocol):
                return True
        return False

    def probe_ports(self, extra: set[int]) -> set[int]:
        ports = set(extra) | {1, 65535}  # sentinels catch rules that allow every port
        for policy in self.policies:
            for direction in ("ingress", "egress"):
                for rule in policy["spec"].get(direction) or []:
                    for p in rule.get("ports") or []:
                        if isinstance(p.get("port"), int):
                            ports.update(range(p["port"], p.get("endPort", p["port"]) + 1))
        return ports

    def edges(self, extra_ports: set[int] = frozenset()) -> set[tuple[str, str, int, str]]:
        """Every (source pod, destination pod, port, protocol) both sides allow."""
        out = set()
        ports = sorted(self.probe_ports(set(extra_ports)))
        for src in self.pods:
            for dst in self.pods:
                for protocol in PROTOCOLS:
                    for port in ports:
                        if self.allows("egress", src, dst, port, protocol) and self.allows(
                            "ingress", dst, src, port, protocol
                        ):
                            out.add((src.id, dst.id, port, protocol))
        return out

    def external_edges(self, extra_ports: set[int] = frozenset()) -> set[tuple[str, str, int, str]]:
        """Every (source pod, "external <cidr>", port, protocol) the source's egress allows."""
        out = set()
        ports = sorted(self.probe_ports(set(extra_ports)))
        for cidr in self.external_destinations():
            for src in self.pods:
                for protocol in PROTOCOLS:
                    for port in ports:
                        if self.allows_external(src, cidr, port, protocol):
                            out.add((src.id, f"{EXTERNAL}{cidr}", port, protocol))
        return out


def model_of(run: ProgramRun, plan: PlatformPlan) -> Model:
    return Model(inventory(run, plan), run.objects("NetworkPolicy"), namespace_labels(run))


def platform_edges(run: ProgramRun, plan: PlatformPlan, extra_ports: set[int]):
    """Reachable edges with at least one end in a namespace the stack creates (the rest is not ours to judge)."""
    managed = {ns["metadata"]["name"] for ns in run.objects("Namespace")}
    edges = model_of(run, plan).edges(extra_ports)
    return {e for e in edges if e[0].split("/")[0] in managed or e[1].split("/")[0] in managed}


def external_edges(run: ProgramRun, plan: PlatformPlan, extra_ports: set[int] = frozenset()):
    """Connections leaving the pod network (ipBlock destinations) from pods in namespaces the stack creates."""
    managed = {ns["metadata"]["name"] for ns in run.objects("Namespace")}
    return {e for e in model_of(run, plan).external_edges(extra_ports) if e[0].split("/")[0] in managed}


def destinations(edges: set[tuple[str, str, int, str]], pods: list[Pod]) -> list[str]:
    """What `--to` may name: every pod, every external network, every namespace."""
    names = {p.id for p in pods} | {e[1] for e in edges}
    return sorted(names | {n.split("/")[0] for n in names if not n.startswith(EXTERNAL)})


def expand(edges) -> set[tuple[str, str, int, str]]:
    """Declared edges (with port ranges) as single-port tuples, comparable with `Model.edges`."""
    return {
        (e.source, e.destination, port, e.protocol) for e in edges for port in range(e.port, (e.end_port or e.port) + 1)
    }


def matrix(edges: set[tuple[str, str, int, str]], destination: str | None = None) -> str:
    """Markdown: for each destination pod, who may connect and on which ports."""
    inbound: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for src, dst, port, protocol in edges:
        if destination is None or dst == destination or dst.startswith(f"{destination}/"):
            inbound[dst][src].add(f"{port}/{protocol}")
    lines = ["| destination | may be reached by | ports |", "|---|---|---|"]
    # Pods first, then the networks outside the cluster.
    for dst in sorted(inbound, key=lambda d: (d.startswith(EXTERNAL), d)):
        for src in sorted(inbound[dst]):
            ports = sorted(inbound[dst][src], key=lambda p: (p.split("/")[1], int(p.split("/")[0])))
            lines.append(f"| {dst} | {src} | {', '.join(_compress(ports))} |")
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
