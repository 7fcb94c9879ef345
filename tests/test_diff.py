"""The offline preview diff: field-level changes, grouped summary, Alertmanager routing, danger, exit codes."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from infra.offline.diff import BASE_CACHE_ENV, CHART_OBJECT, FieldChange, compare, diff, report
from infra.offline.render import LIST_ONLY_ENV, REDACTED_ALERTMANAGER, RENDER_CACHE_ENV, redacted_alertmanager
from infra.stack_config import SECRET_PLACEHOLDER
from tests import topology_changes
from tests.cli import run_cli
from tests.conftest import one_edited


def resources(run) -> list[dict]:
    return [r.to_json() for r in run.registrations]


def test_an_unchanged_stack_has_no_changes(prod):
    assert diff(resources(prod), resources(prod)) == []


def test_bumping_a_replica_count_is_one_changed_field(prod, project):
    data = project.load("Pulumi.prod.yaml")
    data["config"]["settlement-platform:monitoring"] = {"prometheusReplicas": 3}
    project.save("Pulumi.prod.yaml", data)
    changes = diff(resources(prod), resources(project.render("prod")))
    assert len(changes) == 1
    (change,) = changes
    assert change.action == "changed" and not change.dangers
    assert change.label == "Release platform-infrastructure-monitoring-release"
    assert [(f.path, f.before, f.after) for f in change.fields] == [("values.prometheus.prometheusSpec.replicas", 2, 3)]
    assert "`values.prometheus.prometheusSpec.replicas`: `2` → `3`" in report("prod", "main", changes)


def test_a_service_minimum_moves_its_autoscaler_and_budget_only(prod, project):
    topology = project.topology()
    topology["payment"]["services"]["payment-api"]["replicas"] = {"min": 4}
    project.set_topology(topology)
    changes = diff(resources(prod), resources(project.render("prod")))
    fields = {(c.label, f.path, f.before, f.after) for c in changes for f in c.fields}
    assert fields == {
        ("HorizontalPodAutoscaler payment/payment-api", "spec.minReplicas", 3, 4),
        ("PodDisruptionBudget payment/payment-api", "spec.minAvailable", 2, 3),
    }
    assert {c.group for c in changes} == {"payment"}


def test_a_changed_selector_is_a_forced_replacement(prod):
    head, deployment = one_edited(resources(prod), lambda r: r["inputs"].get("kind") == "Deployment")
    deployment["inputs"]["spec"]["selector"]["matchLabels"]["tier"] = "api"
    (change,) = diff(resources(prod), head)
    assert change.action == "replaced"
    assert any("spec.selector" in d and "forces a replacement" in d for d in change.dangers)


def test_a_changed_service_cluster_ip_is_a_forced_replacement(prod):
    """pulumi-kubernetes provider/pkg/provider/diff.go: a Service is replaced for spec.clusterIP only (its type
    is patched in place)."""
    head, service = one_edited(resources(prod), lambda r: r["inputs"].get("kind") == "Service")
    service["inputs"]["spec"]["clusterIP"] = "10.96.0.42"
    (change,) = diff(resources(prod), head)
    assert change.action == "replaced" and "spec.clusterIP" in change.dangers[0]


def test_dropping_a_database_is_danger_and_says_whether_protect_holds(prod, dev, project):
    topology = project.topology()
    del topology["business"]["postgres"]
    for svc in topology["business"]["services"].values():
        svc["database"] = False
    project.set_topology(topology)
    changes = diff(resources(prod), resources(project.render("prod")))
    dangers = [d for c in changes for d in c.dangers]
    assert "deletes stateful Cluster business/business-db (blocked by protect)" in dangers
    text = report("prod", "main", changes)
    assert "#### :warning: Danger" in text and "#### business: " in text
    dev_changes = diff(resources(dev), resources(project.render("dev")))
    assert "deletes stateful Cluster business/business-db (NOT protected)" in [
        d for c in dev_changes for d in c.dangers
    ]


@pytest.fixture
def git_project(committed_project, tmp_path):
    """A throwaway git repository holding this project's tracked files, committed once: a copy of the worker's
    (a copy is a tenth of the archive, init, add and commit it takes)."""
    repo = tmp_path / "repo"
    shutil.copytree(committed_project, repo, symlinks=True)
    return repo


@pytest.fixture(scope="session")
def committed_project(tmp_path_factory):
    repo = tmp_path_factory.mktemp("committed") / "repo"
    repo.mkdir()
    from infra.stack_config import PROJECT_ROOT

    files = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive.stdout, check=True)
    for name in files.stdout.split():  # the working tree's version, so the test sees uncommitted code too
        source = PROJECT_ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes(source.read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=repo, check=True)
    return repo


def run_diff(repo, stack: str, base: str = "HEAD") -> subprocess.CompletedProcess:
    """`python -m infra diff <stack> --base HEAD` in `repo`, as CI runs it on a pull request (the base is rendered
    from a worktree by its own code, in a process of its own, pointed at this checkout's offline caches)."""
    return run_cli("diff", stack, "--base", base, "--project-dir", str(repo))


def test_renaming_a_prod_database_exits_non_zero_with_danger(git_project):
    topology_changes.rename_subsystem(git_project, "business", "settlement")

    result = run_diff(git_project, "prod")
    assert result.returncode == 1, result.stderr
    assert "deletes stateful Cluster business/business-db (blocked by protect)" in result.stdout
    assert "deletes stateful RabbitmqCluster business/business-mq (blocked by protect)" in result.stdout
    assert "#### settlement: " in result.stdout


def test_no_change_exits_zero(git_project):
    result = run_diff(git_project, "dev")
    assert result.returncode == 0, result.stderr
    assert "No changes." in result.stdout


def test_a_routing_change_is_shown_from_the_base_renders_redacted_config(git_project):
    stack_file = git_project / "Pulumi.dev.yaml"
    data = yaml.safe_load(stack_file.read_text())
    data["config"]["settlement-platform:alerting"]["routes"]["platform"]["page"] = "renamed"
    receivers = data["config"]["settlement-platform:alerting"]["receivers"]
    receivers["renamed"] = receivers[data["config"]["settlement-platform:alerting"]["routes"]["platform"]["ticket"]]
    stack_file.write_text(yaml.safe_dump(data))

    result = run_diff(git_project, "dev")
    assert result.returncode == 0, result.stderr
    assert "#### Alertmanager routing (secret values redacted)" in result.stdout
    assert '`route.routes[severity="page"].receiver`' in result.stdout and "→ `renamed`" in result.stdout
    assert "<secret:" in result.stdout and SECRET_PLACEHOLDER not in result.stdout


def test_a_base_is_rendered_once_per_tree_and_reused(git_project, tmp_path, monkeypatch):
    """With a base cache, the render of a tree is kept under the tree's hash (another commit, another tree: a
    fresh render) and read back (a planted marker shows it was)."""
    monkeypatch.setenv(BASE_CACHE_ENV, str(tmp_path / "bases"))
    assert run_diff(git_project, "dev").returncode == 0
    (kept,) = [p for p in (tmp_path / "bases").iterdir() if p.is_dir()]  # the render (beside it: its lock file)
    tree = subprocess.run(["git", "rev-parse", "HEAD^{tree}"], cwd=git_project, capture_output=True, text=True)
    assert kept.name.startswith(f"dev-{tree.stdout.strip()}-")
    assert not (kept / "manifests").exists(), "the diff reads a base's resources.json, not its manifests"
    entries = json.loads((kept / "resources.json").read_text())
    marker = {**entries[0], "urn": entries[0]["urn"] + "-planted", "name": "planted"}
    (kept / "resources.json").write_text(json.dumps([*entries, marker]))
    again = run_diff(git_project, "dev")
    assert "planted" in again.stdout  # read from the cache: the marker is "removed" by the working tree


def test_a_preview_renders_an_unchanged_stack_once(git_project, tmp_path, monkeypatch):
    """The preview workflow sets `SETTLEMENT_RENDER_CACHE`: the diff's base of an unchanged stack is its head, and
    the footprint after it reuses both."""
    from infra.offline import render

    runs, program = [], render._render
    monkeypatch.setattr(render, "_render", lambda stack, project_dir: runs.append(stack) or program(stack, project_dir))
    monkeypatch.setenv(render.RENDER_CACHE_ENV, str(tmp_path / "renders"))
    monkeypatch.delenv(BASE_CACHE_ENV, raising=False)
    assert run_diff(git_project, "dev").returncode == 0
    footprint = run_cli("footprint", "dev", "--base", "HEAD", "--project-dir", str(git_project))
    assert footprint.returncode == 0, footprint.stderr
    assert runs == ["dev"]
    (git_project / "Pulumi.dev.yaml").write_text((git_project / "Pulumi.dev.yaml").read_text() + "\n")
    assert run_diff(git_project, "dev").returncode == 0
    assert runs == ["dev", "dev"], "a changed stack file is a render of its own"


def test_a_bad_base_ref_exits_2_with_a_message_not_a_traceback(git_project):
    result = run_diff(git_project, "dev", base="no-such-ref")
    assert result.returncode == 2
    assert "--base 'no-such-ref' is not a commit" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_base_that_fails_to_render_exits_2_with_its_error(git_project):
    stack_file = git_project / "Pulumi.dev.yaml"
    good = stack_file.read_text()
    stack_file.write_text("config:\n  settlement-platform:defaults: {queue: {replicas: 4}}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "commit", "-qam", "broken"], cwd=git_project, check=True)
    stack_file.write_text(good)

    result = run_diff(git_project, "dev")
    assert result.returncode == 2
    assert "rendering 'dev' at HEAD failed" in result.stderr
    assert "defaults.queue.replicas: must be 1 or odd, got 4" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_refused_working_tree_config_exits_2(git_project):
    (git_project / "Pulumi.dev.yaml").write_text("config:\n  settlement-platform:defaults: {queue: {replicas: 4}}\n")
    result = run_diff(git_project, "dev")
    assert result.returncode == 2
    assert "must be 1 or odd, got 4" in result.stderr and "Traceback" not in result.stderr


# --- list items are matched by identity, not by position -------------------------------------------------------


def test_an_inserted_list_item_is_one_addition_not_a_cascade_of_shifts():
    env = [{"name": "B", "value": "1"}, {"name": "C", "value": "2"}]
    before = {"containers": [{"name": "app", "env": env, "volumeMounts": [{"name": "v", "mountPath": "/a"}]}]}
    after = copy.deepcopy(before)
    after["containers"][0]["env"].insert(0, {"name": "A", "value": "0"})
    after["containers"][0]["volumeMounts"].append({"name": "v", "mountPath": "/b"})  # one volume, two mounts
    assert compare(before, after) == [
        FieldChange("containers[app].env[A]", None, {"name": "A", "value": "0"}),
        FieldChange("containers[app].volumeMounts[/b]", None, {"name": "v", "mountPath": "/b"}),
    ]


def test_rules_of_one_name_are_told_apart_by_their_labels():
    def rule(service: str, severity: str, expr: str) -> dict:
        return {"alert": "Burn", "expr": expr, "labels": {"service": service, "severity": severity}}

    before = [rule("b", "page", "x"), rule("b", "ticket", "y")]
    after = [rule("a", "page", "x"), rule("a", "ticket", "y"), rule("b", "page", "x"), rule("b", "ticket", "z")]
    assert [(c.path, c.before is None) for c in compare(before, after)] == [
        ("[Burn{service=a,severity=page}]", True),
        ("[Burn{service=a,severity=ticket}]", True),
        ("[Burn{service=b,severity=ticket}].expr", False),
    ]


def test_network_policy_rules_are_matched_by_their_peer():
    def rule(app: str, port: int) -> dict:
        peer = {"namespaceSelector": {"matchLabels": {"ns": "n"}}, "podSelector": {"matchLabels": {"app": app}}}
        return {"from": [peer], "ports": [{"port": port, "protocol": "TCP"}]}

    before = {"ingress": [rule("b", 5432), rule("c", 5432)]}
    after = {"ingress": [rule("a", 5432), rule("b", 5432), rule("c", 6432)]}
    assert [(c.path, c.before, c.after) for c in compare(before, after)] == [
        ("ingress[ns=n,app=a]", None, rule("a", 5432)),
        ("ingress[ns=n,app=c].ports[6432]", None, {"port": 6432, "protocol": "TCP"}),
        ("ingress[ns=n,app=c].ports[5432]", {"port": 5432, "protocol": "TCP"}, None),
    ]


def test_lists_without_an_identity_are_compared_by_position_in_numeric_order():
    before = [{"v": i} for i in range(12)]
    after = copy.deepcopy(before)
    after[2]["v"], after[10]["v"] = "two", "ten"
    assert [c.path for c in compare(before, after)] == ["[2].v", "[10].v"]
    assert compare(before, before[:11]) == [FieldChange("[11]", {"v": 11}, None)]


# --- adding a service or a consumer shows that, and only that ------------------------------------------------------


def _strings(value) -> set[str]:
    if isinstance(value, dict):
        return set().union(*map(_strings, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(_strings, value)) if value else set()
    return {value} if isinstance(value, str) else set()


def _assert_only_additions_for(new: str, changes, others: set[str], also: tuple[str, ...] = ()) -> None:
    """Nothing deleted or replaced; every created object is the new service's; every field change is an addition
    for it (or for what it brings along, `also`: a new queue gets its own QueueMissing alert) - aggregates such as
    the namespace quota aside; no other service is named anywhere in a change."""
    assert not [c for c in changes if c.action in ("deleted", "replaced") or c.dangers]
    for c in changes:
        if c.action == "created":
            continue
        for f in c.fields:
            assert not re.search(r"\[\d+\]", f.path), f"{c.label}: positional match {f.path}"
            if c.label.split()[0] != "ResourceQuota":
                ours = any(name in f.path for name in (new, *also))
                assert f.before is None and ours, f"{c.label}: {f.path} is not an addition for {new}"
            mentioned = _strings([f.before, f.after]) | set(re.findall(r"[\w.-]+", f.path))
            assert not mentioned & others, f"{c.label}: {f.path} names {mentioned & others}"


def _service_names(topology: dict) -> set[str]:
    return {name for sub in topology.values() for name in sub.get("services", {})}


def test_adding_a_service_shows_its_objects_and_the_lines_that_really_change(prod, project):
    topology = project.topology()
    subsystem = sorted(topology)[0]
    others = _service_names(topology)
    image = next(iter(topology[subsystem]["services"].values()))["image"]
    new = "aaa-added"  # sorts first: under positional matching every rule and peer after it would shift
    topology[subsystem]["services"][new] = {"image": image, "database": "postgres" in topology[subsystem]}
    project.set_topology(topology)

    changes = diff(resources(prod), resources(project.render("prod")))
    created = [c for c in changes if c.action == "created"]
    assert created and all(new in c.label for c in created)
    _assert_only_additions_for(new, changes, others)
    rules = next(c for c in changes if c.label.startswith("PrometheusRule "))
    assert rules.fields and all(f"service={new}" in f.path for f in rules.fields)
    text = report("prod", "main", changes)
    assert f"#### {subsystem}: {len([c for c in created if c.group == subsystem])} objects created" in text


def test_adding_a_consumer_takes_nothing_from_the_services_already_there(prod, project):
    topology = project.topology()
    subsystem = next((s for s in sorted(topology) if "postgres" in topology[s] and "queue" in topology[s]), None)
    if subsystem is None:
        pytest.skip("no subsystem with both a database and a queue")
    others = _service_names(topology)
    image = next(iter(topology[subsystem]["services"].values()))["image"]
    topology[subsystem]["queue"].setdefault("queues", {})["aaa-work"] = {}
    topology[subsystem]["services"]["aaa-consumer"] = {"image": image, "database": True, "consumes": ["aaa-work"]}
    project.set_topology(topology)

    changes = diff(resources(prod), resources(project.render("prod")))
    _assert_only_additions_for("aaa-consumer", changes, others, also=("aaa-work",))
    policies = [c for c in changes if c.action == "changed" and c.label.startswith(f"NetworkPolicy {subsystem}/")]
    # The database's and the queue's policies each gain one rule for the consumer, and lose nothing.
    assert len(policies) >= 2 and all(len(c.fields) == 1 for c in policies)


# --- objects a Helm chart installs are grouped under their release ------------------------------------------------


def _release(urn: str, name: str) -> dict:
    return {
        "urn": urn,
        "type": "kubernetes:helm.sh/v3:Release",
        "name": f"{name}-release",
        "parent": "",
        "inputs": {"name": name, "chart": name, "version": "1.0.0"},
    }


def _chart_object(release_urn: str, kind: str, name: str, spec: dict) -> dict:
    obj = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "tools"}, "spec": spec}
    return {
        "urn": f"{release_urn}$apps/v1/{kind}/tools/{name}",
        "type": CHART_OBJECT,
        "name": name,
        "parent": release_urn,
        "inputs": obj,
    }


def test_chart_objects_are_diffed_like_any_resource_and_grouped_under_their_release():
    urn = "urn:pulumi:s::p::settlement:core:HelmOperator$kubernetes:helm.sh/v3:Release::tools-release"
    selector = {"matchLabels": {"app": "a"}}
    base = [
        _release(urn, "tools"),
        _chart_object(urn, "Deployment", "a", {"replicas": 1, "selector": selector}),
        _chart_object(urn, "Deployment", "b", {"replicas": 1, "selector": selector}),
    ]
    head = copy.deepcopy(base)
    head[1]["inputs"]["spec"]["replicas"] = 2
    head[2]["inputs"]["spec"]["selector"] = {"matchLabels": {"app": "b"}}
    head.append(_chart_object(urn, "Deployment", "c", {"replicas": 1}))

    changes = {c.label: c for c in diff(base, head)}
    assert {c.group for c in changes.values()} == {"tools (Helm release)"}
    assert [(f.path, f.before, f.after) for f in changes["Deployment tools/a"].fields] == [("spec.replicas", 1, 2)]
    assert changes["Deployment tools/b"].action == "replaced" and changes["Deployment tools/c"].action == "created"
    text = report("s", "main", list(changes.values()))
    assert "#### tools (Helm release): 1 object created, 1 object changed, 1 object replaced" in text
    assert "- `~` Deployment tools/a: 1 field" in text
    # Without its release in the list (only its objects changed), an object is still named after the release.
    assert {c.group for c in diff(base[1:], head[1:])} == {"tools-release (Helm release)"}


# --- Alertmanager routing, secrets redacted -----------------------------------------------------------------------


def test_the_redacted_alertmanager_config_names_secret_keys_and_never_holds_a_value(project):
    config = redacted_alertmanager("prod", project.root)
    text = json.dumps(config)
    assert SECRET_PLACEHOLDER not in text
    receivers = project.load("Pulumi.prod.yaml")["config"]["settlement-platform:alerting"]["receivers"]
    keys = {v for r in receivers.values() for kind in r.values() for k, v in kind.items() if k.endswith("Secret")}
    assert keys and {f"<secret:{k}>" for k in keys} == {s for s in _strings(config) if s.startswith("<secret:")}


def test_a_routing_change_shows_in_the_report_with_secrets_redacted(project):
    before = redacted_alertmanager("prod", project.root)
    data = project.load("Pulumi.prod.yaml")
    alerting = data["config"]["settlement-platform:alerting"]
    subsystem = sorted(set(alerting["routes"]) & set(project.topology()))[0]
    route = alerting["routes"][subsystem]
    route["ticket"] = next(r for r in sorted(alerting["receivers"]) if r != route["ticket"])
    pagers = [r["pager"] for r in alerting["receivers"].values() if "pager" in r]
    old_key = pagers[0]["routingKeySecret"]
    for pager in pagers:  # the routing key moves to another secret config key
        pager["routingKeySecret"] = "alertOtherRoutingKey"
    data["config"]["settlement-platform:alertOtherRoutingKey"] = data["config"].pop(f"settlement-platform:{old_key}")
    project.save("Pulumi.prod.yaml", data)

    text = report("prod", "main", [], (before, redacted_alertmanager("prod", project.root)))
    assert f'`route.routes[namespace="{subsystem}"].receiver`' in text
    assert f"`<secret:{old_key}>` → `<secret:alertOtherRoutingKey>`" in text
    assert SECRET_PLACEHOLDER not in text and "No changes." not in text
    old_code = report("prod", "main", [], (None, before))  # a base rendered by code that did not write it
    assert f"renders no `{REDACTED_ALERTMANAGER}`" in old_code and "No changes." in old_code


def test_the_base_is_rendered_here_only_when_its_code_is_the_running_code(git_project, tmp_path, monkeypatch):
    from infra.offline import diff as diff_module

    running = tmp_path / "running"
    shutil.copytree(git_project, running, symlinks=True)
    monkeypatch.setattr(diff_module, "PROJECT_ROOT", running)
    assert diff_module._runs_this_code(git_project)
    (running / "Pulumi.dev.yaml").write_text("config: {}\n")  # stack files are the base's own input, not code
    assert diff_module._runs_this_code(git_project)
    (running / "infra" / "extra.py").write_text("")  # a module the base lacks
    assert not diff_module._runs_this_code(git_project)
    (running / "infra" / "extra.py").unlink()
    (running / "README.md").write_text((running / "README.md").read_text() + "\n")  # any other file differs
    assert not diff_module._runs_this_code(git_project)


def test_a_base_with_other_code_is_rendered_by_that_code_in_a_process_of_its_own(git_project, monkeypatch):
    from infra.offline import diff as diff_module

    started, here = [], []
    run, render_here = diff_module.subprocess.run, diff_module._render_here
    monkeypatch.setattr(diff_module.subprocess, "run", lambda cmd, **kw: started.append(cmd) or run(cmd, **kw))
    monkeypatch.setattr(diff_module, "_render_here", lambda *a: here.append(a) or render_here(*a))
    monkeypatch.delenv(BASE_CACHE_ENV, raising=False)  # render it now, whatever the run's cache holds

    assert run_diff(git_project, "dev").returncode == 0  # the same code: rendered in this process
    assert len(here) == 1 and not [c for c in started if "render" in c]

    # The base's code labels its objects otherwise; the working tree's stack files are the base's. With the suite's
    # render cache on (`SETTLEMENT_RENDER_CACHE`), the base's render is not the head's: the code is in the key.
    labels = git_project / "components" / "labels.py"
    labels.write_text(labels.read_text().replace('MANAGED_BY = "pulumi"', 'MANAGED_BY = "pulumi-old"'))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "commit", "-qam", "other code"], cwd=git_project, check=True)
    assert os.environ.get(RENDER_CACHE_ENV)
    result = run_diff(git_project, "dev")
    assert result.returncode == 0 and "No changes." not in result.stdout, result.stderr
    assert "pulumi-old" in result.stdout  # the base's label, from the base's code
    assert len(here) == 1 and [c for c in started if "render" in c]  # the base's own code, in its own process


def test_a_base_that_crashes_in_this_process_is_reported_like_one_that_crashes_in_its_own(tmp_path, monkeypatch):
    from infra.offline import cli
    from infra.offline import diff as diff_module

    def crash(argv):
        raise KeyError("no-such-key")

    monkeypatch.setattr(cli, "main", crash)
    with pytest.raises(diff_module.DiffError) as refused:
        diff_module._render_here("dev", "HEAD", tmp_path, tmp_path / "out")
    message = str(refused.value)
    assert "rendering 'dev' at HEAD failed" in message and "KeyError: 'no-such-key'" in message
    assert "shows the traceback" in message and os.environ.get(LIST_ONLY_ENV) is None


def test_a_base_is_not_rendered_from_upstream_bytes_its_own_lock_does_not_pin(git_project, monkeypatch):
    """The base reads the same folders, maybe other chart versions in them: its own lock is checked first."""
    monkeypatch.delenv(BASE_CACHE_ENV, raising=False)  # render the base now, whatever the run's cache holds
    lock = git_project / "infra" / "offline" / "upstream.sha256"
    first, rest = lock.read_text().split("\n", 1)
    lock.write_text(f"{'0' * 64}{first[64:]}\n{rest}")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "commit", "-qam", "a base pinning other bytes"], cwd=git_project, check=True)
    result = run_diff(git_project, "dev")
    assert result.returncode == 2, result.stderr
    assert f"{first[66:]}: changed (locked 000000000000" in result.stderr and "Traceback" not in result.stderr
