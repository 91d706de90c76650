"""``simulate``: replay a trace through a vLLM-like engine and measure it.

Wiring: :class:`~kvsim.sim.engine.Engine` (events: request arrivals, step completions) +
:class:`~kvsim.sim.scheduler.Scheduler` (continuous batching, preemption, prefix caching) +
:class:`~kvsim.sim.kv_cache.KVCacheManager` (compression-aware block pools) + step prices from
:class:`~kvsim.pricing.step.StepModel` (through :class:`~kvsim.sim.fast.pricer.StepPricer`, which
reproduces ``StepModel.time_s`` exactly and is checked against it when built).

Step semantics: the step that completes a prompt of ``P`` tokens samples the first token
(TTFT = end of that step - arrival); each decode step of a sequence with ``ctx`` tokens in
KV samples one more. A lone request therefore has TTFT = ``StepModel.prefill_timing(P)``
and TBT = ``StepModel.decode_timing([P])``: ``kvsim estimate`` at context ``P``, batch 1.
Prompts are the method's ``effective_prompt_tokens`` (rounded up to whole tokens).

Fast-forward (:mod:`kvsim.sim.fast.decode_run`): while the batch only decodes, consecutive steps
differ only by ``ctx + j``; ``k`` of them are priced in one vectorized call, ``cumsum``
finds the step after which the next arrival is seen, and all sequences advance ``k``
tokens at once (``k`` = min(steps until the next arrival is seen, until the next block
allocation fails, and, while requests wait, until the first finish)). Steps that end
before the next arrival chain without a round trip through the event heap. Per-request
TBT is kept as aggregates (mean from first/last token, max via a per-run log).

Requests that can never run are REJECTED at arrival: prompt + output beyond the model's
``max_context_tokens``, or KV at full length beyond the GPU or host pool on its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kvsim.costmodel.deployment import Deployment
from kvsim.sim.engine import Engine
from kvsim.sim.fast.decode_run import admit_step, decode_run
from kvsim.sim.kv_cache import KVCacheManager, KVLayout, kv_layout
from kvsim.methods.base import KVMethod
from kvsim.costmodel.roofline import Roofline
from kvsim.sim.metrics import COMPLETED, REJECTED, IntervalSample, RequestRecords, Timeline, summarize
from kvsim.sim.scheduler import PreemptionMode, Request, Scheduler
from kvsim.pricing.step import StepModel
from kvsim.sim.fast.pricer import StepPricer
from kvsim.traces.base import Trace

GAUGES = ("kv_gpu_bytes", "kv_host_bytes", "running", "waiting")


class SimConfig(BaseModel):
    """Engine settings (vLLM names and defaults)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    max_num_seqs: int = Field(256, ge=1, description="running sequences per step")
    max_num_batched_tokens: int = Field(8192, ge=1, description="token budget per step")
    chunked_prefill: bool = Field(True, description="Sarathi-style chunked prefill (vLLM v1); off: vLLM v0 prefill-first")
    preemption_mode: PreemptionMode = PreemptionMode.RECOMPUTE
    block_size_tokens: int = Field(16, ge=1, description="tokens of uncompressed KV per block")
    enable_prefix_caching: bool = Field(True, description="reuse cached prompt blocks (traces with prefix ids)")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="None: the deployment's (0.9)")
    seed: int = Field(0, ge=0, description="seeds the pricer's self-checks (the replay itself is deterministic)")
    record_token_times: bool = Field(False, description="keep every token's time per request (small runs)")
    slo_ttft_s: float | None = Field(None, gt=0)
    slo_tbt_s: float | None = Field(None, gt=0)
    progress: Callable[[int, int, float], None] | None = Field(None, exclude=True)


@dataclass
class SimResult:
    summary: dict
    records: RequestRecords
    timeline: dict[str, np.ndarray]
    tbt_values: np.ndarray
    tbt_weights: np.ndarray
    layout: KVLayout = field(repr=False)


@dataclass(frozen=True, slots=True)
class Arrival:
    index: int
    priority: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class StepDone:
    priority: ClassVar[int] = 1  # after arrivals at the same instant: they join the next step


_STEP = StepDone()


def effective_prompts(method: KVMethod, prompt: np.ndarray) -> np.ndarray:
    """Whole prompt tokens the model prefills (>= 1)."""
    p = np.asarray(prompt, dtype=np.float64)
    try:
        eff = np.broadcast_to(np.asarray(method.effective_prompt_tokens(p), dtype=np.float64), p.shape)
    except (TypeError, ValueError):
        eff = np.array([float(method.effective_prompt_tokens(float(x))) for x in p])
    return np.maximum(np.ceil(eff - 1e-9), 1).astype(np.int64)


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
        if cfg.gpu_memory_utilization is not None:
            dep = replace(dep, gpu_memory_utilization=cfg.gpu_memory_utilization)
        self.cfg, self.trace = cfg, trace
        N = len(trace)
        self.N = N
        self.arrival = np.asarray(trace.arrival_s, dtype=np.float64)
        self.prompt = np.asarray(trace.prompt_tokens, dtype=np.int64)
        self.output = np.asarray(trace.output_tokens, dtype=np.int64)
        self.peff = effective_prompts(method, self.prompt)
        total = self.peff + self.output
        max_ctx = dep.model.max_context_tokens
        fits_ctx = total <= max_ctx
        n_max = int(total[fits_ctx].max()) if fits_ctx.any() else 1
        step_tokens = cfg.max_num_batched_tokens
        if not cfg.chunked_prefill and fits_ctx.any():
            step_tokens = max(step_tokens, int(self.peff[fits_ctx].max()))
        self.layout = kv_layout(dep, method, n_max, block_size_tokens=cfg.block_size_tokens,
                                max_tokens_per_step=step_tokens, max_seqs=cfg.max_num_seqs)
        lay = self.layout
        pb = trace.prefix_block_tokens if (cfg.enable_prefix_caching and trace.prefix_blocks is not None) else 0
        self.prefix_note = None
        if pb and (method.uses_host or lay.prompt_aware or not np.array_equal(self.peff, self.prompt)
                   or not _linear_kv(method)):
            self.prefix_note = f"prefix caching off: method {method.name} does not keep a shareable per-token KV"
            pb = 0
        self.kv = KVCacheManager(lay, prefix_block_tokens=pb)
        self.sched = Scheduler(self.kv, max_num_seqs=cfg.max_num_seqs, max_num_batched_tokens=cfg.max_num_batched_tokens,
                               chunked_prefill=cfg.chunked_prefill, preemption_mode=cfg.preemption_mode)
        self.sched.record_token_times = cfg.record_token_times
        self.tbt = IntervalSample()
        self.sched.on_intervals = self.tbt.add
        # per-sequence blocks after a decode step at ctx (summed over the batch with the price)
        extra = np.stack([np.append(lay.gpu_blocks[1:], lay.gpu_blocks[-1]),
                          np.append(lay.host_blocks[1:], lay.host_blocks[-1])], axis=1).astype(np.float64)
        extra_fn = (lambda ctx, prompt: np.stack(lay.blocks(ctx + 1, prompt), axis=-1)) if lay.prompt_aware else None
        # rejection at arrival
        end = np.minimum(total - 1, n_max)
        g_end, h_end = lay.blocks(end, self.peff)
        self.reject = np.zeros(N, dtype=np.int8)  # 0 ok, 1 context, 2 gpu, 3 host
        self.reject[~fits_ctx] = 1
        self.reject[fits_ctx & (g_end > lay.num_gpu_blocks)] = 2
        self.reject[fits_ctx & (self.reject == 0) & (h_end > lay.num_host_blocks)] = 3
        ok = self.reject == 0
        self.pricer = StepPricer(step_model or StepModel(dep, method), n_max, cfg.max_num_seqs, extra=extra,
                                 seed=cfg.seed, extra_fn=extra_fn, roofline=Roofline(dep.system),
                                 prompt=self.peff, output=np.where(ok, self.output, 1))
        self._rows = self.pricer.decode_mode == "rows"
        self._through = self.pricer.masked_ok and not pb  # decode runs may go on through finishes
        # the common admission step has a lean path (same decisions as Scheduler.schedule)
        self._fast_admit = (cfg.chunked_prefill and not pb and self.pricer.mode == "fast"
                            and not self.pricer.joint_mixed)
        if self._rows and lay.prompt_aware:  # the request's rows hold its block counts
            pr = self.pricer

            def blocks1(n: int, p: int, rid: int) -> tuple[int, int]:
                got = pr.row_blocks(rid, n)
                return got if got is not None else lay.blocks1(n, p)

            self.sched.use_block_counts(blocks1, lambda ctx1, p, rids: pr.rows_blocks_sum(rids, ctx1))
        self._pa = lay.prompt_aware or self.pricer.prompt_aware or self.pricer.mode == "exact"
        # analytic prefix hit of the method (``prefix``): tokens of a fresh prompt already cached
        n_new, n_hit = method.split_prompt(self.peff.astype(np.float64))
        hit = np.floor(np.broadcast_to(np.asarray(n_hit, dtype=np.float64), self.peff.shape) + 1e-9).astype(np.int64)
        self._hit = np.minimum(hit, self.peff - 1).tolist()
        # records
        nan = np.full(N, np.nan)
        self.sched_s, self.first_s, self.finish_s, self.tmax_s = nan.copy(), nan.copy(), nan.copy(), nan.copy()
        self.cached = np.zeros(N, dtype=np.int64)
        self.preempt = np.zeros(N, dtype=np.int64)
        self.status = np.zeros(N, dtype=np.int8)
        self.token_times: list | None = [None] * N if cfg.record_token_times else None
        self.timeline = Timeline(GAUGES, max(trace.duration_s, 1e-3))
        self._tl_next = 0.0  # next time the gauges are sampled (one sample per timeline bucket)
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
        self.last_dt = 0.0
        self._empty_launches = 0
        self._next_dec: tuple | None = None
        self._done: list[Request] = []
        self._swap = [0.0, 0.0, 0.0]  # bytes out, bytes in, seconds
        self._uses_host = self.sched.uses_host
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
            self.status[i] = REJECTED
            self._n_rej += 1
            self.pricer.release(i)
            return follow
        r = Request(i, self._arr[i], self._peff[i], self._out[i])
        r.num_analytic_cached = self._hit[i]
        if self._rows:
            self.pricer.ensure_rows(i)
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
        if now >= self._tl_next:
            self._gauges(now)
        if self.cfg.progress is not None:
            self._progress(now)
        if not (s.batch.n or s.prefilling or s.waiting or s.swapped):
            return None
        if s.decode_only():
            t_end = decode_run(self, now)
            if t_end is not None:
                return t_end
        elif self._fast_admit and not s.prefilling and not s.swapped:
            t_end = admit_step(self, now)
            if t_end is not None:
                return t_end
        nd = self._next_dec
        hint = nd is not None and nd[0] == self.launches  # only arrivals happened since that run
        out = s.schedule(decode_blocks=nd[2:] if hint else None)
        if not out.num_decode and not out.prefill:
            self._empty_launches += 1
            if self._empty_launches > 2 and not s.num_running:
                self._reject_head()
            return now
        self._empty_launches = 0
        pf = out.prefill
        if len(pf) == 1:
            new, cached = (pf[0][1],), (pf[0][2],)
        else:
            new, cached = tuple(p[1] for p in pf), tuple(p[2] for p in pf)
        dec = nd[1] if (hint and not out.preempted and not out.swap_in_blocks) else None
        dt = self.pricer.step_time(out.decode_ctx, new, cached, out.n_sampled, decode_dt=dec,
                                   decode_prompt=s.batch.prompts() if self._pa else None,
                                   rid=s.batch.rids() if self._rows else None,
                                   decode_sums=nd[4] if (dec is not None and len(nd) > 4) else None)
        if out.swap_out_blocks or out.swap_in_blocks:
            bb = self.layout.block_bytes
            ts = self.pricer.swap_time(out.swap_out_blocks * bb) + self.pricer.swap_time(out.swap_in_blocks * bb)
            self._swap[0] += out.swap_out_blocks * bb
            self._swap[1] += out.swap_in_blocks * bb
            self._swap[2] += ts
            dt += ts
        for p in pf:
            if p[0].scheduled_s < 0:
                p[0].scheduled_s = now
        t_end = now + dt
        done = s.commit(out, now, t_end)
        if done:
            self._finished(done)
        self.steps += 1
        return t_end

    # ----- bookkeeping -----
    def _finished(self, reqs: list[Request]) -> None:
        if self._rows:
            for r in reqs:
                self.pricer.release(r.req_id)
        if not self._self_driven:
            import heapq

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
        self.status[i] = COMPLETED
        self.sched_s[i] = [r.scheduled_s for r in d]
        self.first_s[i] = [r.first_token_s for r in d]
        self.finish_s[i] = [r.finish_s for r in d]
        self.tmax_s[i] = [r.tbt_max_s for r in d]
        self.preempt[i] = [r.num_preemptions for r in d]
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
        self.status[r.req_id] = REJECTED
        self.reject[r.req_id] = 4
        self._n_rej += 1
        self.pricer.release(r.req_id)
        self._empty_launches = 0

    def _gauges(self, now: float) -> None:
        """Sample the gauges (first step of each timeline bucket; peaks are tracked exactly elsewhere)."""
        kv, s, tl = self.kv, self.sched, self.timeline
        tl.record(now, kv.gpu_private + kv.cached_used, kv.host_used, s.batch.n + len(s.prefilling),
                  len(s.waiting) + len(s.swapped))
        self._tl_next = (int(now / tl.width_s) + 1) * tl.width_s

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
        import heapq

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
        reasons = {1: "max_context", 2: "gpu_memory", 3: "host_memory", 4: "unschedulable"}
        rej = {int(i): reasons[int(self.reject[i])] for i in np.flatnonzero(self.status == REJECTED)}
        rec = RequestRecords(
            arrival_s=self.arrival, scheduled_s=self.sched_s, first_token_s=self.first_s, finish_s=self.finish_s,
            tbt_max_s=self.tmax_s, prompt_tokens=self.prompt, effective_prompt_tokens=self.peff,
            output_tokens=self.output, cached_tokens=self.cached, preemptions=self.preempt, status=self.status,
            reject_reason=rej, token_times=self.token_times,
        )
        vals, wts = self.tbt.result()
        cfg = self.cfg
        summ = summarize(rec, vals, wts, slo_ttft_s=cfg.slo_ttft_s, slo_tbt_s=cfg.slo_tbt_s)
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
            "num_host_blocks": lay.num_host_blocks,
            "prefix_cache_evictions": kv.evictions,
            "swap_out_bytes": self._swap[0],
            "swap_in_bytes": self._swap[1],
            "swap_time_s": self._swap[2],
            "tbt_exact": self.tbt.exact,
            "sim": {"steps": self.steps, "launches": self.launches, "events": self.engine.events_processed,
                    "pricing_mode": self.pricer.mode, "decode_pricing": self.pricer.decode_mode,
                    "wall_s": time.perf_counter() - self._wall0},
            "notes": [n for n in (self.trace.notice, self.prefix_note) if n],
            "config": cfg.model_dump(mode="json"),
        })
        tl = self.timeline.result(end)
        tl["kv_gpu_bytes"] = tl["kv_gpu_bytes"] * lay.block_bytes  # recorded in blocks
        tl["kv_host_bytes"] = tl["kv_host_bytes"] * lay.block_bytes
        return SimResult(summ, rec, tl, vals, wts, lay)


def _linear_kv(method: KVMethod) -> bool:
    """Is the GPU residency proportional to tokens (so a prompt block's KV can be shared)?"""
    n = np.array([512.0, 1024.0, 8192.0])
    g = np.asarray(method.kv_bytes(n).gpu_bytes, dtype=np.float64) * np.ones(3)
    return bool(np.allclose(g / n, g[0] / n[0], rtol=1e-9))


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
    sim = ReplicaSim(dep, method, trace, config or SimConfig(), step_model=step_model)
    res = sim.run()
    res.summary.update({"hw": dep.system.name, "model": dep.model.name, "method": method.label(),
                        "trace": trace.name, "tp": dep.tp, "weight_dtype": dep.weight_dtype, "kv_dtype": dep.kv_dtype})
    return res
