"""Workloads: hardened, healthy, right-sized, autoscaled, disruption-tolerant, built from source (issue 3)."""

from __future__ import annotations

import copy

import pytest

from components.pod_security import restricted_violations
from components.sizing import parse_quantity
from infra.dr import serves
from infra.offline.mocks import ProgramRun
from tests.conftest import platform_deployments


def deployments(run: ProgramRun) -> list[dict]:
    return platform_deployments(run)


def pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict) -> dict:
    return pod(deployment)["containers"][0]


def registration(run: ProgramRun, kind: str, name: str):
    return next(r for r in run.registrations if r.inputs.get("kind") == kind and r.inputs["metadata"]["name"] == name)


# --- Pod Security "restricted" ------------------------------------------------------------------------------


def test_every_pod_template_meets_restricted(stack_run, stack_plan):
    templates = deployments(stack_run)
    assert len(templates) == len(stack_plan.services())
    failures = {d["metadata"]["name"]: v for d in templates if (v := restricted_violations(pod(d)))}
    assert not failures


GOOD_POD = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "app",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "ports": [{"containerPort": 8080}],
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def _break(path: tuple, value) -> dict:
    spec = copy.deepcopy(GOOD_POD)
    target = spec
    for step in path[:-1]:
        target = target[step]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return spec


BROKEN = {
    "hostNetwork": (("hostNetwork",), True),
    "hostPID": (("hostPID",), True),
    "hostIPC": (("hostIPC",), True),
    "hostPath volume": (("volumes", 0, "hostPath"), {"path": "/etc"}),
    "unsafe sysctl": (("securityContext", "sysctls"), [{"name": "kernel.msgmax", "value": "1"}]),
    "privileged": (("containers", 0, "securityContext", "privileged"), True),
    "privilege escalation": (("containers", 0, "securityContext", "allowPrivilegeEscalation"), None),
    "capabilities kept": (("containers", 0, "securityContext", "capabilities"), {"drop": ["NET_RAW"]}),
    "capability added": (("containers", 0, "securityContext", "capabilities", "add"), ["SYS_ADMIN"]),
    "may run as root": (("securityContext", "runAsNonRoot"), None),
    "low uid": (("securityContext", "runAsUser"), 1000),
    "no seccomp": (("securityContext", "seccompProfile"), None),
    "unconfined seccomp": (("securityContext", "seccompProfile"), {"type": "Unconfined"}),
    "writable root fs": (("containers", 0, "securityContext", "readOnlyRootFilesystem"), False),
    "unmasked proc": (("containers", 0, "securityContext", "procMount"), "Unmasked"),
    "hostPort": (("containers", 0, "ports", 0, "hostPort"), 8080),
}


def test_the_good_pod_passes():
    assert restricted_violations(GOOD_POD) == []


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_restricted_rule_fires(rule):
    path, value = BROKEN[rule]
    assert restricted_violations(_break(path, value)), f"{rule} was not caught"


def test_app_namespaces_enforce_audit_and_warn_restricted_at_a_pinned_version(stack_run, stack_plan):
    for sub in stack_plan.subsystems.values():
        labels = stack_run.object("Namespace", sub.namespace)["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
            assert labels[f"pod-security.kubernetes.io/{mode}-version"] == f"v{stack_plan.config.kubernetes_version}"


def test_one_service_account_per_workload_without_a_token(stack_run):
    for d in deployments(stack_run):
        name, ns = d["metadata"]["name"], d["metadata"]["namespace"]
        account = stack_run.object("ServiceAccount", name, ns)
        assert pod(d)["serviceAccountName"] == name
        assert account["automountServiceAccountToken"] is False
        assert pod(d)["automountServiceAccountToken"] is False


def test_a_token_is_mounted_only_when_config_asks(small_project):
    topology = small_project.topology()
    topology["audit"]["services"]["engine"]["mountServiceAccountToken"] = True
    small_project.set_topology(topology)
    run = small_project.render("dev")
    assert pod(run.object("Deployment", "engine"))["automountServiceAccountToken"] is True
    assert pod(run.object("Deployment", "api"))["automountServiceAccountToken"] is False


# --- Health and shutdown ------------------------------------------------------------------------------------


def test_probes_exist_and_readiness_differs_from_liveness(stack_run):
    for d in deployments(stack_run):
        c = container(d)
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(c)
        assert c["readinessProbe"] != c["livenessProbe"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_probe_paths_come_from_config(small_project):
    topology = small_project.topology()
    topology["shop"]["services"]["api"]["probes"] = {"readinessPath": "/health/ready"}
    small_project.set_topology(topology)
    c = container(small_project.render("dev").object("Deployment", "api"))
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_shutdown_drains_and_rollouts_never_drop_below_desired(stack_run):
    for d in deployments(stack_run):
        sleep = container(d)["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert sleep > 0
        assert pod(d)["terminationGracePeriodSeconds"] >= sleep + 10
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- Sizing -------------------------------------------------------------------------------------------------


def _max_pods(run: ProgramRun, d: dict) -> int:
    name, ns = d["metadata"]["name"], d["metadata"]["namespace"]
    for kind, key in (("HorizontalPodAutoscaler", "maxReplicas"), ("ScaledObject", "maxReplicaCount")):
        found = [o for o in run.objects(kind) if o["metadata"]["name"] == name and o["metadata"]["namespace"] == ns]
        if found:
            return found[0]["spec"][key]
    return d["spec"]["replicas"]


def test_quota_covers_every_workload_and_data_pod_at_max_scale(stack_run, stack_plan):
    for ns in (sub.namespace for sub in stack_plan.subsystems.values()):
        hard = stack_run.object("ResourceQuota", "compute", ns)["spec"]["hard"]
        need_cpu = need_mem = 0.0
        pods = 0
        for d in (d for d in deployments(stack_run) if d["metadata"]["namespace"] == ns):
            n = _max_pods(stack_run, d)
            need_cpu += parse_quantity(container(d)["resources"]["limits"]["cpu"]) * n
            need_mem += parse_quantity(container(d)["resources"]["limits"]["memory"]) * n
            pods += n
        for kind, count in (("Cluster", "instances"), ("RabbitmqCluster", "replicas")):
            for o in (o for o in stack_run.objects(kind) if o["metadata"]["namespace"] == ns):
                need_cpu += parse_quantity(o["spec"]["resources"]["limits"]["cpu"]) * o["spec"][count]
                need_mem += parse_quantity(o["spec"]["resources"]["limits"]["memory"]) * o["spec"][count]
                pods += o["spec"][count]
        assert parse_quantity(hard["limits.cpu"]) >= need_cpu, ns
        assert parse_quantity(hard["limits.memory"]) >= need_mem, ns
        assert int(hard["pods"]) > pods, f"{ns}: no headroom for a rolling update"
        assert stack_run.object("LimitRange", "container-defaults", ns)["spec"]["limits"][0]["default"]


def test_every_container_has_requests_and_limits(any_stack_run):
    for d in deployments(any_stack_run):
        resources = container(d)["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


# --- Autoscaling --------------------------------------------------------------------------------------------


def test_api_services_get_an_hpa_and_consumers_a_keda_scaled_object(stack_run):
    for d in deployments(stack_run):
        name, ns = d["metadata"]["name"], d["metadata"]["namespace"]
        assert "replicas" not in d["spec"], f"{name}: the autoscaler owns replicas"
        is_consumer = d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
        hpas = [o for o in stack_run.objects("HorizontalPodAutoscaler") if o["metadata"]["name"] == name]
        scaled = [o for o in stack_run.objects("ScaledObject") if o["metadata"]["name"] == name]
        if is_consumer:
            assert not hpas and len(scaled) == 1, name
            spec = scaled[0]["spec"]
            trigger = spec["triggers"][0]
            assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
            auth = stack_run.object("TriggerAuthentication", trigger["authenticationRef"]["name"], ns)
            ref = auth["spec"]["secretTargetRef"][0]
            assert ref["parameter"] == "host" and ref["key"] == "uri"
            assert ref["name"] in {
                s["metadata"]["name"] for s in stack_run.objects("Secret") if s["metadata"]["namespace"] == ns
            }
        else:
            assert len(hpas) == 1 and not scaled, name
            spec = hpas[0]["spec"]
            assert {m["resource"]["name"] for m in spec["metrics"]} == {"cpu", "memory"}
            assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60
            assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}


def test_every_consumer_scales_on_exactly_the_queues_it_consumes(stack_run, stack_plan):
    consumers = [svc for svc in stack_plan.services() if svc.consumes]
    assert len(stack_run.objects("ScaledObject")) == len(consumers)
    for svc in consumers:
        ns = stack_plan.subsystems[svc.subsystem].namespace
        triggers = stack_run.object("ScaledObject", svc.name, ns)["spec"]["triggers"]
        # The vhost is the queue owner's subsystem name.
        assert [(t["metadata"]["queueName"], t["metadata"]["vhostName"]) for t in triggers] == [
            (q.queue, q.subsystem) for q in svc.consumes
        ], f"{svc.subsystem}/{svc.name}"


def test_autoscaler_targets_come_from_config(small_project):
    topology = small_project.topology()
    topology["shop"]["services"]["api"]["autoscaling"] = {"cpuUtilization": 55}
    small_project.set_topology(topology)
    hpa = small_project.render("dev").object("HorizontalPodAutoscaler", "api")
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 55, "memory": 80}


def test_keda_is_installed_pinned_and_scaled_objects_wait_for_it(stack_run):
    keda = next(r for r in stack_run.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "keda")
    assert keda.inputs["version"] == "2.20.2"
    for so in stack_run.objects("ScaledObject"):
        assert keda.urn in registration(stack_run, "ScaledObject", so["metadata"]["name"]).dependencies


# --- Availability -------------------------------------------------------------------------------------------


def _min_replicas(run: ProgramRun, name: str) -> int:
    for kind, key in (("HorizontalPodAutoscaler", "minReplicas"), ("ScaledObject", "minReplicaCount")):
        found = [o for o in run.objects(kind) if o["metadata"]["name"] == name]
        if found:
            return found[0]["spec"][key]
    raise AssertionError(f"{name} has no autoscaler")


def test_replicated_workloads_have_a_pdb_below_the_autoscaler_minimum(stack_run):
    for d in deployments(stack_run):
        name, ns = d["metadata"]["name"], d["metadata"]["namespace"]
        minimum = _min_replicas(stack_run, name)
        pdbs = [p for p in stack_run.objects("PodDisruptionBudget") if p["metadata"]["name"] == name]
        if minimum > 1:
            assert len(pdbs) == 1, name
            assert 1 <= pdbs[0]["spec"]["minAvailable"] < minimum
            assert pdbs[0]["spec"]["selector"] == d["spec"]["selector"]
            assert pdbs[0]["metadata"]["namespace"] == ns
        else:
            assert not pdbs, f"{name}: a PDB on a single replica blocks every node drain"


def test_pods_spread_over_zones_and_hosts(stack_run):
    for d in deployments(stack_run):
        constraints = pod(d)["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        for c in constraints:
            assert c["labelSelector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]


def test_payment_path_outranks_the_rest(stack_run, stack_plan):
    classes = {pc["metadata"]["name"]: pc["value"] for pc in stack_run.objects("PriorityClass")}
    assert classes["settlement-critical"] > classes["settlement-standard"]
    priorities = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): pod(d)["priorityClassName"] for d in deployments(stack_run)
    }
    assert priorities == {
        (stack_plan.subsystems[svc.subsystem].namespace, svc.name): (
            "settlement-critical" if svc.critical else "settlement-standard"
        )
        for svc in stack_plan.services()
    }


def test_availability_minimums_come_from_the_stack_defaults(stack_run, stack_plan):
    """A service without its own `replicas.min` runs at least defaults.workload.minReplicas pods, and a critical
    one at least criticalMinReplicas (production's defaults: 2 and 3)."""
    workload = stack_plan.config.defaults.workload
    for svc in stack_plan.services():
        declared = stack_plan.config.subsystems[svc.subsystem].services[svc.name].replicas
        if not serves(stack_plan.config):
            # A disaster-recovery site that does not serve (README "Disaster recovery"): consumers held at zero,
            # APIs at the standby size, whatever the defaults.
            want = 0 if svc.consumes else min(stack_plan.config.dr.standby_api_replicas, svc.max_replicas)
            assert _min_replicas(stack_run, svc.name) == want, f"{svc.subsystem}/{svc.name}"
            continue
        if declared is not None and declared.min is not None:
            continue
        want = workload.critical_min_replicas if svc.critical else workload.min_replicas
        assert _min_replicas(stack_run, svc.name) == want, f"{svc.subsystem}/{svc.name}"


# --- Images -------------------------------------------------------------------------------------------------


def test_images_are_digest_pinned_when_the_guardrail_says_and_digests_are_not_repulled(stack_run, stack_plan):
    for d in deployments(stack_run):
        image = container(d)["image"]
        if stack_plan.config.guardrails.require_image_digest:
            assert "@sha256:" in image, d["metadata"]["name"]
        assert container(d)["imagePullPolicy"] == ("IfNotPresent" if "@sha256:" in image else "Always")


def test_a_build_is_built_pushed_and_deployed_by_digest(small_project):
    topology = small_project.topology()
    svc = topology["audit"]["services"]["engine"]
    del svc["image"]
    svc["build"] = {"context": "services/engine", "repository": "registry.example/audit/engine"}
    small_project.set_topology(topology)
    run = small_project.render("prod")
    image = run.of_type("docker:index/image:Image")
    assert len(image) == 1
    assert image[0].inputs["imageName"] == "registry.example/audit/engine:prod"
    assert image[0].inputs["build"]["context"] == "services/engine"
    deployed = container(run.object("Deployment", "engine"))["image"]
    assert deployed.startswith("registry.example/audit/engine@sha256:")
    assert container(run.object("Deployment", "engine"))["imagePullPolicy"] == "IfNotPresent"


def test_tags_are_pulled_every_time(small_project):
    topology = small_project.topology()
    topology["audit"]["services"]["engine"]["image"] = "registry.example/audit/engine:main"
    small_project.set_topology(topology)
    assert container(small_project.render("dev").object("Deployment", "engine"))["imagePullPolicy"] == "Always"


# --- Start-up order: tests/test_stacks.py::test_workloads_wait_for_the_data_they_use (every service, every stack).
