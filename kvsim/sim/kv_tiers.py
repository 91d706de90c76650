"""KV offload tiers below the GPU prefix cache: host DRAM, then a local NVMe drive.

Semantics of vLLM v1's CPU KV offloading (``vllm/v1/kv_offload``, the ``OffloadingConnector``),
at the prefix cache's entry granularity (:mod:`kvsim.sim.kv_cache`):

* **write-through, asynchronous**: when a prompt completes, its prefix entries (GPU hits
  included) that no tier holds are copied GPU -> host over PCIe after the step that computed them. The copy runs
  behind compute (it never lengthens a step): copies queue one after another on the
  device-to-host direction of the link (PCIe is full duplex, ``LinkSpec.bw_bytes_per_s`` is
  per direction), each ``Roofline`` PCIe copy of its bytes plus one round trip, and an entry
  can be found in the host tier only once its copy has finished. The GPU entry stays in the
  GPU prefix cache (mirrored); the copy is taken as a snapshot even if the GPU entry is
  evicted before it ends (vLLM keeps those blocks until the store finishes: a small
  difference in GPU memory, not modelled).
* **LRU per tier**: the host tier evicts its least recently used entries when a store
  overflows it; with an NVMe tier they are spilled host -> NVMe (sequential writes at the
  drive's write bandwidth, queued, behind compute), otherwise dropped. The NVMe tier drops
  its least recently used entries. Host and NVMe are exclusive; a block is in two tiers
  only as a GPU entry mirrored in host or NVMe. Use order is vLLM's
  ``LRUOffloadingManager.touch`` (:meth:`OffloadTiers.touch`): each admission's lookup and each
  store touch the prompt's entries from the last to the first, so LRU evicts the tail of a
  prefix before its head.
* **loads on a prefix hit**: at admission, after the GPU prefix cache's leading hits, the
  following entries found (ready) in host or NVMe are loaded back and count as computed
  tokens; they take GPU blocks like computed tokens and become GPU prefix entries when the
  prompt completes. A load takes ``pcie(host + nvme bytes) + nvme_read(nvme bytes)`` (NVMe data
  staged through host memory, not overlapped with the PCIe copy: conservative). ``load=async``
  (default; vLLM v1's connector, ``WAITING_FOR_REMOTE_KVS``): the request waits alone, holding the
  blocks of its computed tokens, while the loads queue on the host-to-device direction from the
  step that starts them; it rejoins the queue's head at the first step after its load
  (:meth:`kvsim.sim.scheduler.Scheduler.promote_loaded`). ``load=sync``: the admitting step waits
  for the load.

Compressed methods store their compressed bytes in every tier: an entry is its GPU blocks
(``KVLayout`` blocks of the method's residency) times ``block_bytes``; an entry of 0 blocks (its
bytes fit in the previous entry's last block) is stored as 0 bytes, keeping the prefix chain.
The host tier is host memory the host KV pool does not get (:func:`kvsim.pricing.memory.memory_budget`).

Not modelled: SWAP preemption copies and tier stores share the device-to-host direction
without queueing against each other (and SWAP-ins and async loads the host-to-device one);
vLLM's one-step delay in reporting a finished load (here it is seen by the first step that
starts after it); stores of generated (decode) tokens before the request
finishes (they are stored when it finishes, where the trace's ids name them:
:meth:`kvsim.sim.scheduler.Scheduler.register_generated`); one tier store per replica (no sharing
across nodes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from kvsim.errors import ConfigError
from kvsim.sim.kv_offload import KVOffload, parse_offload, parse_size

__all__ = ["UNUSED_NOTE", "KVOffload", "OffloadTiers", "check_offload", "make_tiers", "merge_summaries", "parse_offload",
           "parse_size", "prefill_seconds", "reuse_note"]

TIERS = ("host", "nvme")

#: the note of a run (simulate) or a search (plan) with tiers configured that stored nothing
UNUSED_NOTE = ("KV offload tiers unused: they hold prefix-cache entries and this run has none (no prefix ids in "
               "the trace, --no-prefix-caching, or a method without shareable prompt blocks)")


def reuse_note(summary: dict) -> str:
    """``prefix reuse of 1,000 entries: GPU 40.0%, host 6.5%, nvme 1.0%`` of a tiers summary
    (:meth:`OffloadTiers.summary`, or every replica's: :func:`merge_summaries`)."""
    parts = [f"GPU {summary['gpu']['hit_rate'] * 100:.1f}%"]
    parts += [f"{name} {summary[name]['hit_rate'] * 100:.1f}%" for name in TIERS if name in summary]
    return f"prefix reuse of {summary['wanted_entries']:,} entries: " + ", ".join(parts)


class OffloadTiers:
    """The host and NVMe tiers of one replica: entries (prefix hash -> [blocks, ready_s]) in LRU
    order, the two transfer queues, and counters (see the module docstring).

    Args:
        offload: tier capacities (bytes of the replica).
        block_bytes: bytes of one KV block on one GPU.
        gpus: GPUs of the replica (its TP degree): every GPU offloads its own share of a block (vLLM: each
            TP worker its KV cache), so an entry of ``b`` blocks holds ``b * block_bytes * gpus`` of host or
            NVMe memory; the PCIe copies run in parallel, one link per GPU (``b * block_bytes`` each); the one
            NVMe drive reads and writes every GPU's share.
        pcie_s: seconds of one GPU<->host copy of ``nbytes`` (the roofline's PCIe copy).
        nvme_read_s, nvme_write_s: seconds of one sequential NVMe read / write of ``nbytes``.
        log_transfers: keep every background transfer ``(queue, start_s, end_s, bytes)`` (tests).
    """

    def __init__(self, offload: KVOffload, block_bytes: float, pcie_s: Callable[[float], float],
                 nvme_read_s: Callable[[float], float], nvme_write_s: Callable[[float], float],
                 log_transfers: bool = False, gpus: int = 1) -> None:
        self.block_bytes = float(block_bytes)
        self.gpus = int(gpus)
        self.tier_block_bytes = self.block_bytes * self.gpus  # host / NVMe bytes of one block (every GPU's share)
        self.load_mode = offload.load  # (reported; the scheduler runs the loads)
        self.capacity = {"host": int(offload.host_bytes // self.tier_block_bytes),
                         "nvme": int(offload.nvme_bytes // self.tier_block_bytes)}
        self.entries: dict[str, OrderedDict] = {t: OrderedDict() for t in TIERS}  # hash -> [blocks, ready_s]
        self.used = {t: 0 for t in TIERS}  # blocks
        self.free_at = {"d2h": 0.0, "nvme_write": 0.0}  # end of the last background transfer per queue
        self.pcie_s, self.nvme_read_s, self.nvme_write_s = pcie_s, nvme_read_s, nvme_write_s
        self.log: list | None = [] if log_transfers else None
        # counters (blocks; entries)
        self.blocks_in = {t: 0 for t in TIERS}  # written into the tier
        self.blocks_out = {t: 0 for t in TIERS}  # evicted or spilled out of the tier
        self.blocks_loaded = {t: 0 for t in TIERS}  # read back to the GPU
        self.hit_entries = {t: 0 for t in TIERS}
        self.gpu_hit_entries = 0
        self.wanted_entries = 0  # prefix entries admissions could have reused
        self.evictions = {t: 0 for t in TIERS}
        self.load_s = {t: 0.0 for t in TIERS}
        self.loads: list[tuple[int, int, int]] = []  # per load: (tokens cached on GPU, host tokens, nvme tokens)

    # ----- lookups and loads (admission) -----
    def hits(self, hashes, start: int, stop: int, now: float) -> list[str]:
        """Tiers of the entries ``hashes[start:stop]`` found ready at ``now``, up to the first miss
        (no side effect)."""
        host, nvme = self.entries["host"], self.entries["nvme"]
        out = []
        for h in hashes[start:stop]:
            e = host.get(h)
            if e is not None and e[1] <= now:
                out.append("host")
                continue
            e = nvme.get(h)
            if e is not None and e[1] <= now:
                out.append("nvme")
                continue
            break
        return out

    def load(self, hashes, start: int, tiers: list[str], wanted: int, pb: int) -> tuple[int, int]:
        """Load ``hashes[start:start + len(tiers)]`` from their ``tiers`` for an admission that reused
        ``start`` GPU entries of the ``wanted`` its lookup covers, and :meth:`touch` those ``wanted``
        entries (GPU-served ones too, as vLLM's lookup does); (host, nvme) blocks."""
        self.wanted_entries += wanted
        self.gpu_hit_entries += start
        got = {"host": 0, "nvme": 0}
        for h, t in zip(hashes[start:start + len(tiers)], tiers):
            got[t] += self.entries[t][h][0]
            self.hit_entries[t] += 1
        if tiers:
            for t in TIERS:
                self.blocks_loaded[t] += got[t]
            n_host = sum(1 for t in tiers if t == "host")
            self.loads.append((start * pb, n_host * pb, (len(tiers) - n_host) * pb))
        self.touch(hashes[:wanted])
        return got["host"], got["nvme"]

    def touch(self, hashes) -> None:
        """Mark the entries of ``hashes`` that a tier holds as used, the last first: a prompt's first
        entry ends most recently used, so LRU evicts the tail of a prefix before its head (whose loss
        would strand the rest behind a miss). vLLM ``LRUOffloadingManager.touch`` (``reversed``),
        called on every lookup and store with all of the request's block hashes."""
        host, nvme = self.entries["host"], self.entries["nvme"]
        for h in reversed(hashes):
            if h in host:
                host.move_to_end(h)
            elif h in nvme:
                nvme.move_to_end(h)

    def load_seconds(self, host_blocks: int, nvme_blocks: int) -> float:
        """Seconds the loads of one step add to it: ``pcie((host + nvme) bytes) + nvme_read(nvme bytes)``."""
        if not host_blocks and not nvme_blocks:
            return 0.0
        bb = self.block_bytes
        t_pcie = self.pcie_s((host_blocks + nvme_blocks) * bb)  # (each GPU its share, in parallel)
        t_nvme = self.nvme_read_s(nvme_blocks * self.tier_block_bytes) if nvme_blocks else 0.0
        total = host_blocks + nvme_blocks
        self.load_s["host"] += t_pcie * host_blocks / total
        self.load_s["nvme"] += t_pcie * nvme_blocks / total + t_nvme
        return t_pcie + t_nvme

    # ----- stores (after a prompt completes) -----
    def store(self, items, t_s: float, touch=None) -> None:
        """Write ``items`` = ``[(hash, blocks)]`` (entries of a prompt completed at ``t_s``) through
        to the host tier; entries some tier holds already are skipped; if it copied any, then
        :meth:`touch` ``touch`` (default: the entries of ``items``; vLLM touches only after a store
        that copies something). ``items`` are all of a prompt's entries, GPU hits included: vLLM
        prepares a store of every full block of a request, so an entry the GPU serves but the
        tiers dropped is offloaded again. An entry of 0 blocks (a compressed
        method whose entry fits in the previous entry's last block) is stored too, 0 bytes: the
        entries after it stay reachable."""
        host, nvme, cap = self.entries["host"], self.entries["nvme"], self.capacity["host"]
        new = [(h, b) for h, b in items if h not in host and h not in nvme and b <= cap] if cap > 0 else []
        if new:
            self._write(new, t_s)
            self.touch([h for h, _ in items] if touch is None else touch)

    def _write(self, new, t_s: float) -> None:
        host = self.entries["host"]
        nbytes = sum(b for _, b in new) * self.block_bytes
        start = max(t_s, self.free_at["d2h"])
        ready = start + self.pcie_s(nbytes)
        self.free_at["d2h"] = ready
        if self.log is not None:
            self.log.append(("d2h", start, ready, nbytes))
        for h, b in new:
            host[h] = [b, ready]
            self.used["host"] += b
            self.blocks_in["host"] += b
        self._overflow(ready)

    def _overflow(self, t_s: float) -> None:
        """Evict LRU host entries beyond capacity (spilled to NVMe when there is one)."""
        host = self.entries["host"]
        spilled = []
        while self.used["host"] > self.capacity["host"]:
            h, (b, ready) = host.popitem(last=False)
            self.used["host"] -= b
            self.blocks_out["host"] += b
            self.evictions["host"] += 1
            if b <= self.capacity["nvme"] and self.capacity["nvme"] > 0:
                spilled.append((h, b, ready))
        if not spilled:
            return
        nvme = self.entries["nvme"]
        nbytes = sum(b for _, b, _ in spilled) * self.tier_block_bytes
        start = max(t_s, self.free_at["nvme_write"], max(r for _, _, r in spilled))
        ready = start + self.nvme_write_s(nbytes)
        self.free_at["nvme_write"] = ready
        if self.log is not None:
            self.log.append(("nvme_write", start, ready, nbytes))
        for h, b, _ in spilled:
            nvme[h] = [b, ready]
            self.used["nvme"] += b
            self.blocks_in["nvme"] += b
        while self.used["nvme"] > self.capacity["nvme"]:
            _, (b, _) = nvme.popitem(last=False)
            self.used["nvme"] -= b
            self.blocks_out["nvme"] += b
            self.evictions["nvme"] += 1

    # ----- checks and results -----
    def check(self) -> None:
        """Assert the invariants: capacities, bytes conserved per tier (in - out = held), host and
        NVMe exclusive, background transfers of a queue never overlapping (never above the link's
        or drive's bandwidth)."""
        for t in TIERS:
            held = sum(b for b, _ in self.entries[t].values())
            assert held == self.used[t] <= self.capacity[t], f"{t} tier over capacity or miscounted"
            assert self.blocks_in[t] - self.blocks_out[t] == held, f"{t} tier: blocks not conserved"
        assert not (self.entries["host"].keys() & self.entries["nvme"].keys()), "an entry in host and NVMe"
        if self.log is not None:
            for q in ("d2h", "nvme_write"):
                spans = [(s, e) for name, s, e, _ in self.log if name == q]
                assert all(e0 <= s1 for (_, e0), (s1, _) in zip(spans, spans[1:])), f"{q} transfers overlap"

    def summary(self, prefill_s: Callable[[int, int], float]) -> dict:
        """Per tier: hit rate (share of the prefix entries admissions could reuse that the tier
        served), bytes in / out / loaded, load seconds and TTFT saved (estimate: the isolated
        prefill time of the tokens loaded, ``prefill_s(cached, new)``, less the load time)."""
        bb, wanted = self.tier_block_bytes, max(self.wanted_entries, 1)  # (bytes of the replica)
        saved = {"host": 0.0, "nvme": 0.0}
        memo: dict = {}
        for cached, n_host, n_nvme in self.loads:
            for t, n, before in (("host", n_host, cached), ("nvme", n_nvme, cached + n_host)):
                if n:
                    key = (before, n)
                    if key not in memo:
                        memo[key] = prefill_s(before, n)
                    saved[t] += memo[key]
        out = {"gpu": {"hit_entries": self.gpu_hit_entries, "hit_rate": self.gpu_hit_entries / wanted},
               "wanted_entries": self.wanted_entries, "load": self.load_mode}
        for t in TIERS:
            if t == "nvme" and not self.capacity["nvme"]:
                continue
            out[t] = {
                "capacity_bytes": self.capacity[t] * bb,
                "hit_entries": self.hit_entries[t], "hit_rate": self.hit_entries[t] / wanted,
                "bytes_stored": self.blocks_in[t] * bb, "bytes_evicted": self.blocks_out[t] * bb,
                "bytes_loaded": self.blocks_loaded[t] * bb, "bytes_held_at_end": self.used[t] * bb,
                "evictions": self.evictions[t], "load_time_s": self.load_s[t],
                "ttft_saved_est_s": saved[t] - self.load_s[t],
            }
        return out


#: per-tier counters that add up across replicas (bytes, entries, seconds)
SUMMED = ("capacity_bytes", "hit_entries", "bytes_stored", "bytes_evicted", "bytes_loaded", "bytes_held_at_end",
          "evictions", "load_time_s", "ttft_saved_est_s")


def merge_summaries(summaries) -> dict | None:
    """The tiers of N replicas as one (cluster summaries, ``kvsim plan``): counters summed (capacities
    too: the cluster's total), hit rates recomputed from the sums, ``hit_entries / wanted_entries``
    (a ratio of sums, not a mean of the replicas' rates, which would weigh a replica with 1 wanted
    entry like one with 10,000). ``replicas``: how many had tiers. None when none had them."""
    got = [s for s in summaries if s]
    if not got:
        return None
    wanted = sum(s["wanted_entries"] for s in got)
    gpu_hits = sum(s["gpu"]["hit_entries"] for s in got)
    out = {"gpu": {"hit_entries": gpu_hits, "hit_rate": gpu_hits / max(wanted, 1)}, "wanted_entries": wanted,
           "replicas": len(got)}
    if "load" in got[0]:
        out["load"] = got[0]["load"]  # (one engine configuration for every replica)
    for t in TIERS:
        parts = [s[t] for s in got if t in s]
        if parts:
            out[t] = {k: sum(p[k] for p in parts) for k in SUMMED}
            out[t]["hit_rate"] = out[t]["hit_entries"] / max(wanted, 1)
    return out


def check_offload(offload: KVOffload, system) -> None:
    """ConfigError when the host tier exceeds the usable host memory (``host_memory_bytes x
    HOST_MEMORY_UTILIZATION``, :mod:`kvsim.pricing.memory`; the host KV pool gets what it leaves)
    or the drive is unknown."""
    from kvsim.hardware import get
    from kvsim.pricing.memory import HOST_MEMORY_UTILIZATION

    usable = system.host_memory_bytes * HOST_MEMORY_UTILIZATION
    if offload.host_bytes > usable:
        raise ConfigError(f"--kv-offload host tier {offload.host_bytes / 2**30:.1f} GiB exceeds the usable host memory "
                          f"{usable / 2**30:.1f} GiB ({HOST_MEMORY_UTILIZATION:.0%} of the "
                          f"{system.host_memory_bytes / 2**30:.1f} GiB a replica has on its node)")
    get("storage", offload.nvme_drive)


def check_tier_blocks(offload: KVOffload, block_bytes: float) -> None:
    """ConfigError when a tier is on but smaller than one KV block (``block_bytes``: of every GPU of the
    replica; it would store nothing, silently)."""
    for name, nbytes in (("host", offload.host_bytes), ("nvme", offload.nvme_bytes)):
        if 0 < nbytes < block_bytes:
            raise ConfigError(f"--kv-offload {name}={nbytes:.0f} B holds no KV block: one block of this model and "
                              f"method is {block_bytes:.0f} B")


def make_tiers(offload: KVOffload | None, block_bytes: float, system, log_transfers: bool = False,
               gpus: int = 1) -> OffloadTiers | None:
    """The tiers of one replica on ``system`` (None when off): PCIe copies priced by the
    :class:`~kvsim.costmodel.roofline.Roofline` (``pcie_bytes`` plus one round trip, like a SWAP
    copy), NVMe transfers by :meth:`Roofline.storage_seconds` with the drive's spec."""
    if offload is None or not offload.enabled:
        return None
    from kvsim.costmodel.cost import Cost, Part
    from kvsim.costmodel.roofline import Roofline
    from kvsim.hardware import get

    check_offload(offload, system)
    check_tier_blocks(offload, block_bytes * gpus)
    roof = Roofline(system)
    drive = get("storage", offload.nvme_drive)

    memo: dict[float, float] = {}  # transfers are whole blocks: few distinct sizes

    def pcie_s(nbytes: float) -> float:
        if nbytes <= 0:
            return 0.0
        got = memo.get(nbytes)
        if got is None:
            part = Part("kv_offload", "pcie", device="pcie", pcie_bytes=float(nbytes), pcie_round_trips=1.0)
            got = memo[nbytes] = float(roof.seconds(Cost.of(part)))
        return got

    return OffloadTiers(
        offload, block_bytes, pcie_s,
        lambda n: Roofline.storage_seconds(n, drive.read_bw_bytes_per_s, drive.latency_s),
        lambda n: Roofline.storage_seconds(n, drive.write_bw_bytes_per_s, drive.latency_s),
        log_transfers=log_transfers, gpus=gpus)


def prefill_seconds(step_model, cached_tokens: int, new_tokens: int) -> float:
    """Seconds ``new_tokens`` prompt tokens after ``cached_tokens`` add to a step of their own:
    ``time_s(prefill of them) - time_s(an empty step)`` (the work a tier hit skips, priced alone)."""
    import numpy as np

    full = step_model.time_s(decode_ctx=np.zeros(0), prefill_new=np.array([float(new_tokens)]), prefill_cached=np.array([float(cached_tokens)]),
                             n_sampled_prefill=0)
    empty = step_model.time_s(decode_ctx=np.zeros(0), prefill_new=np.array([0.0]), prefill_cached=np.array([float(cached_tokens)]),
                              n_sampled_prefill=0)
    return float(full - empty)
