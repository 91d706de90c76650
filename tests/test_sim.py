"""The serving simulator: exactness against estimate, hand-checked timings, memory pressure,
preemption, swap, prefix caching, rejection, and the CLI."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from kvsim.pricing.estimate import estimate
from kvsim.methods import make_method, method_names
from kvsim.sim.request import RequestStatus
from kvsim.sim.scheduler import PreemptionMode
from kvsim.sim.replica import SimConfig, simulate
from kvsim.pricing.step import StepModel
from test_sim_support import ExactStep, FakeStep, a100_llama, make_trace, util_for_blocks

REL = 1e-12


def _lone_methods():
    dep = a100_llama()
    out = []
    for name in method_names():
        try:
            m = make_method(name, dep)
        except Exception:  # e.g. mla on a non-MLA model
            continue
        eff = float(m.effective_prompt_tokens(1000.0))
        if eff == int(eff) and float(m.split_prompt(eff)[1]) == int(m.split_prompt(eff)[1]):
            out.append(name)
    return out


@pytest.mark.parametrize("name", _lone_methods())
def test_lone_request_matches_estimate(name):
    """One request (prompt C, 3 output tokens): TTFT = estimate's ttft_s and the first TBT = its
    tbt_s at context C, batch 1 (same StepModel, same chunking); the second TBT prices ctx C + 1."""
    dep = a100_llama()
    m = make_method(name, dep)
    C = 1000
    res = simulate(dep, m, make_trace([0.0], [C], [3]), SimConfig(record_token_times=True))
    est = estimate(dep, m, C, 1)
    t = res.records.token_times[0]
    ctx = float(m.effective_prompt_tokens(float(C)))
    assert res.records.status[0] == RequestStatus.FINISHED and len(t) == 3
    assert t[0] == pytest.approx(est.ttft_s, rel=REL)
    assert t[1] - t[0] == pytest.approx(est.tpot_s, rel=REL)
    step = StepModel(dep, m)
    t2 = float(step.time_s(decode_ctx=np.array([ctx + 1]), decode_prompt=np.array([ctx])))
    assert t[2] - t[1] == pytest.approx(t2, rel=REL)
    assert res.summary["ttft_s"]["mean"] == pytest.approx(est.ttft_s, rel=REL)


def test_lone_long_prompt_is_chunked_like_estimate():
    """A 20,000-token prompt with an 8192-token budget: 3 prefill steps, TTFT = estimate's chunked TTFT."""
    dep = a100_llama()
    m = make_method("full", dep)
    res = simulate(dep, m, make_trace([0.0], [20000], [2]), SimConfig(record_token_times=True))
    est = estimate(dep, m, 20000, 1, max_num_batched_tokens=8192)
    assert res.records.token_times[0][0] == pytest.approx(est.ttft_s, rel=REL)
    assert res.summary["sim"]["steps"] == 3 + 1


def test_three_requests_hand_checked_chunked():
    """Step time 10 ms + 1 ms per prefill token, chunked prefill (decodes first, then chunks).

    R0 (t=0, P=100, O=3), R1 (t=0.005, P=50, O=2), R2 (t=0.5, P=20, O=1):
      [0, .110]     prefill R0 (100 tok): 10+100 ms          -> R0 token 1 at .110
      [.110, .170]  decode R0 + prefill R1 (50 tok): 10+50 ms -> R0 token 2, R1 token 1 at .170
      [.170, .180]  decode R0, R1: 10 ms                     -> R0 token 3, R1 token 2: both done
      [.500, .530]  prefill R2 (20 tok): 10+20 ms            -> R2 token 1: done
    """
    dep = a100_llama()
    tr = make_trace([0.0, 0.005, 0.5], [100, 50, 20], [3, 2, 1])
    res = simulate(dep, make_method("full", dep), tr, SimConfig(record_token_times=True), step_model=FakeStep())
    r = res.records
    np.testing.assert_allclose(r.first_token_s, [0.110, 0.170, 0.530], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.finish_s, [0.180, 0.180, 0.530], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.scheduled_s, [0.0, 0.110, 0.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.tbt_max_s[:2], [0.060, 0.010], rtol=0, atol=1e-12)
    s = res.summary
    assert s["ttft_s"]["mean"] == pytest.approx((0.110 + 0.165 + 0.030) / 3, abs=1e-12)
    assert s["itl_s"]["mean"] == pytest.approx((0.060 + 0.010 + 0.010) / 3, abs=1e-12)  # R0: .06, .01; R1: .01
    assert s["tpot_s"]["mean"] == pytest.approx((0.035 + 0.010) / 2, abs=1e-12)  # R0 (.18-.11)/2, R1 .01
    assert s["throughput_output_tok_s"] == pytest.approx(6 / 0.530)


def test_three_requests_hand_checked_prefill_first():
    """Same requests without chunked prefill (vLLM v0): R1's prefill is a step of its own and stalls R0.

      [0, .110] prefill R0; [.110, .170] prefill R1 only (R0 waits);
      [.170, .180] decode R0, R1 -> R1 done; [.180, .190] decode R0 -> done; [.5, .53] R2.
    R0's intervals: .180 - .110 = .070, then .010.
    """
    dep = a100_llama()
    tr = make_trace([0.0, 0.005, 0.5], [100, 50, 20], [3, 2, 1])
    res = simulate(dep, make_method("full", dep), tr, SimConfig(chunked_prefill=False, record_token_times=True),
                   step_model=FakeStep())
    r = res.records
    np.testing.assert_allclose(r.first_token_s, [0.110, 0.170, 0.530], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.finish_s, [0.190, 0.180, 0.530], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.token_times[0], [0.110, 0.180, 0.190], rtol=0, atol=1e-12)
    assert r.tbt_max_s[0] == pytest.approx(0.070, abs=1e-12)


def _tight(n_blocks, **kw):
    dep = a100_llama()
    m = make_method("full", dep)
    cfg = SimConfig(**kw)
    return dep, m, cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, n_blocks, cfg)})


def _burst(n=12, prompt=300, output=200):
    return make_trace(np.arange(n) * 1e-3, [prompt] * n, [output] * n)


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_preemption_under_tight_memory(mode):
    """120 blocks (1,920 tokens) for 12 requests of 500 tokens: preemptions happen and are counted,
    every request still completes with all its tokens, and the pool is never over capacity."""
    dep, m, cfg = _tight(120, preemption_mode=PreemptionMode(mode), record_token_times=True)
    res = simulate(dep, m, _burst(), cfg)
    s = res.summary
    assert s["num_gpu_blocks"] == 120
    assert s["preemptions"] > 0 and s["requests_preempted"] > 0 and s["requests_completed"] == 12
    assert s["peak_kv_gpu_bytes"] <= s["kv_gpu_capacity_bytes"]
    assert [len(t) for t in res.records.token_times] == [200] * 12
    assert res.timeline["kv_gpu_bytes"].max() <= s["kv_gpu_capacity_bytes"]
    if mode == "swap":
        assert s["swap_out_bytes"] > 0 and s["swap_out_bytes"] == s["swap_in_bytes"]
        assert s["peak_kv_host_bytes"] > 0


def test_swap_charges_pcie_time():
    """SWAP moves KV over PCIe through the roofline: a 100x slower link delays the same schedule."""
    dep, m, cfg = _tight(120, preemption_mode=PreemptionMode.SWAP)
    fast = simulate(dep, m, _burst(), cfg, step_model=FakeStep(0.01, 0.0))
    link = dep.system.gpu_host_link
    slow_link = link.model_copy(update={"bw_bytes_per_s": link.bw_bytes_per_s / 100})
    slow_dep = replace(dep, system=replace(dep.system, gpu_host_link=slow_link))
    slow = simulate(slow_dep, make_method("full", slow_dep), _burst(), cfg, step_model=FakeStep(0.01, 0.0))
    assert fast.summary["swap_out_bytes"] == slow.summary["swap_out_bytes"] > 0
    assert fast.summary["swap_time_s"] > 0
    assert slow.summary["swap_time_s"] == pytest.approx(100 * fast.summary["swap_time_s"], rel=0.05)
    assert slow.summary["makespan_s"] > fast.summary["makespan_s"]


def test_prefix_caching_skips_cached_blocks():
    """Two 1,100-token prompts sharing two 512-token blocks: the second prefills only 76 tokens
    after 1,024 cached ones; without prefix caching it prefills all 1,100."""
    dep = a100_llama()
    prefix = [(7, 8, 100), (7, 8, 200)]
    tr = make_trace([0.0, 1.0], [1100, 1100], [4, 4], prefix=prefix, pb=512)
    for on, want in ((True, [((1100,), (0,)), ((76,), (1024,))]), (False, [((1100,), (0,)), ((1100,), (0,))])):
        fake = FakeStep()
        res = simulate(dep, make_method("full", dep), tr, SimConfig(enable_prefix_caching=on), step_model=fake)
        assert fake.prefills == want
        assert res.records.cached_tokens.tolist() == ([0, 1024] if on else [0, 0])
    real_on = simulate(dep, make_method("full", dep), tr, SimConfig())
    real_off = simulate(dep, make_method("full", dep), tr, SimConfig(enable_prefix_caching=False))
    ttft = lambda r: r.records.first_token_s[1] - 1.0  # noqa: E731
    assert ttft(real_on) < 0.5 * ttft(real_off)
    assert real_on.summary["cached_prompt_tokens"] == 1024


def test_mooncake_prefix_ids_hit_the_cache():
    """The bundled Mooncake trace reuses prompt blocks: hits are counted and fewer tokens prefilled;
    a method without shareable per-token KV runs with prefix caching off and says so."""
    from kvsim.traces import load_trace

    dep = a100_llama()
    tr = load_trace("mooncake-conversation", limit=120, max_prompt_tokens=16000)
    on = simulate(dep, make_method("full", dep), tr, SimConfig())
    off = simulate(dep, make_method("full", dep), tr, SimConfig(enable_prefix_caching=False))
    assert on.summary["cached_prompt_tokens"] > 0 == off.summary["cached_prompt_tokens"]
    assert on.summary["ttft_s"]["mean"] < off.summary["ttft_s"]["mean"]
    res = simulate(dep, make_method("h2o", dep), tr, SimConfig())
    assert res.summary["cached_prompt_tokens"] == 0 and any("prefix caching off" in n for n in res.summary["notes"])


def test_requests_that_never_fit_are_rejected():
    """Beyond the model's context, or more KV than the whole pool: rejected with a reason, not lost."""
    dep, m, cfg = _tight(100)  # 1,600 tokens of KV
    tr = make_trace([0.0, 0.1, 0.2, 0.3], [500, 130_000, 3000, 400], [10, 2000, 10, 10])
    res = simulate(dep, m, tr, cfg)
    assert res.records.status.tolist() == [RequestStatus.FINISHED, RequestStatus.REJECTED, RequestStatus.REJECTED, RequestStatus.FINISHED]
    assert res.records.reject_reason == {1: "max_context", 2: "gpu_memory"}
    assert res.summary["rejected_reasons"] == {"max_context": 1, "gpu_memory": 1}


def test_fast_forward_equals_step_by_step():
    """Table pricing and runs through finishes give the same times as pricing every run with StepModel."""
    from kvsim.traces import load_trace

    dep = a100_llama()
    tr = load_trace("synthetic-burstgpt", num_requests=150, rate=6.0, seed=4)
    for name in ("full", "quest"):
        m = make_method(name, dep)
        a = simulate(dep, m, tr, SimConfig())
        b = simulate(dep, m, tr, SimConfig(), step_model=ExactStep(StepModel(dep, m)))
        assert a.summary["sim"]["decode_pricing"] == "table" and b.summary["sim"]["pricing_mode"] == "exact"
        np.testing.assert_allclose(a.records.first_token_s, b.records.first_token_s, rtol=1e-9)
        np.testing.assert_allclose(a.records.finish_s, b.records.finish_s, rtol=1e-9)
        np.testing.assert_allclose(a.records.tbt_max_s, b.records.tbt_max_s, rtol=1e-9)
        assert a.summary["itl_s"]["p99"] == pytest.approx(b.summary["itl_s"]["p99"], rel=1e-9)


def test_summary_keys_and_json():
    """summary.json carries the documented keys and is plain JSON."""
    from kvsim.traces import load_trace

    dep = a100_llama()
    tr = load_trace("synthetic-burstgpt", num_requests=40, seed=1)
    res = simulate(dep, make_method("magicpig", dep), tr, SimConfig(slo_ttft_s=1.0, slo_tpot_s=0.05))
    s = json.loads(json.dumps(res.summary))
    for k in ("ttft_s", "itl_s", "e2el_s"):
        assert set(s[k]) >= {"mean", "p50", "p90", "p99"}
    for k in ("tpot_s", "throughput_output_tok_s", "requests_completed", "requests_rejected", "requests_failed_in_trace",
              "peak_kv_gpu_bytes", "peak_kv_host_bytes", "preemptions", "hw", "model", "method", "trace", "config",
              "goodput_req_s", "goodput_fraction"):
        assert k in s, k
    assert s["method"] == "magicpig" and s["peak_kv_host_bytes"] > 0 and s["requests_completed"] == 40
    assert set(res.timeline) == {"t_s", "kv_gpu_bytes", "kv_host_bytes", "running", "waiting"}


def _kvsim(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=cwd, timeout=180)


def test_cli_simulate_json_and_out(tmp_path):
    """`kvsim simulate --json --out DIR` prints the summary and writes the four files."""
    r = _kvsim("simulate", "--trace", "synthetic-burstgpt", "-n", "30", "--method", "full", "--json", "--out", "run",
               "--slo-ttft", "0.5", "--slo-tpot", "0.05", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["requests_completed"] == 30 and s["config"]["max_num_seqs"] == 256
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} == {"manifest.json", "full", ".kvsim-manifest.json"}  # one folder per method, always
    assert {p.name for p in (out / "full").iterdir()} == {"summary.json", "requests.csv", "timeline.csv", "timeline.json"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runs"] == [{"method": "full", "dir": "full", "files": ["requests.csv", "summary.json", "timeline.csv",
                                                                          "timeline.json"]}]
    lines = (out / "full" / "requests.csv").read_text().splitlines()
    assert lines[0].startswith("req_id,arrival_s,scheduled_s,first_token_s,finish_s") and len(lines) == 31
    assert (out / "full" / "timeline.csv").read_text().startswith("bucket_start_s,kv_gpu_bytes_max,")
    prov = json.loads((out / "full" / "summary.json").read_text())["provenance"]
    assert prov["method"]["name"] == "full" and "kv_dtype" in prov["method"]["params"]
    assert len(prov["spec_sha256"]["gpu"]) == 64 and prov["kvsim_version"]


def test_cli_default_trace_and_method_table(tmp_path):
    """The documented default command works on a fresh install; a method list prints one row each."""
    r = _kvsim("simulate", "--hw", "a100", "--method", "magicpig", "--trace", "burstgpt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "magicpig" in r.stdout and "TTFT" in r.stdout
    r = _kvsim("simulate", "--trace", "synthetic-burstgpt", "-n", "20", "--method", "full,kivi,h2o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("full", "kivi", "h2o"):
        assert name in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--preemption", "later"], "later"),
    (["--slo-ttft", "-1"], "--slo-ttft must be a duration > 0 such as 50ms"),
    (["--trace", "nosuchtrace"], "nosuchtrace"),
    (["--method", "kivvi"], "unknown method 'kivvi'"),
])
def test_cli_bad_input_is_one_line(args, needle, tmp_path):
    r = _kvsim("simulate", "-n", "5", "--trace", "synthetic-burstgpt", *args, cwd=tmp_path)
    assert r.returncode != 0 and needle in r.stderr and "Traceback" not in r.stderr


def test_timeline_records_every_launch_and_idles_at_zero():
    """The timeline's gauges are recorded at every launch (they were sampled once per bucket and
    carried forward: an idle 11-hour trace showed a waiting request in 985 of 1,001 buckets). On
    the bundled BurstGPT_3 sample (mostly idle) nothing waits in any bucket, the KV gauge stays
    within the exact peak, and a request that runs shows in the running gauge."""
    import kvsim

    r = kvsim.simulate(hw="a100", trace="burstgpt3-sample")
    tl, s = r.timeline, r.summary
    assert tl["waiting"].max() == 0  # (arrivals during a step are scheduled by the next one: none is left waiting)
    assert 0.95 * s["peak_kv_gpu_bytes"] <= tl["kv_gpu_bytes"].max() <= s["peak_kv_gpu_bytes"]
    first = int(r.requests["scheduled_s"].argmin())
    bucket = int(r.requests["scheduled_s"][first] / tl["t_s"][1])
    assert tl["running"][bucket] >= 1
    # idle buckets (no request in flight anywhere in them) show zeros
    busy = [(a, b) for a, b in zip(r.requests["scheduled_s"], r.requests["finish_s"])]
    w = tl["t_s"][1]
    idle = [j for j, t0 in enumerate(tl["t_s"]) if not any(a < t0 + w and b > t0 for a, b in busy)]
    assert idle and all(tl["running"][j] == 0 and tl["kv_gpu_bytes"][j] == 0 for j in idle)


def test_timeline_follows_the_batch_shrinking_inside_a_decode_run():
    """Three requests at t = 0 with 100, 400 and 800 output tokens and nothing after them: the
    tail is one fast-forwarded decode run, and the timeline's running gauge steps 3 -> 2 -> 1 at
    the finishes inside it (user audit: it held the run's starting batch to the end), and the GPU
    KV gauge is the last request's alone after the second finish (a 100-token prompt + 401..800
    tokens: ceil(501 / 16) = 32 to ceil(900 / 16) = 57 blocks of 16 tokens)."""
    dep = a100_llama()
    res = simulate(dep, make_method("full", dep), make_trace([0.0, 0.0, 0.0], [100, 100, 100], [100, 400, 800]),
                   SimConfig())
    fin = np.sort(res.records.finish_s)
    tl = res.timeline
    t, running, kv = tl["t_s"], tl["running"], tl["kv_gpu_bytes"]
    width = t[1] - t[0]
    after_first = (t > fin[0] + width) & (t + width < fin[1])  # whole buckets between the 1st and 2nd finish
    after_second = (t > fin[1] + width) & (t + width < fin[2])
    assert after_first.any() and after_second.any()
    assert set(running[after_first].tolist()) == {2.0} and set(running[after_second].tolist()) == {1.0}
    block = res.summary["kv_block_bytes"]
    # one 800-token request alone: 100 + 401..800 tokens -> ceil(501/16) = 32 .. ceil(900/16) = 57 blocks
    assert kv[after_second].min() >= 32 * block and kv[after_second].max() <= 57 * block
