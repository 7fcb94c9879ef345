"""Disaster recovery: one stack as one site of a primary/standby pair (config `dr`, README "Disaster recovery").

Pure functions from the config to what a site runs - which site's databases are primary (CloudNativePG's
distributed topology, `replica.primary/source/self`), where every database archives (never over another's
history), which site serves (runs its consumers) - and the rules that refuse a config before anything is
registered: archive locations that could collide, an archive timeout or replication mode that cannot meet a
subsystem's RPO, a switchover step on the wrong stack, and a site fenced by a failover that still wants to act.

`site_file_problems` is the one rule that reads other files: a failover is written on the surviving site's stack
alone (its primarySite and `fencedSites`), so the old primary's stack learns it is fenced by reading the other
sites' stack files from the same checkout; and `secretsprovider` is a top-level key of the stack file itself.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from infra.config import DisasterRecovery, DrSite, PlatformConfig
from infra.errors import ConfigProblem

# Upstream facts (../shared/DR-FACTS.md §1-2, read in cloudnative-pg v1.30.0 docs/src/replica_cluster.md
# "Distributed Topology" and plugin-barman-cloud v0.14.0): every Cluster of the topology lists every member in
# `externalClusters` (plugin entry: barmanObjectName + serverName - an omitted serverName defaults to the *current*
# Cluster's name, config.go L157-175, so it is always written); `replica.primary`/`source`/`self` name entries.


def member(subsystem: str, site: str) -> str:
    """The externalClusters entry (and ObjectStore) of one subsystem's database at one site."""
    return f"{subsystem}-db-{site}"


def server_name(subsystem: str, site: str, generation: int) -> str:
    """Folder of one site's history of a database in its object store; a rebuilt site gets a new one."""
    base = member(subsystem, site)
    return base if generation == 1 else f"{base}-g{generation}"


def bucket_of(destination_path: str) -> str:
    """`s3://bucket/prefix` -> `bucket`."""
    return destination_path.removeprefix("s3://").partition("/")[0]


def is_primary(dr: DisasterRecovery) -> bool:
    return dr.primary_site == dr.site


def serving_site(dr: DisasterRecovery) -> str:
    """The site whose applications run at full size: the primary, except during a switchover's first two steps
    (demote, promote), when the old primary keeps them until the `consumers` step moves them."""
    if dr.switchover is not None and dr.switchover.step in ("demote", "promote"):
        return dr.switchover.from_site
    return dr.primary_site


def serves(config: PlatformConfig) -> bool:
    """Whether this stack runs its applications at their configured size (always, without `dr`)."""
    return config.dr is None or serving_site(config.dr) == config.dr.site


def peer_site(dr: DisasterRecovery) -> str:
    return next(s for s in sorted(dr.sites) if s != dr.site)


def archive_locations(config: PlatformConfig, databases: list[str]) -> list[tuple[str, str]]:
    """Every place a database of the pair archives to (`destinationPath/serverName`), with who archives there."""
    dr = config.dr
    return [
        (f"{site.destination_path.rstrip('/')}/{server_name(sub, name, site.generation)}", f"{sub} at site {name}")
        for name, site in sorted(dr.sites.items())
        for sub in databases
    ]


def collision_problems(locations: list[tuple[str, str]]) -> list[ConfigProblem]:
    """Two histories in one folder, or one inside another's: a cluster would archive over, or be refused by the
    plugin's empty-archive check on, another's WAL (cloudnative-pg v1.30.0 docs/src/recovery.md L612-638)."""
    problems = []
    ordered = sorted(locations)
    for i, (here, who) in enumerate(ordered):
        for there, other in ordered[i + 1 :]:
            if there == here or there.startswith(here + "/"):
                problems.append(
                    ConfigProblem(
                        "dr.sites",
                        f"{other} would archive to {there!r}, inside or on {who}'s {here!r}: give the sites "
                        "distinct destinationPath prefixes, or subsystems and sites names that do not spell "
                        "each other's server names",
                    )
                )
    return problems


def _is_aws(endpoint_url: str | None) -> bool:
    if endpoint_url is None:
        return True
    host = urlsplit(endpoint_url).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _private(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).is_private
    except ValueError:
        return False  # not an address block; the schema's pattern admits 999.0.0.0/8


def store_of(site: DrSite) -> tuple[str, str | None]:
    """What identifies a site's bucket: on AWS its name alone, whichever endpoint reaches it (bucket names are
    unique across accounts and regions of a partition, Amazon S3 User Guide "General purpose bucket naming
    rules"; a VPC endpoint's DNS name is only a way in); elsewhere (MinIO, Ceph) the name at that endpoint."""
    return bucket_of(site.destination_path), None if _is_aws(site.endpoint_url) else site.endpoint_url


def shared_bucket_problems(dr: DisasterRecovery) -> list[ConfigProblem]:
    """Each site archives to its own bucket: a bucket lives in one region, so one bucket for both sites is lost
    with that region together with the history the survivor needs, and the survivor has nowhere to archive after
    a failover. Distinct server names keep the folders apart in one bucket (`collision_problems`), not the sites."""
    problems = []
    buckets: dict[tuple[str, str | None], str] = {}
    for name, site in sorted(dr.sites.items()):
        bucket = store_of(site)
        if bucket in buckets:
            problems.append(
                ConfigProblem(
                    f"dr.sites.{name}.destinationPath",
                    f"({site.destination_path!r}) is in bucket {bucket[0]!r}, which site {buckets[bucket]!r} "
                    "archives to: each site needs its own bucket in its own region, or a region loss takes both "
                    "sites' archives",
                )
            )
        buckets.setdefault(bucket, name)
    return problems


def object_store_reach_problems(dr: DisasterRecovery) -> list[ConfigProblem]:
    """The other site reads each site's store through `objectStoreCidrs` at `endpointUrl`. Without an endpoint URL
    the Barman Cloud plugin calls AWS S3's regional endpoint, whose addresses are public: private objectStoreCidrs
    alone (a VPC endpoint's interface addresses) would leave every read refused by the NetworkPolicy. A VPC
    endpoint's addresses are reached by its DNS names, not by S3's (AWS PrivateLink for Amazon S3, "Accessing
    Amazon S3 interface endpoints"; a gateway endpoint serves only its own region and no peered VPC: Amazon VPC
    "Gateway endpoints for Amazon S3")."""
    problems = []
    for name, site in sorted(dr.sites.items()):
        private = all(_private(c) for c in site.object_store_cidrs)
        if site.endpoint_url is None and private:
            problems.append(
                ConfigProblem(
                    f"dr.sites.{name}.endpointUrl",
                    f"is required: objectStoreCidrs ({', '.join(site.object_store_cidrs)}) are private addresses, "
                    "but without an endpoint URL the other site's databases would call AWS S3's public regional "
                    "endpoint, outside them; set it to the DNS name that resolves there (an S3 interface endpoint's "
                    "`https://bucket.vpce-<id>.s3.<region>.vpce.amazonaws.com`)",
                )
            )
    return problems


def rpo_problems(config: PlatformConfig, databases: list[str]) -> list[ConfigProblem]:
    """Without streaming, a standby is fed only by archived WAL: a segment is archived at the latest after
    archive_timeout (cloudnative-pg v1.30.0 pkg/postgres/configuration.go, default 5min), so a site loss may cost
    that much. With streaming, replication to the other site is asynchronous: the lag alert watches the RPO."""
    dr = config.dr
    problems = []
    for sub in databases:
        objective = dr.objectives.get(sub)
        if objective is None or dr.streaming:
            continue
        if dr.archive_timeout_seconds > objective.rpo_seconds:
            problems.append(
                ConfigProblem(
                    f"dr.objectives.{sub}.rpoSeconds",
                    f"({objective.rpo_seconds}) is below dr.archiveTimeoutSeconds ({dr.archive_timeout_seconds}): "
                    "without streaming the standby receives WAL only when a segment is archived, so a site loss "
                    "can cost up to the archive timeout; lower archiveTimeoutSeconds, raise the RPO, or set "
                    "dr.streaming: true",
                )
            )
    if not config.defaults.postgres.synchronous:
        for sub in databases:
            objective = dr.objectives.get(sub)
            if objective is not None and dr.archive_timeout_seconds > objective.rpo_seconds:
                problems.append(
                    ConfigProblem(
                        f"dr.objectives.{sub}.rpoSeconds",
                        f"({objective.rpo_seconds}) cannot be met with defaults.postgres.synchronous false: a "
                        "failover inside the site may lose what no standby confirmed and no archive holds (up to "
                        f"archiveTimeoutSeconds, {dr.archive_timeout_seconds})",
                    )
                )
    return problems


def dr_problems(config: PlatformConfig, databases: list[str]) -> list[ConfigProblem]:
    """Everything about `dr` that one stack's config can tell (the other sites' files: `site_file_problems`)."""
    dr = config.dr
    if dr is None:
        return []
    problems = []
    for key, value in (("site", dr.site), ("primarySite", dr.primary_site)):
        if value not in dr.sites:
            problems.append(ConfigProblem(f"dr.{key}", f"{value!r} is not a key of dr.sites ({', '.join(dr.sites)})"))
    for name, site in dr.sites.items():
        if site.bootstrap_from is not None and (site.bootstrap_from == name or site.bootstrap_from not in dr.sites):
            problems.append(
                ConfigProblem(f"dr.sites.{name}.bootstrapFrom", f"{site.bootstrap_from!r} must name the other site")
            )
    # One founding site: a cluster created as a replica must bootstrap from a backup or a base backup
    # (cloudnative-pg v1.30.0 internal/webhook/v1/cluster_webhook.go validateReplicaMode, at creation only).
    founders = sorted(n for n, s in dr.sites.items() if s.bootstrap_from is None)
    if len(founders) > 1:
        problems.append(
            ConfigProblem(
                "dr.sites",
                f"{len(founders)} sites have no bootstrapFrom ({', '.join(founders)}): exactly one site is created "
                "empty (the founding primary); the other is born a replica, restored from its store",
            )
        )
    elif dr.primary_site in dr.sites and not founders:
        # Typically the rebuild after a failover, with the lost site's bootstrapFrom set and the survivor's kept.
        # Dropping it from a live Cluster is accepted: the webhook checks no bootstrap change on update
        # (cluster_webhook.go validateClusterChanges L232-242; validateReplicaMode's check is at creation only).
        problems.append(
            ConfigProblem(
                f"dr.sites.{dr.primary_site}.bootstrapFrom",
                f"({dr.sites[dr.primary_site].bootstrap_from!r}) leaves no site without bootstrapFrom: exactly one "
                f"is the founding primary; remove it from the primary site {dr.primary_site!r} (its clusters exist, "
                "and CloudNativePG reads the bootstrap only when a cluster is created)",
            )
        )
    regions = [s.region for s in dr.sites.values()]
    if len(set(regions)) != len(regions):
        problems.append(
            ConfigProblem("dr.sites", f"sites share a region ({', '.join(regions)}): a region loss takes both")
        )
    for name, site in dr.sites.items():
        backend_region = site.state_backend.rpartition("region=")[2]
        if backend_region != site.region:
            problems.append(
                ConfigProblem(
                    f"dr.sites.{name}.stateBackend",
                    f"is in {backend_region!r}, not the site's region {site.region!r}: the site could not be "
                    "deployed while that region is down",
                )
            )
    if problems:
        return problems  # the rest reads sites by these keys

    own = dr.sites[dr.site]
    if config.backup is None:
        if databases:
            problems.append(ConfigProblem("backup", "is required with dr: the standby replicates from object stores"))
    elif config.backup.object_store.destination_path.rstrip("/") != own.destination_path.rstrip("/"):
        problems.append(
            ConfigProblem(
                "backup.objectStore.destinationPath",
                f"({config.backup.object_store.destination_path!r}) must equal dr.sites.{dr.site}.destinationPath "
                f"({own.destination_path!r}): the other site reads this site's WAL there",
            )
        )
    for sub in databases:
        pg = config.subsystems[sub].postgres
        if pg.server_name is not None:
            problems.append(
                ConfigProblem(
                    f"subsystems.{sub}.postgres.serverName",
                    f"({pg.server_name!r}) is set, but the topology is shared by every site of dr.sites: with dr "
                    "the server name is derived per site and generation (`<subsystem>-db-<site>`); remove it",
                )
            )
        if pg.recovery is not None:
            problems.append(
                ConfigProblem(
                    f"subsystems.{sub}.postgres.recovery",
                    "is set, but with dr a site's databases bootstrap from the other site "
                    "(dr.sites.<site>.bootstrapFrom); restore into a stack without dr",
                )
            )
    problems += collision_problems(archive_locations(config, databases))
    problems += shared_bucket_problems(dr)
    problems += object_store_reach_problems(dr)

    for sub in sorted(set(config.subsystems) - set(dr.objectives)):
        problems.append(ConfigProblem(f"dr.objectives.{sub}", "is missing: every subsystem states its RTO and RPO"))
    for sub in sorted(set(dr.objectives) - set(config.subsystems)):
        problems.append(ConfigProblem(f"dr.objectives.{sub}", f"{sub!r} is not a subsystem"))
    problems += rpo_problems(config, databases)

    if dr.streaming:
        for name, site in sorted(dr.sites.items()):
            for key, value in (("postgresAddresses", site.postgres_addresses), ("postgresHost", site.postgres_host)):
                if not value:
                    problems.append(
                        ConfigProblem(
                            f"dr.sites.{name}.{key}",
                            "is required with dr.streaming: the other site streams WAL from there",
                        )
                    )
    problems += switchover_problems(dr, databases)
    problems += fence_problems(dr, dr.fenced_sites, "dr.fencedSites")
    return problems


def switchover_problems(dr: DisasterRecovery, databases: list[str]) -> list[ConfigProblem]:
    sw = dr.switchover
    if sw is None:
        return []
    problems = []
    if sw.from_site not in dr.sites:
        return [ConfigProblem("dr.switchover.fromSite", f"{sw.from_site!r} is not a key of dr.sites")]
    if sw.from_site == dr.primary_site:
        problems.append(
            ConfigProblem(
                "dr.switchover.fromSite",
                f"({sw.from_site!r}) is still dr.primarySite: a switchover starts by naming the new primary site",
            )
        )
    if sw.step == "demote" and dr.site != sw.from_site:
        problems.append(
            ConfigProblem(
                "dr.switchover.step",
                f"`demote` is the old primary's step (site {sw.from_site!r}); this stack is site {dr.site!r}: it "
                "promotes, after the demotion tokens are read (README: Switchover)",
            )
        )
    if sw.step == "promote":
        if dr.site != dr.primary_site:
            problems.append(
                ConfigProblem("dr.switchover.step", f"`promote` is the new primary's step (site {dr.primary_site!r})")
            )
        for sub in databases:
            if sub not in sw.promotion_tokens:
                problems.append(
                    ConfigProblem(
                        f"dr.switchover.promotionTokens.{sub}",
                        "is missing: promoting without the old primary's demotion token is a failover (it may lose "
                        f"data and the old primary must be rebuilt); read it with `kubectl get cluster {sub}-db "
                        f"-n {sub} -o jsonpath='{{.status.demotionToken}}'` at site {sw.from_site!r}",
                    )
                )
    elif sw.promotion_tokens:
        problems.append(
            ConfigProblem(
                "dr.switchover.promotionTokens", f"are read only at step `promote`, not {sw.step!r}: remove them"
            )
        )
    for sub in sorted(set(sw.promotion_tokens) - set(databases)):
        problems.append(ConfigProblem(f"dr.switchover.promotionTokens.{sub}", f"{sub!r} has no database"))
    return problems


def fence_problems(dr: DisasterRecovery, fenced: dict, where: str) -> list[ConfigProblem]:
    """A site whose databases were lost in a failover may not act - as primary, or as a replica on the old
    volumes, whose timeline diverged - until it is rebuilt: a higher generation (new clusters, new server names),
    bootstrapped from the other site, with the other site as primary."""
    problems = []
    for name, fence in sorted(fenced.items()):
        if name not in dr.sites:
            problems.append(ConfigProblem(f"{where}.{name}", f"{name!r} is not a key of dr.sites"))
            continue
        site = dr.sites[name]
        rebuilt = site.generation > fence.generation and site.bootstrap_from not in (None, name)
        if name == dr.primary_site and not rebuilt:
            problems.append(
                ConfigProblem(
                    "dr.primarySite",
                    f"({name!r}) was fenced by a failover ({where}.{name}: {fence.reason}); it may not be primary "
                    "until it is rebuilt as a replica",
                )
            )
        if name == dr.site and not rebuilt:
            other = next(s for s in dr.sites if s != name)
            problems.append(
                ConfigProblem(
                    f"dr.sites.{name}",
                    f"this site was fenced by a failover ({where}.{name}: generation {fence.generation}, "
                    f"{fence.reason}): its stack refuses to run until it is rebuilt as a replica - set "
                    f"dr.primarySite: {other}, dr.sites.{name}.generation: {fence.generation + 1}, "
                    f"dr.sites.{name}.bootstrapFrom: {other}, and delete the old clusters and their volumes "
                    "(README: Failover, step 5)",
                )
            )
    return problems


SECRETS_PROVIDER_REGION = re.compile(r"[?&]region=([a-z0-9-]+)")


def site_file_problems(
    config: PlatformConfig,
    stack: str,
    project_dir: Path,
    read_dr: Callable[[str], DisasterRecovery | None],
    secrets_provider: object,
) -> list[ConfigProblem]:
    """The rules that need files beside this stack's config: this stack is the site it says it is, its secrets
    provider (`secretsprovider` of its stack file, as read) is in its own region, and no other site's stack fenced
    it or disagrees about the pair."""
    dr = config.dr
    if dr is None or dr.site not in dr.sites:
        return []
    own = dr.sites[dr.site]
    path = f"Pulumi.{stack}.yaml"
    problems = []
    if own.stack != stack:
        problems.append(
            ConfigProblem(f"{path}: dr.sites.{dr.site}.stack", f"({own.stack!r}) must name this stack ({stack!r})")
        )
    provider = secrets_provider
    match = SECRETS_PROVIDER_REGION.search(provider) if isinstance(provider, str) else None
    if not isinstance(provider, str) or not provider.startswith("awskms://") or match is None:
        problems.append(
            ConfigProblem(
                f"{path}: secretsprovider",
                f"({provider!r}) must be an awskms:// key with `?region=` in the site's region ({own.region}): the "
                "standby must decrypt its secrets while the other region is down",
            )
        )
    elif match.group(1) != own.region:
        problems.append(
            ConfigProblem(
                f"{path}: secretsprovider",
                f"is a key in {match.group(1)!r}, not the site's region {own.region!r}: the stack could not be "
                "deployed while that region is down",
            )
        )
    for name, site in sorted(dr.sites.items()):
        if name == dr.site:
            continue
        peer_file = f"Pulumi.{site.stack}.yaml"
        if not (project_dir / peer_file).is_file():
            problems.append(ConfigProblem(f"{path}: dr.sites.{name}.stack", f"has no {peer_file} in the project"))
            continue
        peer = read_dr(site.stack)
        if peer is None:
            problems.append(ConfigProblem(f"{peer_file}: dr", f"is not set, but {path} names it as site {name!r}"))
            continue
        if peer.sites != dr.sites:
            problems.append(
                ConfigProblem(
                    f"{path}: dr.sites",
                    f"differs from {peer_file}'s: both sites' stacks describe the same pair (change them together)",
                )
            )
        problems += [
            ConfigProblem(f"{path}: {p.path}", p.message)
            for p in fence_problems(dr, peer.fenced_sites, f"{peer_file} dr.fencedSites")
        ]
        fenced = set(dr.fenced_sites) | set(peer.fenced_sites)
        switching = dr.switchover is not None or peer.switchover is not None
        if (
            peer.primary_site != dr.primary_site
            and not switching
            and not ({peer.primary_site, dr.primary_site} & fenced)
        ):
            problems.append(
                ConfigProblem(
                    f"{path}: dr.primarySite",
                    f"({dr.primary_site!r}) differs from {peer_file}'s ({peer.primary_site!r}) with no switchover "
                    "in progress and no failover recorded (dr.fencedSites): two primaries would diverge",
                )
            )
    return problems
