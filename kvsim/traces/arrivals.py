"""Arrival times for a file's rows: ``--arrivals`` specs and the check of rounded timestamps.

``--arrivals KIND:key=value,...`` gives every row of a file (in file order) a synthetic
arrival, seeded by ``seed=`` or the load's ``seed`` (numpy ``default_rng``):

* ``poisson:rate=R`` - exponential gaps of mean 1/R s (:func:`poisson_arrivals`);
* ``gamma:rate=R,cv=C`` - Gamma gaps, shape 1/C^2 and scale C^2/R: mean 1/R s, CV C
  (:func:`gamma_arrivals`; C > 1 is burstier than Poisson);
* ``constant:rate=R`` - evenly spaced, one every 1/R s (``rate=inf``: all at 0 s).

The first request arrives at 0 s. A lengths-only file (no arrival column: Vidur's request
length files, ShareGPT) needs one; a file with arrivals gets them replaced, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kvsim.errors import TraceError

MAX_CV = 10.0  # beyond it Gamma(1/cv^2) gaps underflow to 0: every request at t=0
#: the largest arrival rate, requests/s, of any trace kvsim generates or rescales (--rate, --time-scale,
#: synthetic traces, --arrivals, plan's --target-rate): gaps below 1 ns underflow when squared
MAX_RATE_PER_S = 1e9
MIN_CV = 1e-3  # below it the gaps are constant to 0.1 % (use constant:rate=R); cv^2 underflows from ~1e-154
KINDS = {"poisson": ("rate",), "gamma": ("rate", "cv"), "constant": ("rate",)}
EXAMPLES = "poisson:rate=4, gamma:rate=4,cv=2 or constant:rate=4"


def _from_gaps(gaps: np.ndarray) -> np.ndarray:
    """[n-1] gaps -> [n] arrival times starting at 0 s."""
    t = np.empty(gaps.size + 1)
    t[0] = 0.0
    np.cumsum(gaps, out=t[1:])
    return t


def poisson_arrivals(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """[n] arrival times (s) of a Poisson process of ``rate`` requests/s, first at 0."""
    return _from_gaps(rng.exponential(1.0 / rate, n - 1))


def gamma_arrivals(n: int, rate: float, cv: float, rng: np.random.Generator) -> np.ndarray:
    """[n] arrival times (s) with Gamma gaps: shape 1/cv^2, scale cv^2/rate (mean 1/rate s)."""
    return _from_gaps(rng.gamma(1.0 / cv**2, cv**2 / rate, n - 1))


@dataclass(frozen=True)
class ArrivalSpec:
    """A parsed ``--arrivals`` value."""

    kind: str
    rate: float  # requests/s
    cv: float = 1.0  # gamma only
    seed: int | None = None  # None: the load's seed

    def describe(self, seed: int) -> str:
        cv = f",cv={self.cv:g}" if self.kind == "gamma" else ""
        return f"{self.kind}:rate={self.rate:g}{cv},seed={seed}"


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise TraceError(f"--arrivals: {what} must be a number, got '{text}'") from None


def parse_arrivals(text: str) -> ArrivalSpec:
    """``"gamma:rate=4,cv=2"`` -> ArrivalSpec; a one-line TraceError naming what is wrong."""
    kind, _, options = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise TraceError(f"--arrivals: unknown kind '{kind}'; expected {EXAMPLES}")
    values: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in options.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise TraceError(f"--arrivals: bad option '{item}' in '{text}'; expected key=value ({EXAMPLES})")
        if key not in (*KINDS[kind], "seed"):
            raise TraceError(f"--arrivals: unknown option '{key}' for {kind}; options: {', '.join((*KINDS[kind], 'seed'))}")
        values[key] = value.strip()
    if "rate" not in values:
        raise TraceError(f"--arrivals: {kind} needs rate=R (requests/s), e.g. {kind}:rate=4")
    rate = _float(values["rate"], "rate")
    if not rate > 0 or (math.isinf(rate) and kind != "constant") or (math.isfinite(rate) and rate > MAX_RATE_PER_S):
        raise TraceError(f"--arrivals: rate must be a number > 0 and <= 1e9 requests/s "
                         f"(inf only for constant), got '{values['rate']}'")
    cv = _float(values.get("cv", "1"), "cv")
    if not MIN_CV <= cv <= MAX_CV:
        raise TraceError(f"--arrivals: cv must be in [{MIN_CV:g}, {MAX_CV:g}] (constant:rate=R for even gaps), "
                         f"got '{values.get('cv')}'")
    seed = None
    if "seed" in values:
        try:
            seed = int(values["seed"])
        except ValueError:
            seed = -1
        if seed < 0:
            raise TraceError(f"--arrivals: seed must be a whole number >= 0, got '{values['seed']}'")
    return ArrivalSpec(kind, rate, cv, seed)


def draw(spec: ArrivalSpec, n: int, seed: int) -> np.ndarray:
    """[n] arrival times, s, starting at 0 (``spec.seed`` wins over ``seed``)."""
    if n == 0:
        return np.zeros(0)
    rng = np.random.default_rng(spec.seed if spec.seed is not None else seed)
    if spec.kind == "poisson":
        return poisson_arrivals(n, spec.rate, rng)
    if spec.kind == "gamma":
        return gamma_arrivals(n, spec.rate, spec.cv, rng)
    return np.zeros(n) if math.isinf(spec.rate) else np.arange(n, dtype=np.float64) / spec.rate


def apply(text: str, n: int, seed: int, had_arrivals: bool) -> tuple[np.ndarray, str, dict]:
    """Arrivals for ``n`` rows from an ``--arrivals`` value: (times, note, meta)."""
    spec = parse_arrivals(text)
    used = spec.seed if spec.seed is not None else seed
    what = spec.describe(used)
    note = (f"arrivals are synthetic ({what}), replacing the file's own" if had_arrivals
            else f"arrivals are synthetic ({what}): the file has none")
    return draw(spec, n, seed), note, {"arrivals": what}


#: candidate time resolutions, s, coarsest first
_STEPS = (3600.0, 60.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5, 1e-6)


def resolution(t_s: np.ndarray) -> float | None:
    """The coarsest step of :data:`_STEPS` that every time is a whole multiple of, or None
    when they are finer than 1 us (or there are fewer than 2).

    A decimal read into float64 and divided by the step is off by about 2 machine epsilons
    relative, so ``|q - round(q)| <= 16 eps |q| + 1e-9`` with ``q = t / step`` counts as whole.
    """
    t = np.asarray(t_s, dtype=np.float64)
    if t.size < 2:
        return None
    eps = np.finfo(np.float64).eps
    for step in _STEPS:
        q = t / step
        if np.all(np.abs(q - np.round(q)) <= 16 * eps * np.abs(q) + 1e-9):
            return step
    return None


def rounding_note(t_s: np.ndarray, column: str) -> tuple[str | None, dict]:
    """A note when arrivals look rounded: timestamps on a grid of 1 ms or coarser and
    requests sharing a timestamp (a converter's rounding turns nearby arrivals into bursts).
    Returns (note, meta)."""
    t = np.sort(np.asarray(t_s, dtype=np.float64))
    step = resolution(t)
    ties = int(np.sum(np.diff(t) == 0)) if t.size > 1 else 0
    meta = {"arrival_resolution_s": step, "arrival_ties": ties}
    if step is None or step < 1e-3 or ties == 0:
        return None, meta
    if ties == t.size - 1:  # one timestamp: a burst the file asks for, not a converter's rounding
        return f"{column}: all {t.size} requests arrive at the same time (one burst)", meta
    return (f"{column} looks rounded to {step:g} s: {ties} of {t.size} requests arrive at the same time as the one "
            f"before ({t.size - ties} distinct time{'' if t.size - ties == 1 else 's'}); burstiness within one timestamp is lost"), meta


def ties_note(t_s: np.ndarray, what: str) -> str | None:
    """A note for a trace whose timestamps put many requests at the same instant (a file in whole
    seconds or milliseconds, or a recorder that batches): how many arrive with the one before and the
    largest such burst, when they are at least 5 % of the requests (Mooncake's conversation trace:
    10,851 of 12,031 in bursts of up to 28, every ~3 s; its CV then measures the batching too)."""
    t = np.sort(np.asarray(t_s, dtype=np.float64))
    if t.size < 2:
        return None
    same = np.diff(t) == 0
    ties = int(same.sum())
    if ties < 0.05 * t.size or ties == t.size - 1:
        return None
    edges = np.flatnonzero(np.diff(np.concatenate(([0], same.astype(np.int8), [0]))))
    burst = int((edges[1::2] - edges[::2]).max()) + 1
    return (f"{what}: {ties:,} of {t.size:,} requests arrive at the same time as the one before (up to {burst:,} at "
            "once): the replay keeps those bursts, and burstiness within one timestamp is lost")

