"""checkov over both stacks' rendered manifests: zero failed checks, and every skip justified and listed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from infra.offline import render
from infra.stack_config import PROJECT_ROOT

SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")


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
            "--quiet",
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


@pytest.fixture(scope="module")
def scan(rendered, tmp_path_factory):
    # A plain path: checkov silently skips folders whose path has a component starting with a dot.
    root = tmp_path_factory.mktemp("scan")
    for stack, run in rendered.items():
        render.write(run, root / stack)
    result = subprocess.run(
        [
            checkov(),
            "-d",
            str(root),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
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


def test_checkov_finds_no_failed_check(scan):
    failed = [(f["check_id"], f["resource"]) for f in scan["results"]["failed_checks"]]
    assert not failed, failed
    assert scan["summary"]["passed"] > 1000, "checkov scanned too little: did it see the manifests?"
    assert scan["summary"]["resource_count"] > 300


def test_every_skip_is_an_annotation_with_a_reason_listed_in_the_readme(stack_run):
    readme = (PROJECT_ROOT / "README.md").read_text()
    for obj in stack_run.kubernetes_objects():
        for key, value in (obj["metadata"].get("annotations") or {}).items():
            if SKIP_ANNOTATION.match(key):
                check, _, reason = value.partition("=")
                assert reason.strip(), f"{key} on {obj['kind']}/{obj['metadata']['name']} gives no reason"
                assert check in readme, f"{check} is skipped but not listed in the README's security section"


def test_checkov_catches_a_bad_manifest(tmp_path):
    """The scanner really runs on what we give it: a privileged pod fails."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad, namespace: x}\n"
        "spec:\n  containers:\n  - name: c\n    image: nginx\n    securityContext: {privileged: true}\n"
    )
    failed = {f["check_id"] for f in run_checkov(tmp_path / "bad")["results"]["failed_checks"]}
    assert "CKV_K8S_16" in failed  # privileged container
