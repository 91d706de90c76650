"""Options shared by every trace source, and the one path from parsed rows to a Trace.

Order of operations in :func:`build_trace` (each step's count is reported):

0. rows the reader could not use were already dropped and counted by kind
   (:mod:`kvsim.traces.badrows`) -> ``meta["bad_rows"]`` and a notice;
1. source filters (BurstGPT model / log type, applied by the reader) and the time window
   ``start_s <= t < end_s`` on the raw timestamps -> ``num_filtered``;
2. failed requests (0 output tokens; BurstGPT marks failures with 0 response tokens)
   -> ``num_failed_dropped``;
3. invalid requests (0 prompt tokens) -> ``meta["num_invalid_dropped"]``;
   ``arrivals`` (``--arrivals``) then gives the rows left synthetic arrival times, in file order
   (a file without timestamps: step 1's window then reads those);
4. stable sort by arrival, keep the first ``limit`` requests -> ``num_filtered``;
5. shift so the first request arrives at 0 s;
6. rescale time: ``rate`` R gives exactly (N-1)/span = R requests/s (BurstGPT README:
   "scale the average Requests Per Second"), or divide by ``time_scale``
   (BurstGPT example ``server.py``: "100 means 100 times faster");
7. clip prompt/output lengths to ``max_prompt_tokens`` / ``max_output_tokens`` (the
   BurstGPT example clips to 1023) -> ``meta["num_prompt_clipped"]`` etc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kvsim.errors import TraceError
from kvsim.specbase import INT64_MAX
from kvsim.traces import arrivals
from kvsim.traces._io import MAX_TIME_S, MAX_TOKENS
from kvsim.traces.badrows import BadRows
from kvsim.traces.base import Trace


@dataclass(frozen=True)
class LoadOptions:
    """Keyword options of :func:`kvsim.traces.load_trace` (see there for meanings)."""

    rate: float | None = None
    time_scale: float | None = None
    limit: int | None = None
    model: str | None = None
    log_type: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    seed: int = 0
    num_requests: int | None = None
    cache_dir: Path | None = None
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    format: str | None = None  # a name of kvsim.traces.registry.FORMATS; None/"auto": detect
    columns: str | None = None  # generic CSV/JSONL: "arrival=ts,prompt=in,output=out[,session=sid]"
    time_unit: str | None = None  # generic CSV/JSONL arrival unit: s, ms, us, ns or iso
    arrivals: str | None = None  # synthetic arrivals for the file's rows: "poisson:rate=4", "gamma:rate=4,cv=2"
    strict: bool = False  # a bad row is an error instead of dropped and counted
    tokenizer: Path | None = None  # ShareGPT: a local tokenizer.json (needs the `tokenizers` package)

    def validate(self) -> LoadOptions:
        """Check value ranges; raise TraceError naming the first bad option."""
        for name in ("rate", "time_scale"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise TraceError(f"--{name.replace('_', '-')} ({name}) must be a finite number > 0, got {v}")
            if v is not None and v > arrivals.MAX_RATE_PER_S:  # (gaps of 1e-200 s underflow in squares: the CV read 0)
                what = "requests/s (the synthetic traces' bound)" if name == "rate" else "(a billion times faster)"
                raise TraceError(f"--{name.replace('_', '-')} ({name}) must be at most {arrivals.MAX_RATE_PER_S:g} {what}, got {v:g}")
        if self.rate is not None and self.time_scale is not None:
            raise TraceError("give either --rate or --time-scale (rate or time_scale), not both")
        if self.arrivals is not None and (self.rate is not None or self.time_scale is not None):
            # (--rate then rescaled the synthetic arrivals while the notice still named --arrivals' rate: user audit)
            raise TraceError("--arrivals sets the arrival process and its rate: put the rate there (e.g. "
                             "poisson:rate=2) and drop --rate / --time-scale")
        for name in ("limit", "num_requests", "max_prompt_tokens", "max_output_tokens"):
            v = getattr(self, name)
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                or int(v) != v or not 1 <= v <= INT64_MAX
            ):
                raise TraceError(f"{name} must be a whole number >= 1 and <= {INT64_MAX}, got {v}")
        for name in ("start_s", "end_s"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise TraceError(f"{name} must be a finite number of seconds, got {v}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise TraceError(f"end_s ({self.end_s}) must be greater than start_s ({self.start_s})")
        seed = self.seed
        if (isinstance(seed, bool) or not isinstance(seed, (int, float)) or not math.isfinite(seed)
                or int(seed) != seed or seed < 0):
            raise TraceError(f"seed must be a whole number >= 0, got {self.seed}")
        return self

    @property
    def first_n(self) -> int | None:
        """Keep at most this many requests (the smaller of ``limit`` and ``num_requests``)."""
        given = [v for v in (self.limit, self.num_requests) if v is not None]
        return int(min(given)) if given else None

    def describe_filters(self) -> str:
        """Active filters as ``k=v, ...`` ('none' when there are none)."""
        parts = [
            f"{k}={getattr(self, k)}"
            for k in ("model", "log_type", "start_s", "end_s", "limit", "num_requests")
            if getattr(self, k) is not None
        ]
        return ", ".join(parts) or "none"


@dataclass
class RawRequests:
    """Parsed rows in file order, before any drop.

    Attributes
    ----------
    time_s : [N] float64, raw arrival time in seconds (the source's own clock).
    prompt_tokens, output_tokens : [N] int64, >= 0.
    keep : [N] bool rows passing the source's own filters (BurstGPT model/log type), or None.
    prefix_blocks : per row, block hash ids (Mooncake ``hash_ids``, session prefixes), or None.
    prefix_block_tokens : tokens per prefix block, or 0.
    chunk_ids : per row, retrieved chunk ids (RAG workloads), or None; chunk_tokens: tokens per chunk.
    has_arrivals : False for a lengths-only source (``time_s`` is a placeholder; ``--arrivals`` needed).
    bad : rows the reader dropped, by kind (None: none could be).
    notes : lines the user must see (approximations, synthetic arrivals, rounded timestamps).
    meta : reader facts for ``Trace.meta`` (format, sessions, token counting, ...).
    """

    time_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    keep: np.ndarray | None = None
    prefix_blocks: list[tuple[int, ...]] | None = None
    prefix_block_tokens: int = 0
    chunk_ids: list[tuple[int, ...]] | None = None
    chunk_tokens: int = 0
    has_arrivals: bool = True
    bad: BadRows | None = None
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.time_s.shape[0])


def _empty_error(
    name: str, opts: LoadOptions, n_read: int, n_filt: int, n_fail: int, n_inv: int, bad: BadRows | None
) -> TraceError:
    counts = f"{n_read} rows read, {n_filt} filtered out, {n_fail} failed, {n_inv} with 0 prompt tokens"
    if bad is not None and bad.total:
        kinds = ", ".join(f"{k} {n}" for k, n in bad.by_kind().items())
        first = bad.first_seen or bad.first[next(iter(bad.by_kind()))]
        return TraceError(f"trace {name}: no usable request ({n_read + bad.total} rows read, {bad.total} bad: {kinds}; "
                          f"first: {first})")
    if n_read == 0:
        return TraceError(f"trace {name} has no request rows")
    if opts.describe_filters() == "none":
        return TraceError(f"trace {name}: no usable request ({counts})")
    return TraceError(f"trace {name}: no request left after filters {opts.describe_filters()} ({counts})")


def rescale_factor(arrival_s: np.ndarray, opts: LoadOptions, name: str) -> float:
    """Multiplier for arrival times (starting at 0) that applies ``rate`` or ``time_scale``; the
    rescaled arrivals stay finite and within MAX_TIME_S (a one-line TraceError otherwise)."""
    span = float(arrival_s[-1]) if arrival_s.size else 0.0
    if opts.time_scale is not None:
        factor = 1.0 / opts.time_scale
        if not (math.isfinite(factor) and span * factor <= MAX_TIME_S):
            raise TraceError(f"time_scale={opts.time_scale:g} stretches trace {name}'s span of {span:g} s beyond "
                             f"{MAX_TIME_S:g} s")
        return factor
    if opts.rate is None or arrival_s.size < 2:
        return 1.0
    if span <= 0:
        raise TraceError(
            f"cannot rescale trace {name} to rate={opts.rate}: all {arrival_s.size} requests arrive at the same time"
        )
    factor = (arrival_s.size - 1) / opts.rate / span  # (N-1)/(R*span) -> (N-1)/span' = R
    if not math.isfinite(factor):
        raise TraceError(f"cannot rescale trace {name} to rate={opts.rate}: its span of {span:g} s is too short")
    if span * factor > MAX_TIME_S:
        raise TraceError(f"rate={opts.rate:g} stretches trace {name} beyond {MAX_TIME_S:g} s")
    return factor


def check_raw(raw: RawRequests, name: str) -> None:
    """Every source's rows, checked once before use: finite times and int64 token counts in
    [0, MAX_TOKENS] (readers name ``file:line`` first; this catches generators and callers)."""
    t = np.asarray(raw.time_s, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad_t = ~np.isfinite(t) | (np.abs(t) > MAX_TIME_S)
    if bad_t.any():
        i = int(np.argmax(bad_t))
        raise TraceError(f"trace {name}: request {i}: arrival time must be finite and within {MAX_TIME_S:g} s, got {t[i]:g}")
    for what, col in (("prompt tokens", raw.prompt_tokens), ("output tokens", raw.output_tokens)):
        col = np.asarray(col)
        if col.shape != t.shape or col.dtype.kind not in "iu":
            raise TraceError(f"trace {name}: {what} must be {t.size} whole numbers, got dtype {col.dtype}")
        bad = (col < 0) | (col > MAX_TOKENS)
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceError(f"trace {name}: request {i}: {what} must be >= 0 and <= {MAX_TOKENS}, got {col[i]}")


def build_trace(
    raw: RawRequests,
    opts: LoadOptions,
    *,
    name: str,
    source: str,
    notice: str | None = None,
    meta: dict | None = None,
) -> Trace:
    """Apply filters, drops, ``--arrivals``, sorting, limit, shift, rescale and clipping; build the Trace."""
    # --arrivals: synthetic arrivals for the rows that survive the filters and drops (in file order), so that
    # the replayed requests arrive at the rate asked (drawn for every row before, a --trace-model filter kept
    # 77 of 400 rows' draws: 0.68 req/s for poisson:rate=4; trace audit). A file without timestamps gets
    # them first: its --start-s / --end-s window then applies to the synthetic times, as it has no others.
    early = opts.arrivals is not None and not raw.has_arrivals  # (its window reads the synthetic times, drawn below)
    if opts.arrivals is None and not raw.has_arrivals:
        raise TraceError(f"trace {name} has no arrival times; give synthetic ones with --arrivals poisson:rate=R")
    check_raw(replace(raw, time_s=np.zeros(len(raw))) if early else raw, name)
    t, prompt, output = raw.time_s, raw.prompt_tokens, raw.output_tokens
    n_read = len(raw)
    mask = np.ones(n_read, dtype=bool) if raw.keep is None else raw.keep.copy()
    if not early:
        if opts.start_s is not None:
            mask &= t >= opts.start_s
        if opts.end_s is not None:
            mask &= t < opts.end_s
    n_filt = n_read - int(mask.sum())
    failed = mask & (output == 0)
    n_fail = int(failed.sum())
    mask &= ~failed
    invalid = mask & (prompt == 0)
    n_inv = int(invalid.sum())
    mask &= ~invalid

    idx = np.flatnonzero(mask)
    if opts.arrivals is not None and idx.size:
        t_new, note, m = arrivals.apply(opts.arrivals, idx.size, opts.seed, raw.has_arrivals)
        t = np.array(t, dtype=np.float64)
        t[idx] = t_new
        raw = replace(raw, notes=[*raw.notes, note], meta={**raw.meta, **m})
        if early and (opts.start_s is not None or opts.end_s is not None):
            inside = np.ones(idx.size, dtype=bool)
            if opts.start_s is not None:
                inside &= t_new >= opts.start_s
            if opts.end_s is not None:
                inside &= t_new < opts.end_s
            n_filt += int((~inside).sum())
            mask[idx[~inside]] = False
            idx = idx[inside]
    order = idx[np.argsort(t[idx], kind="stable")]
    first_n = opts.first_n
    if first_n is not None and order.size > first_n:
        n_filt += order.size - first_n
        order = order[:first_n]
        if n_fail and order.size:  # failed rows past the kept requests were never part of the replay
            if opts.arrivals is not None:  # (synthetic arrivals follow file order; failed rows drew none)
                n_fail = int((failed & (np.arange(n_read) <= order.max())).sum())
            else:
                n_fail = int((failed & (t <= t[order[-1]])).sum())
    if order.size == 0:
        # (a file is named by its path: "trace hdronly" alone did not say which file)
        label = source if source and source != name and not source.startswith(name + "(") else name
        raise _empty_error(label, opts, n_read, n_filt, n_fail, n_inv, raw.bad)

    arrival = t[order].astype(np.float64)
    raw_start = float(arrival[0])
    arrival -= raw_start
    factor = rescale_factor(arrival, opts, name)
    if factor != 1.0:
        arrival *= factor

    prompt = prompt[order].astype(np.int64)
    output = output[order].astype(np.int64)
    n_pclip = n_oclip = 0
    max_p = None if opts.max_prompt_tokens is None else int(opts.max_prompt_tokens)  # 1000.0 is 1000 (validated)
    max_o = None if opts.max_output_tokens is None else int(opts.max_output_tokens)
    if max_p is not None:
        n_pclip = int((prompt > max_p).sum())
        np.minimum(prompt, max_p, out=prompt)
    if max_o is not None:
        n_oclip = int((output > max_o).sum())
        np.minimum(output, max_o, out=output)

    blocks = None
    if raw.prefix_blocks is not None:
        bt = raw.prefix_block_tokens
        cap = None if max_p is None else -(-max_p // bt)
        blocks = tuple(raw.prefix_blocks[i][:cap] for i in order)  # cap None keeps all

    bad = raw.bad if raw.bad is not None else BadRows()
    info = {
        "num_rows_read": n_read + bad.total,
        "bad_rows": bad.by_kind(),
        "bad_rows_first": {k: bad.first[k] for k in bad.by_kind()},
        "num_invalid_dropped": n_inv,
        "num_prompt_clipped": n_pclip,
        "num_output_clipped": n_oclip,
        "raw_start_s": raw_start,
        "time_factor": factor,
    }
    info.update(raw.meta)
    info.update(meta or {})
    zero_note = f"{n_inv:,} row{'s' if n_inv != 1 else ''} with 0 prompt tokens dropped" if n_inv else None
    # (counted but never shown: --max-prompt-tokens 3000 cut 1,909 of azure-code's 8,819 prompts silently; trace audit)
    clip_note = "; ".join(f"{flag} {cap:,} clipped {n:,} of {arrival.size:,} {what}" for flag, cap, n, what in (
        ("--max-prompt-tokens", max_p, n_pclip, "prompts"), ("--max-output-tokens", max_o, n_oclip, "outputs")) if n) or None
    # (all at one instant is an error; one request was ignored silently: user audit)
    lone = f"rate={opts.rate:g} has no effect on a trace of one request" if opts.rate is not None and arrival.size == 1 else None
    notes = [x for x in (notice, bad.report(), zero_note, clip_note, lone, *raw.notes) if x]
    return Trace(
        name=name,
        arrival_s=arrival,
        prompt_tokens=prompt,
        output_tokens=output,
        prefix_blocks=blocks,
        prefix_block_tokens=raw.prefix_block_tokens if blocks is not None else 0,
        chunk_ids=None if raw.chunk_ids is None else tuple(raw.chunk_ids[i] for i in order),
        chunk_tokens=raw.chunk_tokens if raw.chunk_ids is not None else 0,
        source=source,
        num_failed_dropped=n_fail,
        num_filtered=n_filt,
        notice="; ".join(notes) if notes else None,
        meta=info,
    )


def without_rate(opts: LoadOptions) -> LoadOptions:
    """The options with ``rate`` removed (generators apply the rate themselves)."""
    return replace(opts, rate=None)


def shortfall_note(asked: int | None, got: int, flag: str) -> str | None:
    """What a user reads when ``asked`` requests (``flag``: the option as they wrote it) meet a
    trace of fewer, ``got`` (None when it has enough)."""
    if asked is None or got >= asked:
        return None
    return f"{flag} {asked:,}: the trace has {got:,} request{'' if got == 1 else 's'}; all are replayed"
