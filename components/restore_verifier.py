"""A Job that proves a restored PostgreSQL cluster answers SQL, and prints what it found as one JSON line."""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components import labels as labels_lib
from components import pod_security
from components.kube import KubeObject
from components.workload import DIGEST_MARKER, image_pull_policy

RESULT_PREFIX = "DRILL-RESULT "
"""Prefix of the verifier's one result line in its log (`kubectl logs job/<name>`)."""
POSTGRES_PORT = 5432
CREDENTIALS_DIR = "/etc/verify/app"
CA_DIR = "/etc/verify/ca"


@dataclass(frozen=True)
class RestoreVerifierArgs:
    name: str
    """Kubernetes name of the Job and its ServiceAccount."""
    namespace: pulumi.Input[str]
    cluster: str
    """The CloudNativePG Cluster to verify: `<cluster>-rw` Service, `<cluster>-app` credentials, `<cluster>-ca`."""
    database: str
    server_name: str
    """The archive the cluster was restored from (reported with the result)."""
    image: str
    """An image with `sh` and `psql`: the cluster's own operand image."""
    resources: dict
    part_of: str
    cluster_created: pulumi.Input[str]
    """When the restore started (the Cluster's creationTimestamp): the restore time runs from here."""
    point_query: str | None = None
    """SQL returning one timestamptz, the newest point the data holds; None: pg_last_xact_replay_timestamp()."""
    extra_labels: dict[str, str] = field(default_factory=dict)
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """The restored cluster (ready before the Job starts)."""


def verify_sql(point_query: str | None) -> str:
    """What the Job runs (psql, ON_ERROR_STOP): refuse a server still in recovery, then one JSON object.

    PostgreSQL (docs, "Recovery Control Functions"): pg_last_xact_replay_timestamp() is NULL once a server has
    started without recovery. CloudNativePG v1.30.0 pkg/management/postgres/restore.go (ConfigureInstanceAfterRestore)
    replays the WAL in the bootstrap Job's own PostgreSQL, waits for the promotion and stops it; the instance pod
    then starts a fresh postmaster. So the replay timestamp is usually NULL here, and `point_query` (the newest row
    of a table the application writes) is what states the recovered point."""
    replay = "pg_catalog.pg_last_xact_replay_timestamp()"
    point = f"({point_query.strip().rstrip(';')})" if point_query else replay
    return f"""DO $$ BEGIN
  IF pg_catalog.pg_is_in_recovery() THEN RAISE EXCEPTION 'the restored server is still in recovery'; END IF;
END $$;
SELECT pg_catalog.json_build_object(
  'server', :'server',
  'database', pg_catalog.current_database(),
  'restoreStarted', :'created'::timestamptz,
  'verifiedAt', pg_catalog.now(),
  'restoreSeconds', pg_catalog.round(extract(epoch FROM pg_catalog.now() - :'created'::timestamptz)),
  'recoveredPoint', {point},
  'lastReplayedTransaction', {replay},
  'userTables', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_tables
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema'))
);
"""


def verify_script(point_query: str | None) -> str:
    # The password is read from the mounted file, never passed as an env value; output goes to a file first so a
    # psql failure fails the Job (`set -e`) without relying on pipefail.
    return f"""set -eu
PGPASSWORD="$(cat {CREDENTIALS_DIR}/password)"
export PGPASSWORD
psql --no-psqlrc --quiet --tuples-only --no-align -v ON_ERROR_STOP=1 \\
  -v created="$RESTORE_STARTED" -v server="$SERVER_NAME" > /tmp/result <<'SQL'
{verify_sql(point_query)}SQL
sed -n 's/^{{/{RESULT_PREFIX}{{/p' /tmp/result
"""


def job_annotations(image: str) -> dict[str, str]:
    """An image by tag is the PostgreSQL operand image the restored Clusters run by that same tag (CloudNativePG's
    `imageName`, which no digest check sees): the exception is stated on the Job, with its reason, for checkov and
    the policy pack's images-pinned-by-digest alike (README "Security checks")."""
    if DIGEST_MARKER in image:
        return {}
    return {
        "checkov.io/skip1": "CKV_K8S_43=the PostgreSQL operand image, by the tag the restored Clusters run "
        "(defaults.postgres.image); pin both by digest together"
    }


def job_spec(args: RestoreVerifierArgs, cluster_created: str) -> dict:
    """The Job spec (pure). No API access at all: the pod gets no ServiceAccount token and its account no Role."""
    labels = labels_lib.standard_labels(args.name, args.part_of, "restore-verifier", args.extra_labels)
    env = {
        # libpq: TLS with the restored server's certificate checked against its own CA, as the application would;
        # the short Service name is in the server certificate (cloudnative-pg v1.30.0 api/v1/cluster_funcs.go,
        # GetClusterAltDNSNames).
        "PGHOST": f"{args.cluster}-rw",
        "PGPORT": str(POSTGRES_PORT),
        "PGDATABASE": args.database,
        "PGUSER": args.database,  # CloudNativePG's bootstrap.recovery `owner` (postgres_cluster.cluster_spec)
        "PGSSLMODE": "verify-full",
        "PGSSLROOTCERT": f"{CA_DIR}/ca.crt",
        "PGCONNECT_TIMEOUT": "10",
        "HOME": "/tmp",
        "RESTORE_STARTED": cluster_created,
        "SERVER_NAME": args.server_name,
    }
    return {
        "backoffLimit": 3,
        "activeDeadlineSeconds": 900,
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": args.name,
                "automountServiceAccountToken": False,
                "restartPolicy": "Never",
                "securityContext": pod_security.pod_security_context(),
                "containers": [
                    {
                        "name": "verify",
                        "image": args.image,
                        "imagePullPolicy": image_pull_policy(args.image),
                        "command": ["/bin/sh", "-c", verify_script(args.point_query)],
                        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
                        "resources": args.resources,
                        "securityContext": pod_security.container_security_context(),
                        "volumeMounts": [
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "app", "mountPath": CREDENTIALS_DIR, "readOnly": True},
                            {"name": "ca", "mountPath": CA_DIR, "readOnly": True},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                    {
                        "name": "app",
                        "secret": {
                            "secretName": f"{args.cluster}-app",
                            "defaultMode": 0o440,
                            "items": [{"key": "password", "path": "password"}],
                        },
                    },
                    {
                        # `<cluster>-ca` also holds the CA's private key: only the certificate is mounted.
                        "name": "ca",
                        "secret": {
                            "secretName": f"{args.cluster}-ca",
                            "defaultMode": 0o440,
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        },
                    },
                ],
            },
        },
    }


VERIFY_TIMEOUTS = pulumi.CustomTimeouts(create="20m", update="20m")
"""pulumi-kubernetes awaits a Job until its `Complete` condition is True (pulumi/docs, pulumi_kubernetes batch/v1
Job: "waits until its status is ready"), and fails the update when it fails: longer than the Job's own
activeDeadlineSeconds (15 min), so the Job's verdict, not the engine's patience, decides."""


class RestoreVerifier(pulumi.ComponentResource):
    """A ServiceAccount without permissions and the verifying Job; `pulumi up` waits for the Job to complete."""

    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: RestoreVerifierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("settlement:data:RestoreVerifier", name, None, opts)
        labels = labels_lib.standard_labels(args.name, args.part_of, "restore-verifier", args.extra_labels)
        metadata = {"name": args.name, "namespace": args.namespace, "labels": labels}
        account = KubeObject(
            f"{name}-account",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata, "automountServiceAccountToken": False},
            pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        job = KubeObject(
            f"{name}-job",
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {**metadata, "annotations": job_annotations(args.image)},
                "spec": pulumi.Output.from_input(args.cluster_created).apply(lambda created: job_spec(args, created)),
            },
            pulumi.ResourceOptions(
                parent=self, depends_on=[*args.depends_on, account], custom_timeouts=VERIFY_TIMEOUTS
            ),
        )
        self.job_name = job.metadata["name"]
        self.register_outputs({"job_name": self.job_name})
