"""Quest: query-aware page selection (Tang et al., ICML 2024; METHODS.md 1.3, row 19).

Per page of ``P`` tokens, Quest keeps the element-wise min and max of the page's keys
(metadata ``2 d b`` bytes per page per KV head, ``b`` the 16-bit activation bytes as Quest's
kernels keep it: ``1/P`` of the page's KV with a 16-bit KV, ``2/P`` with an 8-bit one; plus nothing
else: the full KV stays on the GPU). A decode step in a sparse layer reads the metadata of all
``ceil(S/P)`` pages, scores them (``sum_i max(q_i M_i, q_i m_i)``: ~4 FLOP per key element
per query head), picks the top ``T/P`` pages (top-k, 5-10 us below 128K: one small kernel)
and attends to their ``T`` tokens. Load fraction per step ``1/P + T/S`` (paper §3; P=16,
64K context, T=4K => 8x less). The first ``dense_layers`` layers stay dense.
Prefill is standard FlashAttention plus a min/max reduction over the new keys.

Budget: ``token_budget`` T (default 2048, the middle of Quest Fig.10's T=512/2048/4096 end-to-end
runs; budgets 256-4096 in the paper) or ``budget_ratio`` (T = ratio x S, as MagicPIG ran
Quest (16, 0.04) etc.; published accuracy exists for those ratio configs).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import arr, gpu_pass, has, key_elems_tok_layer, kv_tok_layer, sum_seq
from kvsim.methods._published import published
from kvsim.methods.base import KVMethod, MethodParams, PublishedAccuracy, Residency, require
from kvsim.specbase import Float, Int

SCORE_FLOPS_PER_ELEM = 4.0  # q*M, q*m, max, add per key element per query head


class QuestParams(MethodParams):
    page_size: Int = Field(16, gt=0)
    """tokens per page P (paper default 16; MagicPIG also ran 32 and 64)."""
    token_budget: Int = Field(2048, gt=0)
    """tokens attended per sparse layer T (Fig.10: 512/2048/4096)."""
    budget_ratio: Float | None = Field(None, gt=0, le=1)
    """if set, T = ratio x context (overrides token_budget; MagicPIG's Quest configs)."""
    dense_layers: Int = Field(2, ge=0)
    """leading layers kept dense (paper: the first two)."""

    @model_validator(mode="after")
    def _budget_holds_a_page(self) -> "QuestParams":
        if self.budget_ratio is None and self.token_budget < self.page_size:
            raise ValueError(f"token_budget ({self.token_budget}) must hold at least one page ({self.page_size} tokens): "
                             f"Quest selects token_budget // page_size whole pages")
        return self


class Quest(KVMethod):
    name = "quest"
    mla_extrapolated = "its per-page key bounds are taken over the latent"
    summary = "Quest page-level top-k: full KV plus per-page min/max keys; reads metadata + top pages"
    Params = QuestParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)
    linear_residency = False  # + min/max metadata of ceil(n / page_size) pages

    def __init__(self, dep, params=None):
        super().__init__(dep, params)
        L = dep.model.attn_layers
        self.Ld = float(min(self.params.dense_layers, L))
        self.Ls = L - self.Ld
        # metadata bytes per page per layer on this GPU: min and max of every key element
        self.meta_page = 2.0 * key_elems_tok_layer(dep) * dep.ab
        # elements one query head scores per page: its head's key width (MLA: the absorbed query against
        # the whole latent + RoPE key, 576 for DeepSeek-V2)
        m = dep.model
        self.score_width = float(m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) if m.mla is not None else float(m.head_dim)

    def check(self) -> None:
        L, d = self.dep.model.attn_layers, self.params.dense_layers
        require(d <= L, f"method quest: dense_layers={d} exceeds the {L} attention layers of model {self.dep.model.name} "
                        f"(allowed: 0..{L})")

    def shares_prefix_blocks(self, block_tokens: int) -> bool:
        """Whole pages per entry: the KV and the per-page metadata of an entry are the same in every request."""
        return block_tokens % self.params.page_size == 0

    def _pages(self, n: np.ndarray) -> np.ndarray:
        return np.ceil(n / self.params.page_size)

    def budget(self, n: Num) -> Num:
        """Tokens attended per sparse layer at context ``n`` (at least one page)."""
        p = self.params
        if p.budget_ratio is not None:
            return np.maximum(p.budget_ratio * arr(n), p.page_size)
        # whole pages: Quest's page_budget = token_budget // page_size (mit-han-lab/Quest, quest_init)
        return float(p.token_budget // p.page_size * p.page_size)

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        n = arr(n_tokens)
        full = self.dep.model.attn_layers * n * kv_tok_layer(self.dep)
        return Residency(gpu_bytes=full + self.Ls * self._pages(n) * self.meta_page)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep = self.dep
        n = arr(ctx) + 1.0
        cost = Cost(())
        if self.Ld:
            cost = cost + decode_attention(dep, n, layers=self.Ld)
        if not self.Ls:
            return cost
        att = np.minimum(n, self.budget(n))
        cost = cost + decode_attention(dep, att, layers=self.Ls)
        pages = self._pages(n)
        zero = 0.0 * sum_seq(n)
        cost = cost + gpu_pass(
            dep, "quest_estimate", op="attn_decode",
            flops=self.Ls * sum_seq(pages) * SCORE_FLOPS_PER_ELEM * dep.q_heads_per_gpu * self.score_width,
            hbm=self.Ls * sum_seq(pages * (self.meta_page + 4.0 * dep.q_heads_per_gpu)),  # metadata + fp32 scores
            launches=2.0 * self.Ls + zero)  # estimate + top-k
        return cost

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep = self.dep
        new = sum_seq(n_new)
        keys = key_elems_tok_layer(dep) * dep.ab  # key bytes per token per layer
        meta = gpu_pass(dep, "quest_metadata", flops=self.Ls * new * 2.0 * key_elems_tok_layer(dep),
                        hbm=self.Ls * (new * keys + new / self.params.page_size * self.meta_page),
                        launches=self.Ls * has(new))
        return prefill_attention(dep, n_new, n_cached) + meta

    def published_accuracy(self) -> list[PublishedAccuracy]:
        p = self.params
        if p.budget_ratio is None:
            return []
        return published("quest", (p.page_size, p.budget_ratio), self.label())
