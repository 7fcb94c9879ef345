"""Data tier (issue 4, in progress): PostgreSQL replication, TLS and credential hand-over."""

from __future__ import annotations

import pytest

from components.pod_security import restricted_violations
from infra.offline import render
from infra.offline.mocks import ProgramFailed
from infra.platform import amqp_credentials
from infra.stack_config import SECRET_PLACEHOLDER
from tests.conftest import platform_deployments


def databases(plan):
    """The subsystems that have a PostgreSQL cluster."""
    return [sub for sub in plan.subsystems.values() if sub.postgres]


def queue_owners(plan):
    return [sub for sub in plan.subsystems.values() if sub.queue]


def test_replicated_databases_replicate_synchronously_with_zero_data_loss(stack_run, stack_plan):
    """Synchronous replication wherever there is a standby; a single instance never waits for one that does not
    exist (dev)."""
    for sub in databases(stack_plan):
        spec = stack_run.object("Cluster", f"{sub.name}-db", sub.namespace)["spec"]
        assert spec["instances"] == sub.postgres.instances
        if sub.postgres.synchronous and sub.postgres.instances > 1:
            assert spec["postgresql"]["synchronous"] == {"method": "any", "number": 1, "dataDurability": "required"}
        else:
            assert "synchronous" not in spec["postgresql"]


def test_databases_refuse_plaintext_and_spread_over_hosts_and_zones(stack_run, stack_plan):
    for sub in databases(stack_plan):
        spec = stack_run.object("Cluster", f"{sub.name}-db", sub.namespace)["spec"]
        assert spec["postgresql"]["pg_hba"][0] == "hostnossl all all all reject"
        assert spec["postgresql"]["parameters"]["ssl_min_protocol_version"] == "TLSv1.3"
        assert spec["affinity"]["podAntiAffinityType"] == "required"
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
        assert spec["enablePDB"] is True


def test_a_database_on_the_payment_path_is_on_the_critical_priority(stack_run, stack_plan):
    """A subsystem with a critical service puts its database on the critical priority, any other the standard."""
    for sub in databases(stack_plan):
        want = "settlement-critical" if sub.critical else "settlement-standard"
        assert stack_run.object("Cluster", f"{sub.name}-db", sub.namespace)["spec"]["priorityClassName"] == want


def test_database_credentials_are_mounted_files_and_the_server_certificate_is_verified(stack_run, stack_plan):
    """Every service with `database: true` gets its own subsystem's cluster (PGHOST, credentials, CA); no other
    service gets any database credentials."""
    for svc in stack_plan.services():
        sub, ns = svc.subsystem, stack_plan.subsystems[svc.subsystem].namespace
        d = stack_run.object("Deployment", svc.name, ns)
        spec = d["spec"]["template"]["spec"]
        container = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        secrets = {
            v["secret"]["secretName"]
            for v in spec["volumes"]
            if v.get("secret", {}).get("secretName", "").endswith(("-db-app", "-db-ca"))
        }
        if svc.database:
            assert secrets == {f"{sub}-db-app", f"{sub}-db-ca"}
            assert env["PGSSLMODE"] == "verify-full"
            assert env["PGSSLROOTCERT"] == "/etc/settlement/postgres-ca/ca.crt"
            assert env["PGHOST"] == f"{sub}-db-rw.{ns}.svc.cluster.local"
            assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"].startswith("secret-"))
            ca_volume = next(v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == f"{sub}-db-ca")
            assert ca_volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "never the CA key"
        else:
            assert not secrets and "PGHOST" not in env, f"{sub}/{svc.name}"
        # Nothing secret as an env literal: every value-bearing secret arrives by reference or file.
        for e in container["env"]:
            assert "password" not in e["name"].lower() or "valueFrom" in e
        assert restricted_violations(spec) == []


def test_queue_clusters_keep_one_node_per_host_and_a_disruption_budget(stack_run, stack_plan):
    for sub in queue_owners(stack_plan):
        name, ns = f"{sub.name}-mq", sub.namespace
        spec = stack_run.object("RabbitmqCluster", name, ns)["spec"]
        term = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        (zone,) = spec["override"]["statefulSet"]["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert zone["topologyKey"] == "topology.kubernetes.io/zone"
        assert zone["labelSelector"] == term["labelSelector"]
        pdbs = [p for p in stack_run.objects("PodDisruptionBudget") if p["metadata"]["name"] == name]
        if sub.queue.replicas > 1:
            (pdb,) = pdbs
            assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"] == term["labelSelector"]
        else:
            # A single-node queue gets no PDB: it would block every node drain.
            assert not pdbs, name


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


def test_every_database_archives_wal_and_takes_scheduled_base_backups_when_backup_is_configured(stack_run, stack_plan):
    backup = stack_plan.config.backup
    if backup is None:
        assert not stack_run.objects("ObjectStore") and not stack_run.objects("ScheduledBackup")
        for sub in databases(stack_plan):
            assert not stack_run.object("Cluster", f"{sub.name}-db", sub.namespace)["spec"].get("plugins")
        return
    for sub in databases(stack_plan):
        name, ns = f"{sub.name}-db", sub.namespace
        cluster = stack_run.object("Cluster", name, ns)["spec"]
        assert "backup" not in cluster, "the in-tree barmanObjectStore is deprecated"
        (plugin,) = cluster["plugins"]
        assert plugin["name"] == "barman-cloud.cloudnative-pg.io" and plugin["isWALArchiver"] is True
        assert plugin["parameters"] == {"barmanObjectName": f"{name}-backup", "serverName": sub.postgres.server_name}
        store = stack_run.object("ObjectStore", f"{name}-backup", ns)["spec"]
        assert store["configuration"]["destinationPath"] == backup.object_store.destination_path
        if backup.object_store.credentials == "iamRole":
            assert store["configuration"]["s3Credentials"] == {"inheritFromIAMRole": True}
        assert store["retentionPolicy"] == backup.retention
        annotations = backup.object_store.service_account_annotations
        if annotations:
            assert cluster["serviceAccountTemplate"]["metadata"]["annotations"] == annotations
        scheduled = stack_run.object("ScheduledBackup", f"{name}-scheduled", ns)["spec"]
        assert scheduled["cluster"] == {"name": name}
        assert scheduled["method"] == "plugin" and scheduled["pluginConfiguration"]["name"] == plugin["name"]
        assert scheduled["immediate"] is True
        deps = _dependency_names(stack_run, "Cluster", name)
        assert ("ObjectStore", f"{name}-backup") in deps
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


def single_site(project, stack: str) -> None:
    """The sample stack without `dr`: point-in-time recovery is a single-site operation (with `dr` a site's
    databases bootstrap from the other site, and `recovery` is refused)."""
    data = project.load(f"Pulumi.{stack}.yaml")
    data["config"].pop("settlement-platform:dr", None)
    project.save(f"Pulumi.{stack}.yaml", data)


def test_point_in_time_recovery_bootstraps_from_the_store(project):
    single_site(project, "prod")
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
    single_site(project, stack)
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
    render.write(run, tmp_path, with_manifests=False)  # resources.json holds every manifest's inputs too
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


def test_static_backup_keys_exist_only_when_the_stack_asks_for_them(stack_run, stack_plan):
    backup = stack_plan.config.backup
    static = [s for s in stack_run.objects("Secret") if s["metadata"]["name"].endswith("-backup-credentials")]
    if backup is None or backup.object_store.credentials != "secret":
        assert not static
    else:
        assert len(static) == len(databases(stack_plan))


# --- Queue clusters: TLS only -----------------------------------------------------------------------------------


def test_queue_clusters_accept_tls_only_with_a_certificate_from_the_internal_ca(stack_run, stack_plan):
    issuers = {o["metadata"]["name"]: o["spec"] for o in stack_run.objects("ClusterIssuer")}
    for owner in queue_owners(stack_plan):
        sub, ns = owner.name, owner.namespace
        cluster = stack_run.object("RabbitmqCluster", f"{sub}-mq", ns)["spec"]
        assert cluster["tls"] == {"secretName": f"{sub}-mq-tls", "disableNonTLSListeners": True}
        assert "tlsv1.1" not in cluster["rabbitmq"]["additionalConfig"]
        cert = stack_run.object("Certificate", f"{sub}-mq-tls", ns)["spec"]
        assert cert["secretName"] == f"{sub}-mq-tls"
        assert f"{sub}-mq.{ns}.svc.cluster.local" in cert["dnsNames"]
        assert f"*.{sub}-mq-nodes.{ns}.svc.cluster.local" in cert["dnsNames"]
        assert "ca" in issuers[cert["issuerRef"]["name"]], "signed by the internal CA, not self-signed"
        assert ("Certificate", f"{sub}-mq-tls") in _dependency_names(stack_run, "RabbitmqCluster", f"{sub}-mq")


def test_queue_clients_connect_over_amqps_and_trust_only_the_ca_certificate(stack_run, stack_plan):
    plan, prod = stack_plan, stack_run
    for svc in plan.services():
        for creds in amqp_credentials(svc):
            assert creds.uri_template.startswith("amqps://") and ":5671/" in creds.uri_template
            assert creds.static_data == {"tls": "enable"}
    for ns in (sub.namespace for sub in plan.subsystems.values()):
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


def test_queue_credentials_are_mounted_files_never_env_values(stack_run, stack_plan):
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
    # Exactly one credentials Secret per queue cluster a service uses (and the CA only when it uses one).
    for svc in stack_plan.services():
        spec = stack_run.object("Deployment", svc.name, stack_plan.subsystems[svc.subsystem].namespace)["spec"]
        mounted = {v["secret"]["secretName"] for v in spec["template"]["spec"]["volumes"] if "secret" in v}
        amqp = {f"{svc.subsystem}-{svc.name}-amqp-{q}" for q in svc.queue_subsystems}
        assert {m for m in mounted if "-amqp-" in m} == amqp, f"{svc.subsystem}/{svc.name}"
        assert ("internal-ca" in mounted) == bool(amqp), f"{svc.subsystem}/{svc.name}"
