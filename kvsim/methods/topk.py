"""Exact TopK attention (the analysis baseline of MagicPIG §4-5; METHODS.md 1.4).

Each decode step computes ``q K^T`` over all cached keys (reads every K: half of the KV bytes
and half of the attention FLOPs, "Cost1 = 0.5"), writes and re-reads the fp32 scores to select
the top ``k`` per query head, then reads only those ``k`` values (``k/S`` of V, "Cost2")::

    bytes/layer = S * (K bytes) + k * (V bytes) + 2 * 4 B * Hq * S     (scores out and back)
    FLOPs/layer = 2 Hq d S (QK^T) + 2 Hq d k (PV)

On an MLA model the cached latent (``c_KV`` and the RoPE key) is the key and holds the value: K
bytes and V bytes are each the whole latent row.

METHODS.md's "Cost2 = k/S" counts QK and PV on the k selected tokens (as a kernel that gathers their
rows and recomputes their scores would, and as ``oracle`` prices its samples); exact top-k has
their scores from Cost1, so this prices PV only: k/(2S) of full attention's FLOPs and ``k`` K rows
less (2 % and 1 % at the default ratio 0.04; a thirteenth-session audit asked which to follow).

No memory is saved (full KV resident); prefill is standard. ``budget_ratio`` (default 0.04, the
middle of MagicPIG Table 6's 0.02/0.04/0.06) or ``budget_tokens`` sets ``k``.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import arr, attn_decode, kv_tok_layer
from kvsim.methods._published import published
from kvsim.methods.base import KVMethod, MethodParams, PublishedAccuracy, Residency
from kvsim.specbase import Float, Int


class TopKParams(MethodParams):
    budget_ratio: Float = Field(0.04, gt=0, le=1)
    """k = ratio x context (MagicPIG Table 6 ran 0.02/0.04/0.06)."""
    budget_tokens: Int | None = Field(None, gt=0)
    """if set, k = this many tokens (overrides budget_ratio)."""


class TopK(KVMethod):
    name = "topk"
    summary = "exact top-k attention: reads all keys, scores, then only the top-k values (no memory saving)"
    Params = TopKParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)

    def k(self, n: Num) -> Num:
        p = self.params
        n = arr(n)
        k = p.budget_tokens if p.budget_tokens is not None else np.ceil(p.budget_ratio * n)
        return np.minimum(n, k)

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        return Residency(gpu_bytes=arr(n_tokens) * self.dep.model.attn_layers * kv_tok_layer(self.dep))

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, m = self.dep, self.dep.model
        n = arr(ctx) + 1.0
        k = self.k(n)
        kv = kv_tok_layer(dep)
        # K (and V) bytes per token per layer; MLA: the cached latent is the key and holds the value,
        # so scoring reads all of it and the k selected rows are read again (as oracle prices them)
        part = kv if m.mla else kv / 2.0
        hq = dep.q_heads_per_gpu
        d_v = m.mla.kv_lora_rank if m.mla else m.head_dim
        # attn_decode prices QK and PV over the same tokens; charge PV only on k of them:
        pv_saved = 2.0 * hq * d_v * (n - k)
        scores = 2.0 * 4.0 * hq * n
        return attn_decode(dep, n, n * part + k * part, layers=m.attn_layers, write_bytes=kv,
                           extra_flops=-pv_saved, extra_hbm=scores, launches_per_layer=3.0)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        return prefill_attention(self.dep, n_new, n_cached)

    def published_accuracy(self) -> list[PublishedAccuracy]:
        if self.params.budget_tokens is not None:
            return []
        return published("topk", self.params.budget_ratio, self.label())
