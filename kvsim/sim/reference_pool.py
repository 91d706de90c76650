"""Plain KV bookkeeping for the reference simulator (:mod:`kvsim.sim.reference`).

Independent of :mod:`kvsim.sim.kv_cache`: no tables, no running sums. Every request holds
its own block counts (``gpu_blocks`` private GPU blocks, ``host_blocks``, the prefix-cache
entries it references); the pool derives what is used by adding them up.

* :class:`RefGeometry`: block size in bytes, pool capacities, and ``blocks(n, prompt)``:
  ``ceil(kv_bytes(n, prompt) / block_bytes)`` blocks (GPU and host) of a request with ``n``
  tokens in its cache (a ``1e-9`` block tolerance, so 2.0000000001 blocks is 2).
* :class:`RefPool`: the prefix cache (hash -> :class:`Entry` with a reference count and its
  blocks) and the admission test ``fits(gpu, host)``: new GPU blocks must fit in the free
  blocks plus the blocks of unreferenced entries, which are evicted least recently
  released first (one entry at a time, until enough blocks are free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kvsim.errors import ConfigError
from kvsim.pricing.memory import memory_budget

BLOCK_EPS = 1e-9


@dataclass
class Entry:
    """One cached prompt block: ``refs`` requests use it; ``released_at``: a clock tick
    when ``refs`` last dropped to 0 (the LRU order of unreferenced entries)."""

    refs: int
    blocks: int
    released_at: int = -1


class RefGeometry:
    """Pool sizes and per-request block counts of one (deployment, method, engine config)."""

    def __init__(self, dep, method, cfg, step_tokens: int) -> None:
        off = cfg.kv_offload  # rule 11: the host tier's memory is not the host pool's
        budget = memory_budget(dep, method, max_tokens_per_step=step_tokens, max_seqs=cfg.max_num_seqs,
                               host_tier_bytes=off.host_bytes if off is not None and off.enabled else 0.0)
        self.block_bytes = cfg.block_size_tokens * method.dep.full_kv_bytes_per_token
        if budget.kv_gpu_bytes < self.block_bytes:
            raise ConfigError("no GPU memory left for the KV cache (reference simulator)")
        self.num_gpu_blocks = int(budget.kv_gpu_bytes // self.block_bytes)
        self.num_host_blocks = max(0, int(budget.kv_host_bytes // self.block_bytes))
        self.method = method
        self._memo: dict[tuple[int, int], tuple[int, int]] = {}

    def _count(self, nbytes) -> int:
        x = float(np.asarray(nbytes, dtype=np.float64).reshape(-1)[0]) / self.block_bytes
        return max(math.ceil(x - BLOCK_EPS), 0)

    def blocks(self, n: int, prompt: int) -> tuple[int, int]:
        """(GPU, host) blocks of a request with ``n`` tokens cached and a ``prompt``-token prompt."""
        key = (int(n), int(prompt))
        got = self._memo.get(key)
        if got is None:
            res = self.method.kv_bytes(np.array([float(n)]), np.array([float(prompt)]))
            got = self._memo[key] = (self._count(res.gpu_bytes), self._count(res.host_bytes))
        return got

    def prefix_blocks(self, n_entries: int, pb: int, prompt: int) -> int:
        """GPU blocks of the first ``n_entries`` prefix entries of ``pb`` tokens each."""
        return self.blocks(n_entries * pb, prompt)[0]


class RefPool:
    """GPU/host pools over the live requests' own counts, plus the prefix cache."""

    def __init__(self, geo: RefGeometry, pb: int) -> None:
        self.geo = geo
        self.pb = pb
        self.entries: dict[int, Entry] = {}
        self.holders: list = []  # requests that may hold blocks (scanned to add up usage)
        self.tick = 0
        self.evictions = 0
        self.peak_gpu = 0
        self.peak_host = 0

    # ----- usage, derived -----
    def private_gpu(self) -> int:
        return sum(r.gpu_blocks for r in self.holders)

    def host_used(self) -> int:
        return sum(r.host_blocks for r in self.holders)

    def cached_used(self) -> int:
        return sum(e.blocks for e in self.entries.values() if e.refs > 0)

    def cached_free(self) -> int:
        return sum(e.blocks for e in self.entries.values() if e.refs == 0)

    def gpu_used(self) -> int:
        return self.private_gpu() + self.cached_used()

    def host_free(self) -> int:
        return self.geo.num_host_blocks - self.host_used()

    def note_peak(self) -> None:
        self.peak_gpu = max(self.peak_gpu, self.gpu_used())
        self.peak_host = max(self.peak_host, self.host_used())

    def hold(self, r) -> None:
        if r not in self.holders:
            self.holders.append(r)

    # ----- allocation -----
    def fits(self, gpu: int, host: int = 0, host_released: int = 0, keep_free: int = 0) -> bool:
        """Can ``gpu`` more GPU blocks and ``host`` more host blocks be taken (evicting
        unreferenced entries), leaving at least ``keep_free`` GPU blocks free or evictable?
        ``host_released``: host blocks freed just before."""
        if self.geo.num_gpu_blocks - self.gpu_used() - gpu < keep_free:
            return False
        if host > 0 and host > self.host_free() + host_released:
            return False
        return True

    def make_room(self, gpu: int) -> None:
        """Evict least recently released unreferenced entries until ``gpu`` blocks are free; of a
        parked request's KV only the blocks still needed go, from its tail (rule 12)."""
        free = self.geo.num_gpu_blocks - self.gpu_used() - self.cached_free()
        while gpu > free:
            h = min((h for h, e in self.entries.items() if e.refs == 0), key=lambda h: self.entries[h].released_at)
            e = self.entries[h]
            if isinstance(h, str) and e.blocks > gpu - free:
                e.blocks -= gpu - free
                return
            free += self.entries.pop(h).blocks
            if not isinstance(h, str):
                self.evictions += 1

    # ----- parked KV of RECOMPUTE victims (rule 12) -----
    def park(self, rid: int, blocks: int) -> None:
        self.tick += 1
        self.entries[f"parked-{rid}"] = Entry(0, blocks, self.tick)

    def parked_blocks(self, rid: int) -> int:
        e = self.entries.get(f"parked-{rid}")
        return e.blocks if e is not None else 0

    def unpark(self, rid: int):
        """Remove the parked entry of ``rid`` (its blocks are free); returns it (None: none)."""
        return self.entries.pop(f"parked-{rid}", None)

    def restore(self, rid: int, entry) -> None:
        """Put back an entry :meth:`unpark` returned, with its place in the LRU order."""
        self.entries[f"parked-{rid}"] = entry

    # ----- prefix cache -----
    def lookup(self, hashes, max_entries: int) -> int:
        n = 0
        for h in hashes[:max_entries]:
            if h not in self.entries:
                break
            n += 1
        return n

    def acquire(self, hashes) -> None:
        for h in hashes:
            self.entries[h].refs += 1

    def unacquire(self, hashes) -> None:
        """Undo :meth:`acquire` for an admission that was refused: the references go, and the entries
        keep their place in the LRU order (``released_at`` unchanged; rule 3: a refused admission
        leaves the cache as it was)."""
        for h in hashes:
            self.entries[h].refs -= 1

    def release(self, hashes) -> None:
        """Drop references of a prompt's entries (``hashes`` in prompt order) from its last to its first:
        entries reaching 0 become released, the first entry the most recently (rule 2)."""
        for h in reversed(hashes):
            e = self.entries[h]
            e.refs -= 1
            if e.refs == 0:
                self.tick += 1
                e.released_at = self.tick

    def register(self, hashes, first_index: int, prompt: int) -> int:
        """Entries ``first_index..`` (1-based) of a completed prompt become cached entries the
        request references (or it shares an entry cached meanwhile). Returns the private GPU
        blocks the request hands over (its own blocks of those entries)."""
        moved = 0
        pb = self.pb
        for i, h in enumerate(hashes, start=first_index):
            blocks = self.geo.prefix_blocks(i, pb, prompt) - self.geo.prefix_blocks(i - 1, pb, prompt)
            e = self.entries.get(h)
            if e is None:
                self.entries[h] = Entry(1, blocks)
            else:
                e.refs += 1
            moved += blocks
        return moved


def effective_prompts(method, prompt: np.ndarray) -> np.ndarray:
    out = []
    for p in np.asarray(prompt).tolist():
        eff = float(np.asarray(method.effective_prompt_tokens(np.array([float(p)]))).reshape(-1)[0])
        out.append(max(math.ceil(eff - 1e-9), 1))
    return np.array(out, dtype=np.int64)


def distinct_prefix(hashes) -> tuple:
    out: list = []
    for h in hashes:
        if h in out:
            break
        out.append(h)
    return tuple(out)


class RefTiers:
    """Plain host / NVMe offload tiers for the reference simulator (the rules of
    :mod:`kvsim.sim.kv_tiers`, written independently): every entry keeps its tier, blocks, the
    time its copy ends and a clock tick of its last use; LRU victims are found by scanning."""

    def __init__(self, offload, block_bytes: float, pcie_s, nvme_read_s, nvme_write_s, gpus: int = 1) -> None:
        # a block holds every GPU's share in the tiers (each TP worker offloads its own); PCIe copies one share per
        # GPU, in parallel; the NVMe drive moves all of them
        self.gpus = gpus
        self.cap = {"host": int(offload.host_bytes // (block_bytes * gpus)),
                    "nvme": int(offload.nvme_bytes // (block_bytes * gpus))}
        self.bb = block_bytes
        self.where: dict = {}  # hash -> [tier, blocks, ready_s, last_use_tick]
        self.tick = 0
        self.d2h_free = self.nvme_free = 0.0
        self.pcie_s, self.nvme_read_s, self.nvme_write_s = pcie_s, nvme_read_s, nvme_write_s

    def _use(self, e) -> None:
        self.tick += 1
        e[3] = self.tick

    def held(self, tier: str) -> int:
        return sum(e[1] for e in self.where.values() if e[0] == tier)

    def hits(self, hashes, start: int, stop: int, now: float) -> list[str]:
        out = []
        for h in hashes[start:stop]:
            e = self.where.get(h)
            if e is None or e[2] > now:
                break
            out.append(e[0])
        return out

    def touch(self, hashes) -> None:
        """Use the held entries of ``hashes`` from the last to the first (vLLM's reversed touch: the
        first entry of a prompt is the most recently used)."""
        for h in reversed(hashes):
            e = self.where.get(h)
            if e is not None:
                self._use(e)

    def load(self, hashes, start: int, tiers: list[str], wanted: int) -> tuple[int, int]:
        """Blocks (host, NVMe) of the entries ``hashes[start:start + len(tiers)]``; then the ``wanted``
        entries the admission's lookup covered are touched."""
        host = nvme = 0
        for h in hashes[start:start + len(tiers)]:
            e = self.where[h]
            if e[0] == "host":
                host += e[1]
            else:
                nvme += e[1]
        self.touch(hashes[:wanted])
        return host, nvme

    def load_seconds(self, host: int, nvme: int) -> float:
        if host + nvme == 0:
            return 0.0
        return self.pcie_s((host + nvme) * self.bb) + (self.nvme_read_s(nvme * self.bb * self.gpus) if nvme else 0.0)

    def store(self, items, t_s: float, touch=None) -> None:
        """Copy the entries of ``items`` no tier holds (0-block entries too, as 0 bytes) to the host
        tier, evict, then, if it copied any, touch ``touch`` (default: the hashes of ``items``)."""
        new = [(h, b) for h, b in items if h not in self.where and b <= self.cap["host"]] if self.cap["host"] > 0 else []
        if new:
            self._store(new, t_s)
            self.touch([h for h, _ in items] if touch is None else touch)

    def _store(self, new, t_s: float) -> None:
        start = max(t_s, self.d2h_free)
        ready = self.d2h_free = start + self.pcie_s(sum(b for _, b in new) * self.bb)
        for h, b in new:
            self.where[h] = ["host", b, ready, 0]
            self._use(self.where[h])
        spilled = []
        while self.held("host") > self.cap["host"]:
            h = min((h for h, e in self.where.items() if e[0] == "host"), key=lambda h: self.where[h][3])
            e = self.where.pop(h)
            if self.cap["nvme"] > 0 and e[1] <= self.cap["nvme"]:
                spilled.append((h, e))
        if spilled:
            start = max(ready, self.nvme_free, max(e[2] for _, e in spilled))
            done = self.nvme_free = start + self.nvme_write_s(sum(e[1] for _, e in spilled) * self.bb * self.gpus)
            for h, e in spilled:  # entering the NVMe tier is its most recent use there
                self.where[h] = ["nvme", e[1], done, 0]
                self._use(self.where[h])
            while self.held("nvme") > self.cap["nvme"]:
                h = min((h for h, e in self.where.items() if e[0] == "nvme"), key=lambda h: self.where[h][3])
                del self.where[h]
