"""Expert routing traces and the hit rate of an LRU expert cache over them.

Routing trace file (text, UTF-8; docs/expert-offload.md): one line per generated token, in order;
one whitespace-separated field per MoE layer; each field the comma-separated ids (0-based) of the
experts the router chose for that token in that layer. ``#`` starts a comment; blank lines are
skipped. Every line has the same number of fields (at most the model's MoE layers) and each field
exactly ``experts_per_token`` distinct ids below ``num_experts``. Mixtral (top-2), two layers::

    # token 0           token 1
    3,7 0,5
    3,1 0,5

Hit rate of an LRU cache of ``C`` experts per layer (the expert cache of Eliseev & Mazur 2023,
"Fast Inference of Mixture-of-Experts Language Models with Offloading", arXiv:2312.17238: each
layer keeps its ``C`` most recently used experts on the GPU): a token's access to expert ``e`` in layer ``l`` hits when
``e`` is among the ``C`` experts of layer ``l`` used most recently *before* this token (the token's
own experts are all needed at once, so none evicts another). Hit rate = hits / accesses over the
whole trace, cold start included (the first ``C`` distinct experts of a layer are misses).
"""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np

from kvsim.errors import ConfigError, SpecError, TraceError
from kvsim.specbase import read_text

#: tokens read from one routing trace (200k tokens of a 48-layer top-8 model: 77M ids, 614 MB as int64)
MAX_ROUTING_TOKENS = 200_000


def read_routing_trace(path: str | Path, num_experts: int, experts_per_token: int, num_moe_layers: int) -> np.ndarray:
    """The trace as ``[tokens, layers, k]`` int64 expert ids; a bad line raises a one-line TraceError."""
    try:
        text = read_text(Path(path))
    except SpecError as err:  # unreadable / not UTF-8: re-raised as a trace error
        raise TraceError(f"--expert-offload routing={path}: {str(err).split(': ', 1)[-1]}") from None
    ids_flat = array("q")  # token-major [tokens, layers, k]
    n_tokens = 0
    width = None
    for n, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0].split()
        if not body:
            continue
        where = f"{path}:{n}"
        if width is None:
            width = len(body)
            if width > num_moe_layers:
                raise TraceError(f"{where}: {width} layer fields, but the model has {num_moe_layers} MoE layers")
        elif len(body) != width:
            raise TraceError(f"{where}: {len(body)} layer fields, the first token line has {width}")
        for field in body:
            try:
                ids = [int(x) for x in field.split(",")]
            except ValueError:
                raise TraceError(f"{where}: '{field}' is not a comma-separated list of expert ids") from None
            if len(ids) != experts_per_token or len(set(ids)) != len(ids):
                raise TraceError(f"{where}: '{field}' must name {experts_per_token} distinct experts "
                                 f"(the model's experts_per_token)")
            if min(ids) < 0 or max(ids) >= num_experts:
                raise TraceError(f"{where}: expert ids must be in [0, {num_experts - 1}], got '{field}'")
            ids_flat.extend(ids)
        n_tokens += 1
        if n_tokens > MAX_ROUTING_TOKENS:
            raise TraceError(f"{path}: more than {MAX_ROUTING_TOKENS:,} token lines")
    if not n_tokens:
        raise TraceError(f"{path}: no token lines (format: one line per token, one field per MoE layer, "
                         "comma-separated expert ids)")
    return np.frombuffer(ids_flat, dtype=np.int64).reshape(n_tokens, width, experts_per_token).copy()


def lru_hit_rate(routing: np.ndarray, cache_experts: int, num_experts: int) -> float:
    """Fraction of accesses that hit an LRU cache of ``cache_experts`` experts per layer (module docstring).

    Args:
        routing: ``[tokens, layers, k]`` expert ids.
        cache_experts: ``C``, experts each layer keeps on the GPU; 0 or at least ``k``.
    """
    T, L, k = routing.shape
    if cache_experts == 0:
        return 0.0
    if cache_experts < k:
        raise ConfigError(f"--expert-offload cache={cache_experts}: an LRU cache must hold the {k} experts a token uses")
    # [L, E] time of each expert's last use: token t, slot j -> t * k + j (distinct times, so the
    # C most recent experts are always exactly C, even when a token's experts straddle the boundary)
    last = np.full((L, num_experts), -1, dtype=np.int64)
    rows = np.arange(L)[:, None]  # [L, 1]
    slots = np.arange(k)[None, :]  # [1, k]
    hits = 0
    for t in range(T):
        ids = routing[t]  # [L, k]
        seen = last[rows, ids]  # [L, k] last use of this token's experts
        newer = (last[:, None, :] > seen[:, :, None]).sum(axis=-1)  # [L, k] experts used since
        hits += int(((seen >= 0) & (newer < cache_experts)).sum())
        last[rows, ids] = t * k + slots
    return hits / float(T * L * k)
