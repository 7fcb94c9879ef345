"""Each real stack rendered once per test run, however many processes run the tests.

Under pytest-xdist every worker is its own process with its own session fixtures: without this, each would render
every stack again (the costliest setup in the suite). The first process to need a stack renders it and pickles
the ProgramRun into a folder every worker shares (`RENDER_CACHE_ENV`, set by the controlling process); the others
wait on a file lock and read it. The key is the stack files' bytes, the program's source and the upstream bytes
it reads (charts, manifests, CRDs): a changed input is a new key, never a stale render. The folder belongs to one
test run; nothing outlives it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pickle
from pathlib import Path

from infra.offline.caches import upstream_digest
from infra.offline.mocks import ProgramRun
from infra.offline.render import render_stack
from infra.stack_config import CODE_FOLDERS, PROJECT_ROOT

RENDER_CACHE_ENV = "SETTLEMENT_TEST_RENDER_CACHE"


def _digest_files(paths, root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()


def key(stack: str, project_dir: Path) -> str:
    """By content, not location: two copies of the same stack files (two tests making the same change in their
    own folders) are one render - the render holds no path of its project folder."""
    code = _digest_files((p for folder in CODE_FOLDERS for p in (PROJECT_ROOT / folder).rglob("*.py")), PROJECT_ROOT)
    stacks = _digest_files(project_dir.glob("Pulumi*.yaml"), project_dir)
    return hashlib.sha256(f"{stack}\n{code}\n{stacks}\n{upstream_digest()}".encode()).hexdigest()[:32]


def render(stack: str, project_dir: Path) -> ProgramRun:
    """`render_stack`, shared through the run's cache folder when there is one."""
    folder = os.environ.get(RENDER_CACHE_ENV)
    if not folder:
        return render_stack(stack, project_dir)
    path = Path(folder) / f"{stack}-{key(stack, project_dir)}.pickle"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process renders; the others wait, then read
        if path.exists():
            return pickle.loads(path.read_bytes())
        run = render_stack(stack, project_dir)
        path.with_suffix(".tmp").write_bytes(pickle.dumps(run, protocol=pickle.HIGHEST_PROTOCOL))
        path.with_suffix(".tmp").rename(path)
        return run
