"""``kvsim validate replay``: a real serving run's per-request log vs kvsim's simulation of it.

The log's requests (arrival times, prompt and output token counts) are replayed through
:func:`kvsim.sim.replica.simulate` (Full KV; the run's engine settings, see
:mod:`kvsim.validate.replay_settings`), and four latency metrics are compared on the
requests both sides completed (definitions of vLLM ``vllm/benchmarks/serve.py``
``calculate_metrics`` and :mod:`kvsim.sim.metrics`):

* TTFT = first token - arrival; E2E = last token - arrival (per request);
* TPOT = (last token - first token) / (output tokens - 1), per request with >= 2 output tokens;
* ITL = every interval between consecutive tokens, pooled over the requests whose log has
  usable per-token times (the same requests on both sides).

Each gets mean, p50, p90, p99 (numpy's linear percentiles, as vLLM's benchmark) measured and
predicted, and the signed relative error ``predicted / measured - 1`` (positive: kvsim
predicts slower than the run). The *checked* statistics (default mean and p50 of each
metric; tails are noisy on small runs) pass when ``|error| <= tolerance``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from kvsim.costmodel.deployment import build_deployment
from kvsim.errors import ConfigError, TraceError
from kvsim.jsonutil import DuplicateKeyError, json_default, loads_unique
from kvsim.methods import make_method
from kvsim.sim.config import SimConfig
from kvsim.sim.inputs import whole_prompt_budget_note
from kvsim.sim.replica import simulate
from kvsim.sim.request import RequestStatus
from kvsim.traces._io import open_text
from kvsim.traces.base import Trace
from kvsim.validate.replay_settings import EngineSettings
from kvsim.validate.runlog import RunLog
from kvsim.validate.runlog_bench import is_bench_result, read_bench_log
from kvsim.validate.runlog_stats import PROMPT_NAMES, TIME_NAMES, read_stats_log

FORMATS = ("auto", "jsonl", "csv", "bench")
METRICS = ("ttft_s", "tpot_s", "itl_s", "e2e_s")
STATS = ("mean", "p50", "p90", "p99")
DEFAULT_CHECK = ("mean", "p50")
DEFAULT_TOLERANCE = 0.25
KIND = "kvsim-validate-replay"


TIME_UNITS = ("auto", "s", "ms")
#: ``--time-unit auto`` refuses a log whose median TPOT is above this: its times are most likely milliseconds
#: (vLLM writes seconds; a 2 s median time per output token is far beyond any GPU serving run).
MS_SUSPECT_TPOT_S = 2.0
#: without a TPOT (a run that did not stream, or one-token outputs), ``auto`` refuses a log whose median
#: end-to-end latency per token of the request (prompt + output) is above this: a GPU prefills
#: thousands of prompt tokens per second, so even a long queue rarely takes 0.1 s per token
MS_SUSPECT_E2E_PER_TOKEN_S = 0.1


def in_unit(log: RunLog, unit: str) -> RunLog:
    """``log`` with its times read in ``unit``: 'ms' divides them by 1000; 'auto' checks that seconds are plausible."""
    if unit == "ms":
        k = 1e-3
        return replace(log, arrival_s=log.arrival_s * k, first_token_s=log.first_token_s * k,
                       last_token_s=log.last_token_s * k, itl_s=[None if x is None else x * k for x in log.itl_s])
    if unit != "auto" or not len(log.output_tokens):
        return log
    multi = log.output_tokens >= 2
    if log.streamed and multi.any():
        tpot = (log.last_token_s - log.first_token_s)[multi] / (log.output_tokens[multi] - 1)
        med = float(np.median(tpot))
        if med > MS_SUSPECT_TPOT_S:
            raise TraceError(f"{log.source}: the median time per output token is {med:.4g} s: the log's times look like "
                             "milliseconds; pass --time-unit ms (or --time-unit s if the run really was that slow)")
        if med > 0:  # (0: first and last token at one instant, a run that did not stream: judged below)
            return log
    per_token = (log.last_token_s - log.arrival_s) / (log.prompt_tokens + log.output_tokens)
    med = float(np.median(per_token))
    if med > MS_SUSPECT_E2E_PER_TOKEN_S:
        raise TraceError(f"{log.source}: the median end-to-end latency is {med:.4g} s per token of the request (no time per "
                         "output token to judge by): the log's times look like milliseconds; pass --time-unit ms (or "
                         "--time-unit s if the run really was that slow)")
    return log


def read_run_log(path: str | Path, fmt: str = "auto", *, seed: int = 0, strict: bool = False,
                 time_unit: str = "auto") -> RunLog:
    """Read a per-request log: vLLM stats as JSONL/JSON/CSV, or a ``vllm bench serve`` result JSON;
    ``time_unit`` as :func:`in_unit`."""
    p = Path(path)
    if p.is_dir():
        raise TraceError(f"{p}: is a folder; pass the log file")
    if not p.is_file():
        raise TraceError(f"{p}: log file not found")
    try:
        with open_text(p) as f:  # (a .gz log is read through gzip, as --trace reads one)
            text = f.read()
    except UnicodeDecodeError as err:
        raise TraceError(f"{p}: cannot read as UTF-8 text ({str(err).splitlines()[0]})") from None
    except OSError as err:
        raise TraceError(f"{p}: cannot read ({err.strerror or err})") from None
    text = text.lstrip("\ufeff")  # a UTF-8 byte-order mark (Excel, PowerShell), before any format is detected
    if not text.strip():
        raise TraceError(f"{p}: empty file")
    data = None
    if fmt in ("auto", "bench") and text.lstrip().startswith("{"):
        try:
            data = loads_unique(text)
        except DuplicateKeyError as err:  # (not "several results": the same document, a key written twice)
            raise TraceError(f"{p}: {err}") from None
        except ValueError:
            data = _appended_results(text, p)
        if isinstance(data, dict) and not is_bench_result(data) and fmt == "auto" and "\n" in text.strip():
            if not any(k in data for k in STATS_ROW_KEYS):  # a pretty-printed JSON object, not a one-row JSONL
                what = f" (kind: {data['kind']})" if isinstance(data.get("kind"), str) else ""
                raise TraceError(f"{p}: a JSON object{what} that is neither a vllm bench serve result nor per-request rows")
    if fmt == "bench" and not is_bench_result(data):
        raise TraceError(f"{p}: not a vllm bench serve result JSON (--format bench)")
    if is_bench_result(data):
        log = read_bench_log(data, str(p), seed=seed)
    else:
        log = read_stats_log(text, str(p), {"auto": "auto", "jsonl": "json", "csv": "csv"}[fmt])
    if strict and log.bad:
        kinds = ", ".join(f"{k}: {v}" for k, v in log.bad.items())
        raise TraceError(f"{p}: {log.n_bad} bad rows ({kinds}; first: {log.first_bad}); --strict refuses a log with bad rows")
    return in_unit(log, time_unit)


#: Keys of a per-request stats row (the stats reader's own names): a whole-file JSON object with one of them is a
#: one-row log, not some other JSON document.
STATS_ROW_KEYS = (*TIME_NAMES, *PROMPT_NAMES)


def _appended_results(text: str, p: Path) -> None:
    """A file of several ``vllm bench serve`` results, one per line (``--append-result``), is refused
    with what to do; anything else that is not one JSON document returns None (read as JSON lines)."""
    first = text.lstrip().split("\n", 1)[0]
    try:
        head = json.loads(first)
    except ValueError:
        return None
    if is_bench_result(head):
        n = sum(1 for line in text.splitlines() if line.strip())
        raise TraceError(f"{p}: holds {n} vllm bench serve results, one per line (--append-result); "
                         "put the run to replay in a file of its own")
    return None


def simulate_log(log: RunLog, s: EngineSettings):
    """kvsim's simulation of the log's requests under the run's engine settings (Full KV)."""
    weight, kv, act = s.kvsim_dtypes()
    try:
        dep = build_deployment(s.hw, s.model, tp=s.tp, weight_dtype=weight, kv_dtype=kv,
                               gpu_memory_utilization=s.gpu_memory_utilization, calibration=s.calibration)
    except ConfigError as err:  # (the engine's name of the setting: --kv-cache-dtype / kv_cache_dtype, not simulate's)
        msg = str(err)
        if not msg.startswith("--kv-dtype "):
            raise
        msg = msg.split("; sub-byte KV")[0]  # (its advice is a simulate method, which replay does not take)
        raise ConfigError("--kv-cache-dtype" + msg[len("--kv-dtype"):]) from None
    if act is not None:
        dep = replace(dep, act_dtype=act)
    trace = Trace(name="replay", arrival_s=log.arrival_s, prompt_tokens=log.prompt_tokens,
                  output_tokens=log.output_tokens, source=log.source)
    cfg = SimConfig(max_num_seqs=s.max_num_seqs, max_num_batched_tokens=s.max_num_batched_tokens,
                    chunked_prefill=s.enable_chunked_prefill, block_size_tokens=s.block_size,
                    enable_prefix_caching=s.enable_prefix_caching, gpu_memory_utilization=s.gpu_memory_utilization,
                    record_token_times=True)
    return simulate(dep, make_method("full", dep), trace, cfg)


def latencies(arrival, first, last, output, itl: list, idx: np.ndarray) -> dict[str, np.ndarray]:
    """TTFT, TPOT, E2E (per request of ``idx``) and pooled ITL (module docstring), seconds."""
    a, f, e, o = arrival[idx], first[idx], last[idx], output[idx]
    multi = o >= 2
    parts = [itl[i] for i in idx if itl[i] is not None]
    return {"ttft_s": f - a, "tpot_s": (e - f)[multi] / (o[multi] - 1), "e2e_s": e - a,
            "itl_s": np.concatenate(parts) if parts else np.zeros(0)}


def summary(x: np.ndarray) -> dict:
    """n, mean, p50, p90, p99 (None when empty)."""
    if x.size == 0:
        return {"n": 0, **{k: None for k in STATS}}
    p = np.percentile(x, [50, 90, 99])
    return {"n": int(x.size), "mean": float(x.mean()), "p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2])}


def signed_error(pred: float | None, meas: float | None) -> float | None:
    """``pred / meas - 1``; None when either is missing or ``meas`` is not positive."""
    if pred is None or meas is None or not meas > 0:
        return None
    return pred / meas - 1.0


def compare(log: RunLog, res) -> dict:
    """Measured vs predicted per metric on the requests the simulation completed."""
    rec = res.records
    done = np.flatnonzero(rec.status == RequestStatus.FINISHED)
    meas = latencies(log.arrival_s, log.first_token_s, log.last_token_s, log.output_tokens, log.itl_s, done)
    if not log.streamed:  # only E2E was measured
        meas.update({m: np.zeros(0) for m in ("ttft_s", "tpot_s", "itl_s")})
    # (a request kvsim rejected has no token times; it is not in ``done``)
    pred_itl = [None if log.itl_s[i] is None or rec.token_times[i] is None else np.diff(np.asarray(rec.token_times[i]))
                for i in range(len(log))]
    pred = latencies(rec.arrival_s, rec.first_token_s, rec.finish_s, rec.output_tokens, pred_itl, done)
    out = {}
    for m in METRICS:
        ms, ps = summary(meas[m]), summary(pred[m])
        out[m] = {"n": ms["n"], "measured": {k: ms[k] for k in STATS}, "predicted": {k: ps[k] for k in STATS},
                  "error": {k: signed_error(ps[k], ms[k]) for k in STATS}}
    return out


def check(metrics: dict, stats: tuple[str, ...], tolerance: float) -> dict:
    """Which statistics were checked, which are beyond ``tolerance``, which could not be checked."""
    checked, failed, unchecked = [], [], []
    for m in METRICS:
        for k in stats:
            name = f"{m[:-2]}.{k}"
            e = metrics[m]["error"][k]
            if e is None:
                unchecked.append(name)
                continue
            checked.append(name)
            if abs(e) > tolerance:
                failed.append(name)
    return {"stats": list(stats), "tolerance": tolerance, "checked": checked, "failed": failed, "unchecked": unchecked,
            "pass": bool(checked) and not failed}


def replay(log: RunLog, settings: EngineSettings, origin: dict[str, str] | None = None, *,
           check_stats: tuple[str, ...] = DEFAULT_CHECK, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Simulate the log and compare (see the module docstring); a JSON-ready dict without NaN."""
    res = simulate_log(log, settings)
    metrics = compare(log, res)
    s = res.summary
    notes = list(log.notes)
    n_rej = int(s["requests_rejected"])
    if n_rej:
        notes.append(f"kvsim rejected {n_rej} of {len(log)} requests ({', '.join(f'{k}: {v}' for k, v in s['rejected_reasons'].items())}); "
                     "they are left out on both sides")
    if log.bad:
        notes.append(f"{log.n_bad} bad rows were dropped: the replay lacks their load")
    budget = whole_prompt_budget_note(log.prompt_tokens, settings.enable_chunked_prefill, settings.max_num_batched_tokens)
    if budget:  # (vLLM would not have started with these settings)
        notes.append(budget)
    if settings.enable_prefix_caching:
        notes.append("prefix caching: the log has no prompt hashes, so no prompt shares blocks with another in the "
                     "replay (a preempted request still finds its own cached blocks, as in vLLM v1)")
    return {
        "kind": KIND,
        "log": {"source": log.source, "format": log.format, "rows_read": log.rows_read, "requests": len(log),
                "bad_rows": dict(log.bad), "first_bad_row": log.first_bad, "arrivals": log.synthetic_arrivals or "logged"},
        "settings": settings.model_dump(), "settings_origin": dict(origin or {}),
        "sim": {"requests_completed": int(s["requests_completed"]), "requests_rejected": n_rej,
                "kv_gpu_capacity_bytes": s.get("kv_gpu_capacity_bytes"), "preemptions": int(s["preemptions"])},
        "metrics": metrics,
        "check": check(metrics, check_stats, tolerance),
        "notes": notes,
    }


def to_json_text(result: dict) -> str:
    """The result as JSON; NaN or infinity anywhere is a bug, so it raises instead of writing them."""
    return json.dumps(result, indent=1, allow_nan=False, default=json_default) + "\n"
