"""Read a per-request log with vLLM's per-request stats names (JSONL, a JSON list, or CSV).

Field names follow vLLM v1 ``vllm/v1/metrics/stats.py`` (vllm-project/vllm, ``RequestStateStats``
and ``FinishedRequestStats``): ``arrival_time`` is a frontend wall-clock timestamp
(``time.time()``); ``queued_ts``, ``scheduled_ts``, ``first_token_ts`` and ``last_token_ts``
are engine-core timestamps on a monotonic clock; ``first_token_latency`` (TTFT) and
``e2e_latency`` are measured from ``arrival_time``; ``num_prompt_tokens`` and
``num_generation_tokens`` count tokens; ``finish_reason`` is ``stop``/``length``/``abort``/``error``.

One row per request. Columns read (the first name present wins):

* arrival: ``queued_ts`` (same clock as the token timestamps), else ``arrival_time``;
* first / last token: ``first_token_ts`` / ``last_token_ts``; without them,
  ``arrival_time + first_token_latency`` / ``arrival_time + e2e_latency``;
* prompt tokens: ``num_prompt_tokens``, ``prompt_tokens``, ``prompt_len``, ``input_len``;
* output tokens: ``num_generation_tokens``, ``output_tokens``, ``completion_tokens``, ``output_len``;
* optional per-token times for ITL: ``token_ts`` (one timestamp per output token, same clock
  as ``first_token_ts``) or ``itl`` (the ``output - 1`` intervals, seconds); in CSV a cell
  holding a JSON list;
* optional: ``num_cached_tokens`` (prefix-cache hits, reported), ``finish_reason``, ``request_id``
  (a row repeating an earlier row's id is dropped as ``duplicate_request_id``).

The choice of arrival and token columns is made once per file (from the first row that
has any of them), so rows never mix clocks. A file whose ``arrival_time`` is wall-clock
while ``first_token_ts`` is monotonic (differences of days) is refused.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from kvsim.errors import TraceError, misspelling_of
from kvsim.jsonutil import loads_unique
from kvsim.validate.runlog import (
    BadRow,
    Rows,
    RunLog,
    build_log,
    check_order,
    float_list,
    itl_from_intervals,
    itl_from_token_times,
    time_s,
    tokens,
)

PROMPT_NAMES = ("num_prompt_tokens", "prompt_tokens", "prompt_len", "input_len")
OUTPUT_NAMES = ("num_generation_tokens", "output_tokens", "completion_tokens", "output_len")
FAILED_REASONS = {"abort", "error", "2", "3"}  # vLLM v1 FinishReason ABORT = 2, ERROR = 3
ID_NAME = "request_id"  # optional; a row repeating an earlier row's id is dropped (duplicate_request_id)
#: the columns a row's times come from (any of them marks a JSON object as one row of such a log)
TIME_NAMES = ("queued_ts", "arrival_time", "first_token_ts", "first_token_latency")
#: |first token - arrival| beyond this (a day) means two clocks were mixed.
CLOCK_MISMATCH_S = 86_400.0


def parse_rows(text: str, source: str, kind: str = "auto") -> tuple[list, str, list[str]]:
    """Rows of a JSONL file or a JSON list of objects (``kind`` 'json'), or a CSV file with a
    header ('csv'); 'auto' decides from the first character. Returns (rows, format name, where
    each row is: ``"source:line"``, or ``"source[i]"`` for the items of a JSON list)."""
    s = text.lstrip()
    if kind == "auto":
        kind = "json" if s[:1] in ("{", "[") else "csv"
    if kind == "json" and s.startswith("["):
        try:
            data = loads_unique(s)
        except ValueError as err:
            raise TraceError(f"{source}: not valid JSON ({err})") from None
        rows = list(data) if isinstance(data, list) else [data]
        return rows, "vllm-stats-json", [f"{source}[{i}]" for i in range(len(rows))]
    if kind == "json":
        if not s.startswith("{"):
            raise TraceError(f"{source}: not JSON lines (the first line is not a JSON object)")
        rows, places = [], []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            places.append(f"{source}:{lineno}")
            try:
                rows.append(loads_unique(line))
            except ValueError:
                rows.append(None)  # counted as unparseable
        return rows, "vllm-stats-jsonl", places
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise TraceError(f"{source}: empty file")
    rows, places = [], []
    for row in reader:
        # more non-empty cells than the header (an unquoted '1,024'): the cells cannot be matched to columns
        # (empty extra cells, trailing commas, are harmless)
        shifted = any(str(c).strip() for c in (row.get(None) or []))
        rows.append(None if shifted else {k: v for k, v in row.items() if k is not None})  # (None: unparseable)
        places.append(f"{source}:{reader.line_num}")  # (the line the row ends on)
    return rows, "vllm-stats-csv", places


def _given(row, key: str) -> bool:
    """``row`` has a non-empty ``key`` (CSV rows hold every column, empty cells as '')."""
    return isinstance(row, dict) and row.get(key) not in (None, "", [])


def _first_name(row: dict, names: tuple[str, ...]) -> str | None:
    for n in names:
        v = row.get(n)
        if v is not None and not (isinstance(v, str) and not v.strip()):
            return n
    return None


def _columns(rows: list) -> tuple[str, str]:
    """(arrival column, token-time mode 'ts' or 'latency') chosen from the first row having any."""
    for row in rows:
        if not isinstance(row, dict):
            continue
        arr = _first_name(row, ("queued_ts", "arrival_time"))
        if arr is None:
            continue
        if _first_name(row, ("first_token_ts",)):
            return arr, "ts"
        if _first_name(row, ("arrival_time",)) and _first_name(row, ("first_token_latency",)):
            return "arrival_time", "latency"  # (the latencies count from arrival_time, even beside a queued_ts)
        return arr, "ts"
    return "queued_ts", "ts"


def _row(row, arr_col: str, mode: str) -> tuple[float, float, float, int, int, np.ndarray | None, float]:
    if not isinstance(row, dict):
        raise BadRow("unparseable")
    arrival = time_s(row.get(arr_col), arr_col)
    if mode == "ts":
        first, last = time_s(row.get("first_token_ts"), "first_token_ts"), time_s(row.get("last_token_ts"), "last_token_ts")
    else:
        first = arrival + time_s(row.get("first_token_latency"), "first_token_latency")
        last = arrival + time_s(row.get("e2e_latency"), "e2e_latency")
    pn, on = _first_name(row, PROMPT_NAMES), _first_name(row, OUTPUT_NAMES)
    if pn is None:
        raise BadRow("missing_field", "/".join(PROMPT_NAMES))
    if on is None:
        raise BadRow("missing_field", "/".join(OUTPUT_NAMES))
    if str(row.get("finish_reason", "")).strip().lower() in FAILED_REASONS:
        raise BadRow("failed_request")
    prompt = tokens(row[pn], "zero_prompt_tokens")
    output = tokens(row[on], "zero_output_tokens")
    check_order(arrival, first, last)
    if _given(row, "token_ts") and mode == "ts":
        itl = itl_from_token_times(float_list(row["token_ts"]), first, last, output)
    elif _given(row, "itl"):
        itl = itl_from_intervals(float_list(row["itl"]), first, last, output)
    else:
        itl = None
    cached = row.get("num_cached_tokens")
    try:
        cached_n = float(cached) if cached not in (None, "") else 0.0
    except (TypeError, ValueError):
        cached_n = 0.0
    return arrival, first, last, prompt, output, itl, cached_n if math.isfinite(cached_n) else 0.0


def _check_clocks(raw: list, arr_col: str, source: str) -> None:
    """Refuse a file whose arrival and first-token columns are on different clocks (before the
    row checks, which would otherwise call every row 'first token before arrival')."""
    gaps = []
    for r in raw:
        if isinstance(r, dict):
            try:
                gaps.append(abs(float(r["first_token_ts"]) - float(r[arr_col])))
            except (KeyError, TypeError, ValueError):
                continue
    gaps = [g for g in gaps if math.isfinite(g)]
    if gaps and float(np.median(gaps)) > CLOCK_MISMATCH_S:
        hint = ("arrival_time is vLLM's wall clock (time.time()) and first_token_ts its monotonic engine clock; "
                "log queued_ts instead" if arr_col == "arrival_time" else "the two columns must be on the same clock")
        raise TraceError(f"{source}: |first_token_ts - {arr_col}| is {np.median(gaps):.3g} s (median): {hint}")


def read_stats_log(text: str, source: str, kind: str = "auto") -> RunLog:
    """Parse a vLLM per-request stats log (see the module docstring); ``kind``: auto, json or csv."""
    raw, fmt, places = parse_rows(text, source, kind)
    arr_col, mode = _columns(raw)
    if mode == "ts":
        _check_clocks(raw, arr_col, source)
    rows = Rows(read=len(raw), columns=tuple(next((r for r in raw if isinstance(r, dict)), {}).keys()))
    has_tok = n_itl = 0
    cached = 0.0
    seen_ids: set = set()
    for r, place in zip(raw, places):
        try:
            arrival, first, last, prompt, output, itl, c = _row(r, arr_col, mode)
            rid = r.get(ID_NAME)
            if rid not in (None, ""):
                if not isinstance(rid, (str, int, float)):  # (a list or object id: a traceback before; user audit)
                    raise BadRow("bad_request_id")
                key = (type(rid).__name__, rid)  # (1, 1.0 and true are three ids, as their text differs)
                if key in seen_ids:
                    raise BadRow("duplicate_request_id")
                seen_ids.add(key)
        except BadRow as bad:
            rows.count_bad(bad, place)
            continue
        rows.add(arrival, first, last, prompt, output, itl)
        cached += c
        has_tok += int(_given(r, "token_ts") or _given(r, "itl"))
        n_itl += int(itl is not None)
    notes = []
    if mode == "latency":
        notes.append("token times are arrival_time + first_token_latency / e2e_latency (no *_ts columns)")
    if has_tok > n_itl:
        notes.append(f"ITL: {has_tok - n_itl} of {has_tok} requests' per-token times do not match their token count "
                     "or first/last token times; ITL is compared on the other requests")
    if cached > 0:
        notes.append(f"the run served {int(cached):,} prompt tokens from its prefix cache; the log has no prompt hashes, "
                     "so kvsim replays every prompt without prefix hits")
    notes += misspelled_columns(rows.columns)
    return build_log(rows, fmt=fmt, source=source, notes=notes)


#: every column name the stats reader reads
READ_NAMES = (*PROMPT_NAMES, *OUTPUT_NAMES, ID_NAME, *TIME_NAMES, "last_token_ts", "e2e_latency", "finish_reason",
              "token_ts", "itl", "num_cached_tokens", "scheduled_ts")


def misspelled_columns(columns) -> list[str]:
    """A note per column that is not read but is close to one that is (``finish_reasn``: its
    'abort' rows were replayed as completed requests, silently)."""
    out = []
    for c in columns:
        if not isinstance(c, str) or c in READ_NAMES:
            continue
        close = misspelling_of(c, READ_NAMES)
        if close:
            out.append(f"column '{c}' is not read; did you mean '{close}'?")
    return out
