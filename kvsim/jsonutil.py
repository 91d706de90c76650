"""The one ``json.dumps(default=...)`` fallback: pydantic models, numpy values, sets, paths."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def json_default(o: Any, *, pydantic_mode: str = "python") -> Any:
    """Builtin form of ``o`` for JSON; raises TypeError for anything else.

    ``pydantic_mode="json"`` dumps models in pydantic's JSON mode (stable cache keys).
    """
    if hasattr(o, "model_dump"):
        return o.model_dump(mode=pydantic_mode)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes ``NaN`` or ``Infinity`` (strict JSON parsers reject
    them): a non-finite number raises ValueError naming where it is (a bug, not user input)."""
    kwargs.setdefault("default", json_default)
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        where = _non_finite_path(json.loads(json.dumps(obj, default=kwargs["default"])), "")
        raise ValueError(f"non-finite number at {where or 'top level'} in a JSON answer") from None


def _non_finite_path(obj: Any, path: str) -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return path
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _non_finite_path(v, f"{path}.{k}" if isinstance(k, str) else f"{path}[{k}]")
        if found is not None:
            return found.lstrip(".")
    return None


class DuplicateKeyError(ValueError):
    """A JSON object with a key written twice (:func:`loads_unique`)."""


def _unique_keys(pairs: list) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"key {key!r} given twice in one object: keep one")
        seen[key] = value
    return seen


def loads_unique(text: str) -> Any:
    """``json.loads`` of a user's file, refusing an object with a key written twice (DuplicateKeyError):
    the standard parser keeps the last one silently, as PyYAML would (kvsim's YAML refuses it too)."""
    return json.loads(text, object_pairs_hook=_unique_keys)
