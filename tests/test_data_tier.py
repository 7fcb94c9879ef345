"""Data tier (issue 4, in progress): PostgreSQL replication, TLS and credential hand-over."""

from __future__ import annotations

from components.pod_security import restricted_violations

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
            secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
            if d["metadata"]["name"] in users:
                assert secrets == {f"{sub}-db-app", f"{sub}-db-ca"}
                assert env["PGSSLMODE"] == "verify-full"
                assert env["PGSSLROOTCERT"] == "/etc/settlement/postgres-ca/ca.crt"
                assert env["PGHOST"] == f"{sub}-db-rw.{sub}.svc.cluster.local"
                assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"].startswith("secret-"))
            else:
                assert not secrets
            # Nothing secret as an env literal: every value-bearing secret arrives by reference or file.
            for e in container["env"]:
                assert "password" not in e["name"].lower() or "valueFrom" in e
            assert restricted_violations(spec) == []


def test_services_without_a_database_get_no_database_credentials(stack_run):
    spec = stack_run.object("Deployment", "risk-engine", "risk")["spec"]["template"]["spec"]
    assert not [v for v in spec["volumes"] if "secret" in v]


def test_queue_clusters_keep_one_node_per_host_and_a_disruption_budget(prod, dev):
    for sub in DB_USERS:
        spec = prod.object("RabbitmqCluster", f"{sub}-mq", sub)["spec"]
        term = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": f"{sub}-mq"}
        pdb = prod.object("PodDisruptionBudget", f"{sub}-mq", sub)["spec"]
        assert pdb["maxUnavailable"] == 1 and pdb["selector"] == term["labelSelector"]
        # A single-node dev queue gets no PDB: it would block every node drain.
        assert not [p for p in dev.objects("PodDisruptionBudget") if p["metadata"]["name"] == f"{sub}-mq"]
