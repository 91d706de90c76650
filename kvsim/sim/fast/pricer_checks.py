"""Build-time self-checks of :class:`~kvsim.sim.fast.pricer.StepPricer` (an internal guard: when
one fails the pricer falls back to a slower mode). They compare the pricer's split of a step
(cached linear layers + tabulated decode work + cached prefill) with the method's own costs
priced by the roofline; neither side restates the roofline's rule."""

from __future__ import annotations

import numpy as np

from kvsim.pricing.step import StepModel
from kvsim.sim.fast.decode_tables import part_amounts

RELATIVE_TOLERANCE = 1e-9  # agreement required between the split and StepModel.time_s


def close(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all(np.abs(a - b) <= RELATIVE_TOLERANCE * np.maximum(np.abs(b), 1e-300)))


def decode_prompt_aware(step: StepModel) -> bool:
    """Does the method's decode cost depend on how many cached tokens are prompt? (probed)"""
    m = step.method
    ctx = np.array([[3000.0, 5000.0, 20000.0]])
    prompt = np.array([[1000.0, 4000.0, 1000.0]])
    return not close(step.roofline(m.decode_cost(ctx)).total_s, step.roofline(m.decode_cost(ctx, prompt)).total_s)


def probe_batches(pricer) -> list[np.ndarray]:
    probes = [np.array([0]), np.array([pricer.max_ctx - 1])]
    for _ in range(6):
        b = int(pricer.rng.integers(1, min(pricer.max_seqs, 48) + 1))
        probes.append(pricer.rng.integers(0, pricer.max_ctx, size=b))
    return probes

def verify_decode(pricer) -> bool:
    """Tabulated runs against the method's decode cost of the same ``[k, B]`` contexts."""
    pricer.set_flags()
    for ctx in probe_batches(pricer):
        k = max(1, int(min(3, pricer.max_ctx - ctx.max())))
        rows = ctx[None, :] + np.arange(k)[:, None]
        want = pricer.roofline(pricer.step.method.decode_cost(rows.astype(np.float64))).total_s
        if not close(pricer.decode_run(ctx, k).dt, want):
            return False
    return True

def verify_rows(pricer) -> bool:
    """Work sums of random prompt-aware batches, priced, against the method's batch cost."""
    m, layout = pricer.step.method, pricer.layout
    for ctx in probe_batches(pricer):
        ctx = np.maximum(ctx, 1).astype(np.float64)
        prompt = np.maximum(1, (ctx * pricer.rng.random(ctx.shape)).astype(np.int64)).astype(np.float64)
        cost = m.decode_cost(ctx, prompt)
        if [p.key for p in cost.parts] != pricer.rows.keys:
            return False
        _, per_sequence, _ = part_amounts(m.decode_cost(ctx[:, None], prompt[:, None]), ctx.shape[0])
        work = layout.to_columns(per_sequence).sum(axis=0) + pricer.batch_rows[ctx.shape[0]]  # [ncol]
        if not close(layout.compiled.seconds(work), pricer.roofline(cost).total_s):
            return False
    return True

def verify_steps(pricer) -> bool:
    """Compare whole steps against StepModel.time_s (decode-only, prefill-only, mixed)."""
    r = pricer.rng
    cases = [(np.array([min(5, pricer.max_ctx - 1)]), [], []), (np.array([], dtype=np.int64), [17], [0])]
    for _ in range(4):
        b = int(r.integers(0, min(pricer.max_seqs, 8) + 1))
        chunks = int(r.integers(1, 3))
        cases.append((r.integers(0, pricer.max_ctx, size=b), list(r.integers(1, 300, size=chunks)),
                      list(r.integers(0, 500, size=chunks))))
    for ctx, new, cached in cases:
        prompt = np.minimum(ctx, r.integers(1, 400, size=ctx.shape))
        want = pricer.step.time_s(decode_ctx=ctx.astype(np.float64), prefill_new=np.array(new, dtype=np.float64),
                                prefill_cached=np.array(cached, dtype=np.float64), n_sampled_prefill=len(new),
                                decode_prompt=prompt.astype(np.float64))
        got = pricer.step_time(ctx, tuple(int(x) for x in new), tuple(int(x) for x in cached), len(new),
                             decode_prompt=prompt, direct=pricer.decode_mode == "rows")
        if not close(got, want):
            return False
    return True
