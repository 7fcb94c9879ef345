"""Per-stack overrides (issue 11): a JSON merge patch of the project-level topology, applied when config is parsed."""

from __future__ import annotations

import copy

import pulumi
import pytest
import yaml

from infra.errors import ConfigError
from infra.offline.mocks import ProgramFailed
from infra.overrides import merge_patch, patched_paths
from infra.stack_config import PROJECT_ROOT, parse_platform_config, plan_for_stack, stack_names

# RFC 7386, Appendix A: (target, patch, result), verbatim.
RFC_7386_APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7386_APPENDIX_A)
def test_merge_patch_matches_rfc_7386_appendix_a(target, patch, result):
    before = copy.deepcopy((target, patch))
    assert merge_patch(target, patch) == result
    assert (target, patch) == before, "merge_patch modified its arguments"


def test_merge_patch_matches_the_rfc_7386_section_3_example():
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None}, "tags": ["example"]}
    assert merge_patch(target, patch) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


def test_patched_paths_are_the_leaves_a_patch_writes():
    patch = {"payment": {"services": {"payment-api": {"replicas": {"max": 12}, "expose": None}}, "postgres": {}}}
    assert patched_paths(patch) == [
        "payment.services.payment-api.replicas.max",
        "payment.services.payment-api.expose",
        "payment.postgres",
    ]


# --- Applied when the config is parsed ------------------------------------------------------------------------

# The smallest complete config: one subsystem, cluster facts, someone to tell.
IMAGE = "registry.example/app@sha256:" + "0" * 64
BASE = {
    "network": {"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"]},
    "alerting": {
        "receivers": {"chat": {"webhook": {"urlSecret": "alertChat"}}},
        "routes": {"shop": {"page": "chat", "ticket": "chat"}, "platform": {"page": "chat", "ticket": "chat"}},
    },
    "subsystems": {
        "shop": {
            "queue": {"queues": {"orders": {}}},
            "services": {
                "web": {"image": IMAGE, "critical": True, "publishes": ["orders"], "expose": {"path": "/shop"}},
                "worker": {"image": IMAGE, "consumes": ["orders"]},
            },
        }
    },
    "gateway": {"hostname": "shop.example"},
    "guardrails": {"requireBackups": False},
}
SECRETS = frozenset({"alertChat"})


def parse(overrides=None, **changes):
    values = {**copy.deepcopy(BASE), **changes}
    if overrides is not None:
        values["overrides"] = overrides
    return parse_platform_config(values, SECRETS)


def refused(overrides=None, **changes) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse(overrides, **changes)
    return [str(p) for p in error.value.problems]


def test_an_override_changes_exactly_what_it_names():
    base = parse()
    plan = parse({"shop": {"services": {"web": {"replicas": {"max": 12}}}}})
    assert plan.service("shop", "web").max_replicas == 12
    assert plan.service("shop", "web").min_replicas == base.service("shop", "web").min_replicas
    others = {k: v for k, v in vars(plan.service("shop", "web")).items() if k != "max_replicas"}
    assert others == {k: v for k, v in vars(base.service("shop", "web")).items() if k != "max_replicas"}
    assert plan.service("shop", "worker") == base.service("shop", "worker")
    assert plan.subsystems["shop"].queue == base.subsystems["shop"].queue


def test_null_removes_a_key_and_lists_replace_whole():
    plan = parse({"shop": {"services": {"web": {"expose": None, "calls": ["worker"]}}}})
    assert plan.service("shop", "web").expose is None
    assert [c.service for c in plan.service("shop", "web").calls] == ["worker"]


def test_an_override_may_remove_a_service():
    topology = {"shop": {"services": {"web": None, "worker": {"consumes": None}}, "queue": None}}
    assert list(parse(topology).subsystems["shop"].services) == ["worker"]


def test_no_overrides_and_empty_overrides_are_the_same_plan():
    assert parse({}) == parse()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"shp": {"services": {"web": {"replicas": {"max": 3}}}}},
            "overrides.shp: is not a subsystem declared in subsystems (declared: shop); overrides change the "
            "topology, they do not add to it",
        ),
        (
            {"shop": {"services": {"wbe": {"replicas": {"max": 3}}}}},
            "overrides.shop.services.wbe: is not a service of subsystems.shop (declared: web, worker)",
        ),
        (["shop"], "overrides: must be a mapping of subsystem name to patch (got ['shop'])"),
        ("null", "overrides: must be a mapping of subsystem name to patch (got 'null')"),
    ],
    ids=["unknown-subsystem", "unknown-service", "a-list", "null"],
)
def test_an_override_that_would_add_to_the_topology_or_is_no_patch_is_refused(overrides, expected):
    assert any(p.startswith(expected) for p in refused(overrides)), refused(overrides)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"shop": {"services": {"web": {"replicas": {"max": 1000}}}}},
            "overrides.shop.services.web.replicas.max: input should be less than or equal to 100 (got 1000)",
        ),
        (
            # Valid alone; the rule on the object it changed (min <= max, critical min 3) fires.
            {"shop": {"services": {"web": {"replicas": {"max": 2}}}}},
            "overrides.shop.services.web.replicas: min (3) must be <= max (2)",
        ),
        (
            {"shop": {"services": {"web": {"calls": ["nowhere"]}}}},
            "overrides.shop.services.web.calls[0]: 'nowhere' is not a declared service",
        ),
        (
            {"shop": {"services": {"web": {"image": None}}}},
            "overrides.shop.services.web: needs exactly one of `image` or `build` (got neither)",
        ),
        (
            # The override removed the consumer; the problem shows on the queue, and says which override did it.
            {"shop": {"services": {"worker": None}}},
            "subsystems.shop.queue.queues.orders: shop/web publishes to it but no service consumes it; add the "
            "consumer, or state why there is none in `unconsumed` (its QueueConsumersAbsent alert would page) "
            "(after overrides: shop.services.worker)",
        ),
    ],
    ids=["bound", "rule-on-changed-object", "reference", "removed-required-field", "consequence-elsewhere"],
)
def test_problems_an_override_introduces_name_the_override(overrides, expected):
    problems = refused(overrides)
    assert problems == [expected] or any(p.startswith(expected) for p in problems), problems


def test_problems_of_the_topology_itself_keep_their_path_when_a_stack_has_overrides():
    subsystems = copy.deepcopy(BASE["subsystems"])
    subsystems["shop"]["services"]["worker"]["calls"] = ["nowhere"]
    problems = refused({"shop": {"services": {"web": {"replicas": {"max": 12}}}}}, subsystems=subsystems)
    assert problems == [
        "subsystems.shop.services.worker.calls[0]: 'nowhere' is not a declared service "
        "(declared: shop/web, shop/worker)"
    ]


# --- Whole stacks ---------------------------------------------------------------------------------------------

PROD_OVERRIDES = {"payment": {"services": {"payment-api": {"replicas": {"max": 12}}}}}


def _hpa_max(run, name: str) -> int:
    return run.object("HorizontalPodAutoscaler", name)["spec"]["maxReplicas"]


def test_a_stack_override_changes_one_service_in_the_render(project, prod):
    plan = plan_for_stack("prod")
    api, *others = [svc for svc in plan.services() if not svc.consumes]  # services with an HPA
    raised = api.max_replicas + 1 if api.max_replicas < 100 else api.max_replicas - 1
    patch = {api.subsystem: {"services": {api.name: {"replicas": {"max": raised}}}}}
    project.set_stack_key("prod", "overrides", merge_patch(plan.config.overrides, patch))
    run = project.render("prod")
    assert _hpa_max(run, api.name) == raised != _hpa_max(prod, api.name)
    for other in others:
        assert _hpa_max(run, other.name) == _hpa_max(prod, other.name)
    assert len(run.registrations) == len(prod.registrations)


def test_a_topology_change_in_pulumi_yaml_reaches_a_stack_that_has_overrides(project):
    project.set_stack_key("prod", "overrides", PROD_OVERRIDES)
    topology = project.topology()
    topology["payment"]["services"]["payment-api"]["expose"]["requestsPerSecond"] = 350
    topology["business"]["services"]["reporting"]["replicas"] = {"max": 9}
    project.set_topology(topology)

    run = project.render("prod")
    assert _hpa_max(run, "payment-api") == 12  # the override
    policy = run.object("BackendTrafficPolicy", "payment-api")
    assert "350" in str(policy["spec"]), policy["spec"]  # Pulumi.yaml, in the same service
    assert run.object("ScaledObject", "reporting")["spec"]["maxReplicaCount"] == 9  # Pulumi.yaml, elsewhere


def test_a_refused_override_registers_nothing(project):
    project.set_stack_key("prod", "overrides", {"payment": {"services": {"payment-api": {"replicas": {"max": 0}}}}})
    with pytest.raises(ProgramFailed) as failure:
        project.render("prod")
    assert isinstance(failure.value.cause, pulumi.RunError)
    assert failure.value.registrations == []
    assert "overrides.payment.services.payment-api.replicas.max: input should be greater than or equal to 1" in str(
        failure.value.cause
    )


def test_the_committed_stacks_use_overrides_only_where_a_service_differs(project):
    """A stack carries no empty or no-op patch: each committed override changes its stack's plan."""
    for stack in stack_names():
        plan = plan_for_stack(stack)
        if "settlement-platform:overrides" not in project.load(f"Pulumi.{stack}.yaml")["config"]:
            continue
        assert plan.config.overrides, f"Pulumi.{stack}.yaml: empty overrides"
        project.set_stack_key(stack, "overrides", {})
        assert plan_for_stack(stack, project.root).subsystems != plan.subsystems, f"Pulumi.{stack}.yaml: no-op patch"


def test_the_readme_example_applies_to_prod_as_described(project):
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("### Per-stack overrides") :]
    example = yaml.safe_load(section[section.index("```yaml\n") + 8 : section.index("```\n", 1)])
    project.set_stack_key("prod", "overrides", example["config"]["settlement-platform:overrides"])
    plan, base = plan_for_stack("prod", project.root), plan_for_stack("prod")
    api = plan.service("payment", "payment-api")
    assert api.max_replicas == 12
    assert api.resources.requests.cpu == "500m"
    assert api.resources.limits == base.service("payment", "payment-api").resources.limits
    assert plan.service("business", "settlement-api").expose is None
    assert plan.service("business", "clearing-engine").egress["clearing-house"].cidrs == [
        "198.51.100.0/24",
        "192.0.2.0/24",
    ]
    assert plan.service("business", "clearing-engine").egress["clearing-house"].ports == [443]
    assert plan.service("risk", "risk-engine") == base.service("risk", "risk-engine")
