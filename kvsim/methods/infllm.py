"""InfLLM: block-level context memory offloaded to the host (Xiao et al., 2024; METHODS.md 1.11,
``config/mistral-inf-llm.yaml``).

Tokens past the ``n_init`` initial and ``n_local`` recent ones are grouped in blocks of
``block_size``; each block is represented by ``repr_topk`` keys. Every block lives in host
memory; an LRU cache of ``max_cached_block`` blocks per layer is on the GPU together with the
representative keys (``repr_topk / block_size = 1/32`` of the keys). With ``nb`` context
blocks (``(n - n_init - n_local) / block_size``):

* GPU bytes/request: ``L [min(n, n_init + n_local) + min(nb, cached) B_s] kv + L nb r d b Hkv``;
  host bytes: ``L nb B_s kv`` (whole replica).
* Decode per layer: attention over ``n_init + n_local + min(nb, topk) B_s`` <= 6272 tokens;
  scoring of ``nb r`` representative keys per query head (``2 d`` FLOPs each, fp32 scores);
  PCIe for the missed blocks ``miss_rate min(nb, topk) B_s kv`` and one synchronous load per
  layer per step once any sequence has context blocks.
* Prefill runs sub-chunks of ``exc_block_size`` with the same retrieval, whatever the engine's
  chunking (an engine chunk is cut into them): each query sees at most 6272 keys (window pairs),
  each sub-chunk scores the representative keys of the blocks before its start (two launches
  per layer), offloads the new KV to the host and fetches ``topk`` blocks (at ``miss_rate``).

``miss_rate`` (default 0.5) is an assumption, not a published number [UNVERIFIED]: with 16 of
32 cached blocks retrieved per step, half of the top-k changing between steps is a middle guess.
Block-representative selection inside each block at offload time is not priced.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num, Part
from kvsim.methods._common import (
    arr, gpu_pass, has, host_kv_tok_layer, key_elems_tok_layer, kv_tok_layer, sum_seq, window_pairs,
)
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Float, Int


class InfLLMParams(MethodParams):
    block_size: Int = Field(128, gt=0)
    n_init: Int = Field(128, ge=0)
    n_local: Int = Field(4096, ge=0)
    topk: Int = Field(16, ge=0)
    repr_topk: Int = Field(4, gt=0)
    max_cached_block: Int = Field(32, ge=0)
    exc_block_size: Int = Field(512, gt=0)
    miss_rate: Float = Field(0.5, ge=0, le=1)
    """fraction of the retrieved blocks not in the GPU cache [UNVERIFIED assumption]."""

    @model_validator(mode="after")
    def _cache_holds_the_retrieved(self) -> "InfLLMParams":
        if self.max_cached_block < self.topk:
            raise ValueError(f"max_cached_block ({self.max_cached_block}) must be at least topk ({self.topk}): the "
                             f"retrieved blocks are attended on the GPU, so its block cache holds them")
        return self


class InfLLM(KVMethod):
    name = "infllm"
    mla_extrapolated = "its blocks and representative keys are latent rows"
    summary = "InfLLM: 128 init + 4096 local + top-16 of 128-token blocks retrieved from host memory"
    Params = InfLLMParams
    uses_host = True
    linear_residency = False  # host blocks, GPU LRU cache and representative keys
    # one block-score launch and PCIe round trip per layer if ANY sequence has blocks: paid once per batch
    once_per_batch_decode = (("infllm_block_scores", "launches"), ("infllm_fetch", "pcie_round_trips"))

    @property
    def local(self) -> float:
        return float(self.params.n_init + self.params.n_local)

    @property
    def span(self) -> float:
        """Keys one query attends to at most: 128 + 4096 + 16 x 128 = 6272."""
        return self.local + self.params.topk * self.params.block_size

    def blocks(self, n: Num) -> np.ndarray:
        return np.maximum(arr(n) - self.local, 0.0) / self.params.block_size

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        dep, p, L = self.dep, self.params, self.dep.model.attn_layers
        n = arr(n_tokens)
        nb = self.blocks(n)
        gpu_tok = np.minimum(n, self.local) + np.minimum(nb, p.max_cached_block) * p.block_size
        reprs = nb * p.repr_topk * key_elems_tok_layer(dep) * dep.kvb
        host = L * nb * p.block_size * host_kv_tok_layer(dep, dep.kvb)
        return Residency(gpu_bytes=L * (gpu_tok * kv_tok_layer(dep) + reprs), host_bytes=host)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, p, L = self.dep, self.params, self.dep.model.attn_layers
        ctx = arr(ctx)
        nb = self.blocks(ctx)
        got = np.minimum(nb, p.topk)
        att = np.minimum(ctx + 1.0, self.local) + got * p.block_size
        cost = decode_attention(dep, att)
        hq = dep.q_heads_per_gpu
        reprs = sum_seq(nb * p.repr_topk)
        cost = cost + gpu_pass(dep, "infllm_block_scores", op="attn_decode",
                               flops=L * reprs * 2.0 * hq * dep.model.q_head_dim,
                               hbm=L * reprs * (key_elems_tok_layer(dep) * dep.kvb + 8.0 * hq),
                               launches=2.0 * L * has(reprs))
        miss = sum_seq(got * p.block_size * p.miss_rate) * L * kv_tok_layer(dep)
        return cost + Cost.of(Part("infllm_fetch", "pcie", device="pcie", pcie_bytes=miss,
                                   pcie_round_trips=L * has(reprs)))

    def _sub_chunks(self, n_new: Num, n_cached: Num) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per sequence, over the ``exc_block_size`` sub-chunks InfLLM runs a prefill chunk in (whatever the
        engine's chunking): (sum of tokens x context blocks before the sub-chunk, sum of those blocks, sub-chunks
        with any block to score and retrieve). Each sub-chunk sees the blocks before its own start."""
        e = float(self.params.exc_block_size)
        n_new, n_cached = np.broadcast_arrays(arr(n_new), arr(n_cached))
        kmax = int(np.ceil(n_new.max() / e)) if n_new.size else 0
        k = np.arange(kmax, dtype=np.float64) * e
        size = np.clip(n_new[..., None] - k, 0.0, e)  # [..., kmax] tokens of each sub-chunk
        b = np.where(size > 0, self.blocks(n_cached[..., None] + k), 0.0)
        return (size * b).sum(axis=-1), b.sum(axis=-1), (b > 0).sum(axis=-1).astype(np.float64)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, p, L = self.dep, self.params, self.dep.model.attn_layers
        n_new, n_cached = arr(n_new), arr(n_cached)
        attn = prefill_attention(dep, n_new, np.minimum(n_cached, self.span),
                                 pairs=window_pairs(n_new, n_cached, self.span))
        tok_blocks, blocks_seen, retrieving = self._sub_chunks(n_new, n_cached)
        reprs = sum_seq(tok_blocks * p.repr_topk)  # (query, repr key) pairs
        hq = dep.q_heads_per_gpu
        chunks = sum_seq(retrieving)
        score = gpu_pass(dep, "infllm_block_scores", op="attn_prefill",
                         flops=L * reprs * 2.0 * hq * dep.model.q_head_dim,
                         hbm=L * sum_seq(blocks_seen * p.repr_topk) * key_elems_tok_layer(dep) * dep.kvb,
                         launches=2.0 * L * chunks)
        fetched = chunks * p.topk * p.block_size * p.miss_rate
        offload = sum_seq(self.blocks(n_cached + n_new) - self.blocks(n_cached)) * p.block_size
        pcie = Part("infllm_offload", "pcie", device="pcie", pcie_bytes=L * (offload + fetched) * kv_tok_layer(dep),
                    pcie_round_trips=L * has(chunks) * np.ceil(chunks))
        return attn + score + Cost.of(pcie)
