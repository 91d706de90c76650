"""The simulator's two hot paths, fast-forwarded with vectorized pricing (see :mod:`kvsim.sim.replica`).

* :func:`decode_run`: ``k`` consecutive steps in which every running sequence decodes one
  token, priced in one :meth:`StepPricer.decode_run` call. ``k`` is the smallest of: steps
  until the next arrival is seen (found with ``cumsum`` of the step times), steps until the
  next block allocation would fail, and, while requests wait, steps to the first finish.
  With nothing waiting the run goes on through finishes: finished sequences drop out of the
  priced batch.
* :func:`admit_step`: the step that admits newly arrived requests whose whole prompt fits
  the token budget while the batch decodes. It takes the same decisions as
  :meth:`Scheduler.schedule` (and defers to it otherwise), with less bookkeeping.

Both are functions of a :class:`~kvsim.sim.replica.ReplicaSim` (``self``) and return the end
time of what they ran, or None when the general scheduler must decide.
"""

from __future__ import annotations

import math

import numpy as np

from kvsim.sim.scheduler import RequestStatus

_K_ELEMS = 1 << 18  # largest [B, k] block priced at once


def admit_step(self, now: float) -> float | None:
    """The step that admits waiting requests whose whole prompt fits the token budget while
    every running sequence decodes (chunked prefill, nothing partial, swapped or preempted).
    None when the general scheduler must decide (chunk split, memory short, ...)."""
    s, b, kv = self.sched, self.sched.batch, self.kv
    B = b.n
    nd = self._next_dec
    if B:
        if b.uniform_at != now or nd is None or nd[0] != self.launches:
            return None
        g, h, dec_dt = nd[2] - b.gsum, nd[3] - b.hsum, nd[1]
    else:
        g = h = 0
        dec_dt = None
    budget = s.max_num_batched_tokens - B
    room = s.max_num_seqs - B
    adm = []
    g_dec, h_dec = g, h
    for r in s.waiting:
        if len(adm) >= room or budget <= 0:
            break
        comp = r.num_analytic_cached if r.num_computed_tokens == 0 else r.num_computed_tokens
        todo = r.num_tokens - comp
        if todo > budget:
            return None  # the scheduler would prefill a chunk of it
        gb, hb = s.blocks1(r.num_tokens, r.num_prompt_tokens, r.req_id)
        g += gb
        h += hb
        adm.append((r, todo, comp, gb, hb))
        budget -= todo
    if not adm or not kv.allocate(g, h):
        return None
    waiting = s.waiting
    s.blocked = len(waiting) > len(adm) and len(adm) >= room  # max_num_seqs persists
    b.gsum += g_dec
    b.hsum += h_dec
    for r, _, comp, gb, hb in adm:
        waiting.popleft()
        r.num_computed_tokens, r.gpu_blocks, r.host_blocks = comp, gb, hb
        if r.num_cached_tokens < 0:
            r.num_cached_tokens = comp
        if r.scheduled_s < 0:
            r.scheduled_s = now
        r.status = RequestStatus.RUNNING
        r.admit_seq = s._admit
        s._admit += 1
    if len(adm) == 1:
        new, cached = (adm[0][1],), (adm[0][2],)
    else:
        new, cached = tuple(a[1] for a in adm), tuple(a[2] for a in adm)
    dt = self.pricer.step_time(b.ctx() if dec_dt is None else B, new, cached, len(adm),
                               decode_dt=dec_dt, decode_prompt=b.prompts() if self._pa else None,
                               rid=b.rids() if self._rows else None)
    t_end = now + dt
    done = []
    if B:
        b.decoded1(now, t_end, self.tbt.add)
        if s.record_token_times:
            for r in b.reqs:
                r.token_times.append(t_end)
        if b._fin_lo is None or b._fin_lo == b.step_no:
            done = s.finish_decoded(t_end)
    for r, todo, _, _, _ in adm:
        r.num_computed_tokens += todo
        done += s.complete_prompt(r, t_end, self.tbt.add, 0)
    if done:
        self._finished(done)
    self._empty_launches = 0
    self.steps += 1
    return t_end

def decode_run(self, now: float) -> float | None:
    """Fast-forward k pure decode steps; None when not even one step fits in memory.

    With nothing waiting, the run goes on through finishes (finished sequences drop out
    of the priced batch); otherwise it stops at the first finish, which may unblock the
    queue.
    """
    s, kv, pricer = self.sched, self.kv, self.pricer
    b = s.batch
    B, sn = b.n, b.step_no
    lo, hi = b.fin_range()
    k_fin = lo - sn
    t_a = self._arr[self.next_arrival]
    idle_queue = not s.waiting and not s.swapped
    cut = idle_queue and t_a < math.inf and B + len(s.prefilling) < s.max_num_seqs
    through = idle_queue and self._through and b.uniform_at == now and (cut or t_a == math.inf)
    k = hi - sn if through else k_fin
    if B * k > _K_ELEMS:
        k = max(1, _K_ELEMS // B)
    if cut and self.last_dt > 0:
        kg = int((t_a - now) / self.last_dt) + 2  # last_dt: the previous decode step's time
        if kg < k:
            k = kg
    masked = k > k_fin
    left = b.left() if masked else None
    joint = pricer.joint_mixed
    got = pricer.decode_run(b.ctx(), k, left, b.prompts() if self._pa else None,
                            b.rids() if self._rows else None)
    dt, ext, per_step = got.dt, got.extras, got.batch_sizes
    uses_host = self._uses_host
    lim_g = b.gsum + kv.gpu_capacity - kv.gpu_private - kv.cached_used
    lim_h = b.hsum + kv.host_capacity - kv.host_used
    eg = ext[:, 0]
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
    if cut and ends[k - 1] >= t_a:
        kc = 1 + int(ends.searchsorted(t_a))
        if kc < k:
            # the next step (admitting the arrival) decodes this batch too: keep its price and blocks
            self._next_dec = (self.launches + 1, float(dt[kc]), int(eg[kc]), int(ext[kc, 1]) if uses_host else 0)
            if joint:
                self._next_dec += (got.work[kc].copy(),)
            k = kc
    t_end = float(ends[k - 1])
    g, h = int(eg[k - 1]), (int(ext[k - 1, 1]) if uses_host else 0)
    if s.record_token_times:
        lf = b.left().tolist()
        for i, r in enumerate(b.reqs):
            r.token_times.extend(ends[: min(lf[i], k)].tolist())
    done: list = []
    weights = None
    seg_max = None
    if k > k_fin:  # rows finish inside the run
        lefts = left.tolist()
        rows = [i for i, x in enumerate(lefts) if x <= k]
        lf = [lefts[i] for i in rows]
        blocks1, rid, pr = s.blocks1, b.rid, b.prompt
        for i, x in zip(rows, lf):
            if x == k:  # it finishes in the last step: its blocks are still in ext[k - 1]
                ge, he = blocks1(int(b.ctx0[i]) + sn + k, int(pr[i]), int(rid[i]))
                g -= ge
                h -= he
        kv.note_peak(int(eg[:k].max()) - b.gsum, int(ext[:k, 1].max()) - b.hsum if uses_host else 0)
        pm = np.maximum.accumulate(dt[:k])
        seg_max = float(pm[k - 1])
        lfa = np.array(lf)
        done = b.finish_within(rows, lf, ends[lfa - 1].tolist(), pm[lfa - 1].tolist())
        weights = per_step[:k]
    ok = kv.allocate(g - b.gsum, h - b.hsum)
    assert ok
    b.gsum, b.hsum = g, h
    b.decoded(now, dt, k, t_end, self.tbt.add, weights, seg_max)
    self.steps += k
    self.last_dt = float(dt[k - 1])
    if done:
        self._finished(s._finish(done, None))
    elif k == k_fin:
        self._finished(s.finish_decoded(t_end))
    return t_end
