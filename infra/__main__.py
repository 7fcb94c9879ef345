"""`python -m infra <command> ...`: the offline tools (render, diff, secrets, ...): see `python -m infra --help`.

The Pulumi program itself is ./__main__.py at the project root.
"""

import os
import select
import sys

from infra.offline.cli import close_event_loops, main


def _stdout_gone() -> bool:
    """Whether standard output's reader has gone: what a failed write left in its buffer fails again, or (nothing
    left, as when unbuffered) the pipe reports an error to a poll, as Linux does for a pipe without readers
    (fs/pipe.c `pipe_poll`: EPOLLERR); a file or a terminal does not."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll on this platform, or no file descriptor
        return False


try:
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit_:  # argparse: --help, a usage error
        code = exit_.code
    finally:
        close_event_loops()
    sys.stdout.flush()  # here rather than at exit, where a reader that has gone could no longer be handled
except BrokenPipeError:
    # The reader went away (`... | head`): no traceback, and nothing more written to the closed pipe when Python
    # flushes at exit (the recipe of the Python documentation, `signal` module, "Note on SIGPIPE"). A closed
    # stderr with standard output intact is not that: re-raised, nothing of standard output lost.
    if not _stdout_gone():
        raise
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 1
sys.exit(code)
