"""Read what a vLLM (v1 engine) start-up log says about its memory: the engine settings that size
the KV cache and the terms its profiling measured. ``kvsim validate memory`` compares them with
kvsim's model of the same start-up (:mod:`kvsim.pricing.engine_memory`).

Lines read (vLLM 0.19, ``v1/worker/gpu_worker.py``, ``v1/core/kv_cache_utils.py``,
``v1/engine/core.py``, ``config/scheduler.py``, ``engine/arg_utils.py``; DEBUG lines only when
the server ran with ``VLLM_LOGGING_LEVEL=DEBUG``):

* ``Initializing a V1 LLM engine (vX) with config: model='M', ..., dtype=torch.bfloat16, ...,
  tensor_parallel_size=T, pipeline_parallel_size=P, ..., quantization=Q, ..., kv_cache_dtype=K``
* ``Chunked prefill is enabled with max_num_batched_tokens=N.``
* ``non-default args: {..., 'gpu_memory_utilization': 0.95, 'max_num_seqs': S, ...}``, or
  DEBUG ``Defaulting max_num_seqs to S ...`` / ``Requested memory: 0.950000 (util), ...``
* DEBUG ``worker init memory snapshot: ..., total_memory=79.19GiB, ...``
* ``Model loading took W GiB memory`` (INFO), or DEBUG ``Memory profiling takes ... torch peak
  memory increase: A GiB; non-torch forward increase memory: B GiB; weights memory: W GiB.``
* ``Available KV cache memory: X GiB`` and ``GPU KV cache size: N tokens`` (INFO)

GiB values are printed with two decimals, so a term read back is exact to +-0.005 GiB.
A log with several engines (several ``Initializing`` lines) is refused.
"""

from __future__ import annotations

import ast
import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from kvsim.errors import ConfigError

#: vLLM's default gpu_memory_utilization (``CacheConfig``)
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9

_ENGINE = re.compile(r"Initializing a V1 LLM engine \(v?([^)]*)\) with config: (.*)$")
_FLOAT = r"([0-9]+(?:\.[0-9]+)?)"


@dataclass(frozen=True)
class VllmMemoryLog:
    """What one vLLM start-up log states (None: the log does not say)."""

    path: str
    version: str
    model: str
    dtype: str  # vLLM's model dtype, e.g. "bfloat16"
    quantization: str | None  # vLLM's --quantization / the checkpoint's method, None: none
    kv_cache_dtype: str  # "auto", "fp8", ...
    tp: int
    pp: int
    max_num_batched_tokens: int | None
    max_num_seqs: int | None
    gpu_memory_utilization: float
    total_memory_gib: float | None  # torch.cuda.mem_get_info()[1] (DEBUG snapshot)
    weights_gib: float | None
    activation_gib: float | None  # torch peak memory increase (DEBUG)
    non_torch_gib: float | None  # non-torch forward increase memory (DEBUG)
    kv_cache_gib: float | None  # Available KV cache memory
    kv_cache_tokens: int | None  # GPU KV cache size
    notes: list[str] = field(default_factory=list)


def _config_field(config: str, key: str) -> str | None:
    m = re.search(rf"(?:^|[ ,]){key}=('[^']*'|[^,]*)", config)
    if m is None:
        return None
    return m.group(1).strip().strip("'")


def _last(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, text)
    return found[-1] if found else None


#: the settings read from a ``non-default args`` dict even when it holds values ``ast.literal_eval``
#: cannot read (vLLM prints objects such as ``LoRAModulePath(name=...)`` in it)
_ARG_NUMBER = r"'{key}': (-?[0-9.eE+-]+)"


def _non_default_args(text: str) -> dict:
    raw = _last(r"non-default args: (\{.*\})", text)
    if raw is None:
        return {}
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = None
    if isinstance(value, dict):
        return value
    out = {}  # one key at a time: a value literal_eval cannot read must not lose the others

    def top_level(pattern: str):
        # the first match in the outer dict, not in a nested one ('speculative_config': {'model': ...})
        for m in re.finditer(pattern, raw):
            if raw.count("{", 0, m.start()) - raw.count("}", 0, m.start()) == 1:
                return m
        return None

    for key in ("gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size",
                "pipeline_parallel_size", "block_size"):
        m = top_level(_ARG_NUMBER.format(key=key))
        if m:
            try:
                out[key] = ast.literal_eval(m.group(1))
            except (ValueError, SyntaxError):
                pass
    for key in ("model", "dtype", "kv_cache_dtype", "quantization"):
        m = top_level(rf"'{key}': '([^']*)'")
        if m:
            out[key] = m.group(1)
    return out


def parse_vllm_log(path: str | Path) -> VllmMemoryLog:
    """The settings and measured memory terms of the vLLM start-up log at ``path`` (one
    ``ConfigError`` line when it is not one)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory; give a vLLM server log file")
    try:
        raw = p.read_bytes()
        text = (gzip.decompress(raw) if p.suffix == ".gz" else raw).decode("utf-8", errors="replace")  # (.gz: log rotation)
    except (OSError, EOFError, zlib.error) as err:
        raise ConfigError(f"{p}: cannot read ({getattr(err, 'strerror', None) or err or 'truncated gzip data'})") from None
    engines = [m for m in (_ENGINE.search(line) for line in text.splitlines()) if m]
    if not engines:
        raise ConfigError(f"{p}: no 'Initializing a V1 LLM engine (...) with config:' line: not a vLLM v1 start-up log "
                          f"(it is printed at INFO level when the server starts)")
    if len({m.group(2) for m in engines}) > 1:
        raise ConfigError(f"{p}: {len(engines)} engine start-ups with different configs in one log; split it, one per file")
    version, config = engines[-1].group(1), engines[-1].group(2)
    model = _config_field(config, "model")
    if not model:
        raise ConfigError(f"{p}: the engine config line names no model")
    args = _non_default_args(text)
    quant = _config_field(config, "quantization")
    tp, pp = _config_field(config, "tensor_parallel_size"), _config_field(config, "pipeline_parallel_size")
    notes = []

    def number(pattern: str, kind=float):
        v = _last(pattern, text)
        return None if v is None else kind(v.replace(",", ""))

    util = args.get("gpu_memory_utilization")
    if util is None:
        util = number(r"Requested memory: ([0-9.]+) \(util\)")
    if util is None:
        util = DEFAULT_GPU_MEMORY_UTILIZATION
        notes.append(f"gpu_memory_utilization not in the log: vLLM's default {DEFAULT_GPU_MEMORY_UTILIZATION}")
    seqs = args.get("max_num_seqs")
    if seqs is None:
        seqs = number(r"Defaulting max_num_seqs to ([0-9]+)", int)
    tokens = number(r"max_num_batched_tokens=([0-9]+)", int)
    if tokens is None:
        tokens = args.get("max_num_batched_tokens")
    try:
        return VllmMemoryLog(
            path=str(p), version=version, model=model,
            dtype=(_config_field(config, "dtype") or "auto").removeprefix("torch."),
            quantization=None if quant in (None, "None") else quant,
            kv_cache_dtype=_config_field(config, "kv_cache_dtype") or "auto",
            tp=int(tp or 1), pp=int(pp or 1),
            max_num_batched_tokens=None if tokens is None else int(tokens),
            max_num_seqs=None if seqs is None else int(seqs),
            gpu_memory_utilization=float(util),
            total_memory_gib=number(rf"total_memory={_FLOAT}GiB"),
            weights_gib=number(rf"weights memory: {_FLOAT}GiB") or number(rf"Model loading took {_FLOAT} GiB"),
            activation_gib=number(rf"torch peak memory increase: {_FLOAT}GiB"),
            non_torch_gib=number(rf"non-torch forward increase memory: {_FLOAT}GiB"),
            kv_cache_gib=number(rf"Available KV cache memory: {_FLOAT} GiB"),
            kv_cache_tokens=number(r"GPU KV cache size: ([0-9,]+) tokens", int),
            notes=notes,
        )
    except ValueError as err:
        raise ConfigError(f"{p}: unreadable engine config value ({err})") from None
