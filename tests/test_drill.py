"""The restore drill (issue 14, item 4): a drill stack restores every database of the topology from the source's
backups into a scratch namespace, verifies each with a Job, can never write into those backups, and is judged
(restore time against the RTO, freshness against drill.maxAgeDays) by `python -m infra drill`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from components.restore_verifier import RESULT_PREFIX, verify_sql
from infra import drill
from infra.errors import ConfigError
from infra.network import EXTERNAL, POSTGRES_PORT, POSTGRES_STATUS_PORT
from infra.offline import schemas
from infra.offline.audit import audit, rendered_policies
from infra.program import PROVIDER_NAME
from infra.stack_config import plan_for_stack
from tests.cli import run_cli
from tests.conftest import PLATFORM_STACKS, STACKS_DIR
from tests.fixture_config import SMALL_TOPOLOGY, plan_of

# --- The drill stacks (whole-stack: any drill stack over any topology) ----------------------------------------


def drill_plan(run):
    return plan_for_stack(run.stack, STACKS_DIR)


def in_drill(run, kind: str) -> list[dict]:
    namespace = drill_plan(run).config.drill.namespace
    return [o for o in run.objects(kind) if o["metadata"].get("namespace") == namespace]


def registration(run, kind: str, name: str):
    """The registration of the Kubernetes object `kind` named `name` (its metadata.name)."""
    [reg] = [
        r
        for r in run.registrations
        if r.is_kubernetes_object and r.inputs["kind"] == kind and r.inputs["metadata"]["name"] == name
    ]
    return reg


def test_every_database_is_restored_from_its_source_server_name_in_the_scratch_namespace(drill_run):
    plan = drill_plan(drill_run)
    source = plan.config.drill.source
    stores = {o["metadata"]["name"]: o["spec"] for o in in_drill(drill_run, "ObjectStore")}
    clusters = {o["metadata"]["name"]: o["spec"] for o in in_drill(drill_run, "Cluster")}
    assert len(clusters) == len(drill.databases(plan)) > 0
    # What the source stack archives under (with `dr`: per site and generation), read from its own plan.
    archived = drill.databases(plan_for_stack(plan.config.drill.source_stack, STACKS_DIR))
    assert {s: pg.server_name for s, pg in drill.databases(plan).items()} == {
        s: archived[s].server_name for s in drill.databases(plan)
    }
    assert len(drill_run.objects("Cluster")) == len(clusters), "a drill creates Clusters only in its namespace"
    for pg in drill.databases(plan).values():
        [spec] = [
            s
            for s in clusters.values()
            if s["externalClusters"][0]["plugin"]["parameters"]["serverName"] == pg.server_name
        ]
        origin = spec["externalClusters"][0]
        assert spec["bootstrap"] == {
            "recovery": {"source": origin["name"], "database": pg.database, "owner": pg.database}
        }
        # No recovery target: CloudNativePG restores the latest base backup and replays every archived WAL.
        assert "recoveryTarget" not in spec["bootstrap"]["recovery"]
        store = stores[origin["plugin"]["parameters"]["barmanObjectName"]]
        assert store["configuration"]["destinationPath"] == source.destination_path
        annotations = spec["serviceAccountTemplate"]["metadata"]["annotations"]
        assert annotations == source.service_account_annotations


def test_a_verifying_job_per_database_waits_for_its_restored_cluster(drill_run):
    plan = drill_plan(drill_run)
    jobs = {j["metadata"]["name"]: j for j in in_drill(drill_run, "Job")}
    assert len(jobs) == len(drill.databases(plan))
    for job in jobs.values():
        env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        cluster = env["PGHOST"].removesuffix("-rw")
        assert drill_run.object("Cluster", cluster, plan.config.drill.namespace)
        assert env["PGSSLMODE"] == "verify-full" and env["RESTORE_STARTED"]
        server = drill_run.object("Cluster", cluster, plan.config.drill.namespace)["spec"]["externalClusters"][0]
        assert env["SERVER_NAME"] == server["plugin"]["parameters"]["serverName"]
        # The Job is created after the Cluster is Ready (the engine waits for its `Ready` condition first).
        job_reg = registration(drill_run, "Job", job["metadata"]["name"])
        cluster_reg = registration(drill_run, "Cluster", cluster)
        assert cluster_reg.urn in job_reg.dependencies, job_reg.name
        # The engine waits for the Job's own verdict (its deadline), not less.
        deadline = job["spec"]["activeDeadlineSeconds"]
        assert int(job_reg.custom_timeouts["create"].removesuffix("m")) * 60 > deadline
        assert cluster_reg.inputs["metadata"]["annotations"]["pulumi.com/waitFor"] == "condition=Ready"


def test_the_drill_cannot_write_into_the_backups_it_reads(drill_run):
    """Nothing archives or backs up (no `spec.plugins`, no Backup or ScheduledBackup), no store has a retention
    policy (retention deletes backups), and the identities' scope keeps writes out of the source's path."""
    plan = drill_plan(drill_run)
    assert all("plugins" not in c["spec"] for c in drill_run.objects("Cluster"))
    assert not drill_run.objects("Backup") and not drill_run.objects("ScheduledBackup")
    for store in drill_run.objects("ObjectStore"):
        assert "retentionPolicy" not in store["spec"]
        assert store["spec"]["configuration"]["s3Credentials"] == {"inheritFromIAMRole": True}
    scope = drill.identity_scope(plan)
    source_bucket, _, source_prefix = plan.config.drill.source.destination_path.removeprefix("s3://").partition("/")
    source_objects = f"arn:aws:s3:::{source_bucket}/{source_prefix}"
    for statement in scope["iam"]["database"]:
        assert set(statement["Action"]) <= {"s3:GetObject", "s3:ListBucket"}
    for statement in scope["iam"]["workflow"]:
        if "s3:PutObject" in statement["Action"]:
            assert not statement["Resource"].startswith(source_objects)
            assert not source_objects.startswith(statement["Resource"].removesuffix("*"))


def test_the_verifier_has_no_access_to_the_kubernetes_api(drill_run):
    kinds = {o["kind"] for o in drill_run.all_objects()}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    accounts = {a["metadata"]["name"]: a for a in in_drill(drill_run, "ServiceAccount")}
    for job in in_drill(drill_run, "Job"):
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert accounts[pod["serviceAccountName"]]["automountServiceAccountToken"] is False


def test_every_kubernetes_resource_uses_the_stacks_one_provider(drill_run):
    providers = [r for r in drill_run.registrations if r.type == "pulumi:providers:kubernetes"]
    assert [p.name for p in providers] == [PROVIDER_NAME]
    reference = f"{providers[0].urn}::{PROVIDER_NAME}-id"
    objects = [r for r in drill_run.registrations if r.type.startswith("kubernetes:") and r.custom]
    assert objects and all(r.provider == reference for r in objects)


def test_drill_custom_resources_pass_the_crds_of_the_environment_that_runs_their_operators(drill_run, rendered, plans):
    """A drill installs no operator: its custom resources must fit the CRDs an environment with the same
    operators installs (what deploys is what validates; no fallback to ../shared/crds)."""
    operators = plans[drill_run.stack].config.infrastructure.operators
    hosts = [s for s in PLATFORM_STACKS if plans[s].config.infrastructure.operators == operators]
    assert hosts, "no environment stack runs the operators the drill relies on"
    crds = schemas.environment_crd_schemas(rendered[hosts[0]].all_objects(), fallback=None)
    custom = [o for o in drill_run.all_objects() if not schemas.is_builtin(o)]
    assert {o["kind"] for o in custom} == {"Cluster", "ObjectStore"}
    assert {f"{o['kind']} {o['metadata']['name']}": e for o in custom if (e := crds.validate(o))} == {}


def test_drill_reachability_is_exactly_the_declared_drill_paths(drill_run, audits):
    plan = drill_plan(drill_run)
    result = audits[drill_run.stack]
    assert not result.missing and not result.extra and not result.empty
    namespace = plan.config.drill.namespace
    into_databases = {
        (c[0], c[2]) for c in result.reachable if c[1].startswith(f"{namespace}/") and c[1].endswith("-db")
    }
    verifiers = {(f"{namespace}/{drill.verifier_name(s)}", POSTGRES_PORT) for s in drill.databases(plan)}
    operator = {(drill.pod_groups(plan).infra["cnpg"].id, POSTGRES_STATUS_PORT)}
    assert into_databases == verifiers | operator
    outside = {c[1] for c in result.reachable if c[0].startswith(f"{namespace}/") and c[1].startswith(EXTERNAL)}
    network = plan.config.network
    assert outside == {f"{EXTERNAL}{c}" for c in [*network.object_store_cidrs, *network.api_server_cidrs]}


def test_a_widened_drill_policy_is_caught(drill_run):
    plan = drill_plan(drill_run)
    namespace = plan.config.drill.namespace
    widened = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-everything-in", "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": {}}]}]},
    }
    extra = audit(drill_run, plan, [*rendered_policies(drill_run), widened]).extra
    assert extra and all(c[1].startswith(f"{namespace}/") for c in extra)


# --- Behaviour on fixture configs ------------------------------------------------------------------------------

SOURCE = {
    "destinationPath": "s3://prod-backups/wal",
    "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/read-only"},
}
DRILL = {"sourceStack": "prod", "source": SOURCE, "resultsPath": "s3://prod-backups/drill-results"}
GUARDRAILS = {"requireBackups": False, "protectStatefulResources": False}


def drill_plan_of(drill_config: dict | None = None, **config):
    config.setdefault("guardrails", GUARDRAILS)
    return plan_of(SMALL_TOPOLOGY, drill=drill_config or DRILL, **config)


def problems(**config) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        drill_plan_of(**config)
    return {p.path: p.message for p in refused.value.problems}


def test_a_valid_drill_config_restores_every_database_of_the_topology():
    plan = drill_plan_of()
    assert list(drill.databases(plan)) == sorted(n for n, s in SMALL_TOPOLOGY.items() if "postgres" in s)
    assert plan.config.drill.rto_minutes == 60 and plan.config.drill.max_age_days == 8


@pytest.mark.parametrize(
    ("config", "path", "words"),
    [
        ({"backup": {"objectStore": {"destinationPath": "s3://prod-backups/wal"}}}, "backup", "never archive"),
        ({"guardrails": {"requireBackups": False}}, "guardrails.protectStatefulResources", "must be false"),
        ({"drill_config": {**DRILL, "resultsPath": "s3://prod-backups/wal/results"}}, "drill", "overlaps"),
        ({"drill_config": {**DRILL, "resultsPath": "s3://prod-backups"}}, "drill", "overlaps"),
        ({"drill_config": {**DRILL, "source": {**SOURCE, "credentials": "secret"}}}, "drill", "read-only role"),
        (
            {"drill_config": {**DRILL, "pointQueries": {"audit": "SELECT now()"}}},
            "drill.pointQueries.audit",
            "not a subsystem",
        ),
        ({"drill_config": {**DRILL, "namespace": "shop"}}, "drill.namespace", "the environment itself uses"),
        ({"drill_config": {**DRILL, "rtoMinutes": 0}}, "drill.rtoMinutes", "greater than or equal to 1"),
        ({"drill_config": {**DRILL, "maxAgeDays": 90}}, "drill.maxAgeDays", "less than or equal to 31"),
        ({"drill_config": {k: v for k, v in DRILL.items() if k != "resultsPath"}}, "drill.resultsPath", "required"),
    ],
)
def test_bad_drill_config_is_refused_naming_the_field_and_the_rule(config, path, words):
    found = problems(**config)
    assert path in found, found
    assert words in found[path].lower() or words in found[path], found[path]


def test_a_topology_without_databases_has_nothing_to_drill():
    topology = {"audit": {"services": {"engine": {"image": SMALL_TOPOLOGY["audit"]["services"]["engine"]["image"]}}}}
    with pytest.raises(ConfigError) as refused:
        plan_of(topology, drill=DRILL, guardrails=GUARDRAILS)
    assert "no PostgreSQL cluster" in str(refused.value)


def test_only_a_drill_stack_may_leave_out_alerting():
    from infra.stack_config import parse_platform_config

    values = {
        "subsystems": SMALL_TOPOLOGY,
        "network": {"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"]},
    }
    with pytest.raises(ConfigError) as refused:
        parse_platform_config(
            {**values, "guardrails": {"requireBackups": False}, "gateway": {"hostname": "a.example.com"}}, frozenset()
        )
    assert "alerting: is required" in str(refused.value)
    assert (
        parse_platform_config({**values, "guardrails": GUARDRAILS, "drill": DRILL}, frozenset()).config.alerting is None
    )


def result(server: str, seconds: float) -> dict:
    return {"server": server, "restoreSeconds": seconds, "recoveredPoint": None, "userTables": 3}


def test_a_drill_passes_when_every_database_is_verified_within_the_rto():
    plan = drill_plan_of({**DRILL, "rtoMinutes": 30})
    servers = [pg.server_name for pg in drill.databases(plan).values()]
    assert drill.judge(plan, [result(s, 30 * 60) for s in servers]) == []
    slow = drill.judge(plan, [result(servers[0], 30 * 60 + 1)])
    assert f"{servers[0]}: restore took 30.0 min, over the RTO of 30 min (drill.rtoMinutes)" in slow
    assert drill.judge(plan, []) == [f"{s}: no verification result" for s in sorted(servers)]


def test_a_database_is_judged_against_its_subsystems_rto_in_the_source_stack(drill_project):
    """With `dr.objectives` in the source stack (the sample's prod has them), each database's restore is judged
    against its own subsystem's RTO, not drill.rtoMinutes."""
    plan = plan_for_stack("qa-drill", drill_project.root)
    source = plan_for_stack(plan.config.drill.source_stack, drill_project.root)
    objectives = source.config.dr.objectives if source.config.dr is not None else {}
    for sub, pg in drill.databases(plan).items():
        assert pg.rto_minutes == (objectives[sub].rto_minutes if sub in objectives else None)
    sub, pg = next((s, p) for s, p in drill.databases(plan).items() if p.rto_minutes is not None)
    within = [result(p.server_name, 1) for p in drill.databases(plan).values()]
    assert drill.judge(plan, within) == []
    slow = [result(pg.server_name, pg.rto_minutes * 60 + 1)]
    source_stack = plan.config.drill.source_stack
    expected = f"over the RTO of {pg.rto_minutes} min (dr.objectives.{sub}.rtoMinutes of {source_stack})"
    assert any(expected in problem for problem in drill.judge(plan, slow))


def test_results_are_read_from_the_verifiers_logs():
    line = {"server": "shop-db", "restoreSeconds": 12, "recoveredPoint": "2026-01-01T00:00:00+00:00"}
    logs = f"psql: notice\n{RESULT_PREFIX}{json.dumps(line)}\nother\n"
    assert drill.parse_results(logs) == [line]


def test_the_last_success_must_be_younger_than_max_age():
    plan = drill_plan_of({**DRILL, "maxAgeDays": 8})
    now = datetime(2026, 3, 10, tzinfo=UTC)
    recent = {"finished": (now - timedelta(days=7, hours=23)).isoformat()}
    old = {"finished": (now - timedelta(days=8, minutes=1)).isoformat()}
    assert drill.staleness(plan, recent, now) is None
    assert "more than 8 days ago" in drill.staleness(plan, old, now)
    assert drill.staleness(plan, None, now) == "no successful drill is recorded"


def test_the_point_query_states_the_recovered_point():
    sql = verify_sql("SELECT max(created_at) FROM ledger;")
    assert "'recoveredPoint', (SELECT max(created_at) FROM ledger)" in sql
    assert "'recoveredPoint', pg_catalog.pg_last_xact_replay_timestamp()" in verify_sql(None)
    assert "RAISE EXCEPTION" in sql and "pg_is_in_recovery()" in sql


@pytest.fixture
def drill_project(project):
    """The sample project with a drill stack of its own (whatever drill stacks the repository has), drilling the
    sample's prod: the source path is prod's own (checked against Pulumi.prod.yaml)."""
    prod_backup = project.load("Pulumi.prod.yaml")["config"]["settlement-platform:backup"]["objectStore"]
    source = {**SOURCE, "destinationPath": prod_backup["destinationPath"]}
    project.save(
        "Pulumi.qa-drill.yaml",
        {
            "config": {
                "settlement-platform:network": {"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"]},
                "settlement-platform:guardrails": {**GUARDRAILS, "requireImageDigest": False},
                "settlement-platform:drill": {**DRILL, "source": source},
            }
        },
    )
    return project


def test_the_cli_judges_a_run_and_checks_freshness(drill_project, tmp_path):
    plan = plan_for_stack("qa-drill", drill_project.root)
    servers = [pg.server_name for pg in drill.databases(plan).values()]
    logs = tmp_path / "logs.txt"
    logs.write_text("".join(f"{RESULT_PREFIX}{json.dumps(result(s, 60))}\n" for s in servers))
    out = tmp_path / "record.json"
    common = ["--project-dir", str(drill_project.root), "--now", "2026-03-10T00:00:00+00:00"]
    judged = run_cli("drill", "qa-drill", "judge", "--logs", str(logs), "--out", str(out), *common)
    assert judged.returncode == 0, judged.stderr
    record = json.loads(out.read_text())
    assert record["passed"] and record["finished"] == "2026-03-10T00:00:00+00:00"
    fresh = run_cli("drill", "qa-drill", "fresh", "--last", str(out), *common[:2], "--now", "2026-03-17T00:00:00+00:00")
    assert fresh.returncode == 0, fresh.stderr
    stale = run_cli("drill", "qa-drill", "fresh", "--last", str(out), *common[:2], "--now", "2026-03-19T00:00:00+00:00")
    assert stale.returncode == 1 and "restore drill overdue" in stale.stderr
    missing = run_cli("drill", "qa-drill", "fresh", "--last", str(tmp_path / "none.json"), *common)
    assert missing.returncode == 1 and "no successful drill" in missing.stderr
    logs.write_text("")
    failed = run_cli("drill", "qa-drill", "judge", "--logs", str(logs), "--out", str(out), *common)
    assert failed.returncode == 1 and "no verification result" in failed.stderr
    assert run_cli("drill", "prod", "scope").returncode == 2


def test_the_workflow_identity_may_write_exactly_what_the_drill_creates(drill_run):
    """The Role bound to the drill's workflow identity covers every object the drill stack writes, in its
    namespace only, and nothing it does not write (no Secrets, no RBAC)."""
    scope = drill.identity_scope(drill_plan(drill_run))["kubernetes"]

    def plural(kind: str) -> str:
        return kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"

    written = {
        (o["apiVersion"].rpartition("/")[0], plural(o["kind"]))
        for o in drill_run.all_objects()
        if o["kind"] != "Namespace"
    }
    allowed = {
        (group, resource)
        for rule in scope["namespaced"]
        if "create" in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert written == allowed
    assert {o["metadata"]["name"] for o in drill_run.objects("Namespace")} == set(scope["namespaces"])
    assert all(
        o["metadata"].get("namespace") in scope["namespaces"]
        for o in drill_run.all_objects()
        if o["kind"] != "Namespace"
    )


def test_a_refused_drill_stack_names_its_file_and_field_without_a_traceback(drill_project, tmp_path):
    data = drill_project.load("Pulumi.qa-drill.yaml")
    data["config"]["settlement-platform:backup"] = {"objectStore": {"destinationPath": "s3://prod-backups/wal"}}
    drill_project.save("Pulumi.qa-drill.yaml", data)
    result = run_cli("render", "qa-drill", "--project-dir", str(drill_project.root), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Pulumi.qa-drill.yaml: backup: must not be set in a drill stack" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_drill_must_read_the_store_its_source_stack_archives_to(drill_project, tmp_path):
    data = drill_project.load("Pulumi.qa-drill.yaml")
    data["config"]["settlement-platform:drill"]["source"]["destinationPath"] = "s3://elsewhere/wal"
    drill_project.save("Pulumi.qa-drill.yaml", data)
    result = run_cli("render", "qa-drill", "--project-dir", str(drill_project.root), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Pulumi.qa-drill.yaml: drill.source.destinationPath: 's3://elsewhere/wal' must equal" in result.stderr
    assert not (tmp_path / "out").exists()


def test_describe_shows_a_drill_stack_as_the_drill_it_is(drill_run):
    from infra.offline.describe import describe

    plan = drill_plan(drill_run)
    text = describe(drill_run.stack, plan)
    assert "restore drill" in text and plan.config.drill.source.destination_path in text
    for sub, pg in drill.databases(plan).items():
        assert f"`{pg.server_name}`" in text and drill.verifier_name(sub) in text
    assert "### Services" not in text
