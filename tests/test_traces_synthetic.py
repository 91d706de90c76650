"""Synthetic generators: determinism, rates, CV, length bounds, inline options, speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvsim.errors import TraceError
from kvsim.traces import load_trace
from kvsim.traces.pipeline import LoadOptions, RawRequests, build_trace
from kvsim.traces.synthetic import GammaParams, generate, zipf_lengths


def _cv(t: np.ndarray) -> float:
    gaps = np.diff(t)
    return float(gaps.std() / gaps.mean())


def test_same_seed_same_trace():
    """The same seed gives identical traces; a different seed does not."""
    a = load_trace("synthetic-burstgpt", num_requests=1000, seed=7)
    b = load_trace("synthetic-burstgpt", num_requests=1000, seed=7)
    c = load_trace("synthetic-burstgpt", num_requests=1000, seed=8)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not np.array_equal(a.arrival_s, c.arrival_s)


def test_generator_uses_only_given_rng():
    """generate() draws only from the Generator it is given."""
    p = GammaParams(n=100, rate=3.0, cv=2.0)
    x = generate(p, np.random.default_rng(123)).time_s
    np.random.seed(0)  # global state must not matter
    y = generate(p, np.random.default_rng(123)).time_s
    assert np.array_equal(x, y)


def test_poisson_rate_and_cv():
    """Poisson at 5 req/s on 100k requests: mean rate 5 +- 2% (std 5/sqrt(1e5) = 0.3%), CV 1 +- 2%."""
    tr = load_trace("synthetic-poisson:rate=5,n=100000", seed=1)
    assert len(tr) == 100_000
    assert tr.mean_rate_per_s == pytest.approx(5.0, rel=0.02)
    assert _cv(tr.arrival_s) == pytest.approx(1.0, rel=0.02)
    assert (tr.prompt_tokens == 512).all() and (tr.output_tokens == 128).all()


def test_gamma_rate_and_cv():
    """Gamma(cv=3) at 5 req/s on 100k requests: rate within 5% (std 3/sqrt(1e5) ~ 1%), CV within 5%."""
    tr = load_trace("synthetic-gamma:rate=5,cv=3,n=100000,prompt=64,output=32", seed=2)
    assert tr.mean_rate_per_s == pytest.approx(5.0, rel=0.05)
    assert _cv(tr.arrival_s) == pytest.approx(3.0, rel=0.05)
    assert (tr.prompt_tokens == 64).all() and (tr.output_tokens == 32).all()


def test_burstgpt_model_lengths_bounded_and_realistic():
    """synthetic-burstgpt lengths stay in [min, max]; medians near the sample's 353 / 238 tokens."""
    tr = load_trace("synthetic-burstgpt", num_requests=100_000, seed=3)
    p, o = tr.prompt_tokens, tr.output_tokens
    assert p.min() >= 12 and p.max() <= 2048 and o.min() >= 16 and o.max() <= 1024
    assert 300 <= np.median(p) <= 380  # model median ~339 (PROVENANCE of defaults in synthetic.py)
    assert 210 <= np.median(o) <= 260  # model median ~235
    assert _cv(tr.arrival_s) == pytest.approx(math.sqrt(2), rel=0.05)  # Gamma shape 0.5 -> CV 1.414


def test_zipf_lengths_follow_power_law():
    """With a=1 the law is log-uniform: P(L < sqrt(lo*hi)) = 1/2 (lo=1, hi+1=10,000 -> median ~100)."""
    x = zipf_lengths(200_000, 1.0, 1, 9999, np.random.default_rng(0))
    assert np.mean(x < 100) == pytest.approx(0.5, abs=0.01)
    assert x.min() == 1 and x.max() <= 9999


def test_fixed_arrivals():
    """synthetic-fixed: all at 0 s by default; evenly spaced 1/rate with rate=4 (0, 0.25, 0.5, ...)."""
    batch = load_trace("synthetic-fixed:n=10,prompt=100,output=20")
    assert (batch.arrival_s == 0).all() and (batch.prompt_tokens == 100).all()
    spaced = load_trace("synthetic-fixed:n=5", rate=4)
    assert list(spaced.arrival_s) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_keyword_overrides_inline():
    """rate= and num_requests= keyword arguments override inline rate and n; inline seed wins."""
    tr = load_trace("synthetic-fixed:n=5,rate=1", rate=2, num_requests=3)
    assert list(tr.arrival_s) == [0.0, 0.5, 1.0]
    a = load_trace("synthetic-poisson:seed=5", seed=9)
    b = load_trace("synthetic-poisson", seed=5)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert "seed=5" in a.source


def test_time_scale_and_limit_apply_to_synthetic():
    """time_scale divides generated arrivals; limit keeps the first N."""
    base = load_trace("synthetic-fixed:n=10,rate=1")
    tr = load_trace("synthetic-fixed:n=10,rate=1", time_scale=10, limit=4)
    assert len(tr) == 4 and list(tr.arrival_s) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert base.duration_s == 9.0


@pytest.mark.parametrize(
    "spec, match",
    [
        ("synthetic-gamma:cv=0", r"bad options for synthetic-gamma: cv: Input should be greater than or equal to 0.001"),
        ("synthetic-gamma:bogus=1", r"unknown option 'bogus' for synthetic-gamma; options: cv, n, output"),
        ("synthetic-poisson:rate", r"expected key=value"),
        ("synthetic-poisson:n=abc", r"n: Input should be a valid integer"),
        ("synthetic-burstgpt:prompt_min=100,prompt_max=10", r"prompt_min \(100\) must be <= prompt_max \(10\)"),
        ("synthetic-poisson:seed=-1", r"seed must be a whole number >= 0"),
    ],
)
def test_bad_inline_options(spec, match):
    """Bad inline options raise one-line TraceErrors."""
    with pytest.raises(TraceError, match=match) as err:
        load_trace(spec)
    assert "\n" not in str(err.value)


def test_one_million_requests_fast():
    """1M requests of every generator take well under 1 s each (vectorized)."""
    for name in ("synthetic-poisson", "synthetic-gamma", "synthetic-burstgpt", "synthetic-fixed"):
        t0 = time.perf_counter()
        tr = load_trace(name, num_requests=1_000_000)
        assert len(tr) == 1_000_000
        assert time.perf_counter() - t0 < 1.0, name


@settings(max_examples=50, deadline=None)
@given(
    times=st.lists(st.integers(0, 10**9), min_size=2, max_size=200),  # milliseconds
    rate=st.floats(1e-3, 1e4),
)
def test_rescale_property(times, rate):
    """For any arrivals with a non-zero span, rate=R gives (N-1)/span == R, sorted, from 0."""
    t = np.array(times) / 1000.0
    if np.ptp(t) == 0:
        return
    n = t.size
    raw = RawRequests(time_s=t, prompt_tokens=np.ones(n, np.int64), output_tokens=np.ones(n, np.int64))
    tr = build_trace(raw, LoadOptions(rate=rate), name="p", source="p")
    assert tr.arrival_s[0] == 0 and (np.diff(tr.arrival_s) >= 0).all()
    assert tr.mean_rate_per_s == pytest.approx(rate, rel=1e-9)
