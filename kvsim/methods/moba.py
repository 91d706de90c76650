"""MoBA: mixture of block attention (Lu et al., Moonshot AI, 2025, arXiv 2502.13189).

The context is split into blocks of ``B`` tokens; a parameter-free gate scores each block by
the query's dot product with the block's mean-pooled key (§2.2) and every query attends to its
top-``k`` blocks, the current block always among them (causal within it; ``moba/moba_naive.py``
gives the current block +inf and future blocks -inf before the top-k). Defaults: ``B`` = 4096 and
``k`` = 12 (``examples/llama.py`` of github.com/MoonshotAI/MoBA; the paper's 1M-context setting,
sparsity ``1 - 12 x 4096 / 1M`` = 95.31 %); its scaling-law runs use ``B`` = 512, ``k`` = 3 at 8K
(81.25 %). Trained in (continual pre-training); kvsim prices the attention pattern on the given
model.

Tokens attended by the query at position ``t``: the current block's tokens (on average half a
block) plus ``k - 1`` earlier blocks, so kvsim uses ``min(t, (k - 1/2) B)`` [DERIVED: the
average over positions of the current block's fill] for decode, and the same cap per query
for prefill pairs (``window_pairs``). The gate reads the mean keys of the ``floor((t-1)/B)``
completed blocks (kept resident, one key vector per block per KV head: ``floor(n/B) / B`` of
the K; the reference code re-pools them every forward, keeping them is kvsim's [DERIVED] decode
form) and spends ``2 d_qk`` FLOPs per block and query head, plus a top-k. The full KV stays
resident. Prefill also mean-pools the new keys (one read of K). Not defined for MLA.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import decode_attention, prefill_attention, prefill_pairs
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import (
    arr,
    gpu_pass,
    has,
    key_elems_tok_layer,
    kv_tok_layer,
    require_not_mla,
    sum_seq,
    window_pairs,
)
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Int


class MoBAParams(MethodParams):
    block_size: Int = Field(4096, gt=0)
    """tokens per block B (1M setting: 4096; scaling-law runs: 512)."""
    top_k: Int = Field(12, gt=0)
    """blocks attended per query, the current one included (1M setting: 12; scaling-law runs: 3)."""


class MoBA(KVMethod):
    name = "moba"
    summary = "MoBA block attention: top-12 of 4096-token blocks by mean-pooled-key gate (full KV kept)"
    Params = MoBAParams
    linear_residency = False  # + one mean key per completed block

    def check(self) -> None:
        require_not_mla(self.dep, "moba", "block gating uses per-head keys")

    @property
    def span(self) -> float:
        """Tokens attended per query once the context exceeds it: ``(k - 1/2) B``."""
        return (self.params.top_k - 0.5) * self.params.block_size

    def _mean_bytes(self) -> float:
        return key_elems_tok_layer(self.dep) * self.dep.kvb  # one mean key per block per layer on this GPU

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        n = arr(n_tokens)
        L = self.dep.model.num_layers
        means = np.floor(n / self.params.block_size) * self._mean_bytes()
        return Residency(gpu_bytes=L * (n * kv_tok_layer(self.dep) + means))

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, L = self.dep, self.dep.model.num_layers
        n = arr(ctx) + 1.0
        blocks = np.floor((n - 1.0) / self.params.block_size)  # completed blocks scored by the gate
        hq = dep.q_heads_per_gpu
        gate = gpu_pass(dep, "moba_gate", op="attn_decode",
                        flops=L * sum_seq(blocks * 2.0 * hq * dep.model.q_head_dim),
                        hbm=L * sum_seq(blocks * (self._mean_bytes() + 4.0 * hq)),  # mean keys + fp32 scores
                        launches=2.0 * L + 0.0 * sum_seq(n))  # gate + top-k
        return decode_attention(dep, np.minimum(n, self.span)) + gate

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, L = self.dep, self.dep.model.num_layers
        n_new, n_cached = arr(n_new), arr(n_cached)
        attn = prefill_attention(dep, n_new, n_cached, pairs=window_pairs(n_new, n_cached, self.span))
        hq = dep.q_heads_per_gpu
        scored = sum_seq(prefill_pairs(n_new, n_cached)) / self.params.block_size  # ~ blocks scored per query, summed
        new = sum_seq(n_new)
        keys = key_elems_tok_layer(dep)
        gate = gpu_pass(dep, "moba_gate_prefill", op="attn_prefill",
                        flops=L * (scored * 2.0 * hq * dep.model.q_head_dim + new * keys),
                        hbm=L * (new * keys * dep.kvb + scored * 4.0 * hq), launches=3.0 * L * has(new))
        return attn + gate
