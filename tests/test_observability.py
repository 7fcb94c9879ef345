"""Observability (issue 6): scrape targets, alert rules checked and unit-tested with promtool, Alertmanager
routing checked with amtool, dashboards as code, and the metric contract."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from infra.alertmanager import alertmanager_config
from infra.alerts import METRICS_SOURCES, QUEUE_SLO_ALERTS, SLO_ALERTS, prometheus_float, rule_groups
from infra.chart_values import ALERTMANAGER_SECRET
from infra.config import alert_secret_keys
from infra.dashboards import dashboards, panels
from infra.metrics import CONTRACT, SERVICE, metric_names
from infra.offline.mocks import ProgramFailed
from infra.topology import PLATFORM_ROUTE, operator_namespaces
from tests.conftest import PLATFORM_STACKS, platform_deployments
from tests.fixture_config import SMALL_TOPOLOGY, plan_of

PROMTOOL = shutil.which("promtool") or "promtool"
AMTOOL = shutil.which("amtool") or "amtool"


def run(*args: str) -> subprocess.CompletedProcess:
    """Run a checker. Never skipped: `make test` installs promtool and amtool (Debian's prometheus and
    prometheus-alertmanager); without them these tests fail and say so."""
    if shutil.which(args[0]) is None:
        pytest.fail(f"{args[0]} is not installed: run `make tools` (or `make test`, which runs it)")
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


@pytest.fixture(params=PLATFORM_STACKS)
def plan(request, plans):
    """Each environment stack's plan, for properties that need no render."""
    return plans[request.param]


def _routed(topology: dict) -> dict:
    """`alerting` with distinct receivers per route and severity, so a routing test can tell the teams apart."""
    routes = {name: {"page": f"{name}-page", "ticket": f"{name}-ticket"} for name in [*topology, PLATFORM_ROUTE]}
    receivers = {r: {"webhook": {"urlSecret": "alertChat"}} for route in routes.values() for r in route.values()}
    return {"receivers": receivers, "routes": routes}


# Alert and dashboard behaviour is shown on a small fixture config (with backups, so every alert family exists).
# The critical API's latency objective is a whole number of seconds: its bucket is `le="1.0"` in Prometheus 3.
SMALL_WHOLE_SECOND = {
    **SMALL_TOPOLOGY,
    "shop": {
        **SMALL_TOPOLOGY["shop"],
        "services": {
            **SMALL_TOPOLOGY["shop"]["services"],
            "api": {**SMALL_TOPOLOGY["shop"]["services"]["api"], "slo": {"latencySeconds": 1}},
        },
    },
}
SMALL = plan_of(
    SMALL_WHOLE_SECOND,
    backup={"objectStore": {"destinationPath": "s3://backups/wal"}},
    alerting=_routed(SMALL_WHOLE_SECOND),
)


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


def _slo_alerts_of(plan, svc) -> set[tuple]:
    return {
        (r["alert"], r["labels"]["severity"], r["labels"].get("queue"))
        for g in rule_groups(plan)["groups"]
        for r in g["rules"]
        if r.get("alert") in SLO_ALERTS + QUEUE_SLO_ALERTS
        and (r["labels"]["namespace"], r["labels"]["service"]) == (svc.subsystem, svc.name)
    }


def test_services_get_the_slos_of_how_they_are_used(plan):
    """HTTP SLOs for a service something calls (another service, or the gateway for an exposed one); queue SLOs
    for each queue it consumes; a queue-only worker no HTTP SLO (its ratios would stay empty, never firing)."""
    called = {(e.subsystem, e.service) for s in plan.services() for e in s.calls}
    for svc in plan.services():
        serves_http = svc.expose is not None or (svc.subsystem, svc.name) in called
        expected = {(a, sev, None) for a in SLO_ALERTS for sev in ("page", "ticket")} if serves_http else set()
        expected |= {(a, sev, q.queue) for q in svc.consumes for a in QUEUE_SLO_ALERTS for sev in ("page", "ticket")}
        assert _slo_alerts_of(plan, svc) == expected, f"{svc.subsystem}/{svc.name}"
    for rule in (r for g in rule_groups(plan)["groups"] for r in g["rules"] if "alert" in r):
        assert rule["labels"]["severity"] in ("page", "ticket")
        assert rule["annotations"]["runbook_url"].startswith("https://")


def test_a_queue_only_worker_gets_queue_slos_in_its_own_namespace():
    engine, api = SMALL.service("audit", "engine"), SMALL.service("shop", "api")
    assert {a for a, _, _ in _slo_alerts_of(SMALL, engine)} == set(QUEUE_SLO_ALERTS)
    assert {a for a, _, _ in _slo_alerts_of(SMALL, api)} == set(SLO_ALERTS)
    # engine consumes shop/orders: the rules read the queue in shop, the alert is about engine, in audit.
    rule = _rule(SMALL, "QueueProcessingBudgetBurn", service="engine", severity="page")
    assert rule["labels"]["namespace"] == rule["labels"]["subsystem"] == "audit"
    recorded = [
        r
        for g in rule_groups(SMALL)["groups"]
        for r in g["rules"]
        if "record" in r and r.get("labels", {}).get("service") == "engine"
    ]
    assert all('namespace="shop", queue="orders' in r["expr"] for r in recorded)


def test_queue_objectives_come_from_config_with_defaults_in_one_place():
    from infra.config import SloDefaults

    defaults = SloDefaults()
    worker = SMALL.service("shop", "worker")
    assert (worker.processing_seconds, worker.processing_target, worker.dead_letter_target) == (
        defaults.processing_seconds,
        defaults.processing_target,
        defaults.dead_letter_target,
    )
    topology = {
        **SMALL_TOPOLOGY,
        "shop": {**SMALL_TOPOLOGY["shop"], "services": {**SMALL_TOPOLOGY["shop"]["services"]}},
    }
    topology["shop"]["services"]["worker"] = {
        **topology["shop"]["services"]["worker"],
        "slo": {"processingSeconds": 5, "processingTarget": 95, "deadLetterTarget": 99.5},
    }
    plan = plan_of(topology)
    rule = _rule(plan, "QueueDeadLetterBudgetBurn", service="worker", severity="page")
    assert "> 0.072 and" in rule["expr"]  # 14.4 x (1 - 99.5%)
    recorded = next(
        r
        for g in rule_groups(plan)["groups"]
        for r in g["rules"]
        if r.get("record") == "queue:processing_over_objective:bool"
    )
    assert recorded["expr"].endswith("> bool 5.0")


@pytest.mark.parametrize(
    ("seconds", "stored"),
    [(1, "1.0"), (0.5, "0.5"), (10, "10.0"), (2.5, "2.5"), (0.005, "0.005"), (1e-05, "1e-05"), (1e6, "1e+06")],
)
def test_bucket_bounds_are_written_as_prometheus_3_stores_them(seconds, stored):
    """prometheus v3 model/labels/float.go FormatOpenMetricsFloat (Go's shortest 'g', ".0" when integral)."""
    assert prometheus_float(seconds) == stored


def test_every_contract_metric_names_its_upstream_source_and_version():
    for name, metric in CONTRACT.items():
        if metric.source == SERVICE:
            assert name.startswith("http_"), name
            continue
        assert re.match(r"^[\w.-]+/[\w.-]+@v\d+\.\d+\.\d+ \S+", metric.source), (name, metric.source)


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
    assert metric_names('count by (namespace) (ts offset 26h) and label_replace(x, "a", "$1", "b", "(.*)")') == {
        "ts",
        "x",
    }


def _render(template: str, labels: dict, value: str) -> str:
    out = template.replace("{{ $value }}", value)
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], out)


def _rule(plan, alert: str, service: str | None = None, severity: str | None = None, **match: str) -> dict:
    return next(
        r
        for g in rule_groups(plan)["groups"]
        for r in g["rules"]
        if r.get("alert") == alert
        and (service is None or r["labels"].get("service") == service)
        and (severity is None or r["labels"]["severity"] == severity)
        and all(r["labels"].get(k) == v for k, v in match.items())
    )


def _owner(plan, namespace: str) -> str:
    return namespace if namespace in plan.subsystems else PLATFORM_ROUTE


def _expected(plan, alert, series_labels, value="", service=None, severity=None, **match):
    rule = _rule(plan, alert, service, severity, **match)
    labels = {**series_labels, **rule["labels"]}
    labels.setdefault("subsystem", _owner(plan, labels["namespace"]))
    return {
        "exp_labels": labels,
        "exp_annotations": {k: _render(v, labels, value) for k, v in rule["annotations"].items()},
    }


PAY = {"namespace": "shop", "service": "api"}  # SMALL's critical API


def _series(name: str, labels: dict, values: str) -> dict:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _case(interval, input_series, alert, eval_time, firing) -> dict:
    return {
        "interval": interval,
        "input_series": input_series,
        "alert_rule_test": [{"eval_time": eval_time, "alertname": alert, "exp_alerts": firing}],
    }


# Target labels as prometheus-operator v0.93.0 sets them (pkg/prometheus/promcfg.go): a PodMonitor's `job` is
# "<namespace>/<name>", a ServiceMonitor's the Service's name (or its jobLabel's value); `pod`, `service`,
# `endpoint`, `instance` beside them.
DB_TARGET = {"namespace": "shop", "job": "shop/shop-db", "endpoint": "metrics"}
MQ_TARGET = {"namespace": "shop", "job": "shop/shop-mq", "endpoint": "prometheus-tls"}
KSM_TARGET = {
    "namespace": "monitoring",
    "job": "kube-state-metrics",
    "service": "kube-prometheus-stack-kube-state-metrics",
}


def _pods(target: dict, prefix: str, count: int) -> list[dict]:
    return [{**target, "pod": f"{prefix}-{i}", "instance": f"10.0.0.{i}:9000"} for i in range(1, count + 1)]


def gap_scenarios(plan) -> list[dict]:
    """No silent gaps: each target kind firing when unscrapable (`up == 0`), short of what was declared, or gone
    (`absent`); silent when every target answers."""
    series, case = _series, _case
    instances, replicas = plan.subsystems["shop"].postgres.instances, plan.subsystems["shop"].queue.replicas
    db_pods, mq_pods = _pods(DB_TARGET, "shop-db", instances), _pods(MQ_TARGET, "shop-mq-server", replicas)
    services = {
        svc.name: {"namespace": ns, "job": svc.name, "service": svc.name, "endpoint": "metrics"}
        for ns, sub in plan.subsystems.items()
        for svc in sub.services.values()
    }
    queues = [(q, f"{q}-dlq") for q in plan.subsystems["shop"].queue.queues]
    queue_series = {
        q: {"namespace": "shop", "queue": q, "vhost": "shop", **mq_pods[0]} for pair in queues for q in pair
    }
    # Every install that runs a controller Deployment (the operators, and istiod when the mesh is on).
    operators = sorted(operator_namespaces(plan.config, with_controller=True))
    assert {"cnpg-system", "keda"} <= set(operators)
    deployments = {ns: {**KSM_TARGET, "namespace": ns, "deployment": f"{ns}-controller"} for ns in operators}
    sources = {
        job: {"namespace": getattr(plan.config.infrastructure.operators, op).namespace, "job": job}
        for job, op in METRICS_SOURCES.items()
    }
    up = "up"
    down_api = {**services["api"], "pod": "api-1", "instance": "10.0.1.1:9090"}
    return [
        # api's target fails, engine's are gone (absent), worker answers.
        case(
            "1m",
            [series(up, down_api, "0x10"), series(up, services["worker"], "1x10")],
            "ServiceTargetMissing",
            "8m",
            [
                _expected(plan, "ServiceTargetMissing", down_api, service="api"),
                _expected(plan, "ServiceTargetMissing", {"namespace": "audit", "job": "engine"}, service="engine"),
            ],
        ),
        case("1m", [series(up, t, "1x10") for t in services.values()], "ServiceTargetMissing", "8m", []),
        # For each data cluster: one member's exporter fails; one member is gone (deleted, never rescheduled); all
        # are; all answer.
        *(
            c
            for alert, pods, target in (
                ("PostgresTargetMissing", db_pods, DB_TARGET),
                ("QueueClusterTargetMissing", mq_pods, MQ_TARGET),
            )
            for c in (
                case(
                    "1m",
                    [series(up, p, "0x10" if p is pods[-1] else "1x10") for p in pods],
                    alert,
                    "8m",
                    [_expected(plan, alert, pods[-1])],
                ),
                case(
                    "1m",
                    [series(up, p, "1x10") for p in pods[:-1]],
                    alert,
                    "8m",
                    [_expected(plan, alert, {"namespace": "shop"})],
                ),
                case(
                    "1m",
                    [series(up, {**target, "namespace": "audit", "job": "audit/x"}, "1x10")],
                    alert,
                    "8m",
                    [_expected(plan, alert, {"namespace": "shop", "job": target["job"]})],
                ),
                case("1m", [series(up, p, "1x10") for p in pods], alert, "8m", []),
            )
        ),
        # A declared queue (here the last dead-letter queue) no longer reported: deleted.
        case(
            "1m",
            [series("rabbitmq_queue_messages_ready", labels, "0x15") for labels in list(queue_series.values())[:-1]],
            "QueueMissing",
            "12m",
            [_expected(plan, "QueueMissing", {"namespace": "shop"}, queue=list(queue_series)[-1])],
        ),
        case(
            "1m",
            [series("rabbitmq_queue_messages_ready", labels, "0x15") for labels in queue_series.values()],
            "QueueMissing",
            "12m",
            [],
        ),
        case(
            "1m",
            [series(up, {**sources["kube-state-metrics"], "pod": "ksm-1"}, "1x10")],
            "MetricsSourceMissing",
            "8m",
            [_expected(plan, "MetricsSourceMissing", sources["cert-manager"], job="cert-manager")],
        ),
        case(
            "1m",
            [series(up, {**labels, "pod": "x-1"}, "1x10") for labels in sources.values()],
            "MetricsSourceMissing",
            "8m",
            [],
        ),
        # The CloudNativePG operator has no available replica; KEDA's namespace reports no Deployment at all.
        case(
            "1m",
            [
                series(
                    "kube_deployment_status_replicas_available",
                    labels,
                    "0x15" if ns == "cnpg-system" else "1x15",
                )
                for ns, labels in deployments.items()
                if ns != "keda"
            ],
            "OperatorUnavailable",
            "12m",
            [
                _expected(plan, "OperatorUnavailable", deployments["cnpg-system"]),
                _expected(plan, "OperatorUnavailable", {"namespace": "keda"}),
            ],
        ),
        case(
            "1m",
            [series("kube_deployment_status_replicas_available", labels, "1x15") for labels in deployments.values()],
            "OperatorUnavailable",
            "12m",
            [],
        ),
    ]


def queue_slo_scenarios(plan) -> list[dict]:
    """Queue SLOs of `audit/engine`, which consumes `shop/orders`: series as RabbitMQ reports them (per node, with
    the queue and vhost labels), alerts in the consumer's namespace."""
    series, case = _series, _case
    node = {**MQ_TARGET, "pod": "shop-mq-server-0", "instance": "10.0.2.1:15691"}
    orders = {**node, "queue": "orders", "vhost": "shop"}
    dlq = {**orders, "queue": "orders-dlq"}
    engine = {"namespace": "audit", "subsystem": "audit", "service": "engine", "queue": "orders"}
    ready, acked, messages = (
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_acked_total",
        "rabbitmq_queue_messages",
    )

    def both(alert):
        return [_expected(plan, alert, engine, service="engine", severity=s) for s in ("page", "ticket")]

    return [
        # 5000 ready at 10 acknowledgements a second: 500s to drain, over the 60s objective all the time.
        case(
            "1m",
            [series(ready, orders, "5000x90"), series(acked, orders, "0+600x90")],
            "QueueProcessingBudgetBurn",
            "80m",
            both("QueueProcessingBudgetBurn"),
        ),
        # A backlog nobody acknowledges is infinitely late.
        case(
            "1m",
            [series(ready, orders, "50x90")],
            "QueueProcessingBudgetBurn",
            "80m",
            both("QueueProcessingBudgetBurn"),
        ),
        # 10 ready at 10 a second: 1s. (Empty for the first two minutes: until a counter has two samples it has
        # no rate, and a waiting backlog counts as late - seconds in 30 days, but not in an 80-minute test.)
        case(
            "1m",
            [series(ready, orders, "0 0 10x88"), series(acked, orders, "0+600x90")],
            "QueueProcessingBudgetBurn",
            "80m",
            [],
        ),
        # 10 of every 110 messages dead-lettered (the dead-letter queue grows by 10 a minute).
        case(
            "1m",
            [series(acked, orders, "0+100x90"), series(messages, dlq, "0+10x90")],
            "QueueDeadLetterBudgetBurn",
            "80m",
            both("QueueDeadLetterBudgetBurn"),
        ),
        # Old dead letters that stay put are not a burn.
        case(
            "1m",
            [series(acked, orders, "0+100x90"), series(messages, dlq, "3x90")],
            "QueueDeadLetterBudgetBurn",
            "80m",
            [],
        ),
    ]


def scenarios(plan) -> list[dict]:
    """promtool unit tests: each alert family firing on synthetic series, and silent on healthy ones."""
    db = {**DB_TARGET, "pod": "shop-db-1", "instance": "10.0.0.1:9187"}
    q = {**MQ_TARGET, "pod": "shop-mq-server-0", "queue": "orders", "vhost": "shop"}
    dlq = {**q, "queue": "orders-dlq"}
    hpa = {**KSM_TARGET, "namespace": "shop", "horizontalpodautoscaler": "api"}
    # The Certificate's namespace, kept by honorLabels on cert-manager's ServiceMonitor.
    cert = {"namespace": "shop", "job": "cert-manager", "name": "shop-mq-tls", "issuer_kind": "ClusterIssuer"}
    restarts = {**KSM_TARGET, "namespace": "shop", "pod": "api-1", "container": "app"}
    series, case = _series, _case

    req = "http_requests_total"
    bucket, count = "http_request_duration_seconds_bucket", "http_request_duration_seconds_count"
    threshold = prometheus_float(plan.service("shop", "api").latency_seconds)
    le = {**PAY, "le": threshold}
    backup = "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp"
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
        # Latency against a whole-number threshold, whose bucket Prometheus 3 stores as le="1.0": half the
        # requests slower than it.
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
            [series("cnpg_pg_replication_lag", db, "45x20"), series("cnpg_collector_replica_mode", db, "0x20")],
            "PostgresReplicationLagging",
            "10m",
            [_expected(plan, "PostgresReplicationLagging", {"namespace": "shop", "pod": "shop-db-1"}, value="45")],
        ),
        # A replica cluster's instance (a DR standby site): its lag is the other site's distance, watched against
        # the RPO by StandbyReplicationBehindRpo, not paged at this threshold.
        case(
            "1m",
            [series("cnpg_pg_replication_lag", db, "45x20"), series("cnpg_collector_replica_mode", db, "1x20")],
            "PostgresReplicationLagging",
            "10m",
            [],
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
                series(backup, db, "1000x20"),
            ],
            "PostgresBackupFailed",
            "10m",
            [_expected(plan, "PostgresBackupFailed", db)],
        ),
        case(
            "1m",
            [
                series("barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp", db, "1000x20"),
                series(backup, db, "2000x20"),
            ],
            "PostgresBackupFailed",
            "10m",
            [],
        ),
        # Samples every 5 minutes: sparser series go stale between samples, which resets `for`.
        # The newest backup is from the epoch's start: far too old.
        case(
            "5m",
            [series(backup, db, "1x340")],
            "PostgresBackupTooOld",
            "28h",
            [_expected(plan, "PostgresBackupTooOld", {"namespace": "shop"})],
        ),
        # No first backup (the plugin reports 0) for longer than the allowed age: overdue.
        case(
            "5m",
            [series(backup, db, "0x340")],
            "PostgresBackupTooOld",
            "28h",
            [_expected(plan, "PostgresBackupTooOld", {"namespace": "shop"})],
        ),
        # A new cluster: no backup yet, and none expected yet.
        case("5m", [series(backup, db, "0x150")], "PostgresBackupTooOld", "12h", []),
        case("5m", [series(backup, db, "0+300x340")], "PostgresBackupTooOld", "28h", []),
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
        *queue_slo_scenarios(plan),
        *gap_scenarios(plan),
    ]


def _rules_for(groups: list[dict], alert: str) -> list[dict]:
    """`groups` cut to the rules of `alert` and the recording rules it reads, directly or through other recording
    rules (a recorded name in a kept rule's expression), in any group; each kept rule in its group and order."""
    rules = [r for g in groups for r in g["rules"]]
    recorded = {r["record"]: r for r in rules if "record" in r}
    kept = {id(r) for r in rules if r.get("alert") == alert}
    pending = [r for r in rules if id(r) in kept]
    while pending:
        expr = pending.pop()["expr"]
        for name, rule in recorded.items():
            if id(rule) not in kept and re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr):
                kept.add(id(rule))
                pending.append(rule)
    cut = [{"name": g["name"], "rules": [r for r in g["rules"] if id(r) in kept]} for g in groups]
    return [g for g in cut if g["rules"]]


def write_unit_tests(tmp_path, plan, tests: list[dict]) -> list[str]:
    """promtool test files for `tests`, for one `promtool test rules` call. A scenario loads only the rules of the
    alert it tests and, for an SLO alert, the recording rules it reads (directly or through other recordings), each
    in its own group and order: promtool does not evaluate every other rule at every step of a scenario (a day-long
    backup, 80 minutes of burn rates). That changes nothing: a group evaluates its rules one after another, and a rule
    sees another's result only through what that one writes to storage (Prometheus v2.42.0, promtool's version here:
    rules/manager.go `Group.Eval` appends each rule's output; rules/alerting.go writes an alert as `ALERTS` and
    `ALERTS_FOR_STATE` series) - and no rule reads `ALERTS` (asserted below). A recording rule the selection missed
    would leave its alert silent, which the firing scenarios catch. Each file is evaluated as often as its series
    are sampled."""
    groups = rule_groups(plan)["groups"]
    for group in groups:
        assert all("ALERTS" not in rule["expr"] for rule in group["rules"]), "a rule reads ALERTS: see above"
    files: dict[tuple[str, str], list[dict]] = {}
    for t in tests:
        # The file is chosen by the test's alert: a second alertname in one test would be checked without its rules.
        (alert,) = {check["alertname"] for check in t["alert_rule_test"]}
        files.setdefault((alert, t["interval"]), []).append(t)
    paths = []
    for (alert, interval), chosen in sorted(files.items()):
        selected = _rules_for(groups, alert)
        assert any(r.get("alert") == alert for g in selected for r in g["rules"]), f"no rule for alert {alert}"
        (tmp_path / f"{alert}-rules.yaml").write_text(yaml.safe_dump({"groups": selected}, sort_keys=False))
        path = tmp_path / f"{alert}-{interval}-tests.yaml"
        path.write_text(
            yaml.safe_dump(
                {"rule_files": [f"{alert}-rules.yaml"], "evaluation_interval": interval, "tests": chosen},
                sort_keys=False,
            )
        )
        paths.append(str(path))
    return paths


def test_promtool_unit_tests_cover_every_alert_family(tmp_path):
    plan = SMALL
    tests = scenarios(plan)
    covered = {t["alert_rule_test"][0]["alertname"] for t in tests}
    all_alerts = {r["alert"] for g in rule_groups(plan)["groups"] for r in g["rules"] if "alert" in r}
    assert covered == all_alerts, f"alerts without a unit test: {sorted(all_alerts - covered)}"
    firing = {t["alert_rule_test"][0]["alertname"] for t in tests if t["alert_rule_test"][0]["exp_alerts"]}
    silent = {t["alert_rule_test"][0]["alertname"] for t in tests if not t["alert_rule_test"][0]["exp_alerts"]}
    assert firing == silent == all_alerts, "each family needs a firing and a healthy scenario"
    result = run(PROMTOOL, "test", "rules", *write_unit_tests(tmp_path, plan, tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(tmp_path):
    """A scenario expecting silence where the alert fires must make promtool fail (the harness is not blind)."""
    plan = SMALL
    wrong = next(
        t
        for t in scenarios(plan)
        if t["alert_rule_test"][0]["alertname"] == "PostgresInstanceDown" and t["alert_rule_test"][0]["exp_alerts"]
    )
    wrong["alert_rule_test"][0]["exp_alerts"] = []
    assert run(PROMTOOL, "test", "rules", *write_unit_tests(tmp_path, plan, [wrong])).returncode != 0


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


def test_every_alert_family_reaches_the_team_that_owns_what_it_is_about(tmp_path):
    """Each alert as promtool shows it firing (labels from realistic series plus the rule's) goes, by amtool,
    to the route of the subsystem that owns its namespace - a certificate's to the team of its namespace, a
    queue SLO to the consumer's team - or to the platform route for shared infrastructure."""
    plan = SMALL
    config = _alertmanager_file(tmp_path, plan)
    routes = plan.config.alerting.routes
    checked = set()
    for test in scenarios(plan):
        for alert in test["alert_rule_test"][0]["exp_alerts"]:
            labels = alert["exp_labels"]
            owner = _owner(plan, labels["namespace"])
            assert labels["subsystem"] == owner, labels
            args = [f"{k}={v}" for k, v in {"alertname": test["alert_rule_test"][0]["alertname"], **labels}.items()]
            result = run(AMTOOL, "config", "routes", "test", f"--config.file={config}", *args)
            assert result.stdout.strip() == getattr(routes[owner], labels["severity"]), (args, result.stdout)
            checked.add((test["alert_rule_test"][0]["alertname"], owner))
    all_alerts = {r["alert"] for g in rule_groups(plan)["groups"] for r in g["rules"] if "alert" in r}
    assert {a for a, _ in checked} == all_alerts
    assert {o for _, o in checked} == {*plan.subsystems, PLATFORM_ROUTE}


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


def test_the_deployed_alertmanager_configuration_stays_secret(stack_run):
    from infra.offline import render

    secret = stack_run.object("Secret", "alertmanager-settlement", "monitoring")
    assert secret["stringData"] == {"alertmanager.yaml": "[secret]"}
    # Everything the render writes (resources.json and the manifests), serialised.
    written = json.dumps(render.resources(stack_run)) + json.dumps(render.manifests(stack_run))
    assert "routing_key" not in written and "[secret]" in written


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


def _monitor_jobs(objects: list[dict]) -> dict[tuple[str, str], dict]:
    """(namespace, job) of every target the rendered monitors give Prometheus -> the monitor: prometheus-operator
    (v0.93.0 promcfg.go) names a PodMonitor's "<namespace>/<name>", a ServiceMonitor's after the Service or, with
    `jobLabel`, that label's value on it."""
    jobs = {}
    for monitor in (o for o in objects if o["kind"] == "PodMonitor"):
        ns = monitor["metadata"]["namespace"]
        jobs[(ns, f"{ns}/{monitor['metadata']['name']}")] = monitor
    services = [o for o in objects if o["kind"] == "Service"]
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        spec = monitor["spec"]
        selector = spec["selector"].get("matchLabels", {})
        namespaces = spec.get("namespaceSelector", {}).get("matchNames", [monitor["metadata"]["namespace"]])
        for service in services:
            labels, ns = service["metadata"].get("labels", {}), service["metadata"].get("namespace")
            if ns in namespaces and selector.items() <= labels.items():
                jobs[(ns, labels.get(spec.get("jobLabel", ""), service["metadata"]["name"]))] = monitor
    return jobs


def test_monitors_keep_the_labels_the_alerts_route_on(stack_run, stack_plan):
    """The ServiceMonitors of exporters that report other namespaces' objects honour the exporter's labels: a
    Certificate's (cert-manager's chart, honorLabels set by the platform) or a Deployment's and pod's
    (kube-state-metrics) `namespace` stays its own, not `exported_namespace`, so the alert reaches its team."""
    jobs = _monitor_jobs(stack_run.all_objects())
    operators = stack_plan.config.infrastructure.operators
    for job, operator in METRICS_SOURCES.items():
        monitor = jobs[(getattr(operators, operator).namespace, job)]
        assert all(e.get("honorLabels") is True for e in monitor["spec"]["endpoints"]), job


def test_the_targets_the_gap_alerts_watch_exist_under_those_job_names(stack_run, stack_plan):
    """The `job` of each `up` the gap alerts read is one the rendered monitors give their targets."""
    watched = {
        (m["namespace"], m["job"])
        for g in rule_groups(stack_plan)["groups"]
        for r in g["rules"]
        if r.get("alert", "").endswith("TargetMissing") or r.get("alert") == "MetricsSourceMissing"
        for m in [dict(re.findall(r'(namespace|job)="([^"]+)"', r["expr"]))]
    }
    jobs = set(_monitor_jobs(stack_run.all_objects()))
    assert watched and watched <= jobs, sorted(watched - jobs)


def test_dashboards_show_queue_slos_for_the_subsystems_that_consume():
    boards = dashboards(SMALL)
    for name, sub in SMALL.subsystems.items():
        titles = {p["title"] for p in boards[f"{name}.json"]["panels"]}
        consumes = any(s.consumes for s in sub.services.values())
        assert ("Queue SLO: time over processing objective (1h)" in titles) == consumes, name
        assert ("Queue SLO: dead-lettered ratio (1h)" in titles) == consumes, name


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
