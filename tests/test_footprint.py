"""What an environment asks of the cluster (`python -m infra footprint`), and the stack budget that bounds it."""

from __future__ import annotations

import pytest

from components.sizing import parse_quantity
from infra.config import Budget
from infra.offline import footprint
from infra.offline.render import render_stack
from infra.stack_config import plan_for_stack
from tests.cli import run_cli
from tests.conftest import STACKS_DIR

MI = 2**20


def container(cpu: str | None = None, memory: str | None = None, **extra) -> dict:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    return {"name": "c", "resources": {"requests": requests} if requests else {}, **extra}


def deployment(name: str, namespace: str, *containers: dict, replicas: int | None = None, init=()) -> dict:
    spec: dict = {"template": {"spec": {"containers": list(containers), "initContainers": list(init)}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def namespace(name: str, subsystem: str | None = None) -> dict:
    labels = {footprint.SUBSYSTEM_LABEL: subsystem} if subsystem else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def test_a_pod_asks_the_sum_of_its_containers_or_its_largest_init_container():
    spec = {
        "containers": [container("100m", "64Mi"), container("50m", "32Mi")],
        "initContainers": [container("500m", "16Mi")],
    }
    usage = footprint.pod_usage(spec, {})
    assert usage.cpu_requests == pytest.approx(0.5)  # the init container's CPU is the larger
    assert usage.memory_requests == 96 * MI  # the containers' memory is the larger
    sidecar = {
        "containers": [container("100m", "64Mi")],
        "initContainers": [container("10m", "8Mi", restartPolicy="Always")],
    }
    assert footprint.pod_usage(sidecar, {}).cpu_requests == pytest.approx(0.11)


def test_containers_without_requests_get_their_namespaces_limit_range_defaults():
    defaults = {"defaultRequest": {"cpu": "100m", "memory": "128Mi"}, "default": {"cpu": "1", "memory": "1Gi"}}
    usage = footprint.pod_usage({"containers": [container()]}, defaults)
    assert (usage.cpu_requests, usage.memory_requests) == (pytest.approx(0.1), 128 * MI)
    assert (usage.cpu_limits, usage.memory_limits) == (pytest.approx(1.0), 1024 * MI)


def test_replicas_come_from_the_autoscaler_daemonsets_count_once_and_groups_follow_the_namespace_label():
    objects = [
        namespace("shop", "shop"),
        namespace("tools"),
        deployment("api", "shop", container("100m", "100Mi")),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"scaleTargetRef": {"name": "api"}, "minReplicas": 2, "maxReplicas": 5},
        },
        deployment("operator", "tools", container("50m", "10Mi"), replicas=1),
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "tools"},
            "spec": {"template": {"spec": {"containers": [container("10m", "1Mi")]}}},
        },
    ]
    fp = footprint.footprint(objects)
    assert fp.groups["shop"]["min"].cpu_requests == pytest.approx(0.2)
    assert fp.groups["shop"]["max"].cpu_requests == pytest.approx(0.5)
    assert fp.groups[footprint.SHARED]["min"].cpu_requests == pytest.approx(0.06)
    assert fp.groups["shop"]["objects"] == 2  # the Deployment and its HPA; a Namespace is cluster-scoped: shared


def test_operator_created_pods_are_counted_from_their_custom_resources():
    objects = [
        namespace("data", "data"),
        {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "db", "namespace": "data"},
            "spec": {
                "instances": 3,
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                "storage": {"size": "20Gi"},
                "plugins": [{"name": "barman-cloud.cloudnative-pg.io", "parameters": {"barmanObjectName": "store"}}],
            },
        },
        {
            "apiVersion": "barmancloud.cnpg.io/v1",
            "kind": "ObjectStore",
            "metadata": {"name": "store", "namespace": "data"},
            "spec": {"instanceSidecarConfiguration": {"resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}}},
        },
        {
            "apiVersion": "rabbitmq.com/v1beta1",
            "kind": "RabbitmqCluster",
            "metadata": {"name": "mq", "namespace": "data"},
            "spec": {
                "replicas": 3,
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
                "persistence": {"storage": "10Gi"},
            },
        },
    ]
    fp = footprint.footprint(objects)
    data = fp.groups["data"]["min"]
    assert data.cpu_requests == pytest.approx(3 * 0.55 + 3 * 1.0)
    assert data.storage == 3 * 20 * 2**30 + 3 * 10 * 2**30


def test_a_budget_refuses_naming_the_largest_consumers():
    objects = [namespace("shop", "shop"), deployment("big", "shop", container("2", "4Gi"), replicas=2)]
    fp = footprint.footprint(objects)
    footprint.check_budget("s", fp, Budget(cpu="4", memory="8Gi"))
    with pytest.raises(footprint.BudgetExceeded) as refused:
        footprint.check_budget("s", fp, Budget(cpu="3500m", memory="6Gi"))
    lines = str(refused.value).splitlines()
    assert lines[1:3] == [
        "  budget.cpu: 4.00 CPU requested, more than the budget of 3500m (3.50 CPU)",
        "  budget.memory: 8.00 GiB requested, more than the budget of 6Gi (6.00 GiB)",
    ]
    assert "By part: shop 4.00 CPU (100%) / 8.00 GiB (100%)." in lines
    assert "  Deployment shop/big (shop): 2 x (2.00 CPU, 4.00 GiB) = 4.00 CPU, 8.00 GiB" in lines
    assert "Pulumi.s.yaml" in lines[-1] and "raise `budget`" in lines[-1]


def test_the_largest_workloads_are_ranked_by_what_exceeds_the_budget_and_request_something():
    """Over its CPU budget alone, the CPU-heavy workload leads though another asks more memory; a workload that
    requests nothing at minimum scale (no pods there) is no consumer."""
    objects = [
        namespace("shop", "shop"),
        deployment("cpu-heavy", "shop", container("2", "1Gi")),
        deployment("memory-heavy", "shop", container("100m", "4Gi")),
        deployment("idle", "shop", container("1", "1Gi"), replicas=0),
    ]
    with pytest.raises(footprint.BudgetExceeded) as refused:
        footprint.check_budget("s", footprint.footprint(objects), Budget(cpu="1", memory="8Gi"))
    consumers = [line.split(" (")[0].strip() for line in str(refused.value).splitlines() if line.startswith("  Dep")]
    assert consumers == ["Deployment shop/cpu-heavy", "Deployment shop/memory-heavy"]
    assert "Largest workloads by cpu" in str(refused.value)


def test_the_budget_advice_names_only_settings_the_stack_file_has():
    """Each section and field the refusal sends the reader to exists in the configuration model, as spelt in a stack
    file."""
    import re

    from infra.config import Defaults, Mesh, Monitoring, PlatformConfig

    advice = footprint.BUDGET_ADVICE
    sections = {f.alias for f in PlatformConfig.model_fields.values()}
    assert {"defaults", "overrides", "monitoring", "mesh", "budget"} <= sections
    for section, model in (("monitoring", Monitoring), ("mesh", Mesh)):
        named = re.search(rf"`{section}` \(([^)]*)\)", advice).group(1).split(", ")
        assert set(named) <= {f.alias for f in model.model_fields.values()}, (section, named)
    defaults = re.search(r"`defaults` \(([^:]*):", advice).group(1).split(", ")
    assert set(defaults) <= {f.alias for f in Defaults.model_fields.values()}, defaults


def test_every_container_of_every_stack_requests_cpu_and_memory(any_stack_run):
    """Operators, monitoring and run-time pods included: nothing is scheduled on a best-effort basis."""
    for pod in footprint.pod_groups(any_stack_run.all_objects()):
        assert pod.per_pod.cpu_requests > 0 and pod.per_pod.memory_requests > 0, (pod.kind, pod.namespace, pod.name)
    objects = any_stack_run.all_objects()
    limit_ranges = {o["metadata"]["namespace"] for o in objects if o["kind"] == "LimitRange"}
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        spec = obj["spec"]["template"]["spec"]
        for c in [*spec["containers"], *(spec.get("initContainers") or [])]:
            requests = (c.get("resources") or {}).get("requests") or {}
            covered = {"cpu", "memory"} <= set(requests) or obj["metadata"]["namespace"] in limit_ranges
            assert covered, f"{obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']} {c['name']}"


def test_every_stack_with_a_budget_fits_it(rendered):
    for stack, run in rendered.items():
        budget = plan_for_stack(stack, STACKS_DIR).config.budget
        if budget is not None:
            total = footprint.footprint(run.all_objects()).total("min")
            assert total.cpu_requests <= float(parse_quantity(budget.cpu)), stack
            assert total.memory_requests <= float(parse_quantity(budget.memory)), stack


def test_an_environment_over_its_budget_is_not_rendered(project, tmp_path):
    project.set_stack_key("dev", "budget", {"cpu": "500m", "memory": "1Gi"})
    out = tmp_path / "out"
    result = run_cli("render", "dev", "--out", str(out), "--project-dir", str(project.root))
    assert result.returncode == 2, result.stderr
    assert (
        "requests more than its budget" in result.stderr
        and "  budget.cpu: " in result.stderr
        and "Largest workloads" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_the_footprint_has_a_row_per_group_and_the_total(stack_run):
    fp = footprint.footprint(stack_run.all_objects())
    text = footprint.markdown(stack_run.stack, fp)
    for group in fp.groups:
        assert f"| {group} |" in text
    assert f"| total | {footprint.cpu(fp.total('min').cpu_requests)} |" in text


def _table(text: str) -> dict[str, dict[str, str]]:
    """The footprint table as {group: {header: cell}}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {row[0]: dict(zip(headers, row, strict=True)) for row in rows}


def test_the_footprint_shows_requests_and_limits_at_both_scales(stack_run):
    """Issue 13: CPU and memory requests and limits at minimum and at maximum scale; the total row adds up the
    groups to what the environment's pods ask for."""
    fp = footprint.footprint(stack_run.all_objects())
    total = _table(footprint.markdown(stack_run.stack, fp))["total"]
    for scale in ("min", "max"):
        usage = fp.total(scale)
        assert total[f"CPU req {scale}"] == footprint.cpu(usage.cpu_requests)
        assert total[f"CPU lim {scale}"] == footprint.cpu(usage.cpu_limits)
        assert total[f"mem req {scale} (GiB)"] == footprint.gib(usage.memory_requests)
        assert total[f"mem lim {scale} (GiB)"] == footprint.gib(usage.memory_limits)


def test_the_change_against_the_base_is_shown_beside_each_changed_figure_only():
    gib = 2**30

    def fp(cpu_min: float, objects: int) -> footprint.Footprint:
        usage = footprint.Usage(cpu_requests=cpu_min, memory_requests=gib, cpu_limits=1.0, memory_limits=2 * gib)
        return footprint.Footprint(groups={"payment": {"min": usage, "max": usage * 2, "objects": objects}})

    row = _table(footprint.markdown("dev", fp(0.5, 12), base=fp(0.3, 10)))["payment"]
    assert row["CPU req min"] == "0.50 (+0.20)" and row["CPU req max"] == "1.00 (+0.40)"
    assert row["objects"] == "12 (+2)"
    assert row["mem req min (GiB)"] == "1.00" and row["CPU lim min"] == "1.00"  # unchanged: no change shown
    assert _table(footprint.markdown("dev", fp(0.3, 10), base=fp(0.5, 12)))["payment"]["CPU req min"] == (
        "0.30 (-0.20)"
    )


def test_the_footprint_command_prints_the_stacks_table(small_project):
    result = run_cli("footprint", "dev", "--project-dir", str(small_project.root))
    assert result.returncode == 0, result.stderr
    run = render_stack("dev", small_project.root)
    assert footprint.markdown("dev", footprint.footprint(run.all_objects())) in result.stdout
    budget = plan_for_stack("dev", small_project.root).config.budget
    assert ("Budget of `dev`" in result.stdout) == (budget is not None)


def test_the_footprint_shows_how_much_of_the_budget_the_minimum_scale_takes():
    gib = 2**30
    usage = footprint.Usage(cpu_requests=1.5, memory_requests=3 * gib)
    fp = footprint.Footprint(
        groups={"payment": {"min": usage, "max": usage * 2, "objects": 1}},
        pods=[footprint.PodGroup("payment", "Deployment", "payment", "api", usage, 1, 2)],
    )
    text = footprint.markdown("dev", fp, budget=Budget(cpu="3", memory="4Gi"))
    assert text.splitlines()[-1] == (
        "Budget of `dev` (`budget`, at minimum scale: the `req min` columns): CPU 1.50 of 3.00 (50%), "
        "memory 3.00 of 4.00 GiB (75%)."
    )
    assert "CPU 1.50 of 2.50 (60%)" in footprint.markdown("dev", fp, budget=Budget(cpu="2500m", memory="4Gi"))
    assert "Budget" not in footprint.markdown("dev", fp)
