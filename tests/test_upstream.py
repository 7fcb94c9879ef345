"""The offline checks run against exactly the upstream bytes the project was tested with
(`infra/offline/upstream.sha256`, infra/offline/upstream.py), wherever the folders come from."""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import pytest

from components.release_manifest import SOURCE_ANNOTATION
from infra.offline import caches, cli, render, upstream
from tests.cli import run_cli


def test_the_configured_upstream_folders_are_the_locked_bytes():
    assert upstream.check() == []


def test_the_lock_agrees_with_the_sums_shipped_beside_the_bytes():
    """Where a folder ships its own SHA256SUMS (`sha256sum` of its files), every file it lists is locked with the
    same digest: the lock pins what upstream's copy says it is, not only what was found on one machine."""
    lock = upstream.read_lock(upstream.LOCK.read_text())
    locked_units = {upstream.unit(path) for path in lock}
    compared = 0
    for name, folder in upstream.roots().items():
        sums = folder / "SHA256SUMS"
        if not sums.is_file():
            continue
        for line in sums.read_text().splitlines():
            digest, _, path = line.partition("  ")
            locked = f"{name}/{path.removeprefix('./')}"
            if upstream.unit(locked) in locked_units:  # not another version the mirror keeps beside the pinned one
                assert lock.get(locked) == digest, path
                compared += 1
    assert compared > 0


@pytest.fixture
def folders(tmp_path):
    """A small stand-in for the three folders: one chart version, one manifest, one CRD group, and notes."""
    tree = {
        "charts/probe-1.0.0/Chart.yaml": "name: probe\nversion: 1.0.0\n",
        "charts/probe-1.0.0/templates/a.yaml": "kind: ConfigMap\n",
        "charts/probe-1.0.0/README.md": "the chart's own readme, inside it: locked\n",
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
    assert "charts/README.md" not in lock and "charts/probe-1.0.0/README.md" in lock and len(lock) == 5
    assert upstream.read_lock(upstream.lock_text(lock)) == lock
    assert upstream.problems(lock, folders) == []


def test_a_changed_missing_or_injected_file_is_named(folders):
    lock = upstream.digests(folders)
    (folders["charts"] / "probe-1.0.0/templates/a.yaml").write_text("kind: Secret\n")
    (folders["crds"] / "example.io/widgets.yaml").unlink()
    (folders["charts"] / "probe-1.0.0/templates/extra.yaml").write_text("kind: Pod\n")
    found = upstream.problems(lock, folders)
    assert [problem.split(":")[0] for problem in found] == [
        "crds/example.io/widgets.yaml",
        "charts/probe-1.0.0/templates/a.yaml",
        "charts/probe-1.0.0/templates/extra.yaml",
    ]
    assert (
        "missing" in found[0] and "changed (locked" in found[1] and "inside the locked charts/probe-1.0.0" in found[2]
    )


def test_a_whole_unit_missing_a_wrong_folder_and_converted_line_endings_are_named_as_such(folders, tmp_path):
    (folders["charts"] / "other-2.0.0").mkdir()
    (folders["charts"] / "other-2.0.0/Chart.yaml").write_text("name: other\nversion: 2.0.0\n")
    lock = upstream.digests(folders)
    shutil.rmtree(folders["charts"] / "probe-1.0.0")
    assert upstream.problems(lock, folders) == ["charts/probe-1.0.0: missing (all 3 locked files)"]
    wrong = {**folders, "charts": tmp_path}  # the folders' parent instead of charts/
    assert (
        upstream.problems(lock, wrong)[0]
        == f"charts: none of its 4 locked files is in {tmp_path} (is it the charts folder?)"
    )
    manifest = folders["manifests"] / "operator-v1.yaml"
    manifest.write_bytes(manifest.read_bytes().replace(b"\n", b"\r\n"))
    assert upstream.problems(lock, folders)[1].startswith("manifests/operator-v1.yaml: changed, its line endings")


def test_a_symbolic_link_is_refused_wherever_it_points(folders, tmp_path):
    """Helm's loader follows links: a linked folder of templates would be rendered without being pinned."""
    lock = upstream.digests(folders)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.yaml").write_text("kind: Pod\n")
    (folders["charts"] / "probe-1.0.0/templates/more").symlink_to(tmp_path / "elsewhere")
    (folders["manifests"] / "operator-v2.yaml").symlink_to(tmp_path / "elsewhere" / "b.yaml")
    (folders["charts"] / "probe-1.0.0/templates/a.yaml").unlink()
    (folders["charts"] / "probe-1.0.0/templates/a.yaml").symlink_to(tmp_path / "elsewhere" / "b.yaml")
    assert upstream.problems(lock, folders) == [
        "charts/probe-1.0.0/templates/a.yaml: a symbolic link; the lock pins regular files only",
        "charts/probe-1.0.0/templates/more: a symbolic link; the lock pins regular files only",
        "manifests/operator-v2.yaml: a symbolic link; the lock pins regular files only",
    ]  # the link in a locked file's place is not also reported missing
    assert "charts/probe-1.0.0/templates/more/b.yaml" not in upstream.digests(folders)


def test_every_crd_file_is_locked_whatever_its_group(folders):
    """The schema checks load every CRD of the folder, so a new group would be read unpinned."""
    lock = upstream.digests(folders)
    (folders["crds"] / "zz.example.io").mkdir()
    (folders["crds"] / "zz.example.io/widgets.yaml").write_text("kind: CustomResourceDefinition\n")
    assert upstream.problems(lock, folders) == [
        "crds/zz.example.io/widgets.yaml: not in the lock (the schema checks read every CRD file)"
    ]


def test_the_lock_holds_exactly_what_the_stacks_read_and_every_crd(rendered):
    """A chart or manifest version bumped without `python -m infra upstream --write` would be read unchecked; one no
    stack reads any more is left over in the lock."""
    locked = {upstream.unit(path) for path in upstream.read_lock(upstream.LOCK.read_text())}
    read = set().union(*(upstream.read_by(run) for run in rendered.values()))
    found, _ = upstream.files({"crds": upstream.roots()["crds"]})
    assert locked == read | {upstream.unit(name) for name in found}
    assert {u.split("/")[0] for u in read} == {"charts", "manifests"}


def test_a_render_reads_its_releases_chart_folders_and_its_manifests_mirror_files():
    release = SimpleNamespace(
        type="kubernetes:helm.sh/v3:Release",
        inputs={"chart": "oci://r.io/x/probe", "version": "1.0.0"},
        urn="u",
        name="n",
    )
    url = "https://github.com/o/operator/releases/download/v1.2.3/operator.yml"
    chart = SimpleNamespace(
        type="kubernetes:helm.sh/v4:Chart", inputs={"chart": "crds-only", "version": "v2.0.0"}, urn="c", name="c"
    )
    run = SimpleNamespace(
        registrations=[release, chart, SimpleNamespace(type="kubernetes:core/v1:Namespace", inputs={})],
        kubernetes_objects=lambda: [{"metadata": {"annotations": {SOURCE_ANNOTATION: url}}}, {"metadata": {}}],
    )
    assert upstream.read_by(run) == {"charts/probe-1.0.0", "charts/crds-only-v2.0.0", "manifests/operator-v1.2.3.yml"}


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
    # What the stacks read: the chart and the manifest (not another version beside them), and every CRD.
    (folders["charts"] / "probe-0.9.0").mkdir()
    (folders["charts"] / "probe-0.9.0/Chart.yaml").write_text("name: probe\nversion: 0.9.0\n")
    monkeypatch.setattr(cli, "stack_names", lambda: ["one"])
    monkeypatch.setattr(render, "render_stack", lambda stack: stack)
    monkeypatch.setattr(upstream, "read_by", lambda run: {"charts/probe-1.0.0", "manifests/operator-v1.yaml"})
    written = run_cli("upstream", "--write")
    assert written.returncode == 0, written.stderr
    assert upstream.read_lock(upstream.LOCK.read_text()).keys() == {
        "charts/probe-1.0.0/Chart.yaml",
        "charts/probe-1.0.0/README.md",
        "charts/probe-1.0.0/templates/a.yaml",
        "manifests/operator-v1.yaml",
        "crds/example.io/widgets.yaml",
    }
    checked = run_cli("upstream")
    assert checked.returncode == 0 and "5 locked upstream files match" in checked.stdout
    (folders["manifests"] / "operator-v1.yaml").write_text("kind: DaemonSet\n")
    refused = run_cli("upstream")
    assert refused.returncode == 1 and "manifests/operator-v1.yaml: changed" in refused.stderr
    assert f"manifests = {folders['manifests']}" in refused.stderr and "upstream --write" in refused.stderr
    upstream.LOCK.write_text("not a lock line\n")
    malformed = run_cli("upstream")
    assert malformed.returncode == 2 and "line 1" in malformed.stderr and "Traceback" not in malformed.stderr


def test_a_malformed_or_repeated_lock_line_is_named():
    good = f"{'a' * 64}  charts/x-1.0.0/Chart.yaml"
    with pytest.raises(RuntimeError, match="line 2: expected '<sha256 in hex>  <path>'"):
        upstream.read_lock(f"{good}\n{'g' * 64}  charts/x-1.0.0/values.yaml\n")
    with pytest.raises(RuntimeError, match=re.escape("line 2: charts/x-1.0.0/Chart.yaml is listed twice")):
        upstream.read_lock(f"{good}\n{good}\n")


def test_the_lock_is_not_written_over_what_it_cannot_pin(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(caches, "CHARTS_DIR", folders["charts"])
    monkeypatch.setattr(caches, "MANIFESTS_DIR", folders["manifests"])
    monkeypatch.setattr(caches, "CRDS_DIR", tmp_path / "no-such-folder")
    monkeypatch.setattr(upstream, "LOCK", tmp_path / "upstream.sha256")
    (folders["charts"] / "probe-1.0.0/templates/more").symlink_to(folders["manifests"])
    refused = run_cli("upstream", "--write")
    assert refused.returncode == 1 and not upstream.LOCK.exists()
    assert "crds: folder" in refused.stderr and "charts/probe-1.0.0/templates/more: a symbolic link" in refused.stderr
    missing = run_cli("upstream")
    assert missing.returncode == 2 and "upstream.sha256 not found" in missing.stderr


def test_a_base_is_checked_for_its_charts_and_manifests_not_the_crds(folders):
    """The CRD folders hold one version of each file, which a change to a CRD changes, and rendering a base reads no
    CRD file: a base lock that differs there passes (`infra.offline.diff` runs this before rendering the base)."""
    lock = upstream.digests(folders)
    other_crd = {**lock, "crds/example.io/widgets.yaml": "0" * 64, "crds/old.example.io/gone.yaml": "1" * 64}
    assert upstream.base_problems(upstream.lock_text(other_crd), folders) == []
    other_chart = {**lock, "charts/probe-1.0.0/Chart.yaml": "0" * 64}
    assert [p.split(":")[0] for p in upstream.base_problems(upstream.lock_text(other_chart), folders)] == [
        "charts/probe-1.0.0/Chart.yaml"
    ]
