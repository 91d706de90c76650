"""Azure LLM inference trace reader (2023 Splitwise release; the 2024 week-long files share
the schema).

Source: Azure/AzurePublicDataset, ``AzureLLMInferenceTrace_{code,conv}.csv`` (CC BY 4.0);
Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024.

Schema: ``TIMESTAMP,ContextTokens,GeneratedTokens``; ``TIMESTAMP`` is a wall-clock string
``YYYY-MM-DD HH:MM:SS.fffffff`` (7 fractional digits, no zone), rows sorted. The raw time
of a row (used by ``start_s``/``end_s``) is seconds since the file's first row.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from kvsim.errors import TraceError
from kvsim.traces._io import check_number, check_sorted, first_line, line_of_row, load_csv, row_lines, to_tokens
from kvsim.traces.badrows import BadRows
from kvsim.traces.base import Trace
from kvsim.traces.pipeline import LoadOptions, RawRequests, build_trace

DATA_DIR = Path(__file__).parent / "data" / "azure"
CODE = DATA_DIR / "AzureLLMInferenceTrace_code.csv"  # 8,819 requests, 3,435.9 s
CONV = DATA_DIR / "AzureLLMInferenceTrace_conv.csv"  # 19,366 requests, 3,501.7 s

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_CHUNK = 1 << 20  # rows per timestamp-conversion chunk (bounds the str copy's memory)


def is_azure_header(line: str) -> bool:
    """Whether a CSV header line is the Azure LLM inference schema."""
    return tuple(c.strip().strip('"') for c in line.split(",")) == COLUMNS


def _parse_one(cell: bytes) -> np.datetime64 | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = np.datetime64(cell.decode("utf-8", "replace").strip(), "ns")
    except ValueError:
        return None
    return None if np.isnat(value) else value


def _control_chars(cells: np.ndarray) -> np.ndarray:
    """[N] bool: the cell holds a byte < 0x20 (NUL, tab, ...) before its end.

    numpy's date-time parser stops at a NUL, so ``18:17\\x0004.07`` would silently read as
    another time; a fixed-width ``S`` cell pads with trailing NULs, which are allowed."""
    if cells.size == 0:
        return np.zeros(0, dtype=bool)
    u8 = np.frombuffer(cells.tobytes(), dtype=np.uint8).reshape(cells.shape[0], cells.dtype.itemsize)
    nul = u8 == 0
    padding = np.flip(np.logical_and.accumulate(np.flip(nul, axis=1), axis=1), axis=1)  # trailing NULs
    return ((u8 < 0x20) & ~padding).any(axis=1)


def _line(path: Path, row: int, lines: np.ndarray | None) -> int:
    return int(lines[row]) if lines is not None else line_of_row(path, row)


def parse_timestamps(path: Path, cells: np.ndarray, bad: BadRows | None = None,
                     lines: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seconds since the first good row, [N] float64, from ``YYYY-MM-DD HH:MM:SS.fffffff`` cells,
    and the [N] bool mask of cells that are not such a date-time.

    Parsed with numpy's ISO 8601 reader at nanosecond resolution (vectorized; accepts the
    7 fractional digits that ``datetime.fromisoformat`` rejects on Python 3.10). A bad cell
    raises TraceError naming ``file:line`` (``bad`` None or strict), or is counted in ``bad``
    as ``bad_time`` (its time is then 0 and its mask entry True).
    """
    def flag(mask: np.ndarray, what: str) -> None:
        """Raise on the first flagged cell (strict), or count all of them as ``bad_time``."""
        row = int(np.argmax(mask))
        place = f"{path}:{_line(path, row, lines)}"
        problem = f"TIMESTAMP {what}: {cells[row].decode('utf-8', 'replace')!r}"
        if bad is None:
            raise TraceError(f"{place}: {problem}")
        bad.add("bad_time", place, problem, count=int(mask.sum()))

    wrong = _control_chars(cells)
    if wrong.any():
        flag(wrong, "contains a control character (e.g. NUL)")
    stamps = np.empty(cells.shape[0], dtype="datetime64[ns]")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on explicit time zones
            for a in range(0, cells.shape[0], _CHUNK):  # bytes -> str first: numpy 1.24 crashes
                part = np.char.strip(cells[a : a + _CHUNK]).astype(f"U{cells.dtype.itemsize}")
                stamps[a : a + _CHUNK] = part.astype("datetime64[ns]")  # on bad bytes->datetime64
        nat = np.isnat(stamps)
    except (ValueError, UnicodeError):
        parsed = [_parse_one(c) for c in cells]
        nat = np.array([v is None for v in parsed], dtype=bool)
        stamps = np.array([np.datetime64(0, "ns") if v is None else v for v in parsed], dtype="datetime64[ns]")
    nat &= ~wrong
    if nat.any():
        flag(nat, "is not a date-time 'YYYY-MM-DD HH:MM:SS.fffffff'")
        wrong |= nat
    good = ~wrong
    if not good.any():
        return np.zeros(cells.shape[0]), wrong
    first = stamps[good][0]
    t = (stamps - first).astype(np.int64) / 1e9
    t[wrong] = 0.0
    return t, wrong


def read_azure(path: Path, opts: LoadOptions, *, name: str | None = None) -> Trace:
    """Load an Azure LLM inference CSV as a :class:`Trace`.

    Parameters
    ----------
    path : CSV file (``.csv`` or ``.csv.gz``).
    opts : filters and rescaling (``model``/``log_type`` do not apply: TraceError).
    name : trace name (default: the file stem).
    """
    path = Path(path)
    if not is_azure_header(first_line(path)):
        raise TraceError(f"{path}:1: not an Azure LLM trace header; expected '{','.join(COLUMNS)}'")
    dtype = np.dtype([("ts", "S40"), ("c", "f8"), ("g", "f8")])
    bad = BadRows(opts.strict)
    rows, lines = load_csv(path, dtype, {1: check_number("ContextTokens"), 2: check_number("GeneratedTokens")},
                           bad)
    t, dropped = parse_timestamps(path, rows["ts"], bad, lines)
    prompt, dropped = to_tokens(path, "ContextTokens", rows["c"], lines, bad, dropped)
    output, dropped = to_tokens(path, "GeneratedTokens", rows["g"], lines, bad, dropped)
    if dropped.any():
        lines = row_lines(path, lines, len(rows))[~dropped]
        t, prompt, output = t[~dropped], prompt[~dropped], output[~dropped]
    check_sorted(path, t, what="TIMESTAMP (s since first row)", lines=lines)
    raw = RawRequests(time_s=t, prompt_tokens=prompt, output_tokens=output, bad=bad)
    return build_trace(raw, opts, name=name or path.name.split(".")[0], source=str(path), meta={"format": "azure"})
