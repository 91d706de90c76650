"""Invariants of the simulator on small random traces and engine configurations (hypothesis)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvsim.methods import make_method
from kvsim.sim.request import RequestStatus
from kvsim.sim.scheduler import PreemptionMode
from kvsim.sim.replica import ReplicaSim, SimConfig, simulate
from kvsim.pricing.step import StepModel
from test_sim_support import ExactStep, a100_llama, make_trace, util_for_blocks

METHODS = ("full", "kivi", "streamingllm", "snapkv", "magicpig")


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 14))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.001, 0.01, 0.05, 0.3, 2.0]), min_size=n, max_size=n))
    prompt = draw(st.lists(st.integers(1, 2500), min_size=n, max_size=n))
    output = draw(st.lists(st.integers(1, 120), min_size=n, max_size=n))
    cfg = dict(
        max_num_seqs=draw(st.integers(1, 6)),
        max_num_batched_tokens=draw(st.sampled_from([64, 512, 2048, 8192])),
        chunked_prefill=draw(st.booleans()),
        preemption_mode=draw(st.sampled_from(list(PreemptionMode))),
        record_token_times=True,
    )
    prefix = None
    if draw(st.booleans()):  # prompts open with one of three shared chains of 64-token blocks
        roots = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        prefix = [tuple(100 * r + j for j in range(p // 64 + 1)) for r, p in zip(roots, prompt)]
    return np.cumsum(gaps), prompt, output, cfg, draw(st.sampled_from(METHODS)), draw(st.integers(30, 400)), prefix


def _run(arrival, prompt, output, cfg, method, blocks, prefix=None, step_model=None):
    dep = a100_llama()
    m = make_method(method, dep)
    c = SimConfig(**cfg)
    peff = np.ceil(np.asarray(m.effective_prompt_tokens(np.asarray(prompt, dtype=float))) - 1e-9)
    c = c.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, blocks, c, int(peff.max()))})
    sim = ReplicaSim(dep, m, make_trace(arrival, prompt, output, prefix=prefix, pb=64 if prefix else 0), c,
                     step_model=step_model)
    return sim, sim.run()


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios())
def test_invariants(sc):
    """Every request completes or is rejected; completed ones produce exactly their output tokens at
    non-decreasing times with arrival <= scheduled <= first token <= finish; block pools never exceed
    capacity and are empty at the end."""
    arrival, prompt, output, cfg, method, blocks, prefix = sc
    sim, res = _run(arrival, prompt, output, cfg, method, blocks, prefix)
    rec, s = res.records, res.summary
    assert set(rec.status.tolist()) <= {RequestStatus.FINISHED, RequestStatus.REJECTED}
    assert s["requests_completed"] + s["requests_rejected"] == len(arrival)
    done = rec.status == RequestStatus.FINISHED
    for i in np.flatnonzero(done):
        t = rec.token_times[i]
        assert len(t) == output[i]  # tokens conserved
        assert np.all(np.diff(t) >= 0)
        assert rec.arrival_s[i] <= rec.scheduled_s[i] <= rec.first_token_s[i] == t[0] <= rec.finish_s[i] == t[-1]
        if len(t) > 1:
            assert rec.tbt_max_s[i] == np.diff(t).max() or np.isclose(rec.tbt_max_s[i], np.diff(t).max(), rtol=1e-12)
    assert s["output_tokens"] == int(np.asarray(output)[done].sum())
    assert s["peak_kv_gpu_bytes"] <= s["kv_gpu_capacity_bytes"] and s["peak_kv_host_bytes"] <= s["kv_host_capacity_bytes"]
    sim.kv.check()
    assert sim.kv.gpu_private == 0 and sim.kv.cached_used == 0 and sim.kv.host_used == 0
    assert sim.kv.cached_free == sum(e[1] for e in sim.kv.entries.values())  # only unreferenced entries remain
    assert (res.timeline["running"] <= cfg["max_num_seqs"]).all()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_deterministic_and_equal_to_exact_pricing(sc):
    """Same inputs give identical outputs; fast-forwarded runs and cached prices equal pricing every
    run with StepModel itself."""
    arrival, prompt, output, cfg, method, blocks, prefix = sc
    _, a = _run(arrival, prompt, output, cfg, method, blocks, prefix)
    _, b = _run(arrival, prompt, output, cfg, method, blocks, prefix)
    for f in ("first_token_s", "finish_s", "tbt_max_s", "status", "preemptions"):
        np.testing.assert_array_equal(getattr(a.records, f), getattr(b.records, f))
    assert a.summary["itl_s"] == b.summary["itl_s"]
    dep = a100_llama()
    _, c = _run(arrival, prompt, output, cfg, method, blocks, prefix, ExactStep(StepModel(dep, make_method(method, dep))))
    np.testing.assert_array_equal(a.records.status, c.records.status)
    np.testing.assert_allclose(a.records.finish_s, c.records.finish_s, rtol=1e-9)
    np.testing.assert_allclose(a.records.first_token_s, c.records.first_token_s, rtol=1e-9)


def test_simulate_twice_same_seed_same_json():
    """simulate() on a synthetic trace twice: byte-identical summaries (wall time aside)."""
    import json

    from kvsim.traces import load_trace

    dep = a100_llama()
    out = []
    for _ in range(2):
        tr = load_trace("synthetic-burstgpt", num_requests=200, seed=11, rate=8.0)
        s = simulate(dep, make_method("full", dep), tr, SimConfig(seed=11)).summary
        s["sim"].pop("wall_s")
        out.append(json.dumps(s, sort_keys=True))
    assert out[0] == out[1]
