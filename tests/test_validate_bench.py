"""kvsim validate with torch: quick microbenchmarks, calibrate/compare CLI, e2e loop (CPU), CUDA (gpu)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner

from kvsim.commands.validate import app

pytestmark = pytest.mark.torch

#: Achieved rates may exceed the recorded peak a little: the bandwidth peak is the best
#: repeat of the stream/copy/GEMV kernels while others (outputs allocated hot in cache, small
#: working sets in L2) can beat it; the CPU turbo clock exceeds the nominal clock used for
#: FLOP/s. 1.5x still catches wrong work formulas (a factor-2 FLOP or byte count slip).
SAFETY = 1.5


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    from kvsim.validate.runner import run_benchmarks

    return run_benchmarks("cpu", quick=True, log=lambda s: None, dtypes=["fp32"],
                          groups=["gemm", "attn_prefill", "attn_decode", "attn_paged", "kivi", "sparse", "memory", "elementwise"])


def test_quick_microbenchmarks_are_sane(quick_results):
    """--quick kernels: positive times, every repeat stored, achieved FLOP/s and bytes/s below 1.5x the local peak."""
    res = quick_results
    assert res.device == "cpu" and res.threads >= 1 and res.torch_version == torch.__version__
    assert {k.group for k in res.kernels} >= {"gemm", "attn_prefill", "attn_decode", "attn_paged", "kivi", "sparse", "memory", "elementwise"}
    gpu = res.measured_gpu
    nominal = res.nominal_gpu
    bw = gpu["memory_bw_bytes_per_s"]
    for k in res.kernels:
        assert len(k.times_s) >= 3 and min(k.times_s) > 0, k.name
        assert k.parts and all(p.get("op") for p in k.parts)
        t = k.median_s
        dt = k.shape.get("dtype", "fp32")
        peak_f = max(gpu["peak_flops_per_s"].get(dt, 0.0), nominal["peak_flops_per_s"].get(dt, 0.0))
        if k.flops:
            assert k.flops / t <= SAFETY * peak_f, (k.name, k.flops / t, peak_f)
        if k.bytes:
            assert k.bytes / t <= SAFETY * bw, (k.name, k.bytes / t, bw)


def test_quick_results_round_trip_and_calibrate_from(tmp_path, quick_results):
    """Results JSON round-trips; `calibrate --from` writes a calibration + hw YAML that estimate-style loading accepts."""
    from kvsim.costmodel.calibration import apply_calibration, load_calibration
    from kvsim.hardware import load_system
    from kvsim.validate.results import load_results, save_results

    rp = tmp_path / "r.json"
    save_results(quick_results, rp)
    assert load_results(rp).model_dump() == json.loads(rp.read_text())
    out = tmp_path / "c.calibration.yaml"
    r = CliRunner().invoke(app, ["calibrate", "--from", str(rp), "--out", str(out)])
    assert r.exit_code == 0, r.output
    cal = load_calibration(out)
    assert cal.dtype == "fp32" and cal.hw == "c.hw.yaml" and "gemm" in cal.efficiencies
    system = apply_calibration(load_system(str(tmp_path / "c.hw.yaml")), cal)
    assert system.eff.gemm.compute == pytest.approx(cal.efficiencies["gemm"]["compute"])
    fitted = [x for x in cal.residuals if x.fitted]
    errs = np.array([abs(x.predicted_s / x.measured_s - 1) for x in fitted])
    assert np.median(errs) < 0.5  # loose: timings on a shared CI machine are noisy
    r = CliRunner().invoke(app, ["compare", "--results", str(rp), "--calibration", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["fitted"]["n"] == len(fitted)


def test_e2e_tiny_runs(tmp_path, quick_results):
    """A few requests through the real loop and the simulator give finite TTFT/TBT on both sides."""
    from kvsim.validate import e2e
    from kvsim.validate.calibrate import make_calibration
    from kvsim.validate.models import resolve_model

    _, _, system = make_calibration(quick_results, "fp32")
    cfg = e2e.E2EConfig(num_requests=6, max_prompt=64, max_output=6, max_num_seqs=4, rate=8.0)
    r = e2e.run_e2e(resolve_model("tiny-llama"), system, cfg, log=lambda s: None)
    assert r["steps"]["n"] >= 6
    for side in ("real", "sim"):
        for m in ("ttft_s", "tbt_s"):
            assert r["all"][side][m]["p50"] > 0
    # loop semantics: every request emitted exactly output_tokens tokens, in time order
    for tt, o in zip(r["requests"]["real_token_times"], r["requests"]["output_tokens"]):
        assert len(tt) == o and np.all(np.diff(tt) > 0)
    for tt, o in zip(r["requests"]["sim_token_times"], r["requests"]["output_tokens"]):
        assert len(tt) == o


@pytest.mark.slow
def test_e2e_quick_cli(tmp_path):
    """`kvsim validate e2e --quick` end to end (calibrates first, ~30 s on 2 cores); its --write-logs files replay
    through `kvsim validate replay` to the measured and simulated numbers e2e itself reports."""
    out, logs = tmp_path / "e2e.json", tmp_path / "logs"
    r = CliRunner().invoke(app, ["e2e", "--quick", "--out", str(out), "--write-logs", str(logs)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["heldout"]["real"]["tbt_s"]["n"] > 0
    for name in ("requests.jsonl", "requests.csv", "bench.json"):
        r = CliRunner().invoke(app, ["replay", str(logs / name), "--meta", str(logs / "meta.json"), "--json"])
        assert r.exit_code in (0, 3), r.output  # 3: beyond tolerance (a contended CI machine), still a full report
        rep = json.loads(r.output)
        for side, key in (("real", "measured"), ("sim", "predicted")):
            assert rep["metrics"]["ttft_s"][key]["mean"] == pytest.approx(data["all"][side]["ttft_s"]["mean"], rel=1e-6)
            assert rep["metrics"]["itl_s"][key]["p50"] == pytest.approx(data["all"][side]["tbt_s"]["p50"], rel=1e-6)


def test_model_decode_matches_prefill():
    """The e2e model's decode step over its cache equals prefilling one token more."""
    from kvsim.validate.e2e_loop import TinyLlama
    from kvsim.validate.models import resolve_model

    m = resolve_model("tiny-llama").model_copy(update={"num_layers": 1, "vocab_size": 512})
    tm = TinyLlama(m, max_seqs=2, max_len=32)
    toks = list(range(1, 12))
    a = tm.step([(0, toks)], [])
    tm.step([(1, toks[:-1])], [])
    b = tm.step([], [(1, toks[-1], len(toks) - 1)])
    assert a == b


@pytest.mark.gpu
def test_cuda_quick_microbenchmarks():
    """On CUDA: quick kernels run with CUDA events, bf16/fp16 GEMMs and pinned H2D copies."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from kvsim.validate.runner import run_benchmarks

    res = run_benchmarks("cuda", quick=True, log=lambda s: None, groups=["gemm", "memory", "h2d"])
    assert res.device_name == torch.cuda.get_device_name()
    assert any(k.group == "h2d" for k in res.kernels)
    assert {k.shape.get("dtype") for k in res.kernels if k.group == "gemm"} == {"bf16", "fp16"}
    assert all(k.timer == "cuda_event" for k in res.kernels)
