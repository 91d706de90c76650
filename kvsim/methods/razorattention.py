"""RazorAttention: full cache in retrieval heads, truncated cache elsewhere (Tang et al., 2024;
METHODS.md 1.10 [knob values from the authors' rebuttal and a review, not the paper]).

Retrieval heads (``echo_ratio`` 1% echo + ``induction_ratio`` 15% induction = 16% of the KV
heads) keep every token. The other heads keep ``max(min_recent, recent_frac x P)`` recent
prompt tokens (4000 and S/5) plus one compensation token (the mean of the dropped KV), and
every generated token::

    tokens/head = r n + (1 - r) [ min(P, max(4000, P/5)) + 1[P > keep] + g ]

so above ~20K tokens the non-retrieval heads still grow as S/5: the asymptotic KV ratio is
``r + (1 - r)/5`` = 0.328 (~3x), and ~1.7x at 8K, matching the review's figures.
Decode reads the same. Prefill is full FlashAttention (no savings, as DuoAttention notes)
plus one pass over the dropped tokens for the compensation token. Not defined for MLA.

On a GQA model the ratio is taken over KV heads, the best case: the paper finds retrieval heads
among attention (query) heads, and a KV head stays whole if any query head of its group is one. If
the 16 % of query heads fall in different groups, up to ``min(1, g r)`` of the KV heads stay whole
(``g`` query heads per KV head; Llama-3.1-8B: up to 64 %). Set ``echo_ratio`` / ``induction_ratio``
to the KV-head share a model's retrieval heads occupy when it is known.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import (
    arr,
    busiest_gpu_head_fraction,
    gpu_pass,
    has,
    kv_tok_layer,
    require_not_mla,
    split_prompt,
    sum_seq,
)
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Float, Int


class RazorAttentionParams(MethodParams):
    echo_ratio: Float = Field(0.01, ge=0, le=1)
    induction_ratio: Float = Field(0.15, ge=0, le=1)
    min_recent: Int = Field(4000, ge=0)
    """recent tokens kept by non-retrieval heads at least."""
    recent_frac: Float = Field(0.2, ge=0, le=1)
    """... or this fraction of the prompt, whichever is larger (S/5)."""


class RazorAttention(KVMethod):
    name = "razorattention"
    summary = "RazorAttention: 16% retrieval heads full, others max(4000, S/5) recent + a compensation token"
    Params = RazorAttentionParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)
    prompt_aware = True  # non-retrieval heads keep max(4000, P/5) prompt tokens
    full_prompt_until_prefilled = True  # (the prefill peak holds the whole prompt's KV)
    linear_residency = False  # non-retrieval heads truncated
    constant_decode_fields = (("attn_decode", "launches"), ("attn_decode", "tiles"), ("attn_decode_truncated", "launches"),
                              ("attn_decode_truncated", "tiles"))

    def check(self) -> None:
        require_not_mla(self.dep, "razorattention", "head-level retention needs per-head KV")

    @property
    def ratio(self) -> float:
        """The retrieval heads' share of every layer's KV heads (the method's parameter)."""
        return min(1.0, self.params.echo_ratio + self.params.induction_ratio)

    @property
    def r(self) -> float:
        """The retrieval share priced: the busiest GPU's under tensor parallelism (whole heads per GPU:
        :func:`busiest_gpu_head_fraction`), which every step waits for and whose pool holds the most."""
        return busiest_gpu_head_fraction(self.dep, self.ratio)

    def other_tokens(self, n: Num, n_prompt: Num | None = None) -> np.ndarray:
        """Tokens held by a non-retrieval head."""
        p, g = split_prompt(n, n_prompt)
        keep = np.maximum(self.params.min_recent, self.params.recent_frac * p)
        return np.minimum(p, keep) + (p > keep) + g

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        n = arr(n_tokens)
        tokens = self.r * n + (1.0 - self.r) * self.other_tokens(n, n_prompt)
        return Residency(gpu_bytes=tokens * self.dep.full_kv_bytes_per_token)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        ctx = arr(ctx)
        cost = Cost(())
        if self.r > 0:
            cost = cost + decode_attention(self.dep, ctx + 1.0, heads_frac=self.r)
        if self.r < 1:
            cost = cost + decode_attention(self.dep, self.other_tokens(ctx, n_prompt) + 1.0, heads_frac=1.0 - self.r,
                                           name="attn_decode_truncated")
        return cost

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, L = self.dep, self.dep.model.attn_layers
        new = sum_seq(n_new)
        comp = gpu_pass(dep, "razor_compensation", flops=L * new * kv_tok_layer(dep, 1.0) * (1.0 - self.r),
                        hbm=L * new * kv_tok_layer(dep, heads_frac=1.0 - self.r), launches=L * has(new))
        return prefill_attention(dep, n_new, n_cached) + comp
