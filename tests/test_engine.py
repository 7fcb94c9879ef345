"""What a real `pulumi preview` / `pulumi up` does with this program (issue 12), checked under mocks.

Engine and provider behaviour is read in the upstream sources named beside each test, never assumed:
pulumi-kubernetes (provider/pkg/...) and pulumi (pkg/..., sdk/...) as fetched on 2026-07 (pulumi-kubernetes
4.34.x, pulumi 3.27x).
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pulumi
import pytest
import yaml
from pulumi_kubernetes import _utilities

from components.kube import SECRET_FIELDS, type_token
from components.readiness import WAIT_FOR, wait_for
from components.release_manifest import SOURCE_ANNOTATION
from infra.offline import caches
from infra.offline.diff import diff
from infra.offline.mocks import SECRET_MARKER, ProgramFailed, ProgramRun, run_program
from infra.offline.render import resources
from infra.offline.safety import stateful_removals
from infra.program import BUILD_ON_PREVIEW, PROVIDER_NAME, run
from infra.stack_config import PROJECT_ROOT, read_stack_files
from tests.cli import run_cli
from tests.conftest import one_edited

PROVIDER_TYPE = "pulumi:providers:kubernetes"
CLUSTER = {"context": "staging-admin", "identifier": "settlement-staging"}


def providers(run: ProgramRun):
    return run.of_type(PROVIDER_TYPE)


# --- 1. One explicit provider, pinned to the stack's cluster ---------------------------------------------------


def test_every_kubernetes_resource_of_every_stack_names_the_one_explicit_provider(stack_run):
    """Every custom resource of the kubernetes package - objects, Helm releases, the Helm v4 chart - is served
    by the stack's own provider, never the default one (which follows the current kubeconfig context)."""
    [provider] = providers(stack_run)
    assert provider.name == PROVIDER_NAME
    reference = f"{provider.urn}::{provider.urn.rsplit('::', 1)[-1]}-id"
    kubernetes = [r for r in stack_run.registrations if r.type.startswith("kubernetes:") and r.custom]
    assert kubernetes
    strays = sorted(r.urn for r in kubernetes if r.provider != reference)
    assert not strays, f"{len(strays)} Kubernetes resources not on {PROVIDER_NAME}, e.g. {strays[:3]}"
    # The remote Helm v4 component is served by the provider too (its objects are registered by the provider).
    charts = [r for r in stack_run.registrations if r.type == "kubernetes:helm.sh/v4:Chart"]
    assert charts and all(r.provider == reference for r in charts)


def _provider_gvk(type_token: str) -> tuple[str, str, str]:
    """The group, version and kind the provider reads from a resource's type token, or AssertionError where it
    refuses it (pulumi-kubernetes provider/pkg/provider/provider.go `gvkFromURN`, called by `Check`: the token's
    module must be `<group>/<version>`, the core group spelled `core`)."""
    _, module, kind = type_token.split(":")
    group_version = module.split("/")
    assert len(group_version) == 2, f"{type_token}: apiVersion does not have both a group and a version"
    group, version = group_version
    return ("" if group == "core" else group), version, kind


def test_every_kubernetes_objects_type_names_its_group_version_and_kind_as_the_provider_reads_them(stack_run):
    """A token the provider cannot read fails the preview; one that reads as another kind would apply the wrong
    object. Every object registered with an apiVersion and kind (built-in kinds, custom resources, the release
    manifests' objects) carries the token the provider reads back as exactly that."""
    objects = [
        r
        for r in stack_run.registrations
        if r.type.startswith("kubernetes:") and r.custom and {"apiVersion", "kind"} <= set(r.inputs)
    ]
    assert objects
    for r in objects:
        group, _, version = r.inputs["apiVersion"].rpartition("/")
        assert _provider_gvk(r.type) == (group, version, r.inputs["kind"]), r.urn


def test_every_kubernetes_resource_asks_for_the_installed_providers_version(stack_run):
    """The engine loads the provider plugin of the version a resource names; pulumi-kubernetes' classes name their
    own package version (pulumi_kubernetes/_utilities.py `get_resource_opts_defaults`), and so do the objects the
    components register without them (`components.kube`)."""
    expected = _utilities.get_version()
    kubernetes = [r for r in stack_run.registrations if r.type.startswith("kubernetes:") and r.custom]
    assert kubernetes
    assert sorted({(r.type, r.version) for r in kubernetes if r.version != expected}) == []


def test_every_secrets_data_is_kept_secret_in_the_state(stack_run):
    """What a Secret holds is encrypted in the state: its data fields are secret inputs and secret outputs."""
    secrets = stack_run.of_type("kubernetes:core/v1:Secret")
    assert secrets
    for r in secrets:
        assert set(SECRET_FIELDS) <= set(r.additional_secret_outputs), r.urn
        for field in SECRET_FIELDS:
            assert set((r.inputs.get(field) or {}).values()) <= {SECRET_MARKER}, (r.urn, field)


def test_a_core_group_objects_type_names_the_core_group():
    assert type_token("v1", "Service") == "kubernetes:core/v1:Service"
    assert type_token("apps/v1", "Deployment") == "kubernetes:apps/v1:Deployment"
    assert _provider_gvk(type_token("v1", "ServiceAccount")) == ("", "v1", "ServiceAccount")


def test_the_default_kubernetes_provider_is_disabled_for_the_engine():
    """pulumi pkg/resource/deploy/default_providers.go: `pulumi:disable-default-providers` makes the engine
    refuse a resource that would get a default provider, so a resource created without the parent chain fails
    instead of silently using the current kubeconfig context."""
    project = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())
    assert project["config"]["pulumi:disable-default-providers"] == {"value": ["kubernetes"]}


def test_the_provider_is_configured_from_the_stacks_cluster_section(project):
    project.set_stack_key("dev", "cluster", CLUSTER)
    [provider] = providers(project.render("dev"))
    assert provider.inputs == {
        "context": "staging-admin",
        # DiffConfig (provider/pkg/provider/provider.go): with clusterIdentifier set, only a change of the
        # identifier replaces the provider (and every resource); a kubeconfig or context change is an update.
        "clusterIdentifier": "settlement-staging",
        # forceNewProperties (provider/pkg/provider/diff.go): without these, a Secret's or ConfigMap's data
        # change is a replacement (delete + create under the same name).
        "enableSecretMutable": "true",
        "enableConfigMapMutable": "true",
    }


@pytest.mark.parametrize("bad", [{"context": "x"}, {"identifier": "x"}, {"context": "", "identifier": "x"}])
def test_a_partial_cluster_section_is_refused(project, bad):
    project.set_stack_key("dev", "cluster", bad)
    with pytest.raises(ProgramFailed) as failure:
        project.render("dev")
    assert "cluster." in str(failure.value.cause)
    assert failure.value.registrations == []


def _without_cluster(project):
    data = project.load("Pulumi.dev.yaml")
    data["config"].pop("settlement-platform:cluster", None)
    project.save("Pulumi.dev.yaml", data)


def test_a_stack_without_a_cluster_renders_offline_but_warns_it_cannot_be_deployed(project, tmp_path):
    _without_cluster(project)
    result = run_cli("render", "dev", "--out", str(tmp_path / "out"), "--project-dir", str(project.root))
    assert result.returncode == 0, result.stderr
    assert "warning: stack 'dev' names no target cluster: set `settlement-platform:cluster`" in result.stderr


def test_a_closed_stderr_loses_nothing_of_standard_output(project, tmp_path):
    """The render's warning goes to a stderr whose reader has gone: that is not standard output's reader going away
    (infra/__main__.py), so what the render printed still reaches its file. Output buffered, as in a shell."""
    _without_cluster(project)
    printed = tmp_path / "stdout.txt"
    env = {k: v for k, v in caches.child_env().items() if k != "PYTHONUNBUFFERED"}
    command = [sys.executable, "-m", "infra", "render", "dev", "--out", str(tmp_path / "out")]
    with printed.open("w") as stdout:
        process = subprocess.Popen(
            [*command, "--project-dir", str(project.root)],
            cwd=PROJECT_ROOT,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
        )
        process.stderr.close()
        process.wait(timeout=300)
    assert "rendered stack 'dev'" in printed.read_text()


def test_a_stack_without_a_cluster_is_refused_by_the_engine_before_anything_is_registered(project):
    """The program as the engine runs it (`run()`, not the offline render's `run(offline=True)`)."""
    _without_cluster(project)
    with pytest.raises(ProgramFailed) as failure:
        run_program(read_stack_files("dev", project.root), run)
    assert isinstance(failure.value.cause, pulumi.RunError)
    assert "names no target cluster" in str(failure.value.cause)
    assert failure.value.registrations == []


def test_a_stack_with_a_cluster_runs_under_the_engine(project):
    project.set_stack_key("dev", "cluster", CLUSTER)
    result = run_program(read_stack_files("dev", project.root), run)
    assert len(providers(result)) == 1


def test_readme_no_longer_points_to_the_default_providers_context():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "kubernetes:context" not in readme
    assert "settlement-platform:cluster" in readme


# --- 3. The program runs from the project root -------------------------------------------------------------------


def test_the_program_is_the_project_roots_main_not_a_subfolder():
    """pulumi sdk/go/common/workspace/project.go: `main` moves the program (and its working directory); the
    Python language host runs `<program dir>/__main__.py` (sdk/python/cmd/pulumi-language-python-exec,
    runpy.run_path). Without `main`, `pulumi install` reads ./requirements.txt and relative paths resolve here."""
    project = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())
    assert "main" not in project
    main = PROJECT_ROOT / "__main__.py"
    tree = ast.parse(main.read_text())
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
    calls = [n.value for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
    assert [(i.module, [a.name for a in i.names]) for i in imports] == [("infra.program", ["run"])]
    assert [ast.unparse(c) for c in calls] == ["run()"]
    assert (PROJECT_ROOT / "requirements.txt").is_file()


def test_python_m_infra_is_only_the_offline_tools():
    text = (PROJECT_ROOT / "infra" / "__main__.py").read_text()
    assert "infra.offline.cli" in text and "program" not in text.split('"""')[-1]


def test_a_build_context_is_a_path_from_the_project_root(project):
    """pulumi-docker provider/provider.go (Check) stats `build.dockerfile` and hashes `build.context` relative
    to the program's working directory: the project root now, so the configured paths are used as written."""
    subsystems = project.topology()
    service = subsystems["payment"]["services"]["payment-api"]
    service.pop("image")
    service["build"] = {"context": "services/payment-api", "repository": "registry.example/payment-api"}
    project.set_topology(subsystems)
    [image] = project.render("dev").of_type("docker:index/image:Image")
    assert image.inputs["build"]["context"] == "services/payment-api"
    assert image.inputs["build"]["dockerfile"] == "services/payment-api/Dockerfile"


# --- 2. What `pulumi up` waits for ------------------------------------------------------------------------------


def _waits(run: ProgramRun) -> dict[tuple[str, str], tuple[str | None, dict]]:
    """(kind, name) of every custom resource -> (its waitFor annotation, its customTimeouts)."""
    out = {}
    for r in run.registrations:
        # The platform's own custom resources; the operators' release manifests keep upstream's behaviour.
        meta = r.inputs.get("metadata") or {}
        if (
            r.is_kubernetes_object
            and "/" in r.inputs["apiVersion"]
            and SOURCE_ANNOTATION not in (meta.get("annotations") or {})
        ):
            key = (r.inputs["kind"], f"{meta.get('namespace', '')}/{meta['name']}")
            out[key] = ((meta.get("annotations") or {}).get(WAIT_FOR), r.custom_timeouts)
    return out


def _minutes(duration: str) -> int:
    assert duration.endswith("m"), duration
    return int(duration[:-1])


def test_up_waits_for_every_data_cluster_long_enough_for_a_synchronous_bootstrap(stack_run):
    waits = _waits(stack_run)
    clusters = {k: v for k, v in waits.items() if k[0] in ("Cluster", "RabbitmqCluster")}
    assert clusters
    for (kind, name), (wait, timeouts) in clusters.items():
        assert wait == ("condition=Ready" if kind == "Cluster" else "condition=AllReplicasReady"), name
        # Three instances one after the other (initdb, then a pg_basebackup per standby), each pod scheduled,
        # pulled and its volume provisioned: ten minutes is not enough on a fresh cluster.
        assert _minutes(timeouts["create"]) >= 30 and _minutes(timeouts["update"]) >= 30, (name, timeouts)


def test_up_waits_for_every_internal_certificate_and_issuer(stack_run):
    waits = _waits(stack_run)
    internal = {
        k: v for k, v in waits.items() if k[0] in ("Certificate", "ClusterIssuer") and not _public_acme(stack_run, k)
    }
    assert internal
    assert {k: v[0] for k, v in internal.items() if v[0] != "condition=Ready"} == {}
    assert all(v[1].get("create") for v in internal.values())


def _public_acme(run: ProgramRun, key: tuple[str, str]) -> bool:
    kind, name = key
    if kind == "ClusterIssuer":
        return "acme" in run.object("ClusterIssuer", name.lstrip("/"))["spec"]
    namespace, _, cert = name.partition("/")
    issuer = run.object("Certificate", cert, namespace)["spec"]["issuerRef"]["name"]
    return "acme" in run.object("ClusterIssuer", issuer)["spec"]


def test_up_never_waits_for_the_public_acme_certificate(prod):
    """Let's Encrypt's HTTP-01 check reaches the gateway from outside, which needs this very update to finish
    (and DNS): waiting on it inside the update could never succeed on a first deploy."""
    public = [k for k in _waits(prod) if k[0] in ("Certificate", "ClusterIssuer") and _public_acme(prod, k)]
    assert public, "prod's gateway certificate comes from Let's Encrypt"
    assert all(_waits(prod)[k] == (None, {}) for k in public)


def test_wait_for_expressions_use_the_providers_syntax():
    assert wait_for("condition=Ready") == {WAIT_FOR: "condition=Ready"}
    assert wait_for("condition=A", "jsonpath={.status.phase}=Running") == {
        WAIT_FOR: '["condition=A", "jsonpath={.status.phase}=Running"]'
    }
    with pytest.raises(ValueError, match="prefix"):
        wait_for("Ready")


def test_readme_states_what_up_waits_for():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "pulumi.com/waitFor" in readme and "AllReplicasReady" in readme


# --- 4. Placeholder secrets are named before preview -------------------------------------------------------------


def _secrets_cli(project_root, *args):
    return run_cli("secrets", *args, "--project-dir", str(project_root))


def test_secrets_check_names_every_placeholder_with_the_command_that_sets_it(project):
    data = project.load("Pulumi.dev.yaml")
    data["config"]["settlement-platform:alertChatWebhookUrl"] = {"secure": "v1:placeholder-set-me"}
    data["config"]["settlement-platform:extra"] = {"nested": {"token": {"secure": "v1:placeholder-x"}}}
    data["config"]["settlement-platform:real"] = {"secure": "AAABAJ6rZ1Yb0vI2yQ=="}
    project.save("Pulumi.dev.yaml", data)
    result = _secrets_cli(project.root, "dev", "--check")
    assert result.returncode == 1
    assert "alertChatWebhookUrl (Pulumi.dev.yaml): pulumi config set --stack dev --secret alertChatWebhookUrl" in (
        result.stderr
    )
    assert "pulumi config set --stack dev --secret --path 'extra.nested.token'" in result.stderr
    assert "real" not in result.stderr.replace("really", "")


def test_secrets_check_passes_once_every_secret_is_a_ciphertext(project):
    data = project.load("Pulumi.dev.yaml")
    data["config"]["settlement-platform:alertChatWebhookUrl"] = {"secure": "AAABAJ6rZ1Yb0vI2yQ=="}
    project.save("Pulumi.dev.yaml", data)
    result = _secrets_cli(project.root, "dev", "--check")
    assert result.returncode == 0, result.stderr
    assert "every secret is set" in result.stdout


def test_readme_gives_the_first_deploy_sequence():
    readme = (PROJECT_ROOT / "README.md").read_text()
    for step in ("pulumi login", "--secrets-provider", "python -m infra secrets", "pulumi config set --secret"):
        assert step in readme, step


# --- 5. The offline diff flags what the engine or the operators would do badly -----------------------------------


@pytest.fixture(scope="module")
def prod_resources(rendered):
    return resources(rendered["prod"])


def _is(kind, name=None):
    return lambda r: r["inputs"].get("kind") == kind and (name is None or r["inputs"]["metadata"]["name"] == name)


def test_a_renamed_fixed_name_object_is_danger_naming_the_alias(prod_resources):
    head, secret = one_edited(prod_resources, lambda r: r["type"] == "kubernetes:core/v1:ConfigMap")
    old_urn = secret["urn"]
    secret["urn"] = old_urn + "-renamed"
    changes = diff(prod_resources, head)
    created = next(c for c in changes if c.action == "created")
    assert "AlreadyExists" in created.dangers[0]
    assert f'aliases=[pulumi.Alias(urn="{old_urn}")]' in created.dangers[0]


def test_a_custom_resource_is_replaced_only_when_its_name_or_namespace_changes(prod_resources):
    head, cluster = one_edited(prod_resources, _is("Cluster", "payment-db"))
    cluster["inputs"]["spec"]["instances"] = 5
    (change,) = diff(prod_resources, head)
    assert change.action == "changed" and change.dangers == []
    cluster["inputs"]["metadata"]["namespace"] = "elsewhere"
    (change,) = diff(prod_resources, head)
    assert change.action == "replaced"


@pytest.mark.parametrize(
    ("kind", "name", "mutate", "reason"),
    [
        ("Cluster", "payment-db", lambda s: s["storage"].update(size="1Gi"), "storage cannot shrink"),
        ("Cluster", "payment-db", lambda s: s["storage"].update(storageClass="fast"), "only new instances"),
        ("Cluster", "payment-db", lambda s: s.update(bootstrap={"initdb": {"database": "x"}}), "only at creation"),
        ("RabbitmqCluster", "payment-mq", lambda s: s.update(replicas=1), "scale down is not supported"),
        ("RabbitmqCluster", "payment-mq", lambda s: s["persistence"].update(storage="1Gi"), "cannot shrink"),
        ("RabbitmqCluster", "payment-mq", lambda s: s["persistence"].update(storageClassName="x"), "keep their class"),
    ],
)
def test_changes_the_data_operators_refuse_or_ignore_are_danger(prod_resources, kind, name, mutate, reason):
    head, edited = one_edited(prod_resources, _is(kind, name))
    mutate(edited["inputs"]["spec"])
    (change,) = diff(prod_resources, head)
    assert change.action == "changed"
    assert any(reason in d for d in change.dangers), change.dangers


def test_secret_data_is_patched_in_place_unless_the_secret_is_immutable(prod_resources):
    head, secret = one_edited(
        prod_resources, lambda r: r["inputs"].get("kind") == "Secret" and "stringData" in r["inputs"]
    )
    secret["inputs"]["stringData"] = {"k": "v"}
    (change,) = diff(prod_resources, head)
    assert change.action == "changed"
    secret["inputs"]["immutable"] = True
    (change,) = diff(prod_resources, head)
    assert change.action == "replaced"


# --- 6. Protection in depth: what could cascade to the data is protected too -------------------------------------


def _protected(run: ProgramRun, type_token: str, name: str) -> bool:
    found = [
        r
        for r in run.registrations
        if r.type == type_token
        and ((r.inputs.get("metadata") or {}).get("name") == name or r.inputs.get("name") == name)
    ]
    assert found, (type_token, name)
    return all(r.protect for r in found)


@pytest.mark.parametrize(
    ("type_token", "name", "why"),
    [
        ("kubernetes:core/v1:Namespace", "payment", "deleting a namespace deletes its database and queue"),
        ("kubernetes:core/v1:Namespace", "business", "deleting a namespace deletes its database and queue"),
        ("kubernetes:core/v1:Namespace", "cnpg-system", "the database operator's namespace"),
        ("kubernetes:core/v1:Namespace", "rabbitmq-system", "the queue operator's namespace"),
        ("kubernetes:helm.sh/v3:Release", "cloudnative-pg", "an uninstall leaves every database unmanaged"),
        ("kubernetes:helm.sh/v3:Release", "plugin-barman-cloud", "an uninstall stops the WAL archive"),
        (
            "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition",
            "rabbitmqclusters.rabbitmq.com",
            "deleting a CRD deletes every queue cluster",
        ),
        ("kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition", "queues.rabbitmq.com", "and every queue"),
    ],
)
def test_in_prod_every_path_that_cascades_to_the_data_is_protected(prod, dev, type_token, name, why):
    assert _protected(prod, type_token, name), why
    assert not _protected(dev, type_token, name), "dev opts out (guardrails.protectStatefulResources: false)"


def test_the_database_operators_chart_keeps_its_crds_on_uninstall(prod):
    """The CloudNativePG chart's CRDs are templates (deleted on uninstall) but carry helm.sh/resource-policy
    keep (cloudnative-pg 0.29.0 templates/crds/crds.yaml); the protected release is the second line."""
    crds = [c.object for c in prod.chart_objects if c.object["kind"] == "CustomResourceDefinition"]
    cnpg = [c for c in crds if c["spec"]["group"] == "postgresql.cnpg.io"]
    assert cnpg and all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in cnpg)


def test_a_destroy_or_a_dropped_subsystem_is_blocked_at_the_namespace(prod):
    removal = stateful_removals(prod, ProgramRun(stack="prod", registrations=[]))
    namespaces = {r.name: r for r in removal if r.kind == "Namespace"}
    assert namespaces["payment"].blocked and namespaces["payment"].retained


# --- 7. Built images in preview -----------------------------------------------------------------------------------


def _built(project, monkeypatch, env: str | None):
    subsystems = project.topology()
    service = subsystems["payment"]["services"]["payment-api"]
    service.pop("image")
    service["build"] = {"context": "services/payment-api", "repository": "registry.example/payment-api"}
    project.set_topology(subsystems)
    if env is None:
        monkeypatch.delenv(BUILD_ON_PREVIEW, raising=False)
    else:
        monkeypatch.setenv(BUILD_ON_PREVIEW, env)
    return project.render("dev")


def test_pull_request_previews_build_the_image_without_pushing(project, monkeypatch):
    run = _built(project, monkeypatch, "true")
    [image] = run.of_type("docker:index/image:Image")
    assert image.inputs["buildOnPreview"] is True
    assert image.inputs.get("skipPush") in (None, False), "up pushes; a preview never does (image.go dockerBuild)"
    deployment = run.object("Deployment", "payment-api", "payment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example/payment-api@")


def test_deploy_jobs_do_not_build_at_preview(project, monkeypatch):
    [image] = _built(project, monkeypatch, None).of_type("docker:index/image:Image")
    assert image.inputs["buildOnPreview"] is False


def test_readme_documents_built_images_in_preview():
    assert BUILD_ON_PREVIEW in (PROJECT_ROOT / "README.md").read_text()
