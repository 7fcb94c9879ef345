"""Golden subsets: per stack, the facts a reviewer cares about and the count of every resource type.

Not a snapshot of everything (that would change with every refactor): only what must not drift silently -
images, scaling bounds, data-cluster sizes and protection, TLS, operator chart and release-manifest versions,
exposed paths, the NetworkPolicies of each namespace. `make golden` regenerates the files of every stack; review
the diff.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from components.release_manifest import SOURCE_ANNOTATION
from infra.offline.mocks import ProgramRun
from infra.stack_config import PROJECT_ROOT

GOLDEN_DIR = PROJECT_ROOT / "tests" / "golden"
REGENERATE = "make golden"


def subset(run: ProgramRun) -> dict:
    def key(obj: dict) -> str:
        meta = obj["metadata"]
        return f"{meta.get('namespace', '_cluster')}/{meta['name']}"

    protect = {(r.inputs["kind"], key(r.inputs)): r.protect for r in run.registrations if r.is_kubernetes_object}
    scaling = {}
    for hpa in run.objects("HorizontalPodAutoscaler"):
        scaling[key(hpa)] = ["hpa", hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]]
    for so in run.objects("ScaledObject"):
        scaling[key(so)] = ["keda", so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]]
    return {
        "resource_counts": dict(sorted(Counter(r.type for r in run.registrations).items())),
        "deployments": {
            key(d): {
                "image": d["spec"]["template"]["spec"]["containers"][0]["image"],
                "priority": d["spec"]["template"]["spec"].get("priorityClassName"),
                "scaling": scaling.get(key(d)),
            }
            for d in run.objects("Deployment")
        },
        "databases": {
            key(c): {
                "instances": c["spec"]["instances"],
                "synchronous": c["spec"]["postgresql"].get("synchronous"),
                "backup": bool(c["spec"].get("plugins")),
                "protect": protect[("Cluster", key(c))],
            }
            for c in run.objects("Cluster")
        },
        "queues": {
            key(q): {
                "replicas": q["spec"]["replicas"],
                "tls_only": q["spec"]["tls"]["disableNonTLSListeners"],
                "protect": protect[("RabbitmqCluster", key(q))],
            }
            for q in run.objects("RabbitmqCluster")
        },
        "charts": {
            r.inputs["chart"].rsplit("/", 1)[-1]: r.inputs["version"]
            for r in run.of_type("kubernetes:helm.sh/v3:Release")
        },
        "manifests": sorted(
            {
                o["metadata"]["annotations"][SOURCE_ANNOTATION]
                for o in run.kubernetes_objects()
                if SOURCE_ANNOTATION in o["metadata"].get("annotations", {})
            }
        ),
        "routes": sorted(
            f"{key(r)} {r['spec']['rules'][0].get('matches', [{}])[0].get('path', {}).get('value', '')}"
            for r in run.objects("HTTPRoute")
        ),
        "network_policies": sorted(key(p) for p in run.objects("NetworkPolicy")),
    }


def path(stack: str) -> Path:
    return GOLDEN_DIR / f"{stack}.json"


def write(stack: str, run: ProgramRun) -> bool:
    """Write the stack's golden subset; whether that changed the file."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    return write_if_changed(path(stack), json.dumps(subset(run), indent=2, sort_keys=True) + "\n")


def write_if_changed(target: Path, text: str) -> bool:
    """`text` into `target` unless it holds it already (`make golden` names only the files it changed)."""
    if target.exists() and target.read_text() == text:
        return False
    target.write_text(text)
    return True
