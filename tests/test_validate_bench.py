"""kvsim validate with torch: quick microbenchmarks, calibrate/compare CLI, e2e loop (CPU), CUDA (gpu)."""

from __future__ import annotations

import json
from pathlib import Path

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
    # (--allow-contended: CI machines are shared; this checks the plumbing, not the accuracy)
    r = CliRunner().invoke(app, ["calibrate", "--from", str(rp), "--out", str(out), "--allow-contended"])
    assert r.exit_code == 0, r.output
    cal = load_calibration(out)
    assert cal.dtype == "fp32" and cal.hw == "c.hw.yaml" and "gemm" in cal.efficiencies
    system = apply_calibration(load_system(str(tmp_path / "c.hw.yaml")), cal)
    assert system.eff.gemm.compute == pytest.approx(cal.efficiencies["gemm"]["compute"])
    fitted = [x for x in cal.residuals if x.fitted]
    errs = np.array([abs(x.predicted_s / x.measured_s - 1) for x in fitted])
    assert np.median(errs) < 0.5  # loose: timings on a shared CI machine are noisy
    # held-out errors: every fitted kernel predicted by a cross-validation fit that did not see it
    assert all(x.predicted_cv_s and x.predicted_cv_s > 0 for x in fitted)
    assert cal.validation["kfold"]["n"] == len(fitted) and cal.validation["small_to_large"]["n"] > 0
    assert "IN-SAMPLE" in r.output and "5-fold cross-validation" in r.output
    # inputs are checked before anything is fitted or written
    out2 = tmp_path / "d.calibration.yaml"
    r2 = CliRunner().invoke(app, ["calibrate", "--from", str(rp), "--dtype", "bf16", "--out", str(out2), "--allow-contended"])
    assert r2.exit_code == 1 and "no bf16 kernels" in str(r2.exception) and not out2.exists()
    r2 = CliRunner().invoke(app, ["calibrate", "--from", str(rp), "--e2e", str(tmp_path / "none.json"), "--out", str(out2),
                                  "--allow-contended"])
    assert r2.exit_code == 1 and "not found" in str(r2.exception) and not out2.exists()
    r = CliRunner().invoke(app, ["compare", "--results", str(rp), "--calibration", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["fitted"]["n"] == len(fitted)


def test_e2e_tiny_runs(tmp_path, quick_results):
    """A fit run and a report run through the real loop; the simulator's TTFT/TBT are finite; the
    contention verdict and the checks are recorded."""
    from kvsim.validate import e2e
    from kvsim.validate.calibrate import make_calibration
    from kvsim.validate.models import resolve_model

    _, _, system = make_calibration(quick_results, "fp32", cross_validate=False)
    cfg = e2e.E2EConfig(num_requests=6, max_prompt=64, max_output=6, max_num_seqs=4, rate=8.0)
    r = e2e.run_e2e(resolve_model("tiny-llama"), system, cfg, log=lambda s: None)
    if r["contention"].get("stage") == "before the loops":  # a busy machine: no loop ran, nothing to check
        assert r["contention"]["reasons"] and "steps" not in r
        pytest.skip("machine busy before the loops: " + "; ".join(r["contention"]["reasons"]))
    assert r["steps"]["n"] >= 6 and r["fit_run"]["steps"] >= 6
    assert r["fit_rate_req_s"] == pytest.approx(8.0 * 0.7)
    assert set(r["step_overhead_fit"]) == {"step", "step_seq", "step_token"} and min(r["step_overhead_fit"].values()) >= 0
    for side in ("real", "sim"):
        for m in ("ttft_s", "itl_s"):
            assert r["heldout"][side][m]["p50"] > 0
    assert isinstance(r["contention"]["reasons"], list) and r["contention"]["probe_before"]["median_s"] > 0
    assert [(c["metric"], c["stat"]) for c in r["checks"]] == list(e2e.CHECKED)
    assert r["passed"] == all(abs(c["error"]) <= cfg.tolerance for c in r["checks"])
    # loop semantics: every request emitted exactly output_tokens tokens, in time order
    for tt, o in zip(r["requests"]["real_token_times"], r["requests"]["output_tokens"]):
        assert len(tt) == o and np.all(np.diff(tt) > 0)
    for tt, o in zip(r["requests"]["sim_token_times"], r["requests"]["output_tokens"]):
        assert len(tt) == o


def test_e2e_bad_inputs_fail_before_timing(tmp_path):
    """Bad e2e inputs are one-line errors before any calibration or timing."""
    r = CliRunner().invoke(app, ["e2e", "--trace", "no-such-trace", "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 1 and "no-such-trace" in str(r.exception or r.output)
    r = CliRunner().invoke(app, ["e2e", "--calibration", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 1 and "not found" in str(r.exception or r.output)
    r = CliRunner().invoke(app, ["e2e", "--num-requests", "20000", "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 1 and "needs 40000" in str(r.exception or r.output)
    assert not (tmp_path / "e.json").exists()


@pytest.mark.slow
def test_e2e_quick_cli(tmp_path):
    """`kvsim validate e2e --quick` end to end (calibrates first): a report with its checks (exit 0
    or 2), or on a busy machine a refusal (exit 3) that writes nothing. Its --write-logs files replay
    through `kvsim validate replay` to the measured and simulated numbers e2e reports. The loop
    replays arrivals in real time (24 + 24 requests at ~0.4 req/s: ~2 min), so the test runs 8 + 8."""
    from kvsim.commands.validate import BeyondTolerance, Contended

    out, logs = tmp_path / "e2e.json", tmp_path / "logs"
    r = CliRunner().invoke(app, ["e2e", "--quick", "--num-requests", "8", "--out", str(out), "--write-logs", str(logs)])  # (CliRunner: exit 1 for any raised KvsimError)
    if isinstance(r.exception, Contended):  # the real CLI exits 3 (test_e2e_exit_codes)
        assert "busy with other work" in str(r.exception) and not out.exists()
        return
    assert r.exit_code == 0 or isinstance(r.exception, BeyondTolerance), r.output
    data = json.loads(out.read_text())
    assert data["heldout"]["real"]["itl_s"]["n"] > 0 and not data["contention"]["reasons"]
    assert (r.exit_code == 0) == data["passed"]
    for name in ("requests.jsonl", "requests.csv", "bench.json"):
        r = CliRunner().invoke(app, ["replay", str(logs / name), "--meta", str(logs / "meta.json"), "--json"])
        assert r.exit_code in (0, 3), r.output  # 3: beyond tolerance (a contended CI machine), still a full report
        rep = json.loads(r.output)
        for side, key in (("real", "measured"), ("sim", "predicted")):
            assert rep["metrics"]["ttft_s"][key]["mean"] == pytest.approx(data["heldout"][side]["ttft_s"]["mean"], rel=1e-6)
            assert rep["metrics"]["itl_s"][key]["p50"] == pytest.approx(data["heldout"][side]["itl_s"]["p50"], rel=1e-6)


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


def _fake_e2e(reasons, errors):
    """A run_e2e stand-in: recorded contention ``reasons`` and held-out relative ``errors`` per check."""
    from kvsim.validate import e2e

    def run(model, system, cfg, **kw):
        chk = e2e.checks({"ttft_s": {"p50": errors[0], "mean": errors[1]}, "itl_s": {"p50": errors[2], "mean": errors[3]}},
                         cfg.tolerance)
        st = {"n": 1, "median": 0.1, "p90": 0.2}
        stats = {"n": 3, "mean": 0.1, "p50": 0.1, "p90": 0.1, "p99": 0.1}
        return {"contention": {"reasons": reasons}, "step_overhead_fit": {"step": 1e-3, "step_seq": 0.0, "step_token": 0.0},
                "fit_run": {"requests": [24, 48], "steps": 10}, "fit_rate_req_s": 1.0, "rate_req_s": 1.4,
                "steps": {"n": 5, "all": st, "single_sequence_decode": st, "other": st}, "config": cfg.__dict__,
                "heldout": {"real": {"ttft_s": stats, "itl_s": stats}, "sim": {"ttft_s": stats, "itl_s": stats}},
                "checks": chk, "passed": all(c["ok"] for c in chk)}
    return run


@pytest.mark.parametrize("reasons, errors, code", [
    (["other processes kept 0.90 cores busy (limit 0.30)"], (0.0, 0.0, 0.0, 0.0), 3),
    ([], (0.05, -0.1, 0.3, 0.0), 2),  # ITL p50 +30 % > 25 %
    ([], (0.05, -0.1, 0.2, 0.0), 0),
])
def test_e2e_exit_codes(tmp_path, monkeypatch, capsys, reasons, errors, code):
    """Contended: exit 3, one error line, nothing written; beyond --tolerance: exit 2 after the table; else 0."""
    import sys

    from kvsim import cli
    from kvsim.validate import e2e

    monkeypatch.setattr(e2e, "run_e2e", _fake_e2e(reasons, errors))
    out = tmp_path / "e.json"
    from kvsim.commands.validate import COMMITTED

    cal = str(COMMITTED) + ".calibration.yaml"
    monkeypatch.setattr(sys, "argv", ["kvsim", "validate", "e2e", "--quick", "--calibration", cal, "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
        raise SystemExit(0)
    assert exc.value.code == code
    err = capsys.readouterr().err
    if code == 3:
        assert err.count("error:") == 1 and "busy with other work" in err and not out.exists()
    else:
        assert out.exists() and ("ITL p50 +30.0%" in err) == (code == 2)


def test_e2e_out_never_replaces_kernel_timings(tmp_path):
    """`validate e2e --out cpu-tiny-llama.json` (the kernel results a calibration is fitted from) passed the
    output check: any JSON with "kernels" counted as kvsim's (user audit). It is refused before measuring."""
    import shutil

    from kvsim.commands.validate_common import check_outputs
    from kvsim.fileio import OutputError

    kernels = tmp_path / "k.json"
    shutil.copy(Path(__file__).parents[1] / "kvsim" / "validate" / "results" / "cpu-tiny-llama.json", kernels)
    with pytest.raises(OutputError, match="holds another kind of result \\(not e2e\\)"):
        check_outputs(kernels, [], None, json_kind="e2e")
    e2e = tmp_path / "e.json"
    e2e.write_text('{"kind": "kvsim-validate-e2e"}')
    check_outputs(e2e, [], None, json_kind="e2e")  # its own earlier report: replaced
    check_outputs(kernels, [], None)  # (kernel timings replacing kernel timings: as before)
