"""The reference simulator: the executable specification of :func:`kvsim.sim.replica.simulate`
and :func:`kvsim.plan.cluster.simulate_cluster`. Plain Python, one object per request, one
loop iteration per engine step; speed does not matter here, readability does.

It shares only pure inputs with the fast simulator: the method (``kv_bytes``,
``effective_prompt_tokens``, ``split_prompt``), :func:`kvsim.pricing.memory.memory_budget`,
:class:`kvsim.pricing.step.StepModel` (every step priced with ``time_s``) and
:class:`kvsim.costmodel.roofline.Roofline` (the SWAP copy). Pools: :mod:`kvsim.sim.reference_pool`.

Each step: (1) requests whose arrival is at or before the step's start join the queue (a
step end and an arrival at the same instant: the arrival joins the next step); (2) the
scheduler decides, in vLLM's rules (see :mod:`kvsim.sim.scheduler`): chunked prefill with a
token budget (decodes first, then partial prefills, swapped-in, then waiting FCFS with
head-of-line blocking, no admission in a step that preempted) or whole-prompt (v0)
prefill-first; preemption of the most recently admitted running request (RECOMPUTE or
SWAP); (3) the step is priced; (4) every request is updated at the step's end.

Stated rules (where the module docstrings are silent, this follows the current code):

1. Block counts: a request with ``n`` tokens cached holds ``blocks(n, prompt)`` GPU blocks
   (own blocks plus the blocks of its prefix entries, counted as ``blocks(e * pb)`` for
   ``e`` entries). For a prefill chunk it takes ``max(0, blocks(after) - held)`` new blocks
   (it never gives blocks back mid-prompt); a decode step takes ``blocks(ctx + 1) - held``.
2. Requests finishing in the same step are released decodes first, in descending position
   of the decode set (an array: a leaving request's slot is taken by the last one, new
   ones are appended), then prompt completions in schedule order. A request's prefix references
   are released from its last entry to its first, so a cached prompt's tail is evicted before
   its head and what stays is still a prefix (vLLM v1 ``SingleTypeKVCacheManager.free``: "Free
   blocks in reverse order so that the tail blocks are freed first"; before 2026-12-02's
   thirteenth session kvsim released them in prompt order and evicted a prompt's head first,
   which made the rest of its cached entries unreachable).
3. A queue head that finds a prefix hit but does not fit keeps no reference (it looks up
   again next time), and its hits keep their place in the LRU order (vLLM touches hit blocks only
   once the allocation fits: a blocked request's retries do not make its hits recent). The prefix lookup covers at most ``(num_tokens - 1) // pb`` entries
   (one token is always computed), also when a RECOMPUTE victim is re-admitted; the
   cached-token count reported is that of the first admission. Entries are registered
   when a prompt chunk is scheduled, after its blocks are taken (vLLM v1 ``allocate_slots`` ->
   ``cache_blocks(request, num_computed_tokens + num_new_tokens)``): the leading
   ``min(len(hashes), min(computed + chunk, prompt) // pb)`` entries, so a request admitted
   after it in the same step (or later) hits them.
3b. Generated tokens: when a request finishes and its (distinct) prefix ids number more than
   ``ceil(prompt / pb)`` (the trace names its token stream, prompt then output), the entries from
   the last one it references up to ``min(len(hashes), computed // pb)`` (``computed`` = prompt +
   output - 1, every token but the last sampled one) are registered like prompt entries (its own
   blocks of them become the entries, or it shares an entry cached meanwhile), then every
   reference is released, last entry first (rule 2). With no more ids than that, nothing is added.
4. The analytic hit of the ``prefix`` method (``floor(split_prompt(P)[1])``, at most
   ``P - 1``), or of ``cacheblend`` on a trace with chunk ids (``floor((1 - r) x hit chunk
   tokens)`` from the chunk cache replayed in arrival order: :mod:`kvsim.sim.chunk_reuse`),
   counts as computed on every admission with nothing computed, when the request has no
   prefix ids for the cache; its KV is the request's own. With
   ``SimConfig.prompt_kv_resident`` (disaggregated decode) the hit is ``P - 1`` and prefix
   caching is off.
5. Prefix caching is on when enabled, the trace has prefix ids, and the method declares
   that an entry of ``pb`` prompt tokens is the same bytes in every request
   (``KVMethod.shares_prefix_blocks(pb)``: linear GPU-only residency that ignores the prompt
   length, prompts prefilled as written; Quest: whole pages).
6. SWAP: a decoding victim copies all its GPU blocks (``blocks(ctx)``) to the host pool if
   they fit there (dropping its prefix references), else it is recomputed; host blocks are bytes
   of the replica's host, so ``b`` blocks of each of ``tp`` GPUs take ``b * tp`` of them (vLLM: every
   TP worker swaps its own share); partially
   prefilled victims are always recomputed. Swap-in (FCFS, while budget and
   ``max_num_seqs`` allow and nothing was preempted) frees the host copy and needs
   ``blocks(ctx + 1)`` GPU blocks; the request decodes in the same step. Each direction
   adds one PCIe copy of its bytes to the step time. In whole-prompt mode swapped requests
   go before any prefill; waiting requests are admitted only when nothing is swapped.
7. An empty step (nothing could be scheduled) takes no time; after 3 consecutive empty
   steps with nothing running, the queue head (swapped first) is rejected as
   'unschedulable'.
8. Rejected at arrival: prompt + output over the model's context ('max_context'); KV at
   ``prompt + output - 1`` tokens over the GPU ('gpu_memory') or host ('host_memory') pool;
   with a watermark of ``W`` blocks > 0, also a prompt whose ``blocks(prompt, prompt)`` exceed
   ``num_gpu_blocks - W`` ('gpu_memory': vLLM v0 ``can_allocate`` returns NEVER).
10. Watermark (vLLM v0 ``BlockSpaceManager``): ``W = int(watermark * num_gpu_blocks)``, the
   watermark 0.01 without chunked prefill and 0 with it unless set (``SimConfig.watermark``).
   Admitting a waiting request (after referencing its prefix hits) and swapping one in succeed
   only if the GPU blocks left free or evictable afterwards are at least ``W``; decode steps
   and the later prompt chunks of running requests ignore it.
11. Offload tiers (``SimConfig.kv_offload``, with prefix caching on; :mod:`kvsim.sim.kv_tiers`): at
   admission, after the GPU hits, the next entries found in the host or NVMe tier whose copy
   ended at or before the step's start count as computed; their load takes one PCIe copy of their
   bytes, plus an NVMe read of the NVMe part. ``load=sync``: the load adds to the admitting step.
   ``load=async`` (the default, vLLM v1): the queue head with tier hits takes the GPU blocks of its
   computed tokens (watermark as an admission; if they do not fit it blocks the queue as an
   admission does), leaves the queue and loads: from the later of the step's start and the end of
   the previous load (one host-to-device queue); it takes no budget and no running slot, and
   admission goes on behind it. At the start of every step, the requests whose load ended at or
   before it return to the head of the waiting queue in load order, holding their KV and
   references, and are admitted like waiting requests (their next chunk's blocks with the
   watermark; one that does not fit blocks the queue and keeps its KV). When a step's blocks do not
   fit, the last waiting request holding loaded KV drops it (references released, nothing
   computed, counted as a preemption; it looks up again when admitted) before any running request
   is preempted (a running request that preempted itself for KV held by requests that cannot
   run would restart forever). A step with nothing to
   schedule while loads are in flight takes no time and is not counted by rule 7: the engine
   next steps when the first load ends or a request arrives, whichever is first. When a prompt
   completes, its registered entries (GPU hits included) that no tier holds are copied to the host tier in
   the background: FIFO on the device-to-host queue from the step's end (an entry of 0 blocks
   is stored too, 0 bytes); a host tier over capacity evicts least recently used entries,
   spilled to NVMe (FIFO on the NVMe write queue, from the later of the host copy's end and the
   queue) or dropped; NVMe evicts least recently used entries. Use (vLLM's ``touch``): every
   admission with prefix ids, after its load, uses the entries its lookup covered, and every
   store that copies something, after its evictions, the prompt's entries; both from the last entry to the
   first (a prompt's first entry is the most recent); an entry entering NVMe is its most recent
   use there. A request finishing with generated entries (rule 3b) stores all its registered
   entries the same way at the step's end (after the entries it registered, before its references
   are released).
12. Parked KV of RECOMPUTE victims (vLLM v1 prefix caching hashes every full block, prompt and
   generated tokens, and a freed block keeps its hash until evicted): with prefix caching enabled
   (``SimConfig.enable_prefix_caching``, whether or not the trace has prefix ids; not with
   ``prompt_kv_resident``) and a method whose blocks of ``bs = block_size_tokens`` tokens are the
   request's tokens as written (``shares_prefix_blocks(bs)``), a running request preempted by
   RECOMPUTE (not one with an analytic hit, rule 4) keeps the blocks of its whole ``bs``-token
   blocks after its prefix entries, ``blocks(floor(computed / bs) x bs) - blocks(e0 x pb)`` (at
   most its own blocks), as one unreferenced entry released just before its prefix references
   (the most recent). Eviction takes only the blocks it needs from it, leaving the rest in its
   place (its tail goes first: vLLM frees a request's blocks in reverse order). At its admission,
   if its lookup finds the same ``e0`` prefix entries and no tier hits, it counts as computed the
   longest multiple ``t`` of ``bs`` tokens after ``e0 x pb``, at most ``num_tokens - 1``, whose
   blocks ``blocks(t) - blocks(e0 x pb)`` the entry still has; it takes those blocks back as its
   own (the entry's other blocks become free) before the new blocks are allocated, and if those do
   not fit (rule 10) the entry is restored unchanged. Else the entry is dropped (its blocks free).
   A request rejected by rule 7 drops it too.
9. Cluster lockstep: before routing arrival ``i`` at ``t_i`` every replica processes its
   events strictly before ``t_i``; the load of a replica is its routed requests less those
   that finished or were rejected strictly before ``t_i``.
13. A method that holds the prompt's full KV until its prefill completes
   (``KVMethod.full_prompt_until_prefilled``: H2O, SnapKV and its kin but CAKE, RazorAttention, GEAR,
   Elastic Cache, MiKV, ZipCache):
   a prompt chunk that leaves ``n < num_tokens`` tokens computed takes ``ceil(n / block_size)`` GPU
   blocks in all (every token uncompressed, no host blocks), the chunk completing the prompt
   ``max(ceil(n / block_size), blocks(n, P))`` GPU and ``blocks(n, P)`` host blocks, and at that
   step's end the request keeps ``blocks(n, P)`` (the rest is freed). Rule 8 rejects a prompt whose
   ``max(ceil(P / block_size), blocks(P, P))`` exceeds the GPU pool. Not on a disaggregated decode
   instance (its prompt KV arrives compressed).
14. With ``SimConfig.reserve_full_prompt`` (vLLM's ``scheduler_reserve_full_isl``) a waiting request
   is admitted only if, besides its first chunk's, the blocks of all its tokens (``blocks(num_tokens)``
   beyond its referenced entries, its parked blocks among them, host blocks too) fit with the
   watermark left; only the chunk's blocks are taken.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.roofline import Roofline
from kvsim.errors import ConfigError
from kvsim.pricing.step import StepModel
from kvsim.sim.chunk_reuse import analytic_hits
from kvsim.sim.config import SimConfig
from kvsim.sim.reference_pool import RefGeometry, RefPool, RefTiers, distinct_prefix, effective_prompts
from kvsim.sim.reference_result import RefRequest, RefResult, collect_results
from kvsim.sim.reference_schedule import RefScheduling



class RefReplica(RefScheduling):
    """One engine; arrivals come through :meth:`arrive`, time through :meth:`run_before`."""

    def __init__(self, dep, method, trace, config, step_model=None) -> None:
        cfg = config
        dep = cfg.deployment_for(dep)
        self.cfg, self.trace = cfg, trace
        self.prompt = np.asarray(trace.prompt_tokens, dtype=np.int64)
        self.output = np.asarray(trace.output_tokens, dtype=np.int64)
        self.peff = effective_prompts(method, self.prompt)
        self.analytic = analytic_hits(method, trace, self.peff)  # rule 4
        total = self.peff + self.output
        fits_ctx = total <= dep.model.max_context_tokens
        step_tokens = cfg.max_num_batched_tokens
        if not cfg.chunked_prefill and fits_ctx.any():
            step_tokens = max(step_tokens, int(self.peff[fits_ctx].max()))
        self.geo = RefGeometry(dep, method, cfg, step_tokens)
        self.tp = dep.tp  # rule 6: a swapped block is in host memory once per GPU
        # rule 13: prompts hold their full KV until prefilled (not on a disaggregated decode instance)
        self.full_bs = cfg.block_size_tokens if method.full_prompt_until_prefilled and not cfg.prompt_kv_resident else 0
        self.fits_ctx = fits_ctx
        pb = trace.prefix_block_tokens if (cfg.enable_prefix_caching and trace.prefix_blocks is not None) else 0
        if (pb and not method.shares_prefix_blocks(pb)) or cfg.prompt_kv_resident:
            pb = 0
        self.pb = pb
        bs = cfg.block_size_tokens  # rule 12
        self.park_bs = bs if (cfg.enable_prefix_caching and not cfg.prompt_kv_resident
                              and method.shares_prefix_blocks(bs)) else 0
        self.pool = RefPool(self.geo, pb)
        self.wm = int(cfg.effective_watermark * self.geo.num_gpu_blocks) if cfg.effective_watermark else 0
        self.method = method
        self.step_model = step_model or StepModel(dep, method)
        self.roofline = Roofline(dep.system)
        self.tiers = None  # rule 11
        self.loading: list[RefRequest] = []  # rule 11, load=async: in load order
        self.h2d_free = 0.0
        off = cfg.kv_offload
        if off is not None and off.enabled:
            for name, nbytes in (("host", off.host_bytes), ("nvme", off.nvme_bytes)):
                if 0 < nbytes < self.geo.block_bytes * dep.tp:
                    raise ConfigError(f"--kv-offload {name}: smaller than one KV block (reference simulator)")
        if pb and off is not None and off.enabled:
            from kvsim.hardware import get

            drive = get("storage", off.nvme_drive)
            self.tiers = RefTiers(off, self.geo.block_bytes, self._pcie_s,
                                  lambda n: Roofline.storage_seconds(n, drive.read_bw_bytes_per_s, drive.latency_s),
                                  lambda n: Roofline.storage_seconds(n, drive.write_bw_bytes_per_s, drive.latency_s),
                                  gpus=dep.tp)
        self.reqs: dict[int, RefRequest] = {}
        self.pending: deque[int] = deque()  # routed, not yet arrived (trace order)
        self.waiting: deque[RefRequest] = deque()
        self.swapped: deque[RefRequest] = deque()
        self.decoding: list[RefRequest] = []  # the decode set (slot order, rule 2)
        self.prefilling: list[RefRequest] = []  # admission order
        self.async_loads = self.tiers is not None and off.load == "async"
        self.busy = False
        self.idle_wait = False  # only loads in flight: an arrival starts the next step
        self.free_at = 0.0  # start of the next step while busy
        self.admit_counter = 0
        self.empty_steps = 0
        self.steps = 0

    def _pcie_s(self, nbytes: float) -> float:
        """One synchronous PCIe copy of ``nbytes`` (SWAP copies and tier transfers)."""
        part = Part("kv_swap", "pcie", device="pcie", pcie_bytes=float(nbytes), pcie_round_trips=1.0)
        return float(self.roofline(Cost.of(part)).total_s)

    # ----- arrivals -----
    def arrive(self, i: int) -> None:
        self.pending.append(i)

    def _arrival(self, i: int, now: float) -> None:
        P, out = int(self.peff[i]), int(self.output[i])
        r = RefRequest(i, float(self.trace.arrival_s[i]), P, out)
        self.reqs[i] = r
        g_end, h_end = self.geo.blocks(P + out - 1, P)
        g_prompt = self.geo.blocks(P, P)[0]
        if self.full_bs:  # rule 13: the prompt's full KV before it is compressed
            g_prompt = max(g_prompt, -(-P // self.full_bs))
        never = (self.wm > 0 and g_prompt > self.geo.num_gpu_blocks - self.wm) or g_prompt > self.geo.num_gpu_blocks  # rule 8
        reason = ("max_context" if not self.fits_ctx[i] else "gpu_memory" if g_end > self.geo.num_gpu_blocks or never
                  else "host_memory" if h_end > self.geo.num_host_blocks else "")
        if reason:
            r.status, r.reject_reason, r.reject_s = "rejected", reason, now
            return
        r.analytic_cached = P - 1 if self.cfg.prompt_kv_resident else int(self.analytic[i])
        if self.pb:
            r.prefix_hashes = distinct_prefix(self.trace.prefix_blocks[i])
        r.status = "waiting"
        self.waiting.append(r)
        if not self.busy or self.idle_wait:
            self.busy, self.free_at, self.idle_wait = True, now, False

    # ----- time -----
    def run_before(self, limit: float) -> None:
        """Process arrivals and steps that start strictly before ``limit``."""
        while True:
            t_arr = float(self.trace.arrival_s[self.pending[0]]) if self.pending else math.inf
            t_step = self.free_at if self.busy else math.inf
            t = min(t_arr, t_step)
            if not t < limit:
                return
            if t_arr <= t_step:
                self._arrival(self.pending.popleft(), t_arr)
            else:
                self._step(t_step)

    def _has_work(self) -> bool:
        return bool(self.decoding or self.prefilling or self.waiting or self.swapped or self.loading)

    # ----- blocks -----
    def _held_gpu(self, r: RefRequest) -> int:
        return r.gpu_blocks + (self.geo.prefix_blocks(r.num_prefix_entries, self.pb, r.num_prompt_tokens)
                               if r.num_prefix_entries else 0)

    def _free(self, r: RefRequest) -> None:
        if r.num_prefix_entries:
            self.pool.release(r.prefix_hashes[: r.num_prefix_entries])
        r.gpu_blocks = r.host_blocks = r.num_prefix_entries = 0
        r.kv_loaded = False

    def _take(self, g: int, h: int, host_released: int = 0, keep_free: int = 0) -> bool:
        if not self.pool.fits(g, h, host_released, keep_free):
            return False
        self.pool.make_room(g)
        return True

    # ----- one step -----
    def _step(self, now: float) -> None:
        if not self._has_work():
            self.busy = False
            return
        self.idle_wait = False
        done = [r for r in self.loading if r.load_ready_s <= now]  # rule 11, load=async
        if done:
            self.loading = self.loading[len(done):]
            for r in reversed(done):
                r.status = "waiting"
                self.waiting.appendleft(r)
        plan = self._schedule(now)
        if not plan["decode"] and not plan["prefill"] and self.loading:
            self.idle_wait, self.free_at = True, max(now, self.loading[0].load_ready_s)
            return
        if not plan["decode"] and not plan["prefill"]:
            self.empty_steps += 1
            if self.empty_steps > 2 and not (self.decoding or self.prefilling):
                r = self.swapped.popleft() if self.swapped else self.waiting.popleft()
                self._free(r)
                self.pool.unpark(r.rid)  # rule 12
                r.status, r.reject_reason, r.reject_s = "rejected", "unschedulable", now
                self.empty_steps = 0
            self.free_at = now
            return
        self.empty_steps = 0
        dec, pf = plan["decode"], plan["prefill"]
        dt = float(self.step_model.time_s(
            decode_ctx=np.array([float(r.num_computed_tokens) for r in dec]),
            prefill_new=np.array([float(c) for _, c, _, _ in pf]),
            prefill_cached=np.array([float(k) for _, _, k, _ in pf]),
            n_sampled_prefill=sum(1 for p in pf if p[3]),
            decode_prompt=np.array([float(r.num_prompt_tokens) for r in dec])))
        bb = self.geo.block_bytes
        for blocks in (plan["swap_out"], plan["swap_in"]):
            if blocks > 0:
                dt += self._pcie_s(blocks * bb)
        if plan["load_host"] or plan["load_nvme"]:  # rule 11
            dt += self.tiers.load_seconds(plan["load_host"], plan["load_nvme"])
        for r, _, _, _ in pf:
            if math.isnan(r.scheduled_s):
                r.scheduled_s = now
        t_end = now + dt
        self._commit(plan, t_end)
        self.steps += 1
        self.free_at = t_end

    def _commit(self, plan: dict, t_end: float) -> None:
        for r in plan["decode"]:
            r.num_computed_tokens += 1
            self._emit(r, t_end)
        for r in sorted((r for r in plan["decode"] if r.num_output_tokens >= r.max_tokens),
                        key=self.decoding.index, reverse=True):
            self._remove_slot(r)
            self._finish(r, t_end)
        for r, c, _, completes in plan["prefill"]:
            r.num_computed_tokens += c
            if not completes:
                continue
            if r in self.prefilling:
                self.prefilling.remove(r)
            if self.full_bs:  # rule 13: compressed now; its other blocks are freed
                prefix = self._held_gpu(r) - r.gpu_blocks
                kept = self.geo.blocks(r.num_computed_tokens, r.num_prompt_tokens)[0] - prefix
                r.gpu_blocks = min(r.gpu_blocks, kept)
            # (its entries were cached when its chunks were scheduled: rule 3)
            if self.tiers is not None and self.pb and r.prefix_hashes:
                last = min(len(r.prefix_hashes), r.num_prompt_tokens // self.pb)
                if last:  # rule 11: write-through of every entry no tier holds
                    g = self.geo
                    self.tiers.store([(h, g.prefix_blocks(i, self.pb, r.num_prompt_tokens)
                                       - g.prefix_blocks(i - 1, self.pb, r.num_prompt_tokens))
                                      for i, h in enumerate(r.prefix_hashes[:last], start=1)], t_end)
            self._emit(r, t_end)
            if r.num_output_tokens >= r.max_tokens:
                self._finish(r, t_end)
            else:
                self.decoding.append(r)
        self.pool.note_peak()

    def _emit(self, r: RefRequest, t_end: float) -> None:
        """One sampled token of ``r`` at ``t_end``."""
        r.num_output_tokens += 1
        if math.isnan(r.first_token_s):
            r.first_token_s = t_end
        else:
            r.tbt_max_s = max(r.tbt_max_s, t_end - r.last_token_s)
        r.last_token_s = t_end
        r.token_times.append(t_end)

    def _finish(self, r: RefRequest, t_end: float) -> None:
        pb = self.pb
        if pb and len(r.prefix_hashes) > -(-r.num_prompt_tokens // pb):  # rule 3b
            last = min(len(r.prefix_hashes), r.num_computed_tokens // pb)
            if self._register_through(r, last):
                if self.tiers is not None:  # rule 11: its entries written through, generated ones too
                    g, P = self.geo, r.num_prompt_tokens
                    self.tiers.store([(h, g.prefix_blocks(i, pb, P) - g.prefix_blocks(i - 1, pb, P))
                                      for i, h in enumerate(r.prefix_hashes[:last], start=1)], t_end)
        self._free(r)
        r.status, r.finish_s = "finished", t_end

    # ----- loads and results -----
    def outstanding(self, before: float) -> int:
        n = 0
        for r in self.reqs.values():
            if r.finish_s < before or r.reject_s < before:
                continue
            n += 1
        return n + len(self.pending)


def simulate_reference(dep, method, trace, config=None, step_model=None) -> RefResult:
    """Replay ``trace`` on one replica (the specification of :func:`kvsim.sim.replica.simulate`);
    ``step_model`` replaces ``StepModel(dep, method)`` (anything with its ``time_s``)."""
    rep = RefReplica(dep, method, trace, config or SimConfig(), step_model)
    for i in range(len(trace)):
        rep.arrive(i)
    rep.run_before(math.inf)
    return collect_results([rep], np.zeros(len(trace), dtype=np.int64), len(trace))
