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

from kvsim.errors import TraceError
from kvsim.traces.vllm_bench import DETAILED, bench_arrivals, is_bench_result, synthetic_arrivals
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

# The bench JSON's keys and arrival rules live with the trace reader (one parser of the format).
__all__ = ["DETAILED", "is_bench_result", "read_bench_log", "synthetic_arrivals"]


def read_bench_log(data: dict, source: str, seed: int = 0) -> RunLog:
    """Parse a ``vllm bench serve`` detailed result (see the module docstring)."""
    derived = not isinstance(data.get("latencies"), list) and isinstance(data.get("itls"), list)
    if derived:  # older vLLM bench scripts (benchmark_serving.py) save ttfts and itls but no latencies
        data = {**data, "latencies": [_e2e_from_chunks(t, x) for t, x in zip(data.get("ttfts") or [], data["itls"])]}
    missing = [k for k in DETAILED if not isinstance(data.get(k), list)]
    if missing:
        raise TraceError(f"{source}: a vllm bench serve result without per-request lists ({', '.join(missing)}): "
                         "rerun with --save-result --save-detailed")
    n = len(data["input_lens"])
    lens = {k: len(data[k]) for k in (*DETAILED, "itls", "errors", "start_times") if isinstance(data.get(k), list)}
    if any(v != n for v in lens.values()):
        raise TraceError(f"{source}: per-request lists differ in length ({', '.join(f'{k} {v}' for k, v in lens.items())})")
    arrivals, synthetic = bench_arrivals(data, n, source, seed)
    itls = data.get("itls") if isinstance(data.get("itls"), list) else [None] * n
    errors = data.get("errors") if isinstance(data.get("errors"), list) else [""] * n
    rows = Rows(read=n)
    n_itl_given = 0
    for i in range(n):
        try:
            arrival = time_s(arrivals[i])
            if errors[i]:  # (before its times: a failed request of an older file has no latency to derive)
                raise BadRow("failed_request")
            ttft, e2e = time_s(data["ttfts"][i]), time_s(data["latencies"][i])
            prompt = tokens(data["input_lens"][i], "zero_prompt_tokens")
            output = tokens(data["output_lens"][i], "zero_output_tokens")
            first, last = arrival + ttft, arrival + e2e
            check_order(arrival, first, last)
        except BadRow as bad:
            rows.count_bad(bad, f"{source} request {i}")
            continue
        n_itl_given += int(itls[i] is not None)
        rows.add(arrival, first, last, prompt, output, itl_from_intervals(float_list(itls[i]), first, last, output))
    notes = []
    # vLLM's non-streaming request functions leave ttft at 0.0 and itl empty: no token was timed
    streamed = not rows.arrival or any(f > a for f, a in zip(rows.first, rows.arrival))
    if not streamed:
        notes.append("the run did not stream tokens (every ttft is 0 and itls are empty): TTFT, TPOT and ITL were not "
                     "measured, only E2E is compared")
    n_itl = sum(x is not None for x in rows.itl)
    if n_itl_given > n_itl and streamed:  # (a run that did not stream has empty itls: said above)
        notes.append(f"ITL: {n_itl_given - n_itl} of {n_itl_given} requests streamed a different number of chunks than "
                     "output tokens - 1 (several tokens per chunk); ITL is compared on the other requests")
    if derived:
        notes.append("the file has no latencies (an older vLLM bench script): E2E is ttft + the sum of itls per request")
    notes.append("times are client-side (HTTP, tokenisation and detokenisation included; kvsim does not model them)")
    return build_log(rows, fmt="vllm-bench-json", source=source, synthetic=synthetic, notes=notes, streamed=streamed)


def _e2e_from_chunks(ttft, itls):
    """A request's end-to-end latency from its first-chunk time and the intervals between the chunks
    that followed (None, a bad row, when they are not numbers or the request streamed no chunk)."""
    try:
        if isinstance(ttft, bool) or not isinstance(itls, list) or float(ttft) <= 0:
            return None
        return float(ttft) + sum(float(x) for x in itls)
    except (TypeError, ValueError):
        return None
