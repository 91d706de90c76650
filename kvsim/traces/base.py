"""The request trace every loader and generator produces.

A :class:`Trace` is columnar (numpy arrays), so that million-request traces stay
cheap to build, rescale and slice. Arrays are sorted by arrival time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from kvsim.errors import TraceError


@dataclass(frozen=True)
class Trace:
    """Requests of one workload, sorted by ``arrival_s``.

    Attributes:
        name: short name shown in reports (e.g. ``burstgpt``, ``azure-code``).
        arrival_s: [N] float64, seconds from the start of the trace (first arrival may be > 0).
        prompt_tokens: [N] int64, prompt (input) tokens of each request, >= 1.
        output_tokens: [N] int64, tokens to generate for each request, >= 1.
        prefix_blocks: per request, a tuple of block hash ids covering the prompt's
            leading blocks of ``prefix_block_tokens`` tokens (Mooncake ``hash_ids``), or
            ``None`` when the trace has no prefix information. More ids than the prompt's
            ``ceil(prompt / prefix_block_tokens)`` name the request's token stream, prompt then
            generated tokens (``synthetic-tree``): the simulator then caches the full blocks of
            its generated tokens when it finishes.
        prefix_block_tokens: tokens per prefix block (Mooncake: 512), or 0.
        chunk_ids: per request, the ids of the retrieved chunks its prompt starts with, in any
            order and at any position (a RAG workload, ``synthetic-rag``), or ``None``. Their KV
            can be reused by non-prefix methods (``cacheblend``); prefix caching ignores them.
        chunk_tokens: tokens per chunk, or 0.
        source: provenance (file path or generator parameters), for reports.
        num_failed_dropped: rows dropped because the trace marks them failed
            (BurstGPT: 0 response tokens).
        num_filtered: rows removed by user filters (model, log type, window, limit).
        notice: one line to show the user (e.g. "using the bundled 400-row sample"), or None.
    """

    name: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_blocks: tuple[tuple[int, ...], ...] | None = None
    prefix_block_tokens: int = 0
    chunk_ids: tuple[tuple[int, ...], ...] | None = None
    chunk_tokens: int = 0
    source: str = ""
    num_failed_dropped: int = 0
    num_filtered: int = 0
    notice: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """The columns as the attributes state them (a Trace built in Python gets the checks a
        loaded file gets): 1-D and of one length; arrivals finite, >= 0 and sorted; token counts
        whole numbers >= 1 (lists and integral floats are converted). Anything else is a one-line
        :class:`TraceError` naming the first bad request."""
        arrival = _column(self.name, "arrival_s", self.arrival_s, np.float64)
        prompt = _column(self.name, "prompt_tokens", self.prompt_tokens, np.int64)
        output = _column(self.name, "output_tokens", self.output_tokens, np.int64)
        if not arrival.shape[0] == prompt.shape[0] == output.shape[0]:
            raise TraceError(f"trace {self.name!r}: arrival_s, prompt_tokens and output_tokens have different lengths "
                             f"({arrival.shape[0]}, {prompt.shape[0]}, {output.shape[0]})")
        bad = np.flatnonzero(~np.isfinite(arrival) | (arrival < 0))
        if bad.size:
            raise TraceError(f"trace {self.name!r}: request {int(bad[0])} arrives at {float(arrival[bad[0]])!r} s "
                             "(arrivals are finite seconds >= 0)")
        back = np.flatnonzero(np.diff(arrival) < 0)
        if back.size:
            raise TraceError(f"trace {self.name!r}: request {int(back[0]) + 1} arrives before request {int(back[0])} "
                             "(sort the requests by arrival_s)")
        for what, col in (("prompt_tokens", prompt), ("output_tokens", output)):
            low = np.flatnonzero(col < 1)
            if low.size:
                raise TraceError(f"trace {self.name!r}: request {int(low[0])} has {int(col[low[0]])} {what} "
                                 "(at least 1)")
        for name, col in (("arrival_s", arrival), ("prompt_tokens", prompt), ("output_tokens", output)):
            object.__setattr__(self, name, col)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def duration_s(self) -> float:
        """Span between first and last arrival, seconds (0 for < 2 requests)."""
        if len(self) < 2:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def longest_request_tokens(self) -> int:
        """The largest prompt + output of a request (0 for an empty trace): the context an engine must
        serve to admit every request (``--allow-long-context``)."""
        return int((self.prompt_tokens + self.output_tokens).max()) if len(self) else 0

    @property
    def mean_rate_per_s(self) -> float:
        """Mean arrival rate, requests per second ((N-1) / span)."""
        d = self.duration_s
        return (len(self) - 1) / d if d > 0 else float("inf")

    def with_arrivals(self, arrival_s: np.ndarray) -> "Trace":
        return replace(self, arrival_s=np.asarray(arrival_s, dtype=np.float64))

    def head(self, n: int) -> "Trace":
        """The first ``n`` requests."""
        blocks = None if self.prefix_blocks is None else self.prefix_blocks[:n]
        chunks = None if self.chunk_ids is None else self.chunk_ids[:n]
        return replace(
            self,
            arrival_s=self.arrival_s[:n],
            prompt_tokens=self.prompt_tokens[:n],
            output_tokens=self.output_tokens[:n],
            prefix_blocks=blocks,
            chunk_ids=chunks,
        )


def _column(trace: str, name: str, values, dtype) -> np.ndarray:
    """``values`` as a 1-D array of ``dtype`` (unchanged when it already is one); token counts
    must be whole numbers (an integral float is converted, a NaN or fraction is an error)."""
    if isinstance(values, np.ndarray) and values.dtype == dtype and values.ndim == 1:
        return values
    try:
        col = np.asarray(values)
    except (TypeError, ValueError):
        col = None
    if col is None or col.ndim != 1 or not (np.issubdtype(col.dtype, np.integer) or np.issubdtype(col.dtype, np.floating)):
        kind = type(values).__name__ if col is None else f"{col.ndim}-D {col.dtype}"
        raise TraceError(f"trace {trace!r}: {name} must be a 1-D array of numbers (got {kind})")
    if dtype is np.int64 and not np.issubdtype(col.dtype, np.integer):
        bad = np.flatnonzero(~np.isfinite(col) | (col != np.round(col)))
        if bad.size:
            raise TraceError(f"trace {trace!r}: request {int(bad[0])} has {float(col[bad[0]])!r} {name} "
                             "(a whole number of tokens)")
    return col.astype(dtype)
