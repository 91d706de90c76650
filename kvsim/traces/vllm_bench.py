"""The JSON written by ``vllm bench serve --save-result --save-detailed``, as a workload.

Keys (vllm-project/vllm ``vllm/benchmarks/serve.py``, ``benchmark()`` and ``main_async()``),
lists in request order: ``input_lens`` (prompt tokens), ``output_lens`` (output tokens; 0 for
a failed request), ``errors`` ("" on success), and in newer vLLM versions ``start_times``
(when each request was sent, ``time.perf_counter()`` s). Scalars: ``request_rate`` (a number
or ``"inf"``), ``burstiness`` (Gamma shape; 1 = Poisson), ``max_concurrency``, ``ramp_up_strategy``.

Arrivals: ``start_times`` when present; otherwise regenerated as vLLM's ``get_request`` draws
them (:func:`synthetic_arrivals`) with a stated seed (vLLM's own draw cannot be reproduced:
its seed also drives dataset sampling), and the output says so. ``--arrivals`` replaces both.
A run with ``max_concurrency`` or a ramp-up and no ``start_times`` is refused (its send
times depended on the server's speed).

``kvsim validate replay`` reads the same file for the measured latencies
(:mod:`kvsim.validate.runlog_bench`); the arrival rules here are the ones it uses.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kvsim.errors import TraceError
from kvsim.traces.badrows import BadRow, BadRows
from kvsim.traces.base import Trace
from kvsim.traces.pipeline import LoadOptions
from kvsim.traces.tabular import Table, finish
from kvsim.traces.values import load_json, time_s, tokens

LENGTHS = ("input_lens", "output_lens")
DETAILED = ("input_lens", "output_lens", "ttfts", "latencies")


def is_bench_result(data) -> bool:
    """A ``vllm bench serve`` result: a JSON object with any of its per-request or summary keys."""
    return isinstance(data, dict) and any(k in data for k in (*DETAILED, "request_throughput", "mean_ttft_ms"))


def synthetic_arrivals(n: int, request_rate: float, burstiness: float, seed: int) -> np.ndarray:
    """Send times of ``n`` requests as vLLM ``get_request`` draws them, seconds.

    Inter-arrival gaps ~ Gamma(shape ``burstiness``, scale ``1 / (request_rate * burstiness)``),
    cumulated and rescaled so that the last request is sent at ``n / request_rate``
    (constant gaps 1/rate when ``burstiness`` is inf, all at 0 when ``request_rate`` is inf).
    """
    if math.isinf(request_rate) or n == 0:
        return np.zeros(n)
    if math.isinf(burstiness):
        gaps = np.full(n, 1.0 / request_rate)
    else:
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (request_rate * burstiness), size=n)
    t = np.cumsum(gaps)
    if t[-1] > 0:
        t *= (n / request_rate) / t[-1]
    return t


def bench_rate(data: dict, key: str, source: str) -> float:
    """``request_rate`` / ``burstiness``: a positive number or ``"inf"``."""
    v = data.get(key)
    if isinstance(v, str) and v.strip().lower() == "inf":
        return math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0):
        raise TraceError(f"{source}: '{key}' must be a positive number or \"inf\" to regenerate arrivals (got {v!r})")
    return float(v)


def bench_arrivals(data: dict, n: int, source: str, seed: int) -> tuple[list, str | None]:
    """Per-request send times: the logged ``start_times``, or synthetic ones with a description."""
    st = data.get("start_times")
    if isinstance(st, list) and len(st) == n:
        return st, None
    if data.get("max_concurrency") is not None:
        raise TraceError(f"{source}: max_concurrency {data['max_concurrency']} held requests back on the client and the "
                         "file has no start_times (newer vLLM writes them), so the arrivals cannot be replayed")
    if data.get("ramp_up_strategy") is not None:
        raise TraceError(f"{source}: a ramp-up run without start_times: its arrivals cannot be replayed")
    rate = bench_rate(data, "request_rate", source)
    burst = bench_rate(data, "burstiness", source) if "burstiness" in data else 1.0
    how = ("all at 0 s (request_rate inf)" if math.isinf(rate) else
           f"regenerated from request_rate {rate:g}/s and burstiness {burst:g} (Gamma gaps rescaled to span "
           f"{n}/{rate:g} s, numpy seed {seed}; vLLM's own draw is not reproducible)")
    return synthetic_arrivals(n, rate, burst, seed).tolist(), f"synthetic: {how}"


def read_vllm_bench(path: Path, opts: LoadOptions, data: dict | None = None) -> Trace:
    """Load a ``vllm bench serve --save-result --save-detailed`` JSON as a trace."""
    path = Path(path)
    data = load_json(path) if data is None else data
    if not is_bench_result(data):
        raise TraceError(f"{path}: not a vllm bench serve result JSON (no input_lens, ttfts or request_throughput)")
    missing = [k for k in LENGTHS if not isinstance(data.get(k), list)]
    if missing:
        raise TraceError(f"{path}: a vllm bench serve result without per-request lists ({', '.join(missing)}): "
                         "rerun with --save-result --save-detailed")
    n = len(data["input_lens"])
    lens = {k: len(data[k]) for k in (*LENGTHS, "errors", "start_times") if isinstance(data.get(k), list)}
    if any(v != n for v in lens.values()):
        raise TraceError(f"{path}: per-request lists differ in length ({', '.join(f'{k} {v}' for k, v in lens.items())})")
    notes: list[str] = []
    if opts.arrivals is None:
        sent, synthetic = bench_arrivals(data, n, str(path), opts.seed)
        if synthetic:
            notes.append(f"arrivals are {synthetic}")
    else:
        sent, synthetic = [0.0] * n, None  # placeholders: --arrivals replaces them
    errors = data["errors"] if isinstance(data.get("errors"), list) else [""] * n
    bad = BadRows(opts.strict)
    table = Table()  # arrivals: start_times, or synthetic; --arrivals replaces them in build_trace
    n_failed = 0
    for i in range(n):
        try:
            t = time_s(sent[i], "start_times", 1.0, json_value=True)
            p = tokens(data["input_lens"][i], "input_lens", json_value=True)
            o = tokens(data["output_lens"][i], "output_lens", json_value=True)
        except BadRow as b:
            bad.add_row(b, f"{path}: request {i}")
            continue
        if errors[i]:
            o, n_failed = 0, n_failed + 1  # a failed request: dropped and counted as failed
        table.add(t, p, o)
    meta = {"arrivals": synthetic or "start_times",
            "num_error_requests": n_failed}
    return finish(path, table, opts, bad, fmt="vllm-bench", arrival_label="start_times",
                  notes=notes, meta=meta, check_rounding=synthetic is None)  # perf_counter s: no rounding expected
