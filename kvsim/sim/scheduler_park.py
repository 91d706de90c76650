"""The part of :class:`kvsim.sim.scheduler.Scheduler` that keeps a RECOMPUTE victim's KV cached
(vLLM v1 prefix caching: every full block keeps its hash when freed, until evicted, tail first) and
gives it back when the victim is admitted again; and which cached entries matter to the blocked
queue head (what the fast layer's decode runs may evict). The rules are the scheduler module's
(reference rule 12); this mixin holds no state of its own and reads the scheduler's (``kv``,
``blocks``, ``waiting``, ``batch``, ``tiers``, ``park_block_tokens``, ``watermark_blocks``,
``max_num_batched_tokens``, ``chunked_prefill``).
"""

from __future__ import annotations

from kvsim.sim.request import Request


class ParkedKV:
    """Mixin of :class:`kvsim.sim.scheduler.Scheduler`: parked KV of preempted requests."""

    def _park(self, r: Request) -> None:
        """Keep the full blocks of RECOMPUTE victim ``r`` after its prefix entries cached (vLLM v1:
        ``free`` keeps every full block's hash, and the re-admitted request finds them with
        ``get_computed_blocks`` unless they were evicted)."""
        bs = self.park_block_tokens
        full = r.num_computed_tokens // bs * bs
        g = self.blocks.request_blocks(full, r.num_prompt_tokens, r.req_id)[0] - self._prefix_blocks(r)
        blocks = min(max(g, 0), r.gpu_blocks)
        if blocks > 0:
            self.kv.park(r.req_id, blocks)
            r.gpu_blocks -= blocks
            r.parked_entries = r.num_prefix_entries

    def _parked_hit(self, r: Request, e: int) -> tuple[int, int]:
        """(tokens, blocks) of ``r``'s parked KV it finds again after ``e`` prefix entries: the most
        whole blocks of tokens from ``e * pb`` whose blocks are still cached (its tail is evicted
        first), at most ``(num_tokens - 1)`` tokens (one is always computed); (0, 0) if its prefix
        chain changed (``e`` is not what it held when parked)."""
        kv, bs = self.kv, self.park_block_tokens
        left = kv.parked_blocks(r.req_id)
        t0 = e * kv.pb
        if not left or e != r.parked_entries:
            return 0, 0
        p, rid = r.num_prompt_tokens, r.req_id
        g0 = self.blocks.request_blocks(t0, p, rid)[0]
        lo, hi = -(-t0 // bs), (r.num_tokens - 1) // bs  # candidate ends, in blocks of bs tokens
        if lo > hi or self.blocks.request_blocks(lo * bs, p, rid)[0] - g0 > left:
            return 0, 0
        while lo < hi:  # the largest end whose blocks are still parked (blocks grow with tokens)
            mid = (lo + hi + 1) // 2
            if self.blocks.request_blocks(mid * bs, p, rid)[0] - g0 <= left:
                lo = mid
            else:
                hi = mid - 1
        t = lo * bs
        return (t, self.blocks.request_blocks(t, p, rid)[0] - g0) if t > t0 else (0, 0)

    def _admit_blocks(self, r: Request, c: int, park_b: int, hits=()) -> bool:
        """Blocks for admitting ``r`` with a first chunk of ``c`` tokens (the watermark applies),
        its ``park_b`` parked blocks taken back first and its prefix ``hits`` referenced: all or
        nothing. The test comes first, with the blocks of the hits nobody references counted as
        taken, so a refusal leaves the cache as it was (vLLM ``allocate_slots`` touches the hit blocks
        only once the allocation fits: a blocked request's retries do not make its hits recent). With
        ``reserve_full_prompt`` the blocks of all its tokens must fit too (only the chunk's are taken:
        vLLM ``allocate_slots(..., full_sequence_must_fit=True)``)."""
        kv = self.kv
        # referencing the hits takes their unreferenced blocks out of the allocatable pool
        keep = self.watermark_blocks + (kv.unreferenced_blocks(hits) if hits else 0)
        if self.reserve_full_prompt:
            g, h = self._need(r, r.num_tokens)
            if not kv.fits(max(g, park_b, 0), max(h, 0), keep):
                return False
        if hits or park_b:  # (neither: allocate_slots' own test is this one)
            # taking the parked blocks back leaves as many fewer allocatable (the entry's other
            # blocks become free), so the test is that all the blocks it will hold fit
            g, h = self._need(r, r.num_computed_tokens + c)
            if not kv.fits(max(g, park_b, 0), max(h, 0), keep):
                return False
            kv.acquire(hits)
        if park_b:
            kv.unpark(r.req_id, park_b)
            r.gpu_blocks += park_b
            r.parked_entries = -1
        return self.allocate_slots(r, c, self.watermark_blocks) is not None

    def unpark(self, r: Request) -> None:
        """Drop what is left of ``r``'s parked KV (its blocks become free)."""
        self.kv.unpark(r.req_id)
        r.parked_entries = -1

    def head_cache_keys(self) -> set:
        """The cached entries whose eviction can change whether the waiting queue's head is admitted:
        its GPU prefix hits and its parked KV (others' evictions leave its chance unchanged)."""
        if not self.waiting:
            return set()
        r, kv = self.waiting[0], self.kv
        keys: set = set()
        if kv.pb and r.prefix_hashes and r.num_computed_tokens == 0:
            keys.update(r.prefix_hashes[: kv.lookup(r.prefix_hashes, (r.num_tokens - 1) // kv.pb)])
        if r.parked_entries >= 0 and kv.parked_blocks(r.req_id):  # (its entry may be evicted whole)
            keys.add((r.req_id,))
        if keys and self.tiers is None and all(kv.entries[h][0] == 0 for h in keys):
            # Called between pure decode steps (no prompt in flight, nothing finishing): with every
            # hit evictable, admitting r needs at least blocks(its first chunk with no hit) +
            # watermark allocatable blocks (a hit of T tokens needs blocks(T + chunk), its own blocks
            # leaving the allocatable pool as it takes them; T + chunk >= the chunk with no hit).
            # Decodes only lower that pool, so if it is short now no eviction lets r in. (Not with
            # offload tiers: an asynchronous load admits r with the blocks of its hits alone.)
            budget = self.max_num_batched_tokens - self.batch.n
            first = min(r.num_tokens, budget) if self.chunked_prefill else r.num_tokens
            if first <= 0 or (self.blocks.request_blocks(first, r.num_prompt_tokens, r.req_id)[0]
                              + self.watermark_blocks > kv.gpu_allocatable):
                return set()
        return keys
