"""``kvsim validate memory``: a vLLM start-up log's memory terms vs kvsim's model of the same start-up.

For the log's engine settings (:mod:`kvsim.validate.vllm_log`: TP, ``gpu_memory_utilization``,
``max_num_batched_tokens``, ``max_num_seqs``, dtype, quantization, KV dtype) kvsim sizes the KV
cache exactly as ``simulate`` does (:func:`kvsim.sim.kv_cache.kv_layout`, which applies
:mod:`kvsim.pricing.engine_memory`) and reports, per term, vLLM's value, kvsim's and the signed
error: weights (parameters and rotary cache), the profiling's torch peak increase, its non-torch
increase, the KV cache memory and the KV cache size in tokens. The check is on the tokens (the
number a capacity plan uses): ``|kvsim / vLLM - 1| <= tolerance``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from kvsim.costmodel.deployment import build_deployment
from kvsim.costmodel.dtypes import canonical_dtype
from kvsim.errors import ConfigError, SpecError
from kvsim.methods import make_method
from kvsim.models import load_model
from kvsim.models.hf_import import QUANT_METHODS
from kvsim.pricing.engine_memory import GIB
from kvsim.sim.kv_cache import kv_layout
from kvsim.validate.vllm_log import VllmMemoryLog

#: vLLM ``--quantization`` methods whose name says the weight dtype: the checkpoint methods that do
#: (:data:`kvsim.models.hf_import.QUANT_METHODS`) and ModelOpt's two. Others (compressed-tensors,
#: GPTQ/AWQ, bitsandbytes) state their bits only in the checkpoint: --weight-dtype gives them
_QUANT_DTYPES = {**{m: d for m, d in QUANT_METHODS.items() if d is not None}, "modelopt": "fp8", "modelopt_fp4": "fp4"}
BLOCK_SIZE_TOKENS = 16  # vLLM's default KV block size on CUDA


@dataclass(frozen=True)
class MemoryTerm:
    name: str
    unit: str  # "GiB" or "tokens"
    vllm: float | None
    kvsim: float

    @property
    def error(self) -> float | None:
        return None if not self.vllm else self.kvsim / self.vllm - 1.0


def _weight_dtype(log: VllmMemoryLog, given: str | None) -> str:
    if given:
        return canonical_dtype(given)
    if log.quantization is None:  # the model's dtype (or its checkpoint's quantization_config); --dtype float32: fp32
        return "fp32" if log.dtype == "float32" else "auto"
    wd = _QUANT_DTYPES.get(log.quantization.lower())
    if wd is None:
        raise ConfigError(f"{log.path}: quantization={log.quantization}: its weight dtype is not in the log; "
                          f"give --weight-dtype (e.g. int8 for W8A8, int4 for W4A16 or 4-bit bitsandbytes)")
    return wd


#: the shipped start-up logs (benchmarks/vllm_memory_logs.py), with which of them informed a constant
SHIPPED_LOGS = Path(__file__).parent / "data" / "vllm_memory_logs"


def _catalog_name(name: str) -> str | None:
    """The catalog model a log's model name resolves to (None: not in the catalog)."""
    try:
        return load_model(name).name
    except SpecError:
        return None


def in_sample_note(path) -> str | None:
    """The runs.yaml note of a shipped log a kvsim constant was read from (None for any other file)."""
    try:
        p = Path(path).resolve()
        runs = yaml.safe_load((SHIPPED_LOGS / "runs.yaml").read_text(encoding="utf-8"))["runs"]
    except (OSError, TypeError, KeyError, yaml.YAMLError):
        return None
    return next((run.get("note") or "a kvsim constant was read from this log" for run in runs
                 if run.get("in_sample") and (SHIPPED_LOGS / run["log"]).resolve() == p), None)


def check_memory(log: VllmMemoryLog, hw: str, model: str | None = None, weight_dtype: str | None = None,
                 max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None) -> dict:
    """kvsim's engine memory for the start-up ``log`` describes on system ``hw``; the model is
    ``model`` or the log's (a catalog name/alias, e.g. its Hugging Face id). Flags given here win
    over the log. Returns ``{"terms": [MemoryTerm...], "settings": {...}, "notes": [...]}``."""
    if log.pp > 1:
        raise ConfigError(f"{log.path}: pipeline_parallel_size={log.pp}: kvsim does not model pipeline parallelism")
    seqs = max_num_seqs or log.max_num_seqs
    tokens = max_num_batched_tokens or log.max_num_batched_tokens
    missing = [f for f, v in (("--max-num-seqs", seqs), ("--max-num-batched-tokens", tokens)) if v is None]
    if missing:
        raise ConfigError(f"{log.path}: the log does not state {' or '.join(m[2:].replace('-', '_') for m in missing)} "
                          f"(vLLM prints its default only at DEBUG level); give {' and '.join(missing)}")
    name = model or log.model
    try:
        spec = load_model(name)
    except SpecError:
        if model:
            raise
        raise ConfigError(f"{log.path}: the log's model {log.model!r} is not a kvsim catalog name or alias "
                          f"(`kvsim list models`); give --model NAME, a model YAML or its config.json") from None
    wd = _weight_dtype(log, weight_dtype)
    if log.kv_cache_dtype == "auto":  # vLLM: the model dtype (--dtype float32 keeps an fp32 KV cache)
        kd = "fp32" if log.dtype == "float32" else "auto"
    else:
        kd = canonical_dtype(log.kv_cache_dtype)
    dep = build_deployment(hw, name, tp=log.tp, weight_dtype=wd, kv_dtype=kd,
                           gpu_memory_utilization=log.gpu_memory_utilization)
    method = make_method("full", dep)
    lay = kv_layout(dep, method, max_tokens=1, block_size_tokens=BLOCK_SIZE_TOKENS,
                    max_tokens_per_step=tokens, max_seqs=seqs)
    b = lay.budget
    terms = [
        MemoryTerm("weights", "GiB", log.weights_gib, (b.weights_bytes + b.reserve.buffers_bytes) / GIB),
        MemoryTerm("torch peak increase (activations)", "GiB", log.activation_gib, b.reserve.activation_bytes / GIB),
        MemoryTerm("non-torch increase", "GiB", log.non_torch_gib, b.reserve.non_torch_bytes / GIB),
        MemoryTerm("KV cache memory", "GiB", log.kv_cache_gib, b.kv_gpu_bytes / GIB),
        MemoryTerm("KV cache size", "tokens", None if log.kv_cache_tokens is None else float(log.kv_cache_tokens),
                   float(lay.num_gpu_blocks * BLOCK_SIZE_TOKENS)),
    ]
    notes = list(log.notes) + list(dep.notes)
    # a flag that replaces what the log states (it was used without a word: user audit)
    for flag, given, logged in (("--max-num-seqs", max_num_seqs, log.max_num_seqs),
                                ("--max-num-batched-tokens", max_num_batched_tokens, log.max_num_batched_tokens)):
        if given is not None and logged is not None and given != logged:
            notes.append(f"{flag} {given} replaces the log's {logged}")
    if model is not None and log.model and _catalog_name(log.model) != spec.name:
        notes.append(f"--model {model} ({spec.name}) replaces the log's {log.model}")
    shipped = in_sample_note(log.path)
    if shipped:
        notes.append(f"IN-SAMPLE: {shipped}")
    if log.dtype == "float32":
        notes.append("--dtype float32: weights and KV priced in fp32; kvsim's profiling activations stay 16-bit")
    if log.total_memory_gib is not None:
        mine = dep.system.gpu.torch_memory_bytes or dep.system.gpu.memory_bytes
        if abs(mine / GIB - log.total_memory_gib) > 0.01 * log.total_memory_gib:
            notes.append(f"the log's GPU reports {log.total_memory_gib:.2f} GiB total; {dep.system.name}'s spec says "
                         f"{mine / GIB:.2f} GiB: is --hw the GPU the log ran on?")
    settings = {"model": spec.name, "hw": dep.system.name, "tp": log.tp, "weight_dtype": dep.weight_dtype,
                "kv_dtype": dep.kv_dtype, "gpu_memory_utilization": log.gpu_memory_utilization,
                "max_num_seqs": seqs, "max_num_batched_tokens": tokens, "block_size": BLOCK_SIZE_TOKENS,
                "vllm_version": log.version}
    return {"log": log.path, "terms": terms, "settings": settings, "notes": notes}
