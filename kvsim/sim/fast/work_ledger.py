"""The decode batch's work for each of its coming steps, summed once when a row joins.

A decode run of ``k`` steps needs, per step ``j``, the sum over the batch's rows of their table
rows at that step: ``sum_i table[first_i + j]`` over the rows still decoding (``j < left_i``).
Gathered per run that is ``B x k`` table rows each time (the runs are ~30 steps long and the
batch changes by one row between runs, so the same rows were gathered again and again).

Instead the ledger keeps ``W[s] = sum_i table[first_i + (s - join_i)]`` for every batch step
``s`` ahead, indexed by the batch's step counter (:class:`kvsim.sim.fast.batch.DecodeBatch`'s
``step_no``): a row that joins at step ``s0`` with ``left`` tokens to generate adds its ``left``
table rows to ``W[s0 : s0 + left]`` (one slice add), a row removed before its end (preemption)
subtracts what it had left, and a row that finishes needs nothing (its rows end at its last
step). A run's work is then ``W[s : s + k]``, a view: the same sums as the gather, added in
another order (exact whenever the table holds integers, as the work columns of full KV do;
otherwise equal to rounding).

The table rows of a request do not change while it decodes; the table's columns can (the
"rows" mode rebuilds its table with every column when a folded one turns out to vary:
:mod:`kvsim.sim.fast.folding`): the ledger then rebuilds itself from the batch
(``StepPricer.table_generation``).
"""

from __future__ import annotations

import numpy as np

_MIN_STEPS = 4096  # initial steps ahead held (grows by doubling when a row needs more)


class WorkLedger:
    """Summed table rows of a decode batch per coming step (see the module docstring).

    Args:
        pricer: the :class:`kvsim.sim.fast.pricer.StepPricer` (in "table" or "rows" mode);
            ``pricer.work_rows()`` gives the table, ``pricer.first_row(rid, ctx)`` a request's row
            at a context, ``pricer.table_generation`` changes when the table's columns do.
    """

    def __init__(self, pricer) -> None:
        self.pricer = pricer
        self.generation = pricer.table_generation
        self.W = np.zeros((_MIN_STEPS, pricer.work_rows().shape[1]))  # [steps ahead, width]
        self.base = 0  # batch step held in W[0]

    def add(self, rid: int, ctx: int, left: int, step_no: int) -> None:
        """A row joins at batch step ``step_no`` with ``ctx`` tokens in KV and ``left`` to generate."""
        if left <= 0:
            return
        s = self._room(step_no, left)
        first = self.pricer.first_row(rid, ctx)
        self.W[s:s + left] += self.pricer.work_rows()[first:first + left]

    def remove(self, rid: int, ctx: int, left: int, step_no: int) -> None:
        """A row leaves at batch step ``step_no`` with ``left`` tokens still to generate."""
        if left <= 0:
            return
        s = step_no - self.base
        first = self.pricer.first_row(rid, ctx)
        self.W[s:s + left] -= self.pricer.work_rows()[first:first + left]

    def window(self, step_no: int, k: int, batch) -> np.ndarray:
        """``[k, width]`` summed rows of steps ``step_no .. step_no + k - 1`` (a view: read only).
        ``batch``: the DecodeBatch (to rebuild from when the table's columns changed)."""
        if self.generation != self.pricer.table_generation:
            self.rebuild(batch)
        s = self._room(step_no, k)
        return self.W[s:s + k]

    def rebuild(self, batch) -> None:
        """Sum the batch's rows again from scratch (the table's columns changed)."""
        self.generation = self.pricer.table_generation
        self.W = np.zeros((self.W.shape[0], self.pricer.work_rows().shape[1]))
        self.base = sn = batch.step_no
        for rid, ctx, left in zip(batch.rids().tolist(), batch.ctx().tolist(), batch.left().tolist()):
            self.add(rid, ctx, left, sn)

    def _room(self, step_no: int, steps: int) -> int:
        """Index of ``step_no`` in W, with room for ``steps`` steps from it (steps before the
        current one are never read again: dropped when W must move)."""
        s = step_no - self.base
        cap = self.W.shape[0]
        if s + steps <= cap:
            return s
        keep = self.W[s:]
        size = cap
        while steps > size:  # (the kept steps, cap - s, fit in cap)
            size *= 2
        W = np.zeros((size, self.W.shape[1]))
        W[: keep.shape[0]] = keep
        self.W, self.base = W, step_no
        return 0
