"""Serving metrics: pure summaries of per-request records, plus two bounded collectors.

Definitions and summary keys (vLLM ``benchmarks/benchmark_serving.py`` names; DistServe, OSDI'24
section 2):

* TTFT (``ttft_s``) = first token time - arrival; E2EL (``e2el_s``) = finish - arrival;
  queueing (``queue_s``) = first scheduled - arrival.
* ITL (``itl_s``; "TBT", time between tokens, in this module's internals): every interval
  between consecutive tokens of a request, pooled over all completed requests. Preemption and
  prefill stalls show up here.
* TPOT (``tpot_s``) = (finish - first token) / (output tokens - 1) per request with >= 2 output
  tokens: the request's mean ITL.
* Throughput over the makespan (first arrival to last finish): output tokens/s, total
  (prompt + output) tokens/s, requests/s.
* Goodput: completed requests with TTFT <= ``slo_ttft_s`` and TPOT <= ``slo_tpot_s``
  (``--slo-ttft``, ``--slo-tpot``): judged per request, as DistServe and vLLM's
  ``--goodput ttft: tpot:`` do; the request's max TBT is in ``requests.csv`` for stricter checks.
  Requests with one output token have no TPOT and meet the TPOT SLO. Fraction is over all
  requests simulated (rejected ones count as misses).

Percentiles use numpy's default (linear) definition; pooled TBT percentiles are exact up to
2**21 intervals, beyond that computed on log bins of 2**-10 (~0.1%) relative width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kvsim.sim.request import RequestStatus

PCTS = (50, 90, 99)


@dataclass(frozen=True)
class RequestRecords:
    """Per-request outcome, arrays ``[N]`` in trace order (NaN where a time was not reached)."""

    arrival_s: np.ndarray
    scheduled_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    tbt_max_s: np.ndarray
    prompt_tokens: np.ndarray  # as in the trace
    effective_prompt_tokens: np.ndarray  # after the method's prompt compression
    output_tokens: np.ndarray
    cached_tokens: np.ndarray  # prompt tokens served by the prefix cache at first admission
    preemptions: np.ndarray
    status: np.ndarray  # RequestStatus: FINISHED, REJECTED (WAITING: never ran here)
    reject_reason: list  # per rejected request index: reason string (dict idx -> str)
    token_times: list | None = None  # per request: array of token times (record_token_times)
    # per request [lost, refound]: KV tokens its preemptions freed, and tokens counted as computed
    # when it was admitted again (prefix hits, its own parked blocks, tier hits); None: not tracked
    preempted_kv_tokens: np.ndarray | None = None


def stats(x: np.ndarray) -> dict[str, float | None]:
    """mean / p50 / p90 / p99 / max of ``x`` (None for an empty set)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"mean": None, **{f"p{q}": None for q in PCTS}, "max": None}
    p = np.percentile(x, PCTS)
    return {"mean": float(x.mean()), **{f"p{q}": float(v) for q, v in zip(PCTS, p)}, "max": float(x.max())}


def ranks_with_misses(served: np.ndarray, missed: int) -> dict[str, float | None]:
    """p50 / p90 / p99 of ``served`` values together with ``missed`` requests that never got one (rejected:
    ranked above every value), by numpy's linear rule over all ``N = len(served) + missed``: the rank
    ``q (N - 1)`` read among the sorted served values, or None when it falls among the missed
    (interpolating towards a request never served). With ``missed == 0``: ``np.percentile(served, q)``.
    200 requests, 9 rejected: p99's rank 0.99 x 199 = 197.01 > 190 (the last served) -> None."""
    x = np.sort(np.asarray(served, dtype=np.float64))
    n = x.size + missed
    out: dict[str, float | None] = {}
    for q in PCTS:
        pos = q / 100.0 * (n - 1)
        if n == 0 or pos > x.size - 1:
            out[f"p{q}"] = None
            continue
        lo = int(np.floor(pos))
        hi = min(lo + 1, x.size - 1)
        out[f"p{q}"] = float(x[lo] + (x[hi] - x[lo]) * (pos - lo))
    return out


def _slo_ranks(m: dict, rec: "RequestRecords") -> dict:
    """TTFT and TPOT ranked with the rejected requests as misses (:func:`ranks_with_misses`). TPOT exists for
    outputs of >= 2 tokens: only such rejected requests rank there, and without any TPOT is left to ``tpot_s``
    (a missing TPOT meets its bound)."""
    rejected = rec.status == RequestStatus.REJECTED
    out = {"ttft": ranks_with_misses(m["ttft"], int(rejected.sum()))}
    rej_tpot = int((rejected & (rec.output_tokens >= 2)).sum())
    if rej_tpot:
        out["tpot"] = ranks_with_misses(m["tpot"], rej_tpot)
    return out


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q) -> np.ndarray:
    """``np.percentile(np.repeat(values, weights), q)`` (linear), without expanding."""
    # (any sort: equal values are one run of the sorted order whatever their order within it, so
    # the value at each rank is the same; the default sort is ~3x faster than a stable one on the
    # exact sample of up to 2M intervals)
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)  # cum[i]: count of items with rank < cum[i]
    n = cum[-1]
    pos = np.asarray(q, dtype=np.float64) / 100.0 * (n - 1)
    lo = np.floor(pos)
    i_lo = np.searchsorted(cum, lo, side="right")
    i_hi = np.searchsorted(cum, np.minimum(lo + 1, n - 1), side="right")
    return v[i_lo] + (v[i_hi] - v[i_lo]) * (pos - lo)


def weighted_stats(values: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    if values.size == 0 or weights.sum() == 0:
        return {"mean": None, **{f"p{q}": None for q in PCTS}, "max": None}
    p = weighted_percentile(values, weights, PCTS)
    mean = float(np.dot(values, weights) / weights.sum())
    return {"mean": mean, **{f"p{q}": float(v) for q, v in zip(PCTS, p)}, "max": float(values.max())}


def request_metrics(rec: RequestRecords) -> dict[str, np.ndarray]:
    """Per completed request: ttft, tpot, e2e, queue (seconds) and output tokens."""
    done = rec.status == RequestStatus.FINISHED
    out = rec.output_tokens[done]
    ft, fin, arr = rec.first_token_s[done], rec.finish_s[done], rec.arrival_s[done]
    multi = out >= 2
    tpot = (fin[multi] - ft[multi]) / (out[multi] - 1)
    return {"ttft": ft - arr, "e2e": fin - arr, "queue": rec.scheduled_s[done] - arr, "tpot": tpot,
            "tpot_all": np.where(multi, (fin - ft) / np.maximum(out - 1, 1), 0.0), "output": out}


#: below this fraction of busy time the run says the GPU is mostly idle
IDLE_BUSY_FRACTION = 0.05
#: queueing grew without bound: the last fifth of arrivals waited this many times longer
#: than the first fifth (and over a second)
OVERLOAD_QUEUE_GROWTH = 4.0


def _per_s(count: int, span_s: float) -> float | None:
    """``count / span_s``, or None when the span is 0 or so short that the rate overflows (arrivals
    1e-309 s apart: found by tests/fuzzing.py; a rate of ``inf`` is no answer)."""
    if not span_s > 0:
        return None
    rate = count / span_s
    return rate if math.isfinite(rate) else None


def load_summary(rec: RequestRecords, busy_s: float, end_s: float, kv_gpu_peak_fraction: float) -> dict:
    """How loaded the run was, and a one-line hint when it was idle or overloaded.

    * ``offered_req_s``: the trace's arrival rate, ``(N - 1) / (last - first arrival)``;
    * ``served_req_s``: the finishing rate measured as the arrival rate is, ``(F - 1) / (last - first
      finish)`` of the ``F`` finished requests (it was ``F / (last finish - first arrival)``, which exceeds
      the offered rate whenever the run is light: 2 requests 10 s apart read 0.100 / 0.188 req/s);
    * ``gpu_busy_fraction``: seconds in engine steps / (last finish - first arrival);
    * ``queue_growth``: mean queueing delay of the last fifth of arrivals over the first fifth's
      (``None`` with under 10 finished requests);
    * ``kv_gpu_peak_fraction``: peak KV blocks in use / GPU KV blocks.
    """
    n = len(rec.arrival_s)
    first = float(rec.arrival_s[0]) if n else 0.0
    span = max(end_s - first, 0.0)
    arrivals = float(rec.arrival_s[-1] - rec.arrival_s[0]) if n > 1 else 0.0
    done = rec.status == RequestStatus.FINISHED
    offered = _per_s(n - 1, arrivals)
    fin = rec.finish_s[done]
    served = _per_s(fin.size - 1, float(fin.max() - fin.min())) if fin.size > 1 else None
    busy = min(busy_s / span, 1.0) if span > 0 else None
    growth = None
    idx = np.flatnonzero(done)
    if len(idx) >= 10:
        q = rec.scheduled_s[idx] - rec.arrival_s[idx]
        k = max(len(idx) // 5, 1)
        head, tail = float(np.mean(q[:k])), float(np.mean(q[-k:]))
        growth = tail / head if head > 0 else (None if tail == 0 else float("inf"))
        tail_s = tail
    hint = None
    one_instant = rec.arrival_s.size > 1 and float(np.ptp(rec.arrival_s)) == 0.0
    if one_instant and growth is not None and tail_s > 1.0:  # (no rate to lower: every request arrives at once)
        hint = (f"one burst: all {n} requests arrive at once and the last ones queued {tail_s:.1f} s on average "
                f"behind the first; add GPUs or spread the arrivals (--rate needs arrivals that differ)")
    elif growth is not None and (growth == float("inf") or growth > OVERLOAD_QUEUE_GROWTH) and tail_s > 1.0:
        hint = (f"overloaded: the last arrivals queued {tail_s:.1f} s on average and the queue kept growing; "
                f"lower --rate or add GPUs (`kvsim plan` finds the highest rate that meets an SLO)")
    elif busy is not None and busy < IDLE_BUSY_FRACTION and done.any():  # (nothing served: the rejection note says why)
        hint = (f"mostly idle: the GPU was busy {busy * 100:.1f}% of the time at {offered or 0:.3g} req/s; "
                f"use --rate to replay the trace faster")
    return {"offered_req_s": offered, "served_req_s": served, "gpu_busy_fraction": busy,
            "queue_growth": None if growth == float("inf") else growth, "kv_gpu_peak_fraction": kv_gpu_peak_fraction,
            "hint": hint}


def summarize(rec: RequestRecords, tbt_values: np.ndarray, tbt_weights: np.ndarray, *,
              slo_ttft_s: float | None = None, slo_tpot_s: float | None = None) -> dict:
    """Latency, throughput and goodput summary of one simulation (see module docstring)."""
    m = request_metrics(rec)
    done = rec.status == RequestStatus.FINISHED
    n_done, n_rej = int(done.sum()), int((rec.status == RequestStatus.REJECTED).sum())
    first = float(rec.arrival_s.min()) if rec.arrival_s.size else 0.0
    last = float(np.nanmax(rec.finish_s)) if n_done else first
    span = last - first
    out_tok = int(rec.output_tokens[done].sum())
    tot_tok = out_tok + int(rec.prompt_tokens[done].sum())
    per_s = (lambda x: x / span) if span > 0 else (lambda x: None)
    good = np.ones(n_done, dtype=bool)
    if slo_ttft_s is not None:
        good &= m["ttft"] <= slo_ttft_s
    if slo_tpot_s is not None:
        good &= m["tpot_all"] <= slo_tpot_s
    n_good = int(good.sum())
    reasons: dict[str, int] = {}
    for r in rec.reject_reason.values() if isinstance(rec.reject_reason, dict) else rec.reject_reason:
        reasons[r] = reasons.get(r, 0) + 1
    return {
        "requests_total": int(rec.status.size),
        "requests_completed": n_done,
        "requests_rejected": n_rej,
        "rejected_reasons": reasons,
        "ttft_s": stats(m["ttft"]),
        "itl_s": weighted_stats(tbt_values, tbt_weights),
        "tpot_s": stats(m["tpot"]),
        "e2el_s": stats(m["e2e"]),
        "queue_s": stats(m["queue"]),
        "makespan_s": span,
        "throughput_output_tok_s": per_s(out_tok),
        "throughput_total_tok_s": per_s(tot_tok),
        "throughput_req_s": per_s(n_done),
        "output_tokens": out_tok,
        "prompt_tokens": int(rec.prompt_tokens[done].sum()),
        "cached_prompt_tokens": int(np.maximum(rec.cached_tokens[done], 0).sum()),
        "slo_ttft_s": slo_ttft_s,
        "slo_tpot_s": slo_tpot_s,
        "goodput_req_s": per_s(n_good) if (slo_ttft_s is not None or slo_tpot_s is not None) else None,
        "goodput_fraction": (n_good / rec.status.size if rec.status.size else None)
        if (slo_ttft_s is not None or slo_tpot_s is not None) else None,
        # the per-request SLO metrics over every request, the rejected ranked as misses (kvsim.slo.verdict);
        # present only when requests were rejected (otherwise ttft_s / tpot_s are these values)
        **({} if not n_rej else {"slo_ranks_s": _slo_ranks(m, rec)}),
        "preemptions": int(rec.preemptions.sum()),
        "requests_preempted": int((rec.preemptions > 0).sum()),
        **({} if rec.preempted_kv_tokens is None else {
            "preempted_kv_tokens": int(rec.preempted_kv_tokens[:, 0].sum()),
            "preempted_kv_tokens_found_cached": int(rec.preempted_kv_tokens[:, 1].sum())}),
    }


class IntervalSample:
    """Pooled inter-token intervals as weighted values; bounded memory (module docstring).

    Exact until ``max_values`` values were added, then binned on a log grid: a bin holds the
    doubles sharing their exponent and first ``mantissa_bits`` mantissa bits (the IEEE-754
    bit pattern of positive doubles is monotone), i.e. a relative width of ``2**-mantissa_bits``,
    between ``lo_s`` and ``hi_s``. Min and max stay exact.
    """

    def __init__(self, max_values: int = 1 << 21, mantissa_bits: int = 10, lo_s: float = 1e-7, hi_s: float = 1e5) -> None:
        self._v = np.zeros(min(max_values, 1 << 14))  # buffer of values ...
        self._w = np.zeros(self._v.shape[0])  # ... and their weights
        self._n = 0
        self._max = max_values
        self._shift = 52 - mantissa_bits
        self._b0 = int(np.array([lo_s]).view(np.int64)[0]) >> self._shift
        self._nb = (int(np.array([hi_s]).view(np.int64)[0]) >> self._shift) - self._b0 + 1
        self._hist: np.ndarray | None = None
        self._vmin, self._vmax = math.inf, -math.inf
        self.exact = True

    def add(self, values, weight=1) -> None:
        """``values`` [n] intervals (seconds) each occurring ``weight`` times (int or [n]), or one float."""
        i = self._n
        if values.__class__ is float and i < self._v.shape[0]:  # one value (a lone step): item writes
            self._v[i] = values
            self._w[i] = weight
            self._n = i + 1
            return
        n = 1 if isinstance(values, float) else values.shape[0]
        if i + n > self._v.shape[0]:
            if i + n > self._max:
                self._flush()
                i = 0
            if n > self._v.shape[0] - i:
                size = max(2 * self._v.shape[0], i + n)
                self._v = np.concatenate([self._v[:i], np.zeros(size - i)])
                self._w = np.concatenate([self._w[:i], np.zeros(size - i)])
        self._v[i:i + n] = values
        self._w[i:i + n] = weight
        self._n = i + n

    def _flush(self) -> None:
        v, w = self._v[: self._n], self._w[: self._n]
        self.exact = False
        if v.size:
            self._vmin, self._vmax = min(self._vmin, float(v.min())), max(self._vmax, float(v.max()))
            idx = (v.view(np.int64) >> self._shift) - self._b0
            np.clip(idx, 0, self._nb - 1, out=idx)
            h = np.bincount(idx, weights=w, minlength=self._nb)
            self._hist = h if self._hist is None else self._hist + h
        self._n = 0

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, weights): exact values, or bin middles and counts."""
        if self.exact:
            return self._v[: self._n].copy(), self._w[: self._n].copy()
        self._flush()
        nz = np.flatnonzero(self._hist)
        centers = (((nz + self._b0) << self._shift) | (1 << (self._shift - 1))).view(np.float64)  # bin middles
        centers[0], centers[-1] = self._vmin, self._vmax
        return centers, self._hist[nz]


class Timeline:
    """Gauges over time in at most ``2 * n`` buckets (pairs of buckets merge when full).

    ``record(t, *values)`` notes values holding from ``t`` on. A bucket reports the largest
    value that held during it (including the one carried in from the previous bucket).
    """

    def __init__(self, names: tuple[str, ...], span_s: float, n: int = 1000) -> None:
        self.names = names
        self._n2 = 2 * n
        self.width_s = max(span_s, 1e-6) / n
        self._max = [[-1.0] * self._n2 for _ in names]
        self._last = [[-1.0] * self._n2 for _ in names]

    def record(self, t: float, *values: float) -> None:
        i = int(t / self.width_s)
        while i >= self._n2:
            self._merge()
            i = int(t / self.width_s)
        for mx, la, v in zip(self._max, self._last, values):
            if v > mx[i]:
                mx[i] = v
            la[i] = v

    def _merge(self) -> None:
        h = self._n2 // 2
        for k in range(len(self.names)):
            mx, la = self._max[k], self._last[k]
            self._max[k] = [max(mx[2 * j], mx[2 * j + 1]) for j in range(h)] + [-1.0] * h
            self._last[k] = [la[2 * j + 1] if la[2 * j + 1] >= 0 else la[2 * j] for j in range(h)] + [-1.0] * h
        self.width_s *= 2

    def result(self, end_s: float) -> dict[str, np.ndarray]:
        """``{"t_s": bucket starts, name: max per bucket}`` for buckets up to ``end_s``."""
        nb = min(self._n2, int(end_s / self.width_s) + 1)
        out = {"t_s": np.arange(nb) * self.width_s}
        for name, mx, la in zip(self.names, self._max, self._last):
            a = np.zeros(nb)
            carry = 0.0
            for j in range(nb):
                a[j] = max(mx[j], carry)
                if la[j] >= 0:
                    carry = la[j]
            out[name] = a
        return out
