"""The mesh layer over the NetworkPolicy model: who is enrolled in Istio's ambient data plane, which identities
and plaintext peers ztunnel admits, and what that makes of the connections the network allows.

Read from the rendered objects only (Namespaces, workload templates, PeerAuthentications,
AuthorizationPolicies), by Istio's semantics at istio/istio 1.30.3:
- enrolment: a pod is in the mesh when its namespace is labelled `istio.io/dataplane-mode: ambient` and the pod
  not `none`, or the pod itself `ambient` (pkg/config/constants/constants.go; cni/pkg/nodeagent);
- between two enrolled pods a connection is HBONE: the network sees TCP 15008 to the callee pod, and ztunnel
  authorises the caller's identity (`<trust domain>/ns/<namespace>/sa/<service account>`) for the application
  port (architecture/ambient/ztunnel.md);
- a caller outside the mesh reaches an enrolled pod in plaintext on the application port, which the callee's
  ztunnel refuses where the effective PeerAuthentication is STRICT: the workload policy's port-level mode, else
  its mode, else the namespace's, else the root namespace's, else PERMISSIVE
  (pilot/pkg/serviceregistry/ambient/authorization.go `convertPeerAuthentication`);
- AuthorizationPolicy: a DENY that matches refuses; with any ALLOW applying, one must match
  (`convertAuthorizationPolicy`; `*` in principals is a presence match, so `notPrincipals: ["*"]` is plaintext);
- kubelet probes arrive from 169.254.7.127 and are not redirected (cni/pkg/nodeagent/options.go): the network
  alone decides them.
A policy field this model does not evaluate is refused, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infra.network import EXTERNAL
from infra.offline.reachability import ENVOY_PROBE_PORTS, WORKLOAD_KINDS, Connection, Model, Pod, selects

DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
HBONE_PORT = 15008
PROBE_SNAT_SOURCE = f"{EXTERNAL}169.254.7.127/32"
TRUST_DOMAIN = "cluster.local"
PLAINTEXT = "*plaintext*"
"""The peer of a connection without mTLS: no identity."""
STRANGER = f"{TRUST_DOMAIN}/ns/*stranger*/sa/*stranger*"
"""An identity no pod has: a rule that admits it admits any identity."""
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
SOURCE_FIELDS = {"principals", "notPrincipals"}
OPERATION_FIELDS = {"ports", "notPorts"}
Identity = tuple[str, str, int]
"""(source principal or PLAINTEXT, destination pod, port) that ztunnel admits."""


def _root_namespace(objects: list[dict]) -> str | None:
    """Where istiod runs: its root namespace (meshConfig.rootNamespace defaults to it)."""
    for o in objects:
        if o["kind"] == "Deployment" and o["spec"]["template"]["metadata"].get("labels", {}).get("app") == "istiod":
            return o["metadata"]["namespace"]
    return None


@dataclass
class MeshLayer:
    pods: dict[str, Pod]
    enrolled: dict[str, str]
    """Enrolled pod id -> principal."""
    peer_authentications: list[dict]
    authorization_policies: list[dict]
    root: str | None
    _applying: dict[tuple[Pod, str], list[dict]] = field(default_factory=dict, init=False, repr=False, compare=False)
    """The policies of each kind that apply to each pod, found once: `identities` asks about every pod for every
    peer and port."""

    @classmethod
    def read(cls, objects: list[dict], pods: list[Pod], ns_labels: dict[str, dict[str, str]]) -> MeshLayer:
        enrolled = {}
        for p in pods:
            mode = p.label_map().get(DATAPLANE_MODE_LABEL) or ns_labels.get(p.namespace, {}).get(DATAPLANE_MODE_LABEL)
            if mode == "ambient" and not p.host_network:
                enrolled[p.id] = f"{TRUST_DOMAIN}/ns/{p.namespace}/sa/{p.service_account}"
        return cls(
            {p.id: p for p in pods},
            enrolled,
            [o for o in objects if o["kind"] == "PeerAuthentication"],
            [o for o in objects if o["kind"] == "AuthorizationPolicy"],
            _root_namespace(objects),
        )

    def _applies(self, policy: dict, pod: Pod) -> bool:
        ns, selector = policy["metadata"]["namespace"], policy["spec"].get("selector")
        if selector is not None:
            return ns == pod.namespace and selects(selector, pod.label_map())
        return ns in (pod.namespace, self.root)

    def _applying_to(self, pod: Pod, kind: str) -> list[dict]:
        key = (pod, kind)  # the pod itself (frozen): a caller's own Pod with the same id is a different key
        if key not in self._applying:
            policies = self.peer_authentications if kind == "PeerAuthentication" else self.authorization_policies
            self._applying[key] = [p for p in policies if self._applies(p, pod)]
        return self._applying[key]

    def mode(self, pod: Pod, port: int) -> str:
        """The effective mTLS mode of `pod` on `port`."""
        applying = self._applying_to(pod, "PeerAuthentication")
        for scope in ("workload", "namespace", "root"):
            for p in applying:
                spec, ns = p["spec"], p["metadata"]["namespace"]
                kind = "workload" if spec.get("selector") else ("namespace" if ns == pod.namespace else "root")
                if kind != scope:
                    continue
                port_mode = (spec.get("portLevelMtls") or {}).get(str(port), {}).get("mode")
                mode = port_mode or (spec.get("mtls") or {}).get("mode", "UNSET")
                if mode != "UNSET":
                    return mode
        return "PERMISSIVE"

    @staticmethod
    def _source_matches(source: dict, principal: str | None) -> bool:
        unknown = set(source) - SOURCE_FIELDS
        if unknown:
            raise ValueError(f"AuthorizationPolicy source fields the model does not evaluate: {sorted(unknown)}")

        def matches(patterns: list[str]) -> bool:
            return principal is not None and any(
                p == "*" or p == principal or (p.endswith("*") and principal.startswith(p[:-1])) for p in patterns
            )

        if "principals" in source and not matches(source["principals"]):
            return False
        return not ("notPrincipals" in source and matches(source["notPrincipals"]))

    @staticmethod
    def _operation_matches(operation: dict, port: int) -> bool:
        unknown = set(operation) - OPERATION_FIELDS
        if unknown:
            raise ValueError(f"AuthorizationPolicy operation fields the model does not evaluate: {sorted(unknown)}")
        if "ports" in operation and str(port) not in operation["ports"]:
            return False
        return not ("notPorts" in operation and str(port) in operation["notPorts"])

    def _rule_matches(self, rule: dict, principal: str | None, port: int) -> bool:
        if set(rule) - {"from", "to"}:
            raise ValueError(f"AuthorizationPolicy rule fields the model does not evaluate: {sorted(set(rule))}")
        sources = [f["source"] for f in rule.get("from") or []]
        operations = [t["operation"] for t in rule.get("to") or []]
        return (not sources or any(self._source_matches(s, principal) for s in sources)) and (
            not operations or any(self._operation_matches(o, port) for o in operations)
        )

    def authorizes(self, principal: str | None, pod: Pod, port: int) -> bool:
        """Does ztunnel admit this peer (`None`: plaintext) to `pod` on `port`?"""
        if principal is None and self.mode(pod, port) == "STRICT":
            return False
        allow = False
        allows = 0
        for policy in self._applying_to(pod, "AuthorizationPolicy"):
            action = policy["spec"].get("action", "ALLOW")
            rules = policy["spec"].get("rules") or []
            matched = any(self._rule_matches(r, principal, port) for r in rules)
            if action == "DENY" and matched:
                return False
            if action == "ALLOW":
                allows += 1
                allow = allow or matched
            elif action != "DENY":
                raise ValueError(f"AuthorizationPolicy action {action!r}: ztunnel enforces ALLOW and DENY only")
        return allow or allows == 0

    def reaches(self, model: Model, connection: Connection) -> bool:
        """Is this connection (as the application sees it) possible through both layers?"""
        src, dst, port, protocol = connection
        if dst not in self.enrolled or src == PROBE_SNAT_SOURCE:
            return model.reaches(connection)
        if src in self.enrolled:
            return (
                protocol == "TCP"
                and model.reaches((src, dst, HBONE_PORT, "TCP"))
                and self.authorizes(self.enrolled[src], self.pods[dst], port)
            )
        return model.reaches(connection) and self.authorizes(None, self.pods[dst], port)

    def application_view(
        self, network: set[Connection], ports: set[int], expected: set[Connection]
    ) -> tuple[set[Connection], set[Connection]]:
        """The network's connections as the applications see them, and the network openings no application
        connection explains: HBONE between enrolled pods the expected graph does not connect, an application
        port open between enrolled pods (their traffic is HBONE), HBONE to a pod outside the mesh."""
        connected = {(c[0], c[1]) for c in expected if c[0] in self.enrolled and c[1] in self.enrolled}
        view, stray = set(), set()
        for c in network:
            src, dst, port, protocol = c
            if dst not in self.enrolled or src == PROBE_SNAT_SOURCE:
                view.add(c)
            elif src in self.enrolled:
                if port != HBONE_PORT or protocol != "TCP" or (src, dst) not in connected:
                    stray.add(c)
                    continue
                principal = self.enrolled[src]
                view |= {(src, dst, p, "TCP") for p in ports if self.authorizes(principal, self.pods[dst], p)}
            elif self.authorizes(None, self.pods[dst], port):
                view.add(c)
        return view, stray

    def policy_ports(self) -> set[int]:
        """Every port an AuthorizationPolicy or PeerAuthentication names (candidates for what they admit)."""
        out = set()
        for policy in self.authorization_policies:
            for rule in policy["spec"].get("rules") or []:
                for to in rule.get("to") or []:
                    op = to["operation"]
                    out |= {int(p) for p in [*op.get("ports", []), *op.get("notPorts", [])]}
        for policy in self.peer_authentications:
            out |= {int(p) for p in policy["spec"].get("portLevelMtls") or {}}
        return out

    def identities(self, ports: set[int]) -> set[Identity]:
        """Every (peer, enrolled pod, port) ztunnel admits, over every enrolled identity, every identity a policy
        names, plaintext, and a stranger (which stands for every identity no rule names)."""
        named = {
            p
            for policy in self.authorization_policies
            for rule in policy["spec"].get("rules") or []
            for f in rule.get("from") or []
            for key in ("principals", "notPrincipals")
            for p in f["source"].get(key, [])
            if "*" not in p
        }
        peers = {*self.enrolled.values(), *named, STRANGER}
        out: set[Identity] = set()
        for dst in self.enrolled:
            pod = self.pods[dst]
            for port in ports:
                out |= {(p, dst, port) for p in peers if self.authorizes(p, pod, port)}
                if self.authorizes(None, pod, port):
                    out.add((PLAINTEXT, dst, port))
        return out

    def expected_identities(self, expected: set[Connection]) -> set[Identity]:
        """What `identities` should be for the expected connections: each caller's principal (plaintext for a
        pod outside the mesh or an address) on the port it calls. Probes bypass ztunnel."""
        return {
            (self.enrolled.get(src, PLAINTEXT), dst, port)
            for src, dst, port, protocol in expected
            if dst in self.enrolled and protocol == "TCP" and src != PROBE_SNAT_SOURCE
        }


def probe_connections(objects: list[dict], layer: MeshLayer) -> dict[Connection, str]:
    """Kubelet probes of enrolled pods, from the SNAT address to the port each probe names (for the gateway's
    proxies, which Envoy Gateway creates, its probe ports)."""
    out = {}
    for pod_id in layer.enrolled:
        if layer.pods[pod_id].label_map().get("app.kubernetes.io/managed-by") == "envoy-gateway":
            for port in ENVOY_PROBE_PORTS:
                out[(PROBE_SNAT_SOURCE, pod_id, port, "TCP")] = "kubelet probes of the Envoy proxy (ambient SNAT)"
    for obj in objects:
        if obj["kind"] not in WORKLOAD_KINDS:
            continue
        pod_id = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        if pod_id not in layer.enrolled:
            continue
        pod = layer.pods[pod_id]
        for container in obj["spec"]["template"]["spec"].get("containers") or []:
            for probe_name in PROBES:
                probe = container.get(probe_name) or {}
                handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
                if handler is None:
                    continue
                for port, protocol in pod.port(handler["port"]):
                    out[(PROBE_SNAT_SOURCE, pod_id, port, protocol)] = f"kubelet {probe_name} (ambient SNAT)"
    return out
