"""``kvsim simulate``: replay a trace through the serving simulator (thin: parse, load, simulate, render).

Defaults work on a fresh install: ``kvsim simulate --hw a100 --method magicpig --trace burstgpt``
uses Llama-3.1-8B, the bundled BurstGPT sample (or the full file after ``kvsim trace fetch
burstgpt``) at its own arrival times, and vLLM's engine defaults (256 sequences, 8192-token
chunked prefill, recompute preemption, prefix caching, 90% GPU memory).
"""

from __future__ import annotations

import csv
import io
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from kvsim.costmodel.deployment import build_deployment
from kvsim.commands.common import (
    ArrivalsOpt, CalibrationOpt, ColumnsOpt, ExpertOffloadOpt, GpuUtilOpt, HwOpt, JsonOpt, KvDtypeOpt, LogTypeOpt,
    MethodOpt, ModelOpt, NumRequestsOpt, PercentileOpt, RateOpt, SeedOpt, SloItlOpt, SloTbtOpt, SloTpotOpt, SloTtftOpt,
    StrictOpt, TimeScaleOpt, TimeUnitOpt, TokenizerOpt, TpOpt, TraceFormatOpt, TraceModelOpt, TraceOpt, WatermarkOpt,
    WeightDtypeOpt, check_watermark, console, fmt_bytes, fmt_num, fmt_s, print_json,
    resolve_slo, split_methods,
)
from kvsim.commands.tables import print_pairs, print_rows
from kvsim.errors import ConfigError
from kvsim.fileio import check_tree, write_tree
from kvsim.jsonutil import dumps_strict
from kvsim.slo import fmt_duration, verdict as slo_verdict


class Preemption(str, Enum):
    recompute = "recompute"
    swap = "swap"


def simulate_cmd(
    hw: HwOpt = "a100",
    model: ModelOpt = "llama-3.1-8b",
    method: MethodOpt = ["full"],  # noqa: B006 (typer needs a literal default)
    trace: TraceOpt = "burstgpt",
    rate: RateOpt = None,
    time_scale: TimeScaleOpt = None,
    num_requests: NumRequestsOpt = None,
    trace_model: TraceModelOpt = None,
    log_type: LogTypeOpt = None,
    trace_format: TraceFormatOpt = None,
    columns: ColumnsOpt = None,
    time_unit: TimeUnitOpt = None,
    arrivals: ArrivalsOpt = None,
    strict: StrictOpt = False,
    tokenizer: TokenizerOpt = None,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", min=1, max=1_000_000, help="running sequences per step (vLLM)")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens", min=1, max=2**31 - 1, help="token budget per step (vLLM)")] = 8192,
    chunked_prefill: Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill", help="Sarathi-style chunked prefill (vLLM v1); off: vLLM v0 prefill-first steps")] = True,
    preemption: Annotated[Preemption, typer.Option("--preemption", help="what happens to a preempted request's KV")] = Preemption.recompute,
    prefix_caching: Annotated[bool, typer.Option("--prefix-caching/--no-prefix-caching", help="reuse cached prompt blocks (traces with prefix ids, e.g. Mooncake)")] = True,
    kv_offload: Annotated[Optional[str], typer.Option("--kv-offload", help="KV tiers below the GPU prefix cache (vLLM v1 CPU offloading), per replica: host=64GiB[,nvme=1TiB][,drive=pm9a3]; off by default (docs/kv-tiers.md)")] = None,
    gpu_memory_utilization: GpuUtilOpt = 0.9,
    watermark: WatermarkOpt = None,
    tp: TpOpt = 1,
    disagg: Annotated[Optional[str], typer.Option("--disagg", help="disaggregated prefill/decode: P:D prefill and decode instances (e.g. 1:1; docs/disaggregation.md)")] = None,
    prefill_hw: Annotated[Optional[str], typer.Option("--prefill-hw", help="--disagg: hardware of the prefill instances (default --hw)")] = None,
    decode_hw: Annotated[Optional[str], typer.Option("--decode-hw", help="--disagg: hardware of the decode instances (default --hw)")] = None,
    prefill_tp: Annotated[Optional[int], typer.Option("--prefill-tp", min=1, help="--disagg: TP of each prefill instance (default --tp)")] = None,
    decode_tp: Annotated[Optional[int], typer.Option("--decode-tp", min=1, help="--disagg: TP of each decode instance (default --tp)")] = None,
    kv_link: Annotated[str, typer.Option("--kv-link", help="--disagg: link carrying the KV, one per GPU (ib-ndr, ib-hdr, eth-100g, eth-200g, nvlink4, ... or a link YAML)")] = "ib-ndr",
    weight_dtype: WeightDtypeOpt = "auto",
    kv_dtype: KvDtypeOpt = "auto",
    calibration: CalibrationOpt = None,
    expert_offload: ExpertOffloadOpt = None,
    slo_ttft: SloTtftOpt = None,
    slo_tpot: SloTpotOpt = None,
    slo_itl: SloItlOpt = None,
    percentile: PercentileOpt = "p99",
    slo_tbt: SloTbtOpt = None,
    seed: SeedOpt = 0,
    out: Annotated[Optional[str], typer.Option("--out", help="directory: manifest.json and one folder per method (summary.json, requests.csv, timeline.csv/json; docs/outputs.md)")] = None,
    report: Annotated[Optional[str], typer.Option("--report", help="write an HTML report comparing the methods (plotly.js beside it)")] = None,
    self_contained: Annotated[bool, typer.Option("--self-contained", help="--report: one HTML file with plotly.js inside (~5 MB)")] = False,
    force: Annotated[bool, typer.Option("--force", help="--out: replace or remove files there that kvsim did not write")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Replay a request trace through a vLLM-like engine: TTFT, TPOT, ITL, E2EL, throughput, memory per KV method."""
    # lazy: CLI start-up
    from kvsim.methods import make_method
    from kvsim.sim.scheduler import PreemptionMode
    from kvsim.sim.replica import SimConfig, simulate
    from kvsim.sim.chunk_reuse import chunk_cache_summary
    from kvsim.traces import load_trace

    slo = resolve_slo("simulate", slo_ttft, slo_tpot, slo_itl, percentile, slo_tbt)
    for flag, v in (("--rate", rate), ("--time-scale", time_scale)):
        if v is not None and not 0 < v < float("inf"):  # NaN fails too
            raise ConfigError(f"{flag} must be a finite number > 0, got {v}")
    check_watermark(watermark)
    offload = None
    if kv_offload is not None:
        from kvsim.sim.kv_tiers import parse_offload

        offload = parse_offload(kv_offload)
    if out is not None:  # before the work: a bad output path must not cost a simulation
        check_tree(out, ["manifest.json"], flag="--out", force=force)  # the method folders: checked again at write
    if report is not None:
        # lazy: CLI start-up (plotly)
        from kvsim.plan.report import check_page

        check_page(report, self_contained, "--report")
    if disagg is None and any(v is not None for v in (prefill_hw, decode_hw, prefill_tp, decode_tp)):
        raise ConfigError("--prefill-hw, --decode-hw, --prefill-tp and --decode-tp need --disagg P:D")
    split = None
    if disagg is not None:
        # lazy: CLI start-up
        from kvsim.hardware import load_link
        from kvsim.plan.disagg import parse_ratio

        counts = parse_ratio(disagg)
        link = load_link(kv_link)
        dep_p = build_deployment(prefill_hw or hw, model, tp=prefill_tp or tp, weight_dtype=weight_dtype,
                                 kv_dtype=kv_dtype, gpu_memory_utilization=gpu_memory_utilization, calibration=calibration,
                                 expert_offload=expert_offload)
        split = (counts, link, dep_p)
    dep = build_deployment(decode_hw or hw if disagg else hw, model, tp=(decode_tp or tp) if disagg else tp,
                           weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                           gpu_memory_utilization=gpu_memory_utilization, calibration=calibration,
                           expert_offload=expert_offload)
    if offload is not None:
        from kvsim.sim.kv_tiers import check_offload

        check_offload(offload, (dep if split is None else split[2]).system)  # before the work (--disagg: prefill side)
    tr = load_trace(trace, rate=rate, time_scale=time_scale, num_requests=num_requests, model=trace_model,
                    log_type=log_type, seed=seed, format=trace_format, columns=columns, time_unit=time_unit,
                    arrivals=arrivals, strict=strict, tokenizer=tokenizer)
    if tr.notice:
        print(f"note: {tr.notice}", file=sys.stderr)
    specs = split_methods(method)
    methods = []
    for spec in specs:  # every method is checked before any simulation
        try:
            methods.append((spec, make_method(spec, dep)))
            if split is not None:
                make_method(spec, split[2])  # the prefill deployment must run it too
        except ConfigError as err:
            if len(specs) == 1:
                raise
            print(f"note: skipping {spec}: {err}", file=sys.stderr)
    base_cfg = SimConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                         chunked_prefill=chunked_prefill, preemption_mode=PreemptionMode(preemption.value),
                         enable_prefix_caching=prefix_caching, gpu_memory_utilization=gpu_memory_utilization,
                         watermark=watermark, seed=seed, slo_ttft_s=None if slo is None else slo.ttft_s,
                         slo_tpot_s=None if slo is None else slo.tpot_s, kv_offload=offload)
    results = []
    for spec, m in methods:
        try:
            if split is not None:
                # lazy: CLI start-up
                from kvsim.plan.disagg import simulate_disagg

                (n_p, n_d), link, dep_p = split
                res = simulate_disagg(dep_p, make_method(spec, dep_p), dep, m, tr, link, base_cfg, n_p, n_d)
            else:
                with _progress_bar(enabled=not as_json, label=m.label(), total=len(tr)) as progress:
                    res = simulate(dep, m, tr, base_cfg.model_copy(update={"progress": progress}))
        except ConfigError as err:  # e.g. the weights leave no room for this method's KV
            if len(specs) == 1:
                raise
            print(f"note: skipping {spec}: {err}", file=sys.stderr)
            continue
        cc = chunk_cache_summary(m, tr)
        if cc is not None:
            res.summary["chunk_cache"] = cc
            by_tier = ", ".join(f"{t} {v:.1%}" for t, v in cc["hit_rate_by_tier"].items())
            print(f"note: {m.label()}: chunk cache ({cc['policy']}) hit rate {cc['hit_rate']:.1%} of "
                  f"{cc['lookups']:,} lookups ({by_tier}); KV loads assumed hidden behind the recompute", file=sys.stderr)
        res.summary["trace_source"] = tr.source
        res.summary["trace_notice"] = tr.notice
        res.summary["trace_spec"] = {"trace": trace, "rate": rate, "time_scale": time_scale, "num_requests": num_requests,
                                     "trace_model": trace_model, "log_type": log_type, "seed": seed,
                                     "calibration": calibration}
        if dep.expert_offload is not None:
            res.summary["expert_offload"] = dep.expert_offload.label()
        if slo is not None:
            res.summary["slo"] = slo_verdict(slo, res.summary)
        results.append(res)
    if not results:
        raise ConfigError("no method could be simulated")
    if out is not None:
        write_outputs(results, Path(out), force=force)
    if report is not None:
        # lazy: CLI start-up
        from kvsim.plan.report import simulation_report

        simulation_report(results, Path(report), self_contained=self_contained)
    if as_json:
        print_json(results[0].summary if len(results) == 1 else [r.summary for r in results])
    elif len(results) == 1:
        _print_one(results[0].summary)
    else:
        _print_table([r.summary for r in results])


class _progress_bar:
    """A rich progress bar on stderr for runs longer than ~1 s (off without a terminal)."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.label, self.total = label, total
        self._bar = self._task = None

    def __enter__(self):
        if not self.enabled:
            return None
        # lazy: CLI start-up
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn(f"simulating {self.label}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("sim {task.fields[t]:.0f} s"), TimeElapsedColumn(),
                             console=Console(stderr=True), transient=True)
        self._started = False
        return self._update

    def _update(self, done: int, total: int, sim_s: float) -> None:
        if not self._started:  # the first call comes ~0.2 s in: show only longer runs
            self._bar.start()
            self._task = self._bar.add_task("sim", total=total, t=0.0)
            self._started = True
        self._bar.update(self._task, completed=done, t=sim_s)

    def __exit__(self, *exc) -> None:
        if self._bar is not None and self._started:
            self._bar.stop()


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in label)


OUTPUT_FILES = ("summary.json", "requests.csv", "timeline.csv", "timeline.json")


def write_outputs(results: list, directory: Path, force: bool = False) -> list[Path]:
    """One run's files into ``directory``: ``manifest.json`` and one sub-directory per method
    (always, however many methods), all or nothing; earlier kvsim outputs there are replaced,
    other files kept (see kvsim.fileio). docs/outputs.md describes every file and column."""
    from kvsim import __version__  # lazy: CLI start-up

    files: dict[str, str] = {}
    runs = []
    for res in results:
        folder = _slug(res.summary["method"])
        out = output_files(res)
        files.update({f"{folder}/{k}": v for k, v in out.items()})
        runs.append({"method": res.summary["method"], "dir": folder, "files": sorted(out)})
    manifest = {"kvsim_version": __version__, "command": "kvsim " + " ".join(sys.argv[1:]), "runs": runs,
                "doc": "docs/outputs.md"}
    files["manifest.json"] = dumps_strict(manifest, indent=2) + "\n"
    return write_tree(directory, files, force=force, flag="--out")


def output_files(res) -> dict[str, str]:
    """summary.json, requests.csv (one row per request), timeline.csv and timeline.json: name -> text."""
    # lazy: CLI start-up
    import numpy as np

    from kvsim.sim.request import RequestStatus

    files = {"summary.json": dumps_strict(res.summary, indent=2) + "\n"}
    rec = res.records
    ttft = rec.first_token_s - rec.arrival_s
    e2e = rec.finish_s - rec.arrival_s
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(rec.output_tokens >= 2, (rec.finish_s - rec.first_token_s) / (rec.output_tokens - 1), np.nan)
    status = np.where(rec.status == RequestStatus.FINISHED, "completed",
                      np.where(rec.status == RequestStatus.REJECTED, "rejected", "not_routed"))
    reason = [""] * len(status)
    for i, why in dict(rec.reject_reason).items():
        reason[i] = why
    cols = {
        "req_id": np.arange(len(status)), "arrival_s": rec.arrival_s, "scheduled_s": rec.scheduled_s,
        "first_token_s": rec.first_token_s, "finish_s": rec.finish_s, "ttft_s": ttft, "e2el_s": e2e, "tpot_s": tpot,
        "itl_max_s": rec.tbt_max_s, "prompt_tokens": rec.prompt_tokens,
        "effective_prompt_tokens": rec.effective_prompt_tokens, "output_tokens": rec.output_tokens,
        "cached_tokens": np.maximum(rec.cached_tokens, 0), "preemptions": rec.preemptions,
        "status": status, "reject_reason": reason,
    }
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(cols)
    w.writerows(zip(*[_csv_col(v) for v in cols.values()]))
    files["requests.csv"] = f.getvalue()
    # gauges are the largest value in each time bucket: the file names say so
    tl = {("bucket_start_s" if k == "t_s" else f"{k}_max"): v for k, v in res.timeline.items()}
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(tl)
    w.writerows(zip(*[np.asarray(v).tolist() for v in tl.values()]))
    files["timeline.csv"] = f.getvalue()
    files["timeline.json"] = dumps_strict({k: np.asarray(v).tolist() for k, v in tl.items()}) + "\n"
    return files


def _csv_col(v) -> list:
    # lazy: CLI start-up
    import numpy as np

    if isinstance(v, list):
        return v
    a = np.asarray(v)
    if a.dtype.kind == "f":
        return ["" if x != x else repr(x) for x in a.tolist()]  # NaN -> empty cell
    return a.tolist()


def _stats_row(st: dict) -> str:
    return " / ".join(fmt_s(st.get(k)) for k in ("mean", "p50", "p90", "p99"))


def _print_one(s: dict) -> None:
    rows = [
        ("requests completed / rejected", f"{s['requests_completed']:,} / {s['requests_rejected']:,}"
         + (" (" + ", ".join(f"{k}: {v:,}" for k, v in s.get("rejected_reasons", {}).items()) + ")"
            if s.get("rejected_reasons") else "")
         + (f" ({s['requests_failed_in_trace']:,} failed in the trace)" if s["requests_failed_in_trace"] else "")),
        ("TTFT mean / p50 / p90 / p99", _stats_row(s["ttft_s"])),
        ("TPOT mean / p50 / p90 / p99", _stats_row(s["tpot_s"])),
        ("ITL mean / p50 / p90 / p99", _stats_row(s["itl_s"])),
        ("E2EL mean / p50 / p90 / p99", _stats_row(s["e2el_s"])),
        ("throughput (output tok/s)", fmt_num(s["throughput_output_tok_s"])),
        ("throughput (total tok/s, req/s)", f"{fmt_num(s['throughput_total_tok_s'])}, {fmt_num(s['throughput_req_s'], 3)}"),
        ("makespan", fmt_s(s["makespan_s"])),
        ("peak KV GPU / capacity (per GPU)", f"{fmt_bytes(s['peak_kv_gpu_bytes'])} / {fmt_bytes(s['kv_gpu_capacity_bytes'])}"
         + (f" ({s['kv_gpu_capacity_tokens']:,} tokens of uncompressed KV)" if s.get("kv_gpu_capacity_tokens") else "")),
        ("peak KV host / capacity", f"{fmt_bytes(s['peak_kv_host_bytes'])} / {fmt_bytes(s['kv_host_capacity_bytes'])}"),
        ("preemptions (requests preempted)", f"{s['preemptions']:,} ({s['requests_preempted']:,})"),
        ("prefix-cached prompt tokens", f"{s['cached_prompt_tokens']:,}"),
    ]
    if s.get("goodput_req_s") is not None:
        rows.append(("goodput (req/s, fraction)", f"{fmt_num(s['goodput_req_s'], 3)}, {s['goodput_fraction']:.3f}"))
    if s.get("slo"):
        rows.append(("SLO " + s["slo"]["percentile"], _slo_cell(s["slo"])))
    load = s.get("load") or {}
    if load:
        busy = load.get("gpu_busy_fraction")
        rows.append(("offered / served load (req/s)", f"{fmt_num(load.get('offered_req_s'), 3)} / {fmt_num(load.get('served_req_s'), 3)}"))
        rows.append(("GPU busy, peak KV occupancy", f"{'-' if busy is None else f'{busy * 100:.1f}%'}, "
                                                     f"{load.get('kv_gpu_peak_fraction', 0) * 100:.1f}%"))
    if s.get("expert_offload"):
        rows.append(("expert offload", s["expert_offload"]))
    tiers = s.get("kv_offload")
    if tiers:
        rows.append(("prefix entries reused: GPU", f"{tiers['gpu']['hit_rate'] * 100:.1f}% of {tiers['wanted_entries']:,}"))
        for name in ("host", "nvme"):
            if name in tiers:
                t_ = tiers[name]
                rows.append((f"{name} tier: hit rate, loaded / stored", f"{t_['hit_rate'] * 100:.1f}%, "
                             f"{fmt_bytes(t_['bytes_loaded'])} / {fmt_bytes(t_['bytes_stored'])}"))
                rows.append((f"{name} tier: load time, TTFT saved (est.)",
                             f"{fmt_s(t_['load_time_s'])}, {fmt_s(t_['ttft_saved_est_s'])}"))
    sim = s.get("sim", {})
    rows.append(("simulated steps / wall time", f"{sim.get('steps', 0):,} / {sim.get('wall_s', 0):.2f} s"))
    dis = s.get("disagg")
    if dis:
        rows.append(("disaggregated: prefill / decode instances",
                     f"{dis['prefill_instances']} x {dis['prefill_hw']} TP{dis['prefill_tp']} / "
                     f"{dis['decode_instances']} x {dis['decode_hw']} TP{dis['decode_tp']}"))
        rows.append(("KV link (lanes, bandwidth)", f"{dis['kv_link']} ({dis['kv_link_lanes']}, "
                                                   f"{fmt_bytes(dis['kv_link_bw_bytes_per_s'])}/s)"))
        rows.append(("KV moved (total, mean per request)", f"{fmt_bytes(dis['kv_transfer_bytes_total'])}, "
                                                           f"{fmt_bytes(dis['kv_transfer_bytes_mean'] or 0.0)}"))
        rows.append(("KV transfer mean / p50 / p90 / p99", _stats_row(dis["kv_transfer_s"])))
        rows.append(("KV transfer wait mean / p50 / p90 / p99", _stats_row(dis["kv_transfer_wait_s"])))
    print_pairs(console(), f"{s['model']} on {s['hw']} - {s['method']}, trace {s['trace']}", rows)
    if load.get("hint"):
        print(f"hint: {load['hint']}", file=sys.stderr)
    for n in s.get("notes", []):
        if n != s.get("trace_notice"):
            print(f"note: {n}", file=sys.stderr)


def _slo_cell(v: dict) -> str:
    """``"met: TTFT 1.200 s <= 2 s, ITL 80.00 ms <= 100 ms"`` of a :func:`kvsim.slo.verdict`."""
    parts = [f"{c['metric'].upper()} {'-' if c['value_s'] is None else fmt_s(c['value_s'])} "
             f"{'<=' if c['met'] else '>'} {fmt_duration(c['bound_s'])}" for c in v["checks"]]
    return ("met: " if v["met"] else "missed: ") + ", ".join(parts)


#: the method comparison's columns (vLLM metric names; E2EL: end-to-end latency)
TABLE_HEADERS = ("method", "done", "rej", "TTFT p50", "TTFT p99", "TPOT p50", "ITL p99", "E2EL p50", "out tok/s",
                 "peak KV GPU", "peak KV host", "preempt")


def _print_table(summaries: list[dict]) -> None:
    s0 = summaries[0]
    full = next((s for s in summaries if s["method"] == "full"), None)
    # full KV first (the baseline), then by median end-to-end latency, fastest first
    summaries = sorted(summaries, key=lambda s: (s is not full, _or_inf(s["e2el_s"]["p50"])))
    cols = list(TABLE_HEADERS)
    if full is not None:
        cols.insert(8, "vs full")
    good = any(s.get("goodput_req_s") is not None for s in summaries)
    if good:
        cols.append("goodput")
    slo = any(s.get("slo") for s in summaries)
    if slo:
        cols.append(f"SLO {next(s['slo']['percentile'] for s in summaries if s.get('slo'))}")
    rows = []
    for s in summaries:
        row = [s["method"], f"{s['requests_completed']:,}", f"{s['requests_rejected']:,}", fmt_s(s["ttft_s"]["p50"]),
               fmt_s(s["ttft_s"]["p99"]), fmt_s(s["tpot_s"]["p50"]), fmt_s(s["itl_s"]["p99"]), fmt_s(s["e2el_s"]["p50"]),
               fmt_num(s["throughput_output_tok_s"]), fmt_bytes(s["peak_kv_gpu_bytes"]), fmt_bytes(s["peak_kv_host_bytes"]),
               f"{s['preemptions']:,}"]
        if full is not None:
            row.insert(8, "-" if s is full else f"{_change(s['e2el_s']['p50'], full['e2el_s']['p50'])} E2EL, "
                                                 f"{_change(s['throughput_output_tok_s'], full['throughput_output_tok_s'])} tok/s")
        if good:
            row.append("-" if s.get("goodput_fraction") is None else f"{s['goodput_fraction']:.3f}")
        if slo:
            row.append("-" if not s.get("slo") else ("met" if s["slo"]["met"] else "missed"))
        rows.append(row)
    print_rows(console(), f"{s0['model']} on {s0['hw']}, trace {s0['trace']}"
               + (" (vs full: change of median E2EL and output tok/s against full KV)" if full else ""), cols, rows)
    hints = {s["method"]: (s.get("load") or {}).get("hint") for s in summaries}
    if any(hints.values()):
        if len(set(hints.values())) == 1:
            print(f"hint: {next(iter(hints.values()))}", file=sys.stderr)
        else:
            for m, h in hints.items():
                if h:
                    print(f"hint ({m}): {h}", file=sys.stderr)


def _or_inf(x: float | None) -> float:
    return float("inf") if x is None else x


def _change(x: float | None, base: float | None) -> str:
    """Signed relative change of ``x`` against ``base`` ("-" when either is missing or base is 0)."""
    if x is None or not base:
        return "-"
    return f"{(x / base - 1) * 100:+.0f}%"
