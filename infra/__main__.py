"""`python -m infra <command> ...`: the offline tools (render, diff, secrets, ...): see `python -m infra --help`.

The Pulumi program itself is ./__main__.py at the project root.
"""

import sys

from infra.offline.cli import close_event_loops, main

try:
    code = main(sys.argv[1:])
finally:
    close_event_loops()
sys.exit(code)
