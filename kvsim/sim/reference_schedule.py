"""The reference simulator's scheduling decision: which requests decode, which prompt chunks run,
who is preempted, swapped in or admitted in one step (rules 2, 3, 6, 7, 10 and 11 of
:mod:`kvsim.sim.reference`, whose docstring states them).

:class:`RefScheduling` holds no state of its own: it is the decision half of
:class:`kvsim.sim.reference.RefReplica`, whose queues, pool and tiers it reads and changes
(``self.waiting``, ``self.swapped``, ``self.decoding``, ``self.prefilling``, ``self.pool``,
``self.tiers``); the step's plan is a dict that ``RefReplica._commit`` applies at the step's end.
"""

from __future__ import annotations


from kvsim.sim.reference_result import RefRequest


class RefScheduling:
    """Mixin of :class:`kvsim.sim.reference.RefReplica`: one step's plan (see the module docstring)."""

    def _schedule(self, now: float) -> dict:
        plan = {"decode": [], "prefill": [], "preempted": [], "swap_out": 0, "swap_in": 0, "load_host": 0,
                "load_nvme": 0}
        self.now = now
        cfg = self.cfg
        if not cfg.chunked_prefill and not self.swapped and self.waiting:
            self._admit(plan, cfg.max_num_batched_tokens)
            if plan["prefill"]:
                return plan
        budget = self._schedule_running(plan)
        if not plan["preempted"]:
            budget = self._swap_in(plan, budget)
            if cfg.chunked_prefill and not self.swapped:
                self._admit(plan, budget)
        plan["decode"] = list(self.decoding)
        return plan

    def _schedule_running(self, plan: dict) -> int:
        geo = self.geo
        while True:
            budget = self.cfg.max_num_batched_tokens - len(self.decoding)
            g = h = 0
            grow = []
            for r in self.decoding:
                g1, h1 = geo.blocks(r.num_computed_tokens + 1, r.num_prompt_tokens)
                dg, dh = g1 - self._held_gpu(r), h1 - r.host_blocks
                grow.append((r, dg, dh))
                g, h = g + dg, h + dh
            chunks = []
            for r in self.prefilling:
                c = min(r.num_tokens - r.num_computed_tokens, budget)
                if c <= 0:
                    break
                g1, h1 = self._chunk_blocks(r, r.num_computed_tokens + c)
                dg, dh = max(g1 - self._held_gpu(r), 0), max(h1 - r.host_blocks, 0)
                chunks.append((r, c, dg, dh))
                g, h = g + dg, h + dh
                budget -= c
            if self._take(g, h):
                break
            self._preempt(plan)
        for r, dg, dh in grow:
            r.gpu_blocks += dg
            r.host_blocks += dh
        for r, c, dg, dh in chunks:
            r.gpu_blocks += dg
            r.host_blocks += dh
            plan["prefill"].append((r, c, r.num_computed_tokens, r.num_computed_tokens + c == r.num_tokens))
        self.pool.note_peak()
        for r, c, _, _ in chunks:
            self._cache_entries(r, r.num_computed_tokens + c)
        return budget

    def _preempt(self, plan: dict) -> None:
        for r in reversed(self.waiting):  # rule 11: a waiting request's loaded KV goes first
            if r.kv_loaded:
                self._free(r)
                r.lost_tokens += r.num_computed_tokens
                r.num_computed_tokens = 0
                r.preemptions += 1
                plan["preempted"].append(r)
                return
        running = self.decoding + self.prefilling
        r = max(running, key=lambda x: x.admit_seq)
        r.preemptions += 1
        plan["preempted"].append(r)
        if r in self.prefilling:
            self.prefilling.remove(r)
        else:
            self._remove_slot(r)
            if self.cfg.preemption_mode.value == "swap":
                blocks = self.geo.blocks(r.num_computed_tokens, r.num_prompt_tokens)[0]
                host = blocks * self.tp  # rule 6: every GPU's share in host memory
                if self.pool.host_free() >= host:
                    if r.num_prefix_entries:
                        self.pool.release(r.prefix_hashes[: r.num_prefix_entries])
                    r.gpu_blocks = r.num_prefix_entries = 0
                    r.host_blocks += host
                    r.status = "swapped"
                    plan["swap_out"] += blocks
                    self.swapped.append(r)
                    self.pool.note_peak()
                    return
        if self.park_bs and not r.analytic_cached:  # rule 12: its full blocks after its prefix entries stay cached
            bs, P, e0 = self.park_bs, r.num_prompt_tokens, r.num_prefix_entries
            full = r.num_computed_tokens // bs * bs
            own = self.geo.blocks(full, P)[0] - (self.geo.prefix_blocks(e0, self.pb, P) if e0 else 0)
            keep = min(max(own, 0), r.gpu_blocks)
            if keep > 0:
                self.pool.park(r.rid, keep)
                r.gpu_blocks -= keep
                r.parked_entries = e0
        self._free(r)
        r.lost_tokens += r.num_computed_tokens
        r.num_computed_tokens = 0
        r.status = "waiting"
        self.waiting.appendleft(r)

    def _parked_hit(self, r: RefRequest, e: int) -> tuple[int, int]:
        """Rule 12: (tokens, blocks) of ``r``'s parked KV found again after ``e`` prefix entries."""
        left = self.pool.parked_blocks(r.rid)
        if not left or e != r.parked_entries:
            return 0, 0
        bs, P = self.park_bs, r.num_prompt_tokens
        t0 = e * self.pb
        g0 = self.geo.blocks(t0, P)[0]
        t = (r.num_tokens - 1) // bs * bs
        while t > t0:  # the longest run of whole blocks from t0 whose blocks are all still parked
            if self.geo.blocks(t, P)[0] - g0 <= left:
                return t, self.geo.blocks(t, P)[0] - g0
            t -= bs
        return 0, 0

    def _remove_slot(self, r: RefRequest) -> None:
        """Take ``r`` out of the decode set; the last request moves into its slot (rule 2)."""
        i = self.decoding.index(r)
        last = self.decoding.pop()
        if last is not r:
            self.decoding[i] = last

    def _swap_in(self, plan: dict, budget: int) -> int:
        geo = self.geo
        while self.swapped and budget > 0 and len(self.decoding) + len(self.prefilling) < self.cfg.max_num_seqs:
            r = self.swapped[0]
            c, p = r.num_computed_tokens, r.num_prompt_tokens
            (g0, h0), (g1, h1) = geo.blocks(c, p), geo.blocks(c + 1, p)
            if not self._take(g1, h1 - h0, host_released=g0 * self.tp, keep_free=self.wm):  # rule 10
                break
            self.swapped.popleft()
            r.host_blocks += (h1 - h0) - g0 * self.tp
            r.gpu_blocks = g1
            r.status = "running"
            self.decoding.append(r)
            self.pool.hold(r)
            plan["swap_in"] += g0
            budget -= 1
            self.pool.note_peak()
        return budget

    def _admit(self, plan: dict, budget: int) -> None:
        cfg, pool, pb = self.cfg, self.pool, self.pb
        first = True
        running = len(self.decoding) + len(self.prefilling)
        while self.waiting and running < cfg.max_num_seqs:
            if budget <= 0 and (cfg.chunked_prefill or not first):
                return
            r = self.waiting[0]
            if r.kv_loaded:  # rule 11, load=async: back from its load, holding its KV and references
                todo = r.num_tokens - r.num_computed_tokens
                c = min(todo, budget) if cfg.chunked_prefill else todo
                if not (cfg.chunked_prefill or first or c <= budget):
                    return
                g1, h1 = self._chunk_blocks(r, r.num_computed_tokens + c)
                dg, dh = max(g1 - self._held_gpu(r), 0), max(h1 - r.host_blocks, 0)
                if cfg.reserve_full_prompt:  # rule 14
                    gf, hf = self._chunk_blocks(r, r.num_tokens)
                    if not self.pool.fits(max(gf - self._held_gpu(r), 0), max(hf - r.host_blocks, 0), keep_free=self.wm):
                        return
                if not self._take(dg, dh, keep_free=self.wm):
                    return
                self.waiting.popleft()
                r.gpu_blocks += dg
                r.host_blocks += dh
                r.kv_loaded = False
                self._admitted(plan, r, c, r.num_computed_tokens, todo)
                running += 1
                budget -= c
                first = False
                continue
            e = 0
            computed = 0
            tier_hits: list = []
            if pb and r.prefix_hashes:
                e = pool.lookup(r.prefix_hashes, (r.num_tokens - 1) // pb)
                if self.tiers is not None:
                    tier_hits = self.tiers.hits(r.prefix_hashes, e, (r.num_tokens - 1) // pb, self.now)
                computed = (e + len(tier_hits)) * pb
            elif r.analytic_cached:
                computed = r.analytic_cached
            park = 0
            if r.parked_entries >= 0:  # rule 12
                t_hit, park = (0, 0) if tier_hits else self._parked_hit(r, e)
                if park:
                    computed = t_hit
                else:
                    pool.unpark(r.rid)
                    r.parked_entries = -1
            if tier_hits and self.async_loads:  # rule 11, load=async: the blocks of its computed tokens, then load
                g1, h1 = self.geo.blocks(computed, r.num_prompt_tokens)
                g = max(g1 - (self.geo.prefix_blocks(e, pb, r.num_prompt_tokens) if e else 0), 0)
                pool.acquire(r.prefix_hashes[:e])
                if not (self._fits_whole(r, e) and self._take(g, max(h1, 0), keep_free=self.wm)):
                    pool.unacquire(r.prefix_hashes[:e])
                    return
                self.waiting.popleft()
                self._readmitted(r, computed)
                got_host, got_nvme = self.tiers.load(r.prefix_hashes, e, tier_hits,
                                                     min(len(r.prefix_hashes), (r.num_tokens - 1) // pb))
                start = max(self.now, self.h2d_free)
                r.load_ready_s = self.h2d_free = start + self.tiers.load_seconds(got_host, got_nvme)
                r.num_prefix_entries, r.num_computed_tokens = e, computed
                r.gpu_blocks, r.host_blocks = g, max(h1, 0)
                pool.hold(r)
                pool.note_peak()
                if r.cached_tokens < 0:
                    r.cached_tokens = computed
                r.kv_loaded, r.status = True, "loading"
                self.loading.append(r)
                continue
            todo = r.num_tokens - computed
            c = min(todo, budget) if cfg.chunked_prefill else todo
            if not (cfg.chunked_prefill or first or c <= budget):
                return
            g1, h1 = self._chunk_blocks(r, computed + c)
            g = max(g1 - (self.geo.prefix_blocks(e, pb, r.num_prompt_tokens) if e else 0), 0)
            pool.acquire(r.prefix_hashes[:e])  # referenced entries are not evictable
            if not self._fits_whole(r, e, park):  # rule 14
                pool.unacquire(r.prefix_hashes[:e])
                return
            # (no peak here: referencing resident cached blocks moves no memory, and a refused
            # admission takes nothing; the peak is noted once the request holds its blocks)
            parked = pool.unpark(r.rid) if park else None  # rule 12: its parked blocks are its own again
            r.gpu_blocks = park
            pool.hold(r)
            if not self._take(g - park, max(h1, 0), keep_free=self.wm):  # rule 10
                pool.unacquire(r.prefix_hashes[:e])
                if parked is not None:
                    pool.restore(r.rid, parked)
                r.gpu_blocks = 0
                return
            r.parked_entries = -1
            self.waiting.popleft()
            self._readmitted(r, computed)
            if self.tiers is not None and pb and r.prefix_hashes:  # rule 11
                got_host, got_nvme = self.tiers.load(r.prefix_hashes, e, tier_hits,
                                                     min(len(r.prefix_hashes), (r.num_tokens - 1) // pb))
                plan["load_host"] += got_host
                plan["load_nvme"] += got_nvme
            r.num_prefix_entries, r.num_computed_tokens = e, computed
            r.gpu_blocks, r.host_blocks = g, max(h1, 0)
            pool.hold(r)
            if r.cached_tokens < 0:
                r.cached_tokens = computed
            self._admitted(plan, r, c, computed, todo)
            running += 1
            budget -= c
            first = False

    def _fits_whole(self, r: RefRequest, e: int, park: int = 0) -> bool:
        """Rule 14 (``SimConfig.reserve_full_prompt``): the blocks of all of ``r``'s tokens, beyond its
        ``e`` referenced entries, fit (its ``park`` parked blocks, still parked, among them)."""
        if not self.cfg.reserve_full_prompt:
            return True
        gf, hf = self._chunk_blocks(r, r.num_tokens)
        gf -= self.geo.prefix_blocks(e, self.pb, r.num_prompt_tokens) if e else 0
        return self.pool.fits(max(gf, park, 0), max(hf, 0), keep_free=self.wm)

    def _chunk_blocks(self, r: RefRequest, n: int) -> tuple[int, int]:
        """(GPU, host) blocks ``r`` holds once a prompt chunk leaves ``n`` tokens computed (rules 1, 13)."""
        g, h = self.geo.blocks(n, r.num_prompt_tokens)
        if self.full_bs:
            full = -(-n // self.full_bs)
            return (full, 0) if n < r.num_tokens else (max(g, full), h)
        return g, h

    @staticmethod
    def _readmitted(r: RefRequest, computed: int) -> None:
        """The first admission after a preemption: what it finds cached (``computed`` tokens) counts."""
        if r.preemptions > r.readmissions:
            r.readmissions = r.preemptions
            r.refound_tokens += computed

    def _admitted(self, plan: dict, r: RefRequest, c: int, computed: int, todo: int) -> None:
        """``r`` runs from this step: its first chunk ``c`` of the ``todo`` tokens after ``computed``."""
        self.pool.note_peak()
        r.status = "running"
        r.admit_seq = self.admit_counter
        self.admit_counter += 1
        plan["prefill"].append((r, c, computed, c == todo))
        if c < todo:
            self.prefilling.append(r)
        self._cache_entries(r, computed + c)

    def _cache_entries(self, r: RefRequest, n_tokens: int) -> None:
        """Rule 3: the prompt entries that ``r``'s first ``n_tokens`` tokens complete become cached
        entries now, when the chunk that computes them is scheduled."""
        if self.pb and r.prefix_hashes:
            self._register_through(r, min(len(r.prefix_hashes), min(n_tokens, r.num_prompt_tokens) // self.pb))

    def _register_through(self, r: RefRequest, last: int) -> bool:
        """Rules 3 and 3b: ``r``'s entries after those it references, up to entry ``last``, become cached
        entries it references (its own blocks of them handed over, or shared); True if any was added."""
        first = r.num_prefix_entries
        if last <= first:
            return False
        r.gpu_blocks -= self.pool.register(r.prefix_hashes[first:last], first + 1, r.num_prompt_tokens)
        r.num_prefix_entries = last
        return True

    # ----- after the step -----
