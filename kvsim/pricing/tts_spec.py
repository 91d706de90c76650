"""``--tts`` values: ``"best-of-n=8,prompt=512,gen=16k,..."`` -> a :class:`~kvsim.pricing.tts.TTSTask`
and how to price it (``kvsim estimate --tts``, ``kvsim.tts_cost``); errors are one-line ConfigErrors."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from pydantic import ValidationError

from kvsim.errors import ConfigError
from kvsim.pricing.tts import TTSTask


#: ``--tts`` keys -> TTSTask fields (or the pricing options ``batch`` and ``intensity``)
SPEC_KEYS = {"best-of-n": "samples", "n": "samples", "samples": "samples", "prompt": "prompt_tokens",
             "gen": "gen_tokens", "output": "gen_tokens", "shared": "shared_prompt",
             "batch": "batch", "intensity": "intensity", "budget": "budget"}


def _count(key: str, text: str) -> int:
    """``16384``, ``16k`` (x 1024) or ``1m`` (x 1024^2) -> int; ConfigError otherwise."""
    t = text.strip().lower()
    mult = {"k": 1024, "m": 1024**2}.get(t[-1:], 1)
    body = t[:-1] if mult > 1 else t
    if not body.isdigit():
        raise ConfigError(f"--tts {key}: expected a whole number (suffix k = x1024, m = x1024^2), got '{text}'")
    return int(body) * mult


class TTSOptions(NamedTuple):
    """A parsed ``--tts`` value: the task and how to price it."""

    task: TTSTask
    batch: int | None = None  # sequences sharing a weight read (None: amortized away)
    intensity: float | None = None  # FLOPs/byte (None: the GPU's)
    budget_eflops: float | None = None  # solve for the longest generation within this budget


def parse_task(text: str) -> TTSOptions:
    """``"best-of-n=8,prompt=512,gen=16k[,shared=false][,batch=256][,intensity=562.5][,budget=1e16]"``
    -> :class:`TTSOptions`; a one-line ConfigError names the bad key."""
    values: dict[str, object] = {}
    budget: float | None = None
    typed: dict[str, str] = {}  # field -> the key the user wrote
    batch: int | None = None
    intensity: float | None = None
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, val = item.partition("=")
        key = key.strip().lower()
        if not sep or not val.strip():
            raise ConfigError(f"--tts: bad item '{item}'; expected key=value (keys: {', '.join(SPEC_KEYS)})")
        field = SPEC_KEYS.get(key)
        if field is None:
            raise ConfigError(f"--tts: unknown key '{key}'; keys: {', '.join(SPEC_KEYS)}")
        if field in typed:  # (n=8,n=4 or n=8,samples=4: which one was meant?)
            raise ConfigError(f"--tts: '{key}' given twice (also as '{typed[field]}')")
        typed[field] = key
        if field == "shared_prompt":
            v = val.strip().lower()
            if v not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"--tts shared: expected true or false, got '{val}'")
            values[field] = v in ("true", "1", "yes")
        elif field in ("intensity", "budget"):
            try:
                x = float(val)
            except ValueError:
                raise ConfigError(f"--tts {key}: expected a number, got '{val}'") from None
            if not (np.isfinite(x) and (x >= 0 if field == "intensity" else x > 0)):
                raise ConfigError(f"--tts {key}: must be a finite number {'>= 0' if field == 'intensity' else '> 0'}, "
                                  f"got '{val}'")
            intensity, budget = (x, budget) if field == "intensity" else (intensity, x)
        elif field == "batch":
            batch = _count(key, val)
            if not 1 <= batch <= 1_000_000:
                raise ConfigError(f"--tts batch: must be in [1, 1,000,000] sequences, got {batch}")
        else:
            values[field] = _count(key, val)
    if budget is not None and "gen_tokens" in typed:
        raise ConfigError(f"--tts: budget= solves for the generation length: give it instead of {typed['gen_tokens']}=, not with it")
    try:
        return TTSOptions(TTSTask.model_validate(values), batch, intensity, budget)
    except ValidationError as err:
        e = err.errors()[0]
        loc = typed.get(str(e["loc"][0]), str(e["loc"][0])) if e["loc"] else "tts"
        raise ConfigError(f"--tts {loc}: {e['msg']} (got {e.get('input')!r})") from None
