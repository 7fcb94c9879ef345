"""What `pulumi up` waits for on custom resources, which pulumi-kubernetes otherwise creates and forgets.

pulumi-kubernetes 4.x awaits a custom resource only when it carries `pulumi.com/waitFor`
(provider/pkg/metadata/overrides.go, ReadyCondition): a single expression or a JSON array of them, each
`condition=<Type>[=<Status>]` (status True by default; provider/pkg/await/condition/custom.go, the syntax of
`kubectl wait --for=condition=`) or `jsonpath={...}[=<value>]` (provider/pkg/jsonpath/jsonpath.go). The wait
runs on create and on update; its limit is the resource's customTimeouts (or `pulumi.com/timeoutSeconds`;
TimeoutDuration), and past it the update fails, naming the resource.
"""

from __future__ import annotations

import json

import pulumi

WAIT_FOR = "pulumi.com/waitFor"


def wait_for(*expressions: str) -> dict[str, str]:
    """The annotation, as metadata.annotations entries."""
    if not expressions:
        raise ValueError("wait_for needs at least one expression")
    for expression in expressions:
        if not expression.startswith(("condition=", "jsonpath=")):
            raise ValueError(f"{expression!r}: expected a `condition=` or `jsonpath=` prefix")
    return {WAIT_FOR: expressions[0] if len(expressions) == 1 else json.dumps(list(expressions))}


READY = wait_for("condition=Ready")
"""cert-manager Certificates and Issuers (pkg/apis/certmanager/v1/types_certificate.go, types_issuer.go:
CertificateConditionReady / IssuerConditionReady = "Ready") and CloudNativePG Clusters (api/v1/cluster_types.go,
ConditionClusterReady = "Ready": every instance up and the cluster's objects reconciled)."""

ALL_REPLICAS_READY = wait_for("condition=AllReplicasReady")
"""RabbitmqCluster: every node of the StatefulSet ready (cluster-operator internal/status/status.go)."""

CERTIFICATE_TIMEOUTS = pulumi.CustomTimeouts(create="10m", update="10m")
"""Issuing from the internal CA takes seconds; minutes leave room for cert-manager's own start."""

DATA_CLUSTER_TIMEOUTS = pulumi.CustomTimeouts(create="45m", update="45m")
"""A 3-instance synchronous PostgreSQL bootstrap is sequential (initdb on the primary, then one
pg_basebackup per standby, each pod scheduled, its image pulled, its volume provisioned), as is a rolling update
with a switchover; 3 RabbitMQ nodes start in order too. 45 minutes covers slow volume provisioning and image
pulls without letting a stuck rollout hang the deployment for hours."""
