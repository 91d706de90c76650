"""``simulate``: replay a trace through a vLLM-like engine and measure it.

Wiring: :class:`~kvsim.sim.engine.Engine` (events: request arrivals, step completions) +
:class:`~kvsim.sim.scheduler.Scheduler` (continuous batching, preemption, prefix caching) +
:class:`~kvsim.sim.kv_cache.KVCacheManager` (compression-aware block pools) + step prices from
:class:`~kvsim.pricing.step.StepModel` through the fast layer (:mod:`kvsim.sim.fast`: tabulated
prices that equal ``StepModel.time_s``, an array decode batch, fast-forwarded decode runs).
:mod:`kvsim.sim.reference` is the same engine written plainly; property tests compare the two.

Step semantics: the step that completes a prompt of ``P`` tokens samples the first token
(TTFT = end of that step - arrival); each decode step of a sequence with ``ctx`` tokens in
KV samples one more. A lone request therefore has TTFT = ``StepModel.prefill_timing(P)``
and TBT = ``StepModel.decode_timing([P])``: ``kvsim estimate`` at context ``P``, batch 1.
Arrivals at the same instant as a step's end join the next step. Inputs (effective prompts,
rejections at arrival, prefix caching) are prepared by :mod:`kvsim.sim.inputs`.

Fast-forward (:mod:`kvsim.sim.fast.decode_run`): while the batch only decodes, ``k`` steps are
priced in one vectorized call and all sequences advance ``k`` tokens at once; steps that end
before the next arrival chain without a round trip through the event heap. Per-request TBT
is kept as aggregates (mean from first/last token, max via a per-run log).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from kvsim.costmodel.deployment import Deployment
from kvsim.methods.base import KVMethod
from kvsim.pricing.step import StepModel
from kvsim.sim.config import SimConfig, SimResult
from kvsim.sim.engine import Engine
from kvsim.sim.fast import FastPath, NextDecodeStep
from kvsim.sim.inputs import REJECT_REASONS, prepare, rejection_note
from kvsim.sim.kv_cache import KVCacheManager
from kvsim.sim.kv_tiers import UNUSED_NOTE, check_tier_blocks, make_tiers, prefill_seconds
from kvsim.sim.metrics import IntervalSample, RequestRecords, Timeline, load_summary, summarize
from kvsim.sim.provenance import provenance
from kvsim.sim.request import Request, RequestStatus
from kvsim.sim.scheduler import Scheduler
from kvsim.traces.base import Trace

__all__ = ["ReplicaSim", "SimConfig", "SimResult", "simulate"]

GAUGES = ("kv_gpu_bytes", "kv_host_bytes", "running", "waiting")


@dataclass(frozen=True, slots=True)
class Arrival:
    index: int
    priority: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class StepDone:
    priority: ClassVar[int] = 1  # after arrivals at the same instant: they join the next step


_STEP = StepDone()


class ReplicaSim:
    """One engine replaying requests of ``trace``.

    Self-driven (:func:`simulate`): :meth:`run` feeds every request at its arrival time.
    Externally driven (a router, :mod:`kvsim.plan.cluster`): call :meth:`advance` up to just before
    each arrival, :meth:`arrive` for the requests routed here, :meth:`routed_up_to` once a
    request is routed anywhere (runs of decode steps stop at every trace arrival, which may
    come here), then :meth:`finish`. With every request routed to one replica the result
    is exactly :func:`simulate`'s.
    """

    def __init__(self, dep: Deployment, method: KVMethod, trace: Trace, config: SimConfig | None = None,
                 step_model=None) -> None:
        cfg = config or SimConfig()
        dep = cfg.deployment_for(dep)
        self.cfg, self.trace, self.N = cfg, trace, len(trace)
        self.inputs = inp = prepare(dep, method, trace, cfg)
        self.layout = lay = inp.layout
        self.arrival, self.prompt, self.output, self.peff = inp.arrival_s, inp.prompt, inp.output, inp.effective_prompt
        self.reject = inp.reject.copy()
        self.kv = KVCacheManager(lay, prefix_block_tokens=inp.prefix_block_tokens)
        self.step_model = step_model or StepModel(dep, method)
        self._dep_notes, self._max_context_tokens = dep.notes, dep.model.max_context_tokens
        # the fast layer's per-batch-size tables need rows only up to the sequences that can run at once:
        # at most the trace's requests (a max_num_seqs of 1e6 on a 100-request trace built 1e6 rows)
        batch_rows = max(1, min(cfg.max_num_seqs, self.N))
        self.fast = FastPath(self.step_model, lay, dep.system, batch_rows, self.peff,
                             np.where(self.reject == 0, self.output, 1), prefix_caching=bool(inp.prefix_block_tokens))
        self.tbt = IntervalSample()
        self.sched = Scheduler(self.kv, self.fast.new_batch(batch_rows), self.fast.blocks,
                               max_num_seqs=cfg.max_num_seqs, max_num_batched_tokens=cfg.max_num_batched_tokens,
                               chunked_prefill=cfg.chunked_prefill, preemption_mode=cfg.preemption_mode,
                               on_intervals=self.tbt.add, record_token_times=cfg.record_token_times,
                               watermark_blocks=inp.watermark_blocks, park_block_tokens=inp.park_block_tokens,
                               tp=dep.tp, full_prompt_block_tokens=inp.full_prompt_block_tokens,
                               reserve_full_prompt=cfg.reserve_full_prompt)
        if cfg.kv_offload is not None and cfg.kv_offload.enabled:  # a bad tier is an error even where unused
            check_tier_blocks(cfg.kv_offload, lay.block_bytes * dep.tp)
        self.tiers = make_tiers(cfg.kv_offload, lay.block_bytes, dep.system, gpus=dep.tp) if inp.prefix_block_tokens else None
        self.sched.tiers = self.tiers
        self.sched.async_loads = self.tiers is not None and cfg.kv_offload.load == "async"
        uses_host = bool(lay.host_blocks.any()) or method.uses_host
        self.decoder = self.fast.decode_runner(self.sched, uses_host, self.tbt.add)
        self._next_step: NextDecodeStep | None = None  # the decode price of the next step, if a run knew it
        self._hit = inp.analytic_hit
        # records
        N = self.N
        nan = np.full(N, np.nan)
        self.sched_s, self.first_s, self.finish_s, self.tmax_s = nan.copy(), nan.copy(), nan.copy(), nan.copy()
        self.cached = np.zeros(N, dtype=np.int64)
        self.preempt = np.zeros(N, dtype=np.int64)
        self.lost_found = np.zeros((N, 2), dtype=np.int64)  # KV tokens lost to preemptions, found again
        self.status = np.zeros(N, dtype=np.int8)
        self.token_times: list | None = [None] * N if cfg.record_token_times else None
        self.timeline = Timeline(GAUGES, max(trace.duration_s, 1e-3))
        self.engine = Engine()
        self.busy = False
        self.next_arrival = 0  # index of the next trace arrival not yet seen (processed or routed)
        self._self_driven = False
        self._n_routed = 0
        self._fin_heap: list[float] = []  # finish times not yet counted by outstanding()
        self._n_fin_seen = 0
        self._n_rej = 0
        self._arr = self.arrival.tolist() + [math.inf]
        self._peff, self._out = self.peff.tolist(), self.output.tolist()
        self.steps = self.launches = self.n_done = 0
        self._empty_launches = 0
        self._done: list[Request] = []
        self._swap = [0.0, 0.0, 0.0]  # bytes out, bytes in, seconds
        self._busy_s = 0.0  # seconds the GPU spent in steps
        self._wall0 = time.perf_counter()
        self._wall_next = self._wall0 + 0.2

    # ----- events -----
    def handle(self, now: float, ev):
        if ev is _STEP:
            return self.launch(now)
        i = ev.index
        follow = []
        if self._self_driven:
            self.next_arrival = j = i + 1
            if j < self.N:
                follow.append((self._arr[j], Arrival(j)))
        if self.reject[i]:
            self.status[i] = RequestStatus.REJECTED
            self._n_rej += 1
            self.fast.release(i)
            return follow
        r = Request(i, self._arr[i], self._peff[i], self._out[i])
        r.num_analytic_cached = self._hit[i]
        self.fast.ensure_rows(i)
        if self.kv.pb:
            r.prefix_hashes = _distinct(self.trace.prefix_blocks[i])
        if self.cfg.record_token_times:
            r.token_times = []
        self.sched.add_request(r)
        if not self.busy:
            self.busy = True
            follow.append((now, _STEP))
        return follow

    def launch(self, now: float):
        """Run steps from ``now`` until one ends at or after the next arrival; return its event.

        Steps that end before the next arrival follow each other with nothing in between,
        so they run here without a round trip through the engine's heap.
        """
        t_next = self._arr[self.next_arrival]
        while True:
            t_end = self._step(now)
            if t_end is None:
                self.busy = False
                return None
            if t_end >= t_next:
                return ((t_end, _STEP),)
            now = t_end

    def _step(self, now: float) -> float | None:
        """One engine step (or a fast-forwarded run of decode steps) from ``now``; its end time."""
        s = self.sched
        self.launches += 1
        if self.cfg.progress is not None:
            self._progress(now)
        if not s.has_work():
            self._gauges(now)  # (idle from now: zeros hold until the next launch)
            return None
        if s.loading:
            s.promote_loaded(now)
        if s.decode_only():
            self._gauges(now)  # the run's batch and its KV at the start (the KV grows through the run)
            run = self.decoder.run(now, self._arr[self.next_arrival], s.next_load_ready_s())
            if run is not None:
                self.steps += run.steps
                self._busy_s += run.t_end_s - now
                self._next_step = run.next_step
                for t, g, h, running in run.gauges:  # the batch shrinking inside the run
                    self.timeline.record(t, g, h, running, s.num_waiting)
                if run.finished:
                    self._finished(run.finished)
                return run.t_end_s
        s.now = now
        out = s.schedule()
        self._gauges(now)  # the state during this step: admitted requests running, their KV allocated
        if out.is_empty() and s.loading:  # only tier loads in flight: wait for the first, or an arrival
            ready = s.next_load_ready_s()  # (> now: the loads ended by now were promoted above)
            wake = min(ready, self._arr[self.next_arrival])
            return wake if wake > now else ready
        if out.is_empty():
            self._empty_launches += 1
            if self._empty_launches > 2 and not s.num_running:
                self._reject_head()
            return now
        self._empty_launches = 0
        dt = self.fast.step_time(out, s.batch, self._next_step)
        self._next_step = None
        if out.swap_out_blocks or out.swap_in_blocks:
            bb = self.layout.block_bytes
            ts = self.fast.swap_time(out.swap_out_blocks * bb) + self.fast.swap_time(out.swap_in_blocks * bb)
            self._swap[0] += out.swap_out_blocks * bb
            self._swap[1] += out.swap_in_blocks * bb
            self._swap[2] += ts
            dt += ts
        if out.load_host_blocks or out.load_nvme_blocks:
            dt += self.tiers.load_seconds(out.load_host_blocks, out.load_nvme_blocks)
        for p in out.prefill:
            if p[0].scheduled_s < 0:
                p[0].scheduled_s = now
        t_end = now + dt
        self._busy_s += dt
        done = s.commit(out, now, t_end)
        if done:
            self._finished(done)
        self.steps += 1
        return t_end

    # ----- bookkeeping -----
    def _finished(self, reqs: list[Request]) -> None:
        for r in reqs:
            self.fast.release(r.req_id)
        if not self._self_driven:
            for r in reqs:
                heapq.heappush(self._fin_heap, r.finish_s)
        self._done += reqs
        self.n_done += len(reqs)
        if len(self._done) >= 4096:
            self._flush_done()

    def _flush_done(self) -> None:
        """Write finished requests into the record arrays (vectorized, in chunks)."""
        d = self._done
        if not d:
            return
        i = np.array([r.req_id for r in d])
        self.status[i] = RequestStatus.FINISHED
        self.sched_s[i] = [r.scheduled_s for r in d]
        self.first_s[i] = [r.first_token_s for r in d]
        self.finish_s[i] = [r.finish_s for r in d]
        self.tmax_s[i] = [r.tbt_max_s for r in d]
        self.preempt[i] = [r.num_preemptions for r in d]
        self.lost_found[i] = [(r.num_lost_tokens, r.num_refound_tokens) for r in d]
        self.cached[i] = [r.num_cached_tokens for r in d]
        if self.token_times is not None:
            for r in d:
                self.token_times[r.req_id] = np.array(r.token_times)
        self._done = []

    def _reject_head(self) -> None:
        """Safety net: a queue head that cannot run even on an idle engine is rejected."""
        s = self.sched
        r = s.swapped.popleft() if s.swapped else s.waiting.popleft()
        s.free(r)
        s.unpark(r)
        self.status[r.req_id] = RequestStatus.REJECTED
        self.reject[r.req_id] = 4
        self._n_rej += 1
        self.fast.release(r.req_id)
        self._empty_launches = 0

    def _tier_note(self) -> str | None:
        off = self.cfg.kv_offload
        if off is not None and off.enabled and self.tiers is None:
            return UNUSED_NOTE
        tiers, g = self.tiers, self.kv.layout.gpu_blocks
        if tiers is not None and self.kv.pb < len(g):  # a tier below one prefix entry stores nothing (user audit: silently)
            entry = int(g[self.kv.pb])  # (blocks of one whole entry; entries of compressed methods vary a little)
            small = [t for t, cap in tiers.capacity.items() if 0 < cap < entry and tiers.blocks_in[t] == 0]
            if small:
                mib = entry * tiers.tier_block_bytes / 2**20
                return (f"KV offload {' and '.join(small)} tier{'s' if len(small) > 1 else ''} smaller than one prefix "
                        f"entry of this trace ({self.kv.pb:,} tokens, {mib:,.0f} MiB): nothing was stored there")
        return None

    def _gauges(self, now: float) -> None:
        """Record the gauges from ``now`` on (every launch: the state its step or run starts with,
        zeros when the replica goes idle); each timeline bucket reports the largest value held in it.
        Within a decode run the KV grows after the record (buckets show the run's start and, where
        rows finish inside it, the blocks of the step after each finish: ``DecodeRun.gauges``); the
        summary's ``peak_kv_*`` is exact."""
        kv, s = self.kv, self.sched
        self.timeline.record(now, kv.gpu_used, kv.host_used, s.num_running, s.num_waiting)

    def _progress(self, now: float) -> None:
        w = time.perf_counter()
        if w >= self._wall_next:
            self._wall_next = w + 0.2
            self.cfg.progress(self.n_done + self._n_rej, self.N, now)

    # ----- driving -----
    def run(self) -> SimResult:
        """Replay every request of the trace at its arrival time (self-driven)."""
        self._self_driven = True
        if self.N:
            self.engine.schedule(float(self.arrival[0]), Arrival(0))
        return self.finish()

    def arrive(self, i: int) -> None:
        """Request ``i`` is routed here; it arrives at its trace time (>= the last :meth:`advance`)."""
        self._n_routed += 1
        self.engine.schedule(float(self.arrival[i]), Arrival(i))

    def routed_up_to(self, n: int) -> None:
        """Requests ``< n`` have been routed (to this replica or another)."""
        self.next_arrival = n

    def advance(self, until_s: float) -> None:
        """Process every event at or before ``until_s``."""
        self.engine.run(self.handle, until_s)

    def outstanding(self, at_s: float) -> int:
        """Requests routed here that are not finished (or rejected) at ``at_s``."""
        heap = self._fin_heap
        while heap and heap[0] <= at_s:
            heapq.heappop(heap)
            self._n_fin_seen += 1
        return self._n_routed - self._n_fin_seen - self._n_rej

    def finish(self) -> SimResult:
        """Run to the end and summarize."""
        if not self._self_driven:
            self.next_arrival = self.N  # nothing more will be routed here
        self.engine.run(self.handle)
        self._flush_done()
        assert not self.sched.has_work(), "simulation ended with unfinished requests"
        return self._result()

    def _result(self) -> SimResult:
        rej = {int(i): REJECT_REASONS[int(self.reject[i])]
               for i in np.flatnonzero(self.status == RequestStatus.REJECTED)}
        rec = RequestRecords(
            arrival_s=self.arrival, scheduled_s=self.sched_s, first_token_s=self.first_s, finish_s=self.finish_s,
            tbt_max_s=self.tmax_s, prompt_tokens=self.prompt, effective_prompt_tokens=self.peff,
            output_tokens=self.output, cached_tokens=self.cached, preemptions=self.preempt, status=self.status,
            reject_reason=rej, token_times=self.token_times, preempted_kv_tokens=self.lost_found,
        )
        vals, wts = self.tbt.result()
        cfg = self.cfg
        summ = summarize(rec, vals, wts, slo_ttft_s=cfg.slo_ttft_s, slo_tpot_s=cfg.slo_tpot_s)
        lay, kv = self.layout, self.kv
        end = float(np.nanmax(self.finish_s)) if self.n_done else self.engine.now
        summ.update({
            "requests_failed_in_trace": int(self.trace.num_failed_dropped),
            "peak_kv_gpu_bytes": kv.peak_gpu_used * lay.block_bytes,
            "peak_kv_host_bytes": kv.peak_host_used * lay.block_bytes,
            "kv_gpu_capacity_bytes": lay.num_gpu_blocks * lay.block_bytes,
            "kv_host_capacity_bytes": lay.num_host_blocks * lay.block_bytes,
            "kv_block_bytes": lay.block_bytes,
            "num_gpu_blocks": lay.num_gpu_blocks,
            "kv_gpu_capacity_tokens": lay.num_gpu_blocks * lay.block_size_tokens,  # vLLM's "GPU KV cache size"
            "num_host_blocks": lay.num_host_blocks,
            "prefix_cache_evictions": kv.evictions,
            "swap_out_bytes": self._swap[0],
            "swap_in_bytes": self._swap[1],
            "swap_time_s": self._swap[2],
            "kv_offload": (self.tiers.summary(lambda cached, new: prefill_seconds(self.step_model, cached, new))
                           if self.tiers is not None else None),
            "itl_exact": self.tbt.exact,
            "load": load_summary(rec, self._busy_s, end, kv.peak_gpu_used / max(lay.num_gpu_blocks, 1)),
            "sim": {"steps": self.steps, "launches": self.launches, "events": self.engine.events_processed,
                    "pricing_mode": self.fast.pricer.mode, "decode_pricing": self.fast.pricer.decode_mode,
                    "wall_s": time.perf_counter() - self._wall0},
            "notes": [n for n in (self.trace.notice, self.inputs.prefix_note, self._tier_note(), *self._dep_notes,
                                  rejection_note(summ["rejected_reasons"], len(rec.status), self._max_context_tokens,
                                                 full_prompt=self.inputs.full_prompt_block_tokens > 0)) if n],
            "config": cfg.model_dump(mode="json"),
        })
        tl = self.timeline.result(end)
        tl["kv_gpu_bytes"] = tl["kv_gpu_bytes"] * lay.block_bytes  # recorded in blocks
        tl["kv_host_bytes"] = tl["kv_host_bytes"] * lay.block_bytes
        return SimResult(summ, rec, tl, vals, wts, lay)


def _distinct(hashes) -> tuple[int, ...]:
    """Leading hashes up to the first repeat (an entry is shared once per request)."""
    seen: set = set()
    out = []
    for h in hashes:
        if h in seen:
            break
        seen.add(h)
        out.append(h)
    return tuple(out)


def simulate(dep: Deployment, method: KVMethod, trace: Trace, config: SimConfig | None = None,
             step_model=None) -> SimResult:
    """Replay ``trace`` on ``dep`` with KV method ``method`` (see module docstring).

    ``step_model`` replaces ``StepModel(dep, method)`` for step prices (tests inject a fake
    with a ``time_s(decode_ctx, prefill_new, prefill_cached, n_sampled_prefill, decode_prompt)``).
    """
    cfg = config or SimConfig()
    dep = cfg.deployment_for(dep)  # (what ran: the summary and its provenance record it)
    sim = ReplicaSim(dep, method, trace, cfg, step_model=step_model)
    res = sim.run()
    res.summary.update({"hw": dep.system.name, "model": dep.model.name, "method": method.label(),
                        "trace": trace.name, "tp": dep.tp, "weight_dtype": dep.weight_dtype, "kv_dtype": method.dep.kv_dtype,
                        "provenance": provenance(dep, method, trace)})
    return res
