"""Observability (issue 6): scrape targets, alert rules checked and unit-tested with promtool, Alertmanager
routing checked with amtool, dashboards as code, and the metric contract."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from infra.alertmanager import alertmanager_config
from infra.alerts import rule_groups
from infra.chart_values import ALERTMANAGER_SECRET
from infra.config import alert_secret_keys
from infra.dashboards import dashboards, panels
from infra.metrics import CONTRACT, metric_names
from infra.offline.mocks import ProgramFailed
from tests.conftest import STACKS, platform_deployments
from tests.fixture_config import SMALL_TOPOLOGY, plan_of

PROMTOOL = shutil.which("promtool") or "promtool"
AMTOOL = shutil.which("amtool") or "amtool"


def run(*args: str) -> subprocess.CompletedProcess:
    """Run a checker. Never skipped: `make test` installs promtool and amtool (Debian's prometheus and
    prometheus-alertmanager); without them these tests fail and say so."""
    if shutil.which(args[0]) is None:
        pytest.fail(f"{args[0]} is not installed: run `make tools` (or `make test`, which runs it)")
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


@pytest.fixture(params=STACKS)
def plan(request, plans):
    """Each real stack's plan, for properties that need no render."""
    return plans[request.param]


# Alert and dashboard behaviour is shown on a small fixture config (with backups, so every alert family exists).
SMALL = plan_of(SMALL_TOPOLOGY, backup={"objectStore": {"destinationPath": "s3://backups/wal"}})


# --- Scrape targets -----------------------------------------------------------------------------------------


def test_every_workload_database_and_queue_has_a_scrape_target(stack_run):
    service_monitors = {
        (m["metadata"]["namespace"], m["metadata"]["name"]): m["spec"] for m in stack_run.objects("ServiceMonitor")
    }
    pod_monitors = {
        (m["metadata"]["namespace"], m["metadata"]["name"]): m["spec"] for m in stack_run.objects("PodMonitor")
    }
    for d in platform_deployments(stack_run):
        key = (d["metadata"]["namespace"], d["metadata"]["name"])
        monitor = service_monitors[key]
        service = stack_run.object("Service", key[1], key[0])
        assert monitor["selector"]["matchLabels"] == service["spec"]["selector"]
        assert monitor["endpoints"][0]["port"] == "metrics"
        assert monitor["endpoints"][0]["path"] == "/metrics"
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    for c in stack_run.objects("Cluster"):
        spec = pod_monitors[(c["metadata"]["namespace"], c["metadata"]["name"])]
        assert spec["selector"]["matchLabels"] == {"cnpg.io/cluster": c["metadata"]["name"]}
    for q in stack_run.objects("RabbitmqCluster"):
        ns, name = q["metadata"]["namespace"], q["metadata"]["name"]
        endpoint = pod_monitors[(ns, name)]["podMetricsEndpoints"][0]
        # The broker serves TLS only: scrape over TLS, verifying against the internal CA.
        assert endpoint["scheme"] == "https" and endpoint["port"] == "prometheus-tls"
        assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "internal-ca", "key": "ca.crt"}
        assert endpoint["tlsConfig"]["serverName"] == f"{name}.{ns}.svc"
        assert "prometheus.return_per_object_metrics = true" in q["spec"]["rabbitmq"]["additionalConfig"]


def test_prometheus_picks_up_the_platforms_monitors_and_keeps_configured_retention(stack_run, stack_plan):
    """What the chart renders for the operator (not the values we pass): the Prometheus and Alertmanager CRs."""
    monitoring = stack_plan.config.monitoring
    (prometheus,) = [o for o in stack_run.all_objects() if o["kind"] == "Prometheus"]
    spec = prometheus["spec"]
    assert spec["retention"] == monitoring.retention
    assert spec["replicas"] == monitoring.prometheus_replicas
    assert spec["storage"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"] == (
        monitoring.storage_size
    )
    # Empty selectors: every ServiceMonitor, PodMonitor and PrometheusRule, in every namespace.
    for kind in ("serviceMonitor", "podMonitor", "rule"):
        assert spec[f"{kind}Selector"] == {}, kind
        assert spec[f"{kind}NamespaceSelector"] == {}, kind
    (alertmanager,) = [o for o in stack_run.all_objects() if o["kind"] == "Alertmanager"]
    assert alertmanager["spec"]["configSecret"] == ALERTMANAGER_SECRET
    assert alertmanager["spec"]["replicas"] == monitoring.alertmanager_replicas


# --- Alert rules --------------------------------------------------------------------------------------------


def _write_rules(tmp_path, plan) -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(plan), sort_keys=False))
    return str(path)


def test_promtool_accepts_the_rule_files(tmp_path, plan):
    result = run(PROMTOOL, "check", "rules", _write_rules(tmp_path, plan))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_service_has_paging_and_ticketing_burn_alerts_for_both_objectives(plan):
    alerts = [r for g in rule_groups(plan)["groups"] for r in g["rules"] if "alert" in r]
    for svc in plan.services():
        mine = {(r["alert"], r["labels"]["severity"]) for r in alerts if r["labels"].get("service") == svc.name}
        assert mine == {(f"Service{k}BudgetBurn", s) for k in ("Availability", "Latency") for s in ("page", "ticket")}
    for rule in alerts:
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["runbook_url"].startswith("https://")


def test_rules_and_dashboards_use_only_contracted_metrics(plan):
    groups = rule_groups(plan)["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    used = {name for g in groups for r in g["rules"] for name in metric_names(r["expr"])}
    for sub in plan.subsystems.values():
        for _, _, queries in panels(sub):
            used |= {name for expr, _ in queries for name in metric_names(expr)}
    unknown = used - set(CONTRACT) - recorded
    assert not unknown, f"metrics outside the contract (infra/metrics.py): {sorted(unknown)}"
    assert {"cnpg_collector_up", "rabbitmq_queue_consumers", "http_requests_total"} <= used


def test_metric_name_extraction():
    assert metric_names('sum by (le, service) (rate(http_x_bucket{a="b", le="0.5"}[5m])) > 0.3') == {"http_x_bucket"}
    assert metric_names('time() - last_ts{ns="x"} > 93600 and deriv(q[15m]) > 0') == {"last_ts", "q"}


def _render(template: str, labels: dict, value: str) -> str:
    out = template.replace("{{ $value }}", value)
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], out)


def _rule(plan, alert: str, service: str | None = None, severity: str | None = None) -> dict:
    return next(
        r
        for g in rule_groups(plan)["groups"]
        for r in g["rules"]
        if r.get("alert") == alert
        and (service is None or r["labels"].get("service") == service)
        and (severity is None or r["labels"]["severity"] == severity)
    )


def _expected(plan, alert, series_labels, value="", service=None, severity=None):
    rule = _rule(plan, alert, service, severity)
    labels = {**series_labels, **rule["labels"]}
    return {
        "exp_labels": labels,
        "exp_annotations": {k: _render(v, labels, value) for k, v in rule["annotations"].items()},
    }


PAY = {"namespace": "shop", "service": "api"}  # SMALL's critical API


def scenarios(plan) -> list[dict]:
    """promtool unit tests: each alert family firing on synthetic series, and silent on healthy ones."""
    db = {"namespace": "shop", "pod": "shop-db-1"}
    q = {"namespace": "shop", "queue": "orders", "vhost": "shop"}
    dlq = {**q, "queue": "orders-dlq"}
    hpa = {"namespace": "shop", "horizontalpodautoscaler": "api"}
    cert = {"namespace": "cert-manager", "name": "gateway-tls"}
    restarts = {"namespace": "shop", "pod": "api-1", "container": "app"}

    def series(name, labels, values):
        inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{inner}}}", "values": values}

    def case(interval, input_series, alert, eval_time, firing):
        return {
            "interval": interval,
            "input_series": input_series,
            "alert_rule_test": [{"eval_time": eval_time, "alertname": alert, "exp_alerts": firing}],
        }

    req = "http_requests_total"
    bucket, count = "http_request_duration_seconds_bucket", "http_request_duration_seconds_count"
    le = {**PAY, "le": "0.5"}
    return [
        # Availability: 10% errors burns a 99.95% budget ~200x: page and ticket.
        case(
            "1m",
            [series(req, {**PAY, "code": "200"}, "0+540x90"), series(req, {**PAY, "code": "500"}, "0+60x90")],
            "ServiceAvailabilityBudgetBurn",
            "80m",
            [
                _expected(plan, "ServiceAvailabilityBudgetBurn", PAY, service="api", severity="page"),
                _expected(plan, "ServiceAvailabilityBudgetBurn", PAY, service="api", severity="ticket"),
            ],
        ),
        # ... and 1 error in 100,000 does not.
        case(
            "1m",
            [series(req, {**PAY, "code": "200"}, "0+99999x90"), series(req, {**PAY, "code": "500"}, "0+1x90")],
            "ServiceAvailabilityBudgetBurn",
            "80m",
            [],
        ),
        # Latency: half the requests slower than the threshold.
        case(
            "1m",
            [series(bucket, le, "0+300x90"), series(count, PAY, "0+600x90")],
            "ServiceLatencyBudgetBurn",
            "80m",
            [
                _expected(plan, "ServiceLatencyBudgetBurn", PAY, service="api", severity="page"),
                _expected(plan, "ServiceLatencyBudgetBurn", PAY, service="api", severity="ticket"),
            ],
        ),
        case(
            "1m",
            [series(bucket, le, "0+600x90"), series(count, PAY, "0+600x90")],
            "ServiceLatencyBudgetBurn",
            "80m",
            [],
        ),
        case(
            "1m",
            [series("cnpg_collector_up", db, "0x10")],
            "PostgresInstanceDown",
            "5m",
            [_expected(plan, "PostgresInstanceDown", db)],
        ),
        case("1m", [series("cnpg_collector_up", db, "1x10")], "PostgresInstanceDown", "5m", []),
        case(
            "1m",
            [series("cnpg_pg_replication_lag", db, "45x20")],
            "PostgresReplicationLagging",
            "10m",
            [_expected(plan, "PostgresReplicationLagging", db, value="45")],
        ),
        case("1m", [series("cnpg_pg_replication_lag", db, "1x20")], "PostgresReplicationLagging", "10m", []),
        case(
            "1m",
            [series("cnpg_pg_replication_in_recovery", db, "1x5 0x10")],
            "PostgresFailoverHappened",
            "8m",
            [_expected(plan, "PostgresFailoverHappened", db)],
        ),
        case("1m", [series("cnpg_pg_replication_in_recovery", db, "1x15")], "PostgresFailoverHappened", "8m", []),
        case(
            "1m",
            [
                series("barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp", db, "2000x20"),
                series("barman_cloud_cloudnative_pg_io_last_available_backup_timestamp", db, "1000x20"),
            ],
            "PostgresBackupFailed",
            "10m",
            [_expected(plan, "PostgresBackupFailed", db)],
        ),
        case(
            "1m",
            [
                series("barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp", db, "1000x20"),
                series("barman_cloud_cloudnative_pg_io_last_available_backup_timestamp", db, "2000x20"),
            ],
            "PostgresBackupFailed",
            "10m",
            [],
        ),
        # Samples every 5 minutes: sparser series go stale between samples, which resets `for`.
        case(
            "5m",
            [series("barman_cloud_cloudnative_pg_io_last_available_backup_timestamp", db, "0x340")],
            "PostgresBackupTooOld",
            "28h",
            [_expected(plan, "PostgresBackupTooOld", db)],
        ),
        case(
            "5m",
            [series("barman_cloud_cloudnative_pg_io_last_available_backup_timestamp", db, "0+300x340")],
            "PostgresBackupTooOld",
            "28h",
            [],
        ),
        case(
            "1m",
            [series("rabbitmq_queue_messages_ready", q, "0+200x40")],
            "QueueBacklogGrowing",
            "35m",
            [_expected(plan, "QueueBacklogGrowing", q, value="7000")],
        ),
        case("1m", [series("rabbitmq_queue_messages_ready", q, "50x40")], "QueueBacklogGrowing", "35m", []),
        case(
            "1m",
            [series("rabbitmq_queue_consumers", q, "0x20"), series("rabbitmq_queue_consumers", dlq, "0x20")],
            "QueueConsumersAbsent",
            "15m",
            [_expected(plan, "QueueConsumersAbsent", q)],
        ),
        case("1m", [series("rabbitmq_queue_consumers", q, "2x20")], "QueueConsumersAbsent", "15m", []),
        case(
            "1m",
            [series("rabbitmq_queue_messages", dlq, "3x10")],
            "DeadLetterQueueNotEmpty",
            "8m",
            [_expected(plan, "DeadLetterQueueNotEmpty", dlq, value="3")],
        ),
        case("1m", [series("rabbitmq_queue_messages", q, "3x10")], "DeadLetterQueueNotEmpty", "8m", []),
        case(
            "1m",
            [series("kube_pod_container_status_restarts_total", restarts, "0+1x30")],
            "PodCrashLooping",
            "25m",
            [_expected(plan, "PodCrashLooping", restarts)],
        ),
        case(
            "1m",
            [series("kube_pod_container_status_restarts_total", {**restarts, "namespace": "monitoring"}, "0+1x30")],
            "PodCrashLooping",
            "25m",
            [],
        ),
        case(
            "1m",
            [
                series("kube_horizontalpodautoscaler_status_current_replicas", hpa, "6x30"),
                series("kube_horizontalpodautoscaler_spec_max_replicas", hpa, "6x30"),
            ],
            "AutoscalerPinnedAtMaximum",
            "20m",
            [_expected(plan, "AutoscalerPinnedAtMaximum", hpa)],
        ),
        case(
            "1m",
            [
                series("kube_horizontalpodautoscaler_status_current_replicas", hpa, "3x30"),
                series("kube_horizontalpodautoscaler_spec_max_replicas", hpa, "6x30"),
            ],
            "AutoscalerPinnedAtMaximum",
            "20m",
            [],
        ),
        case(
            "1m",
            [series("certmanager_certificate_expiration_timestamp_seconds", cert, "86400x130")],
            "CertificateExpiringSoon",
            "2h",
            [_expected(plan, "CertificateExpiringSoon", cert)],
        ),
        case(
            "1m",
            [series("certmanager_certificate_expiration_timestamp_seconds", cert, "99999999x130")],
            "CertificateExpiringSoon",
            "2h",
            [],
        ),
    ]


def test_promtool_unit_tests_cover_every_alert_family(tmp_path):
    plan = SMALL
    _write_rules(tmp_path, plan)
    tests = scenarios(plan)
    covered = {t["alert_rule_test"][0]["alertname"] for t in tests}
    all_alerts = {r["alert"] for g in rule_groups(plan)["groups"] for r in g["rules"] if "alert" in r}
    assert covered == all_alerts, f"alerts without a unit test: {sorted(all_alerts - covered)}"
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False)
    )
    result = run(PROMTOOL, "test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path):
    """A scenario expecting silence where the alert fires must make promtool fail (the harness is not blind)."""
    plan = SMALL
    _write_rules(tmp_path, plan)
    wrong = scenarios(plan)[4]  # PostgresInstanceDown, firing
    wrong["alert_rule_test"][0]["exp_alerts"] = []
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": [wrong]}))
    assert run(PROMTOOL, "test", "rules", str(tmp_path / "tests.yaml")).returncode != 0


# --- Alertmanager -------------------------------------------------------------------------------------------


def _alertmanager_file(tmp_path, plan) -> str:
    fake = {k: f"https://hooks.example.invalid/{k}" for k in alert_secret_keys(plan.config)}
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(alertmanager_config(plan, fake)))
    return str(path)


def test_amtool_accepts_the_generated_configuration(tmp_path, plan):
    result = run(AMTOOL, "check-config", _alertmanager_file(tmp_path, plan))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts_route_by_subsystem_and_severity(tmp_path, plan):
    """Each subsystem's alerts (by namespace) reach the receivers its route names; the shared infrastructure's
    (operators, monitoring) reach the `platform` route's."""
    config = _alertmanager_file(tmp_path, plan)
    routes = plan.config.alerting.routes
    cases = [(sub.namespace, routes[sub.name]) for sub in plan.subsystems.values()]
    operators = plan.config.infrastructure.operators
    cases += [(ns, routes["platform"]) for ns in (operators.cert_manager.namespace, operators.monitoring.namespace)]
    for namespace, route in cases:
        for severity in ("page", "ticket"):
            labels = [f"namespace={namespace}", f"severity={severity}"]
            result = run(AMTOOL, "config", "routes", "test", f"--config.file={config}", *labels)
            assert result.stdout.strip() == getattr(route, severity), (labels, result.stdout + result.stderr)


def test_pages_inhibit_tickets_and_receivers_use_secrets(plan):
    config = alertmanager_config(plan, dict.fromkeys(alert_secret_keys(plan.config), "S3CR3T"))
    assert config["inhibit_rules"][0]["source_matchers"] == ['severity="page"']
    generated = {r["name"]: r for r in config["receivers"]}
    for name, receiver in plan.config.alerting.receivers.items():
        if receiver.pager is not None:
            assert generated[name]["pagerduty_configs"][0]["routing_key"] == "S3CR3T"
        if receiver.email is not None:
            email = generated[name]["email_configs"][0]
            assert email["auth_password"] == "S3CR3T" and email["require_tls"] is True


def test_the_deployed_alertmanager_configuration_stays_secret(stack_run, tmp_path):
    from infra.offline import render

    secret = stack_run.object("Secret", "alertmanager-settlement", "monitoring")
    assert secret["stringData"] == {"alertmanager.yaml": "[secret]"}
    render.write(stack_run, tmp_path)
    assert "routing_key" not in (tmp_path / "resources.json").read_text()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda a: a["routes"].pop("risk"), "alerting.routes.risk: is missing: its alerts would reach nobody"),
        (lambda a: a["routes"]["payment"].update(page="nobody"), "alerting.routes.payment.page: 'nobody' is not"),
        (
            lambda a: a["receivers"]["oncall-pager"]["pager"].update(routingKeySecret="alertOther"),
            "alertOther: is required by alerting.receivers.oncall-pager.pager.routingKeySecret",
        ),
    ],
)
def test_alerting_mistakes_are_refused(project, mutate, expected):
    data = project.load("Pulumi.prod.yaml")
    mutate(data["config"]["settlement-platform:alerting"])
    project.save("Pulumi.prod.yaml", data)
    with pytest.raises(ProgramFailed) as failure:
        project.render("prod")
    assert expected in str(failure.value.cause)


# --- Dashboards ---------------------------------------------------------------------------------------------


def test_one_dashboard_per_subsystem_provisioned_through_the_sidecar(stack_run, stack_plan):
    maps = {
        c["metadata"]["name"]: c for c in stack_run.objects("ConfigMap") if c["metadata"]["namespace"] == "monitoring"
    }
    # One per subsystem, and the mesh's traffic by identity (tests/test_mesh.py).
    mesh = {f"dashboard-{stack_plan.config.mesh.namespace}"} if stack_plan.config.mesh.enabled else set()
    assert {n for n in maps if n.startswith("dashboard-")} == {f"dashboard-{n}" for n in stack_plan.subsystems} | mesh
    for name in stack_plan.subsystems:
        config_map = maps[f"dashboard-{name}"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert f"{name}.json" in config_map["data"]


def test_dashboards_show_traffic_errors_latency_and_data_health():
    boards = dashboards(SMALL)
    payment = boards["shop.json"]
    titles = [p["title"] for p in payment["panels"]]
    assert titles[:3] == ["Requests per second", "Error ratio (5xx)", "Latency p99"]
    assert {"PostgreSQL up", "Replication lag", "Ready messages", "Dead-lettered messages"} <= set(titles)
    audit_titles = {p["title"] for p in boards["audit.json"]["panels"]}
    assert "Replication lag" not in audit_titles, "audit owns no database"
    positions = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in payment["panels"]]
    assert len(positions) == len(set(positions)), "panels must not overlap"
    for panel in payment["panels"]:
        for target in panel["targets"]:
            assert 'namespace="shop"' in target["expr"]
