"""Disaster recovery (issue 14): the standby site, its replica databases, switchover and failover as reviewed
config changes, recovery objectives and their alerts. README "Disaster recovery"."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from infra import dr as dr_rules
from infra.alerts import rule_groups
from infra.errors import ConfigError
from infra.offline.diff import diff, report, switchover_context
from infra.offline.render import dr_state
from infra.stack_config import PROJECT_ROOT, plan_for_stack, stack_names
from tests.conftest import STACKS, one_edited
from tests.fixture_config import SMALL_TOPOLOGY, plan_of
from tests.test_diff import committed_project, git_project, run_diff  # noqa: F401 (fixtures)
from tests.test_input import assert_render_refused
from tests.test_observability import PROMTOOL, run

KEY = "settlement-platform:dr"


def resources(run) -> list[dict]:
    return [r.to_json() for r in run.registrations]


# --- Whole stacks: every stack with `dr` is one site of a pair whose other site is a stack too --------------


def _dr_stacks(plans) -> dict[str, object]:
    return {stack: plan for stack, plan in plans.items() if plan.config.dr is not None}


def _archives(run) -> dict[tuple[str, str], str]:
    """(namespace, ObjectStore name) -> destinationPath, for the stores a rendered stack defines."""
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"]["configuration"]["destinationPath"]
        for o in run.objects("ObjectStore")
    }


def test_every_database_of_a_site_is_a_member_of_the_pair(stack_run, stack_plan):
    dr = stack_plan.config.dr
    clusters = stack_run.objects("Cluster")
    if dr is None:
        assert all(
            "replica" not in c["spec"] and "externalClusters" not in c["spec"]
            for c in clusters
            if "recovery" not in c["spec"].get("bootstrap", {})
        )
        return
    stores = _archives(stack_run)
    for sub in (s for s in stack_plan.subsystems.values() if s.postgres is not None):
        spec = stack_run.object("Cluster", f"{sub.name}-db", sub.namespace)["spec"]
        replica = spec["replica"]
        assert replica["self"] == dr_rules.member(sub.name, dr.site)
        assert replica["primary"] == dr_rules.member(sub.name, dr.primary_site)
        assert (
            replica["source"] != replica["self"]
            if replica["primary"] == replica["self"]
            else (replica["source"] == replica["primary"])
        )
        entries = {e["name"]: e for e in spec["externalClusters"]}
        assert set(entries) == {dr_rules.member(sub.name, s) for s in dr.sites}
        for name, site in dr.sites.items():
            params = entries[dr_rules.member(sub.name, name)]["plugin"]["parameters"]
            assert params["serverName"] == dr_rules.server_name(sub.name, name, site.generation)
            assert stores[(sub.namespace, params["barmanObjectName"])] == site.destination_path
        # It archives its own history to its own site's store, under its own server name.
        (archiver,) = [p for p in spec["plugins"] if p.get("isWALArchiver")]
        assert archiver["parameters"]["serverName"] == entries[replica["self"]]["plugin"]["parameters"]["serverName"]
        assert stores[(sub.namespace, archiver["parameters"]["barmanObjectName"])] == dr.sites[dr.site].destination_path
        assert ("initdb" in spec["bootstrap"]) == (dr.sites[dr.site].bootstrap_from is None)


def test_the_standby_replicates_what_the_primary_archives(rendered, plans):
    """For each pair of stacks of one pair of sites: what a site reads for the other is exactly where the other
    archives (store path and server name), so the standby's databases are replicas of prod's."""
    stacks = _dr_stacks(plans)
    pairs = [
        (a, b) for a in stacks for b in stacks if a != b and stacks[a].config.dr.sites == stacks[b].config.dr.sites
    ]
    for reader, writer in pairs:
        for sub in (s for s in plans[writer].subsystems.values() if s.postgres is not None):
            written = rendered[writer].object("Cluster", f"{sub.name}-db", sub.namespace)["spec"]
            (archiver,) = [p for p in written["plugins"] if p.get("isWALArchiver")]
            read = rendered[reader].object("Cluster", f"{sub.name}-db", sub.namespace)["spec"]
            entry = next(e for e in read["externalClusters"] if e["name"] == written["replica"]["self"])
            assert entry["plugin"]["parameters"]["serverName"] == archiver["parameters"]["serverName"]
            read_path = _archives(rendered[reader])[(sub.namespace, entry["plugin"]["parameters"]["barmanObjectName"])]
            written_path = _archives(rendered[writer])[(sub.namespace, archiver["parameters"]["barmanObjectName"])]
            assert read_path == written_path
    if len(stacks) > 1:
        assert pairs


def test_no_two_databases_of_any_stack_archive_to_the_same_place(rendered):
    """Across every stack: each cluster archives to its own `destinationPath/serverName`, never inside another's."""
    locations = {}
    for stack, stack_run in rendered.items():
        stores = _archives(stack_run)
        for cluster in stack_run.objects("Cluster"):
            ns = cluster["metadata"]["namespace"]
            for plugin in cluster["spec"].get("plugins", []):
                if plugin.get("isWALArchiver"):
                    params = plugin["parameters"]
                    where = f"{stores[(ns, params['barmanObjectName'])].rstrip('/')}/{params['serverName']}"
                    locations[where] = [*locations.get(where, []), f"{stack}:{ns}"]
    assert all(len(v) == 1 for v in locations.values()), locations
    assert dr_rules.collision_problems([(k, v[0]) for k, v in locations.items()]) == []


def test_a_site_that_does_not_serve_holds_consumers_at_zero_and_apis_at_the_standby_size(stack_run, stack_plan):
    config = stack_plan.config
    for svc in stack_plan.services():
        if svc.consumes:
            scaled = stack_run.object("ScaledObject", svc.name, svc.subsystem)
            paused = scaled["metadata"].get("annotations", {}).get("autoscaling.keda.sh/paused-replicas")
            assert (paused == "0") == (not dr_rules.serves(config)), svc.name
            if not dr_rules.serves(config):
                assert scaled["spec"]["minReplicaCount"] == 0
        elif not dr_rules.serves(config):
            hpa = stack_run.object("HorizontalPodAutoscaler", svc.name, svc.subsystem)
            assert hpa["spec"]["minReplicas"] == config.dr.standby_api_replicas


def test_dr_alerts_watch_every_database_against_its_rpo(plan_any):
    dr = plan_any.config.dr
    groups = {g["name"]: g["rules"] for g in rule_groups(plan_any)["groups"]}
    if dr is None:
        assert "disaster-recovery" not in groups
        return
    rules = groups["disaster-recovery"]
    for sub in (s for s in plan_any.subsystems.values() if s.postgres is not None):
        rpo = dr.objectives[sub.name].rpo_seconds
        mine = {r["alert"]: r for r in rules if r["labels"]["namespace"] == sub.namespace}
        # Owned like every other alert (tests/test_observability.py: the `subsystem` label names the owner).
        assert all(r["labels"]["subsystem"] == sub.name for r in mine.values())
        assert f"> {rpo}" in mine["WalArchivingBehindRpo"]["expr"]
        assert ("StandbyReplicationBehindRpo" in mine) == (not dr_rules.is_primary(dr))


def test_each_site_reads_the_other_sites_store_at_its_declared_endpoint_and_addresses(stack_run, stack_plan):
    """The ObjectStore of every other site carries that site's endpoint, and the rendered policies let this
    site's database pods reach that site's store addresses on 443 (evaluated, not read back from the config)."""
    from infra.offline.audit import rendered_policies
    from infra.offline.reachability import Model, inventory, namespace_labels

    dr = stack_plan.config.dr
    if dr is None:
        return
    model = Model(inventory(stack_run, stack_plan), rendered_policies(stack_run), namespace_labels(stack_run))
    for sub in (s for s in stack_plan.subsystems.values() if s.postgres is not None):
        pod = model.by_id[f"{sub.namespace}/{sub.name}-db"]
        for name, site in dr.sites.items():
            if name == dr.site:
                continue
            store = stack_run.object("ObjectStore", dr_rules.member(sub.name, name), sub.namespace)["spec"]
            assert store["configuration"].get("endpointURL") == site.endpoint_url
            assert site.object_store_cidrs and all(
                model.allows_external(pod, cidr, 443, "TCP") for cidr in site.object_store_cidrs
            )


@pytest.fixture(params=STACKS)
def plan_any(request, plans):
    return plans[request.param]


# --- The config rules, on a small fixture pair ----------------------------------------------------------------

SITES = {
    "west": {
        "stack": "west",
        "region": "eu-west-1",
        "destinationPath": "s3://west-backups/wal",
        "objectStoreCidrs": ["10.1.64.0/28"],
        "endpointUrl": "https://bucket.vpce-0123456789abcdef0-west0001.s3.eu-west-1.vpce.amazonaws.com",
        "stateBackend": "s3://west-state?region=eu-west-1",
    },
    "east": {
        "stack": "east",
        "region": "eu-central-1",
        "destinationPath": "s3://east-backups/wal",
        "objectStoreCidrs": ["10.2.64.0/28"],
        "endpointUrl": "https://bucket.vpce-0fedcba9876543210-east0001.s3.eu-central-1.vpce.amazonaws.com",
        "bootstrapFrom": "west",
        "stateBackend": "s3://east-state?region=eu-central-1",
    },
}


def dr_config(site="east", primary="west", **extra) -> dict:
    return {
        "site": site,
        "primarySite": primary,
        "sites": copy.deepcopy(SITES),
        "objectives": {name: {"rpoSeconds": 300, "rtoMinutes": 30} for name in SMALL_TOPOLOGY},
        "queueContinuity": {"mode": "drain", "reason": "producers re-send until processed"},
        **extra,
    }


def small_plan(dr: dict, topology: dict | None = None):
    destination = dr["sites"][dr["site"]]["destinationPath"]
    return plan_of(
        topology or copy.deepcopy(SMALL_TOPOLOGY),
        backup={"objectStore": {"destinationPath": destination}},
        dr=dr,
    )


def refused(dr: dict, topology: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as error:
        small_plan(dr, topology)
    return [str(p) for p in error.value.problems]


def test_a_standby_derives_per_site_server_names_and_holds_consumers():
    plan = small_plan(dr_config())
    assert plan.subsystems["shop"].postgres.server_name == "shop-db-east"
    worker, api = plan.service("shop", "worker"), plan.service("shop", "api")
    assert (worker.min_replicas, worker.paused) == (0, True)
    assert (api.min_replicas, api.paused) == (1, False)
    primary = small_plan(dr_config(site="west"))
    assert primary.service("shop", "worker").min_replicas >= 1 and not primary.service("shop", "worker").paused


def test_a_minimum_of_zero_is_refused_outside_a_standby():
    topology = copy.deepcopy(SMALL_TOPOLOGY)
    topology["shop"]["services"]["worker"]["replicas"] = {"min": 0}
    with pytest.raises(ConfigError) as error:
        plan_of(topology)
    assert any("subsystems.shop.services.worker.replicas.min" in str(p) for p in error.value.problems)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        # Two sites writing into one folder: one store, and subsystem/site pairs that spell the same server name
        # (`shop` at site `w-db-e` and `shop-db-w` at site `e` both archive as `shop-db-w-db-e`).
        (
            lambda d, t: (
                d["sites"]["east"].update(destinationPath="s3://west-backups/wal"),
                d["sites"].update({"e": d["sites"].pop("east"), "w-db-e": d["sites"].pop("west")}),
                d["sites"]["e"].update(bootstrapFrom="w-db-e"),
                d.update(site="e", primarySite="w-db-e"),
                t.update({"shop-db-w": {**t.pop("audit"), "postgres": {}}}),
            ),
            "would archive to 's3://west-backups/wal/shop-db-w-db-e', inside or on shop at site w-db-e's",
        ),
        # One site's store inside the other's server folder.
        (
            lambda d, t: d["sites"]["east"].update(destinationPath="s3://west-backups/wal/shop-db-west"),
            "inside or on shop at site west",
        ),
        (lambda d, t: t["shop"]["postgres"].update(serverName="shop-db"), "subsystems.shop.postgres.serverName"),
    ],
)
def test_archive_locations_that_could_collide_are_refused(mutate, expected):
    dr, topology = dr_config(), copy.deepcopy(SMALL_TOPOLOGY)
    mutate(dr, topology)
    dr["objectives"] = {name: {"rpoSeconds": 300, "rtoMinutes": 30} for name in topology}
    problems = refused(dr, topology)
    assert any(expected in p for p in problems), problems


def test_collision_check_finds_equal_and_nested_locations():
    assert dr_rules.collision_problems([("s3://b/wal/x", "a"), ("s3://b/wal/y", "b")]) == []
    assert dr_rules.collision_problems([("s3://b/wal/x", "a"), ("s3://b/wal/x", "b")])
    assert dr_rules.collision_problems([("s3://b/wal/x", "a"), ("s3://b/wal/x/y", "b")])
    assert not dr_rules.collision_problems([("s3://b/wal/x", "a"), ("s3://b/wal/xy", "b")])


def test_the_archive_timeout_must_meet_the_rpo_without_streaming():
    dr = dr_config(archiveTimeoutSeconds=600)
    problems = refused(dr)
    assert any(
        p.startswith("dr.objectives.shop.rpoSeconds: (300) is below dr.archiveTimeoutSeconds (600)") for p in problems
    )
    # Streaming (with where to stream from) lifts the archive bound; the lag alert watches the RPO instead.
    streaming = dr_config(archiveTimeoutSeconds=600, streaming=True)
    for name, site in streaming["sites"].items():
        site.update(postgresAddresses=["10.9.0.0/28"], postgresHost=f"{{subsystem}}-db.{name}.example")
    plan = small_plan(streaming)
    assert plan.config.dr.streaming
    assert refused(dr_config(streaming=True))  # without the addresses


def test_asynchronous_replication_inside_a_site_must_meet_the_rpo():
    dr = dr_config(archiveTimeoutSeconds=600, streaming=True)
    for name, site in dr["sites"].items():
        site.update(postgresAddresses=["10.9.0.0/28"], postgresHost=f"{{subsystem}}-db.{name}.example")
    with pytest.raises(ConfigError) as error:
        plan_of(
            copy.deepcopy(SMALL_TOPOLOGY),
            backup={"objectStore": {"destinationPath": "s3://east-backups/wal"}},
            defaults={"postgres": {"synchronous": False}},
            dr=dr,
        )
    assert any("defaults.postgres.synchronous false" in str(p) for p in error.value.problems)


@pytest.mark.parametrize(
    ("dr", "expected"),
    [
        (dr_config(objectives={"shop": {"rpoSeconds": 300, "rtoMinutes": 30}}), "dr.objectives.audit: is missing"),
        (dr_config(primary="north"), "dr.primarySite: 'north' is not a key of dr.sites"),
        (
            dr_config(sites={n: {k: v for k, v in s.items() if k != "bootstrapFrom"} for n, s in SITES.items()}),
            "dr.sites: 2 sites have no bootstrapFrom (east, west)",
        ),
        # One bucket for both sites (distinct server names, so no folder collides): a region loss takes both. The
        # sites' endpoint URLs differ (each its own VPC endpoint), yet on AWS a bucket name is one bucket.
        (
            dr_config(
                sites={**copy.deepcopy(SITES), "east": {**SITES["east"], "destinationPath": "s3://west-backups/dr"}}
            ),
            "dr.sites.west.destinationPath: ('s3://west-backups/wal') is in bucket 'west-backups', which site 'east' "
            "archives to",
        ),
        # A rebuild that set the lost site's bootstrapFrom and kept the survivor's: the error says which to remove.
        (
            dr_config(sites={**copy.deepcopy(SITES), "west": {**SITES["west"], "bootstrapFrom": "east"}}),
            "dr.sites.west.bootstrapFrom: ('east') leaves no site without bootstrapFrom: exactly one is the founding "
            "primary; remove it from the primary site 'west'",
        ),
        (dr_config(switchover={"fromSite": "west", "step": "demote"}), "`demote` is the old primary's step"),
        (
            dr_config(site="east", primary="east", switchover={"fromSite": "west", "step": "promote"}),
            "dr.switchover.promotionTokens.shop: is missing",
        ),
        (
            dr_config(
                site="west",
                primary="east",
                switchover={"fromSite": "west", "step": "demote", "promotionTokens": {"shop": "A" * 20}},
            ),
            "are read only at step `promote`",
        ),
    ],
)
def test_bad_disaster_recovery_config_is_refused_naming_the_field(dr, expected):
    problems = refused(dr)
    assert any(expected in p for p in problems), problems


def _without(site: str, key: str) -> dict:
    sites = copy.deepcopy(SITES)
    del sites[site][key]
    return dr_config(sites=sites)


@pytest.mark.parametrize(
    ("dr", "expected"),
    [
        (_without("west", "objectStoreCidrs"), "dr.sites.west.objectStoreCidrs: is required"),
        # Private addresses (a VPC endpoint's) without the DNS name that leads there: S3's default endpoint is
        # public, outside them, so every read of the other site's WAL would be refused by the NetworkPolicy.
        (_without("east", "endpointUrl"), "dr.sites.east.endpointUrl: is required: objectStoreCidrs (10.2.64.0/28)"),
    ],
)
def test_a_site_without_a_way_to_its_store_from_the_other_site_is_refused(dr, expected):
    problems = refused(dr)
    assert any(expected in p for p in problems), problems


def test_a_store_reached_at_public_addresses_needs_no_endpoint_url_and_other_endpoints_tell_buckets_apart():
    sites = copy.deepcopy(SITES)
    sites["east"].pop("endpointUrl")
    sites["east"]["objectStoreCidrs"] = ["0.0.0.0/0"]  # explicit: S3's public endpoint, wherever it resolves
    assert small_plan(dr_config(sites=sites)).config.dr.sites["east"].endpoint_url is None
    # S3-compatible stores (MinIO) at two endpoints are two buckets, whatever their names.
    for name, host in (("west", "minio.west.example"), ("east", "minio.east.example")):
        sites[name].update(endpointUrl=f"https://{host}", destinationPath="s3://backups/wal")
    sites["east"]["destinationPath"] = "s3://backups/east"
    assert small_plan(dr_config(sites=sites)).config.dr is not None


def test_database_pods_reach_the_other_sites_store_and_nothing_else_does():
    """Egress 443 to the other site's store addresses, for the database pods only; its ObjectStore is read at the
    endpoint that resolves there. Own store addresses narrowed, so neither covers the other."""
    from infra.network import declared_edges, namespace_policies, pod_groups
    from infra.offline.reachability import Model, Pod
    from infra.platform import topology_args

    plan = plan_of(
        copy.deepcopy(SMALL_TOPOLOGY),
        network={"apiServerCidrs": ["10.0.0.1/32"], "nodeCidrs": ["10.0.16.0/20"], "objectStoreCidrs": ["10.2.0.0/28"]},
        backup={"objectStore": {"destinationPath": "s3://east-backups/wal"}},
        dr=dr_config(),
    )
    groups = pod_groups(plan)
    policies = [
        {"metadata": {"namespace": p.namespace, "name": p.name}, "spec": p.spec}
        for p in namespace_policies(plan, groups, declared_edges(plan, groups))
    ]
    pods = [Pod(g.id, g.namespace, g.labels) for g in groups.by_id.values()]
    model = Model(pods, policies, {})
    managed = {p["metadata"]["namespace"] for p in policies}
    to_west = {(src, port) for src, dst, port, _ in model.external_edges() if dst == "external 10.1.64.0/28"}
    databases = {g.id for g in groups.databases.values()}
    assert databases and {(s, p) for s, p in to_west if s.split("/")[0] in managed} == {(d, 443) for d in databases}
    # Its own store's addresses are not the other site's: without the site's entry the bucket is unreachable.
    assert not model.allows_external(model.by_id[next(iter(databases))], "10.1.64.0/28", 80, "TCP")
    west = next(m for m in topology_args(plan, plan.subsystems["shop"]).members if m.name == "shop-db-west")
    assert west.endpoint_url == SITES["west"]["endpointUrl"]


def test_promotion_carries_each_databases_token():
    token = "eyJzeXN0ZW1JRCI6IjEyMyJ9" * 2
    plan = small_plan(
        dr_config(
            primary="east", switchover={"fromSite": "west", "step": "promote", "promotionTokens": {"shop": token}}
        )
    )
    from infra.platform import topology_args

    args = topology_args(plan, plan.subsystems["shop"])
    assert (args.primary, args.self_name, args.promotion_token) == ("shop-db-east", "shop-db-east", token)
    # The applications stay with the old primary until the `consumers` step.
    assert plan.service("shop", "worker").paused


# --- Files: fencing, the pair's agreement, the secrets provider ----------------------------------------------


def _set_dr(project, stack: str, **changes) -> None:
    data = project.load(f"Pulumi.{stack}.yaml")
    data["config"][KEY].update(changes)
    project.save(f"Pulumi.{stack}.yaml", data)


def _dr_of(project, stack: str) -> dict:
    return project.load(f"Pulumi.{stack}.yaml")["config"][KEY]


def _pair(plans) -> tuple[str, str]:
    """(the primary site's stack, the standby's) of a pair among the real stacks."""
    stacks = _dr_stacks(plans)
    if len(stacks) < 2:
        pytest.skip("no pair of disaster-recovery stacks")
    primary = next(s for s, p in stacks.items() if dr_rules.is_primary(p.config.dr))
    standby = next(s for s, p in stacks.items() if s != primary)
    return primary, standby


def test_after_a_failover_the_old_primary_is_fenced_until_rebuilt_as_a_replica(project, plans):
    primary, standby = _pair(plans)
    old, new = plans[primary].config.dr.site, plans[standby].config.dr.site
    # Failover: the standby's stack alone names itself primary and records the lost site.
    _set_dr(project, standby, primarySite=new, fencedSites={old: {"generation": 1, "reason": "INC-1 region lost"}})
    plan = plan_for_stack(standby, project.root)
    assert dr_rules.is_primary(plan.config.dr)
    with pytest.raises(ConfigError) as error:
        plan_for_stack(primary, project.root)
    assert any(f"this site was fenced by a failover (Pulumi.{standby}.yaml" in str(p) for p in error.value.problems)
    assert_render_refused(project, primary, "its stack refuses to run until it is rebuilt as a replica")
    # Rebuilt: a new generation, born from the new primary, which it follows - in both files, one change.
    sites = copy.deepcopy(_dr_of(project, standby)["sites"])
    sites[old].update(generation=2, bootstrapFrom=new)
    sites[new].pop("bootstrapFrom", None)
    for stack in (primary, standby):
        _set_dr(project, stack, sites=sites, primarySite=new)
    rebuilt = plan_for_stack(primary, project.root)
    assert not dr_rules.is_primary(rebuilt.config.dr)
    assert next(iter(rebuilt.subsystems.values())).postgres is None or any(
        s.postgres.server_name.endswith("-g2") for s in rebuilt.subsystems.values() if s.postgres
    )


def test_the_pair_must_agree_on_the_primary_outside_a_switchover_or_failover(project, plans):
    _, standby = _pair(plans)
    _set_dr(project, standby, primarySite=plans[standby].config.dr.site)
    with pytest.raises(ConfigError) as error:
        plan_for_stack(standby, project.root)
    assert any("two primaries would diverge" in str(p) for p in error.value.problems)


def test_a_secrets_provider_in_another_region_is_refused(project, plans):
    primary, standby = _pair(plans)
    data = project.load(f"Pulumi.{standby}.yaml")
    other = plans[primary].config.dr.sites[plans[primary].config.dr.site].region
    data["secretsprovider"] = f"awskms://alias/k?region={other}"
    project.save(f"Pulumi.{standby}.yaml", data)
    with pytest.raises(ConfigError) as error:
        plan_for_stack(standby, project.root)
    assert any(f"is a key in {other!r}" in str(p) for p in error.value.problems)


def test_every_dr_stack_keeps_state_and_secrets_in_its_own_region(plans):
    for stack, plan in _dr_stacks(plans).items():
        dr = plan.config.dr
        region = dr.sites[dr.site].region
        provider = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())["secretsprovider"]
        assert provider.startswith("awskms://") and provider.endswith(f"region={region}")
        assert dr.sites[dr.site].state_backend.endswith(f"region={region}")
        assert all(s.region != region for n, s in dr.sites.items() if n != dr.site)


# --- Switchover in the offline diff ----------------------------------------------------------------------------


def _token_for_every_database(plan) -> dict[str, str]:
    return {s.name: "eyJ0b2tlbiI6InRlc3QifQ==" for s in plan.subsystems.values() if s.postgres is not None}


def test_a_switchover_shows_in_the_diff_as_the_expected_demotion_and_promotion_only(project, plans, rendered):
    primary, standby = _pair(plans)
    old, new = plans[primary].config.dr.site, plans[standby].config.dr.site
    steps = [
        # 1. Demote, on the old primary's stack.
        (primary, {"primarySite": new, "switchover": {"fromSite": old, "step": "demote"}}),
        # 2. Promote with the demotion tokens, on the new primary's stack.
        (
            standby,
            {
                "primarySite": new,
                "switchover": {
                    "fromSite": old,
                    "step": "promote",
                    "promotionTokens": _token_for_every_database(plans[standby]),
                },
            },
        ),
        # 3. Consumers move, on both.
        (standby, {"switchover": {"fromSite": old, "step": "consumers"}}),
        (primary, {"switchover": {"fromSite": old, "step": "consumers"}}),
    ]
    before = {stack: (resources(rendered[stack]), dr_state(stack, PROJECT_ROOT)) for stack in (primary, standby)}
    seen = {}
    for stack, change in steps:
        _set_dr(project, stack, **change)
        head_state = dr_state(stack, project.root)
        head = resources(project.render(stack))
        base, base_state = before[stack]
        context = switchover_context(base_state, head_state)
        changes = diff(base, head, context)
        assert changes, f"{stack}: step {change} changed nothing"
        assert [c.label for c in changes if c.expected is None] == [], report(stack, "main", changes)
        assert not any(c.dangers for c in changes)
        assert ":warning: Danger" not in report(stack, "main", changes)
        assert f"#### Expected: switchover from site {old}" in report(stack, "main", changes)
        seen[(stack, head_state["switchover"]["step"])] = {
            (c.label.split()[0], f.path) for c in changes for f in c.fields
        }
        before[stack] = (head, head_state)
    assert ("Cluster", "spec.replica.primary") in seen[(primary, "demote")]
    assert ("Cluster", "spec.replica.promotionToken") in seen[(standby, "promote")]
    assert any(kind == "HorizontalPodAutoscaler" for kind, _ in seen[(standby, "consumers")])


def test_a_role_change_without_a_declared_switchover_is_danger(plans, rendered):
    primary, _ = _pair(plans)
    head, cluster = one_edited(resources(rendered[primary]), lambda r: r["inputs"].get("kind") == "Cluster")
    cluster["inputs"]["spec"]["replica"]["primary"] = "elsewhere"
    changes = diff(resources(rendered[primary]), head, None)
    assert any("moves the primary role between sites" in d for c in changes for d in c.dangers)
    # Declared, the same change is the expected step and not danger.
    declared = diff(resources(rendered[primary]), head, "switchover from site x, step `demote`")
    assert not any(c.dangers for c in declared) and all(c.expected for c in declared)


# --- Alerts (promtool) ------------------------------------------------------------------------------------------


def test_promtool_fires_dr_alerts_beyond_the_rpo_only(tmp_path):
    plan = small_plan(dr_config())  # a standby: both families
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(plan), sort_keys=False))
    db = 'namespace="shop", pod="shop-db-1"'

    def case(series: list[tuple[str, str]], alert: str, at: str, firing: bool) -> dict:
        labels = {"alertname": alert, "namespace": "shop", "subsystem": "shop", "severity": "page"}
        expected = [{"exp_labels": labels}] if firing else []
        for item in expected:
            rule = next(r for g in rule_groups(plan)["groups"] for r in g["rules"] if r.get("alert") == alert)
            item["exp_annotations"] = rule["annotations"]
        return {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
        }

    archived = f"cnpg_pg_stat_archiver_seconds_since_last_archival{{{db}}}"
    ready = f'cnpg_collector_pg_wal_archive_status{{{db}, value="ready"}}'
    lag = f"cnpg_pg_replication_lag{{{db}}}"
    tests = [
        # WAL waiting and nothing archived for 10 minutes (RPO 300s): fires.
        case([(archived, "0+60x20"), (ready, "3x20")], "WalArchivingBehindRpo", "10m", True),
        # An idle database (nothing waiting) is not behind, however long since the last archive.
        case([(archived, "0+60x20"), (ready, "0x20")], "WalArchivingBehindRpo", "10m", False),
        # Archiving every minute with WAL always waiting: within the RPO.
        case([(archived, "30x20"), (ready, "1x20")], "WalArchivingBehindRpo", "10m", False),
        # The standby 10 minutes behind for longer than the RPO: fires; 1 minute behind: silent.
        case([(lag, "600x20")], "StandbyReplicationBehindRpo", "15m", True),
        case([(lag, "60x20")], "StandbyReplicationBehindRpo", "15m", False),
    ]
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False)
    )
    result = run(PROMTOOL, "test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # The harness is not blind: expecting silence where it fires fails.
    tests[0]["alert_rule_test"][0]["exp_alerts"] = []
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests[:1]}))
    assert run(PROMTOOL, "test", "rules", str(tmp_path / "tests.yaml")).returncode != 0


# --- README ----------------------------------------------------------------------------------------------------


def _readme_objectives() -> dict[str, dict[str, tuple[int, int]]]:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## Disaster recovery", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \| (\d+) s \| (\d+) min \|", section, re.MULTILINE)
    table: dict[str, dict[str, tuple[int, int]]] = {}
    for stack, sub, rpo, rto in rows:
        table.setdefault(stack, {})[sub] = (int(rpo), int(rto))
    return table


def test_the_readme_table_states_every_dr_stacks_objectives():
    """The README documents this project's stacks (not a changed copy's): read them from the project itself."""
    plans = {stack: plan_for_stack(stack) for stack in stack_names(PROJECT_ROOT)}
    expected = {
        stack: {sub: (o.rpo_seconds, o.rto_minutes) for sub, o in plan.config.dr.objectives.items()}
        for stack, plan in _dr_stacks(plans).items()
    }
    assert expected and _readme_objectives() == expected


# --- Optional TLS streaming ---------------------------------------------------------------------------------------


def test_tls_streaming_adds_the_connection_its_certificates_and_exactly_its_network_paths(project, plans):
    primary, standby = _pair(plans)
    sites = copy.deepcopy(_dr_of(project, standby)["sites"])
    for n, (name, site) in enumerate(sorted(sites.items())):
        site.update(postgresAddresses=[f"10.99.{n}.0/28"], postgresHost=f"{{subsystem}}-db.{name}.db.example")
    for stack in (primary, standby):
        _set_dr(project, stack, sites=sites, streaming=True)
    run = project.render(standby)
    plan = plan_for_stack(standby, project.root)
    dr = plan.config.dr
    for sub in (s for s in plan.subsystems.values() if s.postgres is not None):
        spec = run.object("Cluster", f"{sub.name}-db", sub.namespace)["spec"]
        source = next(e for e in spec["externalClusters"] if e["name"] == spec["replica"]["source"])
        assert source["connectionParameters"]["sslmode"] == "verify-full"
        assert source["connectionParameters"]["host"] == f"{sub.name}-db.{dr.primary_site}.db.example"
        assert source["sslRootCert"] == {"name": f"{source['name']}-ca", "key": "ca.crt"}
        own = next(e for e in spec["externalClusters"] if e["name"] == spec["replica"]["self"])
        assert "connectionParameters" not in own
        assert spec["certificates"]["serverAltDNSNames"] == [f"{sub.name}-db.{dr.site}.db.example"]
    # Reachability still equals what is declared, and the declared includes the other site's database address.
    from infra.offline.audit import audit

    result = audit(run, plan)
    assert not result.missing and not result.extra, (result.missing, result.extra)
    peer = next(s for n, s in dr.sites.items() if n != dr.site)
    assert any(c[1].startswith("external:") and peer.postgres_addresses[0] in c[1] for c in result.declared) or any(
        peer.postgres_addresses[0] in str(c) for c in result.declared
    )


def test_the_diff_command_reads_the_declared_step_from_both_renders(git_project):  # noqa: F811 (the fixture)
    """End to end, as CI runs it: the base ref's render writes its dr-state.json, the working tree declares the
    demotion; the diff exits 0 (no danger) and lists the step as expected."""
    stacks = {s: plan_for_stack(s, git_project) for s in stack_names(git_project)}
    primary, standby = _pair(stacks)
    old, new = stacks[primary].config.dr.site, stacks[standby].config.dr.site
    path = git_project / f"Pulumi.{primary}.yaml"
    data = yaml.safe_load(path.read_text())
    data["config"][KEY].update(primarySite=new, switchover={"fromSite": old, "step": "demote"})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_diff(git_project, primary)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"#### Expected: switchover from site {old}, step `demote`" in result.stdout
    assert "Danger" not in result.stdout


def test_the_declared_step_is_read_from_either_side():
    steady = {"site": "b", "primarySite": "a", "switchover": None, "fencedSites": []}
    demoting = {**steady, "primarySite": "b", "switchover": {"fromSite": "a", "step": "demote"}}
    failed_over = {**steady, "primarySite": "b", "fencedSites": ["a"]}
    assert switchover_context(steady, steady) is None
    assert switchover_context(steady, demoting) == "switchover from site a, step `demote`"
    # The change that removes the block is the switchover's last one.
    assert switchover_context(demoting, {**steady, "primarySite": "b"}).startswith("ending switchover")
    assert switchover_context(steady, failed_over).startswith("failover to site b (site a fenced")
    # A fence alone, without the primary moving, explains no role change.
    assert switchover_context(steady, {**steady, "fencedSites": ["a"]}) is None
    assert switchover_context(None, None) is None
