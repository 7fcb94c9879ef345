"""Where the offline tools find upstream bytes: the pinned charts, the operators' release manifests and CRDs.

By default `../shared/` beside the project (read-only, for offline checks only: `pulumi up` never reads it).
Each can be pointed elsewhere with its environment variable; `child_env` hands the same choice to a render run in
another folder (the diff renders the base ref in a git worktree, which has no `../shared` beside it).

Also the content key (`content_key`) of the per-process caches of work that depends on an object's content only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from components.release_manifest import MIRROR_ENV
from infra.stack_config import PROJECT_ROOT

SHARED = PROJECT_ROOT.parent / "shared"
CHARTS_ENV = "SETTLEMENT_CHARTS_DIR"
CRDS_ENV = "SETTLEMENT_CRDS_DIR"

CHARTS_DIR = Path(os.environ.get(CHARTS_ENV) or SHARED / "charts")
"""`<chart>-<version>/` folders, as `helm pull --untar` gives them."""
MANIFESTS_DIR = Path(os.environ.get(MIRROR_ENV) or SHARED / "manifests")
"""Release manifests named `<asset stem>-<tag><ext>`."""
CRDS_DIR = Path(os.environ.get(CRDS_ENV) or SHARED / "crds")
"""Upstream CRDs for kinds that nothing the environment installs ships."""


RENDER_CACHE_ENV = "SETTLEMENT_RENDER_CACHE"
"""A folder where renders are kept by their content (`infra.offline.render.render_key`) and reused. Unset (the
default): every render is made anew. The test suite sets it for its run, so every test, worker and command rendering
the same stack files with the same code shares one render; the preview workflow sets it, so the diff renders an
unchanged stack's base once, as its head, and the footprint reuses both."""
CHART_CACHE_ENV = "SETTLEMENT_CHART_CACHE"
"""Where chart expansions are kept between processes (`infra.offline.charts.chart_cache_dir`); default
`$XDG_CACHE_HOME/settlement-platform/charts` (or `~/.cache/...`); an empty value keeps nothing on disk."""


def child_env() -> dict[str, str]:
    """This process's environment with every cache as an absolute path, for a render in another folder."""
    kept = {
        name: str(Path(os.environ[name]).resolve())
        for name in (RENDER_CACHE_ENV, CHART_CACHE_ENV)
        if os.environ.get(name)
    }
    return {
        **os.environ,
        CHARTS_ENV: str(CHARTS_DIR.resolve()),
        MIRROR_ENV: str(MANIFESTS_DIR.resolve()),
        CRDS_ENV: str(CRDS_DIR.resolve()),
        **kept,
    }


def upstream_digest(mirror: Path = MANIFESTS_DIR) -> str:
    """A digest of the upstream bytes' names and sizes: they are pinned read-only copies (SHA256SUMS), never
    edited in place, so a different set or version is a different digest. Part of every cache key of a render.
    `mirror`: the release manifests a render reads (a program run reads `MIRROR_ENV` when it starts)."""
    listing = []
    for folder in (CHARTS_DIR, mirror, CRDS_DIR):
        if folder.exists():
            listing += [f"{p}:{p.stat().st_size}" for p in sorted(folder.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(listing).encode()).hexdigest()


def content_key(obj: dict) -> str | None:
    """`obj` as canonical JSON, to key a per-process cache of work that depends on the object's content only (its
    YAML text, its schema validation): None for an object JSON cannot hold or would change (a YAML binary, a number
    as a key), which is then worked on uncached."""
    try:
        key = json.dumps(obj, sort_keys=True)
    except TypeError:
        return None
    return key if json.loads(key) == obj else None
