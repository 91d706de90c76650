"""Request traces: real datasets (BurstGPT, Azure LLM 2023, Mooncake), trace files and
synthetic generators, all returned as a columnar :class:`~kvsim.traces.base.Trace`.

Entry point: :func:`load_trace`. Names: :func:`list_traces`; file formats (BurstGPT, Azure,
Mooncake, Vidur, vllm bench serve JSON, ShareGPT, generic CSV/JSON lines with a column
mapping): :func:`list_formats` and docs/traces.md. Full BurstGPT download:
:func:`fetch_burstgpt`. Spec syntax and format detection: :mod:`kvsim.traces.registry`.
"""

from __future__ import annotations

import os
from pathlib import Path

from kvsim.traces.base import Trace
from kvsim.traces.fetch import (
    BURSTGPT_SHA256,
    BURSTGPT_SIZE,
    BURSTGPT_URL,
    burstgpt_cache_path,
    cache_root,
    fetch_burstgpt,
)
from kvsim.traces.pipeline import LoadOptions
from kvsim.traces.registry import DESCRIPTIONS, FORMATS, load
from kvsim.traces.summary import TraceSummary, summarize
from kvsim.traces.synthetic import BurstGPTParams, FixedParams, GammaParams, PoissonParams

__all__ = [
    "BURSTGPT_SHA256",
    "BURSTGPT_SIZE",
    "BURSTGPT_URL",
    "BurstGPTParams",
    "FixedParams",
    "GammaParams",
    "LoadOptions",
    "PoissonParams",
    "Trace",
    "TraceSummary",
    "burstgpt_cache_path",
    "cache_root",
    "fetch_burstgpt",
    "list_formats",
    "list_traces",
    "load_trace",
    "summarize",
]


def load_trace(
    spec: str | os.PathLike,
    *,
    rate: float | None = None,
    time_scale: float | None = None,
    limit: int | None = None,
    model: str | None = None,
    log_type: str | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    seed: int = 0,
    num_requests: int | None = None,
    cache_dir: Path | None = None,
    max_prompt_tokens: int | None = None,
    max_output_tokens: int | None = None,
    format: str | None = None,
    columns: str | None = None,
    time_unit: str | None = None,
    arrivals: str | None = None,
    strict: bool = False,
    tokenizer: str | os.PathLike | None = None,
) -> Trace:
    """Load a named trace, a trace file, or generate a synthetic one.

    Parameters
    ----------
    spec : a name from :func:`list_traces` (``burstgpt``, ``azure-conv``, ...), a synthetic
        generator with inline options (``synthetic-gamma:rate=5,cv=3,n=1000,prompt=512,output=128``),
        or a file path in one of :func:`list_formats` (detected from the header or content).
    rate : rescale arrivals to exactly this mean rate, requests/s ((N-1)/span); for synthetic
        traces, the generator's rate (overrides an inline ``rate``).
    time_scale : divide arrival times by this factor (100 = 100x faster); not with ``rate``.
    limit : keep the first N requests (after filters and drops).
    model : BurstGPT only: ``ChatGPT`` or ``GPT-4`` (case-insensitive).
    log_type : BurstGPT only: ``conversation`` or ``API``.
    start_s, end_s : keep rows with ``start_s <= t < end_s`` on the raw timestamps, seconds
        (BurstGPT ``Timestamp``; Azure: since the first row; Mooncake: ``timestamp``/1000).
    seed : seed of the ``numpy.random.Generator`` of synthetic traces (inline ``seed`` wins).
    num_requests : synthetic traces: number of requests (overrides inline ``n``); files: like ``limit``.
    cache_dir : where fetched datasets live (default ``$KVSIM_CACHE_DIR`` or ``~/.cache/kvsim``).
    max_prompt_tokens, max_output_tokens : clip lengths to these maxima (prefix blocks too).
    format : a file's format (:func:`list_formats`; default ``auto``: detected).
    columns : generic CSV/JSONL/JSON: ``"arrival=ts,prompt=input_len,output=output_len[,session=id]"``.
    time_unit : generic formats: unit of the arrival column, ``s`` (default), ``ms``, ``us``, ``ns``, ``iso``.
    arrivals : synthetic arrivals for a file's rows (or a named trace's), e.g. ``"poisson:rate=4"``,
        ``"gamma:rate=4,cv=2"``, ``"constant:rate=4"``, seeded by ``seed`` (or inline ``seed=``).
    strict : a bad row is an error instead of being dropped and counted.
    tokenizer : ShareGPT: a local ``tokenizer.json`` for exact token counts (optional package
        ``tokenizers``); without it, counts are approximated and the notice says so.

    Returns
    -------
    Trace sorted by arrival, first arrival at 0 s. Failed rows (0 output tokens) and
    invalid rows (0 prompt tokens) are dropped and counted (``num_failed_dropped``,
    ``meta["num_invalid_dropped"]``); bad rows by kind in ``meta["bad_rows"]`` and the notice.

    Raises
    ------
    TraceError : unknown name (with close matches), missing or malformed file (``file:line``),
        bad option, or no request left after filters.
    """
    opts = LoadOptions(
        rate=rate, time_scale=time_scale, limit=limit, model=model, log_type=log_type, start_s=start_s,
        end_s=end_s, seed=seed, num_requests=num_requests, cache_dir=cache_dir,
        max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens, format=format,
        columns=columns, time_unit=time_unit, arrivals=arrivals, strict=bool(strict),
        tokenizer=None if tokenizer is None else Path(tokenizer),
    ).validate()
    return load(os.fspath(spec), opts)


def list_traces() -> dict[str, str]:
    """Registered trace names -> one-line descriptions."""
    return dict(DESCRIPTIONS)


def list_formats() -> dict[str, str]:
    """Trace file formats (``--trace-format``) -> one-line descriptions."""
    return dict(FORMATS)
