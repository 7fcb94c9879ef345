"""The connections the installed software needs, derived from the rendered objects themselves (issue 10).

The service graph says which pods the platform's own code connects; the charts and operators wire much more
through objects: a ServiceMonitor makes Prometheus scrape a Service's pods, a webhook configuration or an
APIService makes the API server call a Service, a command-line flag points KEDA's metrics server at the
operator, a Grafana datasource points Grafana at Prometheus and Alertmanager. This module reads those objects -
the program's and everything its Helm releases install - and resolves each to pod (or address) connections:
Service selector -> Service port (by name or number) -> targetPort -> the selected pods' container port.

Pure: objects and the pod inventory in, `{connection: reasons}` out. It knows nothing of how the policies are
generated; `infra.network` keeps its own facts, and the offline checks prove the two agree.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import yaml

from components.release_manifest import KubernetesLoader
from infra.offline.reachability import EXTERNAL, Connection, Pod, selects

# Services that exist on every cluster or that an operator creates at run time, whose endpoints are addresses
# outside the pod network. They are facts, with their upstream source:
# - `default/kubernetes`: the API server's own Service (kubernetes pkg/controlplane/controller/kubernetesservice),
#   labels component=apiserver, provider=kubernetes, port `https` 443 -> the API server's secure port on its
#   endpoints (network.apiServerCidrs, on one of network.apiServerPorts).
# - the kubelet Service prometheus-operator keeps when run with `--kubelet-service=<ns>/<name>`
#   (prometheus-operator v0.93.0 pkg/kubelet/controller.go): labels k8s-app=kubelet,
#   app.kubernetes.io/name=kubelet, app.kubernetes.io/managed-by=prometheus-operator; endpoints the node
#   addresses (network.nodeCidrs); port `https-metrics` 10250 (also `http-metrics` 10255 and `cadvisor` 4194).
API_SERVER_SERVICE = ("default", "kubernetes")
API_SERVER_SERVICE_LABELS = {"component": "apiserver", "provider": "kubernetes"}
KUBELET_SERVICE_LABELS = {
    "k8s-app": "kubelet",
    "app.kubernetes.io/name": "kubelet",
    "app.kubernetes.io/managed-by": "prometheus-operator",
}
KUBELET_PORTS = {"https-metrics": 10250, "http-metrics": 10255, "cadvisor": 4194}
# KEDA 2.20: the metrics API server gets the operator's gRPC metrics service from this flag (keda chart 2.20.2
# templates/metrics-server/deployment.yaml).
KEDA_METRICS_SERVICE_FLAG = "--metrics-service-address="
# Grafana's datasource sidecar (k8s-sidecar, grafana chart 12.x templates/_pod.tpl) loads ConfigMaps carrying the
# label named by its LABEL variable, from its own namespace unless NAMESPACE says otherwise.
SIDECAR_LABEL_ENV = "LABEL"
# ztunnel finds istiod's CA and xDS server through these variables (istio/istio 1.30.3
# manifests/charts/ztunnel/templates/daemonset.yaml: `istiod.<istioNamespace>.svc:15012` unless caAddress/xdsAddress
# are set).
ADDRESS_ENV = ("CA_ADDRESS", "XDS_ADDRESS")


@dataclass(frozen=True)
class AddressService:
    """A Service whose endpoints are addresses, not pods: the API server's, the kubelets'."""

    namespace: str
    name: str
    labels: dict[str, str]
    cidrs: list[str]
    ports: dict[str, list[int]]
    """Service port name -> the endpoint ports it may forward to."""


@dataclass
class Wiring:
    """Connections the rendered objects require, each with the objects that require it."""

    reasons: dict[Connection, set[str]] = field(default_factory=lambda: defaultdict(set))
    unresolved: list[str] = field(default_factory=list)
    """References that lead to no pod or port: a ServiceMonitor selecting nothing, a webhook without Service."""

    def add(self, connection: Connection, reason: str) -> None:
        self.reasons[connection].add(reason)

    @property
    def edges(self) -> set[Connection]:
        return set(self.reasons)


def _services(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects if o["kind"] == "Service"}


def _pods_of(service: dict, pods: list[Pod]) -> list[Pod]:
    selector = service["spec"].get("selector")
    if not selector:
        return []  # a Service without selector has hand-kept endpoints: none in this platform
    ns = service["metadata"]["namespace"]
    return [p for p in pods if p.namespace == ns and selects({"matchLabels": selector}, p.label_map())]


def _service_port(service: dict, ref: int | str) -> dict | None:
    for port in service["spec"].get("ports") or []:
        if ref == port.get("name") or ref == port["port"]:
            return port
    return None


class Deriver:
    def __init__(self, objects: list[dict], pods: list[Pod], api_server_cidrs, api_server_ports, node_cidrs):
        self.objects = objects
        self.pods = pods
        self.services = _services(objects)
        self.node_cidrs = list(node_cidrs)
        self.address_services = [
            AddressService(
                *API_SERVER_SERVICE,
                API_SERVER_SERVICE_LABELS,
                list(api_server_cidrs),
                {"https": list(api_server_ports)},
            )
        ]
        for obj in self.of_kind("Deployment"):
            for arg in _args(obj):
                if arg.startswith("--kubelet-service="):
                    ns, name = arg.split("=", 1)[1].split("/")
                    ports = {k: [v] for k, v in KUBELET_PORTS.items()}
                    self.address_services.append(
                        AddressService(ns, name, KUBELET_SERVICE_LABELS, self.node_cidrs, ports)
                    )
        self.wiring = Wiring()

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    # --- resolution -----------------------------------------------------------------------------------------

    def _targets(self, pods: list[Pod], ref: int | str) -> list[tuple[str, int, str]]:
        """(destination, port, protocol) for a container port reference on `pods`; hostNetwork pods are the node
        addresses."""
        out = []
        for pod in pods:
            for port, protocol in pod.port(ref):
                if pod.host_network:
                    out += [(f"{EXTERNAL}{cidr}", port, protocol) for cidr in self.node_cidrs]
                else:
                    out.append((pod.id, port, protocol))
        return out

    def service_targets(self, service: dict, ref: int | str) -> list[tuple[str, int, str]]:
        """Service port (name or number) -> targetPort -> the selected pods' container port."""
        port = _service_port(service, ref)
        if port is None:
            return []
        target = port.get("targetPort", port["port"])
        return self._targets(_pods_of(service, self.pods), target)

    def _address_targets(self, ns: str, selector: dict, ref: int | str) -> list[tuple[str, int, str]]:
        return [
            (f"{EXTERNAL}{cidr}", port, "TCP")
            for svc in self.address_services
            if svc.namespace == ns and selects(selector, svc.labels)
            for cidr in svc.cidrs
            for port in (svc.ports.get(ref, []) if isinstance(ref, str) else [ref])
        ]

    def _connect(self, sources: list[Pod], targets, reason: str) -> None:
        if not targets:
            self.wiring.unresolved.append(reason)
        for src in sources:
            for dst, port, protocol in targets:
                self.wiring.add((src.id, dst, port, protocol), reason)

    def _by_host(self, host: str, namespace: str) -> dict | None:
        """A Service by DNS name: `name`, `name.ns`, `name.ns.svc[.cluster.local]`."""
        parts = host.split(".")
        return self.services.get((parts[1] if len(parts) > 1 else namespace, parts[0]))

    # --- what requires connections ----------------------------------------------------------------------------

    def monitors(self) -> None:
        """Prometheus -> every target its ServiceMonitors and PodMonitors select (prometheus-operator's
        selection: the Prometheus' (namespace) selectors pick monitors; a monitor's namespaceSelector defaults
        to its own namespace)."""
        namespaces = {o["metadata"]["name"]: o["metadata"].get("labels") or {} for o in self.of_kind("Namespace")}

        def ns_labels(ns: str) -> dict:
            return {"kubernetes.io/metadata.name": ns, **namespaces.get(ns, {})}

        for prom in self.of_kind("Prometheus"):
            spec, pns = prom["spec"], prom["metadata"]["namespace"]
            sources = [
                p
                for p in self.pods
                if p.namespace == pns
                and p.label_map().get("prometheus") == prom["metadata"]["name"]
                and p.label_map().get("app.kubernetes.io/managed-by") == "prometheus-operator"
            ]
            for kind, sel_key in (("ServiceMonitor", "serviceMonitor"), ("PodMonitor", "podMonitor")):
                selector, ns_selector = spec.get(f"{sel_key}Selector"), spec.get(f"{sel_key}NamespaceSelector")
                if selector is None:
                    continue  # a nil selector picks no monitor
                for mon in self.of_kind(kind):
                    mns = mon["metadata"]["namespace"]
                    if not selects(selector, mon["metadata"].get("labels") or {}):
                        continue
                    if not (mns == pns if ns_selector is None else selects(ns_selector, ns_labels(mns))):
                        continue
                    reason = f"{kind} {mns}/{mon['metadata']['name']}"
                    self._connect(sources, self._monitor_targets(kind, mon), reason)

    def _monitor_targets(self, kind: str, mon: dict) -> list[tuple[str, int, str]]:
        spec, mns = mon["spec"], mon["metadata"]["namespace"]
        # A monitor's namespaceSelector: `any`, `matchNames`, or (neither) the monitor's own namespace.
        nsel = spec.get("namespaceSelector") or {}
        names = None if nsel.get("any") else set(nsel.get("matchNames") or [mns])

        def in_ns(ns: str) -> bool:
            return names is None or ns in names

        selector = spec.get("selector") or {}
        out = []
        if kind == "ServiceMonitor":
            for endpoint in spec.get("endpoints") or []:
                for (ns, _), svc in sorted(self.services.items()):
                    if in_ns(ns) and selects(selector, svc["metadata"].get("labels") or {}):
                        if "port" in endpoint:
                            out += self.service_targets(svc, endpoint["port"])
                        elif "targetPort" in endpoint:
                            out += self._targets(_pods_of(svc, self.pods), endpoint["targetPort"])
                for svc in self.address_services:
                    if in_ns(svc.namespace):
                        out += self._address_targets(svc.namespace, selector, endpoint.get("port"))
        else:
            for endpoint in spec.get("podMetricsEndpoints") or []:
                ref = endpoint.get("port", endpoint.get("portNumber", endpoint.get("targetPort")))
                pods = [p for p in self.pods if in_ns(p.namespace) and selects(selector, p.label_map())]
                out += self._targets(pods, ref)
        return sorted(set(out))

    def api_server_calls(self, api_server_cidrs: list[str]) -> None:
        """The API server -> every Service a webhook configuration or an APIService names (port default 443)."""
        sources = [f"{EXTERNAL}{cidr}" for cidr in api_server_cidrs]
        calls = []
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            for obj in self.of_kind(kind):
                for hook in obj.get("webhooks") or []:
                    svc = hook["clientConfig"].get("service")
                    if svc:
                        calls.append((f"{kind} {obj['metadata']['name']}", svc))
        for obj in self.of_kind("APIService"):
            if obj["spec"].get("service"):
                calls.append((f"APIService {obj['metadata']['name']}", obj["spec"]["service"]))
        for reason, ref in calls:
            service = self.services.get((ref["namespace"], ref["name"]))
            targets = self.service_targets(service, ref.get("port", 443)) if service else []
            if not targets:
                self.wiring.unresolved.append(reason)
            for src in sources:
                for dst, port, protocol in targets:
                    self.wiring.add((src, dst, port, protocol), reason)

    def flags(self) -> None:
        """KEDA's metrics API server -> the operator's metrics service, from its command line."""
        for obj in self.of_kind("Deployment"):
            for arg in _args(obj):
                if arg.startswith(KEDA_METRICS_SERVICE_FLAG):
                    host, _, port = arg.removeprefix(KEDA_METRICS_SERVICE_FLAG).rpartition(":")
                    ns = obj["metadata"]["namespace"]
                    service = self._by_host(host, ns)
                    targets = self.service_targets(service, int(port)) if service else []
                    source = [p for p in self.pods if p.id == f"{ns}/{obj['metadata']['name']}"]
                    self._connect(source, targets, f"Deployment {ns}/{obj['metadata']['name']} {arg.split('=')[0]}")

    def env_addresses(self) -> None:
        """A workload -> the Service `host:port` its ADDRESS_ENV variables name (ztunnel -> istiod)."""
        for obj in self.objects:
            if obj["kind"] not in WORKLOADS:
                continue
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            for c in obj["spec"]["template"]["spec"].get("containers") or []:
                for env in c.get("env") or []:
                    if env["name"] not in ADDRESS_ENV or ":" not in env.get("value", ""):
                        continue
                    host, _, port = env["value"].rpartition(":")
                    service = self._by_host(host, ns)
                    targets = self.service_targets(service, int(port)) if service else []
                    source = [p for p in self.pods if p.id == f"{ns}/{name}"]
                    self._connect(source, targets, f"{obj['kind']} {ns}/{name} env {env['name']}")

    def alerting(self) -> None:
        """Prometheus -> the Alertmanagers its spec.alerting names; Alertmanager replicas mesh with each other."""
        for prom in self.of_kind("Prometheus"):
            pns, name = prom["metadata"]["namespace"], prom["metadata"]["name"]
            sources = [p for p in self.pods if p.namespace == pns and p.label_map().get("prometheus") == name]
            for am in (prom["spec"].get("alerting") or {}).get("alertmanagers") or []:
                service = self.services.get((am.get("namespace", pns), am["name"]))
                targets = self.service_targets(service, am["port"]) if service else []
                self._connect(sources, targets, f"Prometheus {pns}/{name} spec.alerting")
        for am in self.of_kind("Alertmanager"):
            ns, name = am["metadata"]["namespace"], am["metadata"]["name"]
            if (am["spec"].get("replicas") or 1) < 2:
                continue
            # prometheus-operator v0.93.0 pkg/alertmanager/statefulset.go: --cluster.peer for every replica.
            pods = [p for p in self.pods if p.namespace == ns and p.label_map().get("alertmanager") == name]
            reason = f"Alertmanager {ns}/{name} replicas mesh"
            self._connect(pods, self._targets(pods, "mesh-tcp") + self._targets(pods, "mesh-udp"), reason)

    def datasources(self) -> None:
        """Grafana -> every datasource URL of the ConfigMaps its sidecar loads."""
        for obj in self.objects:
            if obj["kind"] not in WORKLOADS:
                continue
            containers = obj["spec"]["template"]["spec"].get("containers") or []
            labels = {e.get("value") for c in containers for e in c.get("env") or [] if e["name"] == SIDECAR_LABEL_ENV}
            ns = obj["metadata"]["namespace"]
            source = [p for p in self.pods if p.id == f"{ns}/{obj['metadata']['name']}"]
            for cm in self.of_kind("ConfigMap"):
                if cm["metadata"]["namespace"] != ns or not labels & set(cm["metadata"].get("labels") or {}):
                    continue
                for text in (cm.get("data") or {}).values():
                    for url in _datasource_urls(text):
                        parts = urlsplit(url)
                        service = self._by_host(parts.hostname or "", ns)
                        if service is None:
                            continue  # a dashboard or an address outside the cluster
                        port = parts.port or (443 if parts.scheme == "https" else 80)
                        reason = f"ConfigMap {ns}/{cm['metadata']['name']} datasource {url}"
                        self._connect(source, self.service_targets(service, port), reason)


WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def _args(obj: dict) -> list[str]:
    return [a for c in obj["spec"]["template"]["spec"].get("containers") or [] for a in c.get("args") or []]


@functools.lru_cache(maxsize=1024)  # every audit reads the same dashboards' and datasources' ConfigMaps again
def _datasource_urls(text: str) -> tuple[str, ...]:
    if "datasources" not in text:
        return ()  # a dashboard: without the key's name in its text, no parse can find a datasource list
    try:
        doc = yaml.load(text, Loader=KubernetesLoader)  # libyaml when built with it
    except yaml.YAMLError:
        return ()
    if not isinstance(doc, dict) or not isinstance(doc.get("datasources"), list):
        return ()
    return tuple(
        d["url"] for d in doc["datasources"] if isinstance(d, dict) and re.match(r"https?://", d.get("url", ""))
    )


def derive(objects: list[dict], pods: list[Pod], network) -> Wiring:
    """Every connection the rendered objects require, with its reasons. `network` is the stack's config
    (`apiServerCidrs`, `apiServerPorts`, `nodeCidrs`: where the API server and the nodes are)."""
    deriver = Deriver(objects, pods, network.api_server_cidrs, network.api_server_ports, network.node_cidrs)
    deriver.monitors()
    deriver.api_server_calls(network.api_server_cidrs)
    deriver.flags()
    deriver.env_addresses()
    deriver.alerting()
    deriver.datasources()
    return deriver.wiring
