"""``kvsim plan``: highest SLO-meeting rate, cost and GPU count per (hardware, method setting)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kvsim.commands.common import (
    ArrivalsOpt, CalibrationOpt, ColumnsOpt, ExpertOffloadOpt, GpuUtilOpt, JsonOpt, KvDtypeOpt, KvOffloadOpt, MaxOutputOpt,
    MaxPromptOpt, ModelOpt, PercentileOpt, SeedOpt, SloTbtOpt, SloTpotOpt, SloTtftOpt, StrictOpt, TbtMetricOpt, TimeUnitOpt,
    TokenizerOpt, TraceFormatOpt, TraceOpt, ReserveFullPromptOpt, WatermarkOpt,
    WeightDtypeOpt, check_watermark, console, print_json, resolve_slo, split_methods,
)
from kvsim.commands.tables import print_rows
from kvsim.errors import ConfigError

HwListOpt = Annotated[list[str], typer.Option("--hw", help="hardware to compare: comma list or repeated (a100,l20,4090)")]



def _positive(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{flag} must be a number > 0, got '{text}'") from None
    if not v > 0 or v == float("inf"):
        raise ConfigError(f"{flag} must be a number > 0, got '{text}'")
    from kvsim.plan.search import TARGET_RATE_RANGE  # lazy: CLI start-up

    lo, hi = TARGET_RATE_RANGE  # (a rate the search's trace can be rescaled to)
    if not lo <= v <= hi:
        raise ConfigError(f"{flag} must be between {lo:g} and {hi:g} requests/s, got '{text}'")
    return v


def plan_cmd(
    model: ModelOpt = "llama-3.1-8b",
    trace: TraceOpt = "synthetic-burstgpt",
    trace_format: TraceFormatOpt = None,
    columns: ColumnsOpt = None,
    time_unit: TimeUnitOpt = None,
    arrivals: ArrivalsOpt = None,
    strict: StrictOpt = False,
    tokenizer: TokenizerOpt = None,
    hw: HwListOpt = ["a100"],  # noqa: B006
    method: Annotated[list[str], typer.Option("--method", help="method specs: name, name:k=v,..., comma list, 'all'")] = ["full"],  # noqa: B006
    sweep: Annotated[list[str], typer.Option("--sweep", help="sweep a method param: METHOD.PARAM=V1,V2 (repeat for a grid)")] = [],  # noqa: B006
    slo_ttft: SloTtftOpt = "2s",
    slo_tpot: SloTpotOpt = None,
    slo_itl: Annotated[Optional[str], typer.Option("--slo-itl", metavar="DURATION", help="SLO: inter-token latency, every gap between tokens of all requests pooled (vLLM ITL), judged at --percentile [default: 100ms unless --slo-tpot is given]")] = None,
    percentile: PercentileOpt = "p99",
    slo_tbt: SloTbtOpt = None,
    tbt_metric: TbtMetricOpt = None,
    num_requests: Annotated[int, typer.Option("--num-requests", "-n", min=1, help="requests per simulation")] = 500,
    seed: SeedOpt = 0,
    max_prompt_tokens: MaxPromptOpt = None,
    max_output_tokens: MaxOutputOpt = None,
    target_rate: Annotated[Optional[str], typer.Option("--target-rate", help="req/s to sustain: find the fewest GPUs")] = None,
    tp: Annotated[Optional[int], typer.Option("--tp", min=1, help="TP per replica (max-rate mode, --disagg-instances) [default: 1]")] = None,
    replicas: Annotated[Optional[int], typer.Option("--replicas", min=1, help="replicas behind the router (max-rate mode) [default: 1]")] = None,
    tp_choices: Annotated[Optional[str], typer.Option("--tp-choices", help="TP degrees tried with --target-rate [default: 1,2,4,8]")] = None,
    max_replicas: Annotated[Optional[int], typer.Option("--max-replicas", min=1, help="replica cap with --target-rate [default: 64]")] = None,
    router: Annotated[str, typer.Option("--router", help="round-robin, least-outstanding, prefix-aware")] = "least-outstanding",
    disagg_instances: Annotated[Optional[int], typer.Option("--disagg-instances", min=2, max=64, help="aggregated vs disaggregated: search every P:D with P + D = N instances (and N aggregated replicas) of --tp GPUs")] = None,
    kv_link: Annotated[Optional[str], typer.Option("--kv-link", help="--disagg-instances: link carrying the KV, one per GPU (ib-ndr, eth-100g, ... or a link YAML) [default: ib-ndr]")] = None,
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
    reserve_full_prompt: ReserveFullPromptOpt = False,
    kv_offload: KvOffloadOpt = None,
    calibration: CalibrationOpt = None,
    expert_offload: ExpertOffloadOpt = None,
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
    from kvsim.hardware import DEFAULT_KV_LINK
    from kvsim.plan.search import (PLAN_GLOBS, PlanRequest, check_search_mode, expand_sweeps, run_plan, save_plan,
                                   whole_numbers)
    from kvsim.plan.schema import SearchOptions, TraceSpec
    from kvsim.plan.sweep import default_cache_dir

    check_search_mode(target_rate is not None, tp is not None or replicas is not None,
                      tp_choices is not None or max_replicas is not None,
                      ("--tp and --replicas", "--target-rate", "--tp-choices and --max-replicas"))
    tp, replicas = tp or 1, replicas or 1
    tp_choices = "1,2,4,8" if tp_choices is None else tp_choices  # (an empty text is an error: whole_numbers)
    max_replicas = max_replicas or 64
    slo = resolve_slo("plan", slo_ttft, slo_tpot, slo_itl, percentile, slo_tbt, tbt_metric)
    if slo is None or (slo.tpot_s is None and slo.itl_s is None):  # the default token bound: p99 ITL <= 100 ms
        from kvsim.slo import PLAN_DEFAULT_ITL_S  # lazy: CLI start-up

        slo = resolve_slo("plan", slo_ttft, None, f"{PLAN_DEFAULT_ITL_S * 1e3:g}ms", percentile)
    check_watermark(watermark)
    offload = None
    if kv_offload is not None:
        # lazy: CLI start-up
        from kvsim.sim.kv_tiers import parse_offload

        offload = parse_offload(kv_offload).model_dump()
    if expert_offload is not None:  # before the search: a bad option is one error, not a failed row per config
        # lazy: CLI start-up
        from kvsim.costmodel.expert_offload_option import parse_expert_offload
        from kvsim.models import load_model

        parse_expert_offload(expert_offload, load_model(model), tp=tp)
    hws = [h.strip() for v in hw for h in v.split(",") if h.strip()]
    if not hws:
        raise ConfigError("--hw: no hardware given")
    req = PlanRequest(
        model=model, hws=hws, methods=expand_sweeps(split_methods(method), sweep),
        trace=TraceSpec(spec=trace, num_requests=num_requests, seed=seed, max_prompt_tokens=max_prompt_tokens,
                        max_output_tokens=max_output_tokens, format=trace_format, columns=columns,
                        time_unit=time_unit, arrivals=arrivals, strict=strict, tokenizer=tokenizer),
        slo=slo, target_rate_per_s=_positive(target_rate, "--target-rate"), tp=tp, replicas=replicas,
        tp_choices=whole_numbers(tp_choices, "--tp-choices"), max_replicas=max_replicas, router=router,
        weight_dtype=weight_dtype, kv_dtype=kv_dtype, gpu_memory_utilization=gpu_memory_utilization,
        calibration=calibration, expert_offload=expert_offload, search=SearchOptions(rel_tol=rel_tol),
        sim_options={"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
                     "chunked_prefill": chunked_prefill, **({} if watermark is None else {"watermark": watermark}),
                     **({} if offload is None else {"kv_offload": offload}),
                     **({"reserve_full_prompt": True} if reserve_full_prompt else {})},
    )
    if disagg_instances is not None:
        if target_rate is not None or out is not None or replicas != 1:  # (--replicas 1 said: the same layout)
            raise ConfigError("--disagg-instances searches a fixed number of instances: drop --target-rate, --replicas and --out")
        _plan_disagg(req, disagg_instances, kv_link or DEFAULT_KV_LINK, as_json)
        return
    if kv_link is not None:
        raise ConfigError("--kv-link is the link of --disagg-instances: give both, or drop --kv-link")
    if self_contained and out is None:
        raise ConfigError("--self-contained shapes the report written into --out: give --out DIR too")
    cache = None if no_cache else (default_cache_dir() if cache_dir is None else Path(cache_dir))
    # files the plan reads: never replaced by its outputs, even with --force
    run_inputs = (trace, model, calibration, kv_link, *hws)
    # before the search: a bad output path must not cost the simulations
    if cache is not None:
        check_writable_dir(cache if str(cache_dir) != "" else "", "--cache-dir")
    if out is not None:
        # lazy: CLI start-up (plotly)
        from kvsim.plan.report import PLOTLY_JS

        names = ["plan.json", "report.html", *([] if self_contained else [PLOTLY_JS])]
        check_tree(out, names, flag="--out", force=force, owned_globs=PLAN_GLOBS, inputs=run_inputs)
    plan = run_plan(req, jobs=jobs, executor=executor, cache_dir=cache, progress=progress and not as_json)
    if out is not None:
        # lazy: CLI start-up
        from kvsim.plan.report import page_files, plan_report_html

        page = plan_report_html(plan, self_contained=self_contained)
        save_plan(plan, out, extra=page_files("report.html", page, self_contained), force=force, inputs=run_inputs)
        out = Path(out)
    # lazy: CLI start-up (pydantic schemas of the plan, ~0.2 s)
    from kvsim.plan.notes import rate_notes, setup_notes
    from kvsim.plan.schema import STEADY_SPAN_OVER_E2EL

    for note in setup_notes(plan):
        print(f"note: {note}", file=sys.stderr)
    if as_json:
        from kvsim.plan.search import plan_json  # lazy: CLI start-up

        print_json(plan_json(plan))
    else:
        _print_table(plan)
        sims = sum(c.evaluations for c in plan.configs)
        hits = sum(c.cache_hits for c in plan.configs)
        n = len(plan.configs)
        print(f"{n} configuration{'' if n == 1 else 's'}, {sims} simulation{'' if sims == 1 else 's'} run, {hits} cached, {plan.wall_s:.1f} s"
              + (f"; report: {out / 'report.html'}" if out is not None else ""), file=sys.stderr)
    for note in rate_notes(plan):
        print(f"note: {note}", file=sys.stderr)
    why = plan.nothing_runs()  # nothing could even be built
    if why is not None:
        raise ConfigError(why)
    if not any(c.runs for c in plan.configs):
        raise ConfigError("no configuration met the SLO at any rate (the note of each row says why)")
    if plan.target_rate_per_s is not None and not any(c.target is not None and c.target.replicas for c in plan.configs):
        raise ConfigError(f"no configuration sustains the target {plan.target_rate_per_s:g} req/s within the SLO "
                          "(the note of each row says why)")
    if plan.target_rate_per_s is not None and not any(c.target is not None and c.target.verified for c in plan.configs):
        raise ConfigError(f"the target {plan.target_rate_per_s:g} req/s was met only by checks too short to stand by "
                          f"(fewer than {STEADY_SPAN_OVER_E2EL:g} request lifetimes: the replicas drained a burst): the GPU "
                          "counts shown are lower bounds; a file trace needs more requests, a synthetic one a lower target")


def _plan_disagg(req, instances: int, kv_link: str, as_json: bool) -> None:
    """Aggregated vs every P:D layout per (hardware, method) (kvsim.plan.disagg_search)."""
    # lazy: CLI start-up
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.hardware import load_link
    from kvsim.methods import make_method
    from kvsim.plan.disagg_search import layout_row, plan_layouts
    from kvsim.plan.schema import STEADY_SPAN_OVER_E2EL, fmt_lifetimes
    from kvsim.plan.evaluate import load_plan_trace
    from kvsim.plan.notes import host_share_note
    from kvsim.sim.kv_tiers import UNUSED_NOTE
    from kvsim.sim.config import SimConfig

    link = load_link(kv_link)
    trace = load_plan_trace(req.trace)
    cfg = SimConfig(**req.sim_options)
    rows, host_notes = [], []
    for hw in req.hws:
        dep = build_deployment(hw, req.model, tp=req.tp, weight_dtype=req.weight_dtype, kv_dtype=req.kv_dtype,
                               gpu_memory_utilization=req.gpu_memory_utilization, calibration=req.calibration,
                               expert_offload=req.expert_offload)
        for spec in req.methods:
            try:
                m = make_method(spec, dep)
                found = plan_layouts(dep, m, trace, link, req.slo, instances, cfg, req.router, req.search.rel_tol)
            except ConfigError as err:  # e.g. the method does not apply to this model or GPU
                if len(req.methods) * len(req.hws) == 1:
                    raise
                print(f"note: skipping {hw} {spec}: {err}", file=sys.stderr)
                continue
            rows.extend(layout_row(dep.system.name, m.label(), r, req.slo) for r in found)
            host_notes.extend(host_share_note(dep, m, bool(req.sim_options.get("kv_offload"))))
    if not rows:
        raise ConfigError("no (hardware, method) could be planned")
    for note in dict.fromkeys(host_notes):
        print(f"note: {note}", file=sys.stderr)
    tiers_used = any(r["note"] and "prefix reuse" in r["note"] for r in rows)  # (a note says how the KV offload tiers were used)
    if req.sim_options.get("kv_offload") and not tiers_used and any(r["max_rate_per_s"] > 0 for r in rows):
        print(f"note: {UNUSED_NOTE}", file=sys.stderr)
    if as_json:
        print_json(rows)
        return
    keys = [k for k in rows[0] if k not in ("prefill_instances", "decode_instances", "capped", "evaluations", "wall_s",
                                            "transient", "span_over_e2el")
            and (k != "note" or any(r["note"] for r in rows))]
    cells_of = []
    for r in rows:
        cells = ["-" if r[k] is None else f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        if r["capped"]:  # a lower bound: the search stopped while still feasible
            cells = [f">= {c}" if k in ("max_rate_per_s", "rate_per_gpu_per_s") else c for k, c in zip(keys, cells)]
        cells_of.append(cells)
    pct = req.slo.percentile  # (the table's words; --json keeps the keys)
    names = {"hw": "hardware", "layout": "layout", "method": "method", "gpus": "GPUs", "max_rate_per_s": "max rate (req/s)",
             "rate_per_gpu_per_s": "req/s per GPU", "throughput_output_tok_s": "output tok/s", "note": "note",
             **{f"{m}_{pct}_s": f"{m.upper()} {pct} (s)" for m in ("ttft", "tpot", "itl")}}
    headers = [names.get(k, k) for k in keys]
    print_rows(console(), f"{req.model} on {trace.name} ({len(trace)} req), {instances} instances x TP{req.tp}, "
               f"KV link {link.name}: SLO {req.slo.describe()}", headers, cells_of, left=("hardware", "method", "layout"),
               heading=3)
    for r in rows:
        if r["capped"]:
            print(f"note: {r['hw']} {r['method']} {r['layout']}: still meets the SLO at the search's top rate (every "
                  "request arriving at once); the trace is too short to load it: raise --num-requests", file=sys.stderr)
        elif r["transient"]:
            print(f"note: {r['hw']} {r['method']} {r['layout']}: at {r['max_rate_per_s']:.3g} req/s the {len(trace):,} "
                  f"requests last {fmt_lifetimes(r['span_over_e2el'])}x their mean E2E latency (fewer than {STEADY_SPAN_OVER_E2EL:g}): "
                  "it drained a burst, so its max rate is high and it is ranked after layouts whose rate stands; "
                  "raise --num-requests", file=sys.stderr)
    if not any(r["max_rate_per_s"] > 0 for r in rows):
        raise ConfigError("no layout met the SLO at any rate")


def _print_table(plan) -> None:
    # lazy: CLI start-up
    from kvsim.plan.report import plan_columns, recommendation_rows

    title = (f"{plan.model} on {plan.trace_name} ({plan.trace_requests or plan.trace.num_requests} req): "
             f"SLO {plan.slo.describe()}" + (f", target {plan.target_rate_per_s:g} req/s" if plan.target_rate_per_s else ""))
    cols = plan_columns(plan)
    con = console()
    print_rows(con, title, [h for _, h in cols], [[r[k] for k, _ in cols] for r in recommendation_rows(plan)],
               left=("hardware", "method", "note"), heading=3)
    for g, p in sorted({(c.gpu_name, c.price) for c in plan.configs if c.price}, key=lambda x: x[0]):
        con.print(f"[dim]price {g}: ${p.usd_per_hour:.2f}/GPU-hour, {p.dated_source}[/dim]", overflow="fold")
