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
from kvsim.traces._io import check_number, check_sorted, first_line, line_of_row, load_csv, to_tokens
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


def _first_control_char(cells: np.ndarray) -> int | None:
    """Row of the first cell holding a byte < 0x20 (NUL, tab, ...) before its end, or None.

    numpy's date-time parser stops at a NUL, so ``18:17\\x0004.07`` would silently read as
    another time; a fixed-width ``S`` cell pads with trailing NULs, which are allowed."""
    if cells.size == 0:
        return None
    u8 = np.frombuffer(cells.tobytes(), dtype=np.uint8).reshape(cells.shape[0], cells.dtype.itemsize)
    nul = u8 == 0
    padding = np.flip(np.logical_and.accumulate(np.flip(nul, axis=1), axis=1), axis=1)  # trailing NULs
    bad = ((u8 < 0x20) & ~padding).any(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def parse_timestamps(path: Path, cells: np.ndarray) -> np.ndarray:
    """Seconds since the first row, [N] float64, from ``YYYY-MM-DD HH:MM:SS.fffffff`` cells.

    Parsed with numpy's ISO 8601 reader at nanosecond resolution (vectorized; accepts the
    7 fractional digits that ``datetime.fromisoformat`` rejects on Python 3.10).
    """
    bad_row = _first_control_char(cells)
    if bad_row is not None:
        raise TraceError(
            f"{path}:{line_of_row(path, bad_row)}: TIMESTAMP contains a control character (e.g. NUL): "
            f"{cells[bad_row].decode('utf-8', 'replace')!r}"
        )
    stamps = np.empty(cells.shape[0], dtype="datetime64[ns]")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns on explicit time zones
            for a in range(0, cells.shape[0], _CHUNK):  # bytes -> str first: numpy 1.24 crashes
                part = np.char.strip(cells[a : a + _CHUNK]).astype(f"U{cells.dtype.itemsize}")
                stamps[a : a + _CHUNK] = part.astype("datetime64[ns]")  # on bad bytes->datetime64
        nat = np.isnat(stamps)
        if nat.any():
            bad_row = int(np.argmax(nat))
    except (ValueError, UnicodeError):
        bad_row = next((i for i, c in enumerate(cells) if _parse_one(c) is None), 0)
    if bad_row is not None:
        raise TraceError(
            f"{path}:{line_of_row(path, bad_row)}: TIMESTAMP is not a date-time "
            f"'YYYY-MM-DD HH:MM:SS.fffffff': {cells[bad_row].decode('utf-8', 'replace')!r}"
        )
    if stamps.size == 0:
        return np.zeros(0)
    return (stamps - stamps[0]).astype(np.int64) / 1e9


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
    rows = load_csv(path, dtype, {1: check_number("ContextTokens"), 2: check_number("GeneratedTokens")})
    t = parse_timestamps(path, rows["ts"])
    prompt = to_tokens(path, "ContextTokens", rows["c"])
    output = to_tokens(path, "GeneratedTokens", rows["g"])
    check_sorted(path, t, what="TIMESTAMP (s since first row)")
    raw = RawRequests(time_s=t, prompt_tokens=prompt, output_tokens=output)
    return build_trace(raw, opts, name=name or path.name.split(".")[0], source=str(path), meta={"format": "azure"})
