"""A^2ATS: retrieval-based KV reduction with windowed RoPE and query-aware vector quantization
(He et al., Findings of ACL 2025, arXiv 2502.12665; abstract and method overview).

The complete KV cache is offloaded to host memory. On the GPU stay: the ``sink + local`` most
relevant-by-position tokens in full precision, the vector-quantized codes of every key, and the
codebooks. Windowed RoPE makes keys position-independent enough for one codebook per layer and
KV head to serve every input, so the codebooks are fixed GPU memory, not per request. Each key
of head dim ``d`` is split into ``M`` sub-vectors, each coded by ``log2(codebook_size)`` bits.
Per layer, with ``s = max(n - sink - local, 0)`` offloaded tokens of a request::

    GPU   min(n, sink + local) x KV/token  +  n x H_kv M log2(codebook)/8      codes (16 B/head at M=16, 256)
    host  s x KV/token (all KV heads of the replica)
    fixed L H_kv codebook d b      (codebook centroids, 2 B each: Llama-3.1-8B 32*8*256*128*2 = 16.8 MB)

Decode per layer and sequence [DERIVED from the method: query-aware scoring on the GPU, top-K
fetched from the CPU, attention on the GPU]: a lookup table of the query against every centroid
(``2 d codebook`` FLOPs per query head), the approximate score of every offloaded token (``M``
table reads and adds per query head; codes read; fp32 scores written and read by top-k), the
top-``K`` tokens per KV head fetched over PCIe (``min(s, K)`` tokens' KV, written to a staging
buffer) in one synchronous round trip per layer, then exact attention over
``min(n, sink + local) + min(s, K)`` tokens. Prefill: FlashAttention, then each new key is
assigned to its nearest centroid in each sub-space (``3 d codebook`` FLOPs per key and KV head:
weighted difference, square, add) and the new KV is offloaded over PCIe.

Knob values (``M`` = 16 sub-vectors, 256 centroids, ``K`` = 1024 tokens, 4 sink + 64 local) are
[UNVERIFIED]: the paper's tables were not read. Published: "throughput up to 2.7x" (abstract;
its model, GPU and batch are not stated there, so no kvsim check).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num, Part
from kvsim.methods._common import arr, gpu_pass, has, host_kv_tok_layer, kv_tok_layer, require_not_mla, sum_seq
from kvsim.methods.base import KVMethod, MethodParams, Residency, require
from kvsim.specbase import Int

ASSIGN_FLOPS_PER_ELEM = 3.0  # query-aware VQ assignment: weighted difference, square, add [DERIVED]
SCORE_BYTES = 8.0  # fp32 approximate score written, then read by top-k


class A2ATSParams(MethodParams):
    subvectors: Int = Field(16, gt=0)
    """sub-vectors M per key (each coded separately) [UNVERIFIED]."""
    codebook_size: Int = Field(256, ge=2)
    """centroids per sub-space; a code is log2 of it in bits [UNVERIFIED]."""
    top_k: Int = Field(1024, ge=0)
    """tokens fetched from the host per KV head and layer each step [UNVERIFIED]."""
    sink: Int = Field(4, ge=0)
    """initial tokens kept on the GPU [UNVERIFIED]."""
    local: Int = Field(64, ge=0)
    """recent tokens kept on the GPU [UNVERIFIED]."""

    @model_validator(mode="after")
    def _power_of_two(self):
        if self.codebook_size & (self.codebook_size - 1):
            raise ValueError(f"codebook_size must be a power of two (codes are whole bits), got {self.codebook_size}")
        return self


class A2ATS(KVMethod):
    name = "a2ats"
    summary = "A^2ATS: KV on the host, VQ key codes on the GPU score tokens, top-1024 fetched per step"
    Params = A2ATSParams
    uses_host = True
    linear_residency = False  # full KV of a window on the GPU, the rest on the host
    additive_decode = False  # one fetch round trip per layer if ANY sequence has offloaded tokens

    def __init__(self, dep, params=None):
        super().__init__(dep, params)
        p = self.params
        self.code_bytes = dep.kv_heads_per_gpu * p.subvectors * np.log2(p.codebook_size) / 8.0  # per token per layer

    def check(self) -> None:
        require_not_mla(self.dep, "a2ats", "vector-quantized per-head keys with windowed RoPE")
        d, M = self.dep.model.head_dim, self.params.subvectors
        require(d % M == 0, f"method a2ats: subvectors={M} must divide the head dim {d} of model {self.dep.model.name}")

    @property
    def window(self) -> float:
        return float(self.params.sink + self.params.local)

    def offloaded(self, n: Num) -> np.ndarray:
        return np.maximum(arr(n) - self.window, 0.0)

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        dep, L = self.dep, self.dep.model.attn_layers
        n = arr(n_tokens)
        gpu = L * (np.minimum(n, self.window) * kv_tok_layer(dep) + n * self.code_bytes)
        return Residency(gpu_bytes=gpu, host_bytes=L * self.offloaded(n) * host_kv_tok_layer(dep, dep.kvb))

    def fixed_gpu_bytes(self) -> float:
        """Codebooks: ``L H_kv codebook d`` centroid elements in the activation dtype (shared by requests)."""
        dep, p = self.dep, self.params
        return dep.model.attn_layers * dep.kv_heads_per_gpu * p.codebook_size * dep.model.head_dim * dep.ab

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, m, p, L = self.dep, self.dep.model, self.params, self.dep.model.attn_layers
        ctx = arr(ctx)
        n = ctx + 1.0
        B = float(ctx.shape[-1]) if ctx.ndim else 1.0
        zero = 0.0 * sum_seq(ctx)
        s = self.offloaded(ctx)  # the new token stays on the GPU this step
        got = np.minimum(s, p.top_k)
        hq = dep.q_heads_per_gpu
        fetched = sum_seq(got) * kv_tok_layer(dep)  # bytes per layer
        cost = decode_attention(dep, np.minimum(n, self.window) + got)
        cost = cost + gpu_pass(
            dep, "a2ats_score", op="attn_decode",
            flops=L * (B * hq * 2.0 * m.head_dim * p.codebook_size + sum_seq(s) * hq * p.subvectors) + zero,
            hbm=L * (dep.kv_heads_per_gpu * p.codebook_size * m.head_dim * dep.ab
                     + sum_seq(s * (self.code_bytes + SCORE_BYTES * hq)) + fetched) + zero,
            launches=3.0 * L + zero)  # lookup table, scores, top-k
        return cost + Cost.of(Part("a2ats_fetch", "pcie", device="pcie", pcie_bytes=L * fetched,
                                   pcie_round_trips=L * has(sum_seq(got))))

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, m, p, L = self.dep, self.dep.model, self.params, self.dep.model.attn_layers
        n_new, n_cached = arr(n_new), arr(n_cached)
        new = sum_seq(n_new)
        hkv = dep.kv_heads_per_gpu
        vq = gpu_pass(dep, "a2ats_encode", op="gemm",
                      flops=L * new * hkv * ASSIGN_FLOPS_PER_ELEM * m.head_dim * p.codebook_size,
                      hbm=L * (new * (hkv * m.head_dim * dep.kvb + self.code_bytes) + hkv * p.codebook_size * m.head_dim * dep.ab * has(new)),
                      launches=L * has(new))
        off = sum_seq(self.offloaded(n_cached + n_new) - self.offloaded(n_cached))
        pcie = Cost.of(Part("a2ats_offload", "pcie", device="pcie", pcie_bytes=L * off * kv_tok_layer(dep)))
        return prefill_attention(dep, n_new, n_cached) + vq + pcie
