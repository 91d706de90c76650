"""Full attention over an uncompressed paged KV cache (the baseline).

KV bytes per token = ``2 * L * n_kv * d * b_kv`` (METHODS.md 1.0; ``b_kv`` from the
deployment's ``kv_dtype``: bf16/fp16 2 B, fp8/int8 1 B). Decode reads all of it each
step; prefill is causal FlashAttention. For MLA models the cached latent is
``L * (d_c + d_r) * b_kv`` (DeepSeek-V2 Table 1).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._published import published
from kvsim.methods.base import KVMethod, MethodParams, PublishedAccuracy, Residency


class FullParams(MethodParams):
    kv_dtype: Literal["auto", "bf16", "fp16", "fp8", "int8"] = "auto"
    """KV storage dtype; ``auto`` = the deployment's ``kv_dtype``."""


class Full(KVMethod):
    name = "full"
    summary = "full attention, uncompressed KV (bf16/fp16, fp8 or int8 KV dtype)"
    Params = FullParams

    def __init__(self, dep, params=None):
        super().__init__(dep, params)
        if self.params.kv_dtype != "auto":
            self.dep = replace(dep, kv_dtype=self.params.kv_dtype)

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        return Residency(gpu_bytes=n_tokens * self.dep.full_kv_bytes_per_token)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        return decode_attention(self.dep, np.asarray(ctx, dtype=np.float64) + 1)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        return prefill_attention(self.dep, n_new, n_cached)

    def published_accuracy(self) -> list[PublishedAccuracy]:
        """The full-attention rows of METHODS.md §4 (16-bit KV only)."""
        if self.dep.kv_dtype not in ("bf16", "fp16"):
            return []
        return published("full", None, self.label())
