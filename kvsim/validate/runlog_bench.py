"""Read the JSON written by ``vllm bench serve --save-result --save-detailed``.

Keys (vllm-project/vllm ``vllm/benchmarks/serve.py``, ``benchmark()`` and ``main_async()``;
per-request values from ``vllm/benchmarks/lib/endpoint_request_func.py`` ``RequestFuncOutput``),
lists in request order:

* ``input_lens`` (prompt tokens), ``output_lens`` (output tokens; 0 for a failed request),
  ``ttfts`` (s), ``itls`` (per request, the intervals between streamed chunks, s),
  ``latencies`` (E2E, s: request sent to last chunk), ``errors`` ("" on success);
* ``start_times``: when each request was sent (``time.perf_counter()``, s); only in newer
  vLLM versions. Without them arrivals are regenerated as vLLM's ``get_request`` draws them:
  inter-arrival gaps ~ Gamma(shape ``burstiness``, scale ``1 / (request_rate * burstiness)``),
  cumulated and rescaled so that the last request is sent at ``num_requests / request_rate``
  (constant gaps when ``burstiness`` is inf, all at 0 when ``request_rate`` is ``"inf"``).
  vLLM's own draw cannot be reproduced (its seed also drives dataset sampling), so these
  arrivals are synthetic with a stated seed, and the output says so.

``--save-result`` without ``--save-detailed`` drops the per-request lists: such a file is
refused. A run with ``max_concurrency`` (the client held requests back) or a ramp-up has
arrivals only ``start_times`` can give; without them it is refused.

Times are client-side: TTFT and E2E include HTTP, tokenisation and detokenisation, which
kvsim does not model.
"""

from __future__ import annotations

import math

import numpy as np

from kvsim.errors import TraceError
from kvsim.validate.runlog import (
    BadRow,
    Rows,
    RunLog,
    build_log,
    check_order,
    float_list,
    itl_from_intervals,
    time_s,
    tokens,
)

DETAILED = ("input_lens", "output_lens", "ttfts", "latencies")


def is_bench_result(data) -> bool:
    """A ``vllm bench serve`` result: a JSON object with any of its per-request or summary keys."""
    return isinstance(data, dict) and any(k in data for k in (*DETAILED, "request_throughput", "mean_ttft_ms"))


def synthetic_arrivals(n: int, request_rate: float, burstiness: float, seed: int) -> np.ndarray:
    """Send times of ``n`` requests as vLLM ``get_request`` draws them (module docstring), seconds."""
    if math.isinf(request_rate):
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


def _rate(data: dict, key: str, source: str) -> float:
    v = data.get(key)
    if isinstance(v, str) and v.strip().lower() == "inf":
        return math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0):
        raise TraceError(f"{source}: '{key}' must be a positive number or \"inf\" to regenerate arrivals (got {v!r})")
    return float(v)


def _arrivals(data: dict, n: int, source: str, seed: int) -> tuple[list, str | None]:
    """Per-request send times: logged ``start_times``, or synthetic ones with a description."""
    st = data.get("start_times")
    if isinstance(st, list) and len(st) == n:
        return st, None
    if data.get("max_concurrency") is not None:
        raise TraceError(f"{source}: max_concurrency {data['max_concurrency']} held requests back on the client and the "
                         "file has no start_times (newer vLLM writes them), so the arrivals cannot be replayed")
    if data.get("ramp_up_strategy") is not None:
        raise TraceError(f"{source}: a ramp-up run without start_times: its arrivals cannot be replayed")
    rate, burst = _rate(data, "request_rate", source), _rate(data, "burstiness", source) if "burstiness" in data else 1.0
    how = ("all at 0 s (request_rate inf)" if math.isinf(rate) else
           f"regenerated from request_rate {rate:g}/s and burstiness {burst:g} (Gamma gaps rescaled to span "
           f"{n}/{rate:g} s, numpy seed {seed}; vLLM's own draw is not reproducible)")
    return synthetic_arrivals(n, rate, burst, seed).tolist(), f"synthetic: {how}"


def read_bench_log(data: dict, source: str, seed: int = 0) -> RunLog:
    """Parse a ``vllm bench serve`` detailed result (see the module docstring)."""
    missing = [k for k in DETAILED if not isinstance(data.get(k), list)]
    if missing:
        raise TraceError(f"{source}: a vllm bench serve result without per-request lists ({', '.join(missing)}): "
                         "rerun with --save-result --save-detailed")
    n = len(data["input_lens"])
    lens = {k: len(data[k]) for k in (*DETAILED, "itls", "errors", "start_times") if isinstance(data.get(k), list)}
    if any(v != n for v in lens.values()):
        raise TraceError(f"{source}: per-request lists differ in length ({', '.join(f'{k} {v}' for k, v in lens.items())})")
    arrivals, synthetic = _arrivals(data, n, source, seed)
    itls = data.get("itls") if isinstance(data.get("itls"), list) else [None] * n
    errors = data.get("errors") if isinstance(data.get("errors"), list) else [""] * n
    rows = Rows(read=n)
    n_itl_given = 0
    for i in range(n):
        try:
            arrival = time_s(arrivals[i])
            ttft, e2e = time_s(data["ttfts"][i]), time_s(data["latencies"][i])
            if errors[i]:
                raise BadRow("failed_request")
            prompt = tokens(data["input_lens"][i], "zero_prompt_tokens")
            output = tokens(data["output_lens"][i], "zero_output_tokens")
            first, last = arrival + ttft, arrival + e2e
            check_order(arrival, first, last)
        except BadRow as bad:
            rows.bad[bad.kind] += 1
            continue
        n_itl_given += int(itls[i] is not None)
        rows.add(arrival, first, last, prompt, output, itl_from_intervals(float_list(itls[i]), first, last, output))
    notes = []
    n_itl = sum(x is not None for x in rows.itl)
    if n_itl_given > n_itl:
        notes.append(f"ITL: {n_itl_given - n_itl} of {n_itl_given} requests streamed a different number of chunks than "
                     "output tokens - 1 (several tokens per chunk); ITL is compared on the other requests")
    notes.append("times are client-side (HTTP, tokenisation and detokenisation included; kvsim does not model them)")
    return build_log(rows, fmt="vllm-bench-json", source=source, synthetic=synthetic, notes=notes)
