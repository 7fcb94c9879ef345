"""The upstream bytes the offline checks read, pinned by content: `infra/offline/upstream.sha256`.

The render, the diff, the footprint and the tests read three read-only folders of upstream bytes (`caches.py`:
the charts as `helm pull --untar` gives them, the operators' release manifests, CRDs no chart ships). They are not
in this repository: a developer's machine has them in `../shared/`, a CI runner gets them from a mirror
(README "CI and deploys"). The lock names every file and its SHA-256, so wherever the folders come from, a check
runs against exactly the bytes the project was tested with, and a changed, missing or injected file is named
before anything is rendered from it.

A unit is one chart version (`charts/<chart>-<version>/`), one release manifest (`manifests/<file>`) or one CRD
group (`crds/<group>/`). Inside a locked unit every file must be listed: an extra template would change the
render. Every CRD file is locked, whatever its group: the schema checks load them all (`schemas.load_crd_schemas`).
Other chart versions and manifests the lock does not name (kept beside the pinned ones for a base branch that still
pins them) are left alone, as are the folders' own notes at their top level (README.md, SOURCES.md, SHA256SUMS).
A symbolic link anywhere in the folders is refused: Helm's loader follows it, so the files it points to would be
read without being pinned. `tests/test_upstream.py` also checks that every unit a stack's render reads (`read_by`)
is locked, so a version bump without a new lock fails.

`python -m infra upstream` checks the folders; `--write` rewrites the lock with the units every stack reads and
every CRD (after a deliberate bump, reviewed like any pinned version).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from infra.offline import caches
from infra.stack_config import PROJECT_ROOT

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


def files(folders: Mapping[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """Every regular file of the folders (their top-level notes aside) by its locked name
    (`<folder name>/<relative path>`), and every symbolic link or other non-regular entry found, by name. Links are
    not followed."""
    found, refused = {}, []
    for name, folder in folders.items():
        for directory, subdirectories, names in os.walk(folder):
            here = Path(directory)
            for entry in sorted([*subdirectories, *names]):
                path = here / entry
                relative = path.relative_to(folder)
                locked = f"{name}/{relative.as_posix()}"
                if path.is_symlink():
                    refused.append(locked)
                elif entry in names and not (len(relative.parts) == 1 and entry in NOTES):
                    if path.is_file():
                        found[locked] = path
                    else:
                        refused.append(locked)
    return found, refused


def digests(folders: Mapping[str, Path], units: set[str] | None = None) -> dict[str, str]:
    """The SHA-256 of every file of the folders (of `units` only, when given)."""
    found, _ = files(folders)
    return {
        name: hashlib.sha256(path.read_bytes()).hexdigest()
        for name, path in sorted(found.items())
        if units is None or unit(name) in units
    }


def read_by(run) -> set[str]:
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
    """What differs between the locked files and the folders, one sentence a file (a unit missing whole, and a
    folder holding none of its locked files, in one); empty when they agree."""
    missing_folders = [f"{name}: folder {folder} not found" for name, folder in folders.items() if not folder.is_dir()]
    if missing_folders:
        return missing_folders
    found, refused = files(folders)
    out = [f"{name}: a symbolic link or special file; the lock pins regular files only" for name in refused]
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
            data = found[path].read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            if actual == digest:
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
    return problems(read_lock(LOCK.read_text()), folders or roots())
