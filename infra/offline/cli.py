"""`python -m infra`: offline tools that need no Pulumi CLI, cluster or cloud account."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pulumi

from infra.errors import ConfigError
from infra.offline.mocks import ProgramFailed
from infra.stack_config import PROJECT_ROOT, require_stack, stack_names


def _render(args: argparse.Namespace) -> int:
    from infra.offline import render

    result = render.render_stack(args.stack, Path(args.project_dir))
    render.write(result, Path(args.out))
    render.write_redacted_alertmanager(args.stack, Path(args.project_dir), Path(args.out))
    objects = len(render.manifests(result))
    print(f"rendered stack {args.stack!r}: {len(result.registrations)} resources, {objects} Kubernetes objects")
    print(f"  -> {args.out}/manifests, {args.out}/resources.json, {args.out}/{render.REDACTED_ALERTMANAGER}")
    return 0


def _stacks(requested: list[str]) -> list[str]:
    """The stacks a command runs on: those named (each must have its file, checked before any work), else all."""
    for stack in requested:
        require_stack(stack)
    return requested or stack_names()


def _bench(args: argparse.Namespace) -> int:
    from infra.offline import bench

    print(bench.report(bench.measure(_stacks(args.stacks), args.repeat)))
    return 0


def _golden(args: argparse.Namespace) -> int:
    from infra.offline import golden, render

    stale = 0
    for stack in _stacks(args.stacks):
        run = render.render_stack(stack)
        if args.write:
            golden.write(stack, run)
            print(f"wrote {golden.path(stack)}")
        elif not golden.path(stack).exists():
            print(
                f"{stack}: no golden subset {golden.path(stack)}; write it with: {golden.REGENERATE}", file=sys.stderr
            )
            stale += 1
        elif json.loads(golden.path(stack).read_text()) != json.loads(json.dumps(golden.subset(run))):
            print(f"{stack}: golden subset differs; regenerate with: {golden.REGENERATE}", file=sys.stderr)
            stale += 1
    if args.write and not args.stacks:
        _write_readme_graph()
    return 1 if stale else 0


def _write_readme_graph() -> None:
    """README shows the sample stack's service graph; after a topology change it is regenerated with the golden
    files (tests/test_describe.py fails on a stale one)."""
    from infra.offline.describe import README_GRAPH_STACK, readme_with_graph
    from infra.stack_config import plan_for_stack

    readme = PROJECT_ROOT / "README.md"
    if README_GRAPH_STACK in stack_names():
        text = readme.read_text()
        updated = readme_with_graph(text, plan_for_stack(README_GRAPH_STACK))
        if updated != text:
            readme.write_text(updated)
            print(f"wrote {readme} (the {README_GRAPH_STACK} service graph)")


def _policy_config(args: argparse.Namespace) -> int:
    from infra.offline import golden, policy_config
    from infra.stack_config import plan_for_stack

    stale = 0
    for stack in _stacks(args.stacks):
        expected, target = policy_config.text(plan_for_stack(stack)), policy_config.path(stack)
        if args.write:
            target.write_text(expected)
            print(f"wrote {target}")
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
    changes = diff.diff(base.resources, render.resources(head))
    alertmanager = (base.alertmanager, render.redacted_alertmanager(args.stack, project))
    text = diff.report(args.stack, args.base, changes, alertmanager)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    # Exit 1 when the change would destroy or replace something stateful: CI marks the check red.
    # Exit 2 (from the handlers above and in `main`) when there is no diff to judge.
    return 1 if any(c.dangers for c in changes) else 0


def _reachability(args: argparse.Namespace) -> int:
    from infra.network import declared_edges, pod_groups
    from infra.offline import render
    from infra.offline.reachability import destinations, expand, external_edges, inventory, matrix, platform_edges
    from infra.stack_config import plan_for_stack

    plan = plan_for_stack(args.stack, Path(args.project_dir))
    run = render.render_stack(args.stack, Path(args.project_dir))
    declared = expand(declared_edges(plan, pod_groups(plan)))
    ports = {e[2] for e in declared}
    actual = platform_edges(run, plan, ports)
    # Connections leaving the cluster are listed for the audit; the drift check below is the pod graph's.
    external = external_edges(run, plan, ports)
    known = destinations(actual | external, inventory(run, plan))
    if args.to is not None and args.to not in known:
        print(
            f"--to {args.to!r} is not a pod, namespace or external network of stack {args.stack!r}; known:",
            file=sys.stderr,
        )
        print("  " + ", ".join(known), file=sys.stderr)
        return 2
    print(f"# Who can reach whom in stack {args.stack!r} (from the rendered NetworkPolicies)\n")
    print(matrix(actual | external, args.to))
    drift = (actual - declared) | (declared - actual)
    if drift:
        print(f"\n{len(drift)} edges differ from the declared service graph:", file=sys.stderr)
        for edge in sorted(drift):
            print(
                f"  {'extra' if edge in actual else 'missing'}: {edge[0]} -> {edge[1]} {edge[2]}/{edge[3]}",
                file=sys.stderr,
            )
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="render a stack's Kubernetes objects offline (mock mode)")
    render.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    render.add_argument("--out", required=True, help="output folder (manifests/ and resources.json)")
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
    reach = commands.add_parser(
        "reachability", help="print which pods can open connections to which (audit matrix); exit 1 on drift"
    )
    reach.add_argument("stack")
    reach.add_argument(
        "--to", help="only this destination: a pod (payment/payment-db), a namespace, or 'external <cidr>'"
    )
    reach.add_argument("--project-dir", default=str(PROJECT_ROOT), help="folder holding Pulumi.yaml")
    reach.set_defaults(func=_reachability)
    bench = commands.add_parser("bench", help="time the offline render and measure its memory")
    bench.add_argument("stacks", nargs="*", help="default: every stack")
    bench.add_argument("--repeat", type=int, default=5)
    bench.set_defaults(func=_bench)
    return parser


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
        print(str(failure.cause), file=sys.stderr)
        return 2
