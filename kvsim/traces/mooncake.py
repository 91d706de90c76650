"""Mooncake JSONL trace reader (FAST '25 release).

Source: kvcache-ai/Mooncake ``FAST25-release/traces/*.jsonl`` (repository license Apache-2.0);
Qin et al., "Mooncake: Trading More Storage for Less Computation", FAST '25.

One JSON object per line: ``timestamp`` (int, ms from trace start), ``input_length``,
``output_length`` (tokens) and ``hash_ids``: hash ids of the prompt's leading blocks of
512 tokens (equal ids = reusable prefix KV blocks; ``len(hash_ids) == ceil(input/512)``
on every bundled line). They become ``Trace.prefix_blocks`` with ``prefix_block_tokens=512``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kvsim.errors import TraceError
from kvsim.specbase import INT64_MAX as INT64, short_repr
from kvsim.traces._io import MAX_TIME_S, MAX_TOKENS, check_sorted, utf8_error
from kvsim.traces.arrivals import ties_note
from kvsim.traces.badrows import BadRow, BadRows
from kvsim.traces.base import Trace
from kvsim.traces.pipeline import LoadOptions, RawRequests, build_trace
from kvsim.traces.values import json_lines

DATA_DIR = Path(__file__).parent / "data" / "mooncake"
CONVERSATION = DATA_DIR / "conversation_trace.jsonl"  # 12,031 requests, 3,537 s
SYNTHETIC = DATA_DIR / "synthetic_trace.jsonl"  # 3,993 requests, 1,022 s

BLOCK_TOKENS = 512  # tokens per hash_ids block (Mooncake FAST25-release README)
FIELDS = ("timestamp", "input_length", "output_length")


def _number(obj: dict, key: str, integer: bool) -> float:
    """A JSON number in [0, MAX_TOKENS] (whole) or [0, MAX_TIME_S * 1000] (ms), else BadRow."""
    value = obj.get(key)
    hi = MAX_TOKENS if integer else MAX_TIME_S * 1000.0
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= hi
    if ok and integer:
        ok = value == int(value)
    if not ok:
        kind = f"whole number >= 0 and <= {hi:.0f}" if integer else f"number >= 0 and <= {hi:g}"
        wrong_type = isinstance(value, bool) or not isinstance(value, (int, float))
        raise BadRow("not_a_number" if wrong_type else ("bad_token_count" if integer else "bad_time"),
                     f"'{key}' must be a {kind}, got {short_repr(value)}")
    return value


def _blocks(obj: dict, input_length: int) -> tuple[int, ...]:
    ids = obj.get("hash_ids")
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and -INT64 - 1 <= i <= INT64 for i in ids
    ):
        raise BadRow("bad_blocks", "'hash_ids' must be a list of integers within int64")
    if len(ids) > -(-input_length // BLOCK_TOKENS):
        raise BadRow("bad_blocks",
                     f"'hash_ids' has {len(ids)} blocks, more than ceil(input_length/{BLOCK_TOKENS}) = "
                     f"{-(-input_length // BLOCK_TOKENS)}")
    return tuple(ids)


def read_mooncake_raw(path: Path, strict: bool = False) -> RawRequests:
    """Parse and validate a Mooncake JSONL file (rows in file order); bad lines are dropped
    and counted (``strict``: the first one is an error)."""
    try:
        return _read(path, BadRows(strict))
    except UnicodeDecodeError:
        raise TraceError(utf8_error(path)) from None


def _read(path: Path, bad: BadRows) -> RawRequests:
    times: list[float] = []
    ins: list[int] = []
    outs: list[int] = []
    lines: list[int] = []
    blocks: list[tuple[int, ...]] | None = None
    with_blocks: bool | None = None  # whether lines carry hash_ids (decided by the first good line)
    for lineno, obj in json_lines(path):
        where = f"{path}:{lineno}"
        try:
            if isinstance(obj, BadRow):
                raise obj
            if not isinstance(obj, dict):
                raise BadRow("unparseable", f"expected a JSON object with keys {', '.join(FIELDS)}, hash_ids")
            missing = [k for k in FIELDS if k not in obj]
            if missing:
                raise BadRow("missing_field", f"missing key(s) {', '.join(missing)}")
            t = _number(obj, "timestamp", integer=False) / 1000.0  # ms -> s
            p = int(_number(obj, "input_length", integer=True))
            o = int(_number(obj, "output_length", integer=True))
            ids = _blocks(obj, p) if "hash_ids" in obj else None
        except BadRow as b:
            bad.add_row(b, where)
            continue
        if with_blocks is None:
            with_blocks = ids is not None
            blocks = [] if with_blocks else None
        if with_blocks != (ids is not None):
            raise TraceError(f"{where}: 'hash_ids' must be on every line or on none")
        times.append(t)
        ins.append(p)
        outs.append(o)
        if blocks is not None:
            blocks.append(ids)
        lines.append(lineno)
    t = np.asarray(times, dtype=np.float64)
    check_sorted(path, t, what="timestamp (ms)", lines=np.asarray(lines), file_units_per_s=1000.0)
    return RawRequests(
        time_s=t,
        prompt_tokens=np.asarray(ins, dtype=np.int64),
        output_tokens=np.asarray(outs, dtype=np.int64),
        prefix_blocks=blocks,
        prefix_block_tokens=BLOCK_TOKENS if blocks is not None else 0,
        bad=bad,
    )


def read_mooncake(path: Path, opts: LoadOptions, *, name: str | None = None) -> Trace:
    """Load a Mooncake JSONL trace as a :class:`Trace` with prefix blocks.

    Parameters
    ----------
    path : ``.jsonl`` file (``.jsonl.gz`` allowed).
    opts : filters and rescaling; ``start_s``/``end_s`` on ``timestamp / 1000`` (seconds).
    name : trace name (default: the file stem).
    """
    path = Path(path)
    raw = read_mooncake_raw(path, opts.strict)
    tied = None if opts.arrivals is not None else ties_note(raw.time_s, "timestamp")  # (--arrivals replaces them)
    if tied:
        raw.notes.append(tied)
    return build_trace(raw, opts, name=name or path.name.split(".")[0], source=str(path), meta={"format": "mooncake"})
