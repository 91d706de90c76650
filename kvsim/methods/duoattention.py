"""DuoAttention: retrieval heads keep the full KV, streaming heads sink + recent (Xiao et al.,
ICLR 2025; METHODS.md 1.9, row 14).

With retrieval-head ratio ``r`` (of the KV heads), per request (§2.3 [DERIVED])::

    bytes = L * 2 d b * Hkv * [ r S + (1 - r) min(S, sink + recent) ]

and decode reads the same (the retrieval heads read ``S + 1`` tokens, the streaming heads
``min(S + 1, sink + recent)``; two KV caches per layer, heads reordered into two groups).
Llama-2-7B (MHA, r = 0.25) at 100K: 524,288 B x (25,000 + 0.75 x 320) = 13.2 GB of KV.
Prefill is chunked (``chunk`` tokens, 32K in the paper): retrieval heads run causal
attention; a streaming head's query sees the ``sink + recent`` tokens kept from earlier
chunks plus its own chunk causally, so its pairs per chunk of ``k`` tokens are
``k (k + 1) / 2 + k min(c, W)`` (``O(S chunk)`` instead of ``O(S^2)``).

Knobs: ``retrieval_ratio`` auto = 0.25 for MHA (Llama-2-7B) and 0.5 for GQA (Llama-3-8B);
sink 64 / recent 256 (long-context setting; 32/128 MMLU, 16/64 MBPP/MT-Bench).
Not defined for MLA (one latent shared by every head).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.errors import ConfigError
from kvsim.methods._common import (
    arr,
    busiest_gpu_head_fraction,
    is_mha,
    require_not_mla,
)
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Int


class DuoAttentionParams(MethodParams):
    retrieval_ratio: Literal["auto"] | float = "auto"
    """fraction of KV heads kept full; auto = 0.25 (MHA) / 0.5 (GQA) as in the paper."""
    sink: Int = Field(64, ge=0)
    recent: Int = Field(256, ge=0)
    chunk: Int = Field(32768, gt=0)
    """prefill chunk (paper: 32K); the engine's own chunks apply when smaller."""


class DuoAttention(KVMethod):
    name = "duoattention"
    summary = "DuoAttention: retrieval heads full KV, streaming heads 64 sink + 256 recent"
    Params = DuoAttentionParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)
    linear_residency = False  # streaming heads keep sink + recent

    def check(self) -> None:
        require_not_mla(self.dep, "duoattention", "head-level retention needs per-head KV")
        r = self.params.retrieval_ratio
        if r != "auto" and not 0.0 <= float(r) <= 1.0:
            raise ConfigError(f"method duoattention: retrieval_ratio must be in [0, 1] or auto, got {r}")

    @property
    def ratio(self) -> float:
        """The retrieval heads' share of every layer's KV heads (the method's parameter)."""
        rr = self.params.retrieval_ratio
        if rr == "auto":
            return 0.25 if is_mha(self.dep) else 0.5
        return float(rr)

    @property
    def r(self) -> float:
        """The retrieval share priced: the busiest GPU's under tensor parallelism (whole heads per GPU:
        :func:`busiest_gpu_head_fraction`), which every step waits for and whose pool holds the most."""
        return busiest_gpu_head_fraction(self.dep, self.ratio)

    @property
    def window(self) -> float:
        return float(self.params.sink + self.params.recent)

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        n = arr(n_tokens)
        tokens = self.r * n + (1.0 - self.r) * np.minimum(n, self.window)
        return Residency(gpu_bytes=tokens * self.dep.full_kv_bytes_per_token)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        n = arr(ctx) + 1.0
        cost = Cost(())
        if self.r > 0:
            cost = cost + decode_attention(self.dep, n, heads_frac=self.r)
        if self.r < 1:
            cost = cost + decode_attention(self.dep, np.minimum(n, self.window), heads_frac=1.0 - self.r,
                                           name="attn_decode_streaming")
        return cost

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        n_new, n_cached = arr(n_new), arr(n_cached)
        cost = Cost(())
        if self.r > 0:
            cost = cost + prefill_attention(self.dep, n_new, n_cached, heads_frac=self.r)
        if self.r < 1:
            W = self.window
            k = np.minimum(n_new, float(self.params.chunk))
            # first internal chunk sees min(c, W) earlier tokens, later ones W
            pairs = n_new * (k + 1.0) / 2.0 + k * np.minimum(n_cached, W) + (n_new - k) * W
            cost = cost + prefill_attention(self.dep, n_new, np.minimum(n_cached, W), heads_frac=1.0 - self.r,
                                            pairs=pairs, name="attn_prefill_streaming")
        return cost
