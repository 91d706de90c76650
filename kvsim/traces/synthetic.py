"""Synthetic workload generators (vectorized numpy; 1M requests in well under a second).

Randomness comes only from the ``numpy.random.Generator`` passed in. Arrivals start at
0 s; inter-arrival gaps are i.i.d. with mean ``1/rate`` seconds.

Generators (``spec`` name -> params model):

* ``synthetic-poisson`` -> :class:`PoissonParams`: exponential gaps (CV 1), fixed lengths.
* ``synthetic-gamma`` -> :class:`GammaParams`: Gamma gaps with a chosen CV, fixed lengths.
  Shape k = 1/CV^2 and scale theta = CV^2/rate give mean k*theta = 1/rate and CV 1/sqrt(k).
* ``synthetic-burstgpt`` -> :class:`BurstGPTParams`: the BurstGPT "modeled scaling"
  workload: Gamma gaps and Zipf (power-law) prompt and output lengths truncated to [min, max].
* ``synthetic-fixed`` -> :class:`FixedParams`: fixed lengths and evenly spaced arrivals
  (``rate=inf``, the default, puts every request at 0 s: an offline batch).

Sources of the BurstGPT defaults:

* Arrivals: BurstGPT ``example/profile_server/server.py`` (HPMLL/BurstGPT @ e92f533) draws gaps
  from Gamma(shape 0.5, scale 2.0): mean 0.5 * 2.0 = 1.0 s -> ``rate=1.0``; CV 1/sqrt(0.5)
  = 1.414 -> ``cv=sqrt(2)``.
* Lengths: the same script draws ``np.random.zipf(a=1.1)`` and rejects values >= 1024; that gives
  a median of ~7 tokens, far from real requests. So kvsim keeps the Zipf (power-law) shape
  P(L = x) ~ x^-a on [min, max] and fits (a, min, max) by grid search to the median and mean of
  the 383 successful rows of the bundled BurstGPT_1 sample (prompt median 353 / mean 543.6,
  output median 238 / mean 288.8 tokens): prompt a=0.75 on [12, 2048] (model median ~339,
  mean ~565, KS distance 0.06); output a=0.7 on [16, 1024] (median ~235, mean ~330, KS 0.14).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kvsim.specbase import Float, number
from kvsim.traces._io import MAX_TOKENS
from kvsim.traces.arrivals import (  # the one place of the gap draws
    MAX_CV,
    MAX_RATE_PER_S,
    MIN_CV,
    gamma_arrivals,
    poisson_arrivals,
)
from kvsim.traces.pipeline import RawRequests

SQRT2 = math.sqrt(2.0)  # CV of Gamma(shape 0.5): 1/sqrt(0.5)
MAX_REQUESTS = 10_000_000  # a generated trace's size cap (10M requests: ~0.5 GB of arrays)

Requests = number(int, 1, MAX_REQUESTS, unit="requests")
Tokens = number(int, 1, MAX_TOKENS, unit="tokens")
Rate = number(float, 0, MAX_RATE_PER_S, lo_open=True, unit="requests/s")
ZipfA = number(float, -100, 100)  # power-law exponent


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    num_requests: Requests = Field(1000, alias="n", description="number of requests")


class PoissonParams(_Params):
    """Poisson arrivals (exponential gaps), fixed prompt/output lengths."""

    rate: Rate = Field(1.0, description="mean arrival rate, requests/s")
    prompt_tokens: Tokens = Field(512, alias="prompt", description="prompt tokens per request")
    output_tokens: Tokens = Field(128, alias="output", description="output tokens per request")


class GammaParams(PoissonParams):
    """Gamma-distributed gaps with coefficient of variation ``cv`` (bursty when > 1)."""

    cv: Float = Field(SQRT2, ge=MIN_CV, le=MAX_CV, description="CV of inter-arrival gaps")


class FixedParams(_Params):
    """Evenly spaced arrivals (every 1/rate s; rate=inf: all at 0 s) and fixed lengths."""

    rate: float = Field(math.inf, gt=0, description="arrival rate, requests/s (inf: all at 0 s)")
    prompt_tokens: Tokens = Field(512, alias="prompt", description="prompt tokens per request")
    output_tokens: Tokens = Field(128, alias="output", description="output tokens per request")


class BurstGPTParams(_Params):
    """BurstGPT-like workload: Zipf lengths truncated to [min, max] (means ~565 prompt / ~330 output
    tokens; the BurstGPT sample's are 544 / 289), Gamma gaps at the defaults of BurstGPT's demo generator (rate 1,
    CV sqrt 2): not fitted to the trace's arrivals (the bundled sample's CV is 4.46; trace audit)."""

    rate: Rate = Field(1.0, description="mean arrival rate, requests/s")
    cv: Float = Field(SQRT2, ge=MIN_CV, le=MAX_CV, description="CV of inter-arrival gaps")
    prompt_a: ZipfA = Field(0.75, description="Zipf exponent of prompt lengths")
    prompt_min: Tokens = Field(12, description="shortest prompt, tokens")
    prompt_max: Tokens = Field(2048, description="longest prompt, tokens")
    output_a: ZipfA = Field(0.7, description="Zipf exponent of output lengths")
    output_min: Tokens = Field(16, description="shortest output, tokens")
    output_max: Tokens = Field(1024, description="longest output, tokens")

    @model_validator(mode="after")
    def _ranges(self) -> BurstGPTParams:
        for k in ("prompt", "output"):
            lo, hi = getattr(self, f"{k}_min"), getattr(self, f"{k}_max")
            if lo > hi:
                raise ValueError(f"{k}_min ({lo}) must be <= {k}_max ({hi})")
        return self


SyntheticParams = PoissonParams | GammaParams | FixedParams | BurstGPTParams


def zipf_lengths(n: int, a: float, lo: int, hi: int, rng: np.random.Generator) -> np.ndarray:
    """[n] int64 lengths with P(L = x) ~ x^-a on the integers [lo, hi] (truncated Zipf).

    Inverse-CDF sampling of the continuous power law on [lo, hi + 1), floored: exact in
    the continuum limit and vectorized (``np.random.zipf`` is unbounded and needs rejection).
    """
    u = rng.random(n)
    top = hi + 1.0
    if abs(a - 1.0) < 1e-9:
        x = lo * (top / lo) ** u
    else:
        e = 1.0 - a
        if abs(e) * math.log(top) < 700.0:  # (the form every shipped default uses: its draws stay as they were)
            x = (lo**e + u * (top**e - lo**e)) ** (1.0 / e)
        else:  # the same CDF scaled so that no power overflows (prompt_a=-100: top**101 raised OverflowError)
            with np.errstate(divide="ignore", over="ignore"):
                if e > 0:
                    r = (lo / top) ** e
                    x = top * (r + u * (1.0 - r)) ** (1.0 / e)
                else:
                    r = (top / lo) ** e
                    x = lo * (1.0 + u * (r - 1.0)) ** (1.0 / e)
    return np.clip(np.floor(x), lo, hi).astype(np.int64)


def generate(params: SyntheticParams, rng: np.random.Generator) -> RawRequests:
    """Draw ``params.num_requests`` requests; arrivals sorted, starting at 0 s."""
    n = params.num_requests
    if isinstance(params, BurstGPTParams):
        t = gamma_arrivals(n, params.rate, params.cv, rng)
        prompt = zipf_lengths(n, params.prompt_a, params.prompt_min, params.prompt_max, rng)
        output = zipf_lengths(n, params.output_a, params.output_min, params.output_max, rng)
        return RawRequests(time_s=t, prompt_tokens=prompt, output_tokens=output)
    if isinstance(params, GammaParams):
        t = gamma_arrivals(n, params.rate, params.cv, rng)
    elif isinstance(params, PoissonParams):
        t = poisson_arrivals(n, params.rate, rng)
    elif math.isinf(params.rate):
        t = np.zeros(n)
    else:
        t = np.arange(n, dtype=np.float64) / params.rate
    prompt = np.full(n, params.prompt_tokens, dtype=np.int64)
    output = np.full(n, params.output_tokens, dtype=np.int64)
    return RawRequests(time_s=t, prompt_tokens=prompt, output_tokens=output)


def describe(name: str, params: SyntheticParams, seed: int) -> str:
    """``name(k=v, ..., seed=S)`` for ``Trace.source``."""
    fields = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.model_dump(by_alias=True).items())
    return f"{name}({fields}, seed={seed})"
