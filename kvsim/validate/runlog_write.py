"""Write per-request logs in the two formats ``kvsim validate replay`` reads.

Used by ``kvsim validate e2e --write-logs`` (the CPU torch serving loop) and by tests (a log
of kvsim's own simulation). Input: per request the arrival time, prompt and output token
counts and the time of every output token, all seconds on one clock.

* :func:`stats_rows` -> :func:`to_jsonl` / :func:`to_csv`: vLLM per-request stats names
  (``vllm/v1/metrics/stats.py``): ``queued_ts`` and ``arrival_time`` (both the arrival: the
  loop has one clock), ``first_token_ts``, ``last_token_ts``, ``num_prompt_tokens``,
  ``num_generation_tokens``, ``finish_reason``, plus ``token_ts`` (every token's time).
* :func:`bench_result`: the keys of ``vllm bench serve --save-result --save-detailed``
  (``vllm/benchmarks/serve.py``): ``input_lens``, ``output_lens``, ``ttfts``, ``itls``,
  ``latencies``, ``start_times``, ``errors``, ``request_rate``, ``burstiness``, ...
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json

import numpy as np

STATS_COLUMNS = ("request_id", "arrival_time", "queued_ts", "first_token_ts", "last_token_ts", "num_prompt_tokens",
                 "num_generation_tokens", "finish_reason", "token_ts")


def _times(token_times, output_tokens) -> list[list[float]]:
    out = []
    for i, (tt, o) in enumerate(zip(token_times, output_tokens)):
        t = [float(x) for x in (tt if tt is not None else [])]
        if len(t) != int(o):
            raise ValueError(f"request {i}: {len(t)} token times for {int(o)} output tokens")
        out.append(t)
    return out


def stats_rows(arrival_s, prompt_tokens, output_tokens, token_times, *, t0_s: float = 0.0) -> list[dict]:
    """One dict per request with vLLM's per-request stats names; times are ``t0_s`` + the given ones."""
    rows = []
    for i, (a, p, tt) in enumerate(zip(arrival_s, prompt_tokens, _times(token_times, output_tokens))):
        ts = [t0_s + t for t in tt]
        rows.append({"request_id": str(i), "arrival_time": t0_s + float(a), "queued_ts": t0_s + float(a),
                     "first_token_ts": ts[0], "last_token_ts": ts[-1], "num_prompt_tokens": int(p),
                     "num_generation_tokens": len(ts), "finish_reason": "length", "token_ts": ts})
    return rows


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows)


def to_csv(rows: list[dict]) -> str:
    """CSV with a header; ``token_ts`` as a JSON list in its cell."""
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(STATS_COLUMNS)
    for r in rows:
        w.writerow([json.dumps(r[c]) if c == "token_ts" else (repr(r[c]) if isinstance(r[c], float) else r[c])
                    for c in STATS_COLUMNS])
    return f.getvalue()


def bench_result(arrival_s, prompt_tokens, output_tokens, token_times, *, request_rate: float | str = "inf",
                 burstiness: float = 1.0, model_id: str = "", start_times: bool = True, label: str = "") -> dict:
    """A ``vllm bench serve --save-result --save-detailed`` JSON object for these requests."""
    tts = _times(token_times, output_tokens)
    arr = [float(a) for a in arrival_s]
    ttfts = [tt[0] - a for tt, a in zip(tts, arr)]
    lat = [tt[-1] - a for tt, a in zip(tts, arr)]
    duration = max(tt[-1] for tt in tts) - min(arr) if tts else 0.0
    n = len(tts)
    out = {
        "date": _dt.datetime.now().strftime("%Y%m%d-%H%M%S"), "backend": label or "kvsim", "label": label or None,
        "model_id": model_id, "num_prompts": n, "request_rate": request_rate, "burstiness": burstiness,
        "max_concurrency": None, "duration": duration, "completed": n, "failed": 0,
        "total_input_tokens": int(np.sum(prompt_tokens)), "total_output_tokens": int(np.sum(output_tokens)),
        "input_lens": [int(p) for p in prompt_tokens], "output_lens": [int(o) for o in output_tokens],
        "ttfts": ttfts, "itls": [np.diff(tt).tolist() for tt in tts], "latencies": lat,
        "errors": [""] * n,
    }
    if start_times:
        out["start_times"] = arr
    return out


def log_files(arrival_s, prompt_tokens, output_tokens, token_times, meta: dict, *, t0_s: float = 0.0,
              request_rate: float | str = "inf", model_id: str = "", label: str = "") -> dict[str, str]:
    """``requests.jsonl``, ``requests.csv`` (vLLM stats), ``bench.json`` (bench serve) and
    ``meta.json`` (the engine settings ``kvsim validate replay --meta`` reads): name -> text."""
    rows = stats_rows(arrival_s, prompt_tokens, output_tokens, token_times, t0_s=t0_s)
    bench = bench_result(arrival_s, prompt_tokens, output_tokens, token_times, request_rate=request_rate,
                         model_id=model_id, label=label)
    return {"requests.jsonl": to_jsonl(rows), "requests.csv": to_csv(rows),
            "bench.json": json.dumps(bench, indent=1, allow_nan=False) + "\n",
            "meta.json": json.dumps(meta, indent=1, allow_nan=False) + "\n"}
