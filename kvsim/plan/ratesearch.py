"""Search for the highest request rate that meets a service-level objective.

The evaluator ``feasible(rate_per_s) -> (ok, info)`` is treated as monotone in rate
(feasible below some threshold, infeasible above), as a queueing system is: latency
percentiles grow with offered load. The search follows DistServe's goodput search
(``simdistserve``: bisection over the arrival rate) with a geometric grid:

1. **Bracket.** Probe ``start``; while feasible, multiply by ``growth`` (default 2) until a
   probe fails or ``max_rate`` is reached; while infeasible, divide by ``growth`` until a
   probe passes or the rate drops below ``min_rate`` (then the answer is 0).
2. **Bisect** in log space: probe ``sqrt(lo * hi)`` until ``hi / lo <= 1 + rel_tol``.

The answer is ``lo``, the highest rate *observed* feasible, so it under-estimates the true
threshold by less than ``rel_tol`` (relative). Because every probe lies on the fixed grid
``start * growth ** (j / 2**d)``, the answer is a monotone function of the threshold: a
configuration with a higher true threshold (more replicas, say) never gets a lower answer.
Probes cost ``O(log2(threshold / start)) + O(log2(log(growth) / log(1 + rel_tol)))``
evaluations (about 4 + 4 for a 10x bracket at 5 %).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Probe:
    """One evaluation: the offered rate (requests/s), the verdict and the evaluator's info."""

    rate_per_s: float
    ok: bool
    info: Any = None


@dataclass(frozen=True)
class RateSearch:
    """Outcome of :func:`search_max_rate`.

    Attributes:
        max_rate_per_s: highest probed rate that met the objective (0 if none did).
        upper_rate_per_s: lowest probed rate that failed (``inf`` if none failed below ``max_rate``).
        probes: every evaluation in the order made.
        capped: True if the search stopped at ``max_rate`` while still feasible.
    """

    max_rate_per_s: float
    upper_rate_per_s: float
    probes: list[Probe] = field(default_factory=list)
    capped: bool = False

    @property
    def best(self) -> Probe | None:
        """The probe at ``max_rate_per_s`` (None when nothing was feasible)."""
        ok = [p for p in self.probes if p.ok and p.rate_per_s == self.max_rate_per_s]
        return ok[-1] if ok else None


def search_max_rate(
    feasible: Callable[[float], tuple[bool, Any]],
    start_rate_per_s: float = 1.0,
    rel_tol: float = 0.05,
    growth: float = 2.0,
    min_rate_per_s: float = 1e-3,
    max_rate_per_s: float = 1e4,
    max_evals: int = 60,
) -> RateSearch:
    """Highest rate for which ``feasible`` holds, to a relative tolerance (module docstring)."""
    if not (start_rate_per_s > 0 and rel_tol > 0 and growth > 1 and 0 < min_rate_per_s <= max_rate_per_s):
        raise ValueError("need start > 0, rel_tol > 0, growth > 1 and 0 < min_rate <= max_rate")
    probes: list[Probe] = []

    def probe(rate: float) -> bool:
        ok, info = feasible(rate)
        probes.append(Probe(rate, bool(ok), info))
        return bool(ok)

    rate = min(max(start_rate_per_s, min_rate_per_s), max_rate_per_s)
    lo, hi = 0.0, math.inf
    if probe(rate):
        lo = rate
        while len(probes) < max_evals:
            nxt = rate * growth
            if nxt > max_rate_per_s:
                return RateSearch(lo, hi, probes, capped=True)
            rate = nxt
            if not probe(rate):
                hi = rate
                break
            lo = rate
    else:
        hi = rate
        while len(probes) < max_evals:
            rate = rate / growth
            if rate < min_rate_per_s:
                return RateSearch(0.0, hi, probes)
            if probe(rate):
                lo = rate
                break
            hi = rate
    while lo > 0 and hi < math.inf and hi / lo > 1.0 + rel_tol and len(probes) < max_evals:
        mid = math.sqrt(lo * hi)
        if probe(mid):
            lo = mid
        else:
            hi = mid
    return RateSearch(lo, hi, probes)
