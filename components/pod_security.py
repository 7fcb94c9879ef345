"""Pod Security Standards "restricted", as the pieces a pod template is built from.

https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted profile). Every pod template
the platform writes is built from these functions, so one place decides what "hardened" means.
"""

from __future__ import annotations

# Pinned so a cluster upgrade cannot silently change what "restricted" admits.
PSS_VERSION = "v1.33"
# Above the range distributions hand out to system users, so no container runs with a host user's identity.
DEFAULT_UID = 10001


def namespace_labels(level: str = "restricted", version: str = PSS_VERSION) -> dict[str, str]:
    """Namespace labels that make the API server enforce, audit and warn at one Pod Security level."""
    labels = {}
    for mode in ("enforce", "audit", "warn"):
        labels[f"pod-security.kubernetes.io/{mode}"] = level
        labels[f"pod-security.kubernetes.io/{mode}-version"] = version
    return labels


def namespace_metadata(name: str, labels: dict[str, str], level: str, version: str) -> dict:
    """Metadata of a namespace the platform creates: its labels, the Pod Security level it admits, and the
    name label NetworkPolicies select it by (set explicitly so it is in the rendered manifests too)."""
    return {
        "name": name,
        "labels": {**labels, **namespace_labels(level, version), "kubernetes.io/metadata.name": name},
    }


def pod_security_context(uid: int = DEFAULT_UID) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# Volume types the "restricted" profile admits.
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod_spec: dict, min_uid: int = 10000) -> list[str]:
    """Every way `pod_spec` breaks Pod Security "restricted" (baseline included) or the platform's additions
    (read-only root filesystem, UID >= `min_uid`). Empty when the pod is admissible."""
    problems = pss_restricted_violations(pod_spec)
    pod_ctx = pod_spec.get("securityContext") or {}
    for c in [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]:
        name = c.get("name", "?")
        ctx = c.get("securityContext") or {}
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if uid is None or uid < min_uid:
            problems.append(f"container {name}: runAsUser must be set and >= {min_uid} (got {uid})")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"container {name}: readOnlyRootFilesystem must be true")
    return problems


def pss_restricted_violations(pod_spec: dict) -> list[str]:
    """Every way `pod_spec` breaks the Pod Security Standards' "restricted" profile (baseline included), as the
    admission controller enforces it (kubernetes.io/docs/concepts/security/pod-security-standards). Third-party
    pods (the operators' charts) are held to this; the platform's own pods to `restricted_violations`."""
    problems = []
    pod_ctx = pod_spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"{field} must not be true")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            problems.append(f"volume {volume.get('name')!r} uses {sorted(kinds - _RESTRICTED_VOLUMES)}")
    for sysctl in pod_ctx.get("sysctls") or []:
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl.get('name')!r} is not in the safe set")

    def seccomp_ok(ctx: dict) -> bool | None:
        profile = (ctx.get("seccompProfile") or {}).get("type")
        return None if profile is None else profile in ("RuntimeDefault", "Localhost")

    containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    for c in containers:
        name = c.get("name", "?")
        ctx = c.get("securityContext") or {}
        if ctx.get("privileged"):
            problems.append(f"container {name}: privileged must not be true")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation must be false")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"container {name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"container {name}: may add only NET_BIND_SERVICE")
        run_as_non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        if run_as_non_root is not True:
            problems.append(f"container {name}: runAsNonRoot must be true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            problems.append(f"container {name}: runAsUser must not be 0")
        seccomp = seccomp_ok(ctx)
        if seccomp is None:
            seccomp = seccomp_ok(pod_ctx)
        if not seccomp:
            problems.append(f"container {name}: seccompProfile must be RuntimeDefault or Localhost")
        if ctx.get("procMount", "Default") != "Default":
            problems.append(f"container {name}: procMount must be Default")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"container {name}: hostPort {port['hostPort']} is not allowed")
    return problems
