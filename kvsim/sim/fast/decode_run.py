"""Fast-forwarded decode runs: ``k`` consecutive steps in which every running sequence decodes
one token, priced in one :meth:`StepPricer.decode_run` call.

``k`` is the smallest of: steps until the next arrival is seen (found with ``cumsum`` of the
step times), steps until the first step that ends once a tier load has ended (``t_wake``: the
loaded request is admitted from the step after it), steps until the next block allocation would fail (or, while requests wait,
would evict cached KV of the queue head, its prefix hits or parked blocks: that may admit it;
:meth:`Scheduler.head_cache_keys` says which entries those are), and, while requests
wait, steps to the first finish. With nothing waiting the run goes on through finishes: finished
sequences drop out of the priced batch. The run ends exactly where the step-by-step engine
would have called the scheduler again; the property tests against
:mod:`kvsim.sim.reference` check that.

The runner reads the scheduler, the batch and the pools through their public methods, and
changes them only through those (``hold``/``allocate``/``finish``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from kvsim.sim.request import Request

_K_ELEMS = 1 << 18  # largest [B, k] block priced at once


class NextDecodeStep(NamedTuple):
    """Price of the decode part of the step right after a run (the run priced it already).

    Valid while the batch is unchanged: same ``version`` (no row joined or left) and ``step_no``.
    (NamedTuples here: named fields, created once per run on the hot path.)
    """

    version: int
    step_no: int
    dt_s: float  # decode-only time of that step (linear layers + overhead included)
    sums: np.ndarray | None  # its price columns (methods whose decode and prefill parts meet)

    def matches(self, batch) -> bool:
        return self.version == batch.version and self.step_no == batch.step_no


class DecodeRun(NamedTuple):
    """What a run did: its end, the steps it ran, the requests that finished in it; ``gauges``:
    ``(time, GPU blocks held, host blocks held, sequences running)`` from each step after which
    rows finished inside the run (the batch shrinks there; the run's start is recorded by its caller)."""

    t_end_s: float
    steps: int
    finished: list[Request]
    next_step: NextDecodeStep | None
    gauges: tuple = ()


class DecodeRunner:
    """Runs of pure decode steps for one replica (see module docstring).

    Args:
        sched: the :class:`kvsim.sim.scheduler.Scheduler` (its batch must be a DecodeBatch).
        pricer: the :class:`kvsim.sim.fast.pricer.StepPricer`.
        pass_prompts / pass_rids: the pricer needs each row's prompt / request id.
        through_finishes: runs may go on through finishes (the pricer handles finished rows
            and prefix caching is off).
        uses_host: the method holds host blocks (check the host pool too).
    """

    def __init__(self, sched, pricer, *, pass_prompts: bool, pass_rids: bool, through_finishes: bool,
                 uses_host: bool, tbt_sink) -> None:
        self.sched, self.kv, self.batch, self.pricer = sched, sched.kv, sched.batch, pricer
        self.pass_prompts, self.pass_rids = pass_prompts, pass_rids
        self.through_finishes, self.uses_host = through_finishes, uses_host
        self.tbt_sink = tbt_sink
        self.last_dt_s = 0.0  # the previous decode step's time: guesses how many steps reach an arrival

    def run(self, now: float, t_next_arrival: float, t_wake: float = math.inf) -> DecodeRun | None:
        """Fast-forward k pure decode steps from ``now``; None when not even one step fits in memory.
        The run ends with the first step that ends at or after ``t_wake`` (a tier load's end)."""
        s, kv, pricer, b = self.sched, self.kv, self.pricer, self.batch
        B, sn = b.n, b.step_no
        lo, hi = b.fin_range()
        k_fin = lo - sn
        t_a = t_next_arrival
        idle_queue = not s.waiting and not s.swapped
        cut = idle_queue and t_a < math.inf and B + len(s.prefilling) < s.max_num_seqs
        if t_wake < math.inf and (not cut or t_wake < t_a):  # stop for the load as for an arrival
            cut, t_a = True, t_wake
        through = idle_queue and self.through_finishes and b.uniform_at == now and (cut or t_a == math.inf)
        k = hi - sn if through else k_fin
        if B * k > _K_ELEMS:
            k = max(1, _K_ELEMS // B)
        if cut and self.last_dt_s > 0:
            kg = int((t_a - now) / self.last_dt_s * 1.05) + 3
            if kg < k:
                k = kg
        masked = k > k_fin
        left = b.left() if masked else None
        joint = pricer.joint_mixed
        if b.work is not None:  # the rows' work per step, summed as they joined
            got = pricer.summed_run(b.work.window(sn, k, b), B, masked)
        else:
            got = pricer.decode_run(b.ctx(), k, left, b.prompts() if self.pass_prompts else None,
                                    b.rids() if self.pass_rids else None)
        dt, ext, per_step = got.dt, got.extras, got.batch_sizes
        uses_host = self.uses_host
        held_g, held_h = b.held_blocks()
        lim_g = held_g + kv.gpu_allocatable
        eg = ext[:, 0]
        if not idle_queue and kv.cached_free:
            # evicting the blocked queue head's own cached KV (its prefix hits, its parked blocks) can
            # shorten its hit and let it in: the scheduler must decide the step that evicts one of
            # those (it retries the head after its decodes). Evicting other entries changes nothing
            # for the head (the blocks stay allocatable), so the run may go through those.
            plain = kv.gpu_allocatable - kv.cached_free
            need = int(eg.max()) - held_g - plain
            lim_g -= kv.cached_free - (kv.evictable_before(s.head_cache_keys(), need) if need > 0 else 0)
        lim_h = held_h + kv.host_free
        if masked:
            if eg.max() > lim_g or (uses_host and ext[:, 1].max() > lim_h):  # stop before the first step that does not fit
                k = int(((eg > lim_g) | (ext[:, 1] > lim_h)).argmax())
        elif eg[k - 1] > lim_g or (uses_host and ext[k - 1, 1] > lim_h):
            k = min(int(eg.searchsorted(lim_g, side="right")),
                    int(ext[:, 1].searchsorted(lim_h, side="right")))
        if k == 0:
            return None
        ends = dt[:k].cumsum()
        ends += now
        next_blocks = None
        next_step = None
        if cut and ends[k - 1] >= t_a:
            kc = 1 + int(ends.searchsorted(t_a))
            if kc < k:
                # the next step (admitting the arrival) decodes this batch too: keep its price and blocks
                next_blocks = (int(eg[kc]), int(ext[kc, 1]) if uses_host else 0)
                next_step = (float(dt[kc]), got.work[kc].copy() if joint else None)
                k = kc
        t_end = float(ends[k - 1])
        g, h = int(eg[k - 1]), (int(ext[k - 1, 1]) if uses_host else 0)
        if s.record_token_times:
            lf = b.left().tolist()
            for i, r in enumerate(b.requests()):
                r.token_times.extend(ends[: min(lf[i], k)].tolist())
        done: list = []
        weights = None
        seg_max = None
        gauges = ()
        if k > k_fin:  # rows finish inside the run
            lefts = left.tolist()
            rows = [i for i, x in enumerate(lefts) if x <= k]
            lf = [lefts[i] for i in rows]
            for i, x in zip(rows, lf):
                if x == k:  # it finishes in the last step: its blocks are still in ext[k - 1]
                    ge, he = b.blocks.request_blocks(int(b.ctx0[i]) + sn + k, int(b.prompt[i]), int(b.rid[i]))
                    g -= ge
                    h -= he
            kv.note_peak(int(eg[:k].max()) - held_g, int(ext[:k, 1].max()) - held_h if uses_host else 0)
            pm = np.maximum.accumulate(dt[:k])
            seg_max = float(pm[k - 1])
            lfa = np.array(lf)
            done = b.finish_within(rows, lf, ends[lfa - 1].tolist(), pm[lfa - 1].tolist())
            weights = per_step[:k]
            gauges = self._gauges_after_finishes(sorted(set(lf)), k, ends, eg, ext, per_step, held_g, held_h)
        ok = kv.allocate(g - held_g, h - held_h)
        assert ok
        b.set_held_blocks(g, h)
        b.decoded(now, dt, k, t_end, self.tbt_sink, weights, seg_max)
        self.last_dt_s = float(dt[k - 1])
        if next_blocks is not None:
            b.remember_next_token_blocks(*next_blocks, after_steps=0)
            next_step = NextDecodeStep(b.version, b.step_no, *next_step)
        if done:
            finished = s.finish(done, None)
        elif k == k_fin:
            finished = s.finish_decoded(t_end)
        else:
            finished = []
        return DecodeRun(t_end, k, finished, next_step, gauges)

    def _gauges_after_finishes(self, steps_left: list, k: int, ends, eg, ext, per_step, held_g: int,
                               held_h: int) -> tuple:
        """Gauges from the end of each step ``x - 1`` after which rows finished (``x`` in
        ``steps_left``, below ``k``): the blocks the rows of step ``x`` hold (GPU ``eg[x]``, host)
        beside the pools' other blocks, and its rows."""
        kv, host = self.kv, self.uses_host
        other_g, other_h = kv.gpu_used - held_g, kv.host_used - held_h
        return tuple((float(ends[x - 1]), other_g + int(eg[x]), other_h + (int(ext[x, 1]) if host else 0), int(per_step[x]))
                     for x in steps_left if x < k)
