"""The request trace every loader and generator produces.

A :class:`Trace` is columnar (numpy arrays), so that million-request traces stay
cheap to build, rescale and slice. Arrays are sorted by arrival time.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


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

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def duration_s(self) -> float:
        """Span between first and last arrival, seconds (0 for < 2 requests)."""
        if len(self) < 2:
            return 0.0
        return float(self.arrival_s[-1] - self.arrival_s[0])

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
