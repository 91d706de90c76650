"""Per-request decode rows of prompt-aware methods (kvsim.sim.fast.request_rows): requests with
the same prompt length share one block of rows; rows equal the method's work wherever they live."""

import numpy as np
import pytest
from synthetic import llama31_8b, synthetic_system

from kvsim.costmodel.deployment import Deployment
from kvsim.methods import make_method
from kvsim.pricing.step import StepModel
from kvsim.sim.fast import folding, request_rows
from kvsim.sim.fast.pricer import StepPricer


def make_pricer(name: str, prompt, output):
    dep = Deployment(system=synthetic_system(), model=llama31_8b(), tp=1)
    step = StepModel(dep, make_method(name, dep))
    # extras that depend on the prompt, as the simulator's KV blocks do
    extra_fn = lambda ctx, p: (ctx + 1, (ctx + 1) * 2 + p)  # noqa: E731
    pricer = StepPricer(step, 4096, 8, extra=np.zeros((4097, 2)), extra_fn=extra_fn,
                        prompt=np.asarray(prompt), output=np.asarray(output))
    assert pricer.decode_mode == "rows"
    return pricer, step, extra_fn


def want_rows(pricer, step, extra_fn, p: int, o: int) -> np.ndarray:
    """``[o, width]`` rows of a request with prompt ``p`` and output ``o``, from the method (the
    work columns the rows keep; the folded ones, checked here, are one constant per sequence)."""
    kept = pricer.rows.ncol
    ctx = np.arange(p - 1, p - 1 + o)
    cost = step.method.decode_cost(ctx.astype(np.float64)[:, None], np.full((o, 1), float(p)))
    rows = np.zeros((o, pricer.rows.width))
    for c, (part, field) in enumerate(pricer.rows.columns):
        rows[:, c] = getattr(cost.parts[part], field)
    for part, field, amount in pricer.rows.checks:
        np.testing.assert_array_equal(np.broadcast_to(getattr(cost.parts[part], field), (o,)), amount)
    rows[:, kept:pricer.rows.count_column] = np.stack(extra_fn(ctx[:, None], np.full((o, 1), p)), axis=-1)[:, 0, :]
    rows[:, pricer.rows.count_column] = 1.0
    return rows


def got_rows(pricer, i: int) -> np.ndarray:
    rows = pricer.rows
    p, o = int(rows.prompt[i]), int(rows.output[i])
    first = int(rows.base[i]) + p - 1
    return rows.table[first:first + o]


@pytest.mark.parametrize("name", ["magicpig", "h2o"])
def test_same_prompt_shares_one_block(name):
    prompt, output = [300, 700, 300, 900, 300], [40, 25, 90, 10, 5]
    pricer, step, extra_fn = make_pricer(name, prompt, output)
    rows = pricer.rows
    pricer.ensure_rows(4)
    assert rows.method_calls == 1  # the whole chunk (one shared block, three own blocks) in one call
    assert rows.shares.tolist() == [True, False, True, False, True]
    assert rows.base[0] == rows.base[2] == rows.base[4]  # one block for prompt 300 ...
    assert rows.own_start - 1 == 90  # ... as long as its longest output
    for i in range(5):
        np.testing.assert_array_equal(got_rows(pricer, i), want_rows(pricer, step, extra_fn, prompt[i], output[i]))
    assert pricer.row_blocks(0, 300 + 4) == pricer.row_blocks(2, 300 + 4) == (304, 2 * 304 + 300)  # (extras of the row at ctx = n - 1)


def test_rows_survive_compaction_and_tiny_budget(monkeypatch):
    """Small chunks force many compactions; a budget with room for one block leaves the other
    repeated prompts to per-request blocks; every live request's rows stay equal to the method's."""
    monkeypatch.setattr(request_rows, "ROWS_PER_CHUNK", 16)
    rng = np.random.default_rng(5)
    n = 120
    prompt = rng.choice([50, 80, 130, 400, 1000], n)
    output = rng.integers(1, 30, n)
    dep_width = make_pricer("magicpig", prompt, output)[0].rows.width
    monkeypatch.setattr(request_rows, "SHARED_TABLE_BYTES", 8 * dep_width * 30)  # room for one block
    pricer, step, extra_fn = make_pricer("magicpig", prompt, output)
    rows = pricer.rows
    shared_prompts = set(prompt[rows.shares].tolist())
    assert len(shared_prompts) == 1 and rows.shares.sum() < n
    live = []
    for i in range(n):
        pricer.ensure_rows(i)
        live.append(i)
        if len(live) > 6:  # release the oldest few (out of order)
            gone = live.pop(int(rng.integers(0, 3)))
            pricer.release(gone)
        for j in live:
            np.testing.assert_array_equal(got_rows(pricer, j), want_rows(pricer, step, extra_fn, prompt[j], output[j]))
    assert rows.method_calls > 5 and rows.table.shape[0] < rows.own_start + 400  # compacted, not grown without bound


@pytest.mark.parametrize("name", ["magicpig", "h2o"])
def test_folded_columns_and_their_fallback(name, monkeypatch):
    """Columns the method declares constant per sequence are folded out of the rows and priced
    per batch size; a method whose folded column varies after all (a wrong declaration) gets rows
    with every column, and the run prices equal the unfolded pricer's."""
    prompt, output = [300, 700, 300, 900, 300], [40, 25, 90, 10, 5]
    folded, _, _ = make_pricer(name, prompt, output)
    assert folded.rows.checks and folded.rows.ncol < folded.layout.ncol
    monkeypatch.setattr(folding, "constant_columns", lambda *a: {})
    plain, _, _ = make_pricer(name, prompt, output)
    for p in (folded, plain):
        p.ensure_rows(4)
    rid, ctx = np.array([0, 1, 3]), np.array([310, 705, 901])
    a = folded.decode_run(ctx, 6, left=np.array([6, 3, 6]), rid=rid)
    b = plain.decode_run(ctx, 6, left=np.array([6, 3, 6]), rid=rid)
    np.testing.assert_allclose(a.dt, b.dt, rtol=1e-12)
    np.testing.assert_array_equal(a.extras, b.extras)
    a, b = folded.decode_run(ctx, 4, rid=rid), plain.decode_run(ctx, 4, rid=rid)
    np.testing.assert_allclose(a.dt, b.dt, rtol=1e-12)
    # a folded column that varies after all (a wrong declaration): the next chunk falls back to every column
    monkeypatch.setattr(request_rows, "ROWS_PER_CHUNK", 16)
    pricer, step, extra_fn = make_pricer(name, prompt, output)
    pricer.ensure_rows(0)
    pricer.rows.checks = [(part, field, amount + 1.0) for part, field, amount in pricer.rows.checks]  # (as if the declared constant were another)
    pricer.ensure_rows(4)
    assert not pricer.rows.checks and pricer.rows.ncol == pricer.layout.ncol
    for i in range(5):
        np.testing.assert_array_equal(got_rows(pricer, i), want_rows(pricer, step, extra_fn, prompt[i], output[i]))
    a = pricer.decode_run(ctx, 6, left=np.array([6, 3, 6]), rid=rid)
    np.testing.assert_allclose(a.dt, plain.decode_run(ctx, 6, left=np.array([6, 3, 6]), rid=rid).dt, rtol=1e-12)


def test_unfold_adds_the_folded_base_per_batch_size():
    """unfold: kept sums plus the base row of each step's batch size, the folded columns from the
    base alone; hand-built 2 kept + 1 folded columns, base [3 batch sizes, 3]."""
    base = np.array([[0.0, 0.0, 0.0], [1.0, 10.0, 100.0], [2.0, 20.0, 200.0]])  # [max_seqs + 1, ncol]
    base_first = np.ascontiguousarray(base.T)
    kept = np.array([[0.5, 0.25], [1.5, 1.25], [2.5, 2.25]])  # [k = 3 steps, 2 kept columns]
    # one batch size (2) for every step: row j = (kept[j, 0] + 2, kept[j, 1] + 20, 200)
    np.testing.assert_array_equal(folding.unfold(base_first, 2, kept, 2),
                                  [[2.5, 20.25, 200.0], [3.5, 21.25, 200.0], [4.5, 22.25, 200.0]])
    # sizes 2, 1, 1 per step: step 1 = (1.5 + 1, 1.25 + 10, 100)
    np.testing.assert_array_equal(folding.unfold(base_first, 2, kept, np.array([2, 1, 1])),
                                  [[2.5, 20.25, 200.0], [2.5, 11.25, 100.0], [3.5, 12.25, 100.0]])


def test_shared_blocks_are_copied_as_runs_of_adjacent_blocks():
    """Blocks at rows 10 (3 rows), 13 (2: adjacent), 20 (4), then own rows: two runs, 5 and 4 rows."""
    start, count = np.array([10, 13, 20, 100]), np.array([3, 2, 4, 7])
    assert request_rows._runs(start, count, 9) == [(10, 5), (20, 4)]
    assert request_rows._runs(start, count, 5) == [(10, 5)]
    assert request_rows._runs(start, count, 0) == []
