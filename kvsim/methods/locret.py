"""Locret: eviction by trained retaining heads, interleaved with chunked prefill (Huang et al.,
2024, arXiv 2410.01805; code github.com/huangyuxiang03/Locret).

Each attention layer gets a retaining head ``R([Q, K, V]) = act(x W1) W2`` (``W1``:
``(Hq + 2 Hkv) d x 1024``, ``W2``: ``1024 x Hkv``, ``models/llama/modeling_llama.py``) that predicts
a causal importance score per token and KV head. The prompt is prefilled in chunks of ``chunk``
tokens; after each chunk the cache keeps the ``budget`` highest-scoring tokens (the last
``stabilizers`` of the chunk always among them), so memory stays bounded while the prompt is
read; the last ``local`` prompt tokens are prefilled without eviction and generated tokens are
appended (``inference/infer.py``: ``budget_size=6000, local_len=100, chunk_size=3072,
stabilizers=2500``; the paper's Llama-3.1-8B runs use budget 16384). Per layer and KV head::

    kept(P) = min(P - local, budget) + min(P, local)        resident(n) = kept(P) + g

Compression at 128K: 131,072 / 16,484 = 7.95x (Llama-3.1-8B; paper "8x") and 131,072 / 6,100 =
21.5x (Phi-3-mini-128K, budget 6000; paper "20x").
Prefill, per internal chunk ``j`` of ``k_j`` tokens after ``c`` cached ones: attention over the
retained ``min(budget, c + j chunk)`` tokens plus causal within the chunk (FlashAttention), the
retaining head on every new token (``2 (Hq + 2 Hkv) d 1024 + 2 x 1024 Hkv`` FLOPs per layer),
and a gather of the kept tokens' KV (read + write ``min(budget, c + (j+1) chunk)`` tokens).
Decode attends to the resident tokens. Not defined for MLA.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import (
    arr,
    gpu_pass,
    has,
    kv_tok_layer,
    require_not_mla,
    split_prompt,
    sum_seq,
)
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Int

RETAIN_HIDDEN = 1024  # retaining head width (fc1: (Hq + 2 Hkv) d -> 1024, fc2: 1024 -> Hkv)


class LocretParams(MethodParams):
    budget: Int = Field(6000, gt=0)
    """cache units kept per layer and KV head during prefill (code default 6000; Llama-3.1-8B runs: 16384)."""
    chunk: Int = Field(3072, gt=0)
    """prefill chunk between evictions (code default 3072)."""
    stabilizers: Int = Field(2500, ge=0)
    """last tokens of each chunk always kept (code default 2500)."""
    local: Int = Field(100, ge=0)
    """last prompt tokens prefilled without eviction (code default local_len 100)."""

    @model_validator(mode="after")
    def _fits(self):
        if self.stabilizers > self.budget:
            raise ValueError(f"stabilizers ({self.stabilizers}) must not exceed budget ({self.budget})")
        return self


class Locret(KVMethod):
    name = "locret"
    summary = "Locret: retaining heads score tokens; chunked prefill keeps a 6000-token budget, generated tokens appended"
    Params = LocretParams
    role = "selection"  # composes with a storage method (kvsim.methods.compose)
    prompt_aware = True  # the prompt is evicted to the budget, generated tokens are appended
    linear_residency = False
    constant_decode_fields = (("attn_decode", "launches"), ("attn_decode", "tiles"))

    def check(self) -> None:
        require_not_mla(self.dep, "locret", "retaining heads score per-KV-head caches")

    def kept(self, p: np.ndarray) -> np.ndarray:
        """Prompt tokens kept per layer and KV head for prompts of ``p`` tokens."""
        q = self.params
        loc = np.minimum(p, float(q.local))
        return np.minimum(p - loc, float(q.budget)) + loc

    def resident(self, n: Num, n_prompt: Num | None = None) -> np.ndarray:
        p, g = split_prompt(n, n_prompt)
        return self.kept(p) + g

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        return Residency(gpu_bytes=self.dep.model.attn_layers * self.resident(n_tokens, n_prompt) * kv_tok_layer(self.dep))

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        return decode_attention(self.dep, self.resident(ctx, n_prompt) + 1.0)

    def _chunks(self, n_new: np.ndarray, n_cached: np.ndarray):
        """(pairs, retained tokens read, tokens gathered) over the internal chunks of each engine chunk."""
        q = self.params
        K, b = float(q.chunk), float(q.budget)
        pairs = np.zeros_like(n_new)
        seen = np.zeros_like(n_new)
        gathered = np.zeros_like(n_new)
        jmax = int(np.ceil(float(np.max(n_new, initial=0.0)) / K))
        for j in range(jmax):
            k = np.clip(n_new - j * K, 0.0, K)
            ret = np.minimum(b, n_cached + j * K) * has(k)
            pairs += k * ret + k * (k + 1.0) / 2.0
            seen += ret
            gathered += np.minimum(b, n_cached + j * K + k) * has(k)
        return pairs, seen, gathered

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, m, L = self.dep, self.dep.model, self.dep.model.attn_layers
        n_new, n_cached = arr(n_new), arr(n_cached)
        shape = np.broadcast_shapes(n_new.shape, n_cached.shape)
        n_new, n_cached = np.broadcast_to(n_new, shape).astype(np.float64), np.broadcast_to(n_cached, shape).astype(np.float64)
        pairs, seen, gathered = self._chunks(n_new, n_cached)
        attn = prefill_attention(dep, n_new, seen, pairs=pairs)
        new = sum_seq(n_new)
        hkv = float(dep.kv_heads_per_gpu)
        width = (dep.q_heads_per_gpu + 2.0 * hkv) * m.head_dim
        head = 2.0 * width * RETAIN_HIDDEN + 2.0 * RETAIN_HIDDEN * hkv  # FLOPs per token per layer
        kv = kv_tok_layer(dep)
        evict = gpu_pass(dep, "locret_evict", flops=L * new * head,
                         hbm=L * (new * width * dep.ab + 2.0 * sum_seq(gathered) * kv),
                         launches=3.0 * L * has(new))  # retaining head, top-k, gather
        return attn + evict
