"""Elastic Cache: importance-driven cache merging for instruction encoding, fixed-point
elimination for generation (Liu et al., ECCV 2024; code github.com/liuzuyan/ElasticCache).

Instruction encoding (prefill) runs with the attention weights materialized
(``output_attentions=True``) and accumulates, per layer, each token's attention received
(averaged over heads). The lowest-scoring ``ratio`` of the prompt is removed, each removed
token merged (``scatter_reduce`` mean) into the nearest kept token (anchor) by position; the
first ``start`` tokens and the last token are kept (``kv_cache.py``, ``ElasticCache``). During
generation, whenever the cache exceeds ``(1 - ratio)`` of all tokens seen, the token at a fixed
point ``distance`` (-25) positions from the end of the retained part is dropped. So per layer
and KV head [DERIVED from ``forget_num = seq_len - num_of_token (1 - ratio)``]::

    resident(n) = (1 - ratio) n                 ratio 0.2 (every script in the repo): 80 % of n

(the code's integer rounding, the protected last token and the merged-in anchors add at most
a token). Decode attends to the resident tokens (FlashAttention suffices: generation uses no
scores) and, every ``1/ratio`` steps, shifts the ``|distance|`` tokens behind the fixed point
(read + write). Prefill: eager attention as H2O prices it (full score matrix, 12 two-byte
passes), a per-layer accumulated fp32 score, and the merge: every removed token read, its
anchor read and written (``ratio x P`` tokens, 3 K,V reads/writes). Prefix caching is not
offered: which tokens survive depends on the scores of the whole prompt.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import decode_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import (
    arr,
    eager_prefill, eager_scores_bytes,
    gpu_pass,
    has,
    kv_tok_layer,
    require_not_mla,
    sum_seq,
)
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Float, Int

ACCUM_SCORE_BYTES = 4.0  # fp32 accumulated score per token per layer (mean over heads), read + written


class ElasticParams(MethodParams):
    ratio: Float = Field(0.2, ge=0, lt=1)
    """fraction of the tokens removed (merged into anchors in prefill, dropped in generation); repo scripts: 0.2."""
    distance: Int = Field(-25, le=0)
    """fixed elimination point, tokens before the end of the retained cache (code default -25)."""
    score_passes: Float = Field(12.0, ge=0, le=1000)
    """2-byte HBM passes per attention score in eager prefill (H2O's HF op sequence)."""


class ElasticCache(KVMethod):
    name = "elastic"
    summary = "Elastic Cache: merge the 20% least important prompt tokens into anchors, fixed-point eviction in generation"
    Params = ElasticParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)
    full_prompt_until_prefilled = True  # (the merge needs the whole prompt's scores: the prefill peak holds its KV)

    def check(self) -> None:
        require_not_mla(self.dep, "elastic", "merging per-head keys and values into anchor tokens")

    def shares_prefix_blocks(self, block_tokens: int) -> bool:
        """No: the kept (merged) tokens of a prompt prefix depend on the scores of the whole prompt."""
        return False

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        keep = 1.0 - self.params.ratio
        return Residency(gpu_bytes=keep * arr(n_tokens) * self.dep.full_kv_bytes_per_token)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, p, L = self.dep, self.params, self.dep.model.attn_layers
        n = arr(ctx) + 1.0
        attn = decode_attention(dep, (1.0 - p.ratio) * n)
        B = float(n.shape[-1]) if n.ndim else 1.0
        zero = 0.0 * sum_seq(n)
        shift = gpu_pass(dep, "elastic_evict", op="memcpy",
                         hbm=L * B * p.ratio * abs(p.distance) * 2.0 * kv_tok_layer(dep) + zero,
                         launches=L * p.ratio + zero)  # one shift every 1/ratio steps (amortized)
        return attn + shift

    def prefill_scores_bytes(self, n_new: Num, n_cached: Num) -> Num:
        return eager_scores_bytes(self.dep, n_new, n_cached)  # (eager attention: the scores it keeps)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, p, L = self.dep, self.params, self.dep.model.attn_layers
        attn = eager_prefill(dep, n_new, n_cached, score_passes=p.score_passes,
                             accum_bytes_per_token=2.0 * ACCUM_SCORE_BYTES, name="elastic_scores")
        merged = p.ratio * sum_seq(arr(n_new))
        kv = kv_tok_layer(dep)
        merge = gpu_pass(dep, "elastic_merge", flops=L * merged * 2.0 * dep.model.kv_elements_per_token_per_layer * dep.kv_shard,
                         hbm=L * merged * 3.0 * kv, launches=2.0 * L * has(merged))  # scatter-mean + gather
        return attn + merge
