"""Paged, compression-aware KV memory: a GPU block pool, a host block pool, a prefix cache.

Blocks have a fixed size in *bytes*: ``block_bytes = block_size_tokens * full_kv_bytes_per_token``
(vLLM's 16-token block of uncompressed KV, per GPU of the replica). A request with ``n``
tokens in its cache holds ``ceil(kv_bytes(n).gpu_bytes / block_bytes)`` GPU blocks, where
``kv_bytes`` is the method's residency (:meth:`KVMethod.kv_bytes`): a 4x compressed cache
needs a quarter of the blocks, and a bounded method (H2O, StreamingLLM, SnapKV...) stops
growing once ``kv_bytes`` plateaus. Methods with ``uses_host`` (MagicPIG, InfLLM) also hold
``ceil(kv_bytes(n).host_bytes / block_bytes)`` blocks of the host pool, which SWAP
preemption shares.

Methods that evict at the end of prefill (H2O, SnapKV, MagicPIG...) hold bytes that depend
on the prompt length too: ``kv_bytes(n, n_prompt)``; their blocks are computed per request
(the method declares ``prompt_aware``), other methods use tables indexed by ``n``.

Pool sizes (vLLM v1 ``Worker.determine_available_memory`` and ``get_num_blocks``): GPU blocks =
the KV bytes left per GPU of the requested memory after weights, the engine reserve of the
profiling step and the method's fixed buffers (:func:`kvsim.pricing.memory.memory_budget`,
with ``gpu_memory_utilization``) // ``block_bytes``;
host blocks = ``host_memory_bytes * 0.9`` less the method's fixed host bytes // ``block_bytes``.

Prefix caching (vLLM automatic prefix caching) works at the trace's prefix-block granularity
(Mooncake ``hash_ids``, 512 tokens): an entry is the KV of one prompt block, shared by
reference count; entries nobody references stay cached and are evicted LRU-first when an
allocation needs their blocks. The entry at position ``e`` (1-based) of a prompt costs
``blocks(e*pb) - blocks((e-1)*pb)`` blocks, so a request holding ``e`` leading entries and
``n`` tokens owns ``blocks(n) - blocks(e*pb)`` private blocks and block counts always add up.
Where a trace's ids name generated tokens too (more ids than the prompt's blocks), a finishing
request's full entries of generated tokens become cached entries as well
(:meth:`KVCacheManager.generated_entries`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.pricing.memory import MemoryBudget, memory_budget
from kvsim.methods.base import KVMethod

_EPS = 1e-9  # blocks: ceil(x - eps) so that 2.0000000001 blocks is 2


@dataclass(frozen=True)
class KVLayout:
    """Block geometry of one (deployment, method, engine config).

    Attributes:
        block_bytes: bytes of one block, GPU and host alike.
        num_gpu_blocks, num_host_blocks: pool capacities (blocks).
        gpu_blocks, host_blocks: ``[max_tokens + 1]`` int64 blocks held with ``n`` tokens cached
            (when ``prompt_aware``: with ``n`` tokens that are all prompt).
        prompt_aware: residency depends on the prompt length too (use :meth:`blocks`).
    """

    block_size_tokens: int
    block_bytes: float
    num_gpu_blocks: int
    num_host_blocks: int
    gpu_blocks: np.ndarray
    host_blocks: np.ndarray
    budget: MemoryBudget
    method: KVMethod | None = None
    prompt_aware: bool = False

    @property
    def max_tokens(self) -> int:
        return int(self.gpu_blocks.shape[0] - 1)

    def blocks(self, n, n_prompt) -> tuple[np.ndarray, np.ndarray]:
        """GPU and host blocks (int arrays) of requests with ``n`` tokens cached and prompts of ``n_prompt``."""
        n = np.asarray(n)
        if not self.prompt_aware:
            return self.gpu_blocks[n], self.host_blocks[n]
        nf = n.astype(np.float64)
        res = self.method.kv_bytes(nf, np.broadcast_to(np.asarray(n_prompt, dtype=np.float64), nf.shape))
        return _blocks(res.gpu_bytes, nf.shape, self.block_bytes), _blocks(res.host_bytes, nf.shape, self.block_bytes)

    def blocks1(self, n: int, n_prompt: int) -> tuple[int, int]:
        """:meth:`blocks` of one request, as ints."""
        if not self.prompt_aware:
            return int(self.gpu_blocks[n]), int(self.host_blocks[n])
        g, h = self.blocks(np.array([n]), np.array([n_prompt]))
        return int(g[0]), int(h[0])


class BlockCounter(Protocol):
    """Blocks a request holds: ``request_blocks(n_tokens, n_prompt, req_id) -> (gpu, host)``,
    and the sum over a batch (``[B]`` arrays). :class:`LayoutBlocks` is the definition; the
    fast layer may answer from precomputed per-request rows (same numbers)."""

    def request_blocks(self, n_tokens: int, n_prompt: int, req_id: int) -> tuple[int, int]: ...
    def batch_blocks(self, n_tokens: np.ndarray, n_prompt: np.ndarray, req_ids: np.ndarray) -> tuple[int, int]: ...


class LayoutBlocks:
    """:class:`BlockCounter` straight from a :class:`KVLayout` (tables, or the method's
    residency per request when it is prompt-aware)."""

    def __init__(self, layout: KVLayout) -> None:
        self.layout = layout
        if not layout.prompt_aware:  # blocks depend on the token count only: plain table lookups
            gpu, host = layout.gpu_blocks.tolist(), layout.host_blocks.tolist()
            self.request_blocks = lambda n_tokens, n_prompt, req_id: (gpu[n_tokens], host[n_tokens])

    def request_blocks(self, n_tokens: int, n_prompt: int, req_id: int) -> tuple[int, int]:
        return self.layout.blocks1(n_tokens, n_prompt)

    def batch_blocks(self, n_tokens: np.ndarray, n_prompt: np.ndarray, req_ids: np.ndarray) -> tuple[int, int]:
        g, h = self.layout.blocks(n_tokens, n_prompt)
        return int(g.sum()), int(h.sum())


def _blocks(nbytes, shape, block_bytes: float) -> np.ndarray:
    x = np.empty(shape)  # (an array even for one request: the steps work in place)
    np.divide(np.broadcast_to(np.asarray(nbytes, dtype=np.float64), shape), block_bytes, out=x)
    x -= _EPS
    np.ceil(x, out=x)
    np.maximum(x, 0, out=x)
    return x.astype(np.int64)[()]  # ([()]: one request gives a numpy integer, as before, not a 0-d array)


def kv_layout(dep: Deployment, method: KVMethod, max_tokens: int, *, block_size_tokens: int = 16,
              max_tokens_per_step: float, max_seqs: int, host_tier_bytes: float = 0.0) -> KVLayout:
    """Pools and per-token block tables for requests of up to ``max_tokens`` tokens (``host_tier_bytes``:
    host memory the KV offload tier takes from the host pool, :func:`memory_budget`)."""
    if block_size_tokens < 1:
        raise ConfigError(f"block_size_tokens must be >= 1, got {block_size_tokens}")
    budget = memory_budget(dep, method, max_tokens_per_step=max_tokens_per_step, max_seqs=max_seqs,
                           host_tier_bytes=host_tier_bytes)
    block_bytes = block_size_tokens * method.dep.full_kv_bytes_per_token
    if budget.kv_gpu_bytes < block_bytes:
        gb = 1e9  # (decimal GB, as every table of kvsim prints memory)
        raise ConfigError(
            f"no GPU memory left for the KV cache: {budget.gpu_total_bytes / gb:.1f} GB usable, weights "
            f"{budget.weights_bytes / gb:.1f} GB, engine reserve {budget.reserve_bytes / gb:.1f} GB, "
            f"method buffers {budget.method_fixed_gpu_bytes / gb:.1f} GB "
            "(try more tensor-parallel GPUs, smaller weights (quantized), a smaller max_num_batched_tokens or a "
            "larger gpu_memory_utilization)"
        )
    n = int(max_tokens) + 1
    res = method.kv_bytes(np.arange(n, dtype=np.float64))
    return KVLayout(
        block_size_tokens=block_size_tokens,
        block_bytes=block_bytes,
        num_gpu_blocks=int(budget.kv_gpu_bytes // block_bytes),
        num_host_blocks=max(0, int(budget.kv_host_bytes // block_bytes)),
        gpu_blocks=_blocks(res.gpu_bytes, (n,), block_bytes),
        host_blocks=_blocks(res.host_bytes, (n,), block_bytes),
        budget=budget,
        method=method,
        prompt_aware=method.prompt_aware,
    )


class KVCacheManager:
    """Block counts of the GPU and host pools, and the prefix cache (hash -> entry).

    Invariants: ``gpu_used + cached_free <= num_gpu_blocks`` and ``host_used <= num_host_blocks``.
    """

    def __init__(self, layout: KVLayout, prefix_block_tokens: int = 0) -> None:
        self.layout = layout
        self.gpu_capacity = layout.num_gpu_blocks
        self.host_capacity = layout.num_host_blocks
        self.gpu_private = 0  # blocks owned by single requests
        self.host_used = 0
        self.pb = int(prefix_block_tokens)  # tokens per prefix-cache entry (0: prefix caching off)
        self.entries: dict[int, list[int]] = {}  # hash -> [refcount, blocks]
        self.lru: OrderedDict[int, None] = OrderedDict()  # unreferenced entries, oldest first
        self.cached_used = 0  # blocks of referenced entries
        self.cached_free = 0  # blocks of unreferenced (evictable) entries
        self.evictions = 0
        self.peak_gpu_used = 0
        self.peak_host_used = 0

    # ----- pool state (blocks) -----
    @property
    def gpu_used(self) -> int:
        """Blocks held by running requests (private + referenced prefix entries)."""
        return self.gpu_private + self.cached_used

    @property
    def gpu_allocatable(self) -> int:
        """Blocks an allocation can get: free ones plus evictable cached entries."""
        return self.gpu_capacity - self.gpu_private - self.cached_used

    @property
    def host_free(self) -> int:
        return self.host_capacity - self.host_used

    def fits(self, gpu: int, host: int = 0, keep_free: int = 0) -> bool:
        """Can ``gpu``/``host`` more blocks be taken with ``keep_free`` GPU blocks still allocatable
        (free or evictable) afterwards (vLLM v0's watermark)?"""
        return (gpu + keep_free <= self.gpu_capacity - self.gpu_private - self.cached_used
                and not (host and host > self.host_capacity - self.host_used))

    def allocate(self, gpu: int, host: int = 0, keep_free: int = 0) -> bool:
        """Take ``gpu``/``host`` blocks (evicting LRU cached entries as needed); False if they do not
        fit (:meth:`fits`)."""
        if not self.fits(gpu, host, keep_free):
            return False
        used = self.gpu_private + self.cached_used
        room = self.gpu_capacity - used
        if gpu > room - self.cached_free:
            self._evict(gpu - room + self.cached_free)
        self.gpu_private += gpu
        used += gpu
        if used > self.peak_gpu_used:
            self.peak_gpu_used = used
        if host:
            self.host_used += host
            if self.host_used > self.peak_host_used:
                self.peak_host_used = self.host_used
        return True

    def release(self, gpu: int, host: int = 0) -> None:
        self.gpu_private -= gpu
        self.host_used -= host
        assert self.gpu_private >= 0 and self.host_used >= 0, "released more blocks than allocated"

    def _evict(self, need: int) -> None:
        entries, lru = self.entries, self.lru
        while need > 0:
            h, _ = lru.popitem(last=False)
            if type(h) is tuple and entries[h][1] > need:  # a parked request's KV: its tail blocks go first
                entries[h][1] -= need
                self.cached_free -= need
                lru[h] = None
                lru.move_to_end(h, last=False)  # the rest keeps its place
                return
            blocks = entries.pop(h)[1]
            self.cached_free -= blocks
            if type(h) is not tuple:
                self.evictions += 1
            need -= blocks

    def evictable_before(self, keys, limit: int) -> int:
        """Blocks evictions would take, in LRU order, before touching an entry of ``keys`` (the walk
        stops once it has ``limit`` blocks: more is never asked for)."""
        total = 0
        entries = self.entries
        for h in self.lru:
            if h in keys:
                break
            total += entries[h][1]
            if total >= limit:
                break
        return total

    # ----- a preempted request's KV, kept cached (vLLM v1 prefix caching) -----
    def park(self, req_id: int, blocks: int) -> None:
        """Turn ``blocks`` private blocks of a preempted request into one evictable entry, the most
        recently released: its full blocks stay cached (vLLM v1 hashes every full block, generated
        ones too) until evicted, its last blocks first (``free`` releases a request's blocks in
        reverse order, so its tail is evicted before its head)."""
        self.gpu_private -= blocks
        if blocks <= 0:
            return
        key = (req_id,)
        self.entries[key] = [0, blocks]
        self.lru[key] = None
        self.cached_free += blocks

    def parked_blocks(self, req_id: int) -> int:
        """Blocks of ``req_id``'s parked KV still cached (0: none, or evicted)."""
        e = self.entries.get((req_id,))
        return e[1] if e is not None else 0

    def unpark(self, req_id: int, take: int = 0) -> None:
        """Drop ``req_id``'s parked entry: ``take`` of its blocks become the request's own again, the
        rest free."""
        e = self.entries.pop((req_id,), None)
        if e is None:
            return
        del self.lru[(req_id,)]
        self.cached_free -= e[1]
        self.gpu_private += take

    # ----- prefix cache -----
    def entry_blocks(self, index: int) -> int:
        """Blocks of the prefix entry at 1-based position ``index`` of a prompt."""
        g = self.layout.gpu_blocks
        return int(g[index * self.pb] - g[(index - 1) * self.pb])

    def prefix_blocks(self, n_entries: int) -> int:
        """Blocks of the first ``n_entries`` entries of a prompt."""
        return int(self.layout.gpu_blocks[n_entries * self.pb])

    def lookup(self, hashes: tuple[int, ...], max_entries: int) -> int:
        """Number of leading ``hashes`` (at most ``max_entries``) cached right now."""
        n = 0
        entries = self.entries
        for h in hashes[:max_entries]:
            if h not in entries:
                break
            n += 1
        return n

    def acquire(self, hashes) -> None:
        """Reference cached entries (they stop being evictable). No peak is noted: the blocks are
        already resident, and an admission that then fails takes nothing (the peak is noted when
        the request's own blocks are allocated)."""
        for h in hashes:
            e = self.entries[h]
            if e[0] == 0:
                del self.lru[h]
                self.cached_free -= e[1]
                self.cached_used += e[1]
            e[0] += 1

    def unreferenced_blocks(self, hashes) -> int:
        """Blocks of the distinct entries among ``hashes`` nobody references: what :meth:`acquire` would
        move from the evictable pool to the held one."""
        entries = self.entries
        return sum(entries[h][1] for h in set(hashes) if entries[h][0] == 0)

    def release_prefix(self, hashes) -> None:
        """Drop references of a prompt's entries (``hashes`` in prompt order); unreferenced entries become
        evictable, its last entry first (vLLM v1 frees a request's blocks in reverse, "so that the tail
        blocks are freed first": ``SingleTypeKVCacheManager.free``), so eviction takes a cached prompt's
        tail before its head and what stays is still a usable prefix."""
        for h in reversed(hashes):
            e = self.entries[h]
            e[0] -= 1
            if e[0] == 0:
                self.lru[h] = None
                self.cached_used -= e[1]
                self.cached_free += e[1]

    def register(self, hashes, first_index: int) -> int:
        """Turn a request's private blocks of prompt entries ``first_index..`` (1-based) into
        cached entries it references; entries cached meanwhile by another request are
        shared instead (the private copy is freed). Returns the private blocks handed over."""
        moved = 0
        for i, h in enumerate(hashes, start=first_index):
            blocks = self.entry_blocks(i)
            e = self.entries.get(h)
            if e is None:
                self.entries[h] = [1, blocks]
                self.cached_used += blocks
            else:
                if e[0] == 0:
                    del self.lru[h]
                    self.cached_free -= e[1]
                    self.cached_used += e[1]
                e[0] += 1
            self.gpu_private -= blocks
            moved += blocks
        self._note_peak()
        return moved

    def generated_entries(self, n_ids: int, prompt: int, output: int) -> int:
        """Leading entries of a finished request of ``prompt`` + ``output`` tokens that can be cached,
        given ``n_ids`` prefix ids. Ids past the prompt's ``ceil(prompt / pb)`` say the trace names the
        request's token stream (prompt, then generated tokens; a trace naming prompt blocks only stops
        at ``ceil``, its last id the hash of a partial prompt block): then every full entry of the KV,
        ``(prompt + output - 1) // pb`` (the last sampled token has no KV), up to ``n_ids``; else 0.
        Example: pb 16, prompt 40, output 30, 5 ids (> ceil(40/16) = 3): min(5, 69 // 16) = 4."""
        pb = self.pb
        if not pb or n_ids <= -(-prompt // pb):
            return 0
        return min(n_ids, (prompt + output - 1) // pb)

    def note_peak(self, extra_gpu: int, extra_host: int) -> None:
        """Note a transient use of ``extra`` blocks beyond the current one (inside a decode run)."""
        self.peak_gpu_used = max(self.peak_gpu_used, self.gpu_private + self.cached_used + extra_gpu)
        self.peak_host_used = max(self.peak_host_used, self.host_used + extra_host)

    def _note_peak(self) -> None:
        if self.gpu_private + self.cached_used > self.peak_gpu_used:
            self.peak_gpu_used = self.gpu_private + self.cached_used

    def check(self) -> None:
        """Assert the pool invariants (used by tests)."""
        assert 0 <= self.gpu_private and 0 <= self.cached_used and 0 <= self.cached_free
        assert self.gpu_private + self.cached_used + self.cached_free <= self.gpu_capacity, "GPU pool over capacity"
        assert 0 <= self.host_used <= self.host_capacity, "host pool over capacity"
        assert self.cached_free == sum(self.entries[h][1] for h in self.lru)
