"""``kvsim estimate``: closed-form answers for one (hardware, model, method, context, batch).

* KV bytes per token on GPU and host: ``kv_bytes(context) / context``.
* Largest batch: requests of ``context`` tokens that fit the GPU and host KV budgets
  (:mod:`kvsim.pricing.memory`), with the engine reserve of a profiling step of
  ``max_num_batched_tokens`` tokens and ``max_num_seqs`` sampled rows (as vLLM 0.19 profiles it);
  ``None`` where a pool does not limit it. A batch that does not fit says why (``reason``).
* TTFT: one lone request's prompt prefilled in chunks of ``max_num_batched_tokens``
  (vLLM's chunked prefill; ``None`` = one step), no queueing; summed in closed form for long
  prompts (:meth:`kvsim.pricing.step.StepModel.prefill_request_timing`), so any context is fast.
* TBT: one decode step with every sequence holding ``context`` cached tokens.
* Throughput: decode tokens per second at the batch, ``batch / TBT``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.pricing.memory import (
    VLLM_BLOCK_TOKENS,
    fewest,
    gpu_requests_that_fit,
    held_bytes,
    memory_budget,
    requests_that_fit,
)
from kvsim.methods.base import KVMethod
from kvsim.costmodel.roofline import Timing
from kvsim.pricing.input_notes import eager_scores_note
from kvsim.pricing.step import StepModel

#: batch sizes tried by ``--batch max`` beyond which we sample geometrically
_DENSE_SEARCH_LIMIT = 256
#: largest decode batch priced (the step prices arrays of one row per request)
MAX_BATCH = 1_000_000
#: largest context priced: prefill is summed in closed form, but methods' float arithmetic
#: loses whole tokens near 2**53
MAX_CONTEXT_TOKENS = 10**15


def check_context(context: int, model, allow_long: bool, *, flag: str = "context",
                  allow: str = "allow_long_context=True") -> str | None:
    """``context`` within the model's maximum, or beyond it with ``allow_long`` (up to
    MAX_CONTEXT_TOKENS): a one-line ConfigError otherwise; a note when beyond and allowed.
    ``flag`` / ``allow`` name the argument and the switch as the caller's user writes them."""
    if context > MAX_CONTEXT_TOKENS:
        raise ConfigError(f"{flag} must be at most {MAX_CONTEXT_TOKENS:.0e} tokens, got {context}")
    if context > model.max_context_tokens:
        if not allow_long:
            raise ConfigError(f"{flag} {context} exceeds {model.name}'s max context of {model.max_context_tokens:,} "
                              f"tokens; add {allow} to price it anyway")
        return f"{flag} {context} exceeds {model.name}'s max context {model.max_context_tokens:,} ({allow})"
    return None


class BreakdownRow(BaseModel):
    phase: str  # "prefill" (TTFT) or "decode" (TBT)
    component: str
    op: str
    device: str
    seconds: float
    share: float  # of the phase total
    bound: str  # resource that bounds this component


class EstimateResult(BaseModel):
    hw: str
    model: str
    method: str
    context: int
    batch: int
    fits: bool
    kv_bytes_per_token_gpu: float
    kv_bytes_per_token_host: float
    max_batch: int | None  # None: memory does not limit the batch
    max_batch_gpu: int | None  # None: requests need no GPU KV
    max_batch_host: int | None  # None: requests need no host memory
    reason: str | None = None  # why the batch does not fit (None when it fits)
    ttft_s: float | None
    tpot_s: float | None  # one decode step at the batch: each request's time per output token (= ITL, vLLM names)
    throughput_tok_s: float | None
    memory_gpu_bytes: float  # weights + KV + reserves, per GPU, at the batch
    gpu_requested_bytes: float  # vLLM's requested memory per GPU: torch-visible total * gpu_memory_utilization
    memory_host_bytes: float  # host KV / tables at the batch
    weights_bytes_per_gpu: float
    kv_gpu_bytes: float
    kv_host_bytes: float
    activation_reserve_bytes: float  # engine reserve: profiling-run activations, non-torch memory, buffers
    tp: int
    weight_dtype: str
    kv_dtype: str
    breakdown: list[BreakdownRow]
    expert_offload: str | None = None  # MoE expert offloading: cache, hit rate and its source, miss mode
    expert_host_bytes: float = 0.0  # routed experts held in host memory (part of memory_host_bytes)
    notes: list[str] = []  # one line each, for the user (the command prints them as `note:` lines)


def _rows(phase: str, t: Timing) -> list[BreakdownRow]:
    total = float(t.total_s) or 1.0
    return [
        BreakdownRow(phase=phase, component=p.name, op=p.op, device=p.device, seconds=float(p.seconds),
                     share=float(p.seconds) / total, bound=p.bound)
        for p in t.parts
    ]


@dataclass
class Estimator:
    dep: Deployment
    method: KVMethod
    max_num_batched_tokens: int | None = 8192
    max_num_seqs: int = 256
    #: largest batch ``--batch max`` may pick (None: ``max_num_seqs``, the engine's cap; a harness
    #: without one, as the papers' Hugging Face loops, passes ``MAX_BATCH``)
    batch_cap: int | None = None
    #: False: prompts prefill whole (vLLM v0); the engine still profiles a step of
    #: ``max(max_num_batched_tokens, context)`` tokens (v0 needs the budget >= max_model_len)
    chunked_prefill: bool = True

    def __post_init__(self) -> None:
        self.step = StepModel(self.dep, self.method)

    def tbt_s(self, ctx_tokens: float, batch: int) -> float:
        return float(self.step.decode_timing(np.full(batch, float(ctx_tokens))).total_s)

    def best_batch(self, ctx_tokens: float, max_batch: int) -> int:
        """Batch in [1, max_batch] with the highest decode throughput (smallest on ties)."""
        if max_batch <= _DENSE_SEARCH_LIMIT:
            cands = np.arange(1, max_batch + 1)
        else:
            cands = np.unique(np.concatenate([np.arange(1, _DENSE_SEARCH_LIMIT + 1),
                                              np.geomspace(_DENSE_SEARCH_LIMIT, max_batch, 64).astype(int)]))
        thr = [b / self.tbt_s(ctx_tokens, int(b)) for b in cands]
        best = max(thr)
        return int(next(b for b, t in zip(cands, thr) if t >= best * (1 - 1e-12)))

    def _pools_fit(self, step_tokens: float, seqs: int, g_req: float, h_req: float, block: float,
                   g_peak: float | None = None) -> tuple:
        """``(GPU, host, both)`` requests that fit the pools of an engine of ``seqs`` sequences."""
        budget = memory_budget(self.dep, self.method, max_tokens_per_step=step_tokens, max_seqs=seqs)
        g = gpu_requests_that_fit(budget.kv_gpu_bytes, g_req, g_peak or g_req, block)
        h = requests_that_fit(budget.kv_host_bytes, h_req, block)
        return g, h, fewest(g, h)

    def _largest_batch(self, step_tokens: float, g_req: float, h_req: float, block: float, g_peak: float) -> tuple:
        """:meth:`_pools_fit` at the largest batch ``b`` with ``b <= fit(max(max_num_seqs, b))`` (the fit
        shrinks as the engine's reserves grow with ``b``: bisection)."""
        base = self._pools_fit(step_tokens, self.max_num_seqs, g_req, h_req, block, g_peak)
        if base[2] is None or base[2] <= self.max_num_seqs:
            return base
        lo, hi = self.max_num_seqs, base[2]  # lo fits (base[2] > lo); hi bounds it (reserves only grow)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            fit = self._pools_fit(step_tokens, mid, g_req, h_req, block, g_peak)[2]
            if fit is not None and mid <= fit:
                lo = mid
            else:
                hi = mid - 1
        g, h, _ = self._pools_fit(step_tokens, lo, g_req, h_req, block, g_peak)
        return g, h, lo

    def run(self, context: int, batch: int | str = 1) -> EstimateResult:
        _check_count("context", context, MAX_CONTEXT_TOKENS)
        if batch != "max":
            _check_count("batch", batch, MAX_BATCH)
        dep, m = self.dep, self.method
        ctx = float(m.effective_prompt_tokens(float(context)))
        chunk = self.max_num_batched_tokens if self.chunked_prefill else None
        # the profiling step: the budget, or without chunked prefill the budget or a whole prompt if longer
        # (the simulators' rule, kvsim.sim.inputs.prepare; max_num_batched_tokens None: the prompt alone)
        step_tokens = float(chunk) if chunk is not None else max(ctx, float(self.max_num_batched_tokens or 0))
        # a batch of b runs at once only in an engine of at least b sequences: its reserves (the sampler's
        # rows, a hybrid model's recurrent-state slots) are sized for max(b, max_num_seqs)
        seqs = self.max_num_seqs if batch == "max" else max(self.max_num_seqs, int(batch))
        budget = memory_budget(dep, m, max_tokens_per_step=step_tokens, max_seqs=seqs)
        res = m.kv_bytes(ctx)
        g_req, h_req = float(res.gpu_bytes), float(res.host_bytes)
        block = VLLM_BLOCK_TOKENS * m.dep.full_kv_bytes_per_token  # (whole 16-token blocks, as the simulator's pools)
        # the simulator holds the whole prompt's uncompressed KV of such a method on the GPU until its prefill
        # completes (KVMethod.full_prompt_until_prefilled): a batch is as large as the pool holds with its last
        # request still prefilling (the others compressed), or none when that peak alone exceeds the pool
        g_peak = max(g_req, -(-ctx // VLLM_BLOCK_TOKENS) * block) if m.full_prompt_until_prefilled else g_req
        mb_gpu = gpu_requests_that_fit(budget.kv_gpu_bytes, g_req, g_peak, block)
        notes = [n for n in (m.mla_note(), whole_host_note(m), eager_scores_note(m, ctx, chunk, budget.reserve.activation_bytes)) if n]
        if m.prompt_aware or m.compresses_prompt:  # --context is all prompt: what generated tokens (kept as they come) add
            gen = float(context // 2)
            kept = float(m.effective_prompt_tokens(float(context) - gen))
            half = float(m.kv_bytes(kept + gen, kept).gpu_bytes)
            if abs(half - g_req) > 0.01 * g_req:  # (either way: a budget that scales with the prompt holds less)
                notes.append(f"--context counts every token as prompt; {m.label()} compresses the prompt only, so with half of "
                             f"the {context:,} tokens generated a request holds {_gb(half)} per GPU, not {_gb(g_req)}, "
                             "and its decode reads change likewise (`kvsim simulate` counts generated tokens)")
        if mb_gpu and g_peak > held_bytes(g_req, block):
            notes.append(f"max batch counts one request holding its whole prompt's KV ({_gb(g_peak)} per GPU) uncompressed "
                         f"while it prefills, as `kvsim simulate` does ({m.label()} compresses it when the prefill ends)")
        mb_host = requests_that_fit(budget.kv_host_bytes, h_req, block)
        max_batch = fewest(mb_gpu, mb_host)
        if batch != "max" and seqs != self.max_num_seqs or max_batch is not None and max_batch > self.max_num_seqs:
            # a batch above max_num_seqs runs in an engine of that many sequences, whose reserves are larger: the
            # largest batch b that fits an engine of max(max_num_seqs, b) (it was counted with max_num_seqs'
            # reserves, and `--batch` of that number then did not fit; user audit)
            mb_gpu, mb_host, max_batch = self._largest_batch(step_tokens, g_req, h_req, block, g_peak)
        if batch == "max":  # at most what memory holds and the engine's max_num_seqs
            cap = self.max_num_seqs if self.batch_cap is None else self.batch_cap
            limit = cap if max_batch is None else min(max_batch, cap, MAX_BATCH)
            b = self.best_batch(ctx, limit) if limit >= 1 else 0
        else:
            b = int(batch)
        fits = b >= 1 and (max_batch is None or b <= max_batch)
        breakdown: list[BreakdownRow] = []
        ttft = tbt = thr = None
        if max_batch != 0 or batch != "max":
            tp = self.step.prefill_request_timing(ctx, chunk)
            ttft = float(tp.total_s)
            breakdown += _rows("prefill", tp)
            if b >= 1:
                td = self.step.decode_timing(np.full(b, ctx))
                tbt = float(td.total_s)
                thr = b / tbt
                breakdown += _rows("decode", td)
        reason = None if fits else _why_not(int(context), b, max_batch, mb_gpu, g_req, h_req, budget, g_peak)
        kv_gpu = b * held_bytes(g_req, block)  # (whole blocks, as max_batch counts them)
        kv_host = b * held_bytes(h_req, block)
        return EstimateResult(
            hw=dep.system.name, model=dep.model.name, method=m.label(), context=int(context), batch=b,
            fits=fits,
            # per token of the request's context (a prompt-compressing method keeps fewer: its
            # saving shows here, as every other method's does; dividing by the kept tokens hid it)
            kv_bytes_per_token_gpu=g_req / context,
            kv_bytes_per_token_host=h_req / context,
            max_batch=max_batch, max_batch_gpu=mb_gpu, max_batch_host=mb_host, reason=reason,
            ttft_s=ttft, tpot_s=tbt, throughput_tok_s=thr,
            memory_gpu_bytes=budget.non_kv_gpu_bytes + kv_gpu,
            gpu_requested_bytes=budget.gpu_total_bytes,
            memory_host_bytes=m.fixed_host_bytes() + kv_host + budget.expert_host_bytes,
            weights_bytes_per_gpu=budget.weights_bytes,
            kv_gpu_bytes=kv_gpu, kv_host_bytes=kv_host,
            activation_reserve_bytes=budget.reserve_bytes,
            tp=dep.tp, weight_dtype=dep.weight_dtype, kv_dtype=m.dep.kv_dtype,  # (full:kv_dtype=fp8 prices its own)
            breakdown=breakdown,
            expert_offload=None if dep.expert_offload is None else dep.expert_offload.label(),
            expert_host_bytes=budget.expert_host_bytes,
            notes=notes,
        )


def _check_count(name: str, value: object, hi: int) -> None:
    """A whole number in [1, hi] (a bool is not a number), else a one-line ConfigError."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not (ok and np.isfinite(value) and float(value).is_integer() and 1 <= value <= hi):
        raise ConfigError(f"{name} must be a whole number in [1, {hi:,}], got {value!r}")


def _gb(x: float) -> str:
    """Decimal bytes with the unit the tables use (76.68 GB, 1.34 TB)."""
    return f"{x / 1e12:,.2f} TB" if x >= 1e12 else f"{x / 1e9:.2f} GB"


def _why_not(context: int, b: int, max_batch: int | None, mb_gpu: int | None, g_req: float, h_req: float, budget,
             g_peak: float = 0.0) -> str:
    """Why ``b`` requests of ``context`` tokens do not fit (one line)."""
    if max_batch == 0 and mb_gpu == 0:
        if budget.kv_gpu_bytes <= 0:
            return (f"weights and engine reserve ({_gb(budget.non_kv_gpu_bytes)} per GPU) leave no room for KV "
                    f"in the {_gb(budget.gpu_total_bytes)} requested")
        if g_peak > g_req and g_peak > budget.kv_gpu_bytes:
            return (f"one request of {context:,} tokens holds its whole prompt's KV ({_gb(g_peak)} per GPU) uncompressed "
                    f"until its prefill completes; {_gb(budget.kv_gpu_bytes)} is free for KV (`kvsim simulate` rejects it)")
        return (f"one request of {context:,} tokens needs {_gb(g_req)} of KV per GPU; "
                f"{_gb(budget.kv_gpu_bytes)} is free for KV")
    if max_batch == 0:
        return f"one request of {context:,} tokens needs {_gb(h_req)} of host memory; {_gb(max(budget.kv_host_bytes, 0))} is free"
    where = "GPU" if mb_gpu == max_batch else "host"
    return f"batch {b} exceeds the {max_batch} requests of {context:,} tokens that fit in {where} memory"


def estimate(dep: Deployment, method: KVMethod, context: int, batch: int | str = 1,
             max_num_batched_tokens: int | None = 8192, max_num_seqs: int = 256,
             batch_cap: int | None = None, chunked_prefill: bool = True) -> EstimateResult:
    """Estimate one configuration (see module docstring). ``chunked_prefill`` False: prompts prefill
    whole, the profiling step is ``max(max_num_batched_tokens, context)`` tokens."""
    return Estimator(dep, method, max_num_batched_tokens, max_num_seqs, batch_cap, chunked_prefill).run(context, batch)


#: the context priced when none is given (a model of a shorter maximum takes its maximum)
DEFAULT_CONTEXT_TOKENS = 4096


def default_context(model, flag: str = "context") -> tuple[int, str | None]:
    """The context priced when none is given: 4,096 tokens, or the model's max context if smaller
    (OPT's 2,048), with a note saying so in that case."""
    context = min(DEFAULT_CONTEXT_TOKENS, model.max_context_tokens)
    if context < DEFAULT_CONTEXT_TOKENS:
        return context, f"{flag} defaults to {context:,}, {model.name}'s max context ({DEFAULT_CONTEXT_TOKENS:,} otherwise)"
    return context, None


def batch_engine_note(batch: int | str, max_num_seqs: int, flags: tuple[str, str] = ("batch", "max_num_seqs")) -> str | None:
    """A batch above the engine's sequence limit is priced as an engine of that many sequences: say so."""
    if not isinstance(batch, int) or batch <= max_num_seqs:
        return None
    b_flag, s_flag = flags
    return (f"{b_flag} {batch:,} is more than {s_flag} {max_num_seqs:,}: priced as an engine of {batch:,} sequences "
            f"(vLLM runs at most {s_flag} at once; its reserves, and a hybrid model's state slots, grow with it)")


def answered(r: EstimateResult) -> EstimateResult:
    """``r`` with what is not an answer removed: the latencies, throughput and breakdown of a batch
    that does not fit (``reason`` says why) are None / empty, and so is the TTFT of a request that
    does not fit alone (``kvsim estimate --json`` prints the same)."""
    if r.fits:
        return r
    update: dict = {"tpot_s": None, "throughput_tok_s": None, "breakdown": []}
    if r.max_batch == 0:
        update["ttft_s"] = None
    return r.model_copy(update=update)


def whole_host_note(m) -> str | None:
    """Said by estimate and simulate for a host-using method on a node of several replicas' worth of
    GPUs: the answer had the whole host, while `kvsim plan` gives each replica 1/(num_gpus // tp)."""
    dep = m.dep
    per_node = dep.replicas_per_node
    if not m.uses_host or per_node <= 1 or dep.system.host_share != 1.0:
        return None
    return (f"one replica with the whole host of {dep.system.name}'s {dep.system.num_gpus} GPUs (memory, DRAM "
            f"bandwidth, CPU); with all {per_node} replicas of the node serving, each has 1/{per_node} of it, "
            "as `kvsim plan` prices it")
