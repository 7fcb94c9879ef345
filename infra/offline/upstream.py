"""The upstream bytes the offline checks read, pinned by content: `infra/offline/upstream.sha256`.

The render, the diff, the footprint and the tests read three read-only folders of upstream bytes (`caches.py`:
the charts as `helm pull --untar` gives them, the operators' release manifests, CRDs no chart ships). They are not
in this repository: a developer's machine has them in `../shared/`, a CI runner gets them from a mirror
(README "CI and deploys"). The lock names every file and its SHA-256, so wherever the folders come from, a check
runs against exactly the bytes the project was tested with, and a changed, missing or injected file is named
before anything is rendered from it.

A unit is one chart version (`charts/<chart>-<version>/`), one release manifest (`manifests/<file>`) or one CRD
group (`crds/<group>/`). Inside a locked unit every file must be listed: an extra template would change the
render. Units the lock does not name (another chart version kept beside it, for a base branch that still pins it)
are left alone, as are the folders' own notes at their top level (README.md, SOURCES.md, SHA256SUMS).

`python -m infra upstream` checks the folders; `--write` rewrites the lock from them (after a deliberate bump,
reviewed like any pinned version).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from infra.offline import caches
from infra.stack_config import PROJECT_ROOT

LOCK = Path(__file__).with_name("upstream.sha256")
NOTES = frozenset({"README.md", "SOURCES.md", "SHA256SUMS"})
"""Files at a folder's top level that describe it; not read by any check."""


def shown(path: Path) -> str:
    """`path` relative to the project when it is inside it (the committed lock), else as it is."""
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def roots() -> dict[str, Path]:
    """Each locked folder by the name its files carry in the lock, wherever it is configured (`caches.py`)."""
    return {"charts": caches.CHARTS_DIR, "manifests": caches.MANIFESTS_DIR, "crds": caches.CRDS_DIR}


def unit(path: str) -> str:
    """The unit a locked path belongs to: `charts/<chart>-<version>`, `manifests/<file>` or `crds/<group>`."""
    parts = path.split("/")
    return "/".join(parts[:2])


def digests(folders: Mapping[str, Path]) -> dict[str, str]:
    """Every file of the folders (their top-level notes aside) as `<folder name>/<relative path>` -> SHA-256."""
    out = {}
    for name, folder in folders.items():
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and not (len(relative.parts) == 1 and relative.name in NOTES):
                out[f"{name}/{relative.as_posix()}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def lock_text(files: Mapping[str, str]) -> str:
    """`sha256sum`'s format, one file a line, sorted: `sha256sum -c` reads it from the folders' parent."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(files.items()))


def read_lock(text: str) -> dict[str, str]:
    files = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, separator, path = line.partition("  ")
        if not separator or len(digest) != 64 or not path:
            raise RuntimeError(f"{shown(LOCK)} line {number}: expected '<sha256>  <path>', got {line!r}")
        files[path] = digest
    return files


def problems(lock: Mapping[str, str], folders: Mapping[str, Path]) -> list[str]:
    """What differs between the locked files and the folders, one sentence a file; empty when they agree."""
    missing_folders = [f"{name}: folder {folder} not found" for name, folder in folders.items() if not folder.is_dir()]
    if missing_folders:
        return missing_folders
    found = digests(folders)
    locked_units = {unit(path) for path in lock}
    out = []
    for path, digest in sorted(lock.items()):
        if path not in found:
            out.append(f"{path}: missing (locked {digest[:12]}…)")
        elif found[path] != digest:
            out.append(f"{path}: changed (locked {digest[:12]}…, found {found[path][:12]}…)")
    for path in sorted(found.keys() - lock.keys()):
        if unit(path) in locked_units:
            out.append(f"{path}: not in the lock, inside the locked {unit(path)}")
    return out


def check(folders: Mapping[str, Path] | None = None) -> list[str]:
    """`problems` of the committed lock against the configured folders."""
    return problems(read_lock(LOCK.read_text()), folders or roots())
