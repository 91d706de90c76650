"""Fast, strict reading of trace files (CSV and JSONL), with file:line error messages.

The fast path is :func:`numpy.loadtxt` (C parser since numpy 1.23: ~0.6 s for the
1.43M-row BurstGPT_1.csv). When it fails, a slow pure-Python pass over the file finds the
first offending line so the :class:`~kvsim.errors.TraceError` can name ``file:line``, or
(not strict) drops the bad rows and counts them in a :class:`~kvsim.traces.badrows.BadRows`.
Blank lines are skipped by both passes.
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from kvsim.errors import TraceError
from kvsim.traces.badrows import BadRows

#: Checks one CSV cell; returns ``(bad-row kind, problem)`` or None.
CellCheck = Callable[[str], "tuple[str, str] | None"]

#: Largest token count of one request a trace may hold (2**31 - 1): far beyond any model's
#: context, and small enough that tokens x bytes-per-token products stay inside int64.
MAX_TOKENS = 2**31 - 1
#: Largest timestamp, seconds (about 31,700 years): beyond it float64 loses sub-ms resolution.
MAX_TIME_S = 1e12


def _allowed(integer: bool, hi: float) -> str:
    return f"a whole number >= 0 and <= {hi:.0f}" if integer else f"a finite number >= 0 and <= {hi:g}"


class _CheckedGzip(io.RawIOBase):
    """A ``.gz`` file's bytes; a truncated or corrupt stream raises TraceError naming the file
    (gzip raises EOFError, which the CLI layer would only report as "aborted")."""

    def __init__(self, path: Path) -> None:
        self._path, self._f = path, gzip.open(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        try:
            return self._f.readinto(b)
        except (EOFError, OSError, zlib.error) as err:
            what = ("the gzip data ends early (a truncated file?)" if isinstance(err, EOFError)
                    else f"not valid gzip data ({str(err) or type(err).__name__})")
            raise TraceError(f"{self._path}: {what}; download or compress it again") from None

    def close(self) -> None:
        self._f.close()
        super().close()


def not_found(path: Path) -> TraceError:
    """The error for a trace path that is not a readable file: missing, a folder, or a link to nothing."""
    if path.is_symlink() and not path.exists():
        return TraceError(f"{path}: a symbolic link that leads to no file (a loop, or its target is missing)")
    if path.is_dir():
        return TraceError(f"{path}: is a folder, not a trace file")
    return TraceError(f"trace file not found: {path}")


def open_text(path: Path) -> io.TextIOBase:
    """Open a (possibly ``.gz``) text file as UTF-8; a missing file raises TraceError."""
    path = Path(path)
    if not path.is_file():
        raise not_found(path)
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(io.BufferedReader(_CheckedGzip(path)), encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as err:
        raise TraceError(f"cannot open trace file {path}: {err.strerror or err}") from None


def first_line(path: Path) -> str:
    """The first line of a text file without its line end ('' for an empty file)."""
    try:
        with open_text(path) as f:
            return f.readline().rstrip("\r\n")
    except UnicodeDecodeError:
        raise TraceError(utf8_error(path)) from None
    except (OSError, EOFError) as err:
        raise TraceError(f"{path}: cannot read the file ({err})") from None


def utf8_error(path: Path) -> str:
    """``"file:line: not UTF-8 text (...)"`` for the first undecodable byte of a file."""
    try:
        with (gzip.open(path, "rb") if Path(path).suffix == ".gz" else open(path, "rb")) as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    return (f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                            "save the file as UTF-8")
    except (OSError, EOFError) as err:
        return f"{path}: cannot read the file ({err})"
    return f"{path}: not UTF-8 text"


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


def epoch_ms_hint(seconds: float) -> str:
    """A note for an arrival past :data:`MAX_TIME_S` that reads as an epoch time in milliseconds
    (1e12-1e15 ms: the years 2001-33658), else ''."""
    if 1e12 < seconds <= 1e15:
        return " (epoch milliseconds? arrivals are read as seconds: --time-unit and --columns, docs/traces.md)"
    return ""


def check_number(name: str, integer: bool = True, hi: float | None = None) -> CellCheck:
    """A cell check: the cell must be a finite number in [0, hi] (integral if ``integer``;
    ``hi`` defaults to MAX_TOKENS for integers, MAX_TIME_S otherwise). A failing cell gives
    ``(kind, problem)`` with kind ``missing_field``, ``not_a_number``, or ``bad_token_count``
    (``integer``) / ``bad_time``."""
    hi = (MAX_TOKENS if integer else MAX_TIME_S) if hi is None else hi
    range_kind = "bad_token_count" if integer else "bad_time"

    def check(cell: str) -> tuple[str, str] | None:
        if "\x00" in cell:
            return "not_a_number", f"{name} contains a NUL byte: {cell!r}"
        if not cell.strip():
            return "missing_field", f"{name} is empty"
        try:
            value = float(cell)
        except ValueError:
            return "not_a_number", f"{name} is not a number: {cell!r}"
        if not np.isfinite(value) or value < 0 or value > hi:
            hint = "" if integer or hi != MAX_TIME_S else epoch_ms_hint(value)
            return range_kind, f"{name} must be {_allowed(integer, hi)}, got {cell!r}{hint}"
        if integer and value != int(value):
            return range_kind, f"{name} must be a whole number of tokens, got {cell!r}"
        return None

    return check


def _scan_rows(path: Path, ncols: int, checks: dict[int, CellCheck]) -> Iterator[tuple[int, list[str], tuple[str, str] | None]]:
    """Slow pass over the data rows: ``(line, cells, (kind, problem) or None)``."""
    with open_text(path) as f:
        f.readline()  # header
        reader = csv.reader(f)
        for row in reader:
            if not row:
                continue
            line = reader.line_num + 1
            if len(row) != ncols:
                yield line, row, ("unparseable", f"expected {ncols} comma-separated columns, found {len(row)}")
                continue
            problem = None
            for col, check in checks.items():
                problem = check(row[col])
                if problem:
                    break
            yield line, row, problem


def find_bad_row(path: Path, ncols: int, checks: dict[int, CellCheck]) -> str | None:
    """Slow pass: ``"file:line: problem"`` for the first malformed CSV row, or None."""
    for line, _, problem in _scan_rows(path, ncols, checks):
        if problem:
            return f"{path}:{line}: {problem[1]}"
    return None


def data_lines(path: Path, skip: int = 1) -> np.ndarray:
    """[N] int64 line numbers (1-based) of the data rows of a one-header-line file (blank lines skipped)."""
    return np.fromiter((lineno for lineno, _ in iter_lines(path, skip)), dtype=np.int64)


def _loadtxt(source, dtype: np.dtype, skiprows: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input contained no data" -> handled by callers
        return np.loadtxt(source, delimiter=",", skiprows=skiprows, dtype=dtype, comments=None, quotechar='"', ndmin=1)


def load_csv(
    path: Path, dtype: np.dtype, checks: dict[int, CellCheck], bad: BadRows | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read all data rows of a one-header-line CSV into a structured array.

    Parameters
    ----------
    path : CSV file (``.gz`` allowed).
    dtype : structured dtype with one field per column (unused columns as ``U1``).
    checks : per column index, the slow-path cell check used to locate a bad row.
    bad : where unparseable rows are counted (not strict: they are dropped); None = strict.

    Returns
    -------
    (rows, lines): rows [N] of ``dtype``; lines [N] int64 line numbers of the rows, or None
    when every data row was read (then row i is the i-th non-blank line after the header).
    """
    try:
        with open_text(path) as f:
            return _loadtxt(f, dtype, 1), None
    except UnicodeError:
        raise TraceError(utf8_error(path)) from None
    except ValueError as err:
        detail = " ".join(str(err).splitlines()[0].split()) if str(err) else "parse error"
    try:
        if bad is None or bad.strict:
            located = find_bad_row(path, len(dtype.names), checks)
            raise TraceError(located or f"{path}: cannot parse CSV ({detail})")
        good = io.StringIO()
        writer = csv.writer(good, lineterminator="\n")
        lines = []
        for line, row, problem in _scan_rows(path, len(dtype.names), checks):
            if problem:
                bad.add(problem[0], f"{path}:{line}", problem[1])
            else:
                writer.writerow(row)
                lines.append(line)
    except UnicodeDecodeError:
        raise TraceError(utf8_error(path)) from None
    good.seek(0)
    try:
        return _loadtxt(good, dtype, 0), np.asarray(lines, dtype=np.int64)
    except ValueError:
        raise TraceError(f"{path}: cannot parse CSV ({detail})") from None


def _line(path: Path, row: int, lines: np.ndarray | None) -> int:
    return int(lines[row]) if lines is not None else line_of_row(path, row)


def check_values(
    path: Path,
    values: dict[str, np.ndarray],
    lines: np.ndarray | None = None,
    integer: bool = True,
    hi: float | None = None,
    bad: BadRows | None = None,
    skip: np.ndarray | None = None,
) -> np.ndarray:
    """Rows whose value is non-finite, outside [0, hi] or (``integer``) fractional.

    ``values`` maps a column name to its [N] float64 column; ``lines`` gives each row's
    line number (default: found by re-reading a one-header-line CSV). ``hi`` defaults to
    MAX_TOKENS for integers, MAX_TIME_S otherwise. With ``bad`` None or strict the first
    such row raises TraceError naming ``file:line``; otherwise they are counted in ``bad``
    (kind ``bad_token_count`` or ``bad_time``; rows already in ``skip`` are not counted
    again). Returns the [N] bool mask of bad rows (``skip`` included).
    """
    hi = (MAX_TOKENS if integer else MAX_TIME_S) if hi is None else hi
    out = np.zeros(next(iter(values.values())).shape[0], dtype=bool) if skip is None else skip.copy()
    for name, col in values.items():
        col = np.asarray(col, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            wrong = ~np.isfinite(col) | (col < 0) | (col > hi)
            if integer:
                wrong |= np.isfinite(col) & (col != np.floor(col))
        wrong &= ~out
        if wrong.any():
            row = int(np.argmax(wrong))
            place = f"{path}:{_line(path, row, lines)}"
            problem = f"{name} must be {_allowed(integer, hi)}, got {col[row]:g}"
            if not integer and hi == MAX_TIME_S:
                problem += epoch_ms_hint(float(col[row]))
            if bad is None:
                raise TraceError(f"{place}: {problem}")
            bad.add("bad_token_count" if integer else "bad_time", place, problem, count=int(wrong.sum()))
            out |= wrong
    return out


def to_tokens(
    path: Path, name: str, col: np.ndarray, lines: np.ndarray | None = None,
    bad: BadRows | None = None, skip: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The one checked conversion of a token column: [N] float64 -> ([N] int64, [N] bad mask).

    Each value must be a whole number in [0, MAX_TOKENS]: otherwise TraceError naming
    ``file:line`` (``bad`` None or strict), or the row is counted in ``bad``, marked in the
    mask (``skip`` included) and its tokens set to 0."""
    mask = check_values(path, {name: col}, lines, integer=True, bad=bad, skip=skip)
    col = np.where(mask, 0.0, np.asarray(col, dtype=np.float64))
    return col.astype(np.int64), mask


def row_lines(path: Path, lines: np.ndarray | None, n: int) -> np.ndarray:
    """Line numbers of the ``n`` rows ``load_csv`` returned (read from the file when it gave None)."""
    return lines if lines is not None else data_lines(path)[:n]


def check_sorted(
    path: Path,
    time_s: np.ndarray,
    resolution_s: float = 0.0,
    what: str = "timestamp",
    lines: np.ndarray | None = None,
    file_units_per_s: float = 1.0,
) -> None:
    """Raise TraceError if arrivals go back in time by more than the time resolution.

    With ``resolution_s = 1`` (BurstGPT: timestamps accurate to seconds, upstream issue
    HPMLL/BurstGPT#2) rows may be out of order only within the same whole second; callers
    then sort stably. With 0, timestamps must be non-decreasing. ``file_units_per_s`` shows the
    times in the file's own unit (Mooncake: 1000, milliseconds).
    """
    if time_s.size < 2:
        return
    key = np.floor(time_s / resolution_s) if resolution_s > 0 else time_s
    back = key[1:] < np.maximum.accumulate(key)[:-1]
    if back.any():
        row = int(np.argmax(back)) + 1
        raise TraceError(
            f"{path}:{_line(path, row, lines)}: {what} {time_s[row] * file_units_per_s:g} is earlier than a previous "
            f"row ({np.max(time_s[:row]) * file_units_per_s:g}); trace rows must be in time order"
        )
