"""Prompt tokens each request treats as already computed (its analytic hit), for both simulators.

* ``cacheblend`` on a trace with chunk ids: the chunk cache (:mod:`kvsim.sim.chunk_cache`)
  decides which chunks hit; ``h`` hit chunks of ``c`` tokens give ``floor((1 - r) h c (L - f) / L)``
  tokens (r: the recompute fraction, CacheBlend §4, METHODS.md 1.16; f of the L layers recompute
  every token, §4.3's full first layer: ``kvsim.methods.cacheblend``), at most the prompt.
* every other case: the method's ``split_prompt`` (the ``prefix`` method's hit ratio; 0 else).

Either way at most ``prompt - 1`` (one token is always prefilled to sample the first token).
"""

from __future__ import annotations

import numpy as np

from kvsim.methods._common import host_kv_tok_layer
from kvsim.methods.base import KVMethod
from kvsim.methods.cacheblend import CacheBlend
from kvsim.sim.chunk_cache import TIERS, ChunkHits, replay
from kvsim.traces.base import Trace


def _has_chunks(trace: Trace) -> bool:
    return trace.chunk_ids is not None and trace.chunk_tokens > 0


def chunk_hits(method: KVMethod, trace: Trace) -> ChunkHits | None:
    """The chunk cache's replay of ``trace`` under ``method``'s capacities and policy, or None
    when the method reuses no chunks or the trace has none."""
    if not isinstance(method, CacheBlend) or not _has_chunks(trace):
        return None
    gpu = float(method.kv_bytes(float(trace.chunk_tokens)).gpu_bytes)  # one GPU's share
    m = method.dep.model
    replica = float(trace.chunk_tokens) * m.attn_layers * host_kv_tok_layer(method.dep, method.dep.kvb)  # all GPUs
    return replay(trace.chunk_ids, (gpu, replica, replica), method.chunk_cache_bytes(), method.params.policy)


def analytic_hits(method: KVMethod, trace: Trace, peff: np.ndarray) -> np.ndarray:
    """[N] int64 prompt tokens per request that prefill skips (module docstring)."""
    peff = np.asarray(peff, dtype=np.int64)
    hits = chunk_hits(method, trace)
    if hits is not None:
        reused = np.minimum(hits.hits.sum(axis=1) * trace.chunk_tokens, peff).astype(np.float64)
        L = method.dep.model.num_layers
        skipped = (L - min(int(method.params.full_recompute_layers), L)) / L  # layers that skip reused tokens
        n_hit = reused * (1.0 - float(method.params.recompute_fraction)) * skipped
    else:
        _, n_hit = method.split_prompt(peff.astype(np.float64))
        n_hit = np.broadcast_to(np.asarray(n_hit, dtype=np.float64), peff.shape)
    hit = np.floor(n_hit + 1e-9).astype(np.int64)
    return np.maximum(np.minimum(hit, peff - 1), 0)


def unused_chunk_cache_note(method: KVMethod, trace: Trace) -> str | None:
    """What a user reads when ``cacheblend`` runs on a trace without chunk ids (None otherwise)."""
    if not isinstance(method, CacheBlend) or _has_chunks(trace):  # (no replay of the cache to decide it)
        return None
    return (f"{method.label()}: the trace has no chunk ids (a RAG trace such as synthetic-rag has them): no chunk KV "
            "was reused, the run is full attention")


def chunk_cache_summary(method: KVMethod, trace: Trace) -> dict | None:
    """Lookups, hit rate per tier (hits over all lookups) and chunk tokens reused, or None
    when :func:`chunk_hits` is None."""
    hits = chunk_hits(method, trace)
    if hits is None:
        return None
    lookups = int(hits.hits.sum() + hits.misses.sum())
    per_tier = hits.hits.sum(axis=0)
    return {
        "policy": method.params.policy,
        "lookups": lookups,
        "hit_rate": hits.hit_rate(),
        "hit_rate_by_tier": {t: (int(h) / lookups if lookups else 0.0) for t, h in zip(TIERS, per_tier)},
        "reused_chunk_tokens": int(hits.hits.sum()) * trace.chunk_tokens,
    }
