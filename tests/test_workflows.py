"""GitHub workflows: valid against GitHub's schema (offline), and doing what the team relies on.

Each security property is a function from a workflow to the problems it finds: the tests run it on the real
workflows (no problem) and on a copy broken on purpose (the problem is named). Issue 12, README "CI and deploys".
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from infra.stack_config import PROJECT_ROOT

WORKFLOWS = sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml"))


def check(paths: list[Path]) -> subprocess.CompletedProcess:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def text(name: str) -> str:
    return (PROJECT_ROOT / ".github" / "workflows" / name).read_text()


def load(name: str) -> dict:
    # PyYAML reads the `on:` key as True (YAML 1.1); GitHub reads it as "on".
    data = yaml.safe_load(text(name))
    data["on"] = data.pop(True)
    return data


def test_workflows_validate_against_the_github_schema():
    assert [p.name for p in WORKFLOWS] == ["deploy.yml", "preview.yml", "restore-drill.yml"]
    result = check(WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    stepz: []\n")
    assert check([broken]).returncode != 0


def test_pull_requests_get_the_offline_diff_as_a_sticky_comment_and_a_pulumi_preview():
    wf = load("preview.yml")
    assert "pull_request" in wf["on"]
    steps = wf["jobs"]["offline-diff"]["steps"]
    script = next(s["run"] for s in steps if s.get("id") == "diff")
    # Every stack file, found by the script itself (tests/test_stacks_discovery.py runs the discovery).
    assert "python -m infra diff" in script and "for file in Pulumi.*.yaml" in script
    sticky = next(s for s in steps if "sticky-pull-request-comment" in s.get("uses", ""))
    assert sticky["with"]["path"] == "preview.md"
    preview = wf["jobs"]["pulumi-preview"]
    action = next(s for s in preview["steps"] if s.get("uses", "").startswith("pulumi/actions"))
    assert action["with"]["command"] == "preview" and action["with"]["comment-on-pr"] is True
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    # Credentials exist only for branches of this repository, not for forks.
    assert "head.repo.full_name == github.repository" in preview["if"]


def test_merges_deploy_dev_then_prod_behind_an_approval_gate():
    wf = load("deploy.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    jobs = wf["jobs"]
    assert jobs["up"]["needs"] == "test" and jobs["up"]["strategy"]["matrix"]["stack"] == ["dev"]
    assert jobs["up-prod"]["needs"] == "up"
    assert jobs["up-prod"]["environment"] == "production"
    # The standby site deploys with the primary's region down: after the tests, not after prod, from its own
    # environment (its own role, region and state backend; README "Disaster recovery").
    assert jobs["up-prod-dr"]["needs"] == "test" and jobs["up-prod-dr"]["environment"] == "production-dr"
    for job in ("up", "up-prod", "up-prod-dr"):
        action = next(s for s in jobs[job]["steps"] if s.get("uses", "").startswith("pulumi/actions"))
        assert action["with"]["command"] == "up" and action["with"]["policyPacks"] == "policy"


def test_the_standby_job_states_its_first_rollout_precondition_from_the_readme():
    """A site born a replica restores the other site's first base backup: the job that deploys it says to wait for
    it, pointing at the README section that gives the check, which must exist and give it."""
    lines = text("deploy.yml").splitlines()
    start = lines.index("  up-prod-dr:")
    block = []
    for line in lines[start + 1 :]:
        if not line.strip().startswith("#"):
            break
        block.append(line.strip().lstrip("# "))
    comment = " ".join(block)
    assert "PRECONDITION" in comment, "the job's leading comment states no precondition"
    section = re.findall(r'README "([^"]+)"', comment.split("PRECONDITION", 1)[1])[0]
    readme = (PROJECT_ROOT / "README.md").read_text()
    body = readme.split(f"### {section}\n", 1)[1].split("\n### ", 1)[0]
    assert "kubectl get backups" in comment and "kubectl get backups" in body
    assert "base backup" in body and "up-prod-dr" in body


@pytest.mark.parametrize("workflow", ["preview.yml", "deploy.yml"])
def test_workflows_use_the_readme_commands(workflow):
    text = (PROJECT_ROOT / ".github" / "workflows" / workflow).read_text()
    assert "make " in text


# --- The policy pack's virtualenv ---------------------------------------------------------------------------


def policy_venv_disagreement(policy_yaml: str, makefile: str) -> list[str]:
    """The virtualenv Pulumi starts the pack with must be the one `make policy-venv` builds.

    The Python language host joins a relative `virtualenv` to the pack's folder (pulumi
    sdk/python/toolchain/pip.go resolveVirtualEnvironmentPath; the root is the policy pack's path).
    """
    pack = PROJECT_ROOT / "policy"
    named = (yaml.safe_load(policy_yaml)["runtime"].get("options") or {}).get("virtualenv")
    built = re.search(r"^POLICY_VENV\s*:?=\s*(\S+)\s*$", makefile, re.MULTILINE)
    if named is None or built is None:
        return ["PulumiPolicy.yaml names no virtualenv, or the Makefile sets no POLICY_VENV"]
    if (pack / named).resolve() != (PROJECT_ROOT / built.group(1)).resolve():
        return [f"PulumiPolicy.yaml's virtualenv {named!r} is policy/{named}, make builds {built.group(1)}"]
    return []


def test_the_policy_pack_runs_in_the_virtualenv_make_builds():
    policy_yaml = (PROJECT_ROOT / "policy" / "PulumiPolicy.yaml").read_text()
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert policy_venv_disagreement(policy_yaml, makefile) == []
    assert policy_venv_disagreement(policy_yaml.replace("../.venv-policy", "venv"), makefile) == [
        "PulumiPolicy.yaml's virtualenv 'venv' is policy/venv, make builds .venv-policy"
    ]


# --- Security properties (issue 12) -------------------------------------------------------------------------
# Action names, without their ref.
CHECKOUT, AWS, DOCKER_LOGIN, PULUMI = (
    "actions/checkout",
    "aws-actions/configure-aws-credentials",
    "docker/login-action",
    "pulumi/actions",
)
STICKY = "marocchino/sticky-pull-request-comment"
SECRETS_CHECK = '.venv/bin/python -m infra secrets "$STACK" --check'
DEPLOY_GROUP = "pulumi-up-${{ matrix.stack }}"


def action(step: dict) -> str:
    return step.get("uses", "").split("@", 1)[0]


def cloud_jobs(wf: dict) -> Iterator[tuple[str, dict]]:
    """The jobs that run the Pulumi CLI against a real backend and cluster."""
    for name, job in wf["jobs"].items():
        if any(action(s) == PULUMI for s in job.get("steps", [])):
            yield name, job


def first(job: dict, predicate: Callable[[dict], bool]) -> int | None:
    return next((i for i, step in enumerate(job["steps"]) if predicate(step)), None)


def pulumi_index(job: dict) -> int:
    return first(job, lambda s: action(s) == PULUMI)


def strings(node) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    else:
        yield str(node)


def on_pull_requests(wf: dict) -> bool:
    return bool({"pull_request", "pull_request_target"} & set(wf["on"]))


# `uses: owner/repo[/path]@<40 hex> # vX[.Y.Z]`: a tag can be moved, a commit cannot.
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", re.MULTILINE)
PINNED = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")
TAG_COMMENT = re.compile(r"#\s*v\d+(\.\d+)*\s*$")


def unpinned_actions(workflow_text: str) -> list[str]:
    problems = []
    for ref, rest in USES.findall(workflow_text):
        if not PINNED.fullmatch(ref):
            problems.append(f"{ref}: not pinned by a full commit SHA")
        elif not TAG_COMMENT.search(rest):
            problems.append(f"{ref}: no `# vX.Y.Z` comment naming the tag the SHA was taken from")
    return problems


def checkout_problems(wf: dict) -> list[str]:
    """No job leaves the run's token in .git/config, where the code it checked out (a pull request's) could read it."""
    return [
        f"{name}: checkout without persist-credentials: false"
        for name, job in wf["jobs"].items()
        for step in job.get("steps", [])
        if action(step) == CHECKOUT and (step.get("with") or {}).get("persist-credentials") is not False
    ]


def permission_problems(wf: dict) -> list[str]:
    """`contents: read` for the workflow; a job widens it only by what it does (OIDC login, PR comment)."""
    problems = []
    if wf.get("permissions") != {"contents": "read"}:
        problems.append(f"workflow: permissions {wf.get('permissions')}, want exactly contents: read")
    for name, job in wf["jobs"].items():
        steps = job.get("steps", [])
        wanted = {"contents": "read"}
        if any(action(s) == AWS for s in steps):
            wanted["id-token"] = "write"
        if any(action(s) == STICKY or (action(s) == PULUMI and s["with"].get("comment-on-pr")) for s in steps):
            wanted["pull-requests"] = "write"
        have = job.get("permissions", wf.get("permissions"))
        if have != wanted:
            problems.append(f"{name}: permissions {have}, want {wanted}")
    return problems


def oidc_problems(wf: dict) -> list[str]:
    """Every cloud job logs in through OIDC, to the role its GitHub environment names, before Pulumi runs."""
    problems = []
    for name, job in cloud_jobs(wf):
        login = first(job, lambda s: action(s) == AWS)
        if login is None or login > pulumi_index(job):
            problems.append(f"{name}: no OIDC login before the pulumi step")
            continue
        inputs = job["steps"][login]["with"]
        if inputs.get("role-to-assume") != "${{ vars.PULUMI_ROLE_ARN }}":
            problems.append(f"{name}: role-to-assume must be the environment's vars.PULUMI_ROLE_ARN")
        if {"aws-access-key-id", "aws-secret-access-key", "aws-session-token"} & set(inputs):
            problems.append(f"{name}: static AWS keys instead of the OIDC token")
        if not job.get("environment"):
            problems.append(f"{name}: no environment (the role and its trust are per environment)")
    return problems


def secret_problems(wf: dict) -> list[str]:
    """No stored credential at all (only the run's GITHUB_TOKEN); pull requests only in preview environments."""
    problems = sorted(
        {
            f"stored secret `{ref}` (credentials come from OIDC)"
            for value in strings(wf)
            for ref in re.findall(r"secrets\.(\w+)", value)
            if ref != "GITHUB_TOKEN"
        }
    )
    for word in ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_ACCESS_TOKEN", "KUBECONFIG"):
        if any(word in value for value in strings(wf)):
            problems.append(f"{word}: a long-lived credential")
    if on_pull_requests(wf):
        if "pull_request_target" in wf["on"]:
            problems.append("pull_request_target runs with the base repository's secrets")
        for name, job in wf["jobs"].items():
            if job.get("environment") and not str(job["environment"]).startswith("preview-"):
                problems.append(f"{name}: pull requests run in preview-<stack> environments only")
    return problems


def environment_problems(wf: dict) -> list[str]:
    """Prod is deployed only from `production`, previewed only from `preview-prod` (both with reviewers)."""
    problems = []
    for name, job in cloud_jobs(wf):
        environment = job.get("environment")
        if on_pull_requests(wf):
            if environment != "preview-${{ matrix.stack }}":
                problems.append(f"{name}: environment {environment!r}, want preview-${{{{ matrix.stack }}}}")
        elif "prod" in job["strategy"]["matrix"]["stack"] and environment != "production":
            problems.append(f"{name}: deploys prod outside the `production` environment")
    return problems


def pulumi_pin() -> str:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    return next(d.split("==", 1)[1] for d in pyproject["project"]["dependencies"] if d.startswith("pulumi=="))


def cli_version_problems(wf: dict, sdk: str) -> list[str]:
    return [
        f"{name}: pulumi-version {step['with'].get('pulumi-version')!r}, the SDK is pulumi=={sdk}"
        for name, job in cloud_jobs(wf)
        for step in job["steps"]
        if action(step) == PULUMI and str(step["with"].get("pulumi-version")) != sdk
    ]


def policy_venv_problems(wf: dict) -> list[str]:
    problems = []
    for name, job in cloud_jobs(wf):
        build = first(job, lambda s: re.search(r"\bmake\b.*\bpolicy-venv\b", s.get("run", "")) is not None)
        if build is None or build > pulumi_index(job):
            problems.append(f"{name}: no `make policy-venv` before the pulumi step")
    return problems


def registry_problems(wf: dict) -> list[str]:
    """Pull requests never log in to a registry nor push; deploys log in just before Pulumi builds and pushes."""
    problems = []
    for name, job in wf["jobs"].items():
        login = first(job, lambda s: action(s) == DOCKER_LOGIN)
        if login is None:
            continue
        if on_pull_requests(wf):
            problems.append(f"{name}: a pull request job logs in to a registry")
        elif name not in dict(cloud_jobs(wf)) or login > pulumi_index(job):
            problems.append(f"{name}: registry login outside a deploy, or after it")
    if on_pull_requests(wf) and wf.get("env", {}).get("SETTLEMENT_BUILD_ON_PREVIEW") != "true":
        problems.append("pull requests must build without pushing: env SETTLEMENT_BUILD_ON_PREVIEW: 'true'")
    return problems


def concurrency_problems(wf: dict) -> list[str]:
    """Deploys: one update per stack at a time, never cancelled; previews never join (or cancel) that queue."""
    problems = []
    for name, job in cloud_jobs(wf):
        concurrency = job.get("concurrency") or {}
        # `concurrency: <group>` is GitHub's short form (cancel-in-progress then defaults to false).
        concurrency = {"group": concurrency} if isinstance(concurrency, str) else concurrency
        group = concurrency.get("group", "")
        if on_pull_requests(wf):
            if group.startswith(DEPLOY_GROUP.split("$", 1)[0]):
                problems.append(f"{name}: a preview in the deploy queue could cancel a pending deploy")
        elif group != DEPLOY_GROUP or concurrency.get("cancel-in-progress") is not False:
            problems.append(f"{name}: concurrency must be group {DEPLOY_GROUP}, cancel-in-progress: false")
    return problems


def secrets_check_problems(wf: dict) -> list[str]:
    """The stack's secrets are checked for placeholders before any credential is fetched and Pulumi runs."""
    problems = []
    for name, job in cloud_jobs(wf):
        checked = first(job, lambda s: s.get("run") == SECRETS_CHECK)
        login = first(job, lambda s: action(s) == AWS)
        if checked is None or checked > min(i for i in (login, pulumi_index(job)) if i is not None):
            problems.append(f"{name}: no `{SECRETS_CHECK}` before the credentials and the pulumi step")
        elif job["steps"][checked].get("env", {}).get("STACK") != "${{ matrix.stack }}":
            problems.append(f"{name}: the secrets check must get the stack through env STACK")
    return problems


UPSTREAM_PATH = ".upstream"
UPSTREAM_ENV = {
    "SETTLEMENT_CHARTS_DIR": "charts",
    "SETTLEMENT_MANIFEST_MIRROR": "manifests",
    "SETTLEMENT_CRDS_DIR": "crds",
}
UPSTREAM_MIRROR = {"repository": "UPSTREAM_MIRROR_REPOSITORY", "ref": "UPSTREAM_MIRROR_REF"}
UPSTREAM_CHECK = ".venv/bin/python -m infra upstream"
OFFLINE_RUN = re.compile(
    r"make (test|render|bench|golden)\b|python -m infra (diff|footprint|describe|render|golden|bench)\b"
)


def upstream_problems(wf: dict) -> list[str]:
    """A job running the offline checks first checks its own code out, then the upstream bytes from the mirror the
    workflow names (not repository variables: pull requests from forks get none) into the folders its env names
    (infra/offline/caches.py), which no step overrides; then `infra upstream` checks them against
    infra/offline/upstream.sha256, unconditionally, before anything reads them. A job that runs none of them sets
    none of those folders: the real program reads the operators' release manifests from their upstream releases."""
    problems = [
        f"workflow: env {var} must name the mirror"
        for var in UPSTREAM_MIRROR.values()
        if any(OFFLINE_RUN.search(text) for text in strings(wf["jobs"])) and not (wf.get("env") or {}).get(var)
    ]
    for name, job in wf["jobs"].items():
        env, steps = job.get("env") or {}, job.get("steps", [])
        offline = first(job, lambda s: bool(OFFLINE_RUN.search(s.get("run", ""))))
        if offline is None:
            problems += [f"{name}: sets {var} but runs no offline check" for var in UPSTREAM_ENV if var in env]
            continue
        own = first(job, lambda s: action(s) == CHECKOUT and not (s.get("with") or {}).get("path"))
        fetched = first(job, lambda s: action(s) == CHECKOUT and (s.get("with") or {}).get("path") == UPSTREAM_PATH)
        if fetched is None or fetched > offline or own is None or fetched < own:
            problems.append(
                f"{name}: no checkout of the upstream mirror into {UPSTREAM_PATH} after its own checkout (which "
                "would delete it) and before the offline checks"
            )
        else:
            problems += [
                f"{name}: the mirror's {key} must be ${{{{ env.{var} }}}}"
                for key, var in UPSTREAM_MIRROR.items()
                if (steps[fetched].get("with") or {}).get(key) != f"${{{{ env.{var} }}}}"
            ]
        problems += [
            f"{name}: env {var} must be the mirror's {folder} folder"
            for var, folder in UPSTREAM_ENV.items()
            if env.get(var) != f"${{{{ github.workspace }}}}/{UPSTREAM_PATH}/{folder}"
        ]
        problems += [
            f"{name}: a step overrides {var}"
            for step in steps
            for var in UPSTREAM_ENV
            if var in (step.get("env") or {})
        ]
        checked = first(job, lambda s: s.get("run") == UPSTREAM_CHECK)
        if checked is None or checked > offline:
            problems.append(f"{name}: `{UPSTREAM_CHECK}` does not run before the offline checks")
        elif {"if", "continue-on-error"} & set(steps[checked]):
            problems.append(f"{name}: the upstream check must run unconditionally and fail the job")
    return problems


WORKFLOW_CHECKS = [
    checkout_problems,
    permission_problems,
    oidc_problems,
    secret_problems,
    environment_problems,
    policy_venv_problems,
    registry_problems,
    concurrency_problems,
    secrets_check_problems,
    upstream_problems,
]


@pytest.mark.parametrize("workflow", ["preview.yml", "deploy.yml", "restore-drill.yml"])
@pytest.mark.parametrize("checker", WORKFLOW_CHECKS, ids=lambda f: f.__name__)
def test_the_workflows_have_the_property(workflow, checker):
    assert checker(load(workflow)) == []


@pytest.mark.parametrize("workflow", ["preview.yml", "deploy.yml", "restore-drill.yml"])
def test_every_action_is_pinned_by_commit_with_its_tag(workflow):
    assert unpinned_actions(text(workflow)) == []
    # Every `uses:` the regex saw is every `uses:` GitHub runs.
    seen = {ref for ref, _ in USES.findall(text(workflow))}
    used = {s["uses"] for job in load(workflow)["jobs"].values() for s in job.get("steps", []) if "uses" in s}
    assert used and used == seen


def test_unpinned_actions_are_named():
    sha = "3d3c42e5aac5ba805825da76410c181273ba90b1"
    workflow = f"""steps:
      - uses: actions/checkout@v4
      - uses: actions/checkout@{sha}
      - uses: actions/checkout@{sha} # v7.0.1
"""
    assert unpinned_actions(workflow) == [
        "actions/checkout@v4: not pinned by a full commit SHA",
        f"actions/checkout@{sha}: no `# vX.Y.Z` comment naming the tag the SHA was taken from",
    ]


def test_the_cli_is_the_version_of_the_sdk():
    sdk = pulumi_pin()
    assert re.fullmatch(r"\d+\.\d+\.\d+", sdk)
    for name in ("preview.yml", "deploy.yml", "restore-drill.yml"):
        assert cli_version_problems(load(name), sdk) == []
    assert cli_version_problems(load("preview.yml"), "3.0.0") == [
        f"pulumi-preview: pulumi-version '{sdk}', the SDK is pulumi==3.0.0"
    ]


def test_id_token_is_granted_only_where_a_role_is_assumed():
    deploy, preview, drill = load("deploy.yml"), load("preview.yml"), load("restore-drill.yml")
    granted = {
        f"{file}:{name}"
        for file, wf in (("deploy", deploy), ("preview", preview), ("drill", drill))
        for name, job in wf["jobs"].items()
        if job.get("permissions", {}).get("id-token") == "write"
    }
    assert granted == {
        "deploy:up",
        "deploy:up-prod",
        "deploy:up-prod-dr",
        "preview:pulumi-preview",
        "drill:drill",
        "drill:freshness",
    }
    # Every job given a token uses it to assume its environment's role.
    for name in ("drill", "freshness"):
        assert first(drill["jobs"][name], lambda s: action(s) == AWS) is not None, name


def test_deploys_log_in_to_the_registry_and_previews_do_not_push():
    deploy = load("deploy.yml")
    for name, job in cloud_jobs(deploy):
        login = first(job, lambda s: action(s) == DOCKER_LOGIN)
        assert login is not None and first(job, lambda s: action(s) == AWS) < login < pulumi_index(job), name
        # An ECR registry: docker/login-action takes the role's credentials, no stored password.
        assert set(job["steps"][login]["with"]) == {"registry"}
    assert load("preview.yml")["env"]["SETTLEMENT_BUILD_ON_PREVIEW"] == "true"
    assert "SETTLEMENT_BUILD_ON_PREVIEW" not in text("deploy.yml")


def _set(path: tuple, value) -> Callable[[dict], None]:
    def mutate(wf: dict) -> None:
        node = wf
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _drop_step(job: str, uses: str) -> Callable[[dict], None]:
    def mutate(wf: dict) -> None:
        wf["jobs"][job]["steps"] = [s for s in wf["jobs"][job]["steps"] if action(s) != uses]

    return mutate


def _move_pulumi_first(job: str) -> Callable[[dict], None]:
    def mutate(wf: dict) -> None:
        steps = wf["jobs"][job]["steps"]
        steps.insert(0, steps.pop(pulumi_index(wf["jobs"][job])))

    return mutate


def _add_step(job: str, step: dict) -> Callable[[dict], None]:
    return lambda wf: wf["jobs"][job]["steps"].insert(0, step)


PREVIEW_ENV = ("jobs", "pulumi-preview", "environment")
BROKEN = [
    # (workflow, checker, what breaks it, the problem it must name)
    ("preview.yml", checkout_problems, _set(("jobs", "test", "steps", 0, "with"), {}), "test: checkout without"),
    ("deploy.yml", permission_problems, _set(("permissions",), {"contents": "write"}), "workflow: permissions"),
    ("deploy.yml", permission_problems, _set(("jobs", "test", "permissions"), {"id-token": "write"}), "test:"),
    ("preview.yml", permission_problems, _set(("jobs", "pulumi-preview", "permissions", "id-token"), "none"), "id"),
    ("deploy.yml", oidc_problems, _drop_step("up", AWS), "up: no OIDC login"),
    ("preview.yml", oidc_problems, _set(("jobs", "pulumi-preview", "environment"), None), "no environment"),
    (
        "deploy.yml",
        oidc_problems,
        lambda wf: wf["jobs"]["up"]["steps"][4]["with"].update({"aws-access-key-id": "${{ secrets.KEY }}"}),
        "static AWS keys",
    ),
    ("preview.yml", secret_problems, _set(PREVIEW_ENV, "production"), "preview-<stack> environments only"),
    (
        "preview.yml",
        secret_problems,
        _add_step("pulumi-preview", {"run": "true", "env": {"PULUMI_CONFIG_PASSPHRASE": "${{ secrets.PASS }}"}}),
        "stored secret `PASS`",
    ),
    ("preview.yml", secret_problems, _set(("on",), {"pull_request_target": None}), "pull_request_target"),
    (
        "deploy.yml",
        environment_problems,
        _set(("jobs", "up-prod", "environment"), "prod"),
        "outside the `production` environment",
    ),
    ("preview.yml", environment_problems, _set(PREVIEW_ENV, "preview"), "environment 'preview'"),
    ("preview.yml", policy_venv_problems, _move_pulumi_first("pulumi-preview"), "no `make policy-venv`"),
    (
        "preview.yml",
        registry_problems,
        _add_step("pulumi-preview", {"uses": f"{DOCKER_LOGIN}@x", "with": {"registry": "r"}}),
        "logs in to a registry",
    ),
    ("preview.yml", registry_problems, _set(("env",), {}), "SETTLEMENT_BUILD_ON_PREVIEW"),
    ("deploy.yml", registry_problems, _add_step("test", {"uses": f"{DOCKER_LOGIN}@x"}), "test: registry login"),
    ("deploy.yml", concurrency_problems, _set(("jobs", "up", "concurrency", "cancel-in-progress"), True), "up:"),
    ("deploy.yml", concurrency_problems, _set(("jobs", "up-prod", "concurrency"), {"group": "deploy"}), "up-prod"),
    (
        "preview.yml",
        concurrency_problems,
        _set(("jobs", "pulumi-preview", "concurrency"), {"group": DEPLOY_GROUP}),
        "could cancel a pending deploy",
    ),
    ("deploy.yml", secrets_check_problems, _move_pulumi_first("up"), "up: no `.venv/bin/python -m infra secrets"),
    (
        "preview.yml",
        secrets_check_problems,
        _set(("jobs", "pulumi-preview", "steps", 3, "env"), {}),
        "through env STACK",
    ),
    ("preview.yml", upstream_problems, _drop_step("test", CHECKOUT), "test: no checkout of the upstream mirror"),
    (
        "deploy.yml",
        upstream_problems,
        lambda wf: wf["jobs"]["test"]["steps"].insert(0, wf["jobs"]["test"]["steps"].pop(1)),
        "after its own checkout",
    ),
    ("deploy.yml", upstream_problems, _set(("env",), {}), "workflow: env UPSTREAM_MIRROR_REPOSITORY"),
    (
        "preview.yml",
        upstream_problems,
        _set(("jobs", "test", "steps", 1, "with", "ref"), "${{ vars.UPSTREAM_MIRROR_REF }}"),
        "test: the mirror's ref must be ${{ env.UPSTREAM_MIRROR_REF }}",
    ),
    (
        "deploy.yml",
        upstream_problems,
        _set(("jobs", "test", "env", "SETTLEMENT_CRDS_DIR"), "../shared/crds"),
        "env SETTLEMENT_CRDS_DIR must be the mirror's crds folder",
    ),
    (
        "preview.yml",
        upstream_problems,
        lambda wf: wf["jobs"]["offline-diff"]["steps"][-1].setdefault("env", {}).update(SETTLEMENT_CHARTS_DIR="x"),
        "offline-diff: a step overrides SETTLEMENT_CHARTS_DIR",
    ),
    (
        "preview.yml",
        upstream_problems,
        lambda wf: wf["jobs"]["offline-diff"]["steps"].remove(
            next(s for s in wf["jobs"]["offline-diff"]["steps"] if s.get("run") == UPSTREAM_CHECK)
        ),
        "offline-diff: `.venv/bin/python -m infra upstream` does not run",
    ),
    (
        "deploy.yml",
        upstream_problems,
        lambda wf: next(s for s in wf["jobs"]["test"]["steps"] if s.get("run") == UPSTREAM_CHECK).update(
            {"continue-on-error": True}
        ),
        "test: the upstream check must run unconditionally",
    ),
    ("deploy.yml", upstream_problems, _set(("jobs", "up", "env"), {"SETTLEMENT_CHARTS_DIR": "x"}), "up: sets"),
]


@pytest.mark.parametrize(
    ("workflow", "checker", "mutate", "problem"),
    BROKEN,
    ids=[f"{w}-{c.__name__}-{i}" for i, (w, c, _, _) in enumerate(BROKEN)],
)
def test_each_property_fires_on_a_broken_workflow(workflow, checker, mutate, problem):
    wf = copy.deepcopy(load(workflow))
    mutate(wf)
    assert any(problem in found for found in checker(wf)), checker(wf)


def test_the_pull_request_comment_carries_each_stacks_footprint_against_the_base():
    """Issue 13: what each environment asks of the cluster, and the change, beside the diff."""
    steps = load("preview.yml")["jobs"]["offline-diff"]["steps"]
    script = next(s["run"] for s in steps if "infra diff" in s.get("run", ""))
    assert 'infra footprint "$stack" --base "origin/${GITHUB_BASE_REF}"' in script
    assert script.index("infra footprint") < script.index('cat "footprint-$stack.md"')
    assert "} >> preview.md" in script[script.index('cat "footprint-$stack.md"') :]


def test_every_stacks_cluster_context_is_the_one_ci_names():
    """CI builds its kubeconfig with `--alias settlement-<stack>`; a stack file naming another context would make
    the explicit provider look for a context that does not exist."""
    from infra.stack_config import PROJECT_ROOT, stack_names

    aliases = {
        step["run"]
        for wf in ("preview.yml", "deploy.yml", "restore-drill.yml")
        for job in load(wf)["jobs"].values()
        for step in job.get("steps", [])
        if "update-kubeconfig" in step.get("run", "")
    }
    assert aliases and all('--alias "settlement-$STACK"' in run for run in aliases), aliases
    for stack in stack_names(PROJECT_ROOT):
        config = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        cluster = config.get("settlement-platform:cluster")
        if cluster is not None:
            assert cluster["context"] == f"settlement-{stack}", stack


# --- The restore drill (issue 14 item 4, README "Restore drill") ------------------------------------------------

DRILL_CRON, FRESHNESS_CRON = "17 3 * * 1", "43 7 * * *"


def drill_problems(wf: dict) -> list[str]:
    """The drill runs weekly outside prod's approval gate, and whatever happens it is judged, its result kept and
    the drill torn down; the run fails when the drill failed. A daily job checks the last success's age."""
    problems = []
    crons = [entry["cron"] for entry in wf["on"].get("schedule") or []]
    if crons != [DRILL_CRON, FRESHNESS_CRON]:
        problems.append(f"schedule {crons}: want the weekly drill and the daily freshness check")
    job = wf["jobs"]["drill"]
    if job.get("environment") != "${{ matrix.stack }}":
        problems.append("drill: must run in the drill stack's own environment, not prod's (`production`)")
    if DRILL_CRON not in job.get("if", ""):
        problems.append("drill: must run on the weekly schedule")
    steps = job["steps"]
    up = pulumi_index(job)
    if steps[up]["with"].get("command") != "up" or not steps[up].get("continue-on-error"):
        problems.append("drill: `pulumi up` must come first and let the teardown run when it fails")
    later = steps[up + 1 :]
    destroy = [s for s in later if action(s) == PULUMI and s["with"].get("command") == "destroy"]
    if len(destroy) != 1 or destroy[0].get("if") != "always()":
        problems.append("drill: one `pulumi destroy` after `up`, run always()")
    judged = [s for s in later if "infra drill" in s.get("run", "") and " judge " in s["run"]]
    kept = [s for s in later if "aws s3 cp drill-result.json" in s.get("run", "")]
    if not judged or not kept or any(s.get("if") != "always()" for s in judged + kept):
        problems.append("drill: the run must always be judged (`infra drill ... judge`) and its result kept in S3")
    elif steps.index(kept[0]) > steps.index(destroy[0]) if destroy else False:
        problems.append("drill: keep the result before the teardown")
    fail = steps[-1]
    if "steps.up.outcome" not in fail.get("if", "") or "steps.judge.outcome" not in fail.get("if", ""):
        problems.append("drill: the last step must fail the run when `up` or the judgement failed")
    fresh = wf["jobs"].get("freshness", {})
    if not any("infra drill" in s.get("run", "") and " fresh " in s["run"] for s in fresh.get("steps", [])):
        problems.append("freshness: must run `infra drill <stack> fresh`")
    if "if" in fresh:
        problems.append("freshness: must run on every trigger (daily)")
    return problems


def test_the_restore_drill_workflow_has_its_properties():
    assert drill_problems(load("restore-drill.yml")) == []


def _without_destroy(wf: dict) -> None:
    wf["jobs"]["drill"]["steps"] = [
        s for s in wf["jobs"]["drill"]["steps"] if s.get("with", {}).get("command") != "destroy"
    ]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (_set(("jobs", "drill", "environment"), "production"), "own environment"),
        (_without_destroy, "one `pulumi destroy`"),
        (lambda wf: wf["jobs"]["drill"]["steps"][-2].pop("if"), "one `pulumi destroy`"),
        (lambda wf: wf["jobs"]["drill"]["steps"].pop(), "must fail the run"),
        (_set(("on", "schedule"), [{"cron": DRILL_CRON}]), "schedule"),
        (lambda wf: wf["jobs"]["freshness"].update({"if": "false"}), "freshness"),
    ],
)
def test_each_drill_property_fires_on_a_broken_workflow(mutate, problem):
    wf = copy.deepcopy(load("restore-drill.yml"))
    mutate(wf)
    assert any(problem in found for found in drill_problems(wf)), drill_problems(wf)


def test_the_drill_runs_at_least_as_often_as_its_freshness_limit():
    """Weekly (one weekday): every drill stack must tolerate 7 days between successes, plus slack."""
    from infra.stack_config import plan_for_stack
    from tests.conftest import DRILL_STACKS

    day, month, weekday = DRILL_CRON.split()[2:]
    assert (day, month) == ("*", "*") and weekday.isdigit()
    for stack in DRILL_STACKS:
        assert plan_for_stack(stack).config.drill.max_age_days > 7, stack


def test_a_stack_not_previewed_is_explained_in_the_comment_and_fails_the_job_after_it(tmp_path):
    """The preview script, run by bash with `python -m infra` faked: `diff` refuses one stack (exit 2, the reason on
    stderr, as an environment over its budget is refused) and crashes on another (exit 1 before writing its diff,
    which is not danger). Their errors go into the comment, indented as code, the other stack is still previewed,
    and the step succeeds so the comment is posted; later steps fail the job even after one another."""
    steps = load("preview.yml")["jobs"]["offline-diff"]["steps"]
    script = next(s["run"] for s in steps if s.get("id") == "diff")
    fake = tmp_path / ".venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "#!/bin/bash\n"
        'command=$3; stack=$4; out=""\n'
        'while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done\n'
        'if [ "$command" = diff ] && [ "$stack" = big ]; then\n'
        "  echo \"stack 'big' is over its budget: 9 CPU requested, 3 allowed; largest: rabbitmq\" >&2\n"
        "  echo '```' >&2; exit 2\n"
        "fi\n"
        'if [ "$command" = diff ] && [ "$stack" = crash ]; then echo "Traceback: KeyError" >&2; exit 1; fi\n'
        'if [ -n "$out" ]; then echo "$command of $stack" > "$out"; else echo "$command of $stack"; fi\n'
    )
    fake.chmod(0o755)
    for stack in ("big", "crash", "small"):
        (tmp_path / f"Pulumi.{stack}.yaml").write_text("config: {}\n")
    env = {
        "PATH": os.environ["PATH"],
        "GITHUB_BASE_REF": "main",
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
    }
    result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    preview = (tmp_path / "preview.md").read_text()
    assert "### `big`: not previewed (diff exit 2)" in preview
    assert "\n    stack 'big' is over its budget: 9 CPU requested" in preview and "\n    ```\n" in preview
    assert "### `crash`: not previewed (diff exit 1)" in preview and "    Traceback: KeyError" in preview
    assert "diff of small" in preview and "footprint of small" in preview and "describe of small" in preview
    outputs = (tmp_path / "output").read_text().splitlines()
    assert "refused=1" in outputs and "danger=0" in outputs
    sticky = next(i for i, s in enumerate(steps) if "sticky" in s.get("uses", ""))
    for output in ("refused", "danger"):
        [(i, fail)] = [(i, s) for i, s in enumerate(steps) if f"steps.diff.outputs.{output} == '1'" in s.get("if", "")]
        assert i > sticky and "!cancelled()" in fail["if"]  # runs after the comment, and after the other failure
