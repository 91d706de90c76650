"""Continuous batching in vLLM terms: requests, the scheduler's decisions, preemption.

Vocabulary (vLLM ``vllm/v1/core/sched/scheduler.py``, ``vllm/v1/request.py``): a
:class:`Request` has ``num_prompt_tokens``, ``num_computed_tokens`` (tokens in its KV
cache), ``num_output_tokens`` (generated so far; ``max_tokens`` is the target) and a
``status``. Each step the scheduler emits a :class:`SchedulerOutput` ``{req_id: num_tokens}``.

Policies:

* chunked prefill (default, vLLM v1 / Sarathi-Serve): a token budget of
  ``max_num_batched_tokens`` per step; every decoding sequence takes 1 token first, then
  partially prefilled requests, swapped-out requests (SWAP mode) and waiting requests (FCFS)
  take prompt chunks from what is left.
* no chunking (vLLM v0 default): a step either prefills whole prompts of waiting requests
  (their sum within the budget, except that the first prompt is admitted even when longer,
  as v0 admits prompts up to ``max_model_len``) or decodes every running sequence.
* preemption (vLLM ``PreemptionMode``; host blocks are bytes of the replica, so a SWAP victim's ``b`` GPU
  blocks take ``b * tp`` of them: every TP worker swaps its own share): when the blocks of a step do not fit, a waiting request
  holding KV loaded from the offload tiers (the last in the queue) drops it first (it is looked up
  again at admission); else the most recently admitted running request is preempted: RECOMPUTE frees its KV and puts it at
  the head of the waiting queue (it later re-prefills prompt + generated tokens, less what it
  finds still cached: see the parked KV below); SWAP
  copies its KV blocks to the host pool (and back later) over PCIe. Partially prefilled
  requests, and SWAP victims that do not fit the host pool, are recomputed.
* admission (``allocate_slots``): the KV blocks of the scheduled tokens must fit the pools;
  FCFS, the head of the queue blocks the rest (no skipping), no admissions in a step that
  preempted.
* offload tiers (``tiers``, :mod:`kvsim.sim.kv_tiers`; None: off): at admission the entries after the
  GPU prefix hits that the host / NVMe tiers hold (copy ended by ``now``) count as computed. With
  ``async_loads`` (vLLM v1's offloading connector: ``WAITING_FOR_REMOTE_KVS``) the request gets the
  blocks of its computed tokens and leaves the queue while its KV loads, the loads queued one after
  another on the host-to-device direction of PCIe from the step's start; it takes no token budget and
  no running slot, and the requests behind it may be admitted. From the first step that starts once
  its load has ended (:meth:`promote_loaded`) it is back at the head of the waiting queue, holding its
  blocks, and is admitted as any waiting request (FCFS; if its next chunk does not fit it blocks the
  queue, keeping its KV). Without ``async_loads`` the load is added to the admitting step
  (``SchedulerOutput.load_*_blocks``). A completed prompt's entries are written through to the
  tiers at the step's end.
* prefix entries (:meth:`Scheduler.cache_blocks`): the entries of a prompt chunk become cached
  entries when the chunk is scheduled, not when it has run (vLLM v1 ``allocate_slots`` caches the
  full blocks of ``num_computed_tokens + num_new_tokens``): a request admitted behind it in the
  same step finds them (its prefill reads that KV in the same forward pass, after it is written).
* generated tokens' KV (:meth:`Scheduler.register_generated`): a finishing request whose prefix ids
  go past its prompt's blocks (the trace names its token stream: tree search, multi-turn) turns
  the full entries of its generated tokens into cached entries before its blocks are freed (vLLM
  caches every full block, generated ones too, by the block-hash chain) and, with tiers, writes
  its entries through to them as a completed prompt does.
* a RECOMPUTE victim's KV stays cached (``park_block_tokens`` > 0: prefix caching on, a method whose
  blocks are the tokens as written; vLLM v1 hashes every full block, prompt and generated, and a freed
  block keeps its hash until evicted): its whole blocks after its prefix entries become one
  evictable entry (:meth:`KVCacheManager.park`), evicted from its tail as blocks are needed; when it
  is admitted again with the same prefix hits, the leading tokens whose blocks are still there
  count as computed (at most ``num_tokens - 1``) and it takes those blocks back before allocating the
  rest (all or nothing: on refusal the entry stays where it was). Reference rule 12.
* a method that holds the prompt's full KV until its prefill completes
  (``full_prompt_block_tokens`` > 0; H2O, SnapKV...): a prompt chunk takes the blocks of
  every computed token uncompressed (no host blocks yet), the chunk completing the prompt
  ``max(full, compressed)`` GPU blocks and the compressed state's host blocks, and when the prompt
  completes the request releases down to its compressed blocks.
* watermark (vLLM v0 ``BlockSpaceManager.can_allocate`` / ``_can_swap``): admitting a waiting
  request or swapping one in must leave ``watermark_blocks`` GPU blocks allocatable (free or
  evictable); decode steps and prompt chunks of running requests may use them.

A request's prompt is prefilled (maybe in chunks); the step that completes it samples the
first token; every later decode step (``ctx`` = tokens in KV before the step) samples one.
The scheduler holds the rules only. The decoding sequences live in a :class:`RunningBatch`
and block counts come from a :class:`~kvsim.sim.kv_cache.BlockCounter`, both given to it:
the fast layer (:mod:`kvsim.sim.fast`) passes array-backed ones; :mod:`kvsim.sim.reference`
is an independent plain implementation of the same rules that the property tests compare
against.
"""

from __future__ import annotations

from collections import deque

from kvsim.sim.kv_cache import BlockCounter, KVCacheManager
from kvsim.sim.request import PreemptionMode, Request, RequestStatus
from kvsim.sim.scheduler_commit import StepCommit
from kvsim.sim.scheduler_park import ParkedKV
from kvsim.sim.step_io import RunningBatch, SchedulerOutput

__all__ = ["PreemptionMode", "Request", "RequestStatus", "RunningBatch", "Scheduler", "SchedulerOutput"]


class Scheduler(StepCommit, ParkedKV):
    """FCFS continuous batching over a :class:`KVCacheManager` (see module docstring); what a step
    changes once it has run is :class:`kvsim.sim.scheduler_commit.StepCommit`.

    Args:
        kv: the block pools and prefix cache.
        batch: the decoding sequences (:class:`RunningBatch`).
        blocks: block geometry, ``request_blocks(n, prompt, req_id) -> (gpu, host)``.
        on_intervals: ``callback(intervals, weight)`` receiving every time between tokens.
        record_token_times: append every token's time to ``Request.token_times``.
        watermark_blocks: GPU blocks that admissions and swap-ins leave allocatable.
    """

    def __init__(self, kv: KVCacheManager, batch: RunningBatch, blocks: BlockCounter, *, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 8192, chunked_prefill: bool = True,
                 preemption_mode: PreemptionMode = PreemptionMode.RECOMPUTE, on_intervals=None,
                 record_token_times: bool = False, watermark_blocks: int = 0, park_block_tokens: int = 0,
                 tp: int = 1, full_prompt_block_tokens: int = 0, reserve_full_prompt: bool = False) -> None:
        self.kv = kv
        self.batch = batch
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.chunked_prefill = chunked_prefill
        self.preemption_mode = PreemptionMode(preemption_mode)
        self.on_intervals = on_intervals
        self.record_token_times = record_token_times
        self.watermark_blocks = int(watermark_blocks)
        self.park_block_tokens = int(park_block_tokens)  # > 0: a RECOMPUTE victim's full blocks stay cached
        self.tp = int(tp)  # a SWAP victim's block is copied from each of the replica's GPUs: tp host blocks
        # > 0: the method holds the prompt's full KV until its prefill completes (KVMethod.full_prompt_until_prefilled),
        # in blocks of this many tokens
        self.full_prompt_block_tokens = int(full_prompt_block_tokens)
        # admit only when the blocks of all of a request's tokens fit (SimConfig.reserve_full_prompt)
        self.reserve_full_prompt = bool(reserve_full_prompt)
        self.waiting: deque[Request] = deque()
        self.swapped: deque[Request] = deque()
        self.prefilling: list[Request] = []  # running, prompt not fully computed (admission order)
        self.blocked = False  # the queue head could not be admitted and nothing was freed since
        self.num_preemptions = 0
        self._next_admit_seq = 0
        self.tiers = None  # kvsim.sim.kv_tiers.OffloadTiers, or None (off)
        self.async_loads = False  # tier loads run beside the steps (see the module docstring)
        self.loading: list[Request] = []  # requests whose tier KV is loading (ready times ascending)
        self._h2d_free_s = 0.0  # when the host-to-device direction takes the next load
        self.now = 0.0  # start of the step being scheduled (tier entries are found once their copy ended)

    # ----- state -----
    @property
    def num_running(self) -> int:
        return self.batch.n + len(self.prefilling)

    @property
    def num_waiting(self) -> int:
        """Queued requests: waiting, swapped out, and loading KV from the tiers (vLLM counts its
        WAITING_FOR_REMOTE_KVS requests as waiting)."""
        return len(self.waiting) + len(self.swapped) + len(self.loading)

    def has_work(self) -> bool:
        return bool(self.batch.n or self.prefilling or self.waiting or self.swapped or self.loading)

    def next_load_ready_s(self) -> float:
        """When the first tier load in flight ends (inf: none)."""
        return self.loading[0].load_ready_s if self.loading else float("inf")

    def promote_loaded(self, now: float) -> None:
        """Requests whose tier load ended by ``now`` go back to the head of the waiting queue (in
        their admission order), where the next schedule admits them first."""
        n = 0
        while n < len(self.loading) and self.loading[n].load_ready_s <= now:
            n += 1
        if n:
            self.waiting.extendleft(reversed(self.loading[:n]))
            del self.loading[:n]
            self.blocked = False

    def add_request(self, r: Request) -> None:
        r.status = RequestStatus.WAITING
        self.waiting.append(r)

    def decode_only(self) -> bool:
        """Would the next steps only decode the current batch until something changes?"""
        return self.batch.n > 0 and not self.prefilling and (self.blocked or not (self.waiting or self.swapped))

    # ----- blocks -----
    def _prefix_blocks(self, r: Request) -> int:
        return self.kv.prefix_blocks(r.num_prefix_entries) if r.num_prefix_entries else 0

    def _need(self, r: Request, n_tokens: int) -> tuple[int, int]:
        """New GPU/host blocks for ``r`` to hold ``n_tokens`` tokens after a prompt chunk."""
        g, h = self.blocks.request_blocks(n_tokens, r.num_prompt_tokens, r.req_id)
        bs = self.full_prompt_block_tokens
        if bs:  # the full KV of every computed token until the prompt completes (then compressed: complete_prompt)
            full = -(-n_tokens // bs)
            g, h = (full, 0) if n_tokens < r.num_tokens else (max(g, full), h)
        return g - self._prefix_blocks(r) - r.gpu_blocks, h - r.host_blocks

    def allocate_slots(self, r: Request, num_new_tokens: int, keep_free: int = 0) -> int | None:
        """Blocks for ``num_new_tokens`` more tokens of ``r``: new GPU blocks, or None if they do not
        fit with ``keep_free`` GPU blocks left allocatable."""
        g, h = self._need(r, r.num_computed_tokens + num_new_tokens)
        g, h = max(g, 0), max(h, 0)
        if not self.kv.allocate(g, h, keep_free):
            return None
        r.gpu_blocks += g
        r.host_blocks += h
        return g

    def cache_blocks(self, r: Request, n_tokens: int) -> None:
        """Prefix entries of ``r``'s prompt covered by its first ``n_tokens`` tokens become cached
        entries as soon as the chunk that computes them is scheduled (vLLM v1 ``allocate_slots`` ->
        ``cache_blocks(request, num_computed_tokens + num_new_tokens)``): a request admitted later in
        the same step, or in any later one, hits them. Nothing without prefix caching or prefix ids."""
        kv = self.kv
        if kv.pb and r.prefix_hashes:
            self._register_through(r, min(len(r.prefix_hashes), min(n_tokens, r.num_prompt_tokens) // kv.pb))

    def _register_through(self, r: Request, last: int) -> int:
        """``r``'s entries after those it references, up to entry ``last``, become cached entries it
        references (its private blocks of them handed over); returns how many were added."""
        first = r.num_prefix_entries
        if last <= first:
            return 0
        r.gpu_blocks -= self.kv.register(r.prefix_hashes[first:last], first + 1)
        r.num_prefix_entries = last
        return last - first

    def free(self, r: Request) -> None:
        """Release every block of ``r`` (private, prefix references, swapped host copy)."""
        kv = self.kv
        kv.release(r.gpu_blocks, r.host_blocks)
        if r.num_prefix_entries:
            kv.release_prefix(r.prefix_hashes[: r.num_prefix_entries])
        r.gpu_blocks = r.host_blocks = r.num_prefix_entries = 0
        r.kv_loaded = False
        self.blocked = False

    # ----- preemption -----
    def _victim(self) -> tuple[int, Request | None]:
        """Most recently admitted running request: (batch row or -1, prefilling request or None)."""
        row, seq = self.batch.newest()
        p = max(self.prefilling, key=lambda r: r.admit_seq) if self.prefilling else None
        if p is not None and (row < 0 or p.admit_seq > seq):
            return -1, p
        return row, None

    def _preempt(self, out: SchedulerOutput) -> Request:
        for r in reversed(self.waiting):  # loaded KV of a waiting request goes first (it runs nothing)
            if r.kv_loaded:
                self.free(r)
                r.num_lost_tokens += r.num_computed_tokens
                r.num_computed_tokens = 0
                r.num_preemptions += 1
                self.num_preemptions += 1
                out.preempted.append(r)
                return r
        row, p = self._victim()
        if p is not None:
            self.prefilling.remove(p)
            r = p
        else:
            r = self.batch.remove(row)
        r.num_preemptions += 1
        self.num_preemptions += 1
        r.status = RequestStatus.PREEMPTED
        out.preempted.append(r)
        kv = self.kv
        if self.preemption_mode is PreemptionMode.SWAP and p is None:
            blocks = self.blocks.request_blocks(r.num_computed_tokens, r.num_prompt_tokens, r.req_id)[0]  # all its GPU KV
            host = blocks * self.tp  # (every GPU's share)
            if kv.host_free >= host:
                kv.release(r.gpu_blocks, 0)
                if r.num_prefix_entries:
                    kv.release_prefix(r.prefix_hashes[: r.num_prefix_entries])
                    r.num_prefix_entries = 0
                kv.allocate(0, host)
                r.host_blocks += host
                r.gpu_blocks, r.swapped = 0, True
                out.swap_out_blocks += blocks
                self.swapped.append(r)
                self.blocked = False
                return r
        if self.park_block_tokens and not r.num_analytic_cached:
            self._park(r)
        self.free(r)
        r.num_lost_tokens += r.num_computed_tokens
        r.num_computed_tokens = 0
        self.waiting.appendleft(r)
        return r

    # ----- one step -----
    def schedule(self) -> SchedulerOutput:
        """Decide the next step (allocating its blocks); see the module docstring."""
        out = SchedulerOutput()
        self.blocked = False
        if not self.chunked_prefill and not self.swapped and self.waiting:
            self._admit_waiting(out, self.max_num_batched_tokens)
            if out.prefill:
                return out
        budget = self._schedule_running(out)
        if not out.preempted:
            budget = self._swap_in(out, budget)
            if self.chunked_prefill and not self.swapped:
                self._admit_waiting(out, budget)
        out.num_decode, out._batch = self.batch.n, self.batch
        return out

    def _schedule_running(self, out: SchedulerOutput) -> int:
        """Blocks for every decoding sequence and the next chunk of each partial prefill."""
        b, kv = self.batch, self.kv
        while True:
            budget = self.max_num_batched_tokens - b.n
            if b.n:
                g1, h1 = b.blocks_after_next_token()
                g0, h0 = b.held_blocks()
                g, h = g1 - g0, h1 - h0
            else:
                g = h = 0
            chunks = []
            gd, hd = g, h  # the decode batch's part
            for r in self.prefilling:
                c = min(r.num_tokens - r.num_computed_tokens, budget)
                if c <= 0:
                    break
                dg, dh = self._need(r, r.num_computed_tokens + c)
                g, h = g + max(dg, 0), h + max(dh, 0)
                chunks.append((r, c, max(dg, 0), max(dh, 0)))
                budget -= c
            if kv.allocate(g, h):
                break
            self._preempt(out)
        if b.n:  # rows now hold blocks for ctx + 1 tokens (commit advances ctx)
            b.hold_more(gd, hd)
        for r, c, dg, dh in chunks:
            r.gpu_blocks += dg
            r.host_blocks += dh
            out.prefill.append((r, c, r.num_computed_tokens, r.num_computed_tokens + c == r.num_tokens))
            self.cache_blocks(r, r.num_computed_tokens + c)
        return budget

    def _swap_in(self, out: SchedulerOutput, budget: int) -> int:
        """Bring swapped requests back (FCFS); they decode in this step."""
        kv, b = self.kv, self.batch
        while self.swapped and budget > 0 and self.num_running < self.max_num_seqs:
            r = self.swapped[0]
            c, p = r.num_computed_tokens, r.num_prompt_tokens
            (blocks, h0) = self.blocks.request_blocks(c, p, r.req_id)
            (g1, h1) = self.blocks.request_blocks(c + 1, p, r.req_id)
            host = blocks * self.tp  # (every GPU's share)
            kv.release(0, host)
            if not kv.allocate(g1, h1 - h0, self.watermark_blocks):
                kv.allocate(0, host)
                break
            self.swapped.popleft()
            r.host_blocks -= host
            r.gpu_blocks, r.swapped, r.status = blocks, False, RequestStatus.RUNNING
            out.swap_in_blocks += blocks
            b.add(r, 0)
            b.hold_more(g1 - blocks, h1 - h0)  # held for the token decoded this step
            budget -= 1
        # memory, max_num_seqs, or a budget spent by decodes alone persist through decode steps
        self.blocked = bool(self.swapped) and not out.prefill
        return budget

    def _admit_waiting(self, out: SchedulerOutput, budget: int) -> None:
        kv = self.kv
        first = True
        running = self.num_running  # + requests admitted in this step (they join at its end)
        while self.waiting and running < self.max_num_seqs:
            if budget <= 0 and (self.chunked_prefill or not first):
                self.blocked = not out.prefill  # spent by decodes alone: persists
                return
            r = self.waiting[0]
            e = 0
            tier_hits = None
            if kv.pb and r.prefix_hashes and r.num_computed_tokens == 0:
                max_e = (r.num_tokens - 1) // kv.pb
                e = kv.lookup(r.prefix_hashes, max_e)
                r.num_prefix_entries = e  # (referenced only once admitted: _admit_blocks)
                if self.tiers is not None:
                    tier_hits = self.tiers.hits(r.prefix_hashes, e, max_e, self.now)
                r.num_computed_tokens = (e + len(tier_hits or ())) * kv.pb
            elif r.num_analytic_cached and r.num_computed_tokens == 0:
                r.num_computed_tokens = r.num_analytic_cached  # its KV is counted as the request's own
            park_b = 0
            if r.parked_entries >= 0:  # a RECOMPUTE victim: what of its KV is still cached
                park_t, park_b = (0, 0) if tier_hits else self._parked_hit(r, e)
                if park_b:
                    r.num_computed_tokens = park_t
                else:
                    self.unpark(r)
            loads = bool(tier_hits) and self.async_loads  # takes the blocks of its loaded KV, computes nothing yet
            todo = r.num_tokens - r.num_computed_tokens
            c = 0 if loads else min(todo, budget) if self.chunked_prefill else todo
            fits_budget = loads or self.chunked_prefill or first or c <= budget
            if not fits_budget or not self._admit_blocks(r, c, park_b, r.prefix_hashes[:e] if e else ()):
                if not r.kv_loaded:  # a waiting request holds no prefix references and no KV (unless loaded)
                    r.num_prefix_entries = 0  # (its hits were never referenced: the cache's LRU order is as it was)
                    r.num_computed_tokens = 0
                if fits_budget:
                    self.blocked = True  # memory only shrinks while the batch decodes (see DecodeRunner)
                return  # head-of-line blocking: FCFS admits no one behind it
            self.waiting.popleft()
            if r.num_preemptions > r.num_readmissions:  # admitted again after a preemption
                r.num_readmissions = r.num_preemptions
                r.num_refound_tokens += r.num_computed_tokens
            if tier_hits is not None:
                wanted = min(len(r.prefix_hashes), (r.num_tokens - 1) // kv.pb)
                g_host, g_nvme = self.tiers.load(r.prefix_hashes, e, tier_hits, wanted, kv.pb)
                if loads:
                    self._start_load(r, g_host, g_nvme)
                    continue
                out.load_host_blocks += g_host
                out.load_nvme_blocks += g_nvme
            if r.num_cached_tokens < 0:
                r.num_cached_tokens = r.num_computed_tokens
            r.kv_loaded = False
            r.status = RequestStatus.RUNNING
            r.admit_seq = self._next_admit_seq
            self._next_admit_seq += 1
            out.prefill.append((r, c, r.num_computed_tokens, c == todo))
            self.cache_blocks(r, r.num_computed_tokens + c)
            if c < todo:
                self.prefilling.append(r)
            running += 1
            budget -= c
            first = False
        self.blocked = bool(self.waiting)

    def _start_load(self, r: Request, g_host: int, g_nvme: int) -> None:
        """Queue the asynchronous load of ``r``'s tier hits (``g_host`` / ``g_nvme`` blocks, whose GPU
        blocks it holds): it starts when the step does or when the previous load ends, and lasts
        :meth:`OffloadTiers.load_seconds`."""
        start = max(self.now, self._h2d_free_s)
        r.load_ready_s = self._h2d_free_s = start + self.tiers.load_seconds(g_host, g_nvme)
        r.kv_loaded = True
        if r.num_cached_tokens < 0:
            r.num_cached_tokens = r.num_computed_tokens
        self.loading.append(r)
