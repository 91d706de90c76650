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

    for kw, words in ((dict(slo_ttft_s=float("nan")), "ttft_s: Input should be a finite number"),
                      (dict(slo_ttft_s=0.0), "ttft_s: Input should be greater than 0"),
                      (dict(hws=[]), "hws is empty"), (dict(bogus=1), "bogus")):
        with pytest.raises(KvsimError) as err:
            kvsim.plan(**{"hws": ["h100"], "methods": ["full"], **kw})
        assert words in str(err.value) and "\n" not in str(err.value)
