"""Strict input (issue 11): every problem in the stack files is one line naming file, field, value and rule; the
render exits 2 and writes nothing, and the program registers nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pulumi
import pytest
import yaml

from infra.config import PlatformConfig, Resources
from infra.errors import ConfigError
from infra.offline.cli import main
from infra.offline.mocks import ProgramFailed, run_program
from infra.program import run
from infra.stack_config import PROJECT_ROOT, StackConfig, parse_platform_config, plan_for_stack, read_stack_files
from tests.cli import run_cli

PROJECT_FILE = (PROJECT_ROOT / "Pulumi.yaml").read_text()
DEV_FILE = (PROJECT_ROOT / "Pulumi.dev.yaml").read_text()


def render_cli(project_dir: Path, out: Path, stack: str = "dev", capsys=None) -> tuple[int, str]:
    """`python -m infra render`, in process: exit code and stderr."""
    code = main(["render", stack, "--out", str(out), "--project-dir", str(project_dir)])
    return code, capsys.readouterr().err if capsys else ""


def files(tmp_path: Path, project: str = PROJECT_FILE, dev: str = DEV_FILE) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(project)
    (tmp_path / "Pulumi.dev.yaml").write_text(dev)
    return tmp_path


def assert_refused_by_cli(project_dir: Path, tmp_path: Path, capsys, expected: str) -> str:
    out = tmp_path / "out"
    code, err = render_cli(project_dir, out, capsys=capsys)
    assert code == 2, err
    problems = [line for line in err.splitlines() if line.startswith("  - ")]
    assert any(expected in line for line in problems), err
    assert "Traceback" not in err
    assert not out.exists(), "nothing is written for a refused config"
    return err


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


# --- The files themselves -------------------------------------------------------------------------------------


def test_a_duplicate_key_in_a_stack_file_is_refused_with_its_position(tmp_path, capsys):
    dev = DEV_FILE + "  settlement-platform:gateway:\n    hostname: api.other.example\n"
    project_dir = files(tmp_path, dev=dev)
    first, second = line_of(dev, "settlement-platform:gateway"), len(dev.splitlines()) - 1
    assert_refused_by_cli(
        project_dir,
        tmp_path,
        capsys,
        f"Pulumi.dev.yaml:{second}:3: duplicate key 'settlement-platform:gateway' (first at line {first}); "
        "Pulumi refuses the file",
    )


def test_a_duplicate_key_in_pulumi_yaml_is_refused_even_deep_in_the_topology(tmp_path, capsys):
    project = PROJECT_FILE.replace(
        "            critical: true\n", "            critical: true\n            critical: false\n", 1
    )
    line = line_of(project, "critical: false")
    assert_refused_by_cli(
        files(tmp_path, project=project),
        tmp_path,
        capsys,
        f"Pulumi.yaml:{line}:13: duplicate key 'critical' (first at line {line - 1})",
    )


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    dev = (
        "x-base: &base {minReplicas: 1, maxReplicas: 3}\n"
        "config:\n  settlement-platform:defaults:\n    workload:\n      <<: *base\n      minReplicas: 2\n"
    )
    workload = read_stack_files("dev", files(tmp_path, dev=dev)).values["settlement-platform:defaults"]["workload"]
    assert workload == {"minReplicas": 2, "maxReplicas": 3}


def test_only_true_and_false_are_booleans_as_for_the_engine(tmp_path, capsys):
    """Pulumi reads stack files with go-yaml v3: an unquoted `yes` is text there (YAML 1.2), not true as in PyYAML's
    YAML 1.1. Read the same way here, it is refused by the render, as `pulumi up` would refuse it."""
    project = PROJECT_FILE.replace("            critical: true\n", "            critical: yes\n", 1)
    assert_refused_by_cli(
        files(tmp_path, project=project), tmp_path, capsys, ".critical: input should be a valid boolean (got 'yes')"
    )


def test_a_base_60_number_is_text_as_for_the_engine(tmp_path, capsys):
    """YAML 1.1 (PyYAML) reads `1:30` as 90; go-yaml v3, which Pulumi uses, as text: refused here as there."""
    project = PROJECT_FILE.replace(
        "            critical: true\n", "            critical: true\n            replicas: {min: 1, max: 1:30}\n", 1
    )
    assert_refused_by_cli(
        files(tmp_path, project=project),
        tmp_path,
        capsys,
        ".replicas.max: input should be a valid integer (got '1:30')",
    )


def test_an_unquoted_timestamp_is_refused_with_how_to_write_it(tmp_path, capsys):
    """go-yaml reads it as a Go time, which Pulumi hands the program in Go's own rendering: refused, not a
    traceback (json cannot encode a date) nor a value that differs from the engine's."""
    dev = DEV_FILE.replace(
        'settlement-platform:budget: {cpu: "3", memory: 6Gi}', "settlement-platform:budget: {since: 2026-11-30}"
    )
    assert dev != DEV_FILE
    assert_refused_by_cli(
        files(tmp_path, dev=dev),
        tmp_path,
        capsys,
        "Pulumi.dev.yaml: config.settlement-platform:budget.since: 2026-11-30 is an unquoted date or time; quote it",
    )


def test_a_number_with_an_exponent_is_a_number_as_for_the_engine(tmp_path):
    """go-yaml reads `25e-2` as a number; PyYAML (YAML 1.1) as text, which the fractional fields read as its number."""
    project = PROJECT_FILE.replace(
        "            critical: true\n", "            critical: true\n            slo: {latencySeconds: 25e-2}\n", 1
    )
    services = plan_for_stack("dev", files(tmp_path, project=project)).services()
    assert [s.latency_seconds for s in services if s.name == "payment-api"] == [0.25]


def test_a_yaml_syntax_error_is_one_line_with_file_line_and_column(tmp_path, capsys):
    dev = DEV_FILE.replace("    hostname: api.dev.settlement.example\n", "    hostname: api.dev: x\n")
    line = line_of(dev, "api.dev: x")
    err = assert_refused_by_cli(
        files(tmp_path, dev=dev), tmp_path, capsys, f"Pulumi.dev.yaml:{line}:22: mapping values are not allowed here"
    )
    assert len(err.strip().splitlines()) == 2, err  # the header and the one problem


def test_an_unclosed_bracket_reports_where_the_parser_gave_up_and_what_it_was_reading(tmp_path, capsys):
    # A fixture of its own: where the parser gives up depends on what follows the bracket.
    dev = "config:\n  settlement-platform:network:\n    apiServerCidrs: [192.168.49.2/32\n    nodeCidrs: []\n"
    err = assert_refused_by_cli(
        files(tmp_path, dev=dev), tmp_path, capsys, "Pulumi.dev.yaml:4:14: expected ',' or ']', but got ':'"
    )
    assert "(while parsing a flow sequence started at line 3)" in err, err


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        ("", "Pulumi.yaml: is empty; a project needs at least `name` and `runtime`"),
        ("# nothing yet\n", "Pulumi.yaml: is empty"),
        ("- name: x\n", "Pulumi.yaml: must be a YAML mapping (got a list)"),
        ("runtime: python\n", "Pulumi.yaml: name: is required: the project's name, its config namespace (got None)"),
        (
            "name: settlement-platform\nruntime: python\nconfig:\n  - subsystems\n",
            "Pulumi.yaml: config: must be a mapping of key to value (got a list)",
        ),
    ],
    ids=["empty", "only-a-comment", "a-list", "no-name", "config-as-list"],
)
def test_a_malformed_pulumi_yaml_is_named_without_a_traceback(tmp_path, capsys, project, expected):
    assert_refused_by_cli(files(tmp_path, project=project), tmp_path, capsys, expected)


def test_config_written_as_a_list_in_a_stack_file_is_refused(tmp_path, capsys):
    expected = "Pulumi.dev.yaml: config: must be a mapping of key to value (got a list)"
    assert_refused_by_cli(files(tmp_path, dev="config:\n  - kubernetesVersion\n"), tmp_path, capsys, expected)


def test_a_missing_or_non_directory_project_dir_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert_refused_by_cli(missing, tmp_path, capsys, f"{missing}: does not exist (the project folder")
    a_file = tmp_path / "Pulumi.yaml"
    a_file.write_text(PROJECT_FILE)
    assert_refused_by_cli(a_file, tmp_path, capsys, f"{a_file}: is not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_refused_by_cli(empty, tmp_path, capsys, f"{empty}: holds no Pulumi.yaml")


def test_a_refused_file_exits_2_from_the_command_line_too(tmp_path):
    dev = DEV_FILE + "  settlement-platform:kubernetesVersion: '1.32'\n"
    files(tmp_path, dev=dev)
    out = tmp_path / "out"
    result = run_cli("render", "dev", "--out", str(out), "--project-dir", str(tmp_path))
    assert result.returncode == 2
    first = line_of(dev, "kubernetesVersion")
    assert f"duplicate key 'settlement-platform:kubernetesVersion' (first at line {first})" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


# --- Config namespaces ----------------------------------------------------------------------------------------


def test_a_key_in_an_unknown_namespace_is_refused_naming_the_key_and_the_file(tmp_path, capsys):
    dev = DEV_FILE + "  settlement:gateway:\n    hostname: api.typo.example\n"
    assert_refused_by_cli(
        files(tmp_path, dev=dev),
        tmp_path,
        capsys,
        "Pulumi.dev.yaml: config key 'settlement:gateway': namespace 'settlement' is not one this program or its "
        "providers read (allowed: settlement-platform, pulumi, kubernetes)",
    )


def test_a_key_in_an_unknown_namespace_in_pulumi_yaml_is_refused(tmp_path, capsys):
    project = PROJECT_FILE.replace("config:\n", "config:\n  aws:region: eu-west-1\n", 1)
    assert_refused_by_cli(files(tmp_path, project=project), tmp_path, capsys, "Pulumi.yaml: config key 'aws:region'")


def test_the_engines_and_the_kubernetes_providers_namespaces_are_accepted(tmp_path):
    dev = DEV_FILE + "  kubernetes:context: minikube\n  pulumi:tags:\n    team: platform\n"
    values = read_stack_files("dev", files(tmp_path, dev=dev)).values
    assert values["kubernetes:context"] == "minikube"


def test_online_an_unknown_namespace_in_the_runtime_config_is_refused_before_anything_is_registered():
    """Under the engine there is no file to name: the program checks the config the SDK holds."""
    stack = read_stack_files("dev")
    values = {**stack.values, "settlement:gateway": {"hostname": "api.typo.example"}}
    with pytest.raises(ProgramFailed) as failure:
        run_program(StackConfig(stack.project, "dev", values, stack.secret_keys), run)
    assert isinstance(failure.value.cause, pulumi.RunError)
    assert failure.value.registrations == []
    assert "stack config: config key 'settlement:gateway': namespace 'settlement'" in str(failure.value.cause)


# --- Bounds that catch typos ----------------------------------------------------------------------------------


def _with(project, mutate) -> None:
    topology = project.topology()
    mutate(topology)
    project.set_topology(topology)


def assert_render_refused(project, stack: str, expected: str) -> None:
    with pytest.raises(ProgramFailed) as failure:
        project.render(stack)
    assert isinstance(failure.value.cause, pulumi.RunError), failure.value.cause
    assert failure.value.registrations == [], "resources were registered before the config was refused"
    assert expected in str(failure.value.cause), failure.value.cause


def _api(t: dict) -> dict:
    return t["payment"]["services"]["payment-api"]


BOUND_CASES = [
    (
        "service-replicas",
        lambda t: _api(t).update(replicas={"max": 1000}),
        None,
        "subsystems.payment.services.payment-api.replicas.max: input should be less than or equal to 100 (got 1000)",
    ),
    (
        "default-replicas",
        None,
        ("defaults", {"workload": {"maxReplicas": 300}}),
        "defaults.workload.maxReplicas: input should be less than or equal to 100 (got 300)",
    ),
    (
        "zero-storage",
        lambda t: t["payment"]["postgres"].update(storage={"size": "0Gi"}),
        None,
        "subsystems.payment.postgres.storage.size: '0Gi' is outside 1Gi..64Ti",
    ),
    (
        "huge-storage",
        lambda t: t["business"]["queue"].update(storage={"size": "999999Ti"}),
        None,
        "subsystems.business.queue.storage.size: '999999Ti' is outside 1Gi..64Ti",
    ),
    (
        "default-storage",
        None,
        ("defaults", {"postgres": {"storageSize": "500Mi"}}),
        "defaults.postgres.storageSize: '500Mi' is outside 1Gi..64Ti",
    ),
    (
        "monitoring-storage",
        None,
        ("monitoring", {"storageSize": "100000Gi"}),
        "monitoring.storageSize: '100000Gi' is outside 1Gi..64Ti",
    ),
    (
        "rate",
        lambda t: _api(t)["expose"].update(requestsPerSecond=2_000_000),
        None,
        "subsystems.payment.services.payment-api.expose.requestsPerSecond: input should be less than or equal to "
        "100000 (got 2000000)",
    ),
    (
        "prometheus-retention",
        None,
        ("monitoring", {"retention": "1500d"}),
        "monitoring.retention: '1500d' is longer than 365 days",
    ),
    (
        "backup-retention",
        None,
        ("backup", {"objectStore": {"destinationPath": "s3://bucket-x/wal"}, "retention": "200m"}),
        "backup.retention: '200m' is longer than 3650 days",
    ),
    (
        "cidr-octet",
        None,
        ("network", {"apiServerCidrs": ["192.168.349.2/32"], "nodeCidrs": ["192.168.49.0/24"]}),
        "network.apiServerCidrs[0]: '192.168.349.2/32' is not an IPv4 network (Octet 349 (> 255) not permitted",
    ),
    (
        "cidr-prefix",
        None,
        ("network", {"apiServerCidrs": ["192.168.49.2/32"], "nodeCidrs": ["192.168.49.0/40"]}),
        "network.nodeCidrs[0]: '192.168.49.0/40' is not an IPv4 network ('40' is not a valid netmask)",
    ),
    (
        "cidr-host-bits",
        None,
        ("network", {"apiServerCidrs": ["192.168.49.2/32"], "nodeCidrs": ["192.168.49.7/24"]}),
        "network.nodeCidrs[0]: '192.168.49.7/24' is not an IPv4 network (192.168.49.7/24 has host bits set; the "
        "network is 192.168.49.0/24, the one address 192.168.49.7/32)",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "stack_key", "expected"), [c[1:] for c in BOUND_CASES], ids=[c[0] for c in BOUND_CASES]
)
def test_a_value_beyond_its_documented_bound_is_refused(project, mutate, stack_key, expected):
    if mutate is not None:
        _with(project, mutate)
    if stack_key is not None:
        project.set_stack_key("dev", *stack_key)
    assert_render_refused(project, "dev", expected)


def test_the_bounds_themselves_are_accepted():
    config = PlatformConfig.model_validate(
        {
            "subsystems": {},
            "network": {"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"]},
            "alerting": {"receivers": {}, "routes": {}},
            "defaults": {"workload": {"maxReplicas": 100}, "postgres": {"storageSize": "64Ti"}},
            "monitoring": {"storageSize": "1Gi", "retention": "365d"},
        }
    )
    assert config.defaults.postgres.storage_size == "64Ti"


def test_every_bound_is_stated_in_its_description():
    from infra.config import Expose, Replicas, Storage, WorkloadDefaults

    assert "1..100" in Replicas.model_fields["max"].description
    assert "1..100" in WorkloadDefaults.model_fields["max_replicas"].description
    assert "1..100000" in Expose.model_fields["requests_per_second"].description
    assert "Between 1Gi and 64Ti" in Storage.model_fields["size"].description


# --- Partial resources ----------------------------------------------------------------------------------------


def _container_resources(run, name: str) -> dict:
    return run.object("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["resources"]


def test_a_partial_service_resources_block_keeps_the_defaults_for_the_rest(project, dev):
    _with(project, lambda t: _api(t).update(resources={"requests": {"cpu": "250m"}}))
    got = _container_resources(project.render("dev"), "payment-api")
    default = _container_resources(dev, "payment-api")
    assert got["requests"] == {**default["requests"], "cpu": "250m"}
    assert got["limits"] == default["limits"]


def test_a_partial_block_that_contradicts_the_defaults_names_where_the_rest_came_from(project):
    _with(project, lambda t: _api(t).update(resources={"requests": {"memory": "1Gi"}}))
    assert_render_refused(
        project,
        "dev",
        "subsystems.payment.services.payment-api.resources: limits.memory (256Mi) must be >= requests.memory (1Gi) "
        "(what is not given comes from defaults.workload.resources)",
    )


@pytest.mark.parametrize(
    ("section", "partial", "expected"),
    [
        (
            "workload",
            {"requests": {"cpu": "200m"}},
            {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        ),
        (
            "postgres",
            {"limits": {"cpu": "4"}},
            {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "1Gi"}},
        ),
        (
            "queue",
            {"requests": {"memory": "1Gi"}},
            {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        ),
    ],
)
def test_a_partial_default_resources_block_keeps_the_built_in_default_for_the_rest(section, partial, expected):
    config = PlatformConfig.model_validate(
        {
            "subsystems": {},
            "network": {"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"]},
            "alerting": {"receivers": {}, "routes": {}},
            "defaults": {section: {"resources": partial}},
        }
    )
    assert getattr(config.defaults, section).resources.model_dump() == expected


def test_the_resources_descriptions_state_the_defaults_the_model_applies():
    """The README table comes from these descriptions: each states what the model really fills in."""
    from infra.config import Defaults

    for section in ("workload", "postgres", "queue"):
        model = Defaults.model_fields[section].annotation
        field = model.model_fields["resources"]
        value: Resources = field.get_default(call_default_factory=True)
        stated = (
            f"requests {value.requests.cpu}/{value.requests.memory}, limits {value.limits.cpu}/{value.limits.memory}"
        )
        assert stated in field.description, (section, field.description)
    # The generic pieces promise no default of their own, which would contradict the sections'.
    for name in ("requests", "limits"):
        assert "Default" not in Resources.model_fields[name].description


# --- Queues without consumers ---------------------------------------------------------------------------------


def _reporting_consumes_nothing(t: dict) -> None:
    t["business"]["services"]["reporting"].pop("consumes")


def test_a_published_queue_without_a_consumer_is_refused(project):
    _with(project, _reporting_consumes_nothing)
    assert_render_refused(
        project,
        "dev",
        "subsystems.business.queue.queues.report-requests: business/clearing-engine publishes to it but no service "
        "consumes it; add the consumer, or state why there is none in `unconsumed`",
    )


def test_a_queue_marked_unconsumed_renders_and_its_consumers_absent_alert_leaves_it_out(project, tmp_path):
    reason = "reports move to the data warehouse export in 2.4"

    def mutate(t):
        _reporting_consumes_nothing(t)
        t["business"]["queue"]["queues"]["report-requests"] = {"unconsumed": reason}

    _with(project, mutate)
    (rule,) = project.render("dev").objects("PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "QueueConsumersAbsent"]
    expr = alerts[0]["expr"]
    assert 'unless on(namespace, queue) (rabbitmq_queue_consumers{namespace="business",queue="report-requests"})' in (
        expr
    )
    _promtool_consumers_absent(tmp_path, expr)


def _promtool_consumers_absent(tmp_path: Path, expr: str) -> None:
    """The exemption in PromQL: the marked queue is left out, every other queue without consumers still fires."""
    import shutil

    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed: run `make tools` (or `make test`, which runs it)")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": []}))
    marked = {"namespace": "business", "queue": "report-requests", "vhost": "business"}
    other = {**marked, "queue": "clearing-batches"}
    # The alert adds the owning subsystem (infra.alerts.owned).
    fired = {**other, "subsystem": "business"}

    def series(labels):
        return "rabbitmq_queue_consumers{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"

    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series(marked), "values": "0x10"},
                    {"series": series(other), "values": "0x10"},
                ],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": "5m", "exp_samples": [{"labels": series(fired), "value": 0}]}
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    result = subprocess.run(
        ["promtool", "test", "rules", str(tmp_path / "test.yaml")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stale_unconsumed_mark_on_a_consumed_queue_is_refused(project):
    _with(
        project, lambda t: t["business"]["queue"]["queues"].update({"report-requests": {"unconsumed": "no reader yet"}})
    )
    assert_render_refused(
        project,
        "dev",
        "subsystems.business.queue.queues.report-requests.unconsumed: is set but business/reporting consumes the queue",
    )


@pytest.mark.parametrize(
    ("mark", "expected"), [(True, "input should be a valid string (got True)"), ("x", "at least 10")]
)
def test_the_mark_must_be_a_reason(mark, expected):
    values = {
        "subsystems": {"a": {"queue": {"queues": {"q": {"unconsumed": mark}}}}},
        "network": {"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"]},
        "alerting": {"receivers": {}, "routes": {}},
    }
    with pytest.raises(ConfigError) as error:
        parse_platform_config(values)
    assert any(
        p.path == "subsystems.a.queue.queues.q.unconsumed" and expected in p.message for p in error.value.problems
    ), error.value


def test_a_problem_in_a_value_names_the_file_that_holds_the_key(tmp_path, capsys):
    """The stack file overrides Pulumi.yaml key by key: the error says which file to open."""
    dev = DEV_FILE + "  settlement-platform:backup: {retentionn: 1d}\n"
    assert_refused_by_cli(files(tmp_path, dev=dev), tmp_path, capsys, "Pulumi.dev.yaml: backup.retentionn: unknown key")
    data = yaml.safe_load(PROJECT_FILE)  # by key, not by the file's layout (which `value:` comes first)
    data["config"]["subsystems"]["value"]["Not_A_Name"] = {}
    project = yaml.safe_dump(data, sort_keys=False)
    assert_refused_by_cli(files(tmp_path, project=project), tmp_path, capsys, "Pulumi.yaml: subsystems")
