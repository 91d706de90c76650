"""RAG workload generator (``synthetic-rag``): k retrieved chunks per query from a corpus.

Each request's prompt is ``k`` distinct chunks of ``chunk`` tokens drawn from a corpus of
``corpus`` chunks, then a question of ``question`` tokens; it generates ``output`` tokens.
Arrivals are Poisson at ``rate`` requests/s. Chunk popularity is Zipf: the chunk of rank
``i`` (1-based) is retrieved with probability ``~ i^-a`` per draw, and a query's ``k`` chunks
are distinct (weighted sampling without replacement). The chunk ids (= ranks - 1) go to
``Trace.chunk_ids``, so a chunk cache (``kvsim.sim.chunk_cache``) can decide which hit.

Defaults: 6 chunks of 512 tokens per query (CacheBlend §7 setup, METHODS.md §2 row 23);
corpus 10,000 chunks, Zipf a = 1.0, question 64 and output 128 tokens are illustrative
[UNVERIFIED: no published RAG trace was read for them].
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from kvsim.traces.arrivals import poisson_arrivals
from kvsim.traces.pipeline import RawRequests
from kvsim.traces._io import MAX_TOKENS
from kvsim.traces.synthetic import Rate, Tokens, _Params
from kvsim.specbase import number

MAX_CORPUS = 10_000_000  # chunks (the popularity table and its CDF: 160 MB at the cap)
MAX_K = 1024  # chunks per query
MAX_CHUNK_REFS = 50_000_000  # n x k chunk ids held by a trace (a few GB of Python tuples at the cap)


class RagParams(_Params):
    """RAG queries: Poisson arrivals, k distinct Zipf-popular chunks per query, then a question."""

    rate: Rate = Field(1.0, description="mean arrival rate, requests/s")
    corpus: number(int, 1, MAX_CORPUS, unit="chunks") = Field(10_000, description="chunks in the corpus")
    k: number(int, 1, MAX_K, unit="chunks") = Field(6, description="chunks retrieved per query")
    zipf_a: number(float, 0, 10) = Field(1.0, description="Zipf exponent of chunk popularity (0: uniform)")
    chunk_tokens: Tokens = Field(512, alias="chunk", description="tokens per chunk")
    question_tokens: Tokens = Field(64, alias="question", description="question tokens after the chunks")
    output_tokens: Tokens = Field(128, alias="output", description="output tokens per request")

    @model_validator(mode="after")
    def _k_fits(self) -> RagParams:
        if self.k > self.corpus:
            raise ValueError(f"k ({self.k}) must be <= corpus ({self.corpus}): a query's chunks are distinct")
        if self.num_requests * self.k > MAX_CHUNK_REFS:
            raise ValueError(f"n x k ({self.num_requests * self.k:,}) must be <= {MAX_CHUNK_REFS:,} chunk references")
        if self.k * self.chunk_tokens + self.question_tokens > MAX_TOKENS:
            raise ValueError(f"k x chunk + question ({self.k * self.chunk_tokens + self.question_tokens:,}) must be "
                             f"<= {MAX_TOKENS:,} prompt tokens")
        return self


def popularity(corpus: int, a: float) -> np.ndarray:
    """[corpus] probabilities ``i^-a / sum_j j^-a`` of the chunks of rank i = 1..corpus."""
    w = np.arange(1, corpus + 1, dtype=np.float64) ** -a
    return w / w.sum()


def draw_chunks(n: int, k: int, prob: np.ndarray, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``n`` queries of ``k`` distinct chunk ids each: weighted sampling without replacement.

    Successive sampling (each next chunk drawn by ``prob`` among those not yet chosen) is the
    same as drawing with replacement and keeping the first ``k`` distinct ids. Rows are drawn
    ``2k`` at a time, vectorized, in blocks of bounded memory; a row left with fewer than ``k``
    distinct ids (popular chunks repeat) continues with exact successive draws
    (:func:`_next_distinct`).
    """
    cdf = np.cumsum(prob)
    total = float(cdf[-1])
    out: list[tuple[int, ...]] = []
    rows_per_block = max(1, 1_000_000 // (2 * k))
    for lo in range(0, n, rows_per_block):
        m = min(rows_per_block, n - lo)
        batch = np.searchsorted(cdf, rng.random((m, 2 * k)) * total, side="right")
        np.minimum(batch, prob.size - 1, out=batch)
        for row in batch.tolist():
            ids = list(dict.fromkeys(row))[:k]
            while len(ids) < k:
                ids.append(_next_distinct(cdf, prob, ids, rng))
            out.append(tuple(ids))
    return out


def _next_distinct(cdf: np.ndarray, prob: np.ndarray, chosen: list[int], rng: np.random.Generator) -> int:
    """One id drawn by ``prob`` among those not in ``chosen``.

    With ``m(j)`` the chosen mass at ids <= j, the answer is the first j with
    ``cdf[j] - m(j) > t`` (t uniform on the unchosen mass); iterating ``j = first with
    cdf[j] > t + m(j_prev)`` from ``m = 0`` rises to it in at most ``len(chosen) + 1`` steps.
    Where the unchosen mass is below float resolution (ranks with ``p < 1e-16``), the most
    popular unchosen id is taken.
    """
    taken = set(chosen)
    rest = float(cdf[-1]) - float(sum(prob[c] for c in chosen))
    if rest > 1e-12 * float(cdf[-1]):
        t = rng.random() * rest
        m = 0.0
        for _ in range(len(chosen) + 2):
            j = min(int(np.searchsorted(cdf, t + m, side="right")), prob.size - 1)
            m_new = float(sum(prob[c] for c in chosen if c <= j))
            if m_new == m:
                break
            m = m_new
        if j not in taken:
            return j
    return next(i for i in range(prob.size) if i not in taken)  # ids are popularity ranks


def generate(params: RagParams, rng: np.random.Generator) -> RawRequests:
    """Draw ``params.num_requests`` RAG requests; arrivals sorted, starting at 0 s."""
    n = params.num_requests
    t = poisson_arrivals(n, params.rate, rng)
    chunks = draw_chunks(n, params.k, popularity(params.corpus, params.zipf_a), rng)
    prompt = np.full(n, params.k * params.chunk_tokens + params.question_tokens, dtype=np.int64)
    output = np.full(n, params.output_tokens, dtype=np.int64)
    return RawRequests(time_s=t, prompt_tokens=prompt, output_tokens=output, chunk_ids=chunks,
                       chunk_tokens=params.chunk_tokens)
