"""H2O: heavy-hitter oracle eviction (Zhang et al., NeurIPS 2023; METHODS.md 1.5, row 12).

The cache keeps a budget of ``(heavy_ratio + recent_ratio) x P`` tokens per head, ``P`` the
prompt length (h2o_hf defaults 0.1 + 0.1 = "20%"); after prefill every new token enters the
budget and the token with the lowest accumulated attention is evicted, so the cache stays at
the budget. ``budget_tokens`` sets an absolute budget instead (FlexGen-style). Per token and
query head the method also keeps one fp32 accumulated score (4 B) [DERIVED].

Without ``n_prompt`` every cached token counts as prompt (budget = 20% of the context).

H2O needs the attention probabilities, so it runs eager (non-Flash) attention:
* decode: the scores of the attended tokens are written, soft-maxed, read by PV and by the
  accumulation (``score_passes`` x 2 B per score) and the accumulated scores are read and
  written (8 B per token per head); 5 kernels per layer (QK, softmax, PV, accumulate, evict);
* prefill: the full ``n x (c + n)`` score matrix per head is computed (masked entries are not
  skipped: twice the causal FLOPs) and streams through HBM ``score_passes`` times.
``score_passes`` = 12 two-byte passes follows the HF eager op sequence of h2o_hf: QK^T writes
S (1), the causal-mask add reads S and the mask and writes S (3), the fp32 softmax reads S and
writes P (1 + 2), the cast to bf16 reads and writes (2 + 1), PV reads P (1), the accumulation
reads P (1) [DERIVED]. Gao et al. (MLSys'25, Table 3) measured H2O prefill at 0.51-0.58x FP16
(prompt lengths not given); on an A6000-class GPU (155 TFLOP/s, 768 GB/s) kvsim gives
0.73x at 1K, 0.58x at 2K and 0.42x at 4K prompts for Llama-2-7B (score traffic grows as S^2).
The prefill peak holds the whole prompt's KV (eviction happens after prefill).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import arr, attn_decode, eager_prefill, eager_scores_bytes, kv_tok_layer, split_prompt
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Float, Int

SCORE_BYTES = 4.0  # fp32 accumulated attention per token per query head
SOFTMAX_FLOPS_PER_SCORE = 5.0  # max, sub, exp, sum, div


class H2OParams(MethodParams):
    heavy_ratio: Float = Field(0.1, ge=0, le=1)
    """heavy-hitter budget as a fraction of the prompt (h2o_hf default 0.1)."""
    recent_ratio: Float = Field(0.1, ge=0, le=1)
    """recent-window budget as a fraction of the prompt (h2o_hf default 0.1)."""
    budget_tokens: Int | None = Field(None, gt=0)
    """absolute cache budget (heavy + recent tokens); overrides the ratios."""
    score_passes: Float = Field(12.0, ge=0, le=1000)
    """2-byte HBM passes over each score element in eager attention (HF op sequence, see above)."""

    @model_validator(mode="after")
    def _some_budget(self) -> "H2OParams":
        kept = self.heavy_ratio + self.recent_ratio
        if self.budget_tokens is None and not 0 < kept <= 1:
            raise ValueError(f"heavy_ratio + recent_ratio must be above 0 and at most 1 (the fraction of the "
                             f"prompt kept; got {kept:g})")
        return self


class H2O(KVMethod):
    name = "h2o"
    mla_extrapolated = "per-head eviction is priced as eviction of whole latent rows"
    summary = "H2O heavy-hitter + recent eviction (20% of the prompt), eager attention with scores"
    Params = H2OParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)
    prompt_aware = True  # budget set from the prompt at the end of prefill
    full_prompt_until_prefilled = True  # (the prefill peak holds the whole prompt's KV)
    bounded = True  # the cache stays at the budget while tokens are generated
    linear_residency = False  # evicted to a budget (budget_tokens: not proportional to n)
    constant_decode_fields = (("attn_decode", "launches"),)

    def budget(self, n_prompt: Num) -> Num:
        p = self.params
        if p.budget_tokens is not None:
            return float(p.budget_tokens)
        return (p.heavy_ratio + p.recent_ratio) * arr(n_prompt)

    def resident(self, n: Num, n_prompt: Num | None = None) -> np.ndarray:
        """Tokens kept per head: ``min(n, budget(P))``."""
        n = arr(n)
        p, _ = split_prompt(n, n_prompt)
        return np.minimum(n, self.budget(p))

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        dep = self.dep
        per_tok = kv_tok_layer(dep) + SCORE_BYTES * dep.q_heads_per_gpu
        return Residency(gpu_bytes=dep.model.attn_layers * self.resident(n_tokens, n_prompt) * per_tok)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep = self.dep
        att = self.resident(ctx, n_prompt) + 1.0
        hq = dep.q_heads_per_gpu
        scores = hq * att * (self.params.score_passes * dep.ab + 2.0 * SCORE_BYTES)
        return attn_decode(dep, att, att * kv_tok_layer(dep), layers=dep.model.attn_layers,
                           write_bytes=kv_tok_layer(dep), extra_flops=SOFTMAX_FLOPS_PER_SCORE * hq * att,
                           extra_hbm=scores, launches_per_layer=5.0)

    def prefill_scores_bytes(self, n_new: Num, n_cached: Num) -> Num:
        return eager_scores_bytes(self.dep, n_new, n_cached)  # (eager attention: the scores it keeps)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep = self.dep
        return eager_prefill(dep, n_new, n_cached, score_passes=self.params.score_passes,
                             accum_bytes_per_token=dep.q_heads_per_gpu * 2 * SCORE_BYTES, name="h2o_scores")
