"""The offline checks run against exactly the upstream bytes the project was tested with
(`infra/offline/upstream.sha256`, infra/offline/upstream.py), wherever the folders come from."""

from __future__ import annotations

import shutil

import pytest

from infra.offline import caches, upstream
from tests.cli import run_cli


def test_the_configured_upstream_folders_are_the_locked_bytes():
    assert upstream.check() == []


def test_the_lock_agrees_with_the_sums_shipped_beside_the_bytes():
    """Where a folder ships its own SHA256SUMS (`sha256sum` of its files), every file it lists is locked with the
    same digest: the lock pins what upstream's copy says it is, not only what was found on one machine."""
    lock = upstream.read_lock(upstream.LOCK.read_text())
    compared = 0
    for name, folder in upstream.roots().items():
        sums = folder / "SHA256SUMS"
        if not sums.is_file():
            continue
        for line in sums.read_text().splitlines():
            digest, _, path = line.partition("  ")
            assert lock.get(f"{name}/{path.removeprefix('./')}") == digest, path
            compared += 1
    assert compared > 0


@pytest.fixture
def folders(tmp_path):
    """A small stand-in for the three folders: one chart version, one manifest, one CRD group, and notes."""
    tree = {
        "charts/probe-1.0.0/Chart.yaml": "name: probe\nversion: 1.0.0\n",
        "charts/probe-1.0.0/templates/a.yaml": "kind: ConfigMap\n",
        "charts/README.md": "notes\n",
        "manifests/operator-v1.yaml": "kind: Deployment\n",
        "crds/example.io/widgets.yaml": "kind: CustomResourceDefinition\n",
    }
    for path, text in tree.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    return {name: tmp_path / name for name in ("charts", "manifests", "crds")}


def test_unchanged_folders_match_their_lock_and_notes_are_not_locked(folders):
    lock = upstream.digests(folders)
    assert "charts/README.md" not in lock and len(lock) == 4
    assert upstream.read_lock(upstream.lock_text(lock)) == lock
    assert upstream.problems(lock, folders) == []


def test_a_changed_missing_or_injected_file_is_named(folders):
    lock = upstream.digests(folders)
    (folders["charts"] / "probe-1.0.0/templates/a.yaml").write_text("kind: Secret\n")
    (folders["crds"] / "example.io/widgets.yaml").unlink()
    (folders["charts"] / "probe-1.0.0/templates/extra.yaml").write_text("kind: Pod\n")
    found = upstream.problems(lock, folders)
    assert [problem.split(":")[0] for problem in found] == [
        "charts/probe-1.0.0/templates/a.yaml",
        "crds/example.io/widgets.yaml",
        "charts/probe-1.0.0/templates/extra.yaml",
    ]
    assert "changed" in found[0] and "missing" in found[1] and "inside the locked charts/probe-1.0.0" in found[2]


def test_other_versions_and_notes_beside_the_locked_ones_are_left_alone(folders):
    lock = upstream.digests(folders)
    (folders["charts"] / "probe-0.9.0").mkdir()
    (folders["charts"] / "probe-0.9.0/Chart.yaml").write_text("name: probe\nversion: 0.9.0\n")
    (folders["manifests"] / "operator-v0.yaml").write_text("kind: Deployment\n")
    (folders["charts"] / "README.md").write_text("other notes\n")
    assert upstream.problems(lock, folders) == []


def test_a_missing_folder_is_named(folders):
    lock = upstream.digests(folders)
    shutil.rmtree(folders["crds"])
    assert upstream.problems(lock, folders) == [f"crds: folder {folders['crds']} not found"]


def test_the_command_checks_and_writes_the_lock(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(caches, "CHARTS_DIR", folders["charts"])
    monkeypatch.setattr(caches, "MANIFESTS_DIR", folders["manifests"])
    monkeypatch.setattr(caches, "CRDS_DIR", folders["crds"])
    monkeypatch.setattr(upstream, "LOCK", tmp_path / "upstream.sha256")
    written = run_cli("upstream", "--write")
    assert written.returncode == 0 and upstream.LOCK.read_text() == upstream.lock_text(upstream.digests(folders))
    checked = run_cli("upstream")
    assert checked.returncode == 0 and "4 locked upstream files match" in checked.stdout
    (folders["manifests"] / "operator-v1.yaml").write_text("kind: DaemonSet\n")
    refused = run_cli("upstream")
    assert refused.returncode == 1 and "manifests/operator-v1.yaml: changed" in refused.stderr
    upstream.LOCK.write_text("not a lock line\n")
    malformed = run_cli("upstream")
    assert malformed.returncode == 2 and "line 1" in malformed.stderr and "Traceback" not in malformed.stderr
