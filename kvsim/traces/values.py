"""Cell and JSON values of trace files, checked where they enter: token counts, arrival times
(numbers in a unit, or ISO-8601 date-times), nested JSON keys; and JSON file reading.

Every check raises :class:`~kvsim.traces.badrows.BadRow` with the kind and one sentence naming
the field and what was expected; the readers turn it into a counted bad row or (strict) an error.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kvsim.errors import TraceError
from kvsim.specbase import short_repr
from kvsim.traces._io import MAX_TIME_S, MAX_TOKENS, epoch_ms_hint, iter_lines, open_text, utf8_error
from kvsim.traces.badrows import BadRow
from kvsim.jsonutil import loads_unique

_EPOCH = np.datetime64("1970-01-01T00:00:00", "ns")
#: a date-time must start with a full extended-format date (YYYY-MM-DD); numpy would read a basic-format
#: date ('20240101') or a bare number ('2024', '1000') as a year
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:$|[T ])")


def _missing(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _number(v, label: str, kind: str, json_value: bool) -> float:
    """A CSV cell or JSON value as float; empty -> missing_field, wrong type -> not_a_number."""
    if _missing(v):
        raise BadRow("missing_field", f"{label} is missing or empty")
    if isinstance(v, bool) or (json_value and isinstance(v, str)) or not isinstance(v, (int, float, str)):
        raise BadRow("not_a_number", f"{label} must be a {'JSON ' if json_value else ''}number, got {short_repr(v)}")
    if isinstance(v, int):
        if not 0 <= v <= 2**63:
            raise BadRow(kind, f"{label} must be >= 0 and at most {MAX_TOKENS if kind == 'bad_token_count' else MAX_TIME_S:g}, "
                               f"got {short_repr(v)}")
        return float(v)
    if isinstance(v, str):
        if "\x00" in v:
            raise BadRow("not_a_number", f"{label} contains a NUL byte: {v!r}")
        try:
            return float(v)
        except ValueError:
            raise BadRow("not_a_number", f"{label} is not a number: {short_repr(v)}") from None
    return float(v)


def tokens(v, label: str, json_value: bool = False) -> int:
    """A token count: a whole number in [0, MAX_TOKENS] (BadRow otherwise)."""
    x = _number(v, label, "bad_token_count", json_value)
    if not math.isfinite(x) or x < 0 or x > MAX_TOKENS or x != math.floor(x):
        raise BadRow("bad_token_count", f"{label} must be a whole number of tokens >= 0 and <= {MAX_TOKENS}, "
                                        f"got {short_repr(v)}")
    return int(x)


def time_s(v, label: str, factor: float | None, json_value: bool = False) -> float:
    """An arrival in seconds: a number divided by ``factor`` (units per second: 1000 for ms, so
    1500 ms is exactly 1.5 s), or (``factor`` None) an ISO date-time as seconds since 1970 UTC;
    finite, >= 0 and <= MAX_TIME_S (BadRow otherwise)."""
    if factor is None:
        return _iso(v, label)
    x = _number(v, label, "bad_time", json_value) / factor
    if not math.isfinite(x) or x < 0 or x > MAX_TIME_S:
        hint = epoch_ms_hint(x) if factor == 1 else ""
        raise BadRow("bad_time", f"{label} must be a finite time >= 0 and <= {MAX_TIME_S:g} s, got {short_repr(v)}{hint}")
    return x


def _iso(v, label: str) -> float:
    if _missing(v):
        raise BadRow("missing_field", f"{label} is missing or empty")
    if not isinstance(v, str):
        raise BadRow("bad_time", f"{label} must be an ISO-8601 date-time string (--time-unit iso), got {short_repr(v)}")
    if any(ord(c) < 0x20 for c in v):
        raise BadRow("bad_time", f"{label} contains a control character: {short_repr(v)}")
    if not _ISO_DATE.match(v.strip()):  # ('20240101', '2024' or '1000' would be read as years: refused)
        raise BadRow("bad_time", f"{label} is not an ISO-8601 date-time with a full date like '2023-11-16 18:17:03.98': "
                                 f"{short_repr(v)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns when it converts an offset to UTC
            stamp = np.datetime64(v.strip(), "ns")
    except ValueError:
        stamp = np.datetime64("NaT")
    if np.isnat(stamp):
        raise BadRow("bad_time", f"{label} is not an ISO-8601 date-time like '2023-11-16 18:17:03.98': {short_repr(v)}")
    x = float((stamp - _EPOCH).astype(np.int64)) / 1e9
    if not 0 <= x <= MAX_TIME_S:
        raise BadRow("bad_time", f"{label} must be a date-time after 1970, got {short_repr(v)}")
    return x


def get_field(obj: dict, key: str):
    """``obj[key]``, or for ``a.b`` without such a key, ``obj["a"]["b"]``; None when absent."""
    if key in obj:
        return obj[key]
    if "." not in key:
        return None
    cur = obj
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def json_lines(path: Path) -> Iterator[tuple[int, object | BadRow]]:
    """``(line, parsed JSON value)`` per non-blank line, or a BadRow ``unparseable``."""
    try:
        for lineno, text in iter_lines(path):
            try:
                yield lineno, loads_unique(text)
            except json.JSONDecodeError as err:
                yield lineno, BadRow("unparseable", f"not valid JSON ({err.msg} at column {err.colno})")
            except RecursionError:
                yield lineno, BadRow("unparseable", "not valid JSON (nested too deeply)")
            except ValueError as err:  # an integer past Python's 4300-digit limit
                yield lineno, BadRow("unparseable", f"not valid JSON ({str(err).splitlines()[0]})")
    except UnicodeDecodeError:
        raise TraceError(utf8_error(path)) from None


def load_json(path: Path) -> object:
    """The whole file as one JSON value (one-line TraceError when it is not)."""
    try:
        with open_text(path) as f:
            text = f.read()
    except UnicodeDecodeError:
        raise TraceError(utf8_error(path)) from None
    try:
        return loads_unique(text)
    except json.JSONDecodeError as err:
        body = text.rstrip()
        if err.pos >= len(body):  # (the decoder points past the end: name the last line that has text)
            raise TraceError(f"{path}:{body.count(chr(10)) + 1}: not valid JSON (the file ends inside a value: "
                             "truncated?)") from None
        raise TraceError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise TraceError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as err:
        raise TraceError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from None
