"""Generic CSV / JSONL / JSON-array traces with a column mapping, and the shared last step
of every newer reader (rounded-timestamp check, sessions, bad rows -> Trace).

``--columns arrival=ts,prompt=input_len,output=output_len[,session=conv_id]`` names the
file's columns (CSV header names, or JSON keys; ``a.b`` reaches a nested key when no key
``a.b`` exists). ``prompt`` and ``output`` (token counts) are required; without ``arrival``
the file is lengths-only and needs ``--arrivals``. ``--time-unit`` is the unit of the
arrival column: ``s`` (default), ``ms``, ``us``, ``ns``, or ``iso`` for ISO-8601 date-times
(``2023-11-16 18:17:03.9799600``, an offset or ``Z`` converted to UTC; without one, taken as
UTC). Arrivals are shifted to start at 0 s; rows out of time order are sorted (stably) and
counted in a note. ``prefix=COL,prefix_tokens=COL`` (together, not with ``session``): rows with
the same prefix value share their first ``prefix_tokens`` tokens (:mod:`kvsim.traces.prefix_groups`).

Values: token counts are whole numbers in [0, 2**31 - 1]; times are finite, >= 0 and at most
1e12 s after conversion. In CSV every cell is text; in JSON a number must be a JSON number
(``"12"`` is ``not_a_number``). A row failing a check is a bad row (:mod:`kvsim.traces.badrows`).
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvsim.errors import TraceError
from kvsim.traces import arrivals as arr
from kvsim.traces._io import MAX_TIME_S, MAX_TOKENS, open_text, utf8_error
from kvsim.traces.badrows import BadRow, BadRows
from kvsim.traces.base import Trace
from kvsim.traces.pipeline import LoadOptions, RawRequests, build_trace
from kvsim.traces.prefix_groups import describe as describe_prefix_groups
from kvsim.traces.prefix_groups import prefix_group_blocks
from kvsim.traces.sessions import describe as describe_sessions
from kvsim.traces.sessions import session_blocks
from kvsim.traces.values import get_field, json_lines, load_json, time_s, tokens

FIELDS = ("arrival", "prompt", "output", "session", "prefix", "prefix_tokens")
TIME_UNITS = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9, "iso": None}  # units per second (divisors)


@dataclass(frozen=True)
class Columns:
    """Which column (CSV header name or JSON key) holds each field."""

    prompt: str
    output: str
    arrival: str | None = None
    session: str | None = None
    prefix: str | None = None  # a shared-prefix group (kvsim.traces.prefix_groups)
    prefix_tokens: str | None = None  # its shared tokens in this row

    def describe(self) -> str:
        return ",".join(f"{k}={getattr(self, k)}" for k in FIELDS if getattr(self, k) is not None)


def parse_columns(text: str) -> Columns:
    """``"arrival=ts,prompt=in,output=out"`` -> Columns; one-line TraceError otherwise."""
    values: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, name = item.partition("=")
        key, name = key.strip().lower(), name.strip()
        if not sep or not name:
            raise TraceError(f"--columns: bad item '{item}'; expected field=column, e.g. prompt=input_len")
        if key not in FIELDS:
            raise TraceError(f"--columns: unknown field '{key}'; fields: {', '.join(FIELDS)}")
        if key in values:
            raise TraceError(f"--columns: field '{key}' given twice")
        values[key] = name
    missing = [k for k in ("prompt", "output") if k not in values]
    if missing:
        raise TraceError(f"--columns: missing {' and '.join(f'{k}=COLUMN' for k in missing)} "
                         f"(e.g. --columns arrival=ts,prompt=input_len,output=output_len)")
    if ("prefix" in values) != ("prefix_tokens" in values):
        raise TraceError("--columns: prefix=COLUMN (the shared prefix's group) and prefix_tokens=COLUMN (its tokens in "
                         "each row) go together")
    if "prefix" in values and "session" in values:
        raise TraceError("--columns: session and prefix cannot both name the prompts' shared tokens; give one")
    return Columns(**values)


def time_factor(unit: str | None) -> float | None:
    """Units per second of ``--time-unit`` (values are divided by it; None: ISO date-times); default seconds."""
    unit = "s" if unit is None else unit.strip().lower()
    if unit not in TIME_UNITS:
        raise TraceError(f"--time-unit: unknown unit '{unit}'; expected one of {', '.join(TIME_UNITS)}")
    return TIME_UNITS[unit]


# ----- rows -----

@dataclass
class Table:
    """Good rows of a file, in file order (lists, or [N] arrays from a fast path)."""

    arrival: list[float] | np.ndarray = field(default_factory=list)
    prompt: list[int] | np.ndarray = field(default_factory=list)
    output: list[int] | np.ndarray = field(default_factory=list)
    session: list = field(default_factory=list)
    prefix: list = field(default_factory=list)  # per row: (group key or None, shared tokens)
    has_arrival: bool = True
    has_session: bool = False
    has_prefix: bool = False
    iso_zones: dict = field(default_factory=dict)  # ISO arrivals: has a UTC offset -> the first such value

    def add(self, arrival: float, prompt: int, output: int, session=None, prefix=None) -> None:
        self.arrival.append(arrival)
        self.prompt.append(prompt)
        self.output.append(output)
        self.session.append(session)
        self.prefix.append(prefix)


def _labels(cols: Columns) -> dict[str, str]:
    return {k: f"{k} column '{getattr(cols, k)}'" for k in FIELDS if getattr(cols, k) is not None}


def _session_key(v):
    if v is None or isinstance(v, (dict, list)):
        return None
    text = str(v).strip()
    return text or None


#: an arrival column whose name states a unit other than seconds (arrival_ms, t_us, timestamp_millis)
_UNIT_IN_NAME = re.compile(r"(?:^|[_\-. ])(ms|us|ns|millis|msec|micros|usec|nanos|nsec)$", re.IGNORECASE)

#: the end of an ISO-8601 date-time that states its UTC offset after the time (Z, +05:00, -0800)
_UTC_OFFSET = re.compile(r"[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$")


def _row(values: dict, cols: Columns, labels: dict[str, str], factor: float | None, table: Table, json_value: bool) -> None:
    """Parse one row's mapped values into ``table`` (BadRow on the first problem)."""
    t = time_s(values["arrival"], labels["arrival"], factor, json_value) if cols.arrival else 0.0
    if factor is None and cols.arrival:  # (a good ISO value: a string)
        table.iso_zones.setdefault(bool(_UTC_OFFSET.search(values["arrival"].strip())), values["arrival"].strip())
    p = tokens(values["prompt"], labels["prompt"], json_value)
    o = tokens(values["output"], labels["output"], json_value)
    prefix = None
    if cols.prefix:
        group = _session_key(values.get("prefix"))
        if group is not None:
            v = values.get("prefix_tokens")
            if v is None or (isinstance(v, str) and not v.strip()):
                raise BadRow("missing_field", f"{labels['prefix_tokens']} is empty where {labels['prefix']} is {group!r}")
            n = tokens(v, labels["prefix_tokens"], json_value)
            if n > p:
                raise BadRow("bad_token_count", f"{labels['prefix_tokens']} ({n}) is larger than the prompt ({p})")
            prefix = (group, n)
    table.add(t, p, o, _session_key(values.get("session")) if cols.session else None, prefix)


def _fast_csv(path: Path, names: list[str], index: dict[str, int], cols: Columns, factor: float | None) -> Table | None:
    """numpy's C parser for a file whose columns are exactly the mapped numeric ones (Vidur's
    3-column traces): the Table when every row is good, else None (the slow pass then names
    and counts the bad rows). A row with a different number of columns fails the parse."""
    if factor is None or cols.session is not None or cols.prefix is not None or len(names) != len(index):
        return None
    try:
        with open_text(path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = np.loadtxt(f, delimiter=",", skiprows=1, dtype=np.float64, comments=None, quotechar='"', ndmin=2)
    except (ValueError, UnicodeError):
        return None
    if a.shape[0] == 0 or a.shape[1] != len(names):
        return None
    p, o = a[:, index["prompt"]], a[:, index["output"]]
    with np.errstate(invalid="ignore"):
        ok = all(bool(np.all(np.isfinite(x) & (x >= 0) & (x <= MAX_TOKENS) & (x == np.floor(x)))) for x in (p, o))
        t = a[:, index["arrival"]] / factor if cols.arrival else np.zeros(a.shape[0])
        ok = ok and bool(np.all(np.isfinite(t) & (t >= 0) & (t <= MAX_TIME_S)))
    if not ok:
        return None
    return Table(arrival=t, prompt=p.astype(np.int64), output=o.astype(np.int64), session=[None] * a.shape[0],
                 has_arrival=cols.arrival is not None)


def read_csv(path: Path, cols: Columns, factor: float | None, bad: BadRows) -> Table:
    """A CSV file with a header line naming at least the mapped columns."""
    labels = _labels(cols)
    table = Table(has_arrival=cols.arrival is not None, has_session=cols.session is not None,
                  has_prefix=cols.prefix is not None)
    try:
        with open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(c.strip() for c in header):
                raise TraceError(f"{path}:1: expected a CSV header line naming the columns")
            names = [c.strip() for c in header]
            index = {}
            for k in FIELDS:
                name = getattr(cols, k)
                if name is None:
                    continue
                if name not in names:
                    raise TraceError(f"{path}:1: no column '{name}' for {k} (columns: {', '.join(names)}); "
                                     f"fix --columns {k}=COLUMN")
                if names.count(name) > 1:
                    raise TraceError(f"{path}:1: column '{name}' ({k}) appears {names.count(name)} times in the header; "
                                     "rename the others")
                index[k] = names.index(name)
            fast = _fast_csv(path, names, index, cols, factor)
            if fast is not None:
                return fast
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                place = f"{path}:{reader.line_num}"
                if len(row) != len(names):
                    bad.add("unparseable", place, f"expected {len(names)} comma-separated columns, found {len(row)}")
                    continue
                try:
                    _row({k: row[i] for k, i in index.items()}, cols, labels, factor, table, json_value=False)
                except BadRow as b:
                    bad.add_row(b, place)
    except UnicodeDecodeError:
        raise TraceError(utf8_error(path)) from None
    except csv.Error as err:
        raise TraceError(f"{path}: not a readable CSV file ({err})") from None
    return table


def read_records(records: Iterator[tuple[str, object]], cols: Columns, factor: float | None, bad: BadRows) -> Table:
    """JSON objects ``(place, value)`` (JSONL lines or array items) with the mapped keys."""
    labels = _labels(cols)
    table = Table(has_arrival=cols.arrival is not None, has_session=cols.session is not None,
                  has_prefix=cols.prefix is not None)
    keys = {k: getattr(cols, k) for k in FIELDS if getattr(cols, k) is not None}
    for place, obj in records:
        if isinstance(obj, BadRow):
            bad.add_row(obj, place)
            continue
        if not isinstance(obj, dict):
            bad.add("unparseable", place, f"expected a JSON object with keys {', '.join(keys.values())}, "
                                          f"got {type(obj).__name__}")
            continue
        values = {k: get_field(obj, key) for k, key in keys.items()}
        absent = [keys[k] for k in ("arrival", "prompt", "output") if k in keys and values[k] is None]
        if absent:
            bad.add("missing_field", place, f"missing key(s) {', '.join(absent)}")
            continue
        try:
            _row(values, cols, labels, factor, table, json_value=True)
        except BadRow as b:
            bad.add_row(b, place)
    return table


def jsonl_records(path: Path) -> Iterator[tuple[str, object]]:
    for lineno, value in json_lines(path):
        yield f"{path}:{lineno}", value


def array_records(path: Path, data: list) -> Iterator[tuple[str, object]]:
    for i, value in enumerate(data, start=1):
        yield f"{path}: record {i}", value


# ----- rows -> Trace -----

def finish(
    path: Path, table: Table, opts: LoadOptions, bad: BadRows, *, fmt: str, arrival_label: str,
    notes: list[str] | None = None, meta: dict | None = None, check_rounding: bool = True, name: str | None = None,
    epoch_times: bool = False,
) -> Trace:
    """Rounded-timestamp check, sessions, then :func:`build_trace` (which applies ``--arrivals``).

    ``epoch_times``: arrivals are seconds since 1970 (ISO date-times): the rounding check
    looks at them relative to the first one (float64 keeps ~0.2 us there)."""
    notes = list(notes or [])
    info = {"format": fmt, **(meta or {})}
    n = len(table.prompt)
    if len(table.iso_zones) == 2:  # (the ones without an offset would be taken as UTC: hours off, silently)
        raise TraceError(f"{path}: {arrival_label} mixes date-times with a UTC offset ({table.iso_zones[True]!r}) and "
                         f"without one ({table.iso_zones[False]!r}); give every row an offset, or none")
    t = np.asarray(table.arrival, dtype=np.float64)
    if opts.arrivals is None and not table.has_arrival:
        raise TraceError(f"{path}: the file has no arrival times ({arrival_label}); give synthetic ones with "
                         f"--arrivals poisson:rate=R (or gamma:rate=R,cv=C, constant:rate=R)")
    if opts.arrivals is None and n:
        if check_rounding:
            note, m = arr.rounding_note(t - t.min() if epoch_times else t, arrival_label)
            info.update(m)
            if note:
                notes.append(note)
        back = int(np.sum(t[1:] < np.maximum.accumulate(t)[:-1])) if n > 1 else 0
        if back:
            notes.append(f"{back} rows are earlier than a row before them: sorted by arrival")
    prompt = np.asarray(table.prompt, dtype=np.int64)
    output = np.asarray(table.output, dtype=np.int64)
    blocks, block_tokens = None, 0
    if table.has_session:
        usable = (prompt > 0) & (output > 0)
        blocks, stats = session_blocks(table.session, prompt, t, usable, output=output)
        block_tokens = stats["block_tokens"]
        info["sessions"] = stats
        info["sessions_text"] = describe_sessions(stats)
    elif table.has_prefix:
        usable = (prompt > 0) & (output > 0)
        groups = [None if x is None else x[0] for x in table.prefix]
        blocks, stats = prefix_group_blocks(groups, [0 if x is None else x[1] for x in table.prefix], usable)
        block_tokens = stats["block_tokens"]
        info["prefix_groups"] = stats
        notes.append(describe_prefix_groups(stats))
    raw = RawRequests(time_s=t, prompt_tokens=prompt, output_tokens=output, prefix_blocks=blocks,
                      prefix_block_tokens=block_tokens, has_arrivals=table.has_arrival, bad=bad, notes=notes, meta=info)
    return build_trace(raw, opts, name=name or path.name.split(".")[0], source=str(path))


def read_generic(path: Path, opts: LoadOptions, kind: str, data: object = None) -> Trace:
    """``--trace-format csv|jsonl|json`` (or a file detected as such with ``--columns``)."""
    if opts.columns is None:
        raise TraceError(f"{path}: a generic {kind.upper()} trace needs --columns, e.g. "
                         f"--columns arrival=ts,prompt=input_len,output=output_len (see docs/traces.md)")
    cols = parse_columns(opts.columns)
    factor = time_factor(opts.time_unit)
    bad = BadRows(opts.strict)
    if kind == "csv":
        table = read_csv(path, cols, factor, bad)
    elif kind == "jsonl":
        table = read_records(jsonl_records(path), cols, factor, bad)
    else:
        data = load_json(path) if data is None else data
        if not isinstance(data, list):
            raise TraceError(f"{path}: expected a JSON array of objects (one per request), got {type(data).__name__}")
        table = read_records(array_records(path, data), cols, factor, bad)
    unit = "iso" if factor is None else (opts.time_unit or "s")
    label = f"column '{cols.arrival}' ({unit})" if cols.arrival else "no arrival column in --columns"
    notes = []
    named = _UNIT_IN_NAME.search(cols.arrival or "")
    if named and opts.time_unit is None and opts.arrivals is None:  # (read as seconds: a 1000x longer trace)
        said = named.group(1).lower()
        said = {"millis": "ms", "msec": "ms", "micros": "us", "usec": "us", "nanos": "ns", "nsec": "ns"}.get(said, said)
        notes.append(f"column '{cols.arrival}' is read as seconds (the default); its name says {said}: "
                     f"give --time-unit {said} if so")
    return finish(path, table, opts, bad, fmt=kind, arrival_label=label, notes=notes,
                  meta={"columns": cols.describe(), "time_unit": unit}, epoch_times=factor is None)
