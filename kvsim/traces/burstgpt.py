"""BurstGPT CSV reader (both released formats) and resolution of ``--trace burstgpt``.

Source: Wang et al., "BurstGPT: A Real-World Workload Dataset to Optimize LLM Serving
Systems", KDD '25 (doi:10.1145/3711896.3737413); https://github.com/HPMLL/BurstGPT, CC BY 4.0.

Formats (upstream README):

* 6 columns (``BurstGPT_1.csv``, ``_2``): ``Timestamp,Model,Request tokens,Response tokens,
  Total tokens,Log Type``;
* 8 columns (``BurstGPT_3.csv``, release v1.2+): ``Session ID`` and ``Elapsed time`` inserted
  after ``Timestamp``.

``Timestamp`` is seconds from 0:00 of the first day, accurate to whole seconds (rows may be
out of order only within one second: they are sorted stably). ``Model`` is ``ChatGPT``
(GPT-3.5) or ``GPT-4``; ``Log Type`` is ``Conversation log`` or ``API log``. A row with
0 response tokens is a failed request: it is dropped and counted in ``num_failed_dropped``.

``Session ID`` (8 columns; empty on API log rows) groups the turns of one conversation; its
``Request tokens`` already include the earlier turns (in the bundled slice, 188 of 259
follow-up turns have at least the previous turn's request + response tokens). The rows of a
session become prefix blocks so that a later turn reuses the earlier prompt's KV
(:mod:`kvsim.traces.sessions`; ``--no-prefix-caching`` in ``simulate`` turns the reuse off).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kvsim.errors import TraceError, unknown_name
from kvsim.traces._io import check_number, check_sorted, check_values, first_line, load_csv, row_lines, to_tokens
from kvsim.traces.arrivals import ties_note
from kvsim.traces.badrows import BadRows
from kvsim.traces.base import Trace
from kvsim.traces.fetch import burstgpt_cache_path
from kvsim.traces.pipeline import LoadOptions, RawRequests, build_trace
from kvsim.traces.sessions import describe as describe_sessions
from kvsim.traces.sessions import session_blocks

DATA_DIR = Path(__file__).parent / "data" / "burstgpt"
SAMPLE_1 = DATA_DIR / "BurstGPT_1_head400.csv"  # first 400 rows of BurstGPT_1.csv
SAMPLE_3 = DATA_DIR / "BurstGPT_3_slice.csv"  # 400 rows of BurstGPT_3.csv (8 columns)

COLUMNS_6 = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")
COLUMNS_8 = COLUMNS_6[:1] + ("Session ID", "Elapsed time") + COLUMNS_6[1:]
SESSION_ID_BYTES = 64  # Session IDs are 36-character UUIDs; a longer one is cut (and the notice says so)

#: user spelling (lower case) -> value in the ``Model`` column
MODELS = {"chatgpt": "ChatGPT", "gpt-3.5": "ChatGPT", "gpt-4": "GPT-4", "gpt4": "GPT-4"}
#: user spelling (lower case) -> value in the ``Log Type`` column
LOG_TYPES = {
    "conversation": "Conversation log",
    "conversation log": "Conversation log",
    "conv": "Conversation log",
    "api": "API log",
    "api log": "API log",
}


def header_columns(line: str) -> tuple[str, ...]:
    """Column names of a CSV header line, stripped."""
    return tuple(c.strip().strip('"') for c in line.split(","))


def is_burstgpt_header(line: str) -> bool:
    """Whether a CSV header line is one of the two BurstGPT formats."""
    return header_columns(line) in (COLUMNS_6, COLUMNS_8)


def _canonical(kind: str, value: str | None, table: dict[str, str], shown: tuple[str, ...]) -> str | None:
    """Column value for a user spelling (case-insensitive); unknown -> TraceError with choices."""
    if value is None:
        return None
    key = value.strip().lower()
    if key not in table:
        raise TraceError(str(unknown_name(f"BurstGPT {kind}", value, shown)))
    return table[key]


def read_burstgpt_raw(path: Path, opts: LoadOptions) -> tuple[RawRequests, str]:
    """Parse and validate a BurstGPT CSV; returns the rows (model/log-type mask in ``keep``)
    and the format name (``burstgpt6`` or ``burstgpt8``). The 8-column format's ``Session ID``
    becomes prefix blocks (:mod:`kvsim.traces.sessions`)."""
    cols = header_columns(first_line(path))
    if cols == COLUMNS_6:
        dtype = [("t", "f8"), ("m", "S16"), ("p", "f8"), ("o", "f8"), ("tot", "U1"), ("l", "S24")]
        fmt = "burstgpt6"
    elif cols == COLUMNS_8:
        # Session IDs are 36-character UUIDs (empty on API log rows)
        dtype = [("t", "f8"), ("sid", f"S{SESSION_ID_BYTES}"), ("el", "U1"), ("m", "S16"), ("p", "f8"), ("o", "f8")]
        dtype += [("tot", "U1"), ("l", "S24")]
        fmt = "burstgpt8"
    else:
        raise TraceError(
            f"{path}:1: not a BurstGPT header; expected '{','.join(COLUMNS_6)}' "
            f"or '{','.join(COLUMNS_8)}'"
        )
    i_req = cols.index("Request tokens")
    checks = {
        0: check_number("Timestamp", integer=False),
        i_req: check_number("Request tokens"),
        i_req + 1: check_number("Response tokens"),
    }
    bad = BadRows(opts.strict)
    rows, lines = load_csv(path, np.dtype(dtype), checks, bad)
    t, p, o = rows["t"], rows["p"], rows["o"]
    dropped = check_values(path, {"Timestamp": t}, lines, integer=False, bad=bad)
    p, dropped = to_tokens(path, "Request tokens", p, lines, bad, dropped)
    o, dropped = to_tokens(path, "Response tokens", o, lines, bad, dropped)
    if dropped.any():
        lines = row_lines(path, lines, len(rows))[~dropped]
        rows, t, p, o = rows[~dropped], t[~dropped], p[~dropped], o[~dropped]
    check_sorted(path, t, resolution_s=1.0, what="Timestamp", lines=lines)

    keep = None
    model = _canonical("model", opts.model, MODELS, ("ChatGPT", "GPT-4"))
    log_type = _canonical("log type", opts.log_type, LOG_TYPES, ("conversation", "API"))
    if model is not None:
        keep = rows["m"] == model.encode()
    if log_type is not None:
        lt = rows["l"] == log_type.encode()
        keep = lt if keep is None else keep & lt
    raw = RawRequests(time_s=t, prompt_tokens=p, output_tokens=o, keep=keep, bad=bad)
    tied = None if opts.arrivals is not None else ties_note(t, "Timestamp (whole seconds)")  # (--arrivals replaces them)
    if tied:
        raw.notes.append(tied)
    if fmt == "burstgpt8":
        sid = np.char.strip(rows["sid"])
        if (np.char.str_len(rows["sid"]) >= SESSION_ID_BYTES).any():
            raw.notes.append(f"some Session IDs are longer than {SESSION_ID_BYTES} bytes and were cut to that length "
                             "(ids sharing those bytes count as one session)")
        blocks, stats = session_blocks(sid.tolist(), p, t, usable=(p > 0) & (o > 0), output=o)
        raw.prefix_blocks, raw.prefix_block_tokens = blocks, stats["block_tokens"]
        raw.meta.update(sessions=stats, sessions_text=describe_sessions(stats))
    return raw, fmt


def read_burstgpt(path: Path, opts: LoadOptions, *, name: str | None = None, notice: str | None = None) -> Trace:
    """Load a BurstGPT CSV (6- or 8-column format) as a :class:`Trace`.

    Parameters
    ----------
    path : CSV file (``.csv`` or ``.csv.gz``).
    opts : filters and rescaling; ``model`` in {ChatGPT, GPT-4}, ``log_type`` in
        {conversation, API}, ``start_s``/``end_s`` on the raw ``Timestamp`` (seconds).
    name : trace name (default: the file stem).
    notice : one line to show the user.
    """
    path = Path(path)
    raw, fmt = read_burstgpt_raw(path, opts)
    return build_trace(
        raw, opts, name=name or path.name.split(".")[0], source=str(path), notice=notice, meta={"format": fmt}
    )


def load_burstgpt(opts: LoadOptions) -> Trace:
    """``--trace burstgpt``: the full ``BurstGPT_1.csv`` if present in the cache, else the sample.

    The full file is looked up at ``<cache>/burstgpt/BurstGPT_1.csv`` where ``<cache>`` is
    ``opts.cache_dir``, else ``$KVSIM_CACHE_DIR``, else ``~/.cache/kvsim``. Without it the bundled
    first 400 rows are used and ``Trace.notice`` says so and how to fetch the full file.
    """
    full = burstgpt_cache_path(opts.cache_dir)
    if full.is_file():
        return read_burstgpt(full, opts, name="burstgpt")
    notice = (
        f"using the bundled 400-row BurstGPT sample (first rows of BurstGPT_1.csv); "
        f"run `kvsim trace fetch burstgpt` to download the full 1.43M-row trace to {full}"
    )
    return read_burstgpt(SAMPLE_1, opts, name="burstgpt", notice=notice)
