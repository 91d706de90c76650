"""The running sequences in their decode phase, as arrays, advanced in O(1) per run of steps.

Every row takes one token in each decode step of the batch, so per-row counters are stored
relative to the batch's step counter ``step_no``: ``ctx = ctx0 + step_no`` (tokens in KV),
``left = fin - step_no`` (tokens still to generate). Advancing the batch ``k`` steps is
``step_no += k``, with no array work.

Time between tokens: when every row's last token is at the start of a step (the common
case: the batch decoded in the previous step, or rows joined at its end) the step's interval
is the same for all rows. Each run of such steps appends the largest interval it saw to a
segment log; a row's largest TBT is ``max(tmax, log[jseg:])`` over the segments it lived
through, computed when it leaves. Steps where rows differ (after prefill-only steps of
non-chunked scheduling, swap-in) update ``tmax`` per row.
"""

from __future__ import annotations

import math

import numpy as np

# columns of the integer row table
CTX0, FIN, OFF, SEQ, JSTEP, JSEG, PROMPT, RID = range(8)
# columns of the float row table
LAST, TMAX = range(2)


class DecodeBatch:
    """Decoding rows (capacity ``cap``): the :class:`kvsim.sim.scheduler.RunningBatch` of the fast layer.

    Blocks: the rows hold ``held_blocks()`` GPU/host blocks (for ``ctx`` tokens between
    steps, ``ctx + 1`` once a step has allocated); private GPU blocks exclude the blocks of
    referenced prefix entries (``off``). ``blocks``: a :class:`kvsim.sim.kv_cache.BlockCounter`.

    Row columns: ``ctx0``, ``fin`` (see module docstring), ``off``, ``seq`` (admission order:
    preemption picks the largest), ``jstep``/``jseg`` (step and segment at join), ``prompt``
    (prompt tokens), ``last`` (time of the row's last token when it joined), ``tmax``
    (largest TBT outside the log). ``work``: a :class:`kvsim.sim.fast.work_ledger.WorkLedger`
    told of every row that joins or leaves before its end (None: runs gather their rows).
    """

    def __init__(self, cap: int, blocks, work=None) -> None:
        self.n = 0
        self.work = work  # a WorkLedger (the rows' summed decode work per coming step), or None
        self.reqs: list = []
        self.I = np.zeros((cap, 8), dtype=np.int64)
        self.F = np.zeros((cap, 2))
        self.ctx0, self.fin, self.off, self.seq, self.jstep, self.jseg, self.prompt, self.rid = (
            self.I[:, j] for j in range(8))
        self.last, self.tmax = self.F[:, LAST], self.F[:, TMAX]
        self.blocks = blocks
        self.gsum = self.hsum = 0  # blocks held by the rows (GPU, host)
        self.step_no = 0
        self.version = 0  # changes whenever rows join or leave
        self.t_last = -math.inf  # end of the batch's last decode step
        self.uniform_at: float | None = None  # every row's last token is at this time
        self.seg = np.zeros(1024)
        self.nseg = 0
        self._fin_lo: int | None = None  # cached min / max of fin (None: recompute)
        self._fin_hi: int | None = None
        self._next_blocks: tuple[int, int, int, int] | None = None  # (version, step_no, gpu, host)

    # ----- the RunningBatch interface -----
    def ctx(self) -> np.ndarray:
        """[n] tokens in KV per row."""
        return self.ctx0[: self.n] + self.step_no

    def prompts(self) -> np.ndarray:
        """[n] prompt tokens per row."""
        return self.prompt[: self.n]

    def rids(self) -> np.ndarray:
        """[n] request ids per row."""
        return self.rid[: self.n]

    def left(self) -> np.ndarray:
        """[n] tokens still to generate per row."""
        return self.fin[: self.n] - self.step_no

    def requests(self) -> list:
        """The rows' Request objects (their counters are synced only when a row leaves)."""
        return self.reqs

    def held_blocks(self) -> tuple[int, int]:
        return self.gsum, self.hsum

    def hold_more(self, gpu: int, host: int) -> None:
        """The rows were given ``gpu``/``host`` more blocks (for the token of the coming step)."""
        self.gsum += gpu
        self.hsum += host

    def set_held_blocks(self, gpu: int, host: int) -> None:
        self.gsum, self.hsum = gpu, host

    def remember_next_token_blocks(self, gpu: int, host: int, after_steps: int) -> None:
        """Blocks the rows will hold with one more token each, ``after_steps`` decode steps from
        now (a decode run priced them): :meth:`blocks_after_next_token` answers from it."""
        self._next_blocks = (self.version, self.step_no + after_steps, gpu, host)

    def blocks_after_next_token(self) -> tuple[int, int]:
        """GPU/host blocks the rows hold once each has one more token."""
        nb = self._next_blocks
        if nb is not None and nb[0] == self.version and nb[1] == self.step_no:
            return nb[2], nb[3]
        return self.blocks.batch_blocks(self.ctx() + 1, self.prompts(), self.rids())

    def newest(self) -> tuple[int, int]:
        """(row, admission seq) of the most recently admitted row; (-1, -1) when empty."""
        if not self.n:
            return -1, -1
        row = int(np.argmax(self.seq[: self.n]))
        return row, int(self.seq[row])

    def may_have_done_rows(self) -> bool:
        """False when no row can have finished (cheap check before :meth:`done_rows`)."""
        return self._fin_lo is None or self._fin_lo == self.step_no

    def add(self, r, off: int) -> None:
        i, sn = self.n, self.step_no
        c = r.num_computed_tokens
        f = sn + r.max_tokens - r.num_output_tokens
        self.I[i] = (c - sn, f, off, r.admit_seq, sn, self.nseg, r.num_prompt_tokens, r.req_id)
        last = r.last_token_s
        self.F[i] = (last, r.tbt_max_s)
        if i == 0:
            self.uniform_at = last
        elif self.uniform_at != last:
            self.uniform_at = None
        if self._fin_lo is not None and f < self._fin_lo:
            self._fin_lo = f
        if self._fin_hi is not None and f > self._fin_hi:
            self._fin_hi = f
        self.reqs.append(r)
        self.n = i + 1
        self.version += 1
        g, h = self.blocks.request_blocks(c, r.num_prompt_tokens, r.req_id)
        self.gsum += g
        self.hsum += h
        if self.work is not None:
            self.work.add(r.req_id, c, f - sn, sn)

    def _seg_max(self, j: int) -> float:
        return float(self.seg[j:self.nseg].max()) if j < self.nseg else 0.0

    def _drop(self, i: int) -> None:
        f = self.fin[i]
        if f == self._fin_lo:
            self._fin_lo = None
        if f == self._fin_hi:
            self._fin_hi = None
        j = self.n - 1
        self.version += 1
        if i != j:
            self.I[i] = self.I[j]
            self.F[i] = self.F[j]
            self.reqs[i] = self.reqs[j]
        self.reqs.pop()
        self.n = j

    def remove(self, i: int):
        """Remove row ``i`` between steps (the last row moves into it); return its synced Request."""
        r = self.reqs[i]
        ctx0, fin, off, _, jstep, jseg, prompt, rid = self.I[i].tolist()
        last, tmax = self.F[i].tolist()
        c = ctx0 + self.step_no
        g, h = self.blocks.request_blocks(c, prompt, rid)
        r.num_computed_tokens = c
        r.num_output_tokens = r.max_tokens - (fin - self.step_no)
        r.gpu_blocks, r.host_blocks = g - off, h
        r.last_token_s = self.t_last if jstep < self.step_no else last
        r.tbt_max_s = max(tmax, self._seg_max(jseg))
        self.gsum -= g
        self.hsum -= h
        if self.work is not None and fin > self.step_no:  # (left before its end: preempted)
            self.work.remove(rid, c, fin - self.step_no, self.step_no)
        self._drop(i)
        return r

    def remove_rows(self, rows) -> list:
        return [self.remove(int(i)) for i in sorted(rows, reverse=True)]

    def fin_range(self) -> tuple[int, int]:
        """(min, max) of ``fin`` over the rows (n > 0)."""
        lo, hi = self._fin_lo, self._fin_hi
        if lo is None or hi is None:
            f = self.fin[: self.n]
            lo, hi = self._fin_lo, self._fin_hi = int(f.min()), int(f.max())
        return lo, hi

    def done_rows(self) -> list[int]:
        """Rows with no token left to generate."""
        if not self.n or self.fin_range()[0] != self.step_no:
            return []
        return np.flatnonzero(self.fin[: self.n] == self.step_no).tolist()

    def finish_within(self, rows: list[int], left: list[int], t_fin: list[float], run_max: list[float]) -> list:
        """Remove rows (ascending) that finish during a run of uniform steps about to be recorded.

        ``left`` their remaining tokens (steps), ``t_fin`` their last token times, ``run_max``
        the largest step time of the run up to each one's last step. Their blocks stay counted
        in :meth:`held_blocks`; the caller sets those from the run's totals.
        """
        out = []
        tf_list, pm = t_fin, run_max
        rows_i = self.I[rows]  # [m, 8]
        ctx = (rows_i[:, CTX0] + self.step_no + np.array(left)).tolist()
        jsegs = rows_i[:, JSEG].tolist()
        tmaxs = self.tmax[rows].tolist()
        ns, seg = self.nseg, self.seg
        low = min(jsegs)
        # largest logged step from segment j on: one suffix maximum for all rows (log[low:] reversed)
        suffix = (np.maximum.accumulate(seg[low:ns][::-1]).tolist()
                  if len(rows) > 1 and low < ns - 1 and ns - low <= 4096 else None)
        rl = rows  # ascending: remove from the end so row indices stay valid
        for o in range(len(rl) - 1, -1, -1):
            r = self.reqs[rl[o]]
            r.num_computed_tokens, r.num_output_tokens = ctx[o], r.max_tokens
            r.gpu_blocks = r.host_blocks = 0  # released with the run's block totals
            r.last_token_s = r.finish_s = tf_list[o]
            j = jsegs[o]
            if j >= ns:
                logged = 0.0
            elif suffix is not None:
                logged = suffix[ns - 1 - j]
            else:
                logged = float(seg[j:ns].max())
            r.tbt_max_s = max(tmaxs[o], logged, pm[o])
            self._drop(rl[o])
            out.append(r)
        return out

    def decoded1(self, t_start: float, t_end: float, sink=None) -> None:
        """One decode step of every row from ``t_start`` to ``t_end`` (see :meth:`decoded`)."""
        if self.uniform_at != t_start:
            self.decoded(t_start, np.array([t_end - t_start]), 1, t_end, sink)
            return
        d = t_end - t_start
        if sink is not None:
            sink(d, self.n)
        if self.nseg == self.seg.shape[0]:
            self.seg = np.concatenate([self.seg, np.zeros(self.nseg)])
        self.seg[self.nseg] = d
        self.nseg += 1
        self.step_no += 1
        self.t_last = self.uniform_at = t_end

    def decoded(self, t_start: float, dt: np.ndarray, k: int, t_end: float, sink=None, weights=None,
                run_max: float | None = None) -> None:
        """Record ``k`` decode steps of every row from ``t_start`` (step times ``dt[:k]``) ending at ``t_end``.

        ``sink(values, weight)`` receives every time between tokens; ``weights`` [k] (rows per
        step, for runs in which rows finished; those rows were removed with :meth:`finish_within`).
        """
        n = self.n
        if run_max is not None and (weights is not None or self.uniform_at == t_start):
            seg = run_max  # the caller knows max(dt[:k])
            if sink is not None:
                sink(dt[:k], n if weights is None else weights)
            self._log(seg, k, t_end)
            return
        if weights is not None or self.uniform_at == t_start:
            seg = float(dt[:k].max())  # (the largest of the run's steps)
            if sink is not None:
                sink(dt[:k], n if weights is None else weights)
        else:
            d0 = float(dt[0])
            rest = float(dt[1:k].max()) if k > 1 else 0.0
            last = np.where(self.jstep[:n] < self.step_no, self.t_last, self.last[:n])
            iv = (t_start + d0) - last
            np.maximum(self.tmax[:n], iv, out=self.tmax[:n])
            seg = rest
            if sink is not None:
                sink(iv, 1)
                if k > 1:
                    sink(dt[1:k], n)
        self._log(seg, k, t_end)

    def _log(self, seg: float, k: int, t_end: float) -> None:
        if self.nseg == self.seg.shape[0]:
            self.seg = np.concatenate([self.seg, np.zeros(self.nseg)])
        self.seg[self.nseg] = seg
        self.nseg += 1
        self.step_no += k
        self.t_last = t_end
        self.uniform_at = t_end
