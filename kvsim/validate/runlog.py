"""A real serving run's per-request log, as the replay reads it, and the row checks.

Readers (:mod:`kvsim.validate.runlog_stats` for vLLM's per-request stats as JSONL/CSV,
:mod:`kvsim.validate.runlog_bench` for ``vllm bench serve --save-result --save-detailed``)
turn each row into arrival, first-token and last-token times, prompt and output token
counts and, when logged, the intervals between tokens; they count bad rows by kind and
drop them. :func:`build_log` sorts the good rows by arrival and puts the time origin at the
first arrival.

Bad-row kinds (:data:`BAD_KINDS`); a row counts once, under the first problem found in
this order: the row is not a JSON object (``unparseable``), a required field is absent or
empty (``missing_field``), a value is not a number (``not_a_number``), a time is NaN,
infinite or negative (``bad_time``), the run marks the request failed or aborted
(``failed_request``), a token count is negative, fractional or too large
(``bad_token_count``), zero prompt tokens (``zero_prompt_tokens``), zero output tokens
(``zero_output_tokens``), first token before arrival (``first_token_before_arrival``),
last token before the first (``last_token_before_first_token``), a request id seen in an
earlier row (``duplicate_request_id``: the later rows are dropped).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from kvsim.errors import TraceError

BAD_KINDS = ("unparseable", "missing_field", "not_a_number", "bad_time", "failed_request", "bad_token_count",
             "zero_prompt_tokens", "zero_output_tokens", "first_token_before_arrival", "last_token_before_first_token",
             "duplicate_request_id", "bad_request_id")
MAX_TOKENS = 2**31 - 1
#: Per-token times may differ from the row's first/last token times by float rounding only:
#: TIME_SLACK_S of the log's own unit (seconds or milliseconds: not yet known when rows are read) per
#: value added, plus FLOAT_SLACK_ULPS float steps at the times' magnitude (an epoch clock in ms, ~1.7e12,
#: has steps of 2.4e-4 ms: a fixed 1e-6 refused exact ms logs; user audit).
TIME_SLACK_S = 1e-6
FLOAT_SLACK_ULPS = 16


def time_slack(first: float, last: float, values: int = 1) -> float:
    """Largest mismatch between a row's per-token times (``values`` of them added) and its first/last token
    times that is rounding (not growing with the request's span: 60 s x 1,000 tokens must not pass 60 ms)."""
    return TIME_SLACK_S * max(1, values) + FLOAT_SLACK_ULPS * float(np.spacing(max(abs(first), abs(last))))


class BadRow(Exception):
    """A row the replay cannot use; ``kind`` is one of :data:`BAD_KINDS`; ``field`` the column at fault
    when one is (named in the error when no row is usable)."""

    def __init__(self, kind: str, field: str | None = None) -> None:
        super().__init__(kind)
        self.kind = kind
        self.field = field


def number(v, name: str | None = None) -> float:
    """A JSON number or a CSV cell as float; absent/empty -> ``missing_field`` (of column ``name``)."""
    if v is None or (isinstance(v, str) and not v.strip()):
        raise BadRow("missing_field", name)
    if isinstance(v, bool):
        raise BadRow("not_a_number")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise BadRow("not_a_number") from None
    raise BadRow("not_a_number")


def time_s(v, name: str | None = None) -> float:
    """A time or duration in seconds: finite and >= 0."""
    x = number(v, name)
    if not math.isfinite(x) or x < 0:
        raise BadRow("bad_time")
    return x


def tokens(v, zero_kind: str) -> int:
    """A token count: a whole number in [1, 2**31 - 1]; 0 -> ``zero_kind``."""
    x = number(v)
    if not math.isfinite(x) or x < 0 or x != int(x) or x > MAX_TOKENS:
        raise BadRow("bad_token_count")
    if x == 0:
        raise BadRow(zero_kind)
    return int(x)


def check_order(arrival: float, first: float, last: float) -> None:
    """arrival <= first token <= last token."""
    if first < arrival:
        raise BadRow("first_token_before_arrival")
    if last < first:
        raise BadRow("last_token_before_first_token")


def float_list(v) -> list[float] | None:
    """A list of numbers (a JSON list, or a CSV cell holding one); None when absent or unusable."""
    if isinstance(v, str):
        if not v.strip():
            return None
        try:
            v = json.loads(v)
        except ValueError:  # numpy's print of an array, '[8123.5 8123.6 ...]' (no commas), is a list too
            text = v.strip()
            if not (text.startswith("[") and text.endswith("]")) or "..." in text:
                return None
            v = text[1:-1].replace(",", " ").split()
    if not isinstance(v, list):
        return None
    try:
        out = [float(x) for x in v if not isinstance(x, bool)]
    except (TypeError, ValueError):
        return None
    if len(out) != len(v) or not all(math.isfinite(x) for x in out):
        return None
    return out


def itl_from_token_times(times: list[float] | None, first: float, last: float, output: int) -> np.ndarray | None:
    """Intervals between a request's ``output`` token times (absolute, same clock as ``first``):
    None unless there is one time per token, in order, starting at ``first`` and ending at ``last``."""
    if times is None or len(times) != output:
        return None
    t = np.asarray(times)
    slack = time_slack(first, last)
    if abs(t[0] - first) > slack or abs(t[-1] - last) > slack or np.any(np.diff(t) < 0):
        return None
    return np.diff(t)


def itl_from_intervals(itl: list[float] | None, first: float, last: float, output: int) -> np.ndarray | None:
    """``output - 1`` non-negative intervals that add up to ``last - first`` (else None)."""
    if itl is None or len(itl) != output - 1:
        return None
    if output == 1:  # one token: no interval (its last token time may trail the first: detokenizing, HTTP)
        return np.zeros(0)
    x = np.asarray(itl, dtype=np.float64)
    if np.any(x < 0) or abs(float(x.sum()) - (last - first)) > time_slack(first, last, output):
        return None
    return x


@dataclass
class Rows:
    """Good rows collected by a reader, and the bad ones counted by kind."""

    arrival: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    last: list[float] = field(default_factory=list)
    prompt: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    itl: list = field(default_factory=list)  # per row: np.ndarray [output - 1] or None
    bad: Counter = field(default_factory=Counter)
    read: int = 0
    missing: Counter = field(default_factory=Counter)  # columns named by missing_field rows
    columns: tuple = ()  # the first row's columns (named when no row is usable)
    first_bad: str | None = None  # "place: kind (column)" of the first bad row

    def count_bad(self, bad: BadRow, place: str) -> None:
        if self.first_bad is None:
            self.first_bad = f"{place}: {bad.kind.replace('_', ' ')}" + (f" ({bad.field})" if bad.field else "")
        self.bad[bad.kind] += 1
        if bad.kind == "missing_field" and bad.field:
            self.missing[bad.field] += 1

    def add(self, arrival: float, first: float, last: float, prompt: int, output: int, itl) -> None:
        self.arrival.append(arrival)
        self.first.append(first)
        self.last.append(last)
        self.prompt.append(prompt)
        self.output.append(output)
        self.itl.append(itl)


@dataclass(frozen=True)
class RunLog:
    """Requests of one real serving run, sorted by arrival; times in seconds from the first arrival.

    ``itl_s[i]`` holds request i's ``output_tokens[i] - 1`` inter-token intervals, or None
    when the log has no usable per-token times for it. ``synthetic_arrivals`` says how
    arrivals were generated when the log has none (None: they are the logged ones).
    """

    format: str
    source: str
    arrival_s: np.ndarray  # [N] s
    prompt_tokens: np.ndarray  # [N] int64
    output_tokens: np.ndarray  # [N] int64
    first_token_s: np.ndarray  # [N] s
    last_token_s: np.ndarray  # [N] s
    itl_s: list
    rows_read: int
    bad: dict[str, int]
    synthetic_arrivals: str | None = None
    notes: tuple[str, ...] = ()
    streamed: bool = True  # False: the run did not stream tokens (no first-token time: TTFT, TPOT, ITL unmeasured)
    first_bad: str | None = None  # "place: kind" of the first bad row (None: none)

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())


def build_log(rows: Rows, *, fmt: str, source: str, synthetic: str | None = None, notes: list[str] | None = None,
              streamed: bool = True) -> RunLog:
    """Sort the good rows by arrival (stable) and shift times so that the first arrival is 0 s."""
    bad = {k: rows.bad[k] for k in BAD_KINDS if rows.bad.get(k)}
    if not rows.arrival:
        if not rows.read:
            raise TraceError(f"{source}: no request rows (a header or an empty list only)")
        what = ", ".join(f"{k}: {v}" for k, v in bad.items())
        if rows.missing:
            found = ", ".join(map(str, rows.columns)) or "none"
            if len(found) > 200:  # (a JSON line read as a CSV header is one huge 'column')
                found = found[:200] + "..."
            what += f" (missing: {', '.join(rows.missing)}; columns found: {found})"
        raise TraceError(f"{source}: no usable request ({rows.read} rows read; bad rows by kind: {what}; "
                         f"first: {rows.first_bad})")
    arr = np.asarray(rows.arrival, dtype=np.float64)
    # equal arrival stamps (a coarse clock) in the order the engine served them, first token first (FCFS):
    # a stats log is written as requests finish, so its line order says nothing (user audit: a shuffled
    # copy of a log of ties predicted TTFT 8 % apart)
    order = np.lexsort((np.asarray(rows.first, dtype=np.float64), arr))
    t0 = float(arr[order[0]])
    return RunLog(
        format=fmt, source=source,
        arrival_s=arr[order] - t0,
        prompt_tokens=np.asarray(rows.prompt, dtype=np.int64)[order],
        output_tokens=np.asarray(rows.output, dtype=np.int64)[order],
        first_token_s=np.asarray(rows.first, dtype=np.float64)[order] - t0,
        last_token_s=np.asarray(rows.last, dtype=np.float64)[order] - t0,
        itl_s=[rows.itl[i] for i in order],
        rows_read=rows.read, bad=bad, synthetic_arrivals=synthetic, notes=tuple(notes or ()), streamed=streamed,
        first_bad=rows.first_bad,
    )
