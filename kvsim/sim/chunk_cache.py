"""A tiered cache of chunk KVs (GPU -> host -> SSD) that decides which retrieved chunks hit.

Requests are replayed in arrival order; each request looks up its chunks (``Trace.chunk_ids``)
one by one. A chunk lives in at most one tier (an exclusive hierarchy):

* hit in tier t: counted as a hit of tier t, then promoted to the GPU tier;
* miss: its KV is computed by the request's prefill, then inserted in the GPU tier;
* inserting into a full tier demotes that tier's victim to the next tier; the SSD's victim is
  dropped. A tier of capacity ``c`` bytes holds ``floor(c / chunk_bytes)`` chunks.

Victims (``policy``):

* ``lru``: the least recently used chunk of the tier (vLLM/LMCache-style offloading).
* ``cachecraft``: the chunk with the fewest uses so far, ties broken by least recent use
  (LFU with LRU ties). Cache-Craft (Agarwal et al., SIGMOD'25, arXiv 2502.15734) keeps the
  chunk caches that are reused most often, in a GPU/CPU/SSD hierarchy with layer-wise
  preloading; kvsim models that as frequency-ranked eviction. Not modelled: Cache-Craft's
  attention-based decision whether a chunk cache is reusable in a given context (CCI) and its
  per-chunk recompute fraction (kvsim uses one ``recompute_fraction`` for every chunk).

The cache state advances at arrival, not at prefill completion (an approximation: a chunk
requested twice within one prefill time counts as a hit the second time). Replicas of a
cluster share one cache of the whole trace.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Policy = Literal["lru", "cachecraft"]
TIERS = ("gpu", "host", "ssd")


@dataclass(frozen=True)
class ChunkHits:
    """Per request: chunks hit in each tier (``[N, 3]``, columns :data:`TIERS`) and missed (``[N]``)."""

    hits: np.ndarray
    misses: np.ndarray

    def hit_rate(self) -> float:
        """Hits over lookups (all tiers), 0 when there were no lookups."""
        h, m = int(self.hits.sum()), int(self.misses.sum())
        return h / (h + m) if h + m else 0.0


class _Tier:
    """One tier's resident chunks and its victim order."""

    def __init__(self, slots: int, policy: Policy):
        self.slots, self.policy = slots, policy
        self.lru: OrderedDict[int, None] = OrderedDict()  # oldest first
        self.heap: list[tuple[int, int, int]] = []  # (uses, last use, chunk); stale entries skipped

    def __contains__(self, c: int) -> bool:
        return c in self.lru

    def remove(self, c: int) -> None:
        del self.lru[c]

    def add(self, c: int, uses: int, clock: int) -> None:
        self.lru[c] = None
        if self.policy == "cachecraft":
            heapq.heappush(self.heap, (uses, clock, c))
            if len(self.heap) > 4 * self.slots + 64:  # drop stale entries (memory stays O(slots))
                self._rebuild()

    def _rebuild(self) -> None:
        live: dict[int, tuple[int, int, int]] = {}
        for e in self.heap:  # keep each resident chunk's newest entry (largest last use)
            if e[2] in self.lru and (e[2] not in live or e[1] > live[e[2]][1]):
                live[e[2]] = e
        self.heap = list(live.values())
        heapq.heapify(self.heap)

    def victim(self, uses: dict[int, int], last: dict[int, int]) -> int:
        if self.policy == "lru":
            return next(iter(self.lru))
        while True:
            u, t, c = self.heap[0]
            if c in self.lru and uses[c] == u and last[c] == t:
                return c
            heapq.heappop(self.heap)  # stale: the chunk was used again or left the tier


def replay(chunk_ids: Sequence[Sequence[int]], chunk_bytes: float | Sequence[float], capacity_bytes: Sequence[float],
           policy: Policy = "lru") -> ChunkHits:
    """Hits per tier and misses of every request (module docstring).

    Args:
        chunk_ids: per request, its chunk ids.
        chunk_bytes: KV bytes of one chunk as a tier stores it: one value for every tier, or
            one per tier (GPU: one GPU's share; host and SSD: the TP replica's whole KV).
        capacity_bytes: bytes of the GPU, host and SSD tiers (3 values, >= 0).
        policy: ``lru`` or ``cachecraft``.
    """
    if len(capacity_bytes) != len(TIERS):
        raise ValueError(f"capacity_bytes needs {len(TIERS)} values (gpu, host, ssd), got {len(capacity_bytes)}")
    sizes = [float(chunk_bytes)] * len(TIERS) if np.ndim(chunk_bytes) == 0 else [float(b) for b in chunk_bytes]
    if len(sizes) != len(TIERS) or not all(b > 0 for b in sizes):
        raise ValueError(f"chunk_bytes must be > 0, one value or one per tier, got {chunk_bytes}")
    tiers = [_Tier(int(cap // b), policy) for cap, b in zip(capacity_bytes, sizes)]
    uses: dict[int, int] = {}
    last: dict[int, int] = {}
    hits = np.zeros((len(chunk_ids), len(TIERS)), dtype=np.int64)
    misses = np.zeros(len(chunk_ids), dtype=np.int64)
    clock = 0
    for i, ids in enumerate(chunk_ids):
        for c in ids:
            clock += 1
            where = next((t for t, tier in enumerate(tiers) if c in tier), -1)
            if where < 0:
                misses[i] += 1
            else:
                hits[i, where] += 1
                tiers[where].remove(c)
            uses[c] = uses.get(c, 0) + 1
            last[c] = clock
            _insert(tiers, 0, c, uses, last)
    return ChunkHits(hits=hits, misses=misses)


def _insert(tiers: list[_Tier], t: int, c: int, uses: dict[int, int], last: dict[int, int]) -> None:
    """Put chunk ``c`` in tier ``t``, demoting victims down the hierarchy (the last tier drops them)."""
    while t < len(tiers):
        tier = tiers[t]
        if tier.slots <= 0:
            t += 1  # an empty tier: the chunk goes straight to the next one
            continue
        if len(tier.lru) < tier.slots:
            tier.add(c, uses[c], last[c])
            return
        v = tier.victim(uses, last)
        tier.remove(v)
        tier.add(c, uses[c], last[c])
        c, t = v, t + 1
