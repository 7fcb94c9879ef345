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
