"""``kvsim trace ...``: list, inspect and fetch request traces (thin layer over kvsim.traces).

Errors are raised as :class:`~kvsim.errors.KvsimError`; the root CLI prints them and exits 1.
"""

from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from kvsim.commands.common import (
    DURATION_HELP, ArrivalsOpt, ColumnsOpt, LogTypeOpt, MaxOutputOpt, MaxPromptOpt, NumRequestsOpt, RateOpt, SeedOpt,
    StrictOpt, TimeScaleOpt, TimeUnitOpt, TokenizerOpt, TraceFormatOpt, TraceModelOpt, console, print_json,
)
from kvsim.errors import ConfigError
from kvsim.commands.tables import print_grid
from kvsim.durations import parse_duration_s
from kvsim.traces import BURSTGPT_URL, fetch_burstgpt, list_formats, list_traces, load_trace, summarize
from kvsim.traces.fetch import BURSTGPT_FILE, burstgpt_cache_path, check_timeout

app = typer.Typer(
    help="Request traces: list the built-in ones, show statistics, fetch the full BurstGPT file.",
    no_args_is_help=True,
)


class Dataset(str, Enum):
    """Datasets that can be downloaded."""

    burstgpt = "burstgpt"


@app.command("list")
def list_cmd() -> None:
    """List trace names with a one-line description each."""
    print_grid(console(), list(list_traces().items()))


@app.command("formats")
def formats_cmd() -> None:
    """List the trace file formats `--trace-format` accepts (examples in docs/traces.md)."""
    print_grid(console(), list(list_formats().items()))


def _progress():
    """A progress callback printing MB done to a terminal's stderr (None when not a TTY)."""
    if not sys.stderr.isatty():
        return None
    state = {"shown": -1}

    def show(done: int, total: int | None) -> None:
        mb = done // (1 << 20)
        if mb != state["shown"]:
            state["shown"] = mb
            of = f" / {total / (1 << 20):.0f}" if total else ""
            end = "\n" if total and done >= total else ""
            sys.stderr.write(f"\r  {mb}{of} MiB{end}")
            sys.stderr.flush()

    return show


@app.command()
def fetch(
    dataset: Annotated[Dataset, typer.Argument(case_sensitive=False, help="dataset to download")],
    dest: Annotated[Path | None, typer.Option("--dest", help="directory (default: $KVSIM_CACHE_DIR/burstgpt)")] = None,
    url: Annotated[str, typer.Option("--url", help="download URL (a mirror of BurstGPT_1.csv)")] = BURSTGPT_URL,
    timeout: Annotated[str, typer.Option("--timeout", metavar="DURATION", help=f"network timeout ({DURATION_HELP})")] = "60s",
    force: Annotated[bool, typer.Option("--force", help="download even if a verified copy exists")] = False,
) -> None:
    """Download BurstGPT_1.csv (52 MB), verify size and sha256, and store it where
    `--trace burstgpt` finds it."""
    timeout_s = parse_duration_s(timeout, "--timeout")
    check_timeout(timeout_s)
    target = (dest.expanduser() if dest else burstgpt_cache_path().parent) / BURSTGPT_FILE
    before = target.stat().st_mtime_ns if target.is_file() else None
    if before is None or force:
        typer.echo(f"downloading {url} -> {target}", err=True)
    path = fetch_burstgpt(dest, url=url, timeout_s=timeout_s, force=force, progress=_progress())
    if before is not None and not force and path.stat().st_mtime_ns == before:
        typer.echo(f"already present and verified: {path}")
    else:
        typer.echo(f"wrote {path} ({path.stat().st_size:,} bytes, size and sha256 verified)")


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x == int(x):
        return f"{int(x):,}"
    return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.1f}"


@app.command()
def info(
    trace: Annotated[str, typer.Argument(help="trace name, NAME:key=value,... or file path")],
    rate: RateOpt = None,
    time_scale: TimeScaleOpt = None,
    num_requests: NumRequestsOpt = None,
    trace_model: TraceModelOpt = None,
    log_type: LogTypeOpt = None,
    start_s: Annotated[float | None, typer.Option(help="keep raw timestamps >= this, s")] = None,
    end_s: Annotated[float | None, typer.Option(help="keep raw timestamps < this, s")] = None,
    seed: SeedOpt = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="data cache (default $KVSIM_CACHE_DIR or ~/.cache/kvsim)")] = None,
    max_prompt_tokens: MaxPromptOpt = None,
    max_output_tokens: MaxOutputOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, hidden=True, help="older spelling of --num-requests")] = None,
    model: Annotated[str | None, typer.Option("--model", hidden=True, help="older spelling of --trace-model")] = None,
    trace_format: TraceFormatOpt = None,
    columns: ColumnsOpt = None,
    time_unit: TimeUnitOpt = None,
    arrivals: ArrivalsOpt = None,
    strict: StrictOpt = False,
    tokenizer: TokenizerOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Load a trace and print requests, span, mean rate and token-length statistics."""
    if limit is not None and num_requests is not None:
        raise ConfigError("give --num-requests or its older spelling --limit, not both")
    if model is not None and trace_model is not None:
        raise ConfigError("give --trace-model or its older spelling --model, not both")
    tr = load_trace(
        trace, rate=rate, time_scale=time_scale, limit=limit, model=trace_model or model, log_type=log_type,
        start_s=start_s, end_s=end_s, seed=seed, num_requests=num_requests, cache_dir=cache_dir,
        max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens, format=trace_format,
        columns=columns, time_unit=time_unit, arrivals=arrivals, strict=strict, tokenizer=tokenizer,
    )
    s = summarize(tr)
    if as_json:
        print_json(s.to_dict())
        return
    rows = [
        ("trace", f"{s.name}  ({s.source})" + (f", format {s.format}" if s.format else "")),
        ("requests", f"{s.requests:,}"),
        ("span", f"{_fmt(s.span_s)} s"),
        ("mean rate", "- (all requests at one instant)" if s.mean_rate_per_s is None else f"{_fmt(s.mean_rate_per_s)} req/s"),
        ("arrival CV", _fmt(s.interarrival_cv)),
    ]
    for label, st in (("prompt tokens", s.prompt), ("output tokens", s.output)):
        rows.append((label, f"mean {_fmt(st.mean)}  p50 {_fmt(st.p50)}  p99 {_fmt(st.p99)}  max {st.max:,}"))
    rows += [
        ("failed dropped", f"{s.num_failed_dropped:,}"),
        ("0-prompt dropped", f"{s.num_zero_prompt_dropped:,}"),
        ("filtered out", f"{s.num_filtered:,}"),
        ("bad rows", ", ".join(f"{k} {v:,}" for k, v in s.bad_rows.items()) + " (dropped)" if s.bad_rows else "0"),
        ("prefix blocks", f"yes ({tr.prefix_block_tokens} tokens/block)" if s.has_prefix_blocks else "no"),
    ]
    if s.sessions:
        rows.append(("sessions", s.sessions))
    if s.token_counts:
        rows.append(("token counts", s.token_counts))
    print_grid(console(), [(label, str(value)) for label, value in rows])
    if s.notice:
        typer.echo(f"notice: {s.notice}")
