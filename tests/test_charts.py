"""Helm releases expanded offline with the real Helm engine: what the cluster will run, rendered and marked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infra.offline import charts, render
from infra.offline.mocks import Registration
from infra.stack_config import read_stack_files
from tests.conftest import STACKS_DIR

FIXTURES = Path(__file__).parent / "fixtures" / "charts"


def release(chart: str = "probe", version: str = "1.0.0", **inputs) -> Registration:
    return Registration(
        urn=f"urn:pulumi:test::p::kubernetes:helm.sh/v3:Release::{chart}",
        type="kubernetes:helm.sh/v3:Release",
        name=chart,
        parent="",
        custom=True,
        inputs={"chart": chart, "version": version, "name": "demo", "namespace": "tools", **inputs},
    )


def expand(**inputs) -> dict[tuple[str, str], charts.ChartObject]:
    objects = charts.expand_run([release(**inputs)], "v1.31.0", FIXTURES)
    return {(o.object["kind"], o.object["metadata"]["name"]): o for o in objects}


def test_the_cache_holds_upstream_bytes():
    """../shared/charts is what `helm pull --untar` gave: every file matches its recorded digest."""
    result = subprocess.run(
        ["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=charts.CHARTS_DIR, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_release_expands_with_its_values_release_and_kubernetes_version():
    objects = expand(values={"greeting": "bonjour"})
    facts = objects[("ConfigMap", "demo-facts")].object
    assert facts["data"] == {"greeting": "bonjour", "kubeVersion": "v1.31.0"}
    # Helm's kube client puts namespaced objects without a namespace into the release namespace, not others.
    assert facts["metadata"]["namespace"] == "tools"
    assert "namespace" not in objects[("ClusterRole", "demo-reader")].object["metadata"]
    # A custom kind is cluster-scoped when its CRD says so.
    assert "namespace" not in objects[("Widget", "demo-widget")].object["metadata"]


def test_an_expansion_is_kept_on_disk_and_a_changed_chart_is_expanded_again(tmp_path, monkeypatch):
    chart = tmp_path / "charts" / "probe-1.0.0"
    shutil.copytree(FIXTURES / "probe-1.0.0", chart)
    monkeypatch.setenv(charts.CHART_CACHE_ENV, str(tmp_path / "cache"))
    charts.clear_cache()
    first = charts.expand_run([release()], "v1.31.0", tmp_path / "charts")
    assert len(list((tmp_path / "cache").glob("*.pickle"))) == 1

    def no_helm(*args):
        raise AssertionError("expanded through Helm again")

    charts.clear_cache()  # as a new process: nothing in memory
    monkeypatch.setattr(charts, "_expand_chart", no_helm)
    again = charts.expand_run([release()], "v1.31.0", tmp_path / "charts")
    assert [o.object for o in again] == [o.object for o in first]

    (chart / "values.yaml").write_text((chart / "values.yaml").read_text() + "\n# changed\n")
    charts.clear_cache()
    with pytest.raises(AssertionError, match="through Helm again"):
        charts.expand_run([release()], "v1.31.0", tmp_path / "charts")
    charts.clear_cache()


def test_templates_are_split_the_way_helm_splits_them():
    # `---# comment` is a separator for Helm; a YAML multi-document loader would fail or merge the documents.
    docs = charts.load_documents("a: 1\nkind: X\n---# note\nkind: Y\n---\n\n---\nkind: Z\n")
    assert [d["kind"] for d in docs] == ["X", "Y", "Z"]
    assert ("ClusterRole", "demo-reader") in expand()


def test_every_object_is_marked_with_the_release_that_owns_it():
    objects = expand()
    for obj in objects.values():
        source = obj.object["metadata"]["annotations"][charts.SOURCE_ANNOTATION]
        assert source.startswith("helm tools/demo probe-1.0.0 "), source
    templated = objects[("ConfigMap", "demo-facts")].object["metadata"]["annotations"]
    assert templated[charts.HELM_RELEASE_NAME] == "demo"
    assert templated[charts.HELM_RELEASE_NAMESPACE] == "tools"


def test_what_a_render_sets_on_its_chart_objects_stays_its_own():
    """The objects are shared by every expansion in the process below what each gets of its own (its top level,
    metadata and annotations: `charts._objects`); one render's namespace and marks never reach another's."""
    first, second = expand(), expand()
    for key, obj in first.items():
        obj.object["metadata"]["namespace"] = "elsewhere"
        obj.object["metadata"]["annotations"][charts.SOURCE_ANNOTATION] = "changed"
        obj.object["status"] = {"written": True}
        other = second[key].object
        assert other["metadata"].get("namespace") != "elsewhere" and "status" not in other
        assert other["metadata"]["annotations"][charts.SOURCE_ANNOTATION].startswith("helm tools/demo "), key
    assert expand() == second


def test_crds_hooks_and_notes():
    objects = expand()
    crd = objects[("CustomResourceDefinition", "widgets.example.com")]
    assert crd.source == "crds/widgets.yaml" and crd.hook is None
    assert objects[("ServiceAccount", "demo-migrate")].hook == "pre-install,pre-upgrade"
    assert ("Pod", "demo-test") not in objects, "`helm test` hooks never run for a Release"
    assert not any("NOTES" in o.source for o in objects.values())
    assert ("CustomResourceDefinition", "widgets.example.com") not in expand(skipCrds=True)


def test_crds_of_a_disabled_subchart_are_not_installed():
    """Helm prunes a subchart whose condition is false, its crds/ folder included (gateway-helm's `crds.enabled`)."""
    assert ("CustomResourceDefinition", "gadgets.example.com") in expand()
    assert ("CustomResourceDefinition", "gadgets.example.com") not in expand(values={"extras": {"enabled": False}})
    assert ("CustomResourceDefinition", "widgets.example.com") in expand(values={"extras": {"enabled": False}})


def test_a_version_missing_from_the_cache_is_named():
    with pytest.raises(charts.ChartCacheError, match=r"chart 'probe' version '9\.9\.9' is not in the offline cache"):
        expand(version="9.9.9")
    with pytest.raises(charts.ChartCacheError, match=r"cached: probe-1\.0\.0"):
        expand(version="9.9.9")


def test_a_missing_cache_says_what_is_missing_and_where_the_folder_came_from(tmp_path, monkeypatch):
    monkeypatch.delenv(charts.CHARTS_ENV, raising=False)
    with pytest.raises(charts.ChartCacheError, match=r"the offline chart cache .* does not exist.*; or set SETTLEMENT"):
        charts.expand_run([release()], "v1.31.0", tmp_path / "nowhere")
    monkeypatch.setenv(charts.CHARTS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(charts.ChartCacheError, match=r"does not exist.*; check SETTLEMENT_CHARTS_DIR, which names it"):
        charts.expand_run([release()], "v1.31.0", tmp_path / "nowhere")
    # The variable names another folder (a child render's environment names the parent's): not the one missing.
    with pytest.raises(charts.ChartCacheError, match=r"does not exist.*; or set SETTLEMENT"):
        charts.expand_run([release()], "v1.31.0", tmp_path / "elsewhere")


def test_every_release_of_a_stack_expands_from_its_pinned_chart(stack_run):
    releases = [r for r in stack_run.registrations if r.type in charts.RELEASE_TYPES]
    assert releases
    by_release = {o.release.urn for o in stack_run.chart_objects}
    for r in releases:
        assert r.urn in by_release, f"{r.name} installs nothing?"
    for obj in stack_run.chart_objects:
        assert obj.release.version == next(r for r in releases if r.urn == obj.release.urn).inputs["version"]


def test_chart_objects_are_written_and_listed(any_stack_run):
    """Every object a release installs gets its manifest file and its resources.json entry: what `render.write`
    writes is exactly `render.manifests` and `render.resources` (on disk: `test_render`'s write tests)."""
    written = set(render.manifests(any_stack_run))
    for obj in any_stack_run.chart_objects:
        assert render.manifest_path(obj.object) in written
    listed = [entry for entry in render.resources(any_stack_run) if entry["type"] == charts.CHART_OBJECT_TYPE]
    assert len(listed) == len(any_stack_run.chart_objects)


# Helm's inputs for a release (everything `charts.helm_templates` passes it) already rendered twice in this process:
# most releases are the same in several stacks, and the same inputs prove nothing new.
_SHOWN_DETERMINISTIC: set[tuple[str, ...]] = set()


def test_the_expansion_is_deterministic(any_stack_run):
    """Helm renders every release of the stack to the same text twice (a generated password or certificate would
    differ), so the objects parsed from it are the same in every render. The program's own determinism is
    `test_render.test_render_is_deterministic`."""
    version = f"v{render.kubernetes_version(read_stack_files(any_stack_run.stack, STACKS_DIR))}.0"
    releases = [charts.release_of(r) for r in any_stack_run.registrations if r.type in charts.RELEASE_TYPES]
    for release in releases:
        inputs = (release.chart, release.version, json.dumps(release.values, sort_keys=True), release.name)
        inputs += (release.namespace, version)
        if inputs in _SHOWN_DETERMINISTIC:
            continue
        first = charts.helm_templates(release, version)
        assert first, f"{release.name} renders nothing"
        assert charts.helm_templates(release, version) == first, f"{release.name} renders differently each time"
        _SHOWN_DETERMINISTIC.add(inputs)


def test_a_chart_that_generates_a_secret_is_caught_as_not_deterministic(tmp_path):
    """What the determinism test above relies on: Helm's text differs between two renders of such a chart."""
    shutil.copytree(FIXTURES / "probe-1.0.0", tmp_path / "probe-1.0.0")
    (tmp_path / "probe-1.0.0" / "templates" / "password.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: generated\nstringData:\n"
        "  password: {{ randAlphaNum 24 | quote }}\n"
    )
    probe = charts.release_of(release())
    assert charts.helm_templates(probe, "v1.31.0", tmp_path) != charts.helm_templates(probe, "v1.31.0", tmp_path)


def test_the_helm_engine_is_an_offline_extra_that_pulumi_up_never_installs():
    """helm-python-sdk has wheels for Linux x86_64 and macOS arm64 only: deploying must work from anywhere."""
    import tomllib

    from infra.stack_config import PROJECT_ROOT

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("helm-python-sdk") for d in project["dependencies"])
    assert any(d.startswith("helm-python-sdk==") for d in project["optional-dependencies"]["offline"])
    requirements = [
        line.strip()
        for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert requirements == ["-e ."], "what `pulumi install` reads must not pull the offline extras"
    # What the engine imports (the program, and everything it imports) loads no offline tool.
    probe = (
        "import sys, infra.program; "
        "print(sorted(m for m in sys.modules if m.startswith(('helm_python', 'infra.offline'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_a_values_change_shows_object_by_object_inside_its_release(project):
    """What `pulumi preview` shows as one changed Release, the offline diff shows as the objects that change."""
    from infra.offline import diff

    stack = "dev"
    base = render.resources(project.render(stack))
    monitoring = project.load(f"Pulumi.{stack}.yaml")["config"].get("settlement-platform:monitoring", {})
    project.set_stack_key(stack, "monitoring", {**monitoring, "retention": "3d"})
    changes = diff.diff(base, render.resources(project.render(stack)))
    inside = [c for c in changes if c.urn.split("$")[-1].startswith("monitoring.coreos.com/v1/Prometheus/")]
    assert [c.action for c in inside] == ["changed"]
    assert any(f.path == "spec.retention" and f.after == "3d" for f in inside[0].fields), inside[0].fields
    assert "kube-prometheus-stack" in diff.report(stack, "base", changes)
