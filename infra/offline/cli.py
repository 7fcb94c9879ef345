"""`python -m infra`: offline tools that need no Pulumi CLI, cluster or cloud account."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
from pathlib import Path

import pulumi

from infra.errors import ConfigError
from infra.offline.mocks import ProgramFailed
from infra.stack_config import PROJECT_ROOT, require_stack, stack_names


def _render(args: argparse.Namespace) -> int:
    from infra.offline import render

    out = Path(args.out or f"out/{args.stack}")
    result = render.render_stack(args.stack, Path(args.project_dir))
    render.write(result, out, with_manifests=os.environ.get(render.LIST_ONLY_ENV) != "1")
    render.write_redacted_alertmanager(args.stack, Path(args.project_dir), out)
    render.write_dr_state(args.stack, Path(args.project_dir), out)
    objects = len(render.manifests(result))
    print(f"rendered stack {args.stack!r}: {len(result.registrations)} resources, {objects} Kubernetes objects")
    print(f"  -> {out}/manifests, {out}/resources.json, {out}/{render.REDACTED_ALERTMANAGER}")
    _warn_if_not_deployable(args.stack, Path(args.project_dir))
    return 0


def _warn_if_not_deployable(stack: str, project_dir: Path) -> None:
    """The render works without a target cluster; the engine does not (infra.program.deployment_refusal)."""
    from infra.program import deployment_refusal
    from infra.stack_config import plan_for_stack

    refusal = deployment_refusal(plan_for_stack(stack, project_dir), stack)
    if refusal is not None:
        print(f"warning: {refusal}", file=sys.stderr)


def _secrets(args: argparse.Namespace) -> int:
    from infra.stack_config import placeholder_secrets

    placeholders = placeholder_secrets(args.stack, Path(args.project_dir))
    if not placeholders:
        print(f"stack {args.stack!r}: every secret is set (no placeholder ciphertext left)")
        return 0
    stream = sys.stderr if args.check else sys.stdout
    count = len(placeholders)
    print(
        f"stack {args.stack!r}: {count} {'secret is a' if count == 1 else 'secrets are'} committed placeholder"
        f"{'' if count == 1 else 's'} that `pulumi preview` cannot decrypt. Set each (the value is prompted for), "
        f"then commit Pulumi.{args.stack}.yaml:",
        file=stream,
    )
    for secret in placeholders:
        where = secret.key if secret.path is None else f"{secret.key}.{secret.path}"
        print(f"  {where} ({secret.file}): {secret.command(args.stack)}", file=stream)
    return 1 if args.check else 0


def _at_least_one(text: str) -> int:
    """A count the command needs at least one of (`--repeat`, `--copies`): a median of no samples, or a topology of
    no copies, would be no figure."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def _stacks(requested: list[str]) -> list[str]:
    """The stacks a command runs on: those named (each must have its file, checked before any work), else all."""
    for stack in requested:
        require_stack(stack)
    return requested or stack_names()


def _bench(args: argparse.Namespace) -> int:
    from infra.offline import bench

    stacks = _stacks(args.stacks)
    if args.scale_stack:
        require_stack(args.scale_stack)  # before a minute of other work
    scale = args.scale_stack or bench.default_scale_stack(stacks)
    text, valid = bench.measure(stacks, args.repeat, scale, args.copies, args.tests)
    print(text)
    return 0 if valid else 1


def _upstream(args: argparse.Namespace) -> int:
    from infra.offline import upstream

    folders = upstream.roots()
    where = ", ".join(f"{name} = {folder}" for name, folder in folders.items())
    if args.write:
        from infra.offline import render

        found, refused = upstream.files(folders)
        unpinnable = upstream.missing_folders(folders) + upstream.refusals(refused)
        if unpinnable:
            print(f"not written: the upstream folders ({where}) hold what no lock can pin:", file=sys.stderr)
            print("\n".join(f"  {problem}" for problem in unpinnable), file=sys.stderr)
            return 1
        read = {u for stack in stack_names() for u in upstream.read_by(render.render_stack(stack))}
        crds = {upstream.unit(name) for name in found if name.startswith("crds/")}
        upstream.LOCK.write_text(upstream.lock_text(upstream.digests(folders, read | crds)))
        print(
            f"wrote {upstream.shown(upstream.LOCK)}: the {len(read)} chart versions and manifests every stack reads "
            f"and the {len(crds)} CRD groups ({where})"
        )
        return 0
    found = upstream.check(folders)
    if found:
        print(f"the upstream bytes ({where}) differ from {upstream.shown(upstream.LOCK)}:", file=sys.stderr)
        print("\n".join(f"  {problem}" for problem in found), file=sys.stderr)
        print(
            "Restore each file from its upstream release (the folders' SOURCES.md and SHA256SUMS name them); after a "
            "deliberate version bump, rewrite the lock with `python -m infra upstream --write` and review it.",
            file=sys.stderr,
        )
        return 1
    locked = len(upstream.read_lock(upstream.LOCK.read_text()))
    print(f"the {locked} locked upstream files match: {', '.join(map(str, folders.values()))}")
    return 0


def _golden(args: argparse.Namespace) -> int:
    from infra.offline import golden, render

    stale = 0
    for stack in _stacks(args.stacks):
        run = render.render_stack(stack)
        if args.write:
            print(f"{'wrote' if golden.write(stack, run) else 'unchanged:'} {golden.path(stack)}")
        elif not golden.path(stack).exists():
            print(
                f"{stack}: no golden subset {golden.path(stack)}; write it with: {golden.REGENERATE}", file=sys.stderr
            )
            stale += 1
        elif json.loads(golden.path(stack).read_text()) != json.loads(json.dumps(golden.subset(run))):
            print(f"{stack}: golden subset differs; regenerate with: {golden.REGENERATE}", file=sys.stderr)
            stale += 1
    if args.write and not args.stacks:
        _write_readme()
    return 1 if stale else 0


def _write_readme() -> None:
    """README shows the sample stack's service graph and the configuration reference; after a topology or model
    change both are regenerated with the golden files (tests/test_describe.py and tests/test_docs.py fail on a
    stale one)."""
    from infra.offline.describe import README_GRAPH_STACK, readme_with_graph
    from infra.offline.reference import readme_with_reference
    from infra.stack_config import plan_for_stack

    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text()
    updated = readme_with_reference(text)
    if README_GRAPH_STACK in stack_names():
        updated = readme_with_graph(updated, plan_for_stack(README_GRAPH_STACK))
    if updated != text:
        readme.write_text(updated)
        print(f"wrote {readme} (its generated service graph and configuration reference)")


def _policy_config(args: argparse.Namespace) -> int:
    from infra.offline import golden, policy_config
    from infra.stack_config import plan_for_stack

    stale = 0
    for stack in _stacks(args.stacks):
        expected, target = policy_config.text(plan_for_stack(stack)), policy_config.path(stack)
        if args.write:
            print(f"{'wrote' if golden.write_if_changed(target, expected) else 'unchanged:'} {target}")
        elif not target.exists() or target.read_text() != expected:
            print(f"{stack}: {target} is missing or stale; regenerate with: {golden.REGENERATE}", file=sys.stderr)
            stale += 1
    return 1 if stale else 0


def _describe(args: argparse.Namespace) -> int:
    from infra.offline.describe import describe
    from infra.stack_config import plan_for_stack

    print(describe(args.stack, plan_for_stack(args.stack, Path(args.project_dir))))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from infra.offline import diff, render

    project = Path(args.project_dir)
    try:
        head = render.render_stack(args.stack, project)  # first: a bad config fails before the slow base render
        base = diff.render_ref(args.stack, args.base, project)
    except diff.DiffError as error:
        print(f"diff {args.stack!r} against {args.base!r}: {error}", file=sys.stderr)
        return 2
    except ProgramFailed as failure:
        if isinstance(failure.cause, pulumi.RunError):
            raise
        # Exit 1 means danger to CI: a crash of the working tree's program must not look like one.
        print(
            f"diff {args.stack!r}: rendering the working tree failed: {type(failure.cause).__name__}: "
            f"{failure.cause}\n(`python -m infra render {args.stack} --out <dir>` shows the traceback)",
            file=sys.stderr,
        )
        return 2
    switchover = diff.switchover_context(base.dr_state, render.dr_state(args.stack, project))
    changes = diff.diff(base.resources, render.resources(head), switchover)
    alertmanager = (base.alertmanager, render.redacted_alertmanager(args.stack, project))
    text = diff.report(args.stack, args.base, changes, alertmanager)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    # Exit 1 when the change would destroy or replace something stateful: CI marks the check red.
    # Exit 2 (from the handlers above and in `main`) when there is no diff to judge.
    return 1 if any(c.dangers for c in changes) else 0


def _footprint(args: argparse.Namespace) -> int:
    from infra.offline import diff, footprint, render

    project = Path(args.project_dir)
    head = footprint.footprint(render.render_stack(args.stack, project).all_objects())
    base = None
    if args.base:
        try:
            base_resources = diff.render_ref(args.stack, args.base, project).resources
        except diff.DiffError as error:
            print(f"footprint {args.stack!r} against {args.base!r}: {error}", file=sys.stderr)
            return 2
        base = footprint.footprint(footprint.objects_of(base_resources))
    from infra.stack_config import plan_for_stack

    text = footprint.markdown(args.stack, head, base, plan_for_stack(args.stack, project).config.budget)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def _reachability(args: argparse.Namespace) -> int:
    from infra.offline import render
    from infra.offline.audit import audit
    from infra.offline.reachability import destinations, matrix
    from infra.stack_config import plan_for_stack

    plan = plan_for_stack(args.stack, Path(args.project_dir))
    run = render.render_stack(args.stack, Path(args.project_dir))
    result = audit(run, plan)
    known = destinations(result.reachable, result.pods)
    if args.to is not None and args.to not in known:
        print(
            f"--to {args.to!r} is not a pod, namespace or external network of stack {args.stack!r}; known:",
            file=sys.stderr,
        )
        print("  " + ", ".join(known), file=sys.stderr)
        return 2
    print(f"# Who can reach whom in stack {args.stack!r} (from the rendered NetworkPolicies)\n")
    print("`why`: declared by the service graph and config, or derived from a rendered object that needs it.\n")
    print(matrix(result.reachable | result.missing, args.to, why=_why(result)))
    for reference in result.unresolved:
        print(f"warning: {reference} leads to no pod or port", file=sys.stderr)
    for group in result.empty:
        print(
            f"drift: the policy group {group} selects no rendered pod (infra/network.py chart_pods?)", file=sys.stderr
        )
    drift = result.missing | result.extra
    if result.empty and not drift:
        return 1
    if drift:
        print(f"\n{len(drift)} connections differ from the declared and derived ones:", file=sys.stderr)
        for edge in sorted(drift):
            kind = (
                "missing (required, not reachable)"
                if edge in result.missing
                else "extra (neither declared nor derived)"
            )
            reasons = "; ".join(result.why(edge))
            print(
                f"  {kind}: {edge[0]} -> {edge[1]} {edge[2]}/{edge[3]}{f' [{reasons}]' if reasons else ''}",
                file=sys.stderr,
            )
        return 1
    return 0


def _why(result):
    def why(edge) -> list[str]:
        reasons = result.why(edge)
        return ["NOT REACHABLE: " + r for r in reasons] if edge in result.missing else reasons

    return why


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="render a stack's Kubernetes objects offline (mock mode)")
    render.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    render.add_argument("--out", help="output folder (manifests/ and resources.json); default: out/<stack>")
    render.add_argument("--project-dir", default=str(PROJECT_ROOT), help="folder holding Pulumi.yaml")
    render.set_defaults(func=_render)
    gold = commands.add_parser("golden", help="check (or --write) the golden subsets in tests/golden/")
    gold.add_argument("stacks", nargs="*", help="default: every stack (every Pulumi.<stack>.yaml)")
    gold.add_argument("--write", action="store_true")
    gold.set_defaults(func=_golden)
    policy = commands.add_parser(
        "policy-config", help="check (or --write) policy/config.<stack>.json, derived from the stack's guardrails"
    )
    policy.add_argument("stacks", nargs="*", help="default: every stack")
    policy.add_argument("--write", action="store_true")
    policy.set_defaults(func=_policy_config)
    describe = commands.add_parser(
        "describe", help="the environment at a glance (Markdown tables and a Mermaid graph) from the plan"
    )
    describe.add_argument("stack")
    describe.add_argument("--project-dir", default=str(PROJECT_ROOT), help="folder holding Pulumi.yaml")
    describe.set_defaults(func=_describe)
    diff = commands.add_parser(
        "diff",
        help="offline preview diff against a git ref (Markdown for a PR); exit 1 if danger was found, 2 if the diff"
        " cannot be made (bad ref, bad config, a side fails to render)",
    )
    diff.add_argument("stack")
    diff.add_argument("--base", required=True, help="git ref to compare with, e.g. origin/main")
    diff.add_argument("--out", help="also write the Markdown to this file")
    diff.add_argument("--project-dir", default=str(PROJECT_ROOT), help="folder holding Pulumi.yaml (a git work tree)")
    diff.set_defaults(func=_diff)
    foot = commands.add_parser(
        "footprint",
        help="CPU, memory and storage the environment asks of the cluster, per subsystem (Markdown), at minimum "
        "and maximum scale; --base adds the change against a git ref",
    )
    foot.add_argument("stack")
    foot.add_argument("--base", help="git ref to compare with, e.g. origin/main")
    foot.add_argument("--out", help="also write the Markdown to this file")
    foot.add_argument("--project-dir", default=str(PROJECT_ROOT), help="folder holding Pulumi.yaml")
    foot.set_defaults(func=_footprint)
    reach = commands.add_parser(
        "reachability", help="print which pods can open connections to which (audit matrix); exit 1 on drift"
    )
    reach.add_argument("stack")
    reach.add_argument(
        "--to", help="only this destination: a pod (payment/payment-db), a namespace, or 'external <cidr>'"
    )
    reach.add_argument("--project-dir", default=str(PROJECT_ROOT), help="folder holding Pulumi.yaml")
    reach.set_defaults(func=_reachability)
    secrets = commands.add_parser(
        "secrets",
        help="list the stack's secrets that are still committed placeholders, with the command that sets each; "
        "--check: exit 1 if there is one (run before `pulumi preview` / `pulumi up`)",
    )
    secrets.add_argument("stack")
    secrets.add_argument("--check", action="store_true", help="exit 1 when a placeholder is left")
    secrets.add_argument("--project-dir", default=str(PROJECT_ROOT), help="folder holding Pulumi.yaml")
    secrets.set_defaults(func=_secrets)
    drill = commands.add_parser(
        "drill",
        help="restore drill: `judge` a run from the verifiers' logs (exit 1 if a database failed or exceeded the "
        "RTO), check the last success is `fresh` (exit 1 if older than drill.maxAgeDays), print the identities' "
        "`scope`",
    )
    drill.add_argument("stack")
    drill.add_argument("action", choices=["judge", "fresh", "scope"])
    drill.add_argument("--logs", help="judge: the verifier Jobs' logs")
    drill.add_argument("--out", help="judge: where to write the result record (JSON)")
    drill.add_argument("--last", help="fresh: the last successful record (JSON; absent: none yet)")
    drill.add_argument("--now", help="ISO 8601 time to judge at (default: now)")
    drill.add_argument("--project-dir", default=str(PROJECT_ROOT), help="folder holding Pulumi.yaml")
    drill.set_defaults(func=_drill)
    bench = commands.add_parser(
        "bench", help="time the program against its floor, every stack's render and (--tests) make test"
    )
    bench.add_argument("stacks", nargs="*", help="stacks whose render is timed (default: every stack)")
    bench.add_argument("--repeat", type=_at_least_one, default=5, help="samples of each program (default: 5)")
    bench.add_argument(
        "--scale-stack",
        help="stack whose program is compared with the floor, as it is and at --copies the services "
        "(default: prod, else the last stack)",
    )
    bench.add_argument(
        "--copies", type=_at_least_one, default=10, help="the scaled comparison's copies of the topology (default: 10)"
    )
    bench.add_argument("--tests", action="store_true", help="also time the test suite")
    bench.set_defaults(func=_bench)
    upstream = commands.add_parser(
        "upstream", help="check the charts, release manifests and CRDs against infra/offline/upstream.sha256"
    )
    upstream.add_argument("--write", action="store_true", help="rewrite the lock from the folders instead")
    upstream.set_defaults(func=_upstream)
    return parser


def _drill(args: argparse.Namespace) -> int:
    """The restore drill's bookkeeping (README "Restore drill"): judge a run, check freshness, print the scope."""
    from datetime import UTC, datetime

    from infra import drill
    from infra.stack_config import plan_for_stack

    plan = plan_for_stack(args.stack, Path(args.project_dir))
    if plan.config.drill is None:
        print(f"stack {args.stack!r} is not a restore drill (no `drill` in Pulumi.{args.stack}.yaml)", file=sys.stderr)
        return 2
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)  # a time without an offset is UTC
    if args.action == "scope":
        print(json.dumps(drill.identity_scope(plan), indent=2))
        return 0
    if args.action == "judge":
        results = drill.parse_results(Path(args.logs).read_text())
        record = drill.record(plan, results, now)
        Path(args.out).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        for result in results:
            print(
                f"{result.get('server')}: restored in {result.get('restoreSeconds')} s, recovered point "
                f"{result.get('recoveredPoint')}, {result.get('userTables')} tables"
            )
        for problem in record["problems"]:
            print(f"drill failed: {problem}", file=sys.stderr)
        return 0 if record["passed"] else 1
    last = Path(args.last)
    stale = drill.staleness(plan, json.loads(last.read_text()) if last.is_file() else None, now)
    if stale is not None:
        print(f"restore drill overdue: {stale}", file=sys.stderr)
        return 1
    print(f"stack {args.stack!r}: the last successful drill is within {plan.config.drill.max_age_days} days")
    return 0


def _refusal_naming_files(args: argparse.Namespace, cause: pulumi.RunError) -> str:
    """The program's refusal (it reads config as the engine hands it, without files) with each problem's file,
    from the same validation over the stack files."""
    from infra.stack_config import plan_for_stack

    stack, project_dir = getattr(args, "stack", None), getattr(args, "project_dir", None)
    if stack is None or project_dir is None:
        return str(cause)
    try:
        plan_for_stack(stack, Path(project_dir))
    except ConfigError as error:
        return error.report(stack)
    return str(cause)


def close_event_loops() -> None:
    """The Pulumi SDK registers resources from its loop's executor threads, each of which makes a loop of its own
    (pulumi/runtime/sync_await.py, `_ensure_event_loop`) and never closes it. The harness shuts each program's own
    loop and executor down (`infra.offline.mocks`), but the threads' loops stay open until collected; left to
    interpreter shutdown, one may be collected after the modules its close needs are gone, printing a traceback after
    a clean refusal ("Invalid file descriptor: -1"). Called before exit: every loop still open and idle is closed. A
    loop that starts running meanwhile (an interrupted render whose program thread is still going) is left alone."""
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.BaseEventLoop) and not obj.is_closed() and not obj.is_running():
            with contextlib.suppress(RuntimeError):  # it started running after the check
                obj.close()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as error:
        print(error.report(getattr(args, "stack", "?")), file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(str(error), file=sys.stderr)
        return 2
    except ProgramFailed as failure:
        if not isinstance(failure.cause, pulumi.RunError):
            raise failure.cause from None
        print(_refusal_naming_files(args, failure.cause), file=sys.stderr)
        return 2
