"""checkov over both stacks' rendered manifests: zero failed checks, and every skip justified and listed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from infra.offline import render
from infra.stack_config import PROJECT_ROOT

SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
SKIP_LIST = PROJECT_ROOT / "infra" / "offline" / "checkov_skips.yaml"


def load_skips() -> list[dict]:
    """What checkov may fail on in the charts' objects, one entry (check, kind, namespace, name, reason) each."""
    return yaml.safe_load(SKIP_LIST.read_text()) or []


def checkov() -> str:
    default = PROJECT_ROOT / ".venv-checkov" / "bin" / "checkov"
    path = os.environ.get("CHECKOV") or (str(default) if default.exists() else shutil.which("checkov"))
    if not path or not os.path.exists(path):
        pytest.fail("checkov is not installed: run `make test` (it builds .venv-checkov from requirements-checkov.txt)")
    return path


def run_checkov(directory) -> dict:
    """checkov over a folder of manifests, offline, as JSON."""
    result = subprocess.run(
        [
            checkov(),
            "-d",
            str(directory),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--compact",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    return report if isinstance(report, dict) else report[0]


# Kinds no checkov check looks at, left out of the scan: the CRDs are 13 MB of YAML per stack that checkov parses
# for nothing (about three quarters of the scan's time). `test_checkov_checks_nothing_the_scan_leaves_out` proves
# it against checkov's own registries, so a checkov upgrade that starts checking them puts them back.
UNSCANNED_KINDS = {"CustomResourceDefinition"}

CHECKED_KINDS_SCRIPT = """
import json, pathlib
import checkov.kubernetes.checks.graph_checks as graph
import yaml
from checkov.kubernetes.checks.resource.registry import registry

def resource_types(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("resource_types", "connected_resource_types"):
                yield from value
            else:
                yield from resource_types(value)
        if node.get("cond_type") == "filter" and node.get("attribute") == "kind":
            yield from node["value"]
    elif isinstance(node, list):
        for value in node:
            yield from resource_types(value)

kinds = set(registry.checks) | set(getattr(registry, "wildcard_checks", {}))
for path in pathlib.Path(graph.__path__[0]).rglob("*"):
    if path.suffix in (".json", ".yaml", ".yml"):
        kinds |= set(resource_types(yaml.safe_load(path.read_text())))
print(json.dumps(sorted(kinds)))
"""


def checked_kinds() -> set[str]:
    """Every kind a checkov check (resource or graph) applies to, read from the installed checkov's registries
    (checkov/kubernetes/checks/resource/registry.py; the graph checks' kind filters, `resource_types` and
    `connected_resource_types`); `all` would mean every kind."""
    python = os.path.join(os.path.dirname(checkov()), "python")
    result = subprocess.run([python, "-c", CHECKED_KINDS_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_checkov_checks_nothing_the_scan_leaves_out():
    kinds = checked_kinds()
    assert {"Deployment", "Role", "NetworkPolicy"} <= kinds, "the registries were not read"
    assert "all" not in kinds and not UNSCANNED_KINDS & kinds


@pytest.fixture(scope="module")
def scan(rendered, tmp_path_factory):
    # A plain path: checkov silently skips folders whose path has a component starting with a dot. Only the
    # manifests: resources.json is the render's resource list, not something the cluster receives.
    # An object identical in several stacks (most chart objects: the same chart, values and names) is scanned once,
    # under the first stack that has it: checkov's result for it is the same, and the failures are compared as
    # (check, kind, namespace, name), whichever stack holds them. Dev, prod, prod-dr and prod-drill: 1572 objects,
    # 653 distinct.
    root = tmp_path_factory.mktemp("scan")
    seen = set()
    for stack, run in rendered.items():
        for path, obj in render.manifests(run).items():
            if obj["kind"] in UNSCANNED_KINDS:
                continue
            text = render.manifest_text(obj)
            if (path, text) not in seen:
                seen.add((path, text))
                target = root / stack / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    largest = max(
        sum(o["kind"] not in UNSCANNED_KINDS for o in render.manifests(r).values()) for r in rendered.values()
    )
    # Beside them, in the same run, a pod checkov must fail (`test_checkov_catches_a_bad_manifest`): one scanner
    # start instead of two.
    (root / "probe").mkdir()
    (root / "probe" / "pod.yaml").write_text(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: bad, namespace: {PROBE_NAMESPACE}}}\n"
        "spec:\n  containers:\n  - name: c\n    image: nginx\n    securityContext: {privileged: true}\n"
    )
    return {"written": len(seen), "largest_stack": largest, **run_checkov(root)}


PROBE_NAMESPACE = "checkov-probe"
"""The namespace of the scan's planted bad pod: no stack has it (asserted below)."""


def _failures(scan: dict) -> set[tuple[str, str, str, str]]:
    """(check, kind, namespace, name) of every failed check; checkov names a resource `Kind.namespace.name`
    and calls the namespace of a cluster-scoped object `default`."""
    out = set()
    for f in scan["results"]["failed_checks"]:
        kind, namespace, name = f["resource"].split(".", 2)
        out.add((f["check_id"], kind, namespace, name))
    return out


def _listed_skips() -> dict[tuple[str, str, str, str], str]:
    return {(s["check"], s["kind"], s.get("namespace") or "default", s["name"]): s["reason"] for s in load_skips()}


def test_checkov_finds_no_failed_check_but_the_listed_chart_skips(scan, rendered):
    assert not [
        o for run in rendered.values() for o in run.all_objects() if o["metadata"].get("namespace") == PROBE_NAMESPACE
    ]
    failed = {f for f in _failures(scan) if f[2] != PROBE_NAMESPACE}
    skips = _listed_skips()
    assert not sorted(failed - set(skips)), "harden it through the chart's values, or list it with a reason"
    assert not sorted(set(skips) - failed), "listed skips that no longer fail: remove them"
    # Every object of the largest stack is distinct within it, so at least that many files were written.
    assert scan["written"] >= scan["largest_stack"] > 0
    # checkov counts each file's object and, for some kinds, parts of it as resources: at least one each. The probe
    # is one resource of its own, and its passed checks are not the manifests'.
    probe_passed = sum(1 for c in scan["results"]["passed_checks"] if c["resource"].split(".")[1] == PROBE_NAMESPACE)
    assert scan["summary"]["resource_count"] - 1 >= scan["written"], "checkov did not scan every manifest written"
    assert scan["summary"]["passed"] - probe_passed > scan["written"], "checkov scanned too little: the manifests?"


def test_listed_skips_are_for_chart_objects_only_with_reasons(rendered):
    """The platform's own objects carry their skips as annotations (below); the list is for what charts install."""
    chart_objects = {
        (o.object["kind"], o.object["metadata"].get("namespace") or "default", o.object["metadata"]["name"])
        for run in rendered.values()
        for o in run.chart_objects
    }
    platform_objects = {
        (o["kind"], o["metadata"].get("namespace") or "default", o["metadata"]["name"])
        for run in rendered.values()
        for o in run.kubernetes_objects()
    }
    for (check, kind, namespace, name), reason in _listed_skips().items():
        assert re.fullmatch(r"CKV2?_K8S_\d+", check), check
        assert (kind, namespace, name) in chart_objects - platform_objects, (check, kind, namespace, name)
        assert len(reason) > 20, f"{check} on {kind} {namespace}/{name}: give the reason"


def test_every_skip_is_an_annotation_with_a_reason_listed_in_the_readme(any_stack_run):
    readme = (PROJECT_ROOT / "README.md").read_text()
    for obj in any_stack_run.kubernetes_objects():
        for key, value in (obj["metadata"].get("annotations") or {}).items():
            if SKIP_ANNOTATION.match(key):
                check, _, reason = value.partition("=")
                assert reason.strip(), f"{key} on {obj['kind']}/{obj['metadata']['name']} gives no reason"
                assert check in readme, f"{check} is skipped but not listed in the README's security section"


def test_checkov_catches_a_bad_manifest(scan):
    """The scanner really runs on what we give it: the privileged pod planted beside the manifests fails."""
    assert ("CKV_K8S_16", "Pod", PROBE_NAMESPACE, "bad") in _failures(scan)  # privileged container
