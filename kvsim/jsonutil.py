"""The one ``json.dumps(default=...)`` fallback: pydantic models, numpy values, sets, paths."""

from __future__ import annotations

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
