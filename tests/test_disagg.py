"""Disaggregated prefill/decode (kvsim.plan.disagg): KV transfer prices, the TTFT convention, decode
TBT free of prefill interference, and the layout search picking disaggregation where it pays."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from kvsim.costmodel.deployment import build_deployment
from kvsim.costmodel.roofline import link_transfer_seconds
from kvsim.errors import ConfigError, SpecError
from kvsim.hardware import load_link
from kvsim.methods import make_method
from kvsim.plan.cluster import simulate_cluster
from kvsim.plan.disagg import (kv_transfer_bytes, lone_ttft_s, parse_ratio, schedule_transfers, simulate_disagg,
                               transfer_lanes)
from kvsim.plan.disagg_search import layouts, plan_layouts
from kvsim.plan.schema import SLO
from kvsim.pricing.step import StepModel
from kvsim.sim.reference import simulate_reference
from kvsim.sim.replica import SimConfig, simulate
from kvsim.traces.base import Trace
from equivalence_scenarios import compare
from test_sim_support import FakeStep, a100_llama, make_trace, util_for_blocks


def _h100(tp: int = 1):
    dep = build_deployment("h100", "llama-3.1-8b", tp=tp)
    return dep, make_method("full", dep)


def test_link_files_have_their_line_rates():
    """NDR 400 Gb/s = 50 GB/s, HDR 200 Gb/s = 25 GB/s, 100 GbE = 12.5 GB/s, 200 GbE = 25 GB/s per direction."""
    # Gb/s / 8 = GB/s
    assert load_link("ib-ndr").bw_bytes_per_s == 400e9 / 8
    assert load_link("ib-hdr").bw_bytes_per_s == 200e9 / 8
    assert load_link("eth-100g").bw_bytes_per_s == 100e9 / 8
    assert load_link("200gbe").bw_bytes_per_s == 200e9 / 8
    assert load_link("ib-ndr").link_type == "network"


def test_transfer_seconds_by_hand():
    """bytes / (lanes x bw): 131,072,000 B over one NDR port is 2.62144 ms; two lanes halve it."""
    ndr, eth = load_link("ib-ndr"), load_link("eth-100g")
    assert link_transfer_seconds(131_072_000, ndr) == pytest.approx(131_072_000 / 50e9)  # 0.00262144 s
    assert link_transfer_seconds(131_072_000, ndr, 2) == pytest.approx(0.00131072)  # / (2 x 50e9)
    assert link_transfer_seconds(131_072_000, eth) == pytest.approx(0.01048576)  # / 12.5e9
    assert transfer_lanes(2, 4) == 2 and transfer_lanes(8, 1) == 1
    with pytest.raises(ValueError):
        link_transfer_seconds(1.0, ndr, 0)


def test_transfer_bytes_are_the_methods_resident_prompt_kv():
    """Full KV of Llama-3.1-8B: 2 x 32 layers x 8 KV heads x 128 dims x 2 B = 131,072 B/token, summed over TP GPUs;
    KIVI-2 sends its quantized bytes, under a third of that."""
    dep1, full1 = _h100(1)
    dep2, full2 = _h100(2)
    assert kv_transfer_bytes(full1, [1000])[0] == 131_072_000  # 1000 x 131,072
    assert kv_transfer_bytes(full2, [1000])[0] == 131_072_000  # 65,536,000 per GPU x 2 GPUs
    kivi = make_method("kivi", dep1)
    b = kv_transfer_bytes(kivi, [1000])[0]
    assert b == pytest.approx(float(kivi.kv_bytes(1000.0).gpu_bytes)) and b < 131_072_000 / 3


def test_schedule_transfers_fifo_by_hand():
    """FIFO per port group: one prefill port, two decode instances, 1 s transfers, 0.1 s latency."""
    ready = np.array([0.0, 0.0, 0.5, np.nan])
    dst, start, arrive = schedule_transfers(ready, np.zeros(4, dtype=np.int64), np.ones(4), 0.1, 1, 2)
    # r0 -> d0: start 0, ends 1, arrives 1.1; r1 -> d1: waits for the source port: start 1, arrives 2.1;
    # r2 -> d0: source free at 2 (d0 free at 1, ready 0.5): start 2, arrives 3.1; r3 never prefilled
    assert dst.tolist() == [0, 1, 0, -1]
    assert start[:3].tolist() == [0.0, 1.0, 2.0] and np.allclose(arrive[:3], [1.1, 2.1, 3.1])
    assert np.isnan(start[3]) and np.isnan(arrive[3])
    # two prefill ports: r1 leaves port 1 at once, r2 then waits only for d0 (free at 1)
    dst, start, arrive = schedule_transfers(ready[:3], np.array([0, 1, 1]), np.ones(3), 0.1, 2, 2)
    assert start.tolist() == [0.0, 0.0, 1.0]  # r2 on port 1: free at 1, d0 free at 1


def test_prompt_kv_resident_recomputes_one_token():
    """A decode instance prefills only the last prompt token: FakeStep 10 ms + 1 ms x 1 token -> first token
    at 0.011 s, then 10 ms decode steps (0.021, 0.031); the fast engine agrees with the reference."""
    dep = a100_llama()
    m = make_method("full", dep)
    cfg = SimConfig(record_token_times=True, prompt_kv_resident=True)
    trace = make_trace([0.0], [100], [3])
    step = FakeStep()
    fast = simulate(dep, m, trace, cfg, step_model=step)
    ref = simulate_reference(dep, m, trace, cfg, step_model=FakeStep())
    assert compare(fast, ref) == []
    assert step.prefills[0] == ((1.0,), (99.0,))  # 1 new token after 99 resident ones
    assert np.allclose(fast.records.token_times[0], [0.011, 0.021, 0.031])


def test_prompt_kv_resident_recompute_preemption_by_hand():
    """5 blocks of 16 tokens, two 32-token prompts resident, 20 outputs each (FakeStep: 10 ms + 1 ms per prefill token).
    Fast engine and reference agree; a RECOMPUTE victim keeps its prompt KV as resident (stated limitation)."""
    dep = a100_llama()
    m = make_method("full", dep)
    cfg = SimConfig(record_token_times=True, prompt_kv_resident=True)
    cfg = cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, 5, cfg, 32)})
    trace = make_trace([0.0, 0.0], [32, 32], [20, 20])
    fast = simulate(dep, m, trace, cfg, step_model=FakeStep())
    ref = simulate_reference(dep, m, trace, cfg, step_model=FakeStep())
    assert compare(fast, ref) == []
    # step 1: one recomputed token each (31 resident): 10 + 2 ms -> 0.012. Step 2: both need a 3rd block, one is
    # free: B is preempted, A decodes alone; A finishes after 19 decodes: 0.012 + 0.190 = 0.202.
    # B re-admitted: 31 resident, 2 tokens to compute (its last prompt token and its first output): 12 ms -> 0.214,
    # then 18 decodes -> 0.394; its longest gap 0.214 - 0.012 = 0.202
    assert ref.preemptions.tolist() == [0, 1]
    assert ref.finish_s.tolist() == pytest.approx([0.202, 0.394])
    assert ref.tbt_max_s[1] == pytest.approx(0.202)


def test_lone_request_ttft_is_prefill_plus_transfer_plus_one_step():
    """Lone request, TTFT = prefill(P) + bytes / (lanes x bw) + latency + step(1 new, P - 1 cached), equal to the
    estimate path; TBT equals the aggregated lone TBT (decode at context P)."""
    dep, m = _h100()
    ndr = load_link("ib-ndr")
    trace = Trace("one", np.array([0.0]), np.array([1000]), np.array([4]))
    res = simulate_disagg(dep, m, dep, m, trace, ndr, SimConfig())
    est = lone_ttft_s(dep, m, dep, m, 1000, ndr, 8192)
    assert est["transfer_s"] == pytest.approx(131_072_000 / 50e9 + 2e-6)  # 0.00262144 + 0.000002 s
    ttft = res.records.first_token_s[0] - res.records.arrival_s[0]
    assert ttft == pytest.approx(est["ttft_s"], rel=1e-9)
    assert est["prefill_s"] == pytest.approx(float(StepModel(dep, m).prefill_timing(1000).total_s))
    agg = simulate(dep, m, trace, SimConfig())
    assert agg.records.first_token_s[0] == pytest.approx(est["prefill_s"], rel=1e-9)
    assert res.summary["itl_s"]["max"] == pytest.approx(agg.summary["itl_s"]["max"], rel=1e-9)
    assert res.decode_arrival_s[0] - res.kv_ready_s[0] == pytest.approx(est["transfer_s"])


def test_lone_request_across_hardware_and_tp():
    """Prefill on H100 TP2, decode on A100 TP1, 100 GbE: one lane (min(2, 1)); the simulation equals the estimate."""
    dep_p = build_deployment("h100", "llama-3.1-8b", tp=2)
    dep_d = build_deployment("a100", "llama-3.1-8b", tp=1)
    m_p, m_d = make_method("kivi", dep_p), make_method("kivi", dep_d)
    eth = load_link("eth-100g")
    trace = Trace("one", np.array([0.0]), np.array([3000]), np.array([3]))
    res = simulate_disagg(dep_p, m_p, dep_d, m_d, trace, eth, SimConfig())
    est = lone_ttft_s(dep_p, m_p, dep_d, m_d, 3000, eth, 8192)
    nbytes = float(m_p.kv_bytes(3000.0).gpu_bytes) * 2  # two prefill GPUs' shards
    assert est["transfer_s"] == pytest.approx(nbytes / 12.5e9 + 5e-6)
    assert res.records.first_token_s[0] == pytest.approx(est["ttft_s"], rel=1e-9)
    assert res.summary["disagg"]["kv_link_lanes"] == 1


def test_compression_shortens_transfers():
    """KIVI's transfer takes its bytes' share of full KV's (same prompt, same link)."""
    dep, full = _h100()
    kivi = make_method("kivi", dep)
    ndr = load_link("ib-ndr")
    trace = Trace("one", np.array([0.0]), np.array([2000]), np.array([2]))
    a = simulate_disagg(dep, full, dep, full, trace, ndr, SimConfig())
    b = simulate_disagg(dep, kivi, dep, kivi, trace, ndr, SimConfig())
    busy_a = a.decode_arrival_s[0] - a.transfer_start_s[0] - 2e-6
    busy_b = b.decode_arrival_s[0] - b.transfer_start_s[0] - 2e-6
    assert busy_b / busy_a == pytest.approx(b.transfer_bytes[0] / a.transfer_bytes[0], rel=1e-6)
    assert b.transfer_bytes[0] < a.transfer_bytes[0] / 3


def _mixed_trace() -> Trace:
    # 4 chat requests (200 in, 400 out) at t = 0, then 10 long prompts (8000 in, 2 out) every 0.2 s
    arr = np.r_[np.zeros(4), 0.1 + 0.2 * np.arange(10)]
    return Trace("mix", arr, np.r_[np.full(4, 200), np.full(10, 8000)], np.r_[np.full(4, 400), np.full(10, 2)])


def test_decode_tbt_is_free_of_prefill_interference():
    """Same 2 GPUs: aggregated, a decode step that shares the GPU with an 8000-token prompt takes the prompt's
    time; disaggregated 1:1, no decode step is longer than a step of 6 sequences at 8010 tokens plus two
    1-token recomputes (more than a decode instance ever runs here)."""
    dep, m = _h100()
    trace = _mixed_trace()
    agg = simulate_cluster(dep, m, trace, SimConfig(), 2, "round-robin")
    dis = simulate_disagg(dep, m, dep, m, trace, load_link("ib-ndr"), SimConfig(), 1, 1)
    sm = StepModel(dep, m)
    bound = float(sm.time_s(decode_ctx=np.full(6, 8010.0), prefill_new=np.ones(2), prefill_cached=np.full(2, 8000.0)))
    prompt_s = float(sm.prefill_timing(8000).total_s)
    assert dis.summary["itl_s"]["max"] <= bound
    assert agg.summary["itl_s"]["max"] >= prompt_s  # a decode step waited for a whole prompt
    assert agg.summary["itl_s"]["max"] > 10 * dis.summary["itl_s"]["max"]
    assert dis.summary["requests_completed"] == 14 and dis.summary["disagg"]["requests_per_decode"] == [14]


def test_layouts_and_ratio_parsing():
    """N instances: aggregated, then every P:D with P + D = N; P:D text parsed or a one-line error."""
    assert layouts(3) == [(0, 3), (1, 2), (2, 1)]
    assert parse_ratio("2:1") == (2, 1)
    for bad in ("0:1", "1", "a:b", "1:-1", "2:1:1"):
        with pytest.raises(ConfigError):
            parse_ratio(bad)


def test_plan_picks_disaggregation_when_aggregated_misses_tbt():
    """4000-token prompts, 100-token outputs, TBT SLO 20 ms (p99): aggregated x2 meets it only at low rates (a
    prompt in a step costs ~90 ms), 1:1 holds TBT at any rate and is limited by TTFT: it ranks first. The trace
    is long enough for 1:1's rate to stand (with 40 requests it read 24.7 req/s on 0.8 lifetimes, 12.3 at 200
    requests and 9.5 lifetimes: a burst, ranked last)."""
    dep, m = _h100()
    n = 250
    trace = Trace("long-prompts", np.arange(n) * 1.0, np.full(n, 4000), np.full(n, 100))
    res = plan_layouts(dep, m, trace, load_link("ib-ndr"), SLO(ttft_s=2.0, itl_s=0.02), 2, SimConfig(), rel_tol=0.1)
    assert [r.label for r in res] == ["disaggregated 1:1", "aggregated x2"]
    best, agg = res
    assert best.max_rate_per_s > 2 * agg.max_rate_per_s
    assert best.best.itl_s.p99 <= 0.02 and best.gpus == agg.gpus == 2


def test_mismatched_instances_are_rejected():
    """Prefill and decode must run one method and one model."""
    dep, full = _h100()
    trace = Trace("one", np.array([0.0]), np.array([10]), np.array([2]))
    with pytest.raises(ConfigError, match="one KV method"):
        simulate_disagg(dep, full, dep, make_method("kivi", dep), trace, load_link("ib-ndr"))
    with pytest.raises(SpecError):
        load_link("infiniband-xdr9")


def _kvsim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_simulate_disagg_json(tmp_path):
    """kvsim simulate --disagg 1:1 --json carries the transfer facts; a synthetic trace of 1000-token prompts."""
    r = _kvsim("simulate", "--hw", "h100", "--trace", "synthetic-fixed:prompt=1000,output=8,rate=2", "-n", "20",
               "--disagg", "1:1", "--kv-link", "eth-200g", "--decode-hw", "a100", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    d = s["disagg"]
    assert d["kv_link"] == "eth-200g" and d["decode_hw"] != d["prefill_hw"]
    assert d["kv_transfer_bytes_mean"] == pytest.approx(131_072_000)  # 1000 tokens x 131,072 B
    assert d["kv_transfer_s"]["p50"] == pytest.approx(131_072_000 / 25e9 + 5e-6, rel=1e-6)  # 5.24288 ms + 5 us


@pytest.mark.parametrize("args, needle", [
    (["--disagg", "0:1"], "--disagg expects P:D"),
    (["--disagg", "1:1", "--kv-link", "ib-xyz"], "unknown link 'ib-xyz'"),
    (["--decode-hw", "a100"], "need --disagg P:D"),
])
def test_cli_disagg_bad_input_is_one_line_error(args, needle, tmp_path):
    """Bad --disagg / --kv-link / orphan flags: exit 1, one 'error:' line, no traceback."""
    r = _kvsim("simulate", "--trace", "synthetic-fixed:prompt=10,output=2", "-n", "2", *args, cwd=tmp_path)
    assert r.returncode == 1, r.stdout
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert all(line.startswith("error: ") for line in r.stderr.strip().splitlines())


def test_cli_plan_disagg_instances_json(tmp_path):
    """kvsim plan --disagg-instances 2: rows best first, 1:1 ahead of aggregated x2 under a 20 ms TBT SLO."""
    r = _kvsim("plan", "--hw", "h100", "--trace", "synthetic-fixed:prompt=4000,output=100,rate=1", "--num-requests", "250",
               "--slo-ttft", "2", "--slo-itl", "20ms", "--disagg-instances", "2", "--rel-tol", "0.1", "--json",
               "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["layout"] for x in rows] == ["disaggregated 1:1", "aggregated x2"]
    assert rows[0]["max_rate_per_s"] > rows[1]["max_rate_per_s"] > 0 and rows[0]["gpus"] == 2
    bad = _kvsim("plan", "--disagg-instances", "2", "--target-rate", "5", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("error: --disagg-instances") and "Traceback" not in bad.stderr


def test_transfers_never_overlap_on_a_port():
    """Invariant: on every prefill port group and every decode port group, transfer intervals [start, start + busy)
    are disjoint and start no earlier than the KV is ready (random loads, 3 prefill x 2 decode instances)."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        ready = np.sort(rng.uniform(0, 5, n))
        src = rng.integers(0, 3, n)
        busy = rng.uniform(0.01, 1.0, n)
        dst, start, arrive = schedule_transfers(ready, src, busy, 1e-3, 3, 2)
        assert np.all(start >= ready) and np.allclose(arrive, start + busy + 1e-3)
        for ports in ((src, 3), (dst, 2)):
            for k in range(ports[1]):
                sel = np.flatnonzero(ports[0] == k)
                order = sel[np.argsort(start[sel])]
                assert np.all(start[order][1:] >= (start + busy)[order][:-1] - 1e-12)


def test_request_too_big_for_the_decode_instance_is_rejected_there():
    """Prefill on H200 fits a 60,000-token prompt; its KV does not fit one L4's pool (~5 GB after 16 GB of weights):
    rejected at the decode instance (gpu_memory), counted once; the small request completes. The big one is
    prefilled (the proxy sends every request to a prefill instance first) but its KV is not sent (the decode
    side refuses it, and it is the side that pulls the KV): 19.7 GB were counted as moved before (user audit)."""
    dep_p = build_deployment("h200", "llama-3.1-8b")
    dep_d = build_deployment("l4", "llama-3.1-8b")
    trace = Trace("two", np.array([0.0, 0.1]), np.array([60_000, 100]), np.array([10, 10]))
    res = simulate_disagg(dep_p, make_method("full", dep_p), dep_d, make_method("full", dep_d), trace,
                          load_link("eth-100g"), SimConfig())
    assert res.summary["requests_completed"] == 1 and res.summary["requests_rejected"] == 1
    assert dict(res.records.reject_reason) == {0: "gpu_memory"}
    assert np.isfinite(res.parts["prefill"].records.first_token_s[0])  # it was prefilled ...
    assert np.isnan(res.kv_ready_s[0]) and res.decode_of[0] == -1  # ... and not sent
    assert res.summary["disagg"]["kv_transfer_bytes_total"] == pytest.approx(100 * 131_072)


def test_transfer_bytes_count_what_decode_gpus_receive_not_prefill_replicas():
    """Replicated KV is not sent once per prefill replica: each decode GPU receives its own shard (vLLM's
    NixlConnector: every decode TP rank reads its heads, the whole latent for MLA, from a prefill rank), so the wire
    carries ``kv_bytes_decode(P).gpu_bytes x tp_d``.
    DeepSeek-V2-Lite (MLA, latent 512 + rope 64 = 576 values x 27 layers x 2 B = 31,104 B/token, replicated per GPU):
    prefill TP4 -> decode TP1: 1000 x 31,104 = 31,104,000 B (not 4 x that); prefill TP1 -> decode TP2: 2 copies.
    Qwen3-30B-A3B (4 KV heads x 128 x 2 (K, V) x 48 layers x 2 B = 98,304 B/token): prefill TP8 holds every head
    twice; decode TP1 needs it once: 98,304,000 B."""
    def meth(model, tp):
        return make_method("full", build_deployment("h100", model, tp=tp))
    assert kv_transfer_bytes(meth("deepseek-v2-lite", 1), [1000])[0] == 31_104_000
    assert kv_transfer_bytes(meth("deepseek-v2-lite", 2), [1000])[0] == 62_208_000  # 2 decode GPUs x latent
    assert kv_transfer_bytes(meth("qwen3-30b-a3b", 1), [1000])[0] == 98_304_000
    # end to end: prefill TP4 -> decode TP1 on one NDR lane moves the latent once: 31,104,000 / 50e9 = 0.62208 ms
    dep_p = build_deployment("h100", "deepseek-v2-lite", tp=4)
    dep_d = build_deployment("h100", "deepseek-v2-lite", tp=1)
    trace = Trace("one", np.array([0.0]), np.array([1000]), np.array([2]))
    res = simulate_disagg(dep_p, make_method("full", dep_p), dep_d, make_method("full", dep_d), trace,
                          load_link("ib-ndr"), SimConfig())
    assert res.transfer_bytes[0] == 31_104_000
    assert res.decode_arrival_s[0] - res.transfer_start_s[0] == pytest.approx(31_104_000 / 50e9 + 2e-6)
    est = lone_ttft_s(dep_p, make_method("full", dep_p), dep_d, make_method("full", dep_d), 1000, load_link("ib-ndr"))
    assert est["transfer_s"] == pytest.approx(31_104_000 / 50e9 + 2e-6)


def test_summary_reports_the_prefill_instances_kv_peak():
    """The top-level peak KV is the decode instances'; the disagg block adds the prefill instances' peak and pool.
    Lone 1000-token prompt, 8 outputs, Llama-3.1-8B full KV (131,072 B/token, 16-token blocks): prefill holds
    ceil(1000 / 16) = 63 blocks = 63 x 16 x 131,072 = 132,120,576 B; decode holds 1008 tokens, also 63 blocks."""
    dep, m = _h100()
    trace = Trace("one", np.array([0.0]), np.array([1000]), np.array([8]))
    res = simulate_disagg(dep, m, dep, m, trace, load_link("ib-ndr"), SimConfig())
    d = res.summary["disagg"]
    assert d["prefill_peak_kv_gpu_bytes"] == 132_120_576
    assert res.summary["peak_kv_gpu_bytes"] == 132_120_576
    assert d["prefill_kv_gpu_capacity_bytes"] == res.summary["kv_gpu_capacity_bytes"] > 0  # same H100 both sides


def test_wide_prefill_instance_feeds_narrow_decode_instances_at_once():
    """Prefill TP2 -> decode TP1: a transfer uses one lane (min(2, 1)); each prefill GPU has its own NIC, so one
    prefill instance feeds two decode instances at once (two transfer slots, tp_p // lanes = 2), not one after the
    other. FIFO by hand: 3 transfers of 1 s, all ready at 0, 0.1 s latency, decode instances 0, 1, 0:
    r0 slot 0 -> d0 at 0; r1 slot 1 -> d1 at 0; r2 waits for a slot (free at 1) and d0 (free at 1): starts at 1."""
    ready = np.zeros(3)
    dst, start, arrive = schedule_transfers(ready, np.zeros(3, dtype=np.int64), np.ones(3), 0.1, 1, 2, src_slots=2)
    assert dst.tolist() == [0, 1, 0] and start.tolist() == [0.0, 0.0, 1.0]
    assert np.allclose(arrive, [1.1, 1.1, 2.1])
    # the decode side likewise: decode TP2 fed by two TP1 prefill instances, both into one decode instance at once
    dst, start, arrive = schedule_transfers(np.zeros(2), np.array([0, 1]), np.ones(2), 0.0, 2, 1, dst_slots=2)
    assert start.tolist() == [0.0, 0.0]
    # end to end: 1 prefill H100 TP2, 2 decode H100 TP1, two 2000-token prompts at t = 0: the two transfers overlap
    dep_p, m_p = _h100(2)
    dep_d, m_d = _h100(1)
    trace = Trace("two", np.zeros(2), np.array([2000, 2000]), np.array([2, 2]))
    res = simulate_disagg(dep_p, m_p, dep_d, m_d, trace, load_link("ib-ndr"), SimConfig(), 1, 2)
    assert res.decode_of.tolist() == [0, 1]
    assert np.all(res.transfer_start_s == res.kv_ready_s)  # both prefilled in one step, neither waits
    assert res.summary["disagg"]["kv_transfers_at_once_per_prefill"] == 2
    assert res.summary["disagg"]["kv_transfers_at_once_per_decode"] == 1


def test_transfer_slots_never_exceed_their_count():
    """Invariant: at any instant an instance runs at most its slots' transfers (random loads, 2 prefill x 3 decode,
    3 slots per prefill instance, 1 per decode instance), and none starts before its KV is ready."""
    rng = np.random.default_rng(11)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        ready = np.sort(rng.uniform(0, 5, n))
        src = rng.integers(0, 2, n)
        busy = rng.uniform(0.01, 1.0, n)
        dst, start, arrive = schedule_transfers(ready, src, busy, 0.0, 2, 3, src_slots=3)
        assert np.all(start >= ready)
        for who, count, slots in ((src, 2, 3), (dst, 3, 1)):
            for k in range(count):
                sel = np.flatnonzero(who == k)
                for t in start[sel]:  # transfers running at each start instant
                    running = np.sum((start[sel] <= t + 1e-12) & (start[sel] + busy[sel] > t + 1e-12))
                    assert running <= slots


def test_cli_plan_disagg_instances_tier_notes(tmp_path):
    """plan --disagg-instances --kv-offload: each layout's row says how its tiers were reused (a trace
    with prefix ids), or one note says they stored nothing (a trace without), as simulate says."""
    common = ("plan", "--hw", "h100", "--slo-ttft", "2", "--slo-itl", "50ms", "--disagg-instances", "2",
              "--rel-tol", "0.2", "--kv-offload", "host=4GiB", "--no-progress")
    r = _kvsim(*common, "--trace", "synthetic-fixed:prompt=2000,output=20,rate=1", "-n", "30", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert all(x["note"] is None or "prefix reuse" not in x["note"] for x in json.loads(r.stdout))
    assert "note: KV offload tiers unused" in r.stderr
    r = _kvsim(*common, "--trace", "synthetic-tree:n=64,width=4,depth=4,step=256,prompt=512,rate=0.5,level_s=2",
               "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows and all(re.search(r"prefix reuse of [\d,]+ entries: GPU \d+\.\d%, host \d+\.\d%$", x["note"])
                        for x in rows if x["max_rate_per_s"] > 0)
    assert "tiers unused" not in r.stderr
    r = _kvsim("plan", "--hw", "h100", "--trace", "synthetic-fixed:prompt=2000,output=20,rate=1", "-n", "20",
               "--kv-offload", "host=4GiB", "--rel-tol", "0.3", "--no-cache", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "note: KV offload tiers unused" in r.stderr  # (the aggregated search says it too)


def test_provenance_records_the_engine_memory_utilization():
    """An engine gpu_memory_utilization sizes both sides' KV pools; the provenance of each side records
    it (SimConfig.deployment_for, shared with the replica and reference simulators)."""
    dep, m = _h100()
    trace = Trace("one", np.array([0.0]), np.array([1000]), np.array([4]))
    res = simulate_disagg(dep, m, dep, m, trace, load_link("ib-ndr"), SimConfig(gpu_memory_utilization=0.5))
    prov = res.summary["provenance"]
    assert prov["prefill"]["deployment"]["gpu_memory_utilization"] == 0.5
    assert prov["decode"]["deployment"]["gpu_memory_utilization"] == 0.5


def test_timeline_capacity_line_sums_every_instance_pool():
    """A disaggregated run's KV timeline sums the gauges of every instance, so its capacity line is the
    sum of every instance's pool: 2 prefill instances on H100 TP2 (pool P per GPU) + 1 decode
    instance on A100 (pool D) -> 2 P + D, not (the decode pool D) x 3 instances."""
    from kvsim.plan.digest import digest
    from kvsim.plan.figures import GPU_KV, capacity_line

    dep_p = build_deployment("h100", "llama-3.1-8b", tp=2)
    dep_d = build_deployment("a100", "llama-3.1-8b", tp=1)
    m_p, m_d = make_method("full", dep_p), make_method("full", dep_d)
    trace = Trace("two", np.array([0.0, 0.1]), np.array([3000, 2000]), np.array([3, 4]))
    res = simulate_disagg(dep_p, m_p, dep_d, m_d, trace, load_link("eth-100g"), SimConfig(), num_prefill=2, num_decode=1)
    pre_cap = simulate(dep_p, m_p, trace, SimConfig()).summary["kv_gpu_capacity_bytes"]
    dec_cap = simulate(dep_d, m_d, trace, SimConfig()).summary["kv_gpu_capacity_bytes"]
    assert pre_cap != dec_cap  # (H100 TP2 shards vs one A100: the two pools differ)
    s = res.summary
    assert s["kv_gpu_capacity_bytes"] == dec_cap  # the top-level per-GPU capacity is the decode instances'
    assert s["kv_gpu_capacity_sum_bytes"] == pytest.approx(2 * pre_cap + dec_cap, rel=1e-12)
    p = digest(res)
    assert capacity_line(p, GPU_KV) == pytest.approx(2 * pre_cap + dec_cap, rel=1e-12)
    assert capacity_line(p.model_copy(update={"kv_gpu_capacity_sum_bytes": 0.0}), GPU_KV) == dec_cap * 3


def test_layout_measured_on_a_burst_is_flagged_and_ranked_last():
    """The audit's `--disagg-instances 3 -n 300` ranked 2:1 first at 267 req/s: its 300 requests arrived
    within 299 / 267 = 1.12 s, 0.2 of their mean E2E latency. A layout whose trace lasts fewer than 10
    lifetimes is transient: its row says so and it ranks after layouts whose rate stands."""
    from kvsim.plan.disagg_search import LayoutResult, layout_order, layout_row
    from kvsim.plan.schema import PointResult, Stats

    def point(rate, e2el):
        s = Stats(mean=e2el, p50=e2el, p90=e2el, p99=e2el)
        return PointResult(rate_per_s=rate, replicas=3, num_requests=300, ttft_s=s, itl_s=s, e2el_s=s,
                           throughput_output_tok_s=1.0, requests_completed=300, requests_rejected=0)

    burst = LayoutResult(2, 1, 3, 267.3, point(267.3, 5.6), 10, 1.0)
    steady = LayoutResult(0, 3, 3, 41.5, point(41.5, 0.5), 10, 1.0)  # 299 / 41.5 / 0.5 = 14.4 lifetimes
    assert burst.span_over_e2el == pytest.approx(299 / 267.3 / 5.6) and burst.transient and not steady.transient
    assert sorted([burst, steady], key=layout_order) == [steady, burst]
    row = layout_row("h100", "full", burst, SLO(ttft_s=2.0, itl_s=0.05))
    assert row["transient"] and row["note"].startswith("short trace (0.2x E2E)")


@pytest.mark.parametrize("args, needle", [
    (["simulate", "--hw", "h100", "--trace", "synthetic-fixed:n=2", "--kv-link", "nonexistent-link"], "need --disagg P:D"),
    (["plan", "-n", "20", "--kv-link", "eth-100g"], "--kv-link is the link of --disagg-instances"),
])
def test_kv_link_without_disaggregation_is_an_error(args, needle):
    """--kv-link was ignored without --disagg / --disagg-instances (exit 0, even for a link that does not
    exist), while --prefill-hw there was an error (user audit)."""
    r = subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr


def test_cli_all_refused_by_the_decode_side_moves_no_kv_and_has_no_makespan():
    """All three 50k-token prompts are refused by an L4 decode instance: KV moved 0 B (was 19.66 GB), and the
    makespan reads '-' rather than 0.0 us (user audit)."""
    r = subprocess.run([sys.executable, "-m", "kvsim", "simulate", "--hw", "h100", "--disagg", "1:1", "--decode-hw", "l4",
                        "--trace", "synthetic-fixed:n=3,prompt=50000,output=4"], capture_output=True, text=True, timeout=300)
    # (since the fourteenth session a run whose every request was rejected is an error naming why, not a table)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("error: every request was rejected: 3 of 3 requests rejected (all of them): gpu_memory")
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.hardware import load_link
    from kvsim.methods import make_method
    from kvsim.plan.disagg import simulate_disagg
    from kvsim.sim.config import SimConfig
    from kvsim.traces import load_trace

    p, d = build_deployment("h100", "llama-3.1-8b"), build_deployment("l4", "llama-3.1-8b")
    res = simulate_disagg(p, make_method("full", p), d, make_method("full", d),
                          load_trace("synthetic-fixed:n=3,prompt=50000,output=4"), load_link("ib-ndr"), SimConfig(), 1, 1)
    assert res.summary["requests_rejected"] == 3 and res.summary["disagg"]["kv_transfer_bytes_total"] == 0.0
