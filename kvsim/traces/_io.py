"""Fast, strict reading of trace files (CSV and JSONL), with file:line error messages.

The fast path is :func:`numpy.loadtxt` (C parser since numpy 1.23: ~0.6 s for the
1.43M-row BurstGPT_1.csv). When it fails, a slow pure-Python pass over the file finds the
first offending line so the :class:`~kvsim.errors.TraceError` can name ``file:line``.
Blank lines are skipped by both passes.
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from kvsim.errors import TraceError

#: Checks one raw CSV row (list of str); returns a problem description or None.
RowCheck = Callable[[list[str]], "str | None"]

#: Largest token count of one request a trace may hold (2**31 - 1): far beyond any model's
#: context, and small enough that tokens x bytes-per-token products stay inside int64.
MAX_TOKENS = 2**31 - 1
#: Largest timestamp, seconds (about 31,700 years): beyond it float64 loses sub-ms resolution.
MAX_TIME_S = 1e12


def _allowed(integer: bool, hi: float) -> str:
    return f"a whole number >= 0 and <= {hi:.0f}" if integer else f"a finite number >= 0 and <= {hi:g}"


def open_text(path: Path) -> io.TextIOBase:
    """Open a (possibly ``.gz``) text file as UTF-8; a missing file raises TraceError."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"trace file not found: {path}")
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as err:
        raise TraceError(f"cannot open trace file {path}: {err.strerror or err}") from None


def first_line(path: Path) -> str:
    """The first line of a text file without its line end ('' for an empty file)."""
    try:
        with open_text(path) as f:
            return f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise TraceError(f"{path}: cannot read the file ({err})") from None


def iter_lines(path: Path, skip: int = 0) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of non-blank lines after the first ``skip`` lines."""
    with open_text(path) as f:
        for lineno, text in enumerate(f, start=1):
            if lineno <= skip:
                continue
            text = text.rstrip("\r\n")
            if text:
                yield lineno, text


def line_of_row(path: Path, row: int, skip: int = 1) -> int:
    """Line number (1-based) of data row ``row`` (0-based, blank lines not counted)."""
    for i, (lineno, _) in enumerate(iter_lines(path, skip)):
        if i == row:
            return lineno
    return -1


def check_number(name: str, integer: bool = True, hi: float | None = None) -> Callable[[str], str | None]:
    """A cell check: the cell must be a finite number in [0, hi] (integral if ``integer``;
    ``hi`` defaults to MAX_TOKENS for integers, MAX_TIME_S otherwise)."""
    hi = (MAX_TOKENS if integer else MAX_TIME_S) if hi is None else hi

    def check(cell: str) -> str | None:
        if "\x00" in cell:
            return f"{name} contains a NUL byte: {cell!r}"
        try:
            value = float(cell)
        except ValueError:
            return f"{name} is not a number: {cell!r}"
        if not np.isfinite(value) or value < 0 or value > hi:
            return f"{name} must be {_allowed(integer, hi)}, got {cell!r}"
        if integer and value != int(value):
            return f"{name} must be a whole number of tokens, got {cell!r}"
        return None

    return check


def find_bad_row(path: Path, ncols: int, checks: dict[int, Callable[[str], str | None]]) -> str | None:
    """Slow pass: ``"file:line: problem"`` for the first malformed CSV row, or None."""
    with open_text(path) as f:
        f.readline()  # header
        reader = csv.reader(f)
        for row in reader:
            if not row:
                continue
            where = f"{path}:{reader.line_num + 1}"
            if len(row) != ncols:
                return f"{where}: expected {ncols} comma-separated columns, found {len(row)}"
            for col, check in checks.items():
                problem = check(row[col])
                if problem:
                    return f"{where}: {problem}"
    return None


def load_csv(path: Path, dtype: np.dtype, checks: dict[int, Callable[[str], str | None]]) -> np.ndarray:
    """Read all data rows of a one-header-line CSV into a structured array.

    Parameters
    ----------
    path : CSV file (``.gz`` allowed).
    dtype : structured dtype with one field per column (unused columns as ``U1``).
    checks : per column index, the slow-path cell check used to locate a bad row.

    Returns
    -------
    numpy.ndarray, shape [N], structured ``dtype``.
    """
    try:
        with open_text(path) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data" -> handled by callers
            return np.loadtxt(
                f, delimiter=",", skiprows=1, dtype=dtype, comments=None, quotechar='"', ndmin=1
            )
    except (ValueError, UnicodeError) as err:
        try:
            located = find_bad_row(path, len(dtype.names), checks)
        except UnicodeDecodeError:
            located = f"{path}: not UTF-8 text"
        detail = " ".join(str(err).split())
        raise TraceError(located or f"{path}: cannot parse CSV ({detail})") from None


def _line(path: Path, row: int, lines: np.ndarray | None) -> int:
    return int(lines[row]) if lines is not None else line_of_row(path, row)


def check_values(
    path: Path,
    values: dict[str, np.ndarray],
    lines: np.ndarray | None = None,
    integer: bool = True,
    hi: float | None = None,
) -> None:
    """Raise TraceError at the first row whose value is non-finite, outside [0, hi] or
    (``integer``) fractional. ``hi`` defaults to MAX_TOKENS for integers, MAX_TIME_S otherwise.

    ``values`` maps a column name to its [N] float64 column; ``lines`` gives each row's
    line number (default: found by re-reading a one-header-line CSV).
    """
    hi = (MAX_TOKENS if integer else MAX_TIME_S) if hi is None else hi
    for name, col in values.items():
        col = np.asarray(col, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(col) | (col < 0) | (col > hi)
            if integer:
                bad |= np.isfinite(col) & (col != np.floor(col))
        if bad.any():
            row = int(np.argmax(bad))
            raise TraceError(
                f"{path}:{_line(path, row, lines)}: {name} must be {_allowed(integer, hi)}, got {col[row]:g}"
            )


def to_tokens(path: Path, name: str, col: np.ndarray, lines: np.ndarray | None = None) -> np.ndarray:
    """The one checked conversion of a token column: [N] float64 -> [N] int64, each value a
    whole number in [0, MAX_TOKENS] (TraceError naming ``file:line`` otherwise)."""
    check_values(path, {name: col}, lines, integer=True)
    return np.asarray(col, dtype=np.float64).astype(np.int64)


def check_sorted(
    path: Path,
    time_s: np.ndarray,
    resolution_s: float = 0.0,
    what: str = "timestamp",
    lines: np.ndarray | None = None,
) -> None:
    """Raise TraceError if arrivals go back in time by more than the time resolution.

    With ``resolution_s = 1`` (BurstGPT: timestamps accurate to seconds, upstream issue
    HPMLL/BurstGPT#2) rows may be out of order only within the same whole second; callers
    then sort stably. With 0, timestamps must be non-decreasing.
    """
    if time_s.size < 2:
        return
    key = np.floor(time_s / resolution_s) if resolution_s > 0 else time_s
    back = key[1:] < np.maximum.accumulate(key)[:-1]
    if back.any():
        row = int(np.argmax(back)) + 1
        raise TraceError(
            f"{path}:{_line(path, row, lines)}: {what} {time_s[row]:g} is earlier than a previous row "
            f"({np.max(time_s[:row]):g}); trace rows must be in time order"
        )
