"""`python -m infra <command> ...`: the offline tools (render, diff, secrets, ...): see `python -m infra --help`.

The Pulumi program itself is ./__main__.py at the project root.
"""

import os
import sys

from infra.offline.cli import close_event_loops, main

try:
    code = main(sys.argv[1:])
except BrokenPipeError:
    # The reader went away (`... | head`): no traceback, and nothing more written to the closed pipe when Python
    # flushes stdout at exit (the recipe of the Python documentation, `signal` module, "Note on SIGPIPE").
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 1
finally:
    close_event_loops()
sys.exit(code)
