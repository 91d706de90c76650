"""The engine settings of a real run, from flags and/or a small meta JSON, with their origin.

Names follow vLLM's engine arguments (``vllm serve --help``): ``max_num_seqs``,
``max_num_batched_tokens``, ``block_size``, ``gpu_memory_utilization``,
``enable_prefix_caching``, ``enable_chunked_prefill``, ``tensor_parallel_size`` (``tp``),
``dtype``, ``kv_cache_dtype``; plus kvsim's ``hw`` (system name or YAML), ``model`` (name,
YAML or HF config.json) and ``calibration`` (YAML). Relative paths in a meta file are
resolved against the meta file's folder. ``source`` is free text kept with the results.

``hw``, ``model``, ``max_num_seqs`` and ``max_num_batched_tokens`` are required (vLLM's
defaults for the last two depend on its version, GPU and entry point, so kvsim does not
guess them); the rest default to vLLM v1's defaults (block 16, 0.9 of GPU memory, prefix
caching and chunked prefill on, TP 1).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kvsim.costmodel.dtypes import canonical_dtype
from kvsim.errors import ConfigError
from kvsim.jsonutil import loads_unique

FLOAT_DTYPES = ("fp32", "bf16", "fp16")
REQUIRED = ("hw", "model", "max_num_seqs", "max_num_batched_tokens")
ALIASES = {"tensor_parallel_size": "tp"}
PATH_KEYS = ("hw", "model", "calibration")


class EngineSettings(BaseModel):
    """Settings the replay needs (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hw: str
    model: str
    max_num_seqs: int = Field(ge=1)
    max_num_batched_tokens: int = Field(ge=1)
    tp: int = Field(1, ge=1)
    block_size: int = Field(16, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    calibration: str | None = None
    source: str = ""

    def kvsim_dtypes(self) -> tuple[str, str, str | None]:
        """(weight, KV, activation or None = kvsim's choice). vLLM's ``dtype`` is the model's
        dtype, so a float ``dtype`` is also the activation dtype, and ``kv_cache_dtype`` auto
        follows it."""
        w, kv = canonical_dtype(self.dtype), canonical_dtype(self.kv_cache_dtype)  # (vLLM's spellings too)
        act = w if w in FLOAT_DTYPES else None
        if kv == "auto" and act is not None:
            kv = act
        return w, kv, act


KEYS = tuple(EngineSettings.model_fields)


def read_meta(path: str | Path) -> dict:
    """The settings in a meta JSON file (an object with keys of :data:`KEYS` or their vLLM aliases)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"--meta {p}: is a folder; pass the JSON file")
    if not p.is_file():
        raise ConfigError(f"--meta {p}: file not found")
    try:
        data = loads_unique(p.read_text(encoding="utf-8-sig"))  # (a byte-order mark, as Windows editors write, is fine)
    except OSError as err:
        raise ConfigError(f"--meta {p}: cannot read ({err.strerror or err})") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"--meta {p}: not a JSON file ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--meta {p}: expected a JSON object of engine settings")
    out = {}
    for k, v in data.items():
        key = ALIASES.get(k, k)
        if key not in KEYS:
            raise ConfigError(f"--meta {p}: unknown key '{k}' (allowed: {', '.join(KEYS)}, tensor_parallel_size)")
        if key in PATH_KEYS and isinstance(v, str) and v and not Path(v).is_absolute() and (
                (p.parent / v).is_file() or (key == "model" and (p.parent / v / "config.json").is_file())):
            # a spec file (or an HF model folder) beside the meta; another folder of that name, e.g. runs/h100/
            # of logs, is not a spec, so 'h100' stays a catalog name
            v = str(p.parent / v)
        if isinstance(v, bool) and EngineSettings.model_fields[key].annotation in (int, float):
            raise ConfigError(f"--meta {p}: '{k}' must be a number, got {json.dumps(v)}")
        if key in out and out[key] != v:
            raise ConfigError(f"--meta {p}: '{k}' and its other name give different values ({out[key]!r}, {v!r})")
        out[key] = v
    return out


def merge_settings(flags: dict, meta: dict | None = None, meta_path: str | None = None) -> tuple[EngineSettings, dict[str, str]]:
    """Flags (None = not given) over meta (read from ``meta_path``, named in errors) over defaults;
    returns the settings and each one's origin."""
    given = {k: v for k, v in (meta or {}).items()}
    origin = {k: "meta" for k in given}
    for k, v in flags.items():
        if v is not None:
            given[k], origin[k] = v, "flag"
    missing = [k for k in REQUIRED if given.get(k) in (None, "")]
    if missing:
        flags_txt = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise ConfigError(f"engine settings: missing {', '.join(missing)} (give {flags_txt} or put them in --meta)")
    try:
        s = EngineSettings(**given)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        src = origin.get(str(e["loc"][0])) if e["loc"] else None
        whence = (f" in --meta {meta_path}" if src == "meta" and meta_path else
                  f" (--{where.replace('_', '-')})" if src == "flag" else "")
        raise ConfigError(f"engine settings: {where}{whence}: {e['msg']} (got {e.get('input')!r})") from None
    return s, {k: origin.get(k, "default") for k in KEYS}
