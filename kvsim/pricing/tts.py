"""Cost per test-time-scaling task: N samples of L_out generated tokens after an L_in-token prompt.

Kinetics (Sadhukhan et al., "Kinetics: Rethinking Test-Time Scaling Laws", NeurIPS 2025,
arXiv 2506.05333, §3 Eq. 4) prices a task in *equivalent FLOPs*::

    eFLOPs = C_comp + I * C_mem                         (I: FLOPs per byte of the GPU)
    C_TTS  = 2 N P L_out                                 linear modules (weights)
           + 2 r N L_in D L_out + r N D L_out^2          attention compute
           + 2 I L_in D L_out   + I N D L_out^2          KV reads (16-bit KV: 2 bytes x D)

with ``P`` active parameters, ``r`` the GQA ratio (query heads / KV heads), ``D`` KV elements
per token (all layers, K and V) and ``I = 562.5`` FLOPs/byte on a B200 (= its dense FP8 peak
4.5e15 FLOP/s over 8e12 B/s of HBM). Weight reads are left out: at the large batches of
test-time scaling they are shared by the batch. The prompt's KV is read once per step for
all N samples (the ``2 I L_in D L_out`` term has no ``N``), as shared-prefix ("cascade")
attention kernels do (Hydragen, Juravsky et al. 2024; FlashInfer cascade attention).

kvsim prices the same task through its own cost path instead of the closed form:

* linear work per generated token: :func:`kvsim.costmodel.transformer.linear_cost` of a
  step of ``batch`` sequences divided by ``batch``; ``batch=None`` is Kinetics' large-batch
  limit, the marginal token ``linear_cost(2, 2) - linear_cost(1, 1)`` (no weight bytes);
* attention of decode step ``t`` (``0 <= t < L_out``) of each sample: the method's
  ``decode_cost`` at context ``L_in + t`` (dense: ``L_in + t + 1`` tokens read; prompt-aware
  methods are told that ``L_in`` of them are prompt; a prompt-compressing method's ``L_in`` is
  its effective prompt; a compressor model's own pass is not counted), priced
  step by step as a ``[L_out, 1]`` array and summed. For the ``full`` method with
  ``shared_prompt`` the prompt's KV bytes are divided by N (read once per step for the
  group), its FLOPs are not; every other method prices each sample's own context (a
  sparse method's selection differs per sample);
* the prompt's prefill once per task (its KV shared by the N samples through the prefix
  cache): ``L_in`` marginal linear tokens without the LM head (``linear_cost(L_in + 1, 1) -
  linear_cost(1, 1)``) plus the method's ``prefill_cost(L_in, 0)``. Kinetics' Eq. 4 leaves
  prefill out; with its short prompts it is < 1% of a task.

eFLOPs of a :class:`~kvsim.costmodel.cost.Cost` = GPU FLOPs + I x HBM bytes (host and
PCIe work is not counted: Kinetics prices one GPU). Beside it, ``roofline_s`` is kvsim's own
view of the same work: :class:`~kvsim.costmodel.roofline.Roofline` seconds of the task's
summed parts on one GPU of the deployment (each part's compute and memory combined as the
roofline combines them, with the op classes' efficiencies), without per-kernel launch and tile
overheads, which a large batch amortizes as it amortizes the weight reads. Kinetics adds
compute and memory instead (eFLOPs / peak FLOP/s). ``I`` defaults to the deployment's
GEMM-dtype peak over HBM bandwidth (B200 with fp8 weights: 562.5, Kinetics' value).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import decode_attention, kv_bytes_per_token_layer
from kvsim.costmodel.cost import NUMERIC_FIELDS, Cost
from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.roofline import Roofline
from kvsim.costmodel.transformer import linear_cost
from kvsim.errors import ConfigError
from kvsim.methods.base import KVMethod
from kvsim.specbase import Strict

MAX_SAMPLES = 1_000_000
#: longest generation priced step by step ([L_out] arrays per part)
MAX_GEN_TOKENS = 4_194_304
MAX_PROMPT_TOKENS = 10**9


class TTSTask(Strict):
    """One test-time-scaling task: ``samples`` generations of ``gen_tokens`` after one prompt."""

    samples: int = Field(1, ge=1, le=MAX_SAMPLES, description="N: parallel samples (best-of-N); 1 for one long CoT")
    prompt_tokens: int = Field(1024, ge=1, le=MAX_PROMPT_TOKENS, description="L_in: prompt tokens, shared by the samples")
    gen_tokens: int = Field(16384, ge=1, le=MAX_GEN_TOKENS, description="L_out: tokens generated per sample")
    shared_prompt: bool = Field(True, description="prompt KV read once per step for all samples (full method)")


def intensity_flops_per_byte(dep: Deployment) -> float:
    """Kinetics' ``I``: the GPU's dense peak FLOP/s in the GEMM dtype over its HBM bytes/s (FLOPs per byte)."""
    gpu = dep.system.gpu
    peaks = gpu.peak_flops_per_s
    return float(peaks.get(dep.gemm_dtype, peaks["fp32"])) / float(gpu.memory_bw_bytes_per_s)


def eflops(cost: Cost, intensity: float) -> float:
    """Kinetics' equivalent FLOPs of a cost: GPU FLOPs + ``intensity`` x HBM bytes (§3, Eq. 3)."""
    return float(np.sum(cost.total("flops"))) + intensity * float(np.sum(cost.total("hbm_bytes")))


def sum_steps(cost: Cost, steps: int) -> Cost:
    """A cost whose fields are ``[steps]`` arrays (or per-step scalars) summed over the steps."""
    parts = []
    for p in cost.parts:
        vals = {f: float(np.sum(np.broadcast_to(np.asarray(getattr(p, f), dtype=np.float64), (steps,))))
                for f in NUMERIC_FIELDS}
        parts.append(replace(p, **vals))
    return Cost(tuple(parts))


#: tokens of a step at which every expert of a MoE layer is touched: (1 - k/E)^T is below 1e-17 for
#: any k/E >= 6e-4 (E <= 1,600 experts with k = 1), so the touched count is E to float precision
MOE_SATURATED_TOKENS = 65536.0


def linear_per_token(dep: Deployment, batch: int | None = None) -> Cost:
    """Weight GEMMs, elementwise kernels, LM head (and TP all-reduce) of one decode token.

    ``batch`` sequences share each step's weight read (``linear_cost(batch, batch) / batch``);
    ``None``: the marginal token of a large batch, ``linear_cost(2, 2) - linear_cost(1, 1)``
    (Kinetics' assumption that weight access is amortized away), FLOPs ~ ``2 P``. A MoE
    model's second token would touch new experts (``E (1 - (1 - k/E)^T)`` of them per layer,
    :mod:`kvsim.costmodel.transformer`) and read their weights: its marginal token is taken
    where every expert is already touched, ``(linear_cost(2 T, 2 T) - linear_cost(T, T)) / T``
    at ``T = MOE_SATURATED_TOKENS`` (linear_cost is affine in tokens there, as a dense model's
    is everywhere)."""
    if batch is None and dep.model.moe is not None:
        T = MOE_SATURATED_TOKENS
        return (linear_cost(dep, 2.0 * T, 2.0 * T) + linear_cost(dep, T, T).scaled(-1.0)).scaled(1.0 / T)
    if batch is None:
        return linear_cost(dep, 2.0, 2.0) + linear_cost(dep, 1.0, 1.0).scaled(-1.0)
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    return linear_cost(dep, float(batch), float(batch)).scaled(1.0 / batch)


def attention_per_sample(dep: Deployment, method: KVMethod, task: TTSTask) -> Cost:
    """Decode attention of one sample over its ``L_out`` steps (see module docstring)."""
    L_in, L_out, N = prompt_kv_tokens(method, task), task.gen_tokens, task.samples
    steps = np.arange(L_out, dtype=np.float64)[:, None]  # [L_out, 1]: one sequence per step
    if method.name == "full" and task.shared_prompt and N > 1:
        own = decode_attention(dep, steps + 1.0)  # generated tokens + itself
        shared = decode_attention(dep, np.full_like(steps, float(L_in)),
                                  kv_bytes_per_token_layer_read=kv_bytes_per_token_layer(dep) / N,
                                  n_written=np.zeros_like(steps), name="attn_decode_prompt")
        return sum_steps(own + shared, L_out)
    n_prompt = np.full_like(steps, float(L_in)) if method.prompt_aware else None  # the rest is generated
    return sum_steps(method.decode_cost(steps + float(L_in), n_prompt), L_out)


def prompt_kv_tokens(method: KVMethod, task: TTSTask) -> float:
    """Prompt tokens the model prefills and keeps KV for (LLMLingua compresses the prompt first)."""
    return float(np.ceil(float(method.effective_prompt_tokens(float(task.prompt_tokens))) - 1e-9))


@dataclass(frozen=True)
class TaskCost:
    """Work of one task, split as Kinetics splits it (all amounts summed over the task)."""

    task: TTSTask
    intensity_flops_per_byte: float
    prefill: Cost  # prompt once: linear + attention
    linear: Cost  # generated tokens' weight GEMMs etc. (N x L_out tokens)
    attention: Cost  # generated tokens' attention (N samples)
    roofline_s: float = 0.0  # kvsim's roofline seconds of the whole task on one GPU, overheads left out
    notes: tuple[str, ...] = ()  # one line each, for the user (``kvsim estimate --tts`` prints them as `note:` lines)

    @property
    def off_gpu(self) -> bool:
        """Some work runs off the GPU (host CPU, DRAM, PCIe: MagicPIG, InfLLM): eFLOPs leave it out,
        ``roofline_s`` counts it."""
        return any(float(np.sum(c.total(f))) > 0 for c in (self.prefill, self.linear, self.attention)
                   for f in ("cpu_flops", "dram_bytes", "pcie_bytes"))

    @property
    def linear_eflops(self) -> float:
        return eflops(self.linear, self.intensity_flops_per_byte)

    @property
    def attention_eflops(self) -> float:
        return eflops(self.attention, self.intensity_flops_per_byte)

    @property
    def prefill_eflops(self) -> float:
        return eflops(self.prefill, self.intensity_flops_per_byte)

    @property
    def total_eflops(self) -> float:
        return self.prefill_eflops + self.linear_eflops + self.attention_eflops

    @property
    def attention_share(self) -> float:
        """Attention's fraction of the decode eFLOPs (Kinetics Fig. 2a's quantity, as a share)."""
        d = self.linear_eflops + self.attention_eflops
        return self.attention_eflops / d if d > 0 else 0.0

    @property
    def attention_to_linear(self) -> float:
        """Attention eFLOPs over linear eFLOPs of the generated tokens."""
        return self.attention_eflops / self.linear_eflops if self.linear_eflops > 0 else float("inf")

    def numbers(self) -> dict:
        """The task's numbers as ``kvsim estimate --tts --json`` prints them (plain floats and bools)."""
        t = self.task
        return {"intensity_flops_per_byte": self.intensity_flops_per_byte, "prefill_eflops": self.prefill_eflops,
                "linear_eflops": self.linear_eflops, "attention_eflops": self.attention_eflops,
                "total_eflops": self.total_eflops, "attention_share": self.attention_share,
                "attention_to_linear": self.attention_to_linear,
                "eflops_per_generated_token": self.total_eflops / (t.samples * t.gen_tokens),
                "roofline_s": self.roofline_s, "off_gpu_work": self.off_gpu}

    def to_dict(self) -> dict:
        """The task (its fields), its numbers (:meth:`numbers`) and its notes: JSON-ready."""
        return {**self.task.model_dump(), **self.numbers(), "notes": list(self.notes)}


def task_cost(dep: Deployment, method: KVMethod, task: TTSTask, *, batch: int | None = None,
              intensity: float | None = None) -> TaskCost:
    """Price one test-time-scaling task (module docstring); ``intensity`` overrides ``I`` (FLOPs/byte)."""
    I = intensity_flops_per_byte(dep) if intensity is None else float(intensity)
    if not (np.isfinite(I) and I >= 0):
        raise ConfigError(f"intensity must be a finite number >= 0 FLOPs/byte, got {intensity}")
    n_tok = float(task.samples) * task.gen_tokens
    per_tok = linear_per_token(dep, batch)
    P = prompt_kv_tokens(method, task)  # prefill's L_in tokens without the LM head (the first sample is a decode step's)
    prefill = linear_cost(dep, P + 1.0, 1.0) + linear_cost(dep, 1.0, 1.0).scaled(-1.0) + method.prefill_cost(P, 0.0)
    att = attention_per_sample(dep, method, task).scaled(float(task.samples))
    lin = per_tok.scaled(n_tok)
    roof = Roofline(dep.system)
    secs = sum(float(roof(without_overheads(c)).total_s) for c in (prefill, lin, att))
    return TaskCost(task=task, intensity_flops_per_byte=I, prefill=prefill, linear=lin, attention=att,
                    roofline_s=secs)


def task_notes(dep: Deployment, task: TTSTask | None) -> list[str]:
    """Notes on pricing ``task`` (None: its length is not known yet) on ``dep``: a task past the
    model's context is priced as written; at TP > 1 the numbers are per GPU."""
    notes = []
    limit = dep.model.max_context_tokens
    if task is not None and task.prompt_tokens + task.gen_tokens > limit:
        notes.append(f"prompt {task.prompt_tokens:,} + gen {task.gen_tokens:,} tokens is past {dep.model.name}'s context of "
                     f"{limit:,} tokens: priced as written (a model past its trained context; --context needs "
                     f"--allow-long-context for the same reason)")
    if dep.tp > 1:
        notes.append(f"eFLOPs and roofline seconds are per GPU of the TP-{dep.tp} replica (each GPU's share of the "
                     f"task; the task's eFLOPs are {dep.tp}x, plus the all-reduces)")
    return notes


def off_gpu_note(label: str) -> str:
    """The note for a method whose task runs work off the GPU (``TaskCost.off_gpu``)."""
    return (f"{label} runs work on the host (CPU, DRAM or PCIe): eFLOPs count GPU work only; "
            "'roofline s' counts all of it")


def without_overheads(cost: Cost) -> Cost:
    """The cost with launches, tiles and PCIe round trips set to 0 (amortized by a large batch)."""
    return Cost(tuple(replace(p, launches=0.0, tiles=0.0, pcie_round_trips=0.0) for p in cost.parts))


def kinetics_eq4(P: float, r: float, D: float, L_in: float, L_out: float, N: float, I: float) -> dict[str, float]:
    """Kinetics §3 Eq. 4 as published (16-bit KV): its three terms in eFLOPs.

    ``linear = 2 N P L_out``; ``attn_compute = 2 r N L_in D L_out + r N D L_out^2``;
    ``kv_access = I (2 L_in D L_out + N D L_out^2)`` (bytes = 2 x elements, halved by the
    triangle sum over the steps)."""
    return {
        "linear": 2.0 * N * P * L_out,
        "attn_compute": 2.0 * r * N * L_in * D * L_out + r * N * D * L_out**2,
        "kv_access": I * (2.0 * L_in * D * L_out + N * D * L_out**2),
    }


def affordable_gen_tokens(dep: Deployment, method: KVMethod, task: TTSTask, budget_eflops: float, *,
                          batch: int | None = None, intensity: float | None = None) -> int:
    """Longest generation per sample (tokens) whose task costs at most ``budget_eflops``, with
    ``prompt + gen`` within the model's context; 0 when even one token is over budget.
    Bisection on :func:`task_cost` (its total grows with the generation)."""
    hi = min(MAX_GEN_TOKENS, dep.model.max_context_tokens - task.prompt_tokens)

    def fits(g: int) -> bool:
        t = task.model_copy(update={"gen_tokens": g})
        return task_cost(dep, method, t, batch=batch, intensity=intensity).total_eflops <= budget_eflops

    if hi < 1 or not fits(1):
        return 0
    lo = 1
    if fits(hi):
        return hi
    while hi - lo > 1:  # fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
