"""CacheBlend TTFT: reused chunk KVs blended with a selective recompute (METHODS.md 1.16).

A RAG prompt is ``n`` tokens of retrieved chunks (their KV precomputed, each chunk alone) plus
``q`` new tokens (the question). CacheBlend (Yao et al., EuroSys'25, §4-§5) loads each layer's
chunk KV from its tier and recomputes a fraction ``r`` of the chunk tokens (the HKVD tokens)
plus the question, layer by layer; loading layer l+1 overlaps recomputing layer l:

    TTFT = pipeline(load_l, compute_l over l = 1..L)
         ~ sum_l max(load_l, compute_l) + min(load_1, compute_1)      [METHODS.md 1.16, DERIVED]

* ``load_l`` = the chunk KV of one layer over the tier's path: 0 for ``gpu`` (already in HBM);
  for ``host``, each GPU's share ``n * kv_bytes_per_token_layer`` over its own PCIe link (the
  roofline's ``pcie`` part); for ``ssd``, ``max(PCIe, replica bytes / ssd_bw)``: the drive feeds
  every GPU of a TP replica, so it reads the whole layer's KV (all KV heads) whatever ``tp``.
* ``compute_l`` = 1/L of one prefill step of ``r n + q`` new tokens attending to the
  ``(1 - r) n`` reused ones (linear layers for ``r n + q`` tokens, attention ``(r n + q) x n``),
  priced by :class:`~kvsim.pricing.step.StepModel` with the ``full`` method: the same price the
  simulator charges a request whose reused tokens are its analytic hit (``kvsim.sim.chunk_reuse``).
  The step's per-step work (LM head, overhead) is spread over the layers too (an approximation).
  The first ``f = full_recompute_layers`` layers recompute every chunk token: ``compute_l`` =
  1/L of the full-recompute step there. CacheBlend §4.3 picks the HKVD tokens from "the
  token-wise attention deviation on the first layer", which needs that layer prefilled in full
  ("perform prefill on the first layer first, pick the HKVD tokens"); its released vLLM fork
  runs decoder layer 0 as a full prefill and checks at layer 1 (``check_layers=[1]``). So
  ``f = 1`` by default: the formula, not a fit (METHODS.md 1.16's ``sum_l max(load_l,
  r prefill_l)`` leaves it out). Not charged: the fork's check layer also projects Q/K/V of
  every token (a further fraction of one layer's linear work) and the later layers' r_i are
  "slightly higher" than r on average in the paper's gradual filtering. Those ``f`` layers load
  no chunk KV (they compute every token's): ``load_l`` = 0 there, so ``f = L`` is full recompute.
* Baselines: full recompute = one prefill step of ``n + q`` tokens; prefix caching = only the
  first chunk's KV is reusable (it is the prompt's prefix), pipelined the same way.

One step, no chunked prefill: CacheBlend's TTFT is a single pass (its vLLM fork).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.roofline import transfer_seconds
from kvsim.errors import ConfigError
from kvsim.methods.cacheblend import require_attention_only
from kvsim.methods.full import Full
from kvsim.methods._common import host_kv_tok_layer, kv_tok_layer
from kvsim.pricing.reuse.pipeline import pipeline_s
from kvsim.pricing.step import StepModel
from kvsim.specbase import Strict, number

Tier = Literal["gpu", "host", "ssd"]
Tokens = number(int, 0, 10**9, unit="tokens")
Fraction = number(float, 0, 1)
BytesPerS = number(float, 1e3, 1e15, unit="bytes/s (1 kB/s to 1 PB/s)")

#: CacheBlend §7 testbed's NVMe SSD read bandwidth (METHODS.md §2 row 23)
CACHEBLEND_SSD_BW_BYTES_PER_S = 4.8e9


class BlendParams(Strict):
    """One CacheBlend request: ``chunks`` reused chunks of ``chunk_tokens`` and a question."""

    chunks: Tokens = Field(6, description="reused chunks (CacheBlend §7: 6)")
    chunk_tokens: number(int, 1, 10**9, unit="tokens") = Field(512, description="tokens per chunk (CacheBlend §7: 512)")
    question_tokens: Tokens = Field(64, description="new tokens after the chunks (illustrative; not stated in METHODS.md)")
    recompute_fraction: Fraction = Field(0.15, description="fraction r of chunk tokens recomputed per layer (CacheBlend default 15%)")
    tier: Tier = Field("host", description="where the chunk KV is loaded from: gpu, host (PCIe) or ssd")
    ssd_bw_bytes_per_s: BytesPerS = Field(CACHEBLEND_SSD_BW_BYTES_PER_S, description="SSD read bandwidth, bytes/s")
    full_recompute_layers: number(int, 0, 10_000) = Field(
        1, description="leading layers that recompute every token (CacheBlend §4.3: the first layer, to pick HKVD tokens)")


@dataclass(frozen=True)
class BlendTTFT:
    """Seconds of one request's TTFT (no queueing) under CacheBlend and its two baselines."""

    reused_tokens: int
    question_tokens: int
    load_s_per_layer: float  # chunk KV of one layer from the tier
    compute_s_per_layer: float  # recompute r n + q tokens, one layer
    full_layers: int  # leading layers that recompute every token (HKVD selection)
    full_layer_s: float  # one of those layers: 1/L of the full-recompute step
    ttft_s: float  # CacheBlend, pipelined
    full_recompute_s: float
    prefix_caching_s: float  # only the first chunk reused

    @property
    def speedup_vs_recompute(self) -> float:
        return self.full_recompute_s / self.ttft_s

    @property
    def speedup_vs_prefix(self) -> float:
        return self.prefix_caching_s / self.ttft_s


def load_s_per_layer(dep: Deployment, tokens: float, tier: Tier, ssd_bw_bytes_per_s: float) -> float:
    """Seconds to bring one layer's KV of ``tokens`` tokens to the GPUs from ``tier`` (module docstring)."""
    if tier == "gpu" or tokens <= 0:
        return 0.0
    n_bytes = tokens * kv_tok_layer(dep)  # one GPU's share
    pcie = float(StepModel(dep, Full(dep)).roofline.seconds(
        Cost.of(Part("chunk_kv_load", "pcie", device="pcie", pcie_bytes=n_bytes))))
    if tier == "host":
        return pcie
    replica = tokens * host_kv_tok_layer(dep, dep.kvb)  # the drive serves every GPU of the replica
    return max(pcie, float(transfer_seconds(replica, ssd_bw_bytes_per_s)))


def prefill_step_s(step: StepModel, n_new: float, n_cached: float) -> float:
    """Seconds of one prefill step of ``n_new`` tokens after ``n_cached`` (one request, samples a token)."""
    return float(step.time_s(prefill_new=np.array([float(n_new)]), prefill_cached=np.array([float(n_cached)]),
                             n_sampled_prefill=1))


def blend_ttft(dep: Deployment, p: BlendParams) -> BlendTTFT:
    """TTFT of one request under CacheBlend, full recompute and prefix caching (module docstring)."""
    require_attention_only(dep, "cacheblend")
    step = StepModel(dep, Full(dep))
    L = dep.model.num_layers
    n, q = p.chunks * p.chunk_tokens, p.question_tokens
    if n + q <= 0:
        raise ConfigError("cacheblend: a request needs at least one token (chunks x chunk_tokens + question_tokens is 0)")
    r_tok = p.recompute_fraction * n
    full_s = prefill_step_s(step, n + q, 0.0)
    blend_l = prefill_step_s(step, r_tok + q, n - r_tok) / L
    load_l = load_s_per_layer(dep, n, p.tier, p.ssd_bw_bytes_per_s)
    f = min(p.full_recompute_layers, L)
    compute = [full_s / L] * f + [blend_l] * (L - f)
    ttft = pipeline_s([0.0] * f + [load_l] * (L - f), compute)  # (a layer recomputed in full loads no KV)
    c = p.chunk_tokens if p.chunks else 0
    prefix_compute = prefill_step_s(step, n - c + q, c) / L
    prefix_s = pipeline_s([load_s_per_layer(dep, c, p.tier, p.ssd_bw_bytes_per_s)] * L, [prefix_compute] * L)
    return BlendTTFT(reused_tokens=n, question_tokens=q, load_s_per_layer=load_l, compute_s_per_layer=blend_l,
                     full_layers=f, full_layer_s=full_s / L, ttft_s=ttft, full_recompute_s=full_s, prefix_caching_s=prefix_s)
