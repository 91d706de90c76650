"""RAG workload generator (``synthetic-rag``): k retrieved chunks per query from a corpus.

Each request's prompt is ``k`` distinct chunks of ``chunk`` tokens drawn from a corpus of
``corpus`` chunks, then a question of ``question`` tokens; it generates ``output`` tokens.
Arrivals are Poisson at ``rate`` requests/s. Chunk popularity is Zipf: the chunk of rank
``i`` (1-based) is retrieved with probability ``~ i^-a`` per draw, and a query's ``k`` chunks
are distinct (draws repeated until ``k`` differ). The chunk ids (= ranks - 1) go to
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
from kvsim.traces.synthetic import Rate, Tokens, ZipfA, _Params
from kvsim.specbase import number

MAX_CORPUS = 100_000_000  # chunks (the popularity table is one float64 per chunk: 800 MB at the cap)
MAX_K = 1024  # chunks per query


class RagParams(_Params):
    """RAG queries: Poisson arrivals, k distinct Zipf-popular chunks per query, then a question."""

    rate: Rate = Field(1.0, description="mean arrival rate, requests/s")
    corpus: number(int, 1, MAX_CORPUS, unit="chunks") = Field(10_000, description="chunks in the corpus")
    k: number(int, 1, MAX_K, unit="chunks") = Field(6, description="chunks retrieved per query")
    zipf_a: ZipfA = Field(1.0, description="Zipf exponent of chunk popularity (0: uniform)")
    chunk_tokens: Tokens = Field(512, alias="chunk", description="tokens per chunk")
    question_tokens: Tokens = Field(64, alias="question", description="question tokens after the chunks")
    output_tokens: Tokens = Field(128, alias="output", description="output tokens per request")

    @model_validator(mode="after")
    def _k_fits(self) -> RagParams:
        if self.k > self.corpus:
            raise ValueError(f"k ({self.k}) must be <= corpus ({self.corpus}): a query's chunks are distinct")
        return self


def popularity(corpus: int, a: float) -> np.ndarray:
    """[corpus] probabilities ``i^-a / sum_j j^-a`` of the chunks of rank i = 1..corpus."""
    w = np.arange(1, corpus + 1, dtype=np.float64) ** -a
    return w / w.sum()


def draw_chunks(n: int, k: int, prob: np.ndarray, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``n`` queries of ``k`` distinct chunk ids each, drawn by ``prob`` (first k distinct draws)."""
    cdf = np.cumsum(prob)
    cdf[-1] = 1.0
    out: list[tuple[int, ...]] = []
    batch = np.searchsorted(cdf, rng.random((n, 2 * k)), side="right")
    for row in batch.tolist():
        ids = list(dict.fromkeys(row))
        while len(ids) < k:  # popular chunks repeat: draw more until k differ
            ids = list(dict.fromkeys(ids + np.searchsorted(cdf, rng.random(2 * k), side="right").tolist()))
        out.append(tuple(ids[:k]))
    return out


def generate(params: RagParams, rng: np.random.Generator) -> RawRequests:
    """Draw ``params.num_requests`` RAG requests; arrivals sorted, starting at 0 s."""
    n = params.num_requests
    t = poisson_arrivals(n, params.rate, rng)
    chunks = draw_chunks(n, params.k, popularity(params.corpus, params.zipf_a), rng)
    prompt = np.full(n, params.k * params.chunk_tokens + params.question_tokens, dtype=np.int64)
    output = np.full(n, params.output_tokens, dtype=np.int64)
    return RawRequests(time_s=t, prompt_tokens=prompt, output_tokens=output, chunk_ids=chunks,
                       chunk_tokens=params.chunk_tokens)
