"""Bad config is refused whole, before any resource is registered, with one line per problem."""

from __future__ import annotations

import pulumi
import pytest

from infra.config import PlatformConfig
from infra.errors import ConfigError
from infra.offline.mocks import ProgramFailed
from infra.stack_config import parse_platform_config, plan_for_stack

# The smallest complete config besides subsystems: cluster facts and someone to tell.
MINIMAL = {
    "network": {"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"]},
    "alerting": {
        "receivers": {"chat": {"webhook": {"urlSecret": "alertChat"}}},
        "routes": {"a": {"page": "chat", "ticket": "chat"}, "platform": {"page": "chat", "ticket": "chat"}},
    },
}


def _svc(topology: dict, sub: str, svc: str) -> dict:
    return topology[sub]["services"][svc]


def _set(topology: dict, sub: str, svc: str, **fields) -> dict:
    _svc(topology, sub, svc).update(fields)
    return topology


# (id, mutation of the topology, expected (path, fragment of the rule) in the report)
TOPOLOGY_CASES = [
    (
        "replicas-min-above-max",
        lambda t: _set(t, "payment", "payment-api", replicas={"min": 5, "max": 3}),
        "subsystems.payment.services.payment-api.replicas: min (5) must be <= max (3)",
    ),
    (
        "call-to-unknown-service",
        lambda t: _set(t, "payment", "payment-api", calls=["business/settlement"]),
        "subsystems.payment.services.payment-api.calls[0]: 'business/settlement' is not a declared service",
    ),
    (
        "consumes-undeclared-queue",
        lambda t: _set(t, "risk", "risk-engine", consumes=["payment/card-events"]),
        "subsystems.risk.services.risk-engine.consumes[0]: 'payment/card-events' is not a queue declared",
    ),
    (
        "publishes-to-subsystem-without-queue-cluster",
        lambda t: _set(t, "payment", "payment-api", publishes=["risk/alerts"]),
        "subsystems.payment.services.payment-api.publishes[0]: 'risk/alerts' is not a queue declared",
    ),
    (
        "service-without-image",
        lambda t: (_svc(t, "risk", "risk-engine").pop("image"), t)[1],
        "subsystems.risk.services.risk-engine: needs exactly one of `image` or `build` (got neither)",
    ),
    (
        "quoted-number",
        lambda t: _set(t, "payment", "payment-api", replicas={"min": 2, "max": "3"}),
        "subsystems.payment.services.payment-api.replicas.max: input should be a valid integer (got '3')",
    ),
    (
        "quoted-boolean",
        lambda t: _set(t, "risk", "risk-engine", critical="yes"),
        "subsystems.risk.services.risk-engine.critical: input should be a valid boolean (got 'yes')",
    ),
    (
        "number-that-is-not-one",
        lambda t: _set(t, "payment", "payment-api", slo={"availability": "high"}),
        "subsystems.payment.services.payment-api.slo.availability: input should be a valid number (got 'high')",
    ),
    (
        "zero-cpu",
        lambda t: _set(t, "payment", "payment-api", resources={"requests": {"cpu": 0}}),
        "subsystems.payment.services.payment-api.resources.requests.cpu: '0' is not a whole number of millicores "
        "of at least 1m",
    ),
    (
        "memory-without-unit",
        lambda t: _set(t, "payment", "payment-api", resources={"limits": {"memory": 512}}),
        "subsystems.payment.services.payment-api.resources.limits.memory: '512' is not a memory amount: a whole "
        "number with a unit, Ki, Mi, Gi or Ti, such as 256Mi",
    ),
    (
        "infinite-number",
        lambda t: _set(t, "payment", "payment-api", slo={"latencySeconds": "1e999"}),
        "subsystems.payment.services.payment-api.slo.latencySeconds: input should be a finite number",
    ),
    (
        "unknown-key-in-service",
        lambda t: _set(t, "payment", "payment-api", replics=3),
        "subsystems.payment.services.payment-api.replics: unknown key; did you mean 'replicas'? (allowed: autoscaling,",
    ),
    (
        "port-out-of-range",
        lambda t: _set(t, "payment", "payment-api", port=80),
        "subsystems.payment.services.payment-api.port: input should be greater than or equal to 1024 (got 80)",
    ),
    (
        "uppercase-service-name",
        lambda t: (t["risk"]["services"].update({"RiskEngine": t["risk"]["services"].pop("risk-engine")}), t)[1],
        "subsystems.risk.services.RiskEngine: key 'RiskEngine' does not match the pattern",
    ),
    (
        "database-without-postgres",
        lambda t: _set(t, "risk", "risk-engine", database=True),
        "subsystems.risk.services.risk-engine.database: is true but subsystems.risk.postgres is not declared",
    ),
    (
        "limits-below-requests",
        lambda t: _set(
            t,
            "payment",
            "payment-api",
            resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "500m", "memory": "1Gi"}},
        ),
        "subsystems.payment.services.payment-api.resources: limits.cpu (500m) must be >= requests.cpu (1)",
    ),
    (
        "even-queue-cluster",
        lambda t: (t["payment"]["queue"].update(replicas=2), t)[1],
        "subsystems.payment.queue.replicas: must be 1 or odd, got 2",
    ),
    (
        "two-services-consume-one-queue",
        lambda t: _set(t, "business", "reporting", consumes=["report-requests", "clearing-batches"]),
        "subsystems.business.services.reporting.consumes[1]: 'clearing-batches' is already consumed by",
    ),
    (
        "call-to-itself",
        lambda t: _set(t, "risk", "risk-engine", calls=["risk-engine"]),
        "subsystems.risk.services.risk-engine.calls[0]: 'risk-engine' is the service itself",
    ),
    (
        "reserved-subsystem-name",
        lambda t: (t.update(monitoring={"services": {}}), t)[1],
        "subsystems.monitoring: 'monitoring' is reserved for shared infrastructure",
    ),
]


def _assert_refused(project, stack: str, expected: str) -> str:
    with pytest.raises(ProgramFailed) as failure:
        project.render(stack)
    assert isinstance(failure.value.cause, pulumi.RunError), failure.value.cause
    assert failure.value.registrations == [], "resources were registered before the config was refused"
    report = str(failure.value.cause)
    assert expected in report, report
    assert "Traceback" not in report
    return report


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in TOPOLOGY_CASES], ids=[c[0] for c in TOPOLOGY_CASES])
def test_bad_topology_is_refused_before_any_resource(project, mutate, expected):
    project.set_topology(mutate(project.topology()))
    _assert_refused(project, "dev", expected)


def test_a_decimal_in_text_is_read_as_its_number_as_pulumi_config_set_path_stores_it(project):
    """`pulumi config set --path ...availability 99.95` stores the decimal as text (only integers and true/false are
    typed: pulumi/pulumi sdk/go/common/resource/config/value.go `coerceObject`); the render reads it as 99.95."""
    project.set_topology(_set(project.topology(), "payment", "payment-api", slo={"availability": "99.95"}))
    [service] = [s for s in plan_for_stack("dev", project.root).services() if s.name == "payment-api"]
    assert service.availability_target == 99.95


def test_a_cpu_amount_may_be_a_bare_number_as_in_kubernetes(project):
    resources = {"requests": {"cpu": 0.5, "memory": "256Mi"}, "limits": {"cpu": 2, "memory": "512Mi"}}
    project.set_topology(_set(project.topology(), "payment", "payment-api", resources=resources))
    [service] = [s for s in plan_for_stack("dev", project.root).services() if s.name == "payment-api"]
    assert (service.resources.requests.cpu, service.resources.limits.cpu) == ("0.5", "2")


def test_tag_only_image_is_refused_in_prod_but_allowed_where_the_stack_opts_out(project):
    project.set_topology(_set(project.topology(), "payment", "payment-api", image="registry.example/pay:1.4.2"))
    _assert_refused(
        project,
        "prod",
        "subsystems.payment.services.payment-api.image: 'registry.example/pay:1.4.2' is not pinned by digest",
    )
    # dev sets guardrails.requireImageDigest: false, visibly, in its stack file.
    deployment = project.render("dev").object("Deployment", "payment-api")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/pay:1.4.2"


def test_unknown_top_level_key_is_refused(project):
    project.set_stack_key("prod", "replicaz", 3)
    report = _assert_refused(project, "prod", "replicaz: unknown key (allowed: alerting, backup, budget, cluster,")
    assert "did you mean" not in report  # no top-level key is close to it


def test_a_section_given_as_a_value_is_refused_naming_its_keys(project):
    project.set_stack_key("dev", "network", "calico")
    report = _assert_refused(project, "dev", "network: must be a section of keys (")
    assert "not 'calico'" in report and "instance of" not in report


def test_bad_stack_level_value_is_refused(project):
    project.set_stack_key("dev", "kubernetesVersion", "1.12")
    _assert_refused(project, "dev", "kubernetesVersion: '1.12' does not match the pattern")


def test_defaults_that_contradict_each_other_are_refused(project):
    project.set_stack_key("dev", "defaults", {"workload": {"minReplicas": 4, "maxReplicas": 3}})
    _assert_refused(project, "dev", "defaults.workload: minReplicas (4) must be <= maxReplicas (3)")


def test_every_problem_is_reported_at_once(project):
    topology = project.topology()
    _set(topology, "payment", "payment-api", calls=["nowhere"])
    _set(topology, "risk", "risk-engine", consumes=["payment/nothing"])
    project.set_topology(topology)
    report = _assert_refused(project, "dev", "2 problems")
    assert "calls[0]" in report and "consumes[0]" in report


def test_queue_cycle_between_subsystems_is_refused(project):
    topology = project.topology()
    topology["risk"]["queue"] = {"queues": {"risk-events": {}}}
    _set(topology, "payment", "payment-api", publishes=["payment-events", "risk/risk-events"])
    project.set_topology(topology)
    _assert_refused(project, "dev", "subsystems: queue dependencies form a cycle")


def test_config_error_lists_problems_sorted_and_deduplicated():
    with pytest.raises(ConfigError) as error:
        parse_platform_config(
            {
                **MINIMAL,
                "subsystems": {"a": {"services": {"x": {"image": "i@sha256:" + "0" * 64, "calls": ["y", "y"]}}}},
            },
            frozenset({"alertChat"}),
        )
    assert str(error.value) == "subsystems.a.services.x: calls lists y more than once"


def test_model_defaults_are_production_grade():
    """Secure and available by default: a stack file only ever opts out, visibly."""
    config = PlatformConfig.model_validate({"subsystems": {}, **MINIMAL})
    assert config.defaults.workload.min_replicas >= 2
    assert config.defaults.workload.critical_min_replicas >= 3
    assert config.defaults.postgres.instances == 3
    assert config.defaults.queue.replicas == 3
    assert config.guardrails.require_image_digest is True
    assert config.guardrails.protect_stateful_resources is True


def test_every_field_documents_its_default():
    def walk(model, path):
        for name, field in model.model_fields.items():
            assert field.description, f"{path}.{name} has no description"
            annotation = field.annotation
            for candidate in getattr(annotation, "__args__", (annotation,)):
                if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                    walk(candidate, f"{path}.{name}")

    walk(PlatformConfig, "config")
