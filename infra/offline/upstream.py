"""The upstream bytes the offline checks read, pinned by content: `infra/offline/upstream.sha256`.

The render, the diff, the footprint and the tests read three read-only folders of upstream bytes (`caches.py`:
the charts as `helm pull --untar` gives them, the operators' release manifests, CRDs no chart ships). They are not
in this repository: a developer's machine has them in `../shared/`, a CI runner gets them from a mirror
(README "CI and deploys"). The lock names every file and its SHA-256, so wherever the folders come from, a check
runs against exactly the bytes the project was tested with, and a changed, missing or injected file is named:
by `python -m infra upstream`, which CI runs before anything else reads them, by `make test`, and by the diff for
its base ref's own lock. The render itself does not check.

A unit is one chart version (`charts/<chart>-<version>/`), one release manifest (`manifests/<file>`) or one CRD
group (`crds/<group>/`). Inside a locked unit every file must be listed: an extra template would change the
render. Every CRD file is locked, whatever its group: the schema checks load them all (`schemas.load_crd_schemas`).
Other chart versions and manifests the lock does not name (kept beside the pinned ones for a base branch that still
pins them) are left alone, as are the folders' own notes at their top level (README.md, SOURCES.md, SHA256SUMS).
A symbolic link anywhere in the folders is refused: Helm's loader follows it (helm v4.2.3, the engine of
helm-python-sdk 0.2.2: pkg/chart/v2/loader/directory.go walks a chart with internal/sympath `Walk`, which includes a
linked file's contents), so the files it points to would be read without being pinned. `tests/test_upstream.py` also
checks that every unit a stack's render reads (`read_by`) is locked, so a version bump without a new lock fails.

`python -m infra upstream` checks the folders; `--write` rewrites the lock with the units every stack reads and
every CRD (after a deliberate bump, reviewed like any pinned version).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from infra.offline import caches
from infra.stack_config import PROJECT_ROOT

if TYPE_CHECKING:
    from infra.offline.mocks import ProgramRun

LOCK_IN_PROJECT = Path("infra", "offline", "upstream.sha256")
LOCK = PROJECT_ROOT / LOCK_IN_PROJECT
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


def files(folders: Mapping[str, Path]) -> tuple[dict[str, Path], dict[str, str]]:
    """Every regular file of the folders (their top-level notes aside) by its locked name
    (`<folder name>/<relative path>`), and what cannot be pinned, by name: a symbolic link or other non-regular
    entry (links are not followed), a folder that cannot be read."""
    found: dict[str, Path] = {}
    refused: dict[str, str] = {}
    for name, folder in folders.items():

        def unreadable(error: OSError, name: str = name, folder: Path = folder) -> None:
            where = Path(error.filename).relative_to(folder).as_posix() if error.filename else ""
            refused[f"{name}/{where}".rstrip("/")] = f"cannot be read ({error.strerror})"

        for directory, subdirectories, names in os.walk(folder, onerror=unreadable):
            here = Path(directory)
            for entry in sorted([*subdirectories, *names]):
                path = here / entry
                relative = path.relative_to(folder)
                locked = f"{name}/{relative.as_posix()}"
                if path.is_symlink():
                    refused[locked] = "a symbolic link; the lock pins regular files only"
                elif entry in names and not (len(relative.parts) == 1 and entry in NOTES):
                    if path.is_file():
                        found[locked] = path
                    else:
                        refused[locked] = "a special file; the lock pins regular files only"
    return found, refused


def missing_folders(folders: Mapping[str, Path]) -> list[str]:
    return [f"{name}: folder {folder} not found" for name, folder in folders.items() if not folder.is_dir()]


def refusals(refused: Mapping[str, str]) -> list[str]:
    """`files`' refused entries as problems, one a line."""
    return [f"{name}: {reason}" for name, reason in sorted(refused.items())]


def sha256(path: Path) -> str:
    """The file's SHA-256, computed once per process while its size, modification time and inode stay the same (the
    diff checks its base's lock on every run, and the tests run many)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _DIGESTS[key]


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def digests(folders: Mapping[str, Path], units: set[str] | None = None) -> dict[str, str]:
    """The SHA-256 of every file of the folders (of `units` only, when given)."""
    found, _ = files(folders)
    return {name: sha256(path) for name, path in sorted(found.items()) if units is None or unit(name) in units}


def read_by(run: ProgramRun) -> set[str]:
    """The units a stack's render reads: each Helm release's chart folder (`charts.chart_folder`), each release
    manifest's mirror file (`release_manifest.read_manifest`, named after the URL its objects carry)."""
    from components.release_manifest import SOURCE_ANNOTATION, mirror_file_name
    from infra.offline.charts import RELEASE_TYPES, release_of

    out = {f"charts/{release_of(r).folder}" for r in run.registrations if r.type in RELEASE_TYPES}
    for obj in run.kubernetes_objects():
        url = ((obj.get("metadata") or {}).get("annotations") or {}).get(SOURCE_ANNOTATION)
        if url and "/releases/download/" in url:
            tag, asset = url.split("/releases/download/", 1)[1].split("/", 1)
            out.add(f"manifests/{mirror_file_name(asset, tag)}")
    return out


def lock_text(locked: Mapping[str, str]) -> str:
    """`sha256sum`'s format, one file a line, sorted: `sha256sum -c` reads it from the folders' parent."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(locked.items()))


def read_lock(text: str) -> dict[str, str]:
    """The lock's files and their SHA-256 (`lock_text`'s format); a malformed or repeated line is an error."""
    files: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, separator, path = line.partition("  ")
        if not separator or not re.fullmatch(r"[0-9a-f]{64}", digest) or not path:
            raise RuntimeError(f"{shown(LOCK)} line {number}: expected '<sha256 in hex>  <path>', got {line!r}")
        if path in files:
            raise RuntimeError(f"{shown(LOCK)} line {number}: {path} is listed twice")
        files[path] = digest
    return files


def problems(lock: Mapping[str, str], folders: Mapping[str, Path]) -> list[str]:
    """What differs between the locked files and the folders, one sentence a file (a unit missing whole, and a
    folder holding none of its locked files, in one); empty when they agree."""
    absent = missing_folders(folders)
    if absent:
        return absent
    found, refused = files(folders)
    out = refusals(refused)
    missing = sorted(path for path in lock if path not in found and path not in refused)
    by_unit: dict[str, list[str]] = {}
    for path in missing:
        by_unit.setdefault(unit(path), []).append(path)
    for name, folder in folders.items():
        locked_here = [path for path in lock if path.startswith(f"{name}/")]
        if len({unit(path) for path in locked_here}) > 1 and all(path in missing for path in locked_here):
            out.append(f"{name}: none of its {len(locked_here)} locked files is in {folder} (is it the {name} folder?)")
            by_unit = {u: paths for u, paths in by_unit.items() if not u.startswith(f"{name}/")}
    for unit_name, paths in sorted(by_unit.items()):
        whole = len(paths) > 1 and len(paths) == sum(unit(path) == unit_name for path in lock)
        out += (
            [f"{unit_name}: missing (all {len(paths)} locked files)"]
            if whole
            else [f"{path}: missing (locked {lock[path][:12]}…)" for path in paths]
        )
    for path, digest in sorted(lock.items()):
        if path in found:
            try:
                actual = sha256(found[path])
                if actual == digest:
                    continue
                data = found[path].read_bytes()
            except OSError as error:
                out.append(f"{path}: cannot be read ({error.strerror})")
                continue
            if hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest() == digest:
                out.append(f"{path}: changed, its line endings converted to CRLF (keep the bytes: `* -text`)")
            else:
                out.append(f"{path}: changed (locked {digest[:12]}…, found {actual[:12]}…)")
    locked_units = {unit(path) for path in lock}
    for path in sorted(found.keys() - lock.keys()):
        if path.startswith("crds/"):
            out.append(f"{path}: not in the lock (the schema checks read every CRD file)")
        elif unit(path) in locked_units:
            out.append(f"{path}: not in the lock, inside the locked {unit(path)}")
    return out


def check(folders: Mapping[str, Path] | None = None) -> list[str]:
    """`problems` of the committed lock against the configured folders."""
    if not LOCK.is_file():
        raise RuntimeError(f"{shown(LOCK)} not found: write it with `python -m infra upstream --write`")
    return problems(read_lock(LOCK.read_text()), roots() if folders is None else folders)


def base_problems(lock_text_of_base: str, folders: Mapping[str, Path]) -> list[str]:
    """`problems` of a base ref's lock for what rendering the base reads: its chart versions and release manifests.
    Not the CRDs: one folder per group holds only the newest files, which a change to a CRD changes, and the render
    does not read them (the tests' schema checks do)."""
    lock = {path: digest for path, digest in read_lock(lock_text_of_base).items() if not path.startswith("crds/")}
    return problems(lock, {name: folder for name, folder in folders.items() if name != "crds"})
