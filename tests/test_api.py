"""The Python API (kvsim/api.py): the example of docs/api.md runs, results match the library."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import kvsim
from kvsim.errors import KvsimError

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_docs_example_runs(capsys):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    exec(compile(code, str(DOC), "exec"), {})
    out = capsys.readouterr().out
    assert "TTFT p50 (s):" in out and "best:" in out


def test_simulate_matches_the_library_and_columns_are_per_request():
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.sim.replica import SimConfig, simulate
    from kvsim.traces import load_trace

    r = kvsim.simulate(hw="a100", model="llama-3.1-8b", method="h2o", trace="synthetic-poisson", rate=2.0,
                       num_requests=40, max_num_seqs=64)
    dep = build_deployment("a100", "llama-3.1-8b")
    tr = load_trace("synthetic-poisson", rate=2.0, num_requests=40)
    ref = simulate(dep, make_method("h2o", dep), tr, SimConfig(max_num_seqs=64))
    assert r.summary["ttft_s"] == ref.summary["ttft_s"] and r.summary["tpot_s"] == ref.summary["tpot_s"]
    assert all(len(v) == 40 for v in r.requests.values())
    # TTFT of each request = first token - arrival; vLLM's TPOT = (finish - first) / (output - 1)
    i = 7
    assert r.requests["ttft_s"][i] == pytest.approx(r.requests["first_token_s"][i] - r.requests["arrival_s"][i])
    out = r.requests["output_tokens"][i]
    assert r.requests["tpot_s"][i] == pytest.approx((r.requests["finish_s"][i] - r.requests["first_token_s"][i]) / (out - 1))
    assert np.nanmedian(r.requests["ttft_s"]) == pytest.approx(r.summary["ttft_s"]["p50"])


def test_estimate_and_objects_pass_through():
    dep = kvsim.deployment("h100", "llama-3.1-8b")
    e = kvsim.estimate(hw=dep, method="kivi", context=4096, batch=4)
    assert e.hw == "h100" and e.batch == 4 and e.ttft_s > 0
    tr = kvsim.load_trace("synthetic-poisson", num_requests=5)
    assert kvsim.load_trace(tr) is tr


def test_bad_engine_setting_is_one_line():
    with pytest.raises(KvsimError) as err:
        kvsim.simulate(trace="synthetic-poisson", num_requests=5, max_num_seqs=0)
    assert "max_num_seqs" in str(err.value) and "\n" not in str(err.value)


def test_to_pandas_optional(monkeypatch):
    r = kvsim.simulate(trace="synthetic-poisson", num_requests=10)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(KvsimError, match="needs pandas"):
            r.to_pandas()
        return
    df = r.to_pandas()
    assert len(df) == 10 and df.attrs["summary"] is r.summary


def test_kvsim_plan_is_callable_and_a_package():
    import kvsim.plan.search  # the package is imported: kvsim.plan stays callable

    assert callable(kvsim.plan) and hasattr(kvsim.plan, "search")


def test_trace_objects_take_rate_and_num_requests():
    """simulate(trace=<Trace>, num_requests=50, rate=50) uses the first 50 requests at 50 req/s,
    as a trace name does (they were ignored silently); loading options with a Trace are an error."""
    import pytest

    import kvsim
    from kvsim.errors import KvsimError

    t = kvsim.load_trace("synthetic-poisson", num_requests=200, seed=3)
    a = kvsim.load_trace(t, num_requests=50, rate=50.0)
    assert len(a) == 50 and abs(a.mean_rate_per_s - 50.0) < 1e-9 and a.arrival_s[0] == 0.0
    # (N-1)/span = 50 -> span = 49/50 = 0.98 s
    assert abs(a.duration_s - 0.98) < 1e-12
    r = kvsim.simulate(hw="h100", trace=t, num_requests=20)
    assert r.summary["requests_total"] == 20
    with pytest.raises(KvsimError, match="loading options apply to a trace name or file"):
        kvsim.load_trace(t, limit=3)


def test_estimate_context_beyond_the_model_needs_allow_long_context():
    """As `kvsim estimate --context`: beyond the model's 131,072 tokens is a ConfigError unless
    allow_long_context=True; an unknown keyword is a KvsimError naming it, not a TypeError."""
    import pytest

    import kvsim
    from kvsim.errors import KvsimError

    with pytest.raises(KvsimError, match="exceeds llama-3.1-8b's max context of 131,072 tokens; add allow_long_context=True"):
        kvsim.estimate(context=200_000)
    assert kvsim.estimate(context=200_000, allow_long_context=True).ttft_s > kvsim.estimate(context=100_000).ttft_s
    with pytest.raises(KvsimError, match="unknown argument\\(s\\) contxt"):
        kvsim.estimate(contxt=5)


def test_provenance_records_the_memory_utilization_that_ran():
    """An engine gpu_memory_utilization overrides the deployment's (the KV pool is sized with it);
    the summary's provenance records that value (it recorded the deployment's 0.9)."""
    import kvsim

    r = kvsim.simulate(hw="h100", trace="synthetic-fixed", num_requests=3, gpu_memory_utilization=0.5)
    assert r.summary["provenance"]["deployment"]["gpu_memory_utilization"] == 0.5
    base = kvsim.simulate(hw="h100", trace="synthetic-fixed", num_requests=3)
    assert r.summary["kv_gpu_capacity_bytes"] < base.summary["kv_gpu_capacity_bytes"]
    d = kvsim.deployment("h100", gpu_memory_utilization=0.5)
    assert kvsim.simulate(hw=d, trace="synthetic-fixed", num_requests=3,
                          gpu_memory_utilization=0.9).summary["provenance"]["deployment"]["gpu_memory_utilization"] == 0.9


def test_plan_bad_settings_are_one_line_kvsim_errors():
    """kvsim.plan() with a NaN or zero SLO, no hardware, or an unknown setting raises KvsimError with one
    line (docs/api.md), as simulate() does; it raised pydantic's multi-line ValidationError, and hws=[]
    returned an empty plan (audit)."""
    import kvsim
    from kvsim.errors import KvsimError

    for kw, words in ((dict(slo_ttft_s=float("nan")), "slo_ttft_s must be a finite number of seconds > 0"),
                      (dict(slo_ttft_s=0.0), "slo_ttft_s must be a finite number of seconds > 0"),
                      (dict(hws=[]), "hws is empty"), (dict(bogus=1), "bogus")):
        with pytest.raises(KvsimError) as err:
            kvsim.plan(**{"hws": ["h100"], "methods": ["full"], **kw})
        assert words in str(err.value) and "\n" not in str(err.value)


def _trace(arrival, prompt, output):
    from kvsim.traces import Trace

    return Trace("mine", np.asarray(arrival), np.asarray(prompt), np.asarray(output))


@pytest.mark.parametrize("arrival, prompt, output, says", [
    ([0, 0.5, 1.0], [100.0, np.nan, 300.0], [10, 20, 30], "request 1 has nan prompt_tokens"),
    ([0, 0.5, 1.0], [100, 200, 300], [-10, 20, 30], "request 0 has -10 output_tokens"),
    ([0, 0.5, 1.0], [100, 0, 300], [10, 20, 30], "request 1 has 0 prompt_tokens"),
    ([0, 0.5, 1.0], [100.7, 200, 300], [10, 20, 30], "request 0 has 100.7 prompt_tokens"),
    ([0, np.inf, 1.0], [1, 2, 3], [1, 2, 3], "request 1 arrives at inf s"),
    ([-1.0, 0, 1.0], [1, 2, 3], [1, 2, 3], "request 0 arrives at -1.0 s"),
    ([0, 2.0, 1.0], [1, 2, 3], [1, 2, 3], "request 2 arrives before request 1"),
    ([0, 1.0], [1, 2], [3], "different lengths (2, 2, 1)"),
    ([[0.0]], [1], [1], "arrival_s must be a 1-D array of numbers (got 2-D float64)"),
    ([0.0], [True], [1], "prompt_tokens must be a 1-D array of numbers (got 1-D bool)"),
])
def test_a_trace_built_in_python_is_checked_like_a_file(arrival, prompt, output, says):
    """A Trace from arrays gets the checks a loaded file gets: a one-line TraceError naming the
    first bad request (before: NaN prompts ran as -9.2e18 tokens, negative outputs lowered the
    throughput, unsorted arrivals failed inside the engine)."""
    from kvsim.errors import TraceError

    with pytest.raises(TraceError, match=re.escape(says)):
        _trace(arrival, prompt, output)


def test_a_trace_from_lists_and_whole_floats_is_converted():
    t = _trace([0, 1], [10, 20.0], [1, 2])
    assert t.prompt_tokens.dtype == np.int64 and t.prompt_tokens.tolist() == [10, 20]
    assert t.arrival_s.dtype == np.float64


def test_results_do_not_share_memory_with_the_trace():
    """Editing a result's columns leaves the trace (and another run on it) alone, and the other way round."""
    t = kvsim.load_trace("synthetic-poisson", num_requests=20)
    a = kvsim.simulate(hw="h100", trace=t)
    b = kvsim.simulate(hw="h100", method="kivi", trace=t)
    arrivals, prompt0 = t.arrival_s.copy(), int(t.prompt_tokens[0])
    a.requests["arrival_s"] += 100.0
    a.requests["prompt_tokens"][0] = 7
    np.testing.assert_array_equal(t.arrival_s, arrivals)
    np.testing.assert_array_equal(b.requests["arrival_s"], arrivals)
    assert int(t.prompt_tokens[0]) == prompt0 == int(b.requests["prompt_tokens"][0])


def test_engine_keywords_over_a_simconfig_are_validated():
    from kvsim.errors import ConfigError
    from kvsim.sim.config import SimConfig

    with pytest.raises(ConfigError, match="max_num_seqs"):
        kvsim.simulate(trace="synthetic-poisson", num_requests=20, config=SimConfig(), max_num_seqs=-5)
    with pytest.raises(ConfigError, match="bogus"):
        kvsim.simulate(trace="synthetic-poisson", num_requests=20, config=SimConfig(), bogus=1)
    # the keyword applies: the same run as the dict form (4 sequences at most), unlike the default 256
    r = kvsim.simulate(trace="synthetic-poisson", num_requests=20, rate=50.0, config=SimConfig(), max_num_seqs=4)
    d = kvsim.simulate(trace="synthetic-poisson", num_requests=20, rate=50.0, config={"max_num_seqs": 4})
    free = kvsim.simulate(trace="synthetic-poisson", num_requests=20, rate=50.0, config=SimConfig())
    assert r.summary["ttft_s"] == d.summary["ttft_s"] != free.summary["ttft_s"]


@pytest.mark.parametrize("kwargs, says", [
    (dict(max_num_batched_tokens=-1), "max_num_batched_tokens must be a whole number >= 1 (got -1)"),
    (dict(max_num_batched_tokens=0), "max_num_batched_tokens must be a whole number >= 1 (got 0)"),
    (dict(max_num_seqs=2.5), "max_num_seqs must be a whole number >= 1 (got 2.5)"),
    (dict(max_num_seqs=float("nan")), "max_num_seqs must be a whole number >= 1 (got nan)"),
])
def test_estimate_engine_limits_are_checked(kwargs, says):
    """(before: max_num_batched_tokens=-1 gave TTFT nan with fits=True, or 6.1e288 s)"""
    with pytest.raises(KvsimError, match=re.escape(says)):
        kvsim.estimate(hw="h100", context=8192, batch=4, **kwargs)


def test_a_deployment_refuses_arguments_it_would_ignore():
    dep = kvsim.deployment("h100", "llama-3.1-8b")
    assert kvsim.deployment(dep) is dep and kvsim.deployment(dep, "llama-3.1-8b", tp=1) is dep
    with pytest.raises(KvsimError, match=r"model, tp, weight_dtype cannot change it"):
        kvsim.estimate(hw=dep, model="qwen3-14b", tp=2, weight_dtype="fp8")
    with pytest.raises(KvsimError, match="expert_offload"):
        kvsim.deployment(dep, expert_offload="miss=fetch")


@pytest.mark.parametrize("call, says", [
    (lambda: kvsim.simulate(hw=None), "hardware must be a name, a YAML path or a System (got NoneType)"),
    (lambda: kvsim.estimate(hw=3), "hardware must be a name, a YAML path or a System (got int)"),
    (lambda: kvsim.estimate(model={"a": 1}), "model must be a name, a YAML or config.json path or a ModelSpec (got dict)"),
    (lambda: kvsim.simulate(trace=[1, 2]), "trace must be a name"),
    (lambda: kvsim.simulate(trace=None), "trace must be a name"),
    (lambda: kvsim.simulate(method=None, trace="synthetic-poisson", num_requests=5), "method must be a name"),
    (lambda: kvsim.simulate(rate="4", trace="synthetic-poisson", num_requests=5), "rate must be a number"),
    (lambda: kvsim.simulate(tp="2", trace="synthetic-poisson", num_requests=5), "tp must be a whole number"),
    (lambda: kvsim.simulate(config=[1], trace="synthetic-poisson", num_requests=5), "config must be a SimConfig"),
    (lambda: kvsim.load_trace("synthetic-poisson", num_requests=True), "num_requests must be a whole number >= 1"),
])
def test_wrong_argument_types_are_kvsim_errors(call, says):
    with pytest.raises(KvsimError, match=re.escape(says)):
        call()


def test_spec_objects_and_paths_work_as_names():
    from kvsim.hardware import load_system
    from kvsim.models import load_model

    by_name = kvsim.estimate(hw="h100", model="llama-3.1-8b", context=1024)
    by_spec = kvsim.estimate(hw=load_system("h100"), model=load_model("llama-3.1-8b"), context=1024)
    assert by_spec.ttft_s == by_name.ttft_s
    assert kvsim.load_trace(np.int64(5) and "synthetic-poisson", num_requests=np.int64(5)).arrival_s.shape == (5,)
    assert len(kvsim.load_trace(_trace([0, 1, 2], [1, 2, 3], [1, 1, 1]), num_requests=np.int64(2))) == 2


def test_an_empty_trace_is_an_error():
    from kvsim.errors import TraceError

    with pytest.raises(TraceError, match="has no requests"):
        kvsim.simulate(hw="h100", trace=_trace(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))


def test_kvsim_errors_is_reachable_after_a_bare_import():
    import importlib
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import kvsim, sys; print(kvsim.errors.KvsimError.__name__, "
                          "'torch' in sys.modules)"], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["KvsimError", "False"]
    assert importlib.import_module("kvsim").hardware.load_system is not None


def test_simulate_takes_deployment_options_and_points_loading_options_to_load_trace():
    r = kvsim.simulate(hw="h100", trace="synthetic-poisson", num_requests=10, weight_dtype="fp8")
    assert r.summary["weight_dtype"] == "fp8" and r.deployment.weight_dtype == "fp8"
    with pytest.raises(KvsimError, match=re.escape("columns: trace loading options: load it first, "
                                                   "kvsim.load_trace(path, columns=...)")):
        kvsim.simulate(trace="mix.csv", columns="arrival=ts,prompt=in,output=out")


def test_request_columns_carry_the_csv_ids_reasons_and_itl_max():
    r = kvsim.simulate(hw="h100", model="llama-3-70b", tp=4, trace="synthetic-poisson:n=3,rate=0.02,prompt=8192,output=256")
    assert r.requests["req_id"].tolist() == [0, 1, 2]
    assert r.requests["reject_reason"].tolist() == ["max_context"] * 3  # 8,192 + 256 > 8,192
    ok = kvsim.simulate(hw="h100", trace="synthetic-poisson", num_requests=3)
    assert ok.requests["reject_reason"].tolist() == ["", "", ""]
    assert np.all(ok.requests["itl_max_s"] > 0)


def test_a_trace_shorter_than_num_requests_is_noted():
    r = kvsim.simulate(hw="h100", trace="burstgpt", num_requests=5000)
    assert len(r.trace) < 5000
    assert f"num_requests 5,000: the trace has {len(r.trace):,} requests; all are replayed" in r.summary["notes"]
