"""Find a model's ``config.json`` in the local Hugging Face hub cache (never the network).

Cache folder, as ``huggingface_hub`` resolves it: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``,
else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``. A repository
``org/name`` lives in ``models--org--name/``; its snapshots in ``snapshots/<commit>/`` and the
commit of the ``main`` branch in ``refs/main``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

#: a Hugging Face repository id: ``org/name`` (letters, digits, '-', '_', '.')
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_like_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and ".." not in text


def hub_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The hub cache folder ``huggingface_hub`` would use (see module docstring)."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def cached_config(repo_id: str, env: Mapping[str, str] | None = None) -> Path | None:
    """``config.json`` of ``repo_id`` in the hub cache: the snapshot ``refs/main`` names, else the
    most recently modified snapshot that has one; None when the cache has none."""
    repo = hub_cache_dir(env) / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    try:
        main = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        main = ""
    if main and (snapshots / main / "config.json").is_file():
        return snapshots / main / "config.json"
    try:
        found = [p for p in snapshots.glob("*/config.json") if p.is_file()]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
