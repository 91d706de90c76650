"""What a replica needs to know about a trace before it runs: effective prompts, the KV
layout sized for the longest request, who is rejected at arrival and why, prefix caching.

Requests that can never run are REJECTED at arrival: prompt + output beyond the model's
``max_context_tokens`` (``max_context``), or KV at full length beyond the GPU pool
(``gpu_memory``) or the host pool (``host_memory``) on its own; with a free-block watermark
of ``W > 0`` blocks, also a prompt needing more than ``num_gpu_blocks - W`` blocks
(``gpu_memory``: vLLM v0's ``can_allocate`` answers NEVER). Prompts are the method's
``effective_prompt_tokens`` rounded up to whole tokens (>= 1). With
``SimConfig.prompt_kv_resident`` (a disaggregated decode instance) all but the last prompt
token count as computed and prefix caching is off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from kvsim.costmodel.deployment import Deployment
from kvsim.methods.base import KVMethod
from kvsim.sim.chunk_reuse import analytic_hits
from kvsim.sim.config import SimConfig
from kvsim.sim.kv_cache import KVLayout, kv_layout
from kvsim.traces.base import Trace

#: reject codes -> reasons (0: accepted; 4 is set while running: see ReplicaSim)
REJECT_REASONS = {1: "max_context", 2: "gpu_memory", 3: "host_memory", 4: "unschedulable"}


#: the start of a :func:`rejection_note` (merged runs replace their parts' notes by one over every request)
_REJECTED_NOTE = re.compile(r"^[\d,]+ of [\d,]+ requests rejected")


def rejection_note(reasons: dict[str, int], total: int, max_context_tokens: int, full_prompt: bool = False) -> str | None:
    """What a user reads when requests were rejected: how many, why, and what would admit them
    (None when none was). ``reasons``: the summary's ``rejected_reasons``; ``full_prompt``: the
    method holds a prompt's whole uncompressed KV on the GPU until its prefill completes
    (``KVMethod.full_prompt_until_prefilled``), so its compression does not shrink that peak."""
    if not reasons:
        return None
    why = {
        "max_context": f"prompt + output beyond the model's {max_context_tokens:,}-token context (clip the trace: "
                       "--max-prompt-tokens / --max-output-tokens)",
        "gpu_memory": ("one request's whole prompt KV, which this method holds uncompressed on the GPU until its "
                       "prefill completes, exceeds the GPU KV pool (a larger --tp or --gpu-memory-utilization, or "
                       "--max-prompt-tokens, would admit it)" if full_prompt else
                       "one request's KV alone exceeds the GPU KV pool (a KV-compressing method, a larger --tp or "
                       "--gpu-memory-utilization would admit it)"),
        "host_memory": "one request's host-resident KV alone exceeds the host pool",
        "unschedulable": "it could never be scheduled under the engine's limits (max_num_batched_tokens without "
                         "chunked prefill, or a watermark)",
    }
    n = sum(reasons.values())
    parts = "; ".join(f"{k}: {v} ({why.get(k, k)})" for k, v in sorted(reasons.items()))
    return f"{n} of {total} requests rejected{' (all of them)' if n == total else ''}: {parts}"


def merged_notes(parts: list[dict], reasons: dict[str, int], total: int, max_context_tokens: int,
                 full_prompt: bool = False) -> list[str]:
    """Notes of a run merged from ``parts`` (summaries of replicas or instances): theirs, each once, less their
    own rejection notes (each counts only its part, and requests refused before reaching any part are in
    none), plus one :func:`rejection_note` over all ``total`` requests (``reasons``: the merged summary's)."""
    notes = sorted({n for p in parts for n in p.get("notes", []) if not _REJECTED_NOTE.match(n)})
    whole = rejection_note(reasons, total, max_context_tokens, full_prompt=full_prompt)
    return notes + ([whole] if whole else [])


@dataclass(frozen=True)
class ReplicaInputs:
    """Per-request arrays ``[N]`` and the replica's KV layout."""

    arrival_s: np.ndarray
    prompt: np.ndarray  # as in the trace
    effective_prompt: np.ndarray  # after prompt compression
    output: np.ndarray
    max_tokens: int  # longest request that fits the context (the layout's table size)
    layout: KVLayout
    reject: np.ndarray  # int8 reject code per request (REJECT_REASONS)
    analytic_hit: list[int]  # prompt tokens the method treats as cached (``prefix``; ``cacheblend`` chunk hits)
    prefix_block_tokens: int  # 0: prefix caching off
    prefix_note: str | None
    watermark_blocks: int = 0  # GPU blocks admissions and swap-ins leave allocatable (SimConfig.watermark)
    park_block_tokens: int = 0  # > 0: a RECOMPUTE victim's full blocks of this many tokens stay cached
    full_prompt_block_tokens: int = 0  # > 0: prompts hold their full KV until prefilled (blocks of this many tokens)


def parking_tokens(method: KVMethod, cfg: SimConfig) -> int:
    """Tokens per block of a RECOMPUTE victim's KV that stays cached, 0: none. vLLM v1's prefix
    caching hashes every full block of a request, prompt and generated tokens alike
    (``Request.block_hashes``), whatever the trace says about shared prefixes; a preempted
    request's blocks are freed with their hashes (``KVCacheManager.free``), so its re-admission
    finds those not evicted meanwhile (``get_computed_blocks``). Needs prefix caching on and a KV
    whose blocks are the request's tokens as written (:meth:`KVMethod.shares_prefix_blocks`)."""
    if not cfg.enable_prefix_caching or cfg.prompt_kv_resident:
        return 0
    return cfg.block_size_tokens if method.shares_prefix_blocks(cfg.block_size_tokens) else 0


def effective_prompts(method: KVMethod, prompt: np.ndarray) -> np.ndarray:
    """Whole prompt tokens the model prefills (>= 1)."""
    p = np.asarray(prompt, dtype=np.float64)
    eff = np.broadcast_to(np.asarray(method.effective_prompt_tokens(p), dtype=np.float64), p.shape)
    return np.maximum(np.ceil(eff - 1e-9), 1).astype(np.int64)


def prefix_caching_tokens(method: KVMethod, trace: Trace, cfg: SimConfig) -> tuple[int, str | None]:
    """Tokens per prefix-cache entry (0: off), and why it is off when the trace has prefix ids.

    Only KV whose prompt blocks are the same bytes in every request can be shared
    (:meth:`KVMethod.shares_prefix_blocks`): host-resident, prompt-aware, prompt-compressing
    and non-linear methods turn prefix caching off."""
    if not (cfg.enable_prefix_caching and trace.prefix_blocks is not None):
        return 0, None
    if not method.shares_prefix_blocks(trace.prefix_block_tokens):
        return 0, f"prefix caching off: method {method.name} does not keep a shareable per-token KV"
    return trace.prefix_block_tokens, None


def admissible(dep: Deployment, method: KVMethod, trace: Trace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(peff, total, fits_ctx)`` [N]: the effective prompts, with the outputs, and whether they fit the
    model's context (a request that does not is rejected at arrival: ``max_context``)."""
    peff = effective_prompts(method, np.asarray(trace.prompt_tokens, dtype=np.int64))
    total = peff + np.asarray(trace.output_tokens, dtype=np.int64)
    return peff, total, total <= dep.model.max_context_tokens


def profiling_step_tokens(max_num_batched_tokens: int, chunked_prefill: bool, peff: np.ndarray,
                          fits_ctx: np.ndarray) -> int:
    """Tokens of the step the engine profiles its memory with: the step budget, or without chunked
    prefill the longest admissible prompt when it is longer (a whole prompt is one step)."""
    if not chunked_prefill and fits_ctx.any():
        return max(max_num_batched_tokens, int(peff[fits_ctx].max()))
    return max_num_batched_tokens


def prepare(dep: Deployment, method: KVMethod, trace: Trace, cfg: SimConfig) -> ReplicaInputs:
    """Effective prompts, the KV layout, rejections at arrival, the analytic prefix hit."""
    prompt = np.asarray(trace.prompt_tokens, dtype=np.int64)
    output = np.asarray(trace.output_tokens, dtype=np.int64)
    peff, total, fits_ctx = admissible(dep, method, trace)
    n_max = int(total[fits_ctx].max()) if fits_ctx.any() else 1
    step_tokens = profiling_step_tokens(cfg.max_num_batched_tokens, cfg.chunked_prefill, peff, fits_ctx)
    lay = kv_layout(dep, method, n_max, block_size_tokens=cfg.block_size_tokens,
                    max_tokens_per_step=step_tokens, max_seqs=cfg.max_num_seqs, host_tier_bytes=cfg.host_tier_bytes)
    end = np.minimum(total - 1, n_max)
    g_end, h_end = lay.blocks(end, peff)
    reject = np.zeros(len(trace), dtype=np.int8)
    reject[~fits_ctx] = 1
    wm = cfg.watermark_blocks(lay.num_gpu_blocks)
    too_big = g_end > lay.num_gpu_blocks
    # the prompt's full KV before it is compressed (not on a disaggregated decode instance: it receives the KV)
    full_bs = cfg.block_size_tokens if method.full_prompt_until_prefilled and not cfg.prompt_kv_resident else 0
    if full_bs or wm:  # GPU blocks when the prompt completes
        p = np.minimum(peff, n_max)
        peak = lay.blocks(p, p)[0]
        if full_bs:
            peak = np.maximum(peak, -(-p // full_bs))
            too_big |= peak > lay.num_gpu_blocks
        if wm:
            too_big |= peak > lay.num_gpu_blocks - wm
    reject[fits_ctx & too_big] = 2
    reject[fits_ctx & (reject == 0) & (h_end > lay.num_host_blocks)] = 3
    hit = analytic_hits(method, trace, peff)
    pb, note = prefix_caching_tokens(method, trace, cfg)
    if pb and method.cached_prompt_fraction() > 0:  # the scheduler looks a request up by its ids, not the ratio
        note = (f"{method.label()}: its analytic hit ratio is not used: the trace's prefix ids and the engine's prefix "
                "cache decide the hits (with --no-prefix-caching the ratio applies instead)")
    if cfg.prompt_kv_resident:  # disaggregated decode: the prompt's KV came over the KV link
        hit, pb, note = peff - 1, 0, None
    return ReplicaInputs(
        arrival_s=np.asarray(trace.arrival_s, dtype=np.float64), prompt=prompt, effective_prompt=peff,
        output=output, max_tokens=n_max, layout=lay, reject=reject,
        analytic_hit=hit.tolist(), prefix_block_tokens=pb, prefix_note=note,
        watermark_blocks=wm, park_block_tokens=parking_tokens(method, cfg), full_prompt_block_tokens=full_bs)


def whole_prompt_budget_note(prompt_tokens, chunked_prefill: bool, budget: int) -> str | None:
    """Without chunked prefill a prompt longer than the step budget is prefilled alone in one step
    (the first prompt of a step is always admitted: vLLM v0 admits prompts up to max_model_len);
    vLLM itself refuses such a budget (max_num_batched_tokens below max_model_len). ``prompt_tokens``:
    the trace's, ``[N]``."""
    prompts = np.asarray(prompt_tokens)
    if chunked_prefill or not len(prompts):
        return None
    longer = int((prompts > budget).sum())
    if not longer:
        return None
    return (f"--no-chunked-prefill: {longer:,} prompt{'s' if longer > 1 else ''} longer than --max-num-batched-tokens "
            f"{budget:,} (longest {int(prompts.max()):,}) were each prefilled alone in one step; vLLM "
            "refuses a budget below max_model_len without chunked prefill")
