"""``kvsim plan``: highest SLO-meeting rate, cost and GPU count per (hardware, method setting)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kvsim.commands.common import (
    ArrivalsOpt, CalibrationOpt, ColumnsOpt, GpuUtilOpt, JsonOpt, KvDtypeOpt, ModelOpt, StrictOpt, TimeUnitOpt,
    TokenizerOpt, TraceFormatOpt, WatermarkOpt, WeightDtypeOpt, check_watermark, print_json, split_methods,
)
from kvsim.errors import ConfigError

HwListOpt = Annotated[list[str], typer.Option("--hw", help="hardware to compare: comma list or repeated (a100,l20,4090)")]


def _ints(text: str, flag: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} expects a comma list of whole numbers, got '{text}'") from None
    if not out or min(out) < 1:
        raise ConfigError(f"{flag} expects whole numbers >= 1, got '{text}'")
    return out


def _positive(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a number > 0, got '{text}'") from None
    if not v > 0 or v == float("inf"):
        raise ConfigError(f"{flag} must be a number > 0, got '{text}'")
    return v


def plan_cmd(
    model: ModelOpt = "llama-3.1-8b",
    trace: Annotated[str, typer.Option("--trace", help="trace name, file or synthetic spec (BurstGPT-modelled by default)")] = "synthetic-burstgpt",
    trace_format: TraceFormatOpt = None,
    columns: ColumnsOpt = None,
    time_unit: TimeUnitOpt = None,
    arrivals: ArrivalsOpt = None,
    strict: StrictOpt = False,
    tokenizer: TokenizerOpt = None,
    hw: HwListOpt = ["a100"],  # noqa: B006
    method: Annotated[list[str], typer.Option("--method", help="method specs: name, name:k=v,..., comma list, 'all'")] = ["full"],  # noqa: B006
    sweep: Annotated[list[str], typer.Option("--sweep", help="sweep a method param: METHOD.PARAM=V1,V2 (repeat for a grid)")] = [],  # noqa: B006
    slo_ttft: Annotated[str, typer.Option("--slo-ttft", help="TTFT objective, seconds")] = "2",
    slo_tbt: Annotated[str, typer.Option("--slo-tbt", help="time-between-tokens objective, seconds")] = "0.1",
    percentile: Annotated[str, typer.Option("--percentile", help="percentile the SLO applies to: p50, p90, p99")] = "p99",
    tbt_metric: Annotated[str, typer.Option("--tbt-metric", help="tbt: pooled inter-token gaps (ITL); tpot: per-request mean")] = "tbt",
    num_requests: Annotated[int, typer.Option("--num-requests", min=1, help="requests per simulation")] = 500,
    seed: Annotated[int, typer.Option("--seed", min=0, help="seed of synthetic traces")] = 0,
    max_prompt_tokens: Annotated[Optional[int], typer.Option("--max-prompt-tokens", min=1, help="clip prompts")] = None,
    max_output_tokens: Annotated[Optional[int], typer.Option("--max-output-tokens", min=1, help="clip outputs")] = None,
    target_rate: Annotated[Optional[str], typer.Option("--target-rate", help="req/s to sustain: find the fewest GPUs")] = None,
    tp: Annotated[int, typer.Option("--tp", min=1, help="TP per replica (max-rate mode)")] = 1,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="replicas behind the router (max-rate mode)")] = 1,
    tp_choices: Annotated[str, typer.Option("--tp-choices", help="TP degrees tried with --target-rate")] = "1,2,4,8",
    max_replicas: Annotated[int, typer.Option("--max-replicas", min=1, help="replica cap with --target-rate")] = 64,
    router: Annotated[str, typer.Option("--router", help="round-robin, least-outstanding, prefix-aware")] = "least-outstanding",
    rel_tol: Annotated[float, typer.Option("--rel-tol", min=0.001, max=0.5, help="relative tolerance of the rate search")] = 0.05,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", min=1, max=1_000_000, help="engine: running sequences per step")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens", min=1, max=2**31 - 1,
                                                        help="engine: token budget per step")] = 8192,
    chunked_prefill: Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill",
                                                  help="engine: chunked prefill (vLLM v1)")] = True,
    weight_dtype: WeightDtypeOpt = "auto",
    kv_dtype: KvDtypeOpt = "auto",
    gpu_memory_utilization: GpuUtilOpt = 0.9,
    watermark: WatermarkOpt = None,
    kv_offload: Annotated[Optional[str], typer.Option("--kv-offload", help="engine: KV tiers below the GPU prefix cache per replica, host=64GiB[,nvme=1TiB] (docs/kv-tiers.md); off by default")] = None,
    calibration: CalibrationOpt = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="parallel workers (default: CPU count)")] = None,
    executor: Annotated[str, typer.Option("--executor", help="process, serial or ray")] = "process",
    cache_dir: Annotated[Optional[str], typer.Option("--cache-dir", help="result cache (default ~/.cache/kvsim/sweeps)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="do not read or write the result cache")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help="directory for plan.json, configs/*.json and report.html")] = None,
    force: Annotated[bool, typer.Option("--force", help="--out: replace or remove files there that kvsim did not write")] = False,
    self_contained: Annotated[bool, typer.Option("--self-contained", help="--out: report.html with plotly.js inside (~5 MB)")] = False,
    as_json: JsonOpt = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="progress bar on stderr")] = True,
) -> None:
    """Highest request rate meeting the SLO per (hardware, method), cost per M tokens, fewest GPUs for a target."""
    # lazy: CLI start-up
    from kvsim.fileio import check_tree, check_writable_dir
    from kvsim.plan.search import PLAN_GLOBS, PlanRequest, expand_sweeps, run_plan, save_plan
    from kvsim.plan.schema import SearchOptions, TraceSpec, parse_slo
    from kvsim.plan.sweep import default_cache_dir

    slo = parse_slo(slo_ttft, slo_tbt, percentile, tbt_metric)
    check_watermark(watermark)
    offload = None
    if kv_offload is not None:
        # lazy: CLI start-up
        from kvsim.sim.kv_tiers import parse_offload

        offload = parse_offload(kv_offload).model_dump()
    hws = [h.strip() for v in hw for h in v.split(",") if h.strip()]
    if not hws:
        raise ConfigError("--hw: no hardware given")
    req = PlanRequest(
        model=model, hws=hws, methods=expand_sweeps(split_methods(method), sweep),
        trace=TraceSpec(spec=trace, num_requests=num_requests, seed=seed, max_prompt_tokens=max_prompt_tokens,
                        max_output_tokens=max_output_tokens, format=trace_format, columns=columns,
                        time_unit=time_unit, arrivals=arrivals, strict=strict, tokenizer=tokenizer),
        slo=slo, target_rate_per_s=_positive(target_rate, "--target-rate"), tp=tp, replicas=replicas,
        tp_choices=_ints(tp_choices, "--tp-choices"), max_replicas=max_replicas, router=router,
        weight_dtype=weight_dtype, kv_dtype=kv_dtype, gpu_memory_utilization=gpu_memory_utilization,
        calibration=calibration, search=SearchOptions(rel_tol=rel_tol),
        sim_options={"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
                     "chunked_prefill": chunked_prefill, **({} if watermark is None else {"watermark": watermark}),
                     **({} if offload is None else {"kv_offload": offload})},
    )
    cache = None if no_cache else (default_cache_dir() if cache_dir is None else Path(cache_dir))
    # before the search: a bad output path must not cost the simulations
    if cache is not None:
        check_writable_dir(cache if str(cache_dir) != "" else "", "--cache-dir")
    if out is not None:
        # lazy: CLI start-up (plotly)
        from kvsim.plan.report import PLOTLY_JS

        names = ["plan.json", "report.html", *([] if self_contained else [PLOTLY_JS])]
        check_tree(out, names, flag="--out", force=force, owned_globs=PLAN_GLOBS)
    plan = run_plan(req, jobs=jobs, executor=executor, cache_dir=cache, progress=progress and not as_json)
    if out is not None:
        # lazy: CLI start-up
        from kvsim.plan.report import page_files, plan_report_html

        page = plan_report_html(plan, self_contained=self_contained)
        save_plan(plan, out, extra=page_files("report.html", page, self_contained), force=force)
        out = Path(out)
    if plan.trace_notice:
        print(f"note: {plan.trace_notice}", file=sys.stderr)
    if as_json:
        print_json(plan.model_dump(mode="json"))
    else:
        _print_table(plan)
        sims = sum(c.evaluations for c in plan.configs)
        hits = sum(c.cache_hits for c in plan.configs)
        print(f"{len(plan.configs)} configurations, {sims} simulations run, {hits} cached, {plan.wall_s:.1f} s"
              + (f"; report: {out / 'report.html'}" if out is not None else ""), file=sys.stderr)
    if not any(c.runs for c in plan.configs):
        raise ConfigError("no configuration met the SLO at any rate (the note of each row says why)")


def _print_table(plan) -> None:
    # lazy: CLI start-up
    from rich.console import Console
    from rich.table import Table

    from kvsim.plan.report import _COLUMNS, column_titles, recommendation_rows

    slo = plan.slo
    title = (f"{plan.model} on {plan.trace_name} ({plan.trace_requests or plan.trace.num_requests} req): SLO {slo.percentile} TTFT <= "
             f"{slo.ttft_s:g} s, {slo.tbt_metric.upper()} <= {slo.tbt_s:g} s"
             + (f", target {plan.target_rate_per_s:g} req/s" if plan.target_rate_per_s else ""))
    table = Table(title=title, title_justify="left")
    for (key, _), head in zip(_COLUMNS, column_titles(plan)):
        table.add_column(head, justify="left" if key in ("hardware", "method", "note") else "right")
    for r in recommendation_rows(plan):
        table.add_row(*(r[k] for k, _ in _COLUMNS))
    console = Console(width=max(160, Console().width))
    console.print(table)
    for g, p in sorted({(c.gpu_name, c.price) for c in plan.configs if c.price}, key=lambda x: x[0]):
        console.print(f"[dim]price {g}: ${p.usd_per_hour:.2f}/GPU-hour, {p.source} ({p.date})[/dim]")
