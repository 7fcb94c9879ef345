"""The Istio ambient mesh, derived from the plan: who is enrolled, mTLS modes, and identity-based authorisation
from the same edges as the NetworkPolicies (pure functions; README "Encryption in transit").

Facts, at istio/istio 1.30.3 unless another repository is named:
- A namespace labelled `istio.io/dataplane-mode: ambient` enrols its pods; a pod labelled `none` stays out
  (pkg/config/constants/constants.go `DataplaneModeAmbient`/`DataplaneModeNone`; cni/pkg/util/podutil.go).
- HBONE: a connection between two enrolled pods leaves the caller's network namespace as TCP to the callee pod's
  IP on 15008, from the caller pod's own IP (architecture/ambient/ztunnel.md; ztunnel opens its sockets inside
  the pod's network namespace). NetworkPolicies therefore see 15008 between enrolled pods, never the
  application port.
- Kubelet probes of enrolled pods arrive from the link-local address 169.254.7.127
  (cni/pkg/nodeagent/options.go `DefaultHostProbeSNATIP`) and are not redirected to ztunnel.
- ztunnel enforces AuthorizationPolicy at L4: ALLOW and DENY, sources by principal, namespace and IP, ports
  (pilot/pkg/serviceregistry/ambient/authorization.go `convertAuthorizationPolicy`); a `*` principal is a
  presence match (`stringToMatch`), so `notPrincipals: ["*"]` matches only plaintext (unauthenticated) peers - the
  same match ztunnel's STRICT PeerAuthentication uses to deny them.
- A workload PeerAuthentication with port-level mTLS is honoured in ambient (`convertPeerAuthentication`).
- Identities are SPIFFE principals `<trust domain>/ns/<namespace>/sa/<service account>`; the trust domain is
  meshConfig.trustDomain, `cluster.local` by default (istiod chart values.yaml `meshConfig`).
"""

from __future__ import annotations

from collections import defaultdict

from components.mesh_policies import MeshPolicy
from infra.network import Edge, Groups, PodGroup, mesh_members
from infra.topology import PlatformPlan

DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
AMBIENT = "ambient"
OUT_OF_MESH = "none"


def _services(plan: PlatformPlan, groups: Groups) -> dict[str, str]:
    """The enrolled services (group id -> principal): what STRICT protects. The gateway's proxies are enrolled
    too, but take plaintext from outside the cluster in their own namespace, which keeps the mesh's default
    (PERMISSIVE)."""
    enrolled = mesh_members(plan, groups)
    return {g.id: enrolled[g.id] for g in groups.services.values() if g.id in enrolled}


def plaintext_ports(edges: set[Edge], plan: PlatformPlan, groups: Groups) -> dict[str, list[int]]:
    """Per enrolled service, the ports callers outside the mesh reach in plaintext (Prometheus' scrapes): the
    listed exceptions to STRICT."""
    enrolled = mesh_members(plan, groups)
    services = _services(plan, groups)
    out: dict[str, set[int]] = defaultdict(set)
    for e in edges:
        if e.destination in services and e.source not in enrolled:
            out[e.destination].add(e.port)
    return {k: sorted(v) for k, v in out.items()}


def identity_graph(edges: set[Edge], plan: PlatformPlan, groups: Groups) -> set[tuple[str, str, int]]:
    """(source principal, destination group, port) for every edge into an enrolled group; a caller outside the
    mesh (a pod or an address: the gateway's clients) is the unauthenticated source `*plaintext*`. `edges` are
    the logical ones (before `network.transport`): kubelet probes are not among them, and ztunnel never sees
    them."""
    enrolled = mesh_members(plan, groups)
    return {(enrolled.get(e.source, PLAINTEXT), e.destination, e.port) for e in edges if e.destination in enrolled}


PLAINTEXT = "*plaintext*"


def mesh_policies(edges: set[Edge], plan: PlatformPlan, groups: Groups) -> list[MeshPolicy]:
    """Per application namespace a STRICT PeerAuthentication; per enrolled group (services, the gateway's
    proxies) an AuthorizationPolicy that allows exactly its callers' identities on the ports they call (and
    unauthenticated callers on the ports callers outside the mesh use); per service with such ports a workload
    PeerAuthentication that admits plaintext on those ports only. ztunnel denies whatever no ALLOW rule matches
    once a workload has one."""
    enrolled = mesh_members(plan, groups)
    services = _services(plan, groups)
    if not enrolled:
        return []
    policies = [
        MeshPolicy("PeerAuthentication", ns, "default", {"mtls": {"mode": "STRICT"}})
        for ns in sorted({groups.by_id[g].namespace for g in services})
    ]
    graph = identity_graph(edges, plan, groups)
    plaintext = plaintext_ports(edges, plan, groups)
    for gid in sorted(enrolled):
        g: PodGroup = groups.by_id[gid]
        selector = {"matchLabels": g.selector()}
        by_source: dict[str, set[int]] = defaultdict(set)
        for source, dst, port in graph:
            if dst == gid:
                by_source[source].add(port)
        rules = []
        for source in sorted(by_source):
            ports = [str(p) for p in sorted(by_source[source])]
            peer = {"notPrincipals": ["*"]} if source == PLAINTEXT else {"principals": [source]}
            rules.append({"from": [{"source": peer}], "to": [{"operation": {"ports": ports}}]})
        # No rule at all would mean no ALLOW policy and so allow-all: an uncalled service gets a policy that
        # matches nothing, which denies everything.
        policies.append(
            MeshPolicy(
                "AuthorizationPolicy", g.namespace, g.name, {"selector": selector, "action": "ALLOW", "rules": rules}
            )
        )
        if gid in plaintext and gid in services:
            policies.append(
                MeshPolicy(
                    "PeerAuthentication",
                    g.namespace,
                    f"{g.name}-plaintext-ports",
                    {
                        "selector": selector,
                        "mtls": {"mode": "STRICT"},
                        "portLevelMtls": {str(p): {"mode": "PERMISSIVE"} for p in plaintext[gid]},
                    },
                )
            )
    return policies
