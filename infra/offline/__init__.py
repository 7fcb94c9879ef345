"""Offline tools: the real program under the Pulumi SDK's mock mode, and what reads its output.

Nothing here runs at `pulumi up`: render, mocks, chart expansion, schemas, diff, golden, bench, reachability,
safety, the config reference and the `python -m infra` command line.
"""
