"""SnapKV: prompt compression by observation-window voting (Li et al., 2024; METHODS.md 1.7).

At the end of prefill the last ``w`` prompt queries score every prefix key; the scores are
summed over the window, pooled (kernel ``k``) and the top ``C - w`` keys per head are kept
together with the window, so each layer and head keeps ``c = min(P, C)`` prompt tokens
(prompts shorter than ``C`` are not compressed). Generated tokens are appended uncompressed::

    resident(n) = sum over layers of min(P, c_l) + g        (P prompt, g generated, n = P + g)

Without ``n_prompt`` every cached token counts as prompt (resident = L min(n, C)).
Decode reads the resident tokens + the new one. Prefill is full FlashAttention plus the
voting work (~``w / S`` of the attention [DERIVED]), charged per chunk on its ``n`` keys so
that the chunks of one prompt add up to the one-shot cost: ``2 w d`` QK FLOPs per key and
query head, ``5 + k`` FLOPs per score (softmax, window sum, pooling), fp32 scores written and
read (8 B per score), and a compaction copy of the kept tokens (``min(n, C)`` read + write).
Defaults: C = 1024 (of the paper's 1024/2048/4096), w = 32, k = 7 (LongBench setting).
The prefill peak holds the whole prompt's KV.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import arr, gpu_pass, has, kv_tok_layer, split_prompt, sum_seq
from kvsim.methods.base import KVMethod, Residency, WindowedParams
from kvsim.specbase import Int

SOFTMAX_FLOPS_PER_SCORE = 5.0
SCORE_BYTES = 8.0  # fp32 score written then read


class SnapKVParams(WindowedParams):
    capacity: Int = Field(1024, gt=0)
    """tokens kept per head and layer, window included (paper: 1024 / 2048 / 4096)."""
    window: Int = Field(32, gt=0)
    """observation window w (32 for LongBench, 16 for NIAH)."""
    kernel: Int = Field(7, gt=0)
    """pooling kernel k (7 for LongBench, 5 for NIAH)."""


class SnapKV(KVMethod):
    name = "snapkv"
    mla_extrapolated = "per-head selection is priced as selection of whole latent rows"
    summary = "SnapKV: keep the top (C - w) prompt tokens per head by window voting + the window, C = 1024"
    Params = SnapKVParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)
    prompt_aware = True  # the prompt is compressed to C per layer; generated tokens are appended
    full_prompt_until_prefilled = True  # (the prefill peak holds the whole prompt's KV)
    linear_residency = False  # prompt capped at C per layer
    constant_decode_fields = (("attn_decode", "launches"), ("attn_decode", "tiles"))

    def layer_capacities(self) -> np.ndarray:
        """[L] prompt tokens kept per layer (SnapKV: C in every layer)."""
        return np.full(self.dep.model.attn_layers, float(self.params.capacity))

    def resident_layer_mean(self, n: Num, n_prompt: Num | None = None) -> np.ndarray:
        """Tokens resident per layer, averaged over layers: ``mean_l min(P, c_l) + g``."""
        p, g = split_prompt(n, n_prompt)
        caps = self.layer_capacities()
        kept = np.minimum(p[..., None], caps).mean(axis=-1)
        return kept + g

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        dep = self.dep
        res = self.resident_layer_mean(n_tokens, n_prompt)
        return Residency(gpu_bytes=dep.model.attn_layers * res * kv_tok_layer(dep))

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        return decode_attention(self.dep, self.resident_layer_mean(ctx, n_prompt) + 1.0)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, m, p = self.dep, self.dep.model, self.params
        L, hq = m.attn_layers, dep.q_heads_per_gpu
        n_new = arr(n_new)
        keys = sum_seq(n_new)  # keys scored, amortized over the chunks of a prompt
        scores = keys * p.window * hq
        kept = sum_seq(np.minimum(n_new, self.layer_capacities().mean()))
        vote = gpu_pass(
            dep, "snapkv_vote", op="attn_prefill",
            flops=L * (scores * 2.0 * m.q_head_dim + scores * (SOFTMAX_FLOPS_PER_SCORE + p.kernel)),
            hbm=L * (scores * SCORE_BYTES + 2.0 * kept * kv_tok_layer(dep)),
            launches=4.0 * L * has(keys))
        return prefill_attention(dep, n_new, n_cached) + vote
