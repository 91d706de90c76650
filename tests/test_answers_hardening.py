"""Answers never hold NaN, infinity or placeholders; impossible configurations say why; long
contexts are priced in closed form; every command checks its inputs before long work
(issue 10 reproducers not covered by test_numbers_hardening / test_outputs_hardening)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import time

import numpy as np
import pytest
import yaml

from kvsim.costmodel.deployment import build_deployment
from kvsim.errors import ConfigError, SpecError, TraceError
from kvsim.hardware import HW_DIR, load_system
from kvsim.jsonutil import dumps_strict
from kvsim.methods import make_method
from kvsim.pricing import step as step_mod
from kvsim.pricing.estimate import estimate
from kvsim.pricing.memory import requests_that_fit
from kvsim.costmodel.roofline import PartTime, Timing
from kvsim.traces import load_trace


def cli(*argv: str, cwd=None) -> tuple[int, str, str]:
    """``kvsim ARGV`` in this process: (exit code, stdout, stderr)."""
    import os

    import kvsim.cli

    out, err = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["kvsim", *argv]
    code = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                kvsim.cli.main()
            except SystemExit as exc:
                code = 0 if exc.code is None else exc.code
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return code, out.getvalue(), err.getvalue()


def error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def strict_json(text: str):
    def no_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=no_constant)


# ----------------------------------------------------------------- estimate: bounds and closed form

def test_huge_batch_is_one_line():
    """--batch 99999999999999999999999: one line stating the allowed range, no traceback."""
    code, _, err = cli("estimate", "--batch", "99999999999999999999999")
    assert code == 1
    assert "--batch must be a whole number in [1, 1,000,000]" in error_line(err)


@pytest.mark.parametrize("kwargs", [{"batch": 10**7}, {"batch": 0}, {"batch": True}, {"context": 0},
                                    {"context": 10**16}, {"context": 2.5}])
def test_estimate_library_bounds(kwargs):
    """The library checks context and batch too (whole numbers within their bounds, no booleans)."""
    dep = build_deployment("a100", "llama-3.1-8b")
    args = {"context": 4096, "batch": 1, **kwargs}
    with pytest.raises(ConfigError) as err:
        estimate(dep, make_method("full", dep), args["context"], args["batch"])
    assert "\n" not in str(err.value)


def test_context_beyond_model_needs_opt_in():
    """--context 1e12 beyond the model's 131,072: an error naming --allow-long-context."""
    code, _, err = cli("estimate", "--context", "1000000000000")
    assert code == 1
    assert "131,072" in error_line(err) and "--allow-long-context" in error_line(err)


def test_huge_context_is_fast_and_says_it_does_not_fit():
    """With the opt-in, a 1e12-token context is priced in well under a second (closed form), and
    the answer says the request does not fit instead of giving latencies."""
    t0 = time.perf_counter()
    code, out, err = cli("estimate", "--context", "1000000000000", "--allow-long-context", "--json")
    assert code == 0, err
    assert time.perf_counter() - t0 < 20  # was hours; a few ms of pricing plus start-up under load
    r = strict_json(out)[0]
    assert r["fits"] is False and r["max_batch"] == 0
    assert r["ttft_s"] is None and r["tpot_s"] is None and r["throughput_tok_s"] is None
    # since the fourteenth session the opt-in starts the engine at that context (as `simulate`), so its rotary
    # cache alone, 1e12 tokens x 128 x 2 B = 2.56e14 B = 256 TB, leaves no room (before: 1e12 x 131,072 B/token
    # = 131,072 TB of KV per GPU)
    assert r["reason"].startswith("weights and engine reserve (256.02 TB per GPU) leave no room for KV")


def test_library_ttft_of_a_trillion_tokens_is_fast():
    """estimate() of a 1e12-token prompt takes milliseconds: O(log context) prices."""
    dep = build_deployment("h100", "llama-3.1-8b")
    m = make_method("full", dep)
    t0 = time.perf_counter()
    r = estimate(dep, m, 10**12, 1)
    assert time.perf_counter() - t0 < 2.0
    assert np.isfinite(r.ttft_s) and r.ttft_s > 0


def _affine_step(calls: list):
    def step(k: float) -> Timing:
        calls.append(k)
        s = 2.0 + 3.0 * k
        return Timing(s, (PartTime("p", "gemm", "gpu", s, "hbm", {"hbm": s}),))
    return step


def test_sum_steps_exact_for_affine_steps():
    """sum_{k=0}^{999} (2 + 3k) = 2*1000 + 3*999*1000/2 = 2,000 + 1,498,500 = 1,500,500, from 3 prices."""
    calls: list = []
    pairs = step_mod.sum_steps(_affine_step(calls), 0, 999)
    t = step_mod.merge_timings([p for p, _ in pairs], [w for _, w in pairs])
    assert t.total_s == pytest.approx(1_500_500, rel=1e-12)
    assert t.parts[0].seconds == pytest.approx(1_500_500, rel=1e-12)
    assert t.parts[0].resource_s["hbm"] == pytest.approx(1_500_500, rel=1e-12)
    assert len(calls) == 3


def test_sum_steps_around_a_kink():
    """sum_{k=0}^{9999} max(10, k) = 11*10 + (sum_{k=0}^{9999} k - sum_{k=0}^{10} k)
    = 110 + 49,995,000 - 55 = 49,995,055, within the tolerance, from few prices."""
    calls: list = []

    def step(k: float) -> Timing:
        calls.append(k)
        s = max(10.0, k)
        return Timing(s, (PartTime("p", "gemm", "gpu", s, "hbm", {"hbm": s}),))

    pairs = step_mod.sum_steps(step, 0, 9999)
    total = sum(w * p.total_s for p, w in pairs)
    assert total == pytest.approx(49_995_055, rel=step_mod.PREFILL_SUM_RTOL)
    assert len(calls) < 200


def test_long_prompt_ttft_matches_step_by_step_sum(monkeypatch):
    """A 5M-token prompt in 8192-token chunks (611 steps, past EXACT_PREFILL_STEPS): the summed
    TTFT and every part agree with pricing each step within 1e-6 (H100 profile: p-norm blends)."""
    dep = build_deployment("h100", "llama-3.1-8b")
    for name in ("full", "h2o", "magicpig", "streamingllm"):
        sm = step_mod.StepModel(dep, make_method(name, dep))
        fast = sm.prefill_request_timing(5_000_000, 8192)
        monkeypatch.setattr(step_mod, "EXACT_PREFILL_STEPS", 10**9)
        exact = sm.prefill_request_timing(5_000_000, 8192)
        monkeypatch.setattr(step_mod, "EXACT_PREFILL_STEPS", 512)
        assert float(fast.total_s) == pytest.approx(float(exact.total_s), rel=1e-6), name
        for a, b in zip(fast.parts, exact.parts):
            assert (a.name, a.bound) == (b.name, b.bound)
            assert float(a.seconds) == pytest.approx(float(b.seconds), rel=1e-6, abs=1e-6 * float(exact.total_s))


# ----------------------------------------------------------------- no placeholders, impossible rows say why

def test_requests_that_fit():
    """75 bytes hold 2 requests of 30 (75 // 30); a request needing no bytes is not limited (None);
    a negative budget holds none."""
    assert requests_that_fit(75, 30) == 2
    assert requests_that_fit(100, 0) is None
    assert requests_that_fit(-1, 0) == 0
    assert requests_that_fit(-1, 30) == 0


def test_no_placeholder_for_unlimited_host_memory():
    """A method that needs no host memory: max_batch_host is null ('not limited by memory'), never 1000000."""
    code, out, err = cli("estimate", "--json")
    assert code == 0, err
    r = strict_json(out)[0]
    assert r["max_batch_host"] is None and r["max_batch"] == r["max_batch_gpu"] > 0
    assert "1000000" not in out
    code, out, _ = cli("estimate")
    assert "not limited by memory" in out


def test_batch_that_does_not_fit_shows_no_latencies():
    """estimate --batch beyond memory: the table says 'does not fit' with the reason; JSON has null TBT."""
    code, out, err = cli("estimate", "--context", "131072", "--batch", "1000", "--no-breakdown")
    assert code == 0, err
    assert "does not fit in memory" in out and "exceeds the" in out
    code, out, _ = cli("estimate", "--context", "131072", "--batch", "1000", "--json")
    r = strict_json(out)[0]
    assert r["fits"] is False and r["tpot_s"] is None and r["throughput_tok_s"] is None
    assert r["ttft_s"] is not None  # one request alone fits
    assert r["reason"].startswith("batch 1000 exceeds the")


def test_json_is_strict():
    """A non-finite number never reaches JSON output: it is an error naming where it is."""
    assert dumps_strict({"a": [1.0, 2]}) == '{"a": [1.0, 2]}'
    with pytest.raises(ValueError, match=r"a\[1\]"):
        dumps_strict({"a": [1.0, float("inf")]})


def test_trace_info_of_one_request_has_no_infinite_rate():
    """One request: the mean rate is undefined (null / '-'), not inf; the CV is null, not NaN."""
    code, out, _ = cli("trace", "info", "azure-conv", "--limit", "1", "--json")
    assert code == 0
    s = strict_json(out)
    assert s["mean_rate_per_s"] is None and s["interarrival_cv"] is None
    code, out, _ = cli("trace", "info", "azure-conv", "--limit", "1")
    assert not re.search(r"\b(inf|nan)\b", out, re.I)


# ----------------------------------------------------------------- plan

def test_plan_uses_auto_dtypes():
    """plan configurations default to estimate's 'auto' dtypes: fp16 on V100 (no bf16), bf16 on A100."""
    from kvsim.plan.evaluate import build
    from kvsim.plan.schema import ConfigSpec

    dep, _ = build(ConfigSpec(hw="v100", model="llama-3.1-8b", method="full"))
    assert (dep.weight_dtype, dep.kv_dtype, dep.act_dtype) == ("fp16", "fp16", "fp16")
    dep, _ = build(ConfigSpec(hw="a100", model="llama-3.1-8b", method="full"))
    assert dep.weight_dtype == "bf16"


def test_plan_v100_runs_and_json_is_strict():
    """kvsim plan --hw v100 finds a rate above 0 (fp16), and its --json is strict JSON."""
    code, out, err = cli("plan", "--hw", "v100", "--num-requests", "4", "--max-output-tokens", "16", "--rel-tol", "0.5",
                         "--executor", "serial", "--no-cache", "--no-progress", "--json")
    assert code == 0, err
    plan = strict_json(out)
    assert plan["configs"][0]["max_rate_per_s"] > 0 and plan["configs"][0]["error"] is None


def test_plan_exits_nonzero_when_nothing_runs():
    """Llama-2-70B weights do not fit one A100 or 4090: each row says why, and plan exits 1."""
    code, out, err = cli("plan", "--model", "llama-2-70b", "--hw", "a100,4090", "--executor", "serial", "--no-cache",
                         "--no-progress")
    assert code == 1
    line = error_line(err)  # the first configuration's reason, then how many more
    assert line.startswith("error: no configuration can run: ") and "weights" in line and "(and 1 more;" in line
    assert out.count("leave no room") + out.count("do not fit") + out.count("does not fit") >= 2 or "weights" in out


def _point(**kw):
    from kvsim.plan.schema import PointResult, Stats

    base = dict(rate_per_s=0.002, num_requests=4, ttft_s=Stats(), itl_s=Stats(), e2el_s=Stats(),
                throughput_output_tok_s=0.0, requests_completed=0, requests_rejected=0)
    return PointResult(**{**base, **kw})


def test_max_rate_zero_says_why():
    """A row with max rate 0 says what the lowest rate probed missed: rejections by reason, or
    which percentile exceeded the SLO by how much."""
    from kvsim.plan.ratesearch import Probe, RateSearch
    from kvsim.plan.result import why_infeasible
    from kvsim.plan.schema import SLO, Stats

    slo = SLO(ttft_s=2, itl_s=0.1)
    rejected = _point(requests_rejected=4, rejected_reasons={"gpu_memory": 4})
    found = RateSearch(0.0, 0.004, [Probe(0.004, False, _point(rate_per_s=0.004)), Probe(0.002, False, rejected)])
    assert why_infeasible(found, slo) == ("SLO not met even at 0.002 req/s: 4/4 requests rejected "
                                          "(4 do not fit in GPU KV memory)")
    slow = _point(requests_completed=4, ttft_s=Stats(p99=121.0), itl_s=Stats(p99=3.7))
    found = RateSearch(0.0, 0.002, [Probe(0.002, False, slow)])
    assert why_infeasible(found, slo) == "SLO not met even at 0.002 req/s: p99 TTFT 121 s > 2 s and p99 ITL 3.7 s > 100 ms"
    assert why_infeasible(RateSearch(1.0, 2.0, [Probe(1.0, True, slow)]), slo) is None


def test_accuracy_only_for_the_model_and_precision():
    """Published RULER numbers apply to the model they were measured on (name or alias) with
    16-bit weights and KV; MegaBeam's rows never show for Llama, nor Llama's for Mistral."""
    from kvsim.methods._published import applies_to

    def rows(model, **dtypes):
        dep = build_deployment("a100", model, **dtypes)
        return [(a.model, a.benchmark) for a in make_method("full", dep).published_accuracy() if applies_to(a, dep)]

    llama = rows("llama-3.1-8b")
    assert ("Llama-3.1-8B-Instruct", "RULER-avg") in llama and all(m == "Llama-3.1-8B-Instruct" for m, _ in llama)
    assert {m for m, _ in rows("megabeam-mistral-7b-512k")} == {"MegaBeam-Mistral-7B-512K"}
    assert rows("mistral-7b-v0.1") == []
    assert rows("llama-3.1-8b", weight_dtype="fp8") == []


# ----------------------------------------------------------------- options checked before the work

def test_time_scale_that_overflows_arrivals():
    """--time-scale 1e-320 (1/x overflows): a one-line error, not a NaN span."""
    with pytest.raises(TraceError) as err:
        load_trace("burstgpt-sample", time_scale=1e-320)
    assert "time_scale" in str(err.value) and "\n" not in str(err.value)
    code, _, err = cli("simulate", "--time-scale", "1e-320", "--num-requests", "3")
    assert code == 1 and "time_scale" in error_line(err)


@pytest.mark.parametrize("flag, needle", [("--slo-ttft", "must be a duration > 0"), ("--slo-tpot", "must be a duration > 0"),
                                          ("--slo-itl", "must be a duration > 0"), ("--rate", "must be a finite number > 0")])
def test_simulate_rejects_non_finite_options(flag, needle):
    """simulate --slo-ttft inf (found by the fuzzer): a one-line error, not a traceback."""
    code, _, err = cli("simulate", flag, "inf", "--num-requests", "3", "--json")
    assert code == 1 and f"{flag} {needle}" in error_line(err)


def test_fetch_timeout_inf(tmp_path):
    """trace fetch --timeout inf or 25h (over a day): rejected before any download is tried; nothing written."""
    code, out, err = cli("trace", "fetch", "burstgpt", "--timeout", "inf", "--dest", str(tmp_path))
    assert code == 1 and "--timeout must be a duration > 0 such as 50ms, 2s or 1.5min" in error_line(err)
    assert "downloading" not in err and list(tmp_path.iterdir()) == []
    code, out, err = cli("trace", "fetch", "burstgpt", "--timeout", "25h", "--dest", str(tmp_path))
    assert code == 1 and "--timeout must be a number of seconds in (0, 86400], got 90000.0" in error_line(err)  # 25 x 3600


def _gpu_yaml(tmp_path, efficiency):
    data = yaml.safe_load((HW_DIR / "gpus" / "a100-sxm4-80gb.yaml").read_text())
    data["efficiency"] = efficiency
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("eff, needle", [
    ({"gemm": {"compute": 5}}, "efficiency: gemm.compute: must be in (0, 1] (got 5.0)"),
    ({"gemm": {"computee": 0.5}}, "efficiency: gemm.computee: unknown field (fields: compute, memory, overhead_s"),
])
def test_bad_efficiency_override_is_one_line(tmp_path, eff, needle):
    """A bad GPU efficiency override: one line naming the field, not pydantic's multi-line text."""
    with pytest.raises(SpecError) as err:
        load_system(_gpu_yaml(tmp_path, eff))
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("argv, listing", [
    (["estimate", "--hw", "a1000"], "hardware"), (["estimate", "--model", "llama-9"], "models"),
])
def test_unknown_name_points_at_a_working_list_command(argv, listing):
    """'see `kvsim list X`' names a command that works (plain `kvsim list` needs a kind)."""
    code, _, err = cli(*argv)
    assert code == 1 and f"see `kvsim list {listing}`" in error_line(err)
    code, out, _ = cli("list", listing)
    assert code == 0 and out.strip()


def test_host_spec_needs_fp32(tmp_path):
    """A host without an fp32 peak (every dtype falls back to it) is rejected (found by the fuzzer)."""
    from kvsim.hardware.spec import HostSpec
    from kvsim.specbase import load_yaml_as

    data = yaml.safe_load((HW_DIR / "hosts" / "epyc-7763.yaml").read_text())
    data["peak_flops_per_s"] = {"bf16": 1e12}
    path = tmp_path / "host.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="must include fp32"):
        load_yaml_as(HostSpec, path)


def test_results_file_not_utf8(tmp_path):
    """A non-UTF-8 or deeply nested results file is a one-line SpecError."""
    from kvsim.validate.results import load_results

    bad = tmp_path / "r.json"
    bad.write_bytes(b"\xff\xfe{}")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_results(bad)
    bad.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpecError, match="invalid JSON"):
        load_results(bad)


@pytest.mark.torch
def test_validate_e2e_checks_trace_before_calibrating(tmp_path):
    """validate e2e with a bad --trace fails before the minutes of calibration."""
    pytest.importorskip("torch")
    code, out, err = cli("validate", "e2e", "--trace", "nosuchtrace", "--out", str(tmp_path / "e.json"))
    assert code == 1 and "unknown trace 'nosuchtrace'" in error_line(err)
    assert "calibrating" not in out


def test_float_clip_options_are_whole_numbers():
    """max_prompt_tokens=1000.0 (a whole float, as JSON or YAML give it) clips like 1000 (found by
    the fuzzer: it raised a numpy casting error)."""
    tr = load_trace("azure-conv", max_prompt_tokens=1000.0, max_output_tokens=60.0, limit=5)
    assert tr.prompt_tokens.dtype == np.int64 and tr.prompt_tokens.max() <= 1000 and tr.output_tokens.max() <= 60
    # first rows of AzureLLMInferenceTrace_conv.csv: prompts 374, 396, 879; outputs 44, 109 -> 60, 55
    assert tr.prompt_tokens[:3].tolist() == [374, 396, 879] and tr.output_tokens[:3].tolist() == [44, 60, 55]


def test_engine_settings_are_bounded():
    """--max-num-seqs 99999999999999999999999 (found by the fuzzer: numpy 'Maximum allowed
    dimension exceeded'): a usage error on the CLI, a validation error in the library."""
    from pydantic import ValidationError

    from kvsim.sim.config import SimConfig

    code, _, err = cli("simulate", "--max-num-seqs", "99999999999999999999999", "-n", "2")
    assert code == 2 and "--max-num-seqs" in err
    with pytest.raises(ValidationError):
        SimConfig(max_num_seqs=10**7)
    with pytest.raises(ValidationError):
        SimConfig(max_num_batched_tokens=2**31)


def test_digest_rate_of_simultaneous_arrivals_is_finite():
    """Arrivals 1e-313 s apart (found by the fuzzer: (N-1)/span overflowed to inf): the digest's
    rate is 0, as for arrivals at one instant."""
    from kvsim.plan.digest import digest
    from kvsim.sim.replica import SimConfig, simulate
    from kvsim.traces.base import Trace

    dep = build_deployment("a100", "llama-3.1-8b")
    tr = Trace("t", np.array([0.0, 1e-313, 2e-313]), np.array([10, 20, 30]), np.array([2, 2, 2]))
    p = digest(simulate(dep, make_method("full", dep), tr, SimConfig()))
    assert p.rate_per_s == 0.0 and p.requests_completed == 3


def test_layer_count_is_bounded(tmp_path):
    """num_layers: 2147483647 (found by the fuzzer: MagicPIG's dense-layer list took 24 GB and the
    process was killed) is rejected, stating the plausible range."""
    from kvsim.models import MODELS_DIR, load_model

    data = yaml.safe_load((MODELS_DIR / "llama-3.1-8b.yaml").read_text())
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({**data, "num_layers": 2**31 - 1}))
    with pytest.raises(SpecError, match=r"num_layers: must be in \[1, 10000\]"):
        load_model(str(path))


def test_windowed_models_say_that_windows_are_priced_as_full_attention():
    """estimate and simulate say so for a model with sliding-window layers (a user audit: Mistral-7B-v0.1's
    32K KV printed as 4.29 GB, 8x its 4,096-token rolling buffer, without a word); not for Llama-3.1-8B."""
    code, _, err = cli("estimate", "--model", "mistral-7b-v0.1", "--context", "32768", "--no-breakdown")
    assert code == 0 and "has windowed attention (4,096 tokens on 32 of 32 attention layers)" in err
    code, _, err = cli("estimate", "--context", "32768", "--no-breakdown")
    assert code == 0 and "windowed attention" not in err


def test_batch_above_max_num_seqs_sizes_the_hybrid_state_for_the_batch():
    """Jamba at TP 2, --batch 1000 with --max-num-seqs 256: every running sequence holds its SSM state, so the
    reserve is that of an engine of 1,000 sequences (a user audit found 256 slots: 1.12 GB instead of 4.36 GB).
    28 SSM layers x (8192 * 16 + 3 * 8192) = 4,358,144 elements x 2 B / 2 GPUs = 4,358,144 B per sequence."""
    import json as _json

    base = ("estimate", "--hw", "h100", "--model", "jamba-v0.1", "--tp", "2", "--context", "1024", "--json")
    code, out, err = cli(*base, "--batch", "1000")
    assert code == 0 and "priced as an engine of 1,000 sequences" in err
    code, out2, _ = cli(*base, "--batch", "1000", "--max-num-seqs", "1000")
    a, b = _json.loads(out)[0], _json.loads(out2)[0]
    assert a["memory_gpu_bytes"] == b["memory_gpu_bytes"]
    code, out3, _ = cli(*base, "--batch", "256")
    c = _json.loads(out3)[0]
    # 744 more state slots of 4,358,144 B, plus the sampler's 744 more rows (both in the reserve)
    assert a["activation_reserve_bytes"] - c["activation_reserve_bytes"] >= 744 * 4_358_144


def test_prefix_method_refused_on_a_hybrid_model():
    """prefix with a hit ratio on Jamba would skip the SSM layers' prefill without their cached state: refused
    in one line (hit_ratio=0 is full)."""
    code, _, err = cli("estimate", "--hw", "h100", "--model", "jamba-v0.1", "--tp", "2", "--method", "prefix")
    assert code == 1 and "28 state-space (SSM) layers" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("estimate", "--hw", "h100", "--model", "jamba-v0.1", "--tp", "2", "--method", "prefix:hit_ratio=0",
                       "--no-breakdown")
    assert code == 0, err
