"""`python -m infra`: offline tools that need no Pulumi CLI, cluster or cloud account."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pulumi

from infra.errors import ConfigError
from infra.mocks import ProgramFailed
from infra.stack_config import PROJECT_ROOT


def _render(args: argparse.Namespace) -> int:
    from infra import render

    result = render.render_stack(args.stack, Path(args.project_dir))
    render.write(result, Path(args.out))
    objects = len(render.manifests(result))
    print(f"rendered stack {args.stack!r}: {len(result.registrations)} resources, {objects} Kubernetes objects")
    print(f"  -> {args.out}/manifests, {args.out}/resources.json")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from infra import bench

    print(bench.report(bench.measure(args.stacks, args.repeat)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="render a stack's Kubernetes objects offline (mock mode)")
    render.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    render.add_argument("--out", required=True, help="output folder (manifests/ and resources.json)")
    render.add_argument("--project-dir", default=str(PROJECT_ROOT), help="folder holding Pulumi.yaml")
    render.set_defaults(func=_render)
    bench = commands.add_parser("bench", help="time the offline render and measure its memory")
    bench.add_argument("stacks", nargs="*", default=["dev", "prod"])
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
    except ProgramFailed as failure:
        if not isinstance(failure.cause, pulumi.RunError):
            raise failure.cause from None
        print(str(failure.cause), file=sys.stderr)
        return 2
