"""Oracle sampling: attention estimated from samples of the true attention distribution
(the analysis baseline of MagicPIG §4.1 and the tutorial's Table 6; METHODS.md 1.2 and 1.4).

Each decode step computes the exact weights ``w = softmax(q K^T)`` over all cached keys,
draws ``budget_ratio x S`` samples from ``w`` with replacement, and attends to the *unique*
sampled tokens. The tutorial (MagicPIG Table 6) prices this as fractions of full attention's
FLOPs: ``Cost1 = 0.5`` (``q K^T`` over every key is half of the attention) and ``Cost2`` = the
unique-sample fraction ``u`` ("massive duplication ... Cost2 significantly lower than the ratio
of sampled tokens"; ``E|S| <= 1 + B eps``). Its measured ``u``: ratio 0.3 -> 0.02, 0.1 -> 0.01,
0.02 -> 0.005 (Cost_total 0.52 / 0.51 / 0.505). kvsim charges exactly those columns, per
layer and sequence of ``S`` cached tokens + the new one (``n = S + 1``)::

    attn FLOPs = 2 Hq d_qk n            (Cost1: all logits)
               + 2 Hq (d_qk + d_v) u n  (Cost2: attention over the u n unique samples)
    attn bytes = n (K bytes) + u n (K + V bytes) + 2 x 4 B x Hq n (fp32 weights out and back)

plus a sampling pass (``SAMPLE_FLOPS_PER_SCORE`` = softmax 5 + prefix sum 1 per weight,
inverse-CDF draws). ``unique_fraction`` ``auto`` interpolates Table 6's measured ``u`` linearly
between its three ratios (0.02..0.3) and refuses other ratios; give ``unique_fraction`` then.
No memory is saved (the full KV stays resident); prefill is standard FlashAttention. Per
MagicPIG §4.1 its wall-clock speedup cannot exceed 2x.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.errors import ConfigError
from kvsim.methods._common import arr, attn_decode, gpu_pass, kv_tok_layer, sum_seq
from kvsim.methods._published import published
from kvsim.methods.base import KVMethod, MethodParams, PublishedAccuracy, Residency
from kvsim.specbase import Float

#: MagicPIG Table 6 (tutorial): sampling budget ratio -> measured unique fraction (Cost2)
TABLE6_UNIQUE = ((0.02, 0.005), (0.1, 0.01), (0.3, 0.02))
SAMPLE_FLOPS_PER_SCORE = 6.0  # softmax (max, sub, exp, sum, div) + prefix sum
SCORE_BYTES = 8.0  # fp32 weight written, then read by the sampler


class OracleParams(MethodParams):
    budget_ratio: Float = Field(0.1, gt=0, le=1)
    """samples drawn per step as a fraction of the context (Table 6: 0.02 / 0.1 / 0.3)."""
    unique_fraction: Literal["auto"] | float = "auto"
    """unique sampled tokens / context (Cost2); auto = Table 6's measured value."""


def unique_fraction(ratio: float) -> float:
    """Table 6's Cost2 for a sampling ratio in [0.02, 0.3], linear between the measured points."""
    xs, ys = zip(*TABLE6_UNIQUE)
    if not xs[0] - 1e-12 <= ratio <= xs[-1] + 1e-12:
        raise ConfigError(f"oracle budget_ratio {ratio} is outside MagicPIG Table 6's measured 0.02..0.3: "
                          "give unique_fraction (the unique-sample fraction) explicitly")
    return float(np.interp(ratio, xs, ys))


class OracleSampling(KVMethod):
    name = "oracle"
    summary = "oracle sampling (analysis baseline): exact weights over all keys, attend to unique samples"
    Params = OracleParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)

    def check(self) -> None:
        p = self.params
        if p.unique_fraction == "auto":
            unique_fraction(p.budget_ratio)
        elif not 0.0 < float(p.unique_fraction) <= p.budget_ratio:
            raise ConfigError(f"oracle unique_fraction must be in (0, budget_ratio={p.budget_ratio}], "
                              f"got {p.unique_fraction}")

    @property
    def u(self) -> float:
        p = self.params
        return unique_fraction(p.budget_ratio) if p.unique_fraction == "auto" else float(p.unique_fraction)

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        return Residency(gpu_bytes=arr(n_tokens) * self.dep.full_kv_bytes_per_token)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, m = self.dep, self.dep.model
        n = arr(ctx) + 1.0
        s = self.u * n  # unique sampled tokens
        kv = kv_tok_layer(dep)
        d_v = m.mla.kv_lora_rank if m.mla else m.head_dim
        hq = dep.q_heads_per_gpu
        key_bytes = kv if m.mla else kv / 2.0  # MLA: the latent is the key
        # attn_decode prices QK + PV on n + s tokens; drop PV on the n of Cost1 (logits only):
        attn = attn_decode(dep, n + s, n * key_bytes + s * kv, layers=m.attn_layers, write_bytes=kv,
                           extra_flops=-2.0 * hq * d_v * n, extra_hbm=SCORE_BYTES * hq * n, launches_per_layer=3.0)
        samp = gpu_pass(dep, "oracle_sample", flops=m.attn_layers * sum_seq(SAMPLE_FLOPS_PER_SCORE * hq * n),
                        launches=2.0 * m.attn_layers + 0.0 * sum_seq(n))
        return attn + samp

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        return prefill_attention(self.dep, n_new, n_cached)

    def published_accuracy(self) -> list[PublishedAccuracy]:
        if self.params.unique_fraction != "auto":
            return []
        return published("oracle", self.params.budget_ratio, self.label())
