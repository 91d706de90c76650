"""Vidur's trace CSVs: trace replay (``arrived_at,num_prefill_tokens,num_decode_tokens``) and
request-length files (``num_prefill_tokens,num_decode_tokens,...`` without ``arrived_at``).

Source: microsoft/vidur @ 7d47513 (MIT), ``vidur/request_generator/trace_replay_request_generator.py``
(``TraceReplayRequestGenerator``): ``pd.read_csv`` of the file, then per row
``Request(arrived_at=row["arrived_at"], num_prefill_tokens=..., num_decode_tokens=...)``.
``arrived_at`` is the arrival time in seconds (the simulator's clock; the bundled
``data/processed_traces/splitwise_{code,conv}.csv`` are the Azure 2023 traces converted to it,
first row 0.0, 6 decimals); ``num_prefill_tokens`` the prompt and ``num_decode_tokens`` the
output tokens. Other columns are ignored (``trace_request_length_generator.py`` reads the
same two token columns from files like ``arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv``
that have no ``arrived_at``: those are lengths-only and need ``--arrivals``).

Differences from Vidur, on purpose: Vidur casts fractional token counts with ``astype(int)``
and raises counts below 1 to 1; kvsim counts a fractional or negative count as a bad row and
drops 0-output rows as failed (0-prompt rows as invalid), each reported. Vidur's
``prefill_scale_factor``/``decode_scale_factor``/``time_scale_factor`` are not read (they are
simulator flags, not columns); use ``--time-scale`` or ``--rate``.

A converter that rounds ``arrived_at`` (to whole seconds, say) makes requests share arrival
times; :func:`kvsim.traces.arrivals.rounding_note` reports it.
"""

from __future__ import annotations

from pathlib import Path

from kvsim.errors import TraceError
from kvsim.traces.badrows import BadRows
from kvsim.traces.base import Trace
from kvsim.traces.pipeline import LoadOptions
from kvsim.traces.tabular import Columns, finish, read_csv

ARRIVAL, PROMPT, OUTPUT = "arrived_at", "num_prefill_tokens", "num_decode_tokens"


def is_vidur_header(names: tuple[str, ...]) -> bool:
    """Whether a CSV header has Vidur's two token columns (``arrived_at`` optional)."""
    return PROMPT in names and OUTPUT in names


def read_vidur(path: Path, opts: LoadOptions, names: tuple[str, ...]) -> Trace:
    """Load a Vidur trace-replay CSV (or a lengths-only one with ``--arrivals``)."""
    if not is_vidur_header(names):
        raise TraceError(f"{path}:1: not a Vidur trace header; expected columns {ARRIVAL}, {PROMPT}, {OUTPUT}")
    has_arrival = ARRIVAL in names
    cols = Columns(prompt=PROMPT, output=OUTPUT, arrival=ARRIVAL if has_arrival else None)
    bad = BadRows(opts.strict)
    table = read_csv(Path(path), cols, 1.0, bad)
    fmt = "vidur" if has_arrival else "vidur-lengths"
    label = f"column '{ARRIVAL}' (s)" if has_arrival else f"no '{ARRIVAL}' column"
    return finish(Path(path), table, opts, bad, fmt=fmt, arrival_label=label)
