"""StreamingLLM: attention sinks + a sliding window (Xiao et al., ICLR 2024; METHODS.md 1.6).

The cache holds ``C = sink + window`` tokens per layer and head (paper configs 4+1020,
4+2044, 4+4092; default 4+2044 = 2048, the middle one). Memory and decode time are constant
once ``n >= C``: ``kv_bytes(n) = min(n, C) x KV bytes/token`` (Llama-2-7B: 2048 x 524,288 B =
1 GiB). Decode attends to ``min(ctx + 1, C)`` tokens; no extra FLOPs.
Prefill in a streaming setting is window attention: the query at position ``k`` sees
``min(k, C)`` keys (pairs capped, see ``window_pairs``) and reads at most ``C`` cached tokens.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import arr, window_pairs
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Int


class StreamingLLMParams(MethodParams):
    sink: Int = Field(4, ge=0)
    """attention-sink tokens kept from the start (paper: 4)."""
    window: Int = Field(2044, ge=1)
    """recent tokens kept (paper: 1020 / 2044 / 4092)."""


class StreamingLLM(KVMethod):
    name = "streamingllm"
    summary = "StreamingLLM: 4 sink tokens + a 2044-token sliding window (constant memory)"
    Params = StreamingLLMParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)
    bounded = True  # sink + window tokens
    linear_residency = False  # min(n, sink + window)

    @property
    def capacity(self) -> float:
        return float(self.params.sink + self.params.window)

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        n = np.minimum(arr(n_tokens), self.capacity)
        return Residency(gpu_bytes=n * self.dep.full_kv_bytes_per_token)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        return decode_attention(self.dep, np.minimum(arr(ctx) + 1.0, self.capacity))

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        n_new, n_cached = arr(n_new), arr(n_cached)
        C = self.capacity
        return prefill_attention(self.dep, n_new, np.minimum(n_cached, C), pairs=window_pairs(n_new, n_cached, C))
