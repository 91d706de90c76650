"""Mooncake JSONL trace reader (FAST '25 release).

Source: kvcache-ai/Mooncake ``FAST25-release/traces/*.jsonl`` (repository license Apache-2.0);
Qin et al., "Mooncake: Trading More Storage for Less Computation", FAST '25.

One JSON object per line: ``timestamp`` (int, ms from trace start), ``input_length``,
``output_length`` (tokens) and ``hash_ids``: hash ids of the prompt's leading blocks of
512 tokens (equal ids = reusable prefix KV blocks; ``len(hash_ids) == ceil(input/512)``
on every bundled line). They become ``Trace.prefix_blocks`` with ``prefix_block_tokens=512``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from kvsim.errors import TraceError
from kvsim.specbase import INT64_MAX as INT64, short_repr
from kvsim.traces._io import MAX_TIME_S, MAX_TOKENS, check_sorted, iter_lines
from kvsim.traces.base import Trace
from kvsim.traces.pipeline import LoadOptions, RawRequests, build_trace

DATA_DIR = Path(__file__).parent / "data" / "mooncake"
CONVERSATION = DATA_DIR / "conversation_trace.jsonl"  # 12,031 requests, 3,537 s
SYNTHETIC = DATA_DIR / "synthetic_trace.jsonl"  # 3,993 requests, 1,022 s

BLOCK_TOKENS = 512  # tokens per hash_ids block (Mooncake FAST25-release README)
FIELDS = ("timestamp", "input_length", "output_length")


def _number(obj: dict, key: str, where: str, integer: bool) -> float:
    """A JSON number in [0, MAX_TOKENS] (whole) or [0, MAX_TIME_S * 1000] (ms), else TraceError."""
    value = obj.get(key)
    hi = MAX_TOKENS if integer else MAX_TIME_S * 1000.0
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= hi
    if ok and integer:
        ok = value == int(value)
    if not ok:
        kind = f"whole number >= 0 and <= {hi:.0f}" if integer else f"number >= 0 and <= {hi:g}"
        raise TraceError(f"{where}: '{key}' must be a {kind}, got {short_repr(value)}")
    return value


def _blocks(obj: dict, where: str, input_length: int) -> tuple[int, ...]:
    ids = obj.get("hash_ids")
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and -INT64 - 1 <= i <= INT64 for i in ids
    ):
        raise TraceError(f"{where}: 'hash_ids' must be a list of integers within int64")
    if len(ids) > -(-input_length // BLOCK_TOKENS):
        raise TraceError(
            f"{where}: 'hash_ids' has {len(ids)} blocks, more than ceil(input_length/{BLOCK_TOKENS}) = "
            f"{-(-input_length // BLOCK_TOKENS)}"
        )
    return tuple(ids)


def read_mooncake_raw(path: Path) -> RawRequests:
    """Parse and validate a Mooncake JSONL file (rows in file order)."""
    try:
        return _read(path)
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None


def _read(path: Path) -> RawRequests:
    times: list[float] = []
    ins: list[int] = []
    outs: list[int] = []
    lines: list[int] = []
    blocks: list[tuple[int, ...]] | None = None
    for lineno, text in iter_lines(path):
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise TraceError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        except RecursionError:
            raise TraceError(f"{where}: not valid JSON (nested too deeply)") from None
        except ValueError as err:  # e.g. an integer past Python's 4300-digit limit
            raise TraceError(f"{where}: not valid JSON ({str(err).splitlines()[0]})") from None
        if not isinstance(obj, dict):
            raise TraceError(f"{where}: expected a JSON object with keys {', '.join(FIELDS)}, hash_ids")
        missing = [k for k in FIELDS if k not in obj]
        if missing:
            raise TraceError(f"{where}: missing key(s) {', '.join(missing)}")
        times.append(_number(obj, "timestamp", where, integer=False) / 1000.0)  # ms -> s
        ins.append(int(_number(obj, "input_length", where, integer=True)))
        outs.append(int(_number(obj, "output_length", where, integer=True)))
        if not lines:
            blocks = [] if "hash_ids" in obj else None
        if (blocks is not None) != ("hash_ids" in obj):
            raise TraceError(f"{where}: 'hash_ids' must be on every line or on none")
        if blocks is not None:
            blocks.append(_blocks(obj, where, ins[-1]))
        lines.append(lineno)
    t = np.asarray(times, dtype=np.float64)
    check_sorted(path, t, what="timestamp (s)", lines=np.asarray(lines))
    return RawRequests(
        time_s=t,
        prompt_tokens=np.asarray(ins, dtype=np.int64),
        output_tokens=np.asarray(outs, dtype=np.int64),
        prefix_blocks=blocks,
        prefix_block_tokens=BLOCK_TOKENS if blocks is not None else 0,
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
    raw = read_mooncake_raw(path)
    return build_trace(raw, opts, name=name or path.name.split(".")[0], source=str(path), meta={"format": "mooncake"})
