"""Simulator building blocks: the event engine, KV block pools, metrics collectors and summaries."""

from dataclasses import dataclass

import numpy as np
import pytest

from kvsim.sim.engine import Engine
from kvsim.sim.fast.batch import DecodeBatch
from kvsim.sim.kv_cache import KVCacheManager, KVLayout, LayoutBlocks, kv_layout
from kvsim.sim.metrics import IntervalSample, RequestRecords, Timeline, summarize, weighted_percentile
from kvsim.sim.request import Request, RequestStatus
from kvsim.sim.scheduler import Scheduler
from test_sim_support import a100_llama


@dataclass(frozen=True, slots=True)
class Ev:
    name: str
    priority: int = 0


# ---------------------------------------------------------------- engine
def test_engine_orders_by_time_then_priority_then_insertion():
    """Heap key (time, priority, seq): ties in time go to the lower priority, then to the earlier insert."""
    eng = Engine()
    seen = []
    for t, name, prio in [(2.0, "c", 0), (1.0, "b2", 1), (1.0, "a", 0), (1.0, "b1", 1)]:
        eng.schedule(t, Ev(name, prio))
    eng.run(lambda now, ev: seen.append((now, ev.name)))
    assert seen == [(1.0, "a"), (1.0, "b2"), (1.0, "b1"), (2.0, "c")]
    assert eng.events_processed == 4 and eng.now == 2.0


def test_engine_handler_follow_ups_and_until():
    """A handler's follow-ups are queued; run(until_s) stops before later events and resumes."""
    eng = Engine()
    eng.schedule(0.0, Ev("tick"))

    def tick(now, ev):
        return [(now + 1.0, Ev("tick"))] if now < 5 else None

    assert eng.run(tick, until_s=2.5) == 2.0
    assert eng.peek_time() == 3.0
    eng.run(tick)
    assert eng.now == 5.0 and eng.events_processed == 6


def test_engine_refuses_the_past():
    """Time never goes backwards: scheduling before now raises, from outside or from a handler."""
    eng = Engine(start_s=1.0)
    with pytest.raises(ValueError):
        eng.schedule(0.5, Ev("x"))
    eng.schedule(1.0, Ev("x"))
    with pytest.raises(ValueError):
        eng.run(lambda now, ev: [(now - 0.1, Ev("y"))])


def test_engines_share_no_state():
    """Two engines are independent (per-instance counter, no globals): same inputs, same order."""
    orders = []
    for _ in range(2):
        eng = Engine()
        for i in range(5):
            eng.schedule(1.0, Ev(str(i)))
        got = []
        eng.run(lambda now, ev, got=got: got.append(ev.name))
        orders.append(got)
    assert orders[0] == orders[1] == ["0", "1", "2", "3", "4"]


# ---------------------------------------------------------------- KV pools
def _layout(n_gpu=100, n_host=50, per_token_blocks=1 / 16, max_tokens=4096) -> KVLayout:
    n = np.arange(max_tokens + 1)
    return KVLayout(block_size_tokens=16, block_bytes=16.0, num_gpu_blocks=n_gpu, num_host_blocks=n_host,
                    gpu_blocks=np.ceil(n * per_token_blocks).astype(np.int64), host_blocks=np.zeros_like(n),
                    budget=None)


def test_pool_allocate_release_capacity():
    """Allocations succeed up to capacity and fail beyond it; releases give blocks back; peaks are kept."""
    kv = KVCacheManager(_layout(n_gpu=10, n_host=4))
    assert kv.allocate(6, 2) and kv.allocate(4, 2)
    assert not kv.allocate(1) and not kv.allocate(0, 1)
    kv.release(5, 3)
    assert kv.gpu_used == 5 and kv.host_used == 1 and kv.peak_gpu_used == 10 and kv.peak_host_used == 4
    kv.check()


def test_pool_allocate_keeps_the_watermark_free():
    """keep_free: 10 blocks, 6 used, keep 2 free -> 2 more fit (4 - 2 >= 2), 3 do not (4 - 3 < 2)."""
    kv = KVCacheManager(_layout(n_gpu=10, n_host=4))
    assert kv.allocate(6)
    assert not kv.allocate(3, keep_free=2)
    assert kv.gpu_used == 6  # a refused allocation takes nothing
    assert kv.allocate(2, keep_free=2) and kv.gpu_allocatable == 2
    assert kv.allocate(2)  # without a watermark the last blocks are usable (decode steps)


def test_simconfig_rejects_bad_watermarks():
    """watermark in [0, 1): negative, 1 and NaN are validation errors."""
    from pydantic import ValidationError

    from kvsim.sim.config import SimConfig

    for bad in (-0.01, 1.0, float("nan")):
        with pytest.raises(ValidationError):
            SimConfig(watermark=bad)


def test_prefix_cache_shares_and_evicts_lru():
    """Entries are shared by reference; unreferenced ones stay cached and are evicted oldest first, a
    request's entries released last to first (vLLM frees a request's blocks in reverse: a cached prompt
    loses its tail before its head)."""
    kv = KVCacheManager(_layout(n_gpu=100), prefix_block_tokens=64)  # an entry = 64 tokens = 4 blocks
    assert kv.entry_blocks(1) == 4 and kv.prefix_blocks(3) == 12
    assert kv.allocate(12)
    moved = kv.register((11, 12, 13), first_index=1)  # a request's 3 prompt blocks become entries
    assert moved == 12 and kv.gpu_private == 0 and kv.cached_used == 12
    assert kv.lookup((11, 12, 99), max_entries=3) == 2
    kv.acquire((11, 12))
    kv.release_prefix((11, 12, 13))  # first request leaves: 13 is unreferenced, 11 and 12 still used
    assert kv.cached_free == 4 and kv.cached_used == 8
    kv.release_prefix((11, 12))
    assert kv.cached_free == 12 and kv.gpu_allocatable == 100
    assert kv.allocate(95)  # needs 7 of the 12 cached blocks: evicts 13 (oldest), then 12 (released before 11)
    assert kv.evictions == 2 and set(kv.entries) == {11}
    kv.check()


def test_layout_is_compression_aware():
    """Blocks follow the method's bytes: 4-bit KIVI needs ~1/4 of full's; StreamingLLM plateaus at its
    window; SnapKV cuts the prompt to its capacity, then generated tokens add blocks."""
    from kvsim.methods import make_method

    dep = a100_llama()
    lay = {m: kv_layout(dep, make_method(m, dep), 20000, max_tokens_per_step=8192, max_seqs=256)
           for m in ("full", "kivi", "streamingllm", "snapkv")}
    full = lay["full"]
    assert full.gpu_blocks[16] == 1 and full.gpu_blocks[17] == 2 and full.gpu_blocks[16000] == 1000
    assert lay["kivi"].gpu_blocks[16000] < 0.3 * 1000
    assert lay["kivi"].num_gpu_blocks == full.num_gpu_blocks  # same bytes per block, same pool
    s = lay["streamingllm"]
    assert not s.prompt_aware and s.gpu_blocks[4000] == s.gpu_blocks[16000] == s.gpu_blocks[20000] < full.gpu_blocks[4000]
    snap = lay["snapkv"]
    assert snap.prompt_aware
    g, _ = snap.blocks(np.array([4000, 16000, 16000 + 160]), np.array([4000, 16000, 16000]))
    assert g[0] == g[1] < full.gpu_blocks[4000]  # the prompt is cut to the capacity
    assert g[2] - g[1] == 160 // 16  # 160 generated tokens: 10 more blocks


# ---------------------------------------------------------------- metrics
@pytest.mark.parametrize("ties", [False, True])
def test_weighted_percentile_is_numpy_on_the_expanded_data(ties):
    """weighted_percentile(v, w, q) == np.percentile(np.repeat(v, w), q) (linear interpolation),
    also when many values are equal (its sort is not stable: a tie's order must not matter)."""
    rng = np.random.default_rng(1)
    v = rng.integers(0, 5, 400) / 4.0 if ties else rng.random(40)
    w = rng.integers(1, 6, v.size)
    q = [0, 1, 10, 50, 90, 99, 100]
    np.testing.assert_allclose(weighted_percentile(v, w, q), np.percentile(np.repeat(v, w), q), rtol=0, atol=1e-15)


def test_interval_sample_exact_then_binned():
    """Pooled intervals are exact while small, then 0.1% log bins (mean and percentiles within 0.1%)."""
    rng = np.random.default_rng(2)
    vals = [rng.uniform(0.01, 0.05, rng.integers(1, 50)) for _ in range(200)]
    exact, binned = IntervalSample(), IntervalSample(max_values=100)
    for i, a in enumerate(vals):
        for s in (exact, binned):
            s.add(a, i % 3 + 1)
    exact.add(0.02, 7)
    binned.add(0.02, 7)
    ev, ew = exact.result()
    bv, bw = binned.result()
    assert exact.exact and not binned.exact
    ref = np.concatenate([np.repeat(a, i % 3 + 1) for i, a in enumerate(vals)] + [np.full(7, 0.02)])
    np.testing.assert_allclose(weighted_percentile(ev, ew, [50, 99]), np.percentile(ref, [50, 99]), rtol=1e-15)
    np.testing.assert_allclose(weighted_percentile(bv, bw, [50, 90, 99]), np.percentile(ref, [50, 90, 99]), rtol=1e-3)
    assert bw.sum() == ref.size and bv.max() == ref.max() and bv.min() == ref.min()


def test_timeline_is_bounded_and_keeps_peaks():
    """However many records, at most 2n buckets; a bucket shows the largest value that held in it."""
    tl = Timeline(("x",), span_s=10.0, n=50)
    for i in range(100_000):
        tl.record(i * 1e-3, float(i % 7))
    tl.record(99.9, 1000.0)
    out = tl.result(100.0)
    assert len(out["t_s"]) <= 100 and out["x"].max() == 1000.0 and out["x"][0] == 6.0


def test_summary_hand_computed():
    """Two completed requests and one rejected: TTFT, TPOT, E2E, throughput, goodput by hand."""
    nan = np.nan
    rec = RequestRecords(
        arrival_s=np.array([0.0, 1.0, 2.0]), scheduled_s=np.array([0.0, 1.5, nan]),
        first_token_s=np.array([0.5, 2.0, nan]), finish_s=np.array([1.5, 4.0, nan]), tbt_max_s=np.array([0.5, 1.0, nan]),
        prompt_tokens=np.array([10, 20, 30]), effective_prompt_tokens=np.array([10, 20, 30]),
        output_tokens=np.array([3, 5, 7]), cached_tokens=np.zeros(3, dtype=np.int64), preemptions=np.array([0, 2, 0]),
        status=np.array([RequestStatus.FINISHED, RequestStatus.FINISHED, RequestStatus.REJECTED]), reject_reason={2: "gpu_memory"},
    )
    s = summarize(rec, np.array([0.5, 0.5, 0.5, 1.0]), np.array([1, 1, 1, 3]), slo_ttft_s=0.6, slo_tpot_s=0.6)
    assert s["ttft_s"]["mean"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert s["tpot_s"]["mean"] == pytest.approx(0.5)  # (1.5-0.5)/2 = 0.5 and (4-2)/4 = 0.5
    assert s["e2el_s"]["p50"] == pytest.approx(2.25)  # median of 1.5 and 3.0
    assert s["itl_s"]["mean"] == pytest.approx(4.5 / 6)  # 3 x 0.5 + 3 x 1.0 over 6 intervals
    assert s["makespan_s"] == 4.0 and s["throughput_output_tok_s"] == pytest.approx(8 / 4.0)
    assert s["goodput_req_s"] == pytest.approx(1 / 4.0) and s["goodput_fraction"] == pytest.approx(1 / 3)
    assert s["requests_rejected"] == 1 and s["rejected_reasons"] == {"gpu_memory": 1} and s["preemptions"] == 2


# ---------------------------------------------------------------- scheduler
def _scheduler(kv, **kw):
    """The engine's scheduler over the fast layer's array batch, block counts from the layout."""
    blocks = LayoutBlocks(kv.layout)
    return Scheduler(kv, DecodeBatch(kw.get("max_num_seqs", 256), blocks), blocks, **kw)


def test_scheduler_budget_decodes_first_then_chunks():
    """Chunked prefill (Sarathi): running decodes take 1 token each, then the queue head gets the
    rest of the budget as a chunk; SchedulerOutput is {req_id: num_tokens} (vLLM)."""
    kv = KVCacheManager(_layout(n_gpu=1000))
    s = _scheduler(kv, max_num_seqs=8, max_num_batched_tokens=100)
    s.add_request(Request(0, 0.0, num_prompt_tokens=30, max_tokens=5))
    s.add_request(Request(1, 0.0, num_prompt_tokens=250, max_tokens=5))
    out = s.schedule()  # R0 whole (30), R1 a 70-token chunk
    assert out.num_scheduled_tokens == {0: 30, 1: 70} and out.n_sampled == 1
    s.commit(out, 0.0, 1.0)
    out = s.schedule()  # R0 decodes (1 token), R1 continues with 99
    assert out.num_scheduled_tokens == {0: 1, 1: 99} and out.decode_ctx.tolist() == [30]
    s.commit(out, 1.0, 2.0)
    out = s.schedule()  # R1's last 81 tokens complete its prompt
    assert out.num_scheduled_tokens == {0: 1, 1: 81} and out.n_sampled == 1
    assert kv.gpu_private == 2 + 16  # ceil(31/16) + ceil(250/16) blocks
    kv.check()


def test_allocate_slots_returns_none_when_full():
    """allocate_slots(req, n) -> new blocks, or None without allocating anything."""
    kv = KVCacheManager(_layout(n_gpu=4))
    s = _scheduler(kv)
    r = Request(0, 0.0, num_prompt_tokens=100, max_tokens=1)
    assert s.allocate_slots(r, 48) == 3 and r.gpu_blocks == 3
    r.num_computed_tokens = 48
    assert s.allocate_slots(r, 52) is None and r.gpu_blocks == 3 and kv.gpu_private == 3
    s.free(r)
    assert kv.gpu_private == 0


def test_load_summary_hand_computed_and_hints():
    from kvsim.sim.metrics import RequestRecords, load_summary
    from kvsim.sim.request import RequestStatus

    n = 10
    arr = np.arange(n, dtype=float)  # 1 req/s offered: (10 - 1) / (9 - 0)
    sched = arr + np.linspace(0.0, 9.0, n)  # queueing grows 0 s ... 9 s
    fin = sched + 1.0
    rec = RequestRecords(arrival_s=arr, scheduled_s=sched, first_token_s=sched + 0.5, finish_s=fin,
                         tbt_max_s=np.zeros(n), prompt_tokens=np.full(n, 10), effective_prompt_tokens=np.full(n, 10),
                         output_tokens=np.full(n, 5), cached_tokens=np.zeros(n, dtype=int), preemptions=np.zeros(n, dtype=int),
                         status=np.full(n, RequestStatus.FINISHED, dtype=np.int8), reject_reason={})
    out = load_summary(rec, busy_s=10.0, end_s=float(fin[-1]), kv_gpu_peak_fraction=0.5)
    # span = last finish 9 + 9 + 1 = 19 s; busy 10 / 19; served (10 - 1) / (19 - 1) = 0.5: finishes 2 s apart
    # (queueing grows 1 s per request on 1 s arrivals), measured as the offered rate is
    assert out["offered_req_s"] == pytest.approx(1.0)
    assert out["served_req_s"] == pytest.approx(0.5) and out["gpu_busy_fraction"] == pytest.approx(10 / 19)
    # fifths of 10 finished requests: first 2 queued 0 and 1 s (mean 0.5), last 2 queued 8 and 9 (mean 8.5): growth 17
    assert out["queue_growth"] == pytest.approx(17.0) and out["hint"].startswith("overloaded")
    idle = load_summary(rec, busy_s=0.19, end_s=float(fin[-1]), kv_gpu_peak_fraction=0.0)
    assert idle["gpu_busy_fraction"] == pytest.approx(0.01)
    rec.scheduled_s[:] = arr  # no queueing: only the idle hint can apply
    idle = load_summary(rec, busy_s=0.19, end_s=float(fin[-1]), kv_gpu_peak_fraction=0.0)
    assert idle["hint"].startswith("mostly idle") and "1% of the time" in idle["hint"].replace("1.0%", "1%")


def test_load_summary_rate_over_a_subnormal_span_is_none_not_inf():
    """Two arrivals 2.2e-309 s apart (tests/fuzzing.py found it): (2 - 1) / 2.2e-309 overflows to inf; the
    offered rate is reported as unknown (None), as for one instant; so is the served rate of two finishes as
    close together."""
    from kvsim.sim.metrics import RequestRecords, load_summary
    from kvsim.sim.request import RequestStatus

    arr = np.array([0.0, 2.225073858507203e-309])
    with np.errstate(over="ignore"):
        assert np.isinf(1.0 / (arr[1] - arr[0]))
    rec = RequestRecords(arrival_s=arr, scheduled_s=arr.copy(), first_token_s=arr + 0.5, finish_s=arr + 1.0,
                         tbt_max_s=np.zeros(2), prompt_tokens=np.ones(2, dtype=int), effective_prompt_tokens=np.ones(2, dtype=int),
                         output_tokens=np.ones(2, dtype=int), cached_tokens=np.zeros(2, dtype=int), preemptions=np.zeros(2, dtype=int),
                         status=np.full(2, RequestStatus.FINISHED, dtype=np.int8), reject_reason={})
    out = load_summary(rec, busy_s=0.5, end_s=1.0, kv_gpu_peak_fraction=0.0)
    assert out["offered_req_s"] is None
    assert out["served_req_s"] is None


def test_parked_kv_tail_eviction_and_take_back():
    """KVCacheManager.park / evict / unpark (reference rule 12): a parked entry is the most recently
    released; evictions take only the blocks they need from it (its tail), whole entries before it
    go first; taking it back makes `take` blocks private and frees the rest."""
    kv = KVCacheManager(_layout(n_gpu=20), prefix_block_tokens=16)
    assert kv.allocate(12)  # 12 private, 8 free
    kv.register((7,), 1)  # entry 7 = 1 block (16 tokens), referenced: 11 private + 1 cached
    kv.release_prefix((7,))  # evictable, oldest
    kv.park(3, 6)  # 6 of the 11 private blocks parked: 5 private, 7 cached-free, 8 free
    assert (kv.gpu_private, kv.cached_free, kv.parked_blocks(3)) == (5, 7, 6)
    assert kv.allocate(10)  # 8 free + 2 evicted: entry 7 (1 block, whole), then 1 from the parked tail
    assert 7 not in kv.entries and kv.parked_blocks(3) == 5 and kv.evictions == 1  # (parked blocks are not counted)
    kv.check()
    # room = 20 - 15 private; taking 4 parked back leaves 1 allocatable, so 2 new blocks do not fit
    assert not kv.fits(4 + 2) and kv.fits(4 + 1)  # (4 taken back + new ones)
    kv.unpark(3, 4)  # 4 private again, the 5th freed
    assert (kv.gpu_private, kv.cached_free, kv.parked_blocks(3)) == (19, 0, 0)
    kv.check()


def test_head_cache_keys_of_a_parked_head():
    """Which cached entries a decode run must not evict without asking the scheduler: the blocked
    head's parked KV while an eviction could let it in, none once even its first chunk without any
    hit cannot fit (blocks(40 tokens) = 3 > allocatable), none once its entry is evicted whole."""
    kv = KVCacheManager(_layout(n_gpu=20))
    s = _scheduler(kv, park_block_tokens=16)
    r = Request(0, 0.0, num_prompt_tokens=40, max_tokens=5)
    r.parked_entries = 0
    s.waiting.append(r)
    assert s.head_cache_keys() == set()  # nothing parked (yet)
    kv.allocate(3)
    kv.park(0, 3)
    assert kv.allocate(16)  # 16 private, 3 parked, 1 free: allocatable 4 >= 3
    assert s.head_cache_keys() == {(0,)}
    assert kv.allocate(2)  # 1 free + 1 evicted from the parked tail: allocatable 2 < 3
    assert kv.parked_blocks(0) == 2 and s.head_cache_keys() == set()
    assert kv.allocate(2)  # the parked entry goes whole
    assert kv.parked_blocks(0) == 0 and s.head_cache_keys() == set()  # (no KeyError)


def test_huge_max_num_seqs_on_a_small_trace_builds_tables_for_the_trace_only():
    """--max-num-seqs 1,000,000 on 100 requests took minutes (the fast layer built per-batch-size rows
    up to max_num_seqs); at most the trace's requests can run at once, so the tables stop there and
    the result equals the one at max_num_seqs = 100."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.sim.config import SimConfig
    from kvsim.sim.replica import ReplicaSim, simulate
    from kvsim.traces import load_trace

    dep = build_deployment("h100", "llama-3.1-8b")
    m = make_method("full", dep)
    trace = load_trace("synthetic-poisson", num_requests=100, seed=0)
    sim = ReplicaSim(dep, m, trace, SimConfig(max_num_seqs=1_000_000, max_num_batched_tokens=8192))
    assert sim.fast.pricer.max_seqs == 100 and sim.sched.max_num_seqs == 1_000_000  # (the engine's limit is kept)
    a = simulate(dep, m, trace, SimConfig(max_num_seqs=1_000_000, max_num_batched_tokens=8192))
    b = simulate(dep, m, trace, SimConfig(max_num_seqs=100, max_num_batched_tokens=8192))
    assert a.summary["ttft_s"] == b.summary["ttft_s"] and a.summary["e2el_s"] == b.summary["e2el_s"]
