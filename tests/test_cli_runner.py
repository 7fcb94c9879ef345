"""`tests/cli.py` `run_cli` reports on stderr what a real `python -m infra` process would: the "no traceback"
assertions of the CLI tests rely on it."""

from __future__ import annotations

import threading

from infra.offline import cli
from tests.cli import run_cli


class _RaisesWhenCollected:
    def __del__(self):
        raise ValueError("raised in a finaliser")


def test_what_the_interpreter_reports_instead_of_raising_reaches_stderr(monkeypatch):
    def main(argv: list[str]) -> int:
        garbage = _RaisesWhenCollected()
        garbage.cycle = garbage  # freed by the collector, not on the spot: as an event loop left open would be
        del garbage
        thread = threading.Thread(target=lambda: 1 / 0)
        thread.start()
        thread.join()
        return 0

    monkeypatch.setattr(cli, "main", main)
    result = run_cli("render", "dev")
    assert result.returncode == 0
    assert "raised in a finaliser" in result.stderr and "ZeroDivisionError" in result.stderr
    assert "Traceback" in result.stderr


def test_an_uncaught_exception_is_status_1_with_its_traceback(monkeypatch):
    def main(argv: list[str]) -> int:
        raise KeyError("not handled")

    monkeypatch.setattr(cli, "main", main)
    result = run_cli("render", "dev")
    assert result.returncode == 1 and "Traceback" in result.stderr and "KeyError: 'not handled'" in result.stderr
