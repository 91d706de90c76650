"""The decode batch's work ledger (kvsim/sim/fast/work_ledger.py): per coming step, the sum of
the table rows of the rows decoding in it, kept as rows join and leave."""

from __future__ import annotations

import numpy as np

from kvsim.costmodel.deployment import build_deployment
from kvsim.methods import make_method
from kvsim.sim.fast import work_ledger
from kvsim.sim.fast.work_ledger import WorkLedger
from kvsim.sim.replica import ReplicaSim, SimConfig
from kvsim.traces import load_trace


class _Pricer:
    """A table of 20 contexts x 2 columns: row c = (c, 1) (the work of context c, a one)."""

    def __init__(self) -> None:
        self.table_generation = 0
        self.table = np.stack([np.arange(20.0), np.ones(20)], axis=1)

    def work_rows(self):
        return self.table

    def first_row(self, rid: int, ctx: int) -> int:
        return ctx


class _Batch:
    def __init__(self, step_no, rows) -> None:  # rows: (rid, ctx now, left)
        self.step_no, self._rows = step_no, rows

    def rids(self):
        return np.array([r[0] for r in self._rows])

    def ctx(self):
        return np.array([r[1] for r in self._rows])

    def left(self):
        return np.array([r[2] for r in self._rows])


def test_sums_of_rows_joining_and_leaving_by_hand():
    p = _Pricer()
    led = WorkLedger(p)
    led.add(0, ctx=5, left=3, step_no=10)  # steps 10, 11, 12 read contexts 5, 6, 7
    led.add(1, ctx=2, left=4, step_no=11)  # steps 11..14 read contexts 2, 3, 4, 5
    w = led.window(10, 5, None)
    # step 10: 5 (one row); 11: 6 + 2 = 8; 12: 7 + 3 = 10; 13: 4; 14: 5
    assert w[:, 0].tolist() == [5.0, 8.0, 10.0, 4.0, 5.0]
    assert w[:, 1].tolist() == [1.0, 2.0, 2.0, 1.0, 1.0]  # rows decoding per step
    # request 1 preempted at step 12 (ctx 3, 3 tokens left): steps 12..14 lose contexts 3, 4, 5
    led.remove(1, ctx=3, left=3, step_no=12)
    assert led.window(12, 3, None)[:, 0].tolist() == [7.0, 0.0, 0.0]


def test_room_beyond_the_first_buffer_moves_and_grows(monkeypatch):
    monkeypatch.setattr(work_ledger, "_MIN_STEPS", 8)
    p = _Pricer()
    led = WorkLedger(p)
    led.add(0, ctx=0, left=6, step_no=0)  # steps 0..5 read 0..5
    led.add(1, ctx=10, left=9, step_no=4)  # steps 4..12 read 10..18: past 8 steps -> W moves to step 4, grows to 16
    assert led.base == 4 and led.W.shape[0] == 16
    # step 4: 4 + 10 = 14; 5: 5 + 11 = 16; 6..12: 12..18 alone
    assert led.window(4, 9, None)[:, 0].tolist() == [14.0, 16.0, 12, 13, 14, 15, 16, 17, 18]


def test_rebuilds_from_the_batch_when_the_table_changes():
    p = _Pricer()
    led = WorkLedger(p)
    led.add(0, ctx=5, left=3, step_no=0)
    p.table = np.stack([np.arange(20.0) * 10, np.ones(20), np.ones(20)], axis=1)  # a new column set
    p.table_generation += 1
    w = led.window(1, 2, _Batch(1, [(0, 6, 2)]))  # the row now at context 6 with 2 left: 60, 70
    assert w.shape == (2, 3) and w[:, 0].tolist() == [60.0, 70.0]


def _replica(method: str, n: int):
    dep = build_deployment("a100", "llama-3.1-8b")
    return ReplicaSim(dep, make_method(method, dep), load_trace("synthetic-burstgpt", num_requests=n, seed=0), SimConfig())


def test_summed_runs_price_as_the_gathered_runs_do():
    """A run priced from the ledger's sums equals the same run priced by gathering its rows
    (``StepPricer.decode_run``), exactly for full KV's integer work tables, with and without
    rows finishing inside the run."""
    sim = _replica("full", 50)
    pr = sim.fast.pricer
    led = WorkLedger(pr)
    rng = np.random.default_rng(3)
    ctx = rng.integers(100, 1500, size=40)
    left = rng.integers(1, 60, size=40)
    for i in range(40):
        led.add(i, int(ctx[i]), int(left[i]), 0)
    k = int(left.max())
    masked = pr.summed_run(led.window(0, k, None), 40, True)
    gathered = pr.decode_run(ctx, k, left)
    assert np.array_equal(masked.dt, gathered.dt) and np.array_equal(masked.extras, gathered.extras)
    k = int(left.min())  # every row in every step
    plain = pr.summed_run(led.window(0, k, None), 40, False)
    assert np.array_equal(plain.dt, pr.decode_run(ctx, k).dt)
