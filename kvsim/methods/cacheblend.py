"""CacheBlend: chunk KVs reused at any position, a fraction recomputed (METHODS.md 1.16).

Full attention and an uncompressed KV (``full``), plus a tiered cache of retrieved-chunk KVs.
On a trace that carries chunk ids (``synthetic-rag``), the simulator replays the chunk cache
(:mod:`kvsim.sim.chunk_cache`, capacities and policy below) in arrival order; a request's
``h`` hit chunks of ``c`` tokens make ``floor((1 - r) h c (L - f) / L)`` of its prompt tokens an
analytic hit: its prefill computes the other tokens (the question, the missed chunks and the
fraction ``r`` of the hit chunks that CacheBlend recomputes, CacheBlend §4) attending to all of
them. ``f`` = ``full_recompute_layers`` (default 1) of the ``L`` layers recompute every hit token
(§4.3 selects the HKVD tokens from a full first-layer prefill); the simulator prices prefill per
token over all layers, so those token-layers are charged as ``(1 - r) h c f / L`` more tokens
(exact for the linear work, the attention of those layers approximated).
The KV load from host or SSD is assumed hidden behind that recompute (CacheBlend §5 pipelines
loading layer l+1 with recomputing layer l): true when ``load_l <= compute_l``, which
``kvsim estimate --reuse cacheblend:...`` reports per request (kvsim.pricing.reuse.blend);
an SSD slower than the recompute makes the simulated TTFT optimistic.

On a trace without chunk ids the method is ``full``. Defaults: r = 0.15 (CacheBlend's
default); host cache 64 GB (half of CacheBlend's testbed 128 GB RAM) and no GPU or SSD tier are
illustrative [UNVERIFIED].
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.methods.full import Full, FullParams
from kvsim.specbase import number

Bytes = number(float, 0, 1e18, unit="bytes")


def require_attention_only(dep: Deployment, what: str) -> None:
    """ConfigError for a hybrid model: its SSM layers' recurrent state depends on every earlier
    token, so a chunk's precomputed state cannot be reused at another position or streamed alone
    (CacheBlend §9 leaves non-transformer models to future work)."""
    m = dep.model
    if m.ssm is not None:
        raise ConfigError(f"{what} reuses per-token KV, but {m.name} has {m.ssm_layers} state-space (SSM) layers "
                          f"whose state depends on every earlier token; use an attention-only model")


class CacheBlendParams(FullParams):
    recompute_fraction: number(float, 0, 1) = Field(0.15)
    """fraction r of each hit chunk's tokens recomputed (CacheBlend default 15%)."""
    full_recompute_layers: number(int, 0, 10_000) = Field(1)
    """leading layers that recompute every hit token (CacheBlend §4.3: the first layer is
    prefilled in full to pick the HKVD tokens)."""
    policy: Literal["lru", "cachecraft"] = "lru"
    """chunk-cache eviction: lru, or cachecraft (fewest uses first; kvsim.sim.chunk_cache)."""
    gpu_cache_bytes: Bytes = Field(0.0)
    """chunk-cache bytes in GPU memory (per GPU; not taken from the KV pool)."""
    host_cache_bytes: Bytes = Field(64e9)
    """chunk-cache bytes in host DRAM, shared by the replica (a chunk takes its KV for every GPU)."""
    ssd_cache_bytes: Bytes = Field(0.0)
    """chunk-cache bytes on local SSD, shared by the replica (as host)."""


class CacheBlend(Full):
    name = "cacheblend"
    summary = "full attention + reused chunk KVs at any position with r recomputed (RAG traces with chunk ids)"
    Params = CacheBlendParams

    def check(self) -> None:
        super().check()
        require_attention_only(self.dep, "method cacheblend")
        p, system = self.params, self.dep.system
        # capacities beyond the memory they sit in (1e12 B on a 48 GB GPU was taken as given: user audit)
        if p.gpu_cache_bytes > system.gpu.memory_bytes:
            raise ConfigError(f"cacheblend: gpu_cache_bytes {p.gpu_cache_bytes:.4g} exceeds one {system.gpu.name}'s "
                              f"memory ({system.gpu.memory_bytes:.4g} B)")
        if p.host_cache_bytes > system.host_memory_bytes:
            raise ConfigError(f"cacheblend: host_cache_bytes {p.host_cache_bytes:.4g} exceeds the host memory of "
                              f"{system.name} ({system.host_memory_bytes:.4g} B; a smaller host_cache_bytes fits)")

    def chunk_cache_bytes(self) -> tuple[float, float, float]:
        """Capacities of the GPU, host and SSD tiers, bytes."""
        p = self.params
        return float(p.gpu_cache_bytes), float(p.host_cache_bytes), float(p.ssd_cache_bytes)

    def published_accuracy(self):
        return []
