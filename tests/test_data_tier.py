"""Data tier (issue 4, in progress): PostgreSQL replication, TLS and credential hand-over."""

from __future__ import annotations

import pytest

from components.pod_security import restricted_violations
from infra.offline import render
from infra.offline.mocks import ProgramFailed
from infra.platform import amqp_credentials
from infra.stack_config import SECRET_PLACEHOLDER, plan_for_stack
from tests.conftest import platform_deployments

DB_USERS = {
    "payment": {"payment-api", "risk-warning-handler"},
    "business": {"settlement-api", "settlement-engine", "clearing-engine", "reporting"},
}


def test_prod_databases_replicate_synchronously_with_zero_data_loss(prod):
    for sub in DB_USERS:
        spec = prod.object("Cluster", f"{sub}-db", sub)["spec"]
        assert spec["instances"] == 3
        assert spec["postgresql"]["synchronous"] == {"method": "any", "number": 1, "dataDurability": "required"}


def test_single_instance_dev_databases_do_not_wait_for_a_standby_that_does_not_exist(dev):
    for sub in DB_USERS:
        spec = dev.object("Cluster", f"{sub}-db", sub)["spec"]
        assert spec["instances"] == 1 and "synchronous" not in spec["postgresql"]


def test_databases_refuse_plaintext_and_spread_over_hosts_and_zones(stack_run):
    for sub in DB_USERS:
        spec = stack_run.object("Cluster", f"{sub}-db", sub)["spec"]
        assert spec["postgresql"]["pg_hba"][0] == "hostnossl all all all reject"
        assert spec["postgresql"]["parameters"]["ssl_min_protocol_version"] == "TLSv1.3"
        assert spec["affinity"]["podAntiAffinityType"] == "required"
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
        assert spec["enablePDB"] is True


def test_payment_database_is_on_the_critical_priority(stack_run):
    assert stack_run.object("Cluster", "payment-db", "payment")["spec"]["priorityClassName"] == "settlement-critical"
    assert stack_run.object("Cluster", "business-db", "business")["spec"]["priorityClassName"] == (
        "settlement-standard"
    )


def test_database_credentials_are_mounted_files_and_the_server_certificate_is_verified(stack_run):
    for sub, users in DB_USERS.items():
        for d in (d for d in stack_run.objects("Deployment") if d["metadata"]["namespace"] == sub):
            spec = d["spec"]["template"]["spec"]
            container = spec["containers"][0]
            env = {e["name"]: e.get("value") for e in container["env"]}
            secrets = {
                v["secret"]["secretName"]
                for v in spec["volumes"]
                if v.get("secret", {}).get("secretName", "").endswith(("-db-app", "-db-ca"))
            }
            if d["metadata"]["name"] in users:
                assert secrets == {f"{sub}-db-app", f"{sub}-db-ca"}
                assert env["PGSSLMODE"] == "verify-full"
                assert env["PGSSLROOTCERT"] == "/etc/settlement/postgres-ca/ca.crt"
                assert env["PGHOST"] == f"{sub}-db-rw.{sub}.svc.cluster.local"
                assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"].startswith("secret-"))
                ca_volume = next(v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == f"{sub}-db-ca")
                assert ca_volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "never the CA key"
            else:
                assert not secrets
            # Nothing secret as an env literal: every value-bearing secret arrives by reference or file.
            for e in container["env"]:
                assert "password" not in e["name"].lower() or "valueFrom" in e
            assert restricted_violations(spec) == []


def test_services_without_a_database_get_no_database_credentials(stack_run):
    spec = stack_run.object("Deployment", "risk-engine", "risk")["spec"]["template"]["spec"]
    assert not [v for v in spec["volumes"] if v.get("secret", {}).get("secretName", "").endswith(("-db-app", "-db-ca"))]


def test_queue_clusters_keep_one_node_per_host_and_a_disruption_budget(prod, dev):
    for sub in DB_USERS:
        spec = prod.object("RabbitmqCluster", f"{sub}-mq", sub)["spec"]
        term = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": f"{sub}-mq"}
        (zone,) = spec["override"]["statefulSet"]["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert zone["topologyKey"] == "topology.kubernetes.io/zone"
        assert zone["labelSelector"] == term["labelSelector"]
        pdb = prod.object("PodDisruptionBudget", f"{sub}-mq", sub)["spec"]
        assert pdb["maxUnavailable"] == 1 and pdb["selector"] == term["labelSelector"]
        # A single-node dev queue gets no PDB: it would block every node drain.
        assert not [p for p in dev.objects("PodDisruptionBudget") if p["metadata"]["name"] == f"{sub}-mq"]


# --- Backups and point-in-time recovery -----------------------------------------------------------------------


def _dependency_names(run, kind, name):
    by_urn = {r.urn: r for r in run.registrations}
    reg = next(r for r in run.registrations if r.inputs.get("kind") == kind and r.inputs["metadata"]["name"] == name)
    return {
        (
            by_urn[u].inputs.get("kind") or by_urn[u].type,
            by_urn[u].inputs.get("metadata", {}).get("name") or by_urn[u].inputs.get("chart"),
        )
        for u in reg.dependencies
        if u in by_urn
    }


def test_prod_archives_wal_and_takes_scheduled_base_backups_through_the_barman_cloud_plugin(prod):
    for sub in DB_USERS:
        cluster = prod.object("Cluster", f"{sub}-db", sub)["spec"]
        assert "backup" not in cluster, "the in-tree barmanObjectStore is deprecated"
        (plugin,) = cluster["plugins"]
        assert plugin["name"] == "barman-cloud.cloudnative-pg.io" and plugin["isWALArchiver"] is True
        assert plugin["parameters"] == {"barmanObjectName": f"{sub}-db-backup", "serverName": f"{sub}-db"}
        store = prod.object("ObjectStore", f"{sub}-db-backup", sub)["spec"]
        assert store["configuration"]["destinationPath"] == "s3://settlement-prod-pg-backups/wal"
        assert store["configuration"]["s3Credentials"] == {"inheritFromIAMRole": True}
        assert store["retentionPolicy"] == "30d"
        assert cluster["serviceAccountTemplate"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        scheduled = prod.object("ScheduledBackup", f"{sub}-db-scheduled", sub)["spec"]
        assert scheduled["cluster"] == {"name": f"{sub}-db"}
        assert scheduled["method"] == "plugin" and scheduled["pluginConfiguration"]["name"] == plugin["name"]
        assert scheduled["immediate"] is True
        deps = _dependency_names(prod, "Cluster", f"{sub}-db")
        assert ("ObjectStore", f"{sub}-db-backup") in deps
        assert ("kubernetes:helm.sh/v3:Release", "plugin-barman-cloud") in deps


def test_backup_plugin_is_installed_beside_the_operator_after_cert_manager(stack_run):
    releases = {r.inputs["chart"]: r for r in stack_run.of_type("kubernetes:helm.sh/v3:Release")}
    plugin = releases["plugin-barman-cloud"]
    assert plugin.inputs["namespace"] == releases["cloudnative-pg"].inputs["namespace"]
    assert {releases["cloudnative-pg"].urn, releases["cert-manager"].urn} <= set(plugin.dependencies)


def test_a_stack_with_databases_but_no_backup_is_refused(project):
    data = project.load("Pulumi.prod.yaml")
    del data["config"]["settlement-platform:backup"]
    project.save("Pulumi.prod.yaml", data)
    with pytest.raises(ProgramFailed, match="backup: is not configured but subsystems business, payment have"):
        project.render("prod")


def test_point_in_time_recovery_bootstraps_from_the_store(project):
    topology = project.topology()
    topology["payment"]["postgres"] = {
        "serverName": "payment-db-2",
        "recovery": {"fromServerName": "payment-db", "targetTime": "2026-11-25T23:59:00+00:00"},
    }
    project.set_topology(topology)
    spec = project.render("prod").object("Cluster", "payment-db", "payment")["spec"]
    assert spec["bootstrap"] == {
        "recovery": {
            "source": "origin",
            "database": "app",
            "owner": "app",
            "recoveryTarget": {"targetTime": "2026-11-25T23:59:00+00:00"},
        }
    }
    (origin,) = spec["externalClusters"]
    assert origin["plugin"]["parameters"] == {"barmanObjectName": "payment-db-backup", "serverName": "payment-db"}
    assert spec["plugins"][0]["parameters"]["serverName"] == "payment-db-2"


@pytest.mark.parametrize(
    ("stack", "postgres", "expected"),
    [
        (
            "prod",
            {"recovery": {"fromServerName": "payment-db"}},
            "subsystems.payment.postgres.recovery.fromServerName: ('payment-db') must differ from serverName",
        ),
        (
            "dev",
            {"serverName": "new", "recovery": {"fromServerName": "payment-db"}},
            "subsystems.payment.postgres.recovery: needs `backup`",
        ),
        (
            "prod",
            {"recovery": {"fromServerName": "old", "targetTime": "yesterday"}},
            "subsystems.payment.postgres.recovery.targetTime: 'yesterday' does not match the pattern",
        ),
    ],
)
def test_unsafe_recoveries_are_refused(project, stack, postgres, expected):
    topology = project.topology()
    topology["payment"]["postgres"] = postgres
    project.set_topology(topology)
    with pytest.raises(ProgramFailed) as failure:
        project.render(stack)
    assert expected in str(failure.value.cause)
    assert failure.value.registrations == []


def _use_static_keys(project, secrets: dict):
    data = project.load("Pulumi.prod.yaml")
    data["config"]["settlement-platform:backup"]["objectStore"]["credentials"] = "secret"
    data["config"].update({f"settlement-platform:{k}": v for k, v in secrets.items()})
    project.save("Pulumi.prod.yaml", data)


def test_static_backup_keys_come_only_from_pulumi_secrets(project, tmp_path):
    _use_static_keys(project, {"backupAccessKeyId": {"secure": "v1:AAA"}, "backupSecretAccessKey": {"secure": "v1:B"}})
    run = project.render("prod")
    secret = run.object("Secret", "payment-db-backup-credentials", "payment")
    assert secret["stringData"] == {"ACCESS_KEY_ID": "[secret]", "ACCESS_SECRET_KEY": "[secret]"}
    creds = run.object("ObjectStore", "payment-db-backup", "payment")["spec"]["configuration"]["s3Credentials"]
    assert creds["accessKeyId"] == {"name": "payment-db-backup-credentials", "key": "ACCESS_KEY_ID"}
    render.write(run, tmp_path)
    assert SECRET_PLACEHOLDER not in (tmp_path / "resources.json").read_text()


@pytest.mark.parametrize(
    ("secrets", "expected"),
    [
        ({}, "backupAccessKeyId: is required by backup.objectStore.credentials: secret"),
        (
            {"backupAccessKeyId": "AKIAPLAINTEXT", "backupSecretAccessKey": {"secure": "v1:B"}},
            "backupAccessKeyId: is a secret: set it with `pulumi config set --secret backupAccessKeyId ...`",
        ),
        (
            {
                "backupAccessKeyId": {"secure": "v1:A"},
                "backupSecretAccessKey": {"secure": "v1:B"},
                "dbPassword": {"secure": "v1:C"},
            },
            "dbPassword: unknown secret key (allowed: backupAccessKeyId,",
        ),
    ],
)
def test_backup_secret_mistakes_are_refused(project, secrets, expected):
    _use_static_keys(project, secrets)
    with pytest.raises(ProgramFailed) as failure:
        project.render("prod")
    assert expected in str(failure.value.cause)
    assert "AKIAPLAINTEXT" not in str(failure.value.cause)


def test_real_prod_uses_no_static_backup_keys(prod):
    assert not [s for s in prod.objects("Secret") if s["metadata"]["name"].endswith("-backup-credentials")]


# --- Queue clusters: TLS only -----------------------------------------------------------------------------------


def test_queue_clusters_accept_tls_only_with_a_certificate_from_the_internal_ca(stack_run):
    issuers = {o["metadata"]["name"]: o["spec"] for o in stack_run.objects("ClusterIssuer")}
    for sub in DB_USERS:
        cluster = stack_run.object("RabbitmqCluster", f"{sub}-mq", sub)["spec"]
        assert cluster["tls"] == {"secretName": f"{sub}-mq-tls", "disableNonTLSListeners": True}
        assert "tlsv1.1" not in cluster["rabbitmq"]["additionalConfig"]
        cert = stack_run.object("Certificate", f"{sub}-mq-tls", sub)["spec"]
        assert cert["secretName"] == f"{sub}-mq-tls"
        assert f"{sub}-mq.{sub}.svc.cluster.local" in cert["dnsNames"]
        assert f"*.{sub}-mq-nodes.{sub}.svc.cluster.local" in cert["dnsNames"]
        assert "ca" in issuers[cert["issuerRef"]["name"]], "signed by the internal CA, not self-signed"
        assert ("Certificate", f"{sub}-mq-tls") in _dependency_names(stack_run, "RabbitmqCluster", f"{sub}-mq")


def test_queue_clients_connect_over_amqps_and_trust_only_the_ca_certificate(prod):
    plan = plan_for_stack("prod")
    for svc in plan.services():
        for creds in amqp_credentials(svc):
            assert creds.uri_template.startswith("amqps://") and ":5671/" in creds.uri_template
            assert creds.static_data == {"tls": "enable"}
    for ns in ("payment", "business", "risk"):
        trust = prod.object("Certificate", "internal-ca-trust", ns)["spec"]
        assert trust["secretName"] == "internal-ca"
    for d in platform_deployments(prod):
        for volume in d["spec"]["template"]["spec"]["volumes"]:
            if volume.get("secret", {}).get("secretName") == "internal-ca":
                assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    for auth in prod.objects("TriggerAuthentication"):
        params = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert params["ca"] == ("internal-ca", "ca.crt")
        assert params["tls"][1] == "tls"


def test_queue_credentials_are_mounted_files_never_env_values(stack_run):
    for d in platform_deployments(stack_run):
        spec = d["spec"]["template"]["spec"]
        container = spec["containers"][0]
        assert all("valueFrom" not in e for e in container["env"]), "no secret reaches a pod as env"
        amqp = [v for v in spec["volumes"] if "-amqp-" in v.get("secret", {}).get("secretName", "")]
        env = {e["name"]: e["value"] for e in container["env"]}
        for volume in amqp:
            q_sub = volume["secret"]["secretName"].rsplit("-amqp-", 1)[1]
            assert {i["key"] for i in volume["secret"]["items"]} == {"username", "password", "uri"}
            assert env[f"AMQP_{q_sub.upper()}_URI_FILE"] == f"/etc/settlement/amqp-{q_sub}/uri"
    risk = stack_run.object("Deployment", "risk-engine", "risk")["spec"]["template"]["spec"]
    assert {v["secret"]["secretName"] for v in risk["volumes"] if "secret" in v} == {
        "risk-risk-engine-amqp-payment",
        "internal-ca",
    }
