"""SCBench-style shared-context workload: long contexts reused by many follow-up queries.

SCBench (Li et al., "SCBench: A KV Cache-Centric Analysis of Long-Context Methods",
arXiv:2412.10319, ICLR 2025) evaluates KV reuse with a shared long context and several
follow-up queries in two sharing modes (its Section 2):

* ``multi-turn``: the queries are the turns of one session; turn ``k``'s prompt is the context,
  the previous turns' queries and answers, and its own query, so it extends turn ``k-1``'s prompt;
* ``multi-request``: the queries are independent requests that share only the context
  (prompt = context + query).

Sessions (``n / turns`` of them, the last one maybe shorter) start as a Poisson process of
``rate / turns`` sessions/s (so requests arrive at ``rate`` requests/s on average over a long
trace: a short one's span is stretched by its last sessions' ``(turns - 1) * gap``); turn ``k`` of a
session arrives ``k * gap`` seconds after its first (a trace cannot wait for an answer: ``gap``
stands for the answer time plus the user's think time). Session ``s`` uses context ``s mod
contexts``, so sessions share contexts whenever ``contexts`` < sessions (both modes).

Prefix ids (for the simulator's prefix cache and the KV offload tiers, :mod:`kvsim.sim.kv_tiers`):
``block`` tokens per id. A context's full blocks have the same ids in every request that uses
it; in ``multi-turn`` a session's stream continues with ids of its own (turn ``k`` reuses every
full block of turn ``k-1``'s prompt), in ``multi-request`` a request's blocks after the context
are its own. Lengths are fixed (SCBench's contexts vary by task; set ``context`` per run).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from kvsim.traces.arrivals import poisson_arrivals
from kvsim.traces.pipeline import RawRequests
from kvsim.traces.synthetic import Rate, Tokens, _Params
from kvsim.specbase import number

Count = number(int, 1, 1_000_000, unit="count")
GapS = number(float, 0, 1e6, unit="s")


class SCBenchParams(_Params):
    """Shared contexts with follow-up queries (SCBench's two sharing modes)."""

    rate: Rate = Field(1.0, description="mean arrival rate, requests/s")
    mode: Literal["multi-turn", "multi-request"] = Field("multi-turn", description="how queries share the context")
    contexts: Count = Field(4, description="distinct shared contexts")
    turns: Count = Field(5, description="queries per session")
    context_tokens: Tokens = Field(16384, alias="context", description="tokens of a shared context")
    query_tokens: Tokens = Field(64, alias="query", description="tokens of one follow-up query")
    output_tokens: Tokens = Field(128, alias="output", description="tokens of one answer")
    gap_s: GapS = Field(30.0, alias="gap", description="seconds between the turns of a session")
    block_tokens: Count = Field(512, alias="block", description="tokens per prefix id")


def generate(p: SCBenchParams, rng: np.random.Generator) -> RawRequests:
    """Draw the requests (session order; the trace pipeline sorts them by arrival)."""
    n, T, pb = p.num_requests, p.turns, p.block_tokens
    sessions = -(-n // T)
    starts = poisson_arrivals(sessions, p.rate / T, rng)
    full = p.context_tokens // pb  # full blocks of a context, shared
    ctx_ids = [list(range(c * full, (c + 1) * full)) for c in range(p.contexts)]
    next_id = p.contexts * full
    multi_turn = p.mode == "multi-turn"
    time_s, prompt, blocks, session = [], [], [], []
    for s in range(sessions):
        stream = list(ctx_ids[s % p.contexts])
        history = 0  # tokens of earlier turns (queries and answers) in the prompt
        for k in range(min(T, n - s * T)):
            length = p.context_tokens + history + p.query_tokens
            need = -(-length // pb)
            if multi_turn:
                ids = stream
            else:
                ids = list(ctx_ids[s % p.contexts])
            if len(ids) < need:  # new ids for the blocks past the shared ones
                m = need - len(ids)
                ids.extend(range(next_id, next_id + m))
                next_id += m
            blocks.append(tuple(ids[:need]))
            time_s.append(starts[s] + k * p.gap_s)
            prompt.append(length)
            session.append(s)
            if multi_turn:
                history += p.query_tokens + p.output_tokens
    n_rows = len(prompt)
    return RawRequests(
        time_s=np.asarray(time_s, dtype=np.float64), prompt_tokens=np.asarray(prompt, dtype=np.int64),
        output_tokens=np.full(n_rows, p.output_tokens, dtype=np.int64), prefix_blocks=blocks,
        prefix_block_tokens=pb, meta={"sessions": sessions, "mode": p.mode})
