"""CAKE: cascading and adaptive KV cache eviction with layer preferences (Qin et al., ICLR 2025;
METHODS.md 1.8).

One memory budget ``L x C`` (``cache_size`` C = 1024 per layer on average in the repo's example,
``window_size`` w = 32) is split over layers in proportion to a preference
``P_l = H_l^tau1 V_l^tau2`` (H: entropy, spatial dispersion; V: variance, temporal shift of the
window attention). During prefill the budgets are re-allocated after each layer and the earlier
layers trimmed to their new budgets (cascading), so the cache never exceeds the total budget.
Tokens are ranked by an eviction indicator (mean + variance of the window attention).

The split depends on the data, which kvsim does not see: it keeps the total budget and prices
every layer at the mean ``C`` (the bytes are the same for any split once each layer's budget is
below the prompt). ``budget_ratio`` instead keeps that fraction of the prompt in total (the
paper's "3.2 % of the KV"). Resident per request (P prompt, g generated; generated tokens are
appended as in SnapKV)::

    tokens/layer = min(P, C) + g                 (ratio: ratio x P + g)

Prefill: FlashAttention plus, per layer, the window's scores against every key (``2 w d`` QK
FLOPs per key and query head, fp32 scores written and read), entropy and variance of the window
attention and the indicator (``5 + 7`` FLOPs per score: softmax, mean, variance, entropy
[DERIVED]), and the cascade's compaction: each layer's kept tokens are gathered when it is
processed and once more when later stages re-trim it (2 copies [DERIVED]). Decode reads the
kept tokens. Memory: the cascade bounds CAKE's prefill peak by the budget; kvsim's pools hold the
residency above for the request's whole life (``n_prompt`` omitted: every cached token is prompt).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import (
    arr,
    gpu_pass,
    has,
    kv_tok_layer,
    split_prompt,
    sum_seq,
)
from kvsim.methods.base import WindowedParams
from kvsim.methods.snapkv import SCORE_BYTES, SOFTMAX_FLOPS_PER_SCORE, SnapKV
from kvsim.specbase import Float, Int

STATS_FLOPS_PER_SCORE = 7.0  # window mean, variance (indicator), entropy and variance per layer [DERIVED]
COMPACTIONS = 2.0  # cascade: gather when a layer is processed + one re-trim at a later stage [DERIVED]


class CAKEParams(WindowedParams):
    capacity: Int = Field(1024, gt=0)
    """mean tokens kept per layer (repo example cache_size 1024), window included."""
    window: Int = Field(32, gt=0)
    """observation window (repo example window_size 32)."""
    budget_ratio: Float | None = Field(None, gt=0, le=1)
    """if set, keep this fraction of the prompt in total (paper: 3.2 %), overriding capacity."""


class CAKE(SnapKV):
    name = "cake"
    mla_extrapolated = "per-head selection is priced as selection of whole latent rows"
    summary = "CAKE: one budget (1024 tokens per layer on average) split by layer preference, cascading eviction"
    Params = CAKEParams  # type: ignore[assignment]
    role = "selection"  # composes with a storage method (kvsim.methods.compose)
    # the cascade trims each layer as prefill goes (module docstring; METHODS.md 1.8: it "caps the peak
    # memory at the budget"), so unlike SnapKV the prompt's whole KV is never held: the budget from the
    # first chunk on (the layer being trimmed, at most one layer's prompt KV, is transient and not reserved)
    full_prompt_until_prefilled = False

    def kept(self, p: np.ndarray) -> np.ndarray:
        """Prompt tokens kept per layer (mean over layers) for prompts of ``p`` tokens."""
        r = self.params.budget_ratio
        return r * p if r is not None else np.minimum(p, float(self.params.capacity))

    def resident_layer_mean(self, n: Num, n_prompt: Num | None = None) -> np.ndarray:
        p, g = split_prompt(n, n_prompt)
        return self.kept(p) + g

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, m, p = self.dep, self.dep.model, self.params
        L, hq = m.attn_layers, dep.q_heads_per_gpu
        n_new = arr(n_new)
        keys = sum_seq(n_new)
        scores = keys * p.window * hq
        kept = sum_seq(self.kept(n_new))
        flops = scores * (2.0 * m.q_head_dim + SOFTMAX_FLOPS_PER_SCORE + STATS_FLOPS_PER_SCORE)
        select = gpu_pass(dep, "cake_select", op="attn_prefill", flops=L * flops,
                          hbm=L * (scores * SCORE_BYTES + COMPACTIONS * 2.0 * kept * kv_tok_layer(dep)),
                          launches=(4.0 + COMPACTIONS) * L * has(keys))
        return prefill_attention(dep, n_new, n_cached) + select
