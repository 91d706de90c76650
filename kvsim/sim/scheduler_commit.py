"""The half of :class:`kvsim.sim.scheduler.Scheduler` that applies a step once it has run:
tokens computed, prompts completed (their prefix entries written through to the offload tiers),
first tokens and decoded tokens emitted, finished requests' generated entries cached and
their blocks freed. The rules are the scheduler module's (its docstring states them); this mixin
holds no state of its own and reads the scheduler's (``batch``, ``kv``, ``prefilling``, ``tiers``,
``on_intervals``, ``record_token_times``, ``blocked``).
"""

from __future__ import annotations

from kvsim.sim.request import Request, RequestStatus
from kvsim.sim.step_io import SchedulerOutput


class StepCommit:
    """Mixin of :class:`kvsim.sim.scheduler.Scheduler`: the end of a step (see the module docstring)."""

    def commit(self, out: SchedulerOutput, t_start: float, t_end: float) -> list[Request]:
        """Apply a step that ran from ``t_start`` to ``t_end``; returns the requests that finished."""
        b, kv = self.batch, self.kv
        finished: list[Request] = []
        B = out.num_decode
        if B:
            assert b.n == B, "decode batch changed between schedule and commit"
            b.decoded1(t_start, t_end, self.on_intervals)
            if self.record_token_times:
                for r in b.requests():
                    r.token_times.append(t_end)
            if b.may_have_done_rows():
                finished += self.finish_decoded(t_end)
        for r, c, _, completes in out.prefill:
            r.num_computed_tokens += c
            if not completes:
                continue
            if self.prefilling and r in self.prefilling:
                self.prefilling.remove(r)
            # (its entries were cached when its chunks were scheduled); write-through of every entry no tier holds
            if self.tiers is not None and kv.pb and r.prefix_hashes:  # (kvsim.sim.kv_tiers)
                last = min(len(r.prefix_hashes), r.num_prompt_tokens // kv.pb)
                if last:
                    self.tiers.store([(h, kv.entry_blocks(i)) for i, h in enumerate(r.prefix_hashes[:last], start=1)],
                                     t_end)
                    self.blocked = False  # a store can evict the queue head's tier hits: fewer blocks to take
            finished += self.complete_prompt(r, t_end, self._prefix_blocks(r))
        return finished

    def complete_prompt(self, r: Request, t_end: float, prefix_blocks: int) -> list[Request]:
        """Emit the token sampled by the step that completes ``r``'s prompt (its first token, or
        the next one after a RECOMPUTE re-prefill); finish ``r`` or add it to the decode batch.
        Returns ``[r]`` if it finished, else ``[]``."""
        if self.full_prompt_block_tokens:  # the prompt's KV is compressed now: keep its compressed blocks only
            g = self.blocks.request_blocks(r.num_computed_tokens, r.num_prompt_tokens, r.req_id)[0] - prefix_blocks
            if r.gpu_blocks > g:
                self.kv.release(r.gpu_blocks - g, 0)
                r.gpu_blocks = g
                self.blocked = False  # blocks were freed: the queue head may fit
        r.num_output_tokens += 1
        if r.first_token_s < 0:
            r.first_token_s = t_end
        else:  # re-prefilled after RECOMPUTE preemption
            r.tbt_max_s = max(r.tbt_max_s, t_end - r.last_token_s)
            if self.on_intervals is not None:
                self.on_intervals(t_end - r.last_token_s, 1)
        r.last_token_s = t_end
        if self.record_token_times:
            r.token_times.append(t_end)
        if r.num_output_tokens >= r.max_tokens:
            return self.finish([r], t_end)
        self.batch.add(r, prefix_blocks)
        return []

    def finish_decoded(self, t_end: float) -> list[Request]:
        """Remove and finish the decode rows with no token left to generate."""
        b = self.batch
        done = b.done_rows()
        return self.finish(b.remove_rows(done), t_end) if done else []

    def register_generated(self, r: Request, t_end: float | None = None) -> int:
        """Cache the full entries of finishing ``r``'s generated tokens that its prefix ids name
        (:meth:`KVCacheManager.generated_entries`), beyond the prompt entries it references: its
        private blocks of them become cached entries it references (:meth:`free` then releases them,
        in order, with the rest). With offload tiers, all of its entries are then written through as
        a completed prompt's are, at ``t_end`` (vLLM offloads every full block, generated ones too).
        Returns the entries added."""
        kv = self.kv
        last = kv.generated_entries(len(r.prefix_hashes), r.num_prompt_tokens, r.max_tokens)
        added = self._register_through(r, last)
        if added and self.tiers is not None and t_end is not None:
            self.tiers.store([(h, kv.entry_blocks(i)) for i, h in enumerate(r.prefix_hashes[:last], start=1)], t_end)
        return added

    def finish(self, reqs: list[Request], t_end: float | None) -> list[Request]:
        """Free and mark finished (``t_end`` None: ``finish_s`` is already set)."""
        for r in reqs:
            if self.kv.pb and r.prefix_hashes:
                self.register_generated(r, t_end)
            if r.gpu_blocks or r.host_blocks or r.num_prefix_entries:
                self.free(r)
            else:
                self.blocked = False
            r.status = RequestStatus.FINISHED
            if t_end is not None:
                r.finish_s = t_end
        return reqs
