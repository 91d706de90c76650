"""Descriptive statistics of a Trace (for ``kvsim trace info`` and reports)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kvsim.traces.base import Trace


@dataclass(frozen=True)
class LengthStats:
    """Token-length statistics: mean, median (p50), p99 and max, tokens."""

    mean: float
    p50: float
    p99: float
    max: int


@dataclass(frozen=True)
class TraceSummary:
    """What ``kvsim trace info`` prints.

    Attributes
    ----------
    requests : number of requests.
    span_s : last minus first arrival, seconds.
    mean_rate_per_s : (N-1)/span, requests/s (None when every request arrives at once).
    interarrival_cv : std/mean of the gaps between arrivals (None for < 3 requests or no gap).
    prompt, output : token-length statistics.
    num_failed_dropped, num_filtered, num_zero_prompt_dropped : rows removed while loading
        (failed requests; filters; rows of 0 prompt tokens).
    notice : the trace's notice line, if any.
    format : the file format read (``meta["format"]``).
    bad_rows : rows dropped as unusable, by kind.
    sessions : multi-turn sessions found (one line), if any.
    token_counts : how token counts were obtained when the source is text (ShareGPT).
    """

    name: str
    source: str
    requests: int
    span_s: float
    mean_rate_per_s: float | None
    interarrival_cv: float | None
    prompt: LengthStats
    output: LengthStats
    num_failed_dropped: int
    num_filtered: int
    has_prefix_blocks: bool
    num_zero_prompt_dropped: int
    notice: str | None
    format: str | None = None
    bad_rows: dict | None = None
    sessions: str | None = None
    token_counts: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _lengths(x: np.ndarray) -> LengthStats:
    p50, p99 = np.percentile(x, [50, 99])
    return LengthStats(mean=float(x.mean()), p50=float(p50), p99=float(p99), max=int(x.max()))


def summarize(trace: Trace) -> TraceSummary:
    """Summary statistics of a non-empty trace."""
    gaps = np.diff(trace.arrival_s)
    cv = float(gaps.std() / gaps.mean()) if gaps.size >= 2 and gaps.mean() > 0 else None
    rate = trace.mean_rate_per_s
    return TraceSummary(
        name=trace.name,
        source=trace.source,
        requests=len(trace),
        span_s=trace.duration_s,
        mean_rate_per_s=rate if np.isfinite(rate) else None,
        interarrival_cv=cv,
        prompt=_lengths(trace.prompt_tokens),
        output=_lengths(trace.output_tokens),
        num_failed_dropped=trace.num_failed_dropped,
        num_filtered=trace.num_filtered,
        has_prefix_blocks=trace.prefix_blocks is not None,
        num_zero_prompt_dropped=int(trace.meta.get("num_invalid_dropped", 0)),
        notice=trace.notice,
        format=trace.meta.get("format"),
        bad_rows=dict(trace.meta.get("bad_rows") or {}),
        sessions=trace.meta.get("sessions_text"),
        token_counts=trace.meta.get("token_counts"),
    )
