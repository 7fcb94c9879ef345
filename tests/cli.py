"""The offline CLI, `python -m infra <command> ...`, run inside the test's own process.

A new interpreter per call paid its start, its imports and cold per-process caches (parsed manifests and charts,
schemas) on every command of every test; in the worker's process the warm ones serve. `run_cli` reproduces what
the process adds around `cli.main` (infra/__main__.py): an argparse error's exit status; for an uncaught exception
the interpreter's status 1 with the traceback on stderr; the event loops closed before exit; and what the
interpreter reports on stderr rather than raises - an exception in a thread, one ignored in a finaliser - which
pytest would otherwise turn into a warning. So "no traceback" assertions keep their meaning. `run_cli_process`
starts the real entry point, for the tests of the entry point itself (a refusal leaves no traceback at exit, a
missing mirror file)."""

from __future__ import annotations

import contextlib
import gc
import io
import subprocess
import sys
import threading
import traceback

from infra.offline import cli
from infra.stack_config import PROJECT_ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    hooks = sys.unraisablehook, threading.excepthook
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        # The interpreter's own reporting, to the captured stderr (pytest's hooks would collect them instead).
        sys.unraisablehook, threading.excepthook = sys.__unraisablehook__, threading.__excepthook__
        try:
            code = cli.main(list(args))
        except SystemExit as exit_:  # argparse: usage error (2) or --help (0)
            code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
        except Exception:  # as the interpreter reports it
            traceback.print_exc()
            code = 1
        finally:
            cli.close_event_loops()  # as infra/__main__.py does before exit
            gc.collect()  # what finalisers would report at exit, reported now
            sys.unraisablehook, threading.excepthook = hooks
    return subprocess.CompletedProcess(["python", "-m", "infra", *args], code, out.getvalue(), err.getvalue())


def run_cli_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infra", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
