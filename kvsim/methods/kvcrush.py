"""KVCrush: KV-cache reduction by similarity in head behaviour (Jha et al., ACML 2025,
arXiv 2503.00022; OpenVINO GenAI ``continuous_batching/kvcrush.cpp``).

KVCrush runs beside an importance-based evictor. Of a per-layer budget of ``C`` prompt tokens,
a share ``1 - f`` keeps the tokens with the highest importance (kvsim: SnapKV-style window
voting, ``w`` last prompt queries) and a share ``f`` keeps *representatives* of the tokens the
evictor would drop: each token gets a binary feature vector of one bit per attention head (is
the token in the top half of that head's scores), the vectors are compared with an anchor
vector (Hamming distance), sorted, and one token per bucket of equal distance-rank is kept
(``kvcrush.cpp``: ``create_indicators`` -> ``anchor_point`` -> ``hamming_distance`` ->
``representative_blocks`` picks uniformly spaced entries of the sorted list). The kept count,
hence residency per layer and KV head, is the budget::

    resident(n) = C(P) + g,   C(P) = r P   (budget_ratio r; with capacity c: C(P) = min(P, c))

Defaults: ``budget_ratio`` 0.25 (the abstract's "reduces LongBench KV cache size by 4x with
less than 1 % accuracy drop") and ``crush_fraction`` 0.5 [UNVERIFIED: the paper's split of one
budget between the evictor and KVCrush was not read; OpenVINO's ``KVCrushConfig.budget`` is an
absolute token/block count, default 128].

Prefill work beyond FlashAttention: the window vote (``2 w d`` FLOPs per key and query head,
``5 + 1`` FLOPs per score for softmax and the window sum, fp32 scores written and read), the
binary features (one comparison per token per query head against the head's median: 1 FLOP,
1 bit stored), the Hamming distance to the anchor (one XOR + popcount per token: ``H_q / 32``
word ops [DERIVED]) and a sort of the evicted tokens (``m log2 m`` comparisons on the
distances), then one compaction of the kept tokens (read + write). Decode reads the kept
tokens. The paper's overhead claim: "less than 0.5 % of total inference latency".
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import arr, gpu_pass, has, kv_tok_layer, split_prompt, sum_seq
from kvsim.methods.base import WindowedParams
from kvsim.methods.snapkv import SCORE_BYTES, SOFTMAX_FLOPS_PER_SCORE, SnapKV
from kvsim.specbase import Float, Int

FEATURE_FLOPS_PER_SCORE = 1.0  # compare with the head's median -> one bit
WORD_BITS = 32.0  # bits per XOR/popcount word of the Hamming distance


class KVCrushParams(WindowedParams):
    budget_ratio: Float = Field(0.25, gt=0, le=1)
    """prompt fraction kept per layer and head (abstract: 4x smaller on LongBench)."""
    capacity: Int | None = Field(None, gt=0)
    """if set, keep at most this many prompt tokens per layer and head (overrides budget_ratio)."""
    crush_fraction: Float = Field(0.5, ge=0, le=1)
    """share of the budget given to KVCrush representatives [UNVERIFIED]."""
    window: Int = Field(32, gt=0)
    """observation window of the importance evictor (SnapKV LongBench setting)."""


class KVCrush(SnapKV):
    name = "kvcrush"
    mla_extrapolated = "per-head selection is priced as selection of whole latent rows"
    summary = "KVCrush: keep 25% of the prompt, half by importance, half as head-behaviour representatives"
    Params = KVCrushParams  # type: ignore[assignment]
    role = "selection"  # composes with a storage method (kvsim.methods.compose)

    def kept(self, p: np.ndarray) -> np.ndarray:
        """Prompt tokens kept per layer and KV head for prompts of ``p`` tokens."""
        c = self.params.capacity
        return np.minimum(p, float(c)) if c is not None else self.params.budget_ratio * p

    def resident_layer_mean(self, n: Num, n_prompt: Num | None = None) -> np.ndarray:
        p, g = split_prompt(n, n_prompt)
        return self.kept(p) + g

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, m, p = self.dep, self.dep.model, self.params
        L, hq = m.attn_layers, dep.q_heads_per_gpu
        n_new = arr(n_new)
        keys = sum_seq(n_new)
        scores = keys * p.window * hq
        kept = self.kept(n_new)
        evicted = np.maximum(n_new - (1.0 - p.crush_fraction) * kept, 0.0)  # candidates for representatives
        vote = gpu_pass(dep, "kvcrush_vote", op="attn_prefill",
                        flops=L * scores * (2.0 * m.q_head_dim + SOFTMAX_FLOPS_PER_SCORE + 1.0),
                        hbm=L * scores * SCORE_BYTES, launches=3.0 * L * has(keys))
        sort_ops = sum_seq(evicted * np.log2(np.maximum(evicted, 1.0)))
        crush = gpu_pass(dep, "kvcrush_select", op="elementwise",
                         flops=L * (keys * hq * FEATURE_FLOPS_PER_SCORE + sum_seq(evicted) * np.ceil(hq / WORD_BITS)
                                    + sort_ops),
                         hbm=L * (keys * hq / 8.0 + 2.0 * sum_seq(kept) * kv_tok_layer(dep)),
                         launches=4.0 * L * has(keys))  # features, distance, sort, compaction
        return prefill_attention(dep, n_new, n_cached) + vote + crush
