"""Entry point, two ways.

- `pulumi up` / `pulumi preview` run this file as the program (Pulumi.yaml: `main: infra/`).
- `python -m infra <command> ...` runs the offline tools (render, ...): see `python -m infra --help`.
"""

import sys

from pulumi.runtime.settings import get_monitor

if get_monitor() is not None:
    # The engine configured the SDK before running us: this is a deployment.
    from infra.program import run

    run()
else:
    from infra.offline.cli import main

    sys.exit(main(sys.argv[1:]))
