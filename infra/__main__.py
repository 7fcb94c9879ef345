"""`python -m infra <command> ...`: the offline tools (render, diff, secrets, ...): see `python -m infra --help`.

The Pulumi program itself is ./__main__.py at the project root.
"""

import sys

from infra.offline.cli import main

sys.exit(main(sys.argv[1:]))
