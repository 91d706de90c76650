"""MiKV: importance-aware mixed-precision KV cache ("No Token Left Behind", Yang et al., 2024,
arXiv 2402.18096; METHODS.md 1.14).

Instead of evicting the tokens an eviction policy would drop, MiKV keeps them at low precision
(§3.1: per-token asymmetric round-to-nearest, 2/3/4 bits, one scale and zero point per token
and head for K and for V) and keeps the important ones at high precision (FP16, or INT8).
Importance follows H2O (heavy hitters by accumulated attention + recent tokens), so the method
keeps H2O's fp32 accumulated score per token and query head and needs the attention weights
(eager attention, priced as :mod:`kvsim.methods.h2o` does). §3.2's outlier balancer stores one
16-bit factor per channel per layer and KV head per request. Per token, per layer, per KV head
of head dim ``d`` (``f`` = ``important_ratio`` of the cached tokens, 16-bit scales ``s_b`` = 2 B)::

    important   2 d b_hi / 8                          16 bit, d = 128: 512 B
    other       2 d b_lo / 8 + 2 x 2 s_b              2 bit: 64 + 8 = 72 B
    mean        f 512 + (1 - f) 72 = 160 B at f = 0.2 (3.2x less than 16-bit KV)
    + H2O score 4 B per query head;   + balancer d s_b per layer and KV head per request

Defaults (``important_ratio`` 0.2 = H2O's 20 % heavy + recent budget, 16-bit important
tokens, 2-bit others) are [UNVERIFIED] against the paper's tables (METHODS.md 3: MiKV knob
values not verified). Decode: eager attention over all ``n`` tokens (importance needs the
weights) reading the mixed-precision cache and dequantizing the low-precision part in the
kernel (2 FLOP per element), the H2O score traffic, and one token demoted per step (read at
16 bits, quantized, written as codes). Prefill: H2O's eager attention (the importance scores),
then one quantization pass over the new tokens' low-precision share.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import (
    arr,
    attn_decode,
    eager_prefill, eager_scores_bytes,
    elems_tok_layer,
    gpu_pass,
    has,
    require_not_mla,
    sum_seq,
)
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.methods.h2o import SCORE_BYTES, SOFTMAX_FLOPS_PER_SCORE
from kvsim.specbase import Float, Int

QUANT_FLOPS_PER_ELEM = 5.0  # min/max, scale, round, pack (as KIVI's quantize kernel) [E]
DEQUANT_FLOPS_PER_ELEM = 2.0  # scale and shift, fused in attention (METHODS.md 1.1)


class MiKVParams(MethodParams):
    important_ratio: Float = Field(0.2, ge=0, le=1)
    """fraction of cached tokens kept at high precision (H2O heavy + recent)."""
    hi_bits: Int = Field(16, ge=1, le=16)
    """bits of the important tokens (FP16; INT8 in the paper's variants)."""
    lo_bits: Int = Field(2, ge=1, le=8)
    """bits of the other tokens (paper: INT2 / INT3 / INT4)."""
    score_passes: Float = Field(12.0, ge=0, le=1000)
    """2-byte HBM passes per attention score in eager attention (H2O's HF op sequence)."""


class MiKV(KVMethod):
    name = "mikv"
    summary = "MiKV: 20% important tokens at 16 bits, the rest at 2 bits (kept, not evicted)"
    Params = MiKVParams
    own_kv_format = True  # (its codes and residual do not follow --kv-dtype)
    linear_residency = False  # + per-request outlier-balancer factors
    full_prompt_until_prefilled = True  # (precision follows H2O importance over the whole prompt: the prefill peak holds its KV)

    def __init__(self, dep, params=None):
        super().__init__(dep, params)
        p = self.params
        self.E = elems_tok_layer(dep)  # K and V elements per token per layer on this GPU
        H = float(dep.kv_heads_per_gpu)
        self.hi = self.E * p.hi_bits / 8.0
        self.lo = self.E * p.lo_bits / 8.0 + H * 2 * 2 * dep.ab  # + per-token scale, zero of K and V
        f = p.important_ratio
        self.kv = f * self.hi + (1 - f) * self.lo  # mixed-precision KV bytes per token per layer
        self.tok = self.kv + SCORE_BYTES * dep.q_heads_per_gpu  # + H2O's accumulated score
        self.fixed = (self.E / 2.0) * dep.ab  # balancer: one 16-bit factor per channel per KV head

    def check(self) -> None:
        require_not_mla(self.dep, "mikv", "per-token mixed precision of per-head K and V")

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        n = arr(n_tokens)
        return Residency(gpu_bytes=self.dep.model.attn_layers * (n * self.tok + self.fixed * has(n)))

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, p, L = self.dep, self.params, self.dep.model.attn_layers
        n = arr(ctx) + 1.0
        hq = dep.q_heads_per_gpu
        lo_elems = (1 - p.important_ratio) * n * self.E
        scores = hq * n * (p.score_passes * dep.ab + 2.0 * SCORE_BYTES)  # eager scores + accumulated score r/w
        attn = attn_decode(dep, n, n * self.kv + self.fixed, layers=L, write_bytes=self.hi,
                           extra_flops=DEQUANT_FLOPS_PER_ELEM * lo_elems + SOFTMAX_FLOPS_PER_SCORE * hq * n,
                           extra_hbm=scores, launches_per_layer=5.0)
        B = float(n.shape[-1]) if n.ndim else 1.0
        zero = 0.0 * sum_seq(n)
        demote = gpu_pass(dep, "mikv_quant", flops=L * B * self.E * QUANT_FLOPS_PER_ELEM + zero,
                          hbm=L * B * (self.hi + self.lo) + zero, launches=float(L))
        return attn + demote

    def prefill_scores_bytes(self, n_new: Num, n_cached: Num) -> Num:
        return eager_scores_bytes(self.dep, n_new, n_cached)  # (eager attention: the scores it keeps)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, L = self.dep, self.dep.model.attn_layers
        attn = eager_prefill(dep, n_new, n_cached, score_passes=self.params.score_passes,
                             accum_bytes_per_token=dep.q_heads_per_gpu * 2 * SCORE_BYTES, name="mikv_scores",
                             kv_write_bytes_per_token_layer=0.0, kv_read_bytes_per_token_layer=self.kv)
        new = sum_seq(n_new)
        quant = gpu_pass(dep, "mikv_quant_prefill", flops=L * new * self.E * QUANT_FLOPS_PER_ELEM,
                         hbm=L * new * (self.E * dep.ab + self.tok), launches=2.0 * L * has(new))
        return attn + quant
