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
    CalibrationOpt, GpuUtilOpt, HwOpt, JsonOpt, KvDtypeOpt, MethodOpt, ModelOpt, TpOpt, WatermarkOpt, WeightDtypeOpt,
    check_watermark, fmt_bytes, fmt_num, fmt_s, print_json, split_methods,
)
from kvsim.errors import ConfigError
from kvsim.fileio import check_output_file, check_tree, write_tree
from kvsim.jsonutil import dumps_strict


class Preemption(str, Enum):
    recompute = "recompute"
    swap = "swap"


def simulate_cmd(
    hw: HwOpt = "a100",
    model: ModelOpt = "llama-3.1-8b",
    method: MethodOpt = ["full"],  # noqa: B006 (typer needs a literal default)
    trace: Annotated[str, typer.Option("--trace", help="trace name (`kvsim trace list`), synthetic spec, or file")] = "burstgpt",
    rate: Annotated[Optional[float], typer.Option("--rate", help="rescale arrivals to this mean rate, requests/s (default: the trace's own)")] = None,
    time_scale: Annotated[Optional[float], typer.Option("--time-scale", help="divide arrival times by this factor (100 = 100x faster)")] = None,
    num_requests: Annotated[Optional[int], typer.Option("--num-requests", "-n", min=1, help="first N requests (synthetic: how many)")] = None,
    trace_model: Annotated[Optional[str], typer.Option("--trace-model", help="BurstGPT rows of this model only: ChatGPT or GPT-4")] = None,
    log_type: Annotated[Optional[str], typer.Option("--log-type", help="BurstGPT rows of this log type only: conversation or API")] = None,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", min=1, max=1_000_000, help="running sequences per step (vLLM)")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens", min=1, max=2**31 - 1, help="token budget per step (vLLM)")] = 8192,
    chunked_prefill: Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill", help="Sarathi-style chunked prefill (vLLM v1); off: vLLM v0 prefill-first steps")] = True,
    preemption: Annotated[Preemption, typer.Option("--preemption", help="what happens to a preempted request's KV")] = Preemption.recompute,
    prefix_caching: Annotated[bool, typer.Option("--prefix-caching/--no-prefix-caching", help="reuse cached prompt blocks (traces with prefix ids, e.g. Mooncake)")] = True,
    gpu_memory_utilization: GpuUtilOpt = 0.9,
    watermark: WatermarkOpt = None,
    tp: TpOpt = 1,
    weight_dtype: WeightDtypeOpt = "auto",
    kv_dtype: KvDtypeOpt = "auto",
    calibration: CalibrationOpt = None,
    slo_ttft: Annotated[Optional[float], typer.Option("--slo-ttft", help="goodput: TTFT SLO, seconds")] = None,
    slo_tbt: Annotated[Optional[float], typer.Option("--slo-tbt", help="goodput: SLO on each request's mean TBT (TPOT), seconds")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="seed of synthetic traces")] = 0,
    out: Annotated[Optional[str], typer.Option("--out", help="directory for summary.json, requests.csv, timeline.csv/json")] = None,
    report: Annotated[Optional[str], typer.Option("--report", help="write an HTML report (single method)")] = None,
    force: Annotated[bool, typer.Option("--force", help="--out: replace or remove files there that kvsim did not write")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Replay a request trace through a vLLM-like engine: TTFT, TBT, throughput, memory per KV method."""
    # lazy: CLI start-up
    from kvsim.methods import make_method
    from kvsim.sim.scheduler import PreemptionMode
    from kvsim.sim.replica import SimConfig, simulate
    from kvsim.traces import load_trace

    for flag, v in (("--slo-ttft", slo_ttft), ("--slo-tbt", slo_tbt), ("--rate", rate), ("--time-scale", time_scale)):
        if v is not None and not 0 < v < float("inf"):  # NaN fails too
            raise ConfigError(f"{flag} must be a finite number > 0, got {v}")
    check_watermark(watermark)
    if out is not None:  # before the work: a bad output path must not cost a simulation
        check_tree(out, OUTPUT_FILES, flag="--out", force=force)
    if report is not None:
        check_output_file(report, "--report")
    dep = build_deployment(hw, model, tp=tp, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                           gpu_memory_utilization=gpu_memory_utilization, calibration=calibration)
    tr = load_trace(trace, rate=rate, time_scale=time_scale, num_requests=num_requests, model=trace_model,
                    log_type=log_type, seed=seed)
    if tr.notice:
        print(f"note: {tr.notice}", file=sys.stderr)
    specs = split_methods(method)
    methods = []
    for spec in specs:  # every method is checked before any simulation
        try:
            methods.append((spec, make_method(spec, dep)))
        except ConfigError as err:
            if len(specs) == 1:
                raise
            print(f"note: skipping {spec}: {err}", file=sys.stderr)
    base_cfg = SimConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                         chunked_prefill=chunked_prefill, preemption_mode=PreemptionMode(preemption.value),
                         enable_prefix_caching=prefix_caching, gpu_memory_utilization=gpu_memory_utilization,
                         watermark=watermark, seed=seed, slo_ttft_s=slo_ttft, slo_tbt_s=slo_tbt)
    results = []
    for spec, m in methods:
        try:
            with _progress_bar(enabled=not as_json, label=m.label(), total=len(tr)) as progress:
                res = simulate(dep, m, tr, base_cfg.model_copy(update={"progress": progress}))
        except ConfigError as err:  # e.g. the weights leave no room for this method's KV
            if len(specs) == 1:
                raise
            print(f"note: skipping {spec}: {err}", file=sys.stderr)
            continue
        res.summary["trace_source"] = tr.source
        res.summary["trace_notice"] = tr.notice
        results.append(res)
    if not results:
        raise ConfigError("no method could be simulated")
    if out is not None:
        write_outputs(results, Path(out), force=force)
    if report is not None:
        # lazy: CLI start-up
        from kvsim.plan.report import single_run_report

        r0 = results[0]
        single_run_report(r0, Path(report), title=f"{r0.summary['model']} on {r0.summary['hw']} - {r0.summary['method']}")
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
    """One run's files into ``directory`` (one sub-directory per method when several), all
    or nothing; earlier kvsim outputs there are replaced, other files kept (see kvsim.fileio)."""
    files: dict[str, str] = {}
    for res in results:
        prefix = _slug(res.summary["method"]) + "/" if len(results) > 1 else ""
        files.update({prefix + k: v for k, v in output_files(res).items()})
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
        "first_token_s": rec.first_token_s, "finish_s": rec.finish_s, "ttft_s": ttft, "e2e_s": e2e, "tpot_s": tpot,
        "tbt_max_s": rec.tbt_max_s, "prompt_tokens": rec.prompt_tokens,
        "effective_prompt_tokens": rec.effective_prompt_tokens, "output_tokens": rec.output_tokens,
        "cached_tokens": np.maximum(rec.cached_tokens, 0), "preemptions": rec.preemptions,
        "status": status, "reject_reason": reason,
    }
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(cols)
    w.writerows(zip(*[_csv_col(v) for v in cols.values()]))
    files["requests.csv"] = f.getvalue()
    tl = res.timeline
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
    # lazy: CLI start-up
    from rich.table import Table

    t = Table(title=f"{s['model']} on {s['hw']} - {s['method']}, trace {s['trace']}", show_header=False)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    rows = [
        ("requests completed / rejected", f"{s['requests_completed']:,} / {s['requests_rejected']:,}"
         + (" (" + ", ".join(f"{k}: {v:,}" for k, v in s.get("rejected_reasons", {}).items()) + ")"
            if s.get("rejected_reasons") else "")
         + (f" ({s['requests_failed_in_trace']:,} failed in the trace)" if s["requests_failed_in_trace"] else "")),
        ("TTFT mean / p50 / p90 / p99", _stats_row(s["ttft_s"])),
        ("TBT mean / p50 / p90 / p99", _stats_row(s["tbt_s"])),
        ("TPOT mean / p50 / p90 / p99", _stats_row(s["tpot_s"])),
        ("E2E mean / p50 / p90 / p99", _stats_row(s["e2e_s"])),
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
    sim = s.get("sim", {})
    rows.append(("simulated steps / wall time", f"{sim.get('steps', 0):,} / {sim.get('wall_s', 0):.2f} s"))
    for k, v in rows:
        t.add_row(k, v)
    _console().print(t)
    for n in s.get("notes", []):
        if n != s.get("trace_notice"):
            print(f"note: {n}", file=sys.stderr)


def _print_table(summaries: list[dict]) -> None:
    # lazy: CLI start-up
    from rich.table import Table

    s0 = summaries[0]
    t = Table(title=f"{s0['model']} on {s0['hw']}, trace {s0['trace']}")
    cols = ["method", "done", "rej", "TTFT p50", "TTFT p99", "TBT p50", "TBT p99", "E2E p50", "out tok/s", "peak KV GPU",
            "peak KV host", "preempt"]  # noqa: E501
    good = any(s.get("goodput_req_s") is not None for s in summaries)
    if good:
        cols.append("goodput")
    for c in cols:
        t.add_column(c, justify="left" if c == "method" else "right")
    for s in summaries:
        row = [s["method"], f"{s['requests_completed']:,}", f"{s['requests_rejected']:,}", fmt_s(s["ttft_s"]["p50"]),
               fmt_s(s["ttft_s"]["p99"]), fmt_s(s["tbt_s"]["p50"]), fmt_s(s["tbt_s"]["p99"]), fmt_s(s["e2e_s"]["p50"]),
               fmt_num(s["throughput_output_tok_s"]), fmt_bytes(s["peak_kv_gpu_bytes"]), fmt_bytes(s["peak_kv_host_bytes"]),
               f"{s['preemptions']:,}"]
        if good:
            row.append("-" if s.get("goodput_fraction") is None else f"{s['goodput_fraction']:.3f}")
        t.add_row(*row)
    _console().print(t)


def _console():
    """Rich console on stdout; a wide one when piped so the table is not truncated."""
    # lazy: CLI start-up
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)
