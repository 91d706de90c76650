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

from kvsim.costmodel.deployment import build_deployment, with_max_context
from kvsim.commands.common import (
    ArrivalsOpt, CalibrationOpt, ColumnsOpt, ExpertOffloadOpt, GpuUtilOpt, HwOpt, JsonOpt, KvDtypeOpt, KvOffloadOpt, LogTypeOpt,
    MethodOpt, ModelOpt, NumRequestsOpt, PercentileOpt, RateOpt, SeedOpt, SloItlOpt, SloTbtOpt, SloTpotOpt, SloTtftOpt,
    MaxOutputOpt, MaxPromptOpt, StrictOpt, TimeScaleOpt, TimeUnitOpt, TokenizerOpt, TpOpt, TraceFormatOpt, TraceModelOpt,
    TraceOpt, ReserveFullPromptOpt, WatermarkOpt, WeightDtypeOpt, check_watermark, print_json, resolve_slo, split_methods,
)
from kvsim.commands.simulate_render import print_comparison, print_summary
from kvsim.errors import ConfigError
from kvsim.fileio import MANIFEST, check_tree, write_tree
from kvsim.jsonutil import dumps_strict


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
    max_prompt_tokens: MaxPromptOpt = None,
    max_output_tokens: MaxOutputOpt = None,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", min=1, max=1_000_000, help="running sequences per step (vLLM)")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens", min=1, max=2**31 - 1, help="token budget per step (vLLM)")] = 8192,
    chunked_prefill: Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill", help="Sarathi-style chunked prefill (vLLM v1); off: vLLM v0 prefill-first steps")] = True,
    preemption: Annotated[Preemption, typer.Option("--preemption", case_sensitive=False, help="what happens to a preempted request's KV")] = Preemption.recompute,
    prefix_caching: Annotated[bool, typer.Option("--prefix-caching/--no-prefix-caching", help="reuse cached KV blocks: shared prompt blocks (traces with prefix ids, e.g. Mooncake) and a preempted request's own blocks when it returns (vLLM v1)")] = True,
    kv_offload: KvOffloadOpt = None,
    gpu_memory_utilization: GpuUtilOpt = 0.9,
    watermark: WatermarkOpt = None,
    reserve_full_prompt: ReserveFullPromptOpt = False,
    allow_long_context: Annotated[bool, typer.Option("--allow-long-context", help="serve requests beyond the model's max context (an engine started with rope scaling, e.g. YaRN): the context becomes the trace's longest request")] = False,
    tp: TpOpt = 1,
    disagg: Annotated[Optional[str], typer.Option("--disagg", help="disaggregated prefill/decode: P:D prefill and decode instances (e.g. 1:1; docs/disaggregation.md)")] = None,
    prefill_hw: Annotated[Optional[str], typer.Option("--prefill-hw", help="--disagg: hardware of the prefill instances (default --hw)")] = None,
    decode_hw: Annotated[Optional[str], typer.Option("--decode-hw", help="--disagg: hardware of the decode instances (default --hw)")] = None,
    prefill_tp: Annotated[Optional[int], typer.Option("--prefill-tp", min=1, help="--disagg: TP of each prefill instance (default --tp)")] = None,
    decode_tp: Annotated[Optional[int], typer.Option("--decode-tp", min=1, help="--disagg: TP of each decode instance (default --tp)")] = None,
    kv_link: Annotated[Optional[str], typer.Option("--kv-link", help="--disagg: link carrying the KV, one per GPU (ib-ndr, ib-hdr, eth-100g, eth-200g, nvlink4, ... or a link YAML) [default: ib-ndr]")] = None,
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
    force: Annotated[bool, typer.Option("--force", help="--out: replace or remove files there that kvsim did not write; --report: replace a file that is not a kvsim page")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Replay a request trace through a vLLM-like engine: TTFT, TPOT, ITL, E2EL, throughput, memory per KV method."""
    # lazy: CLI start-up
    from kvsim.methods import make_method
    from kvsim.sim.scheduler import PreemptionMode
    from kvsim.sim.replica import SimConfig, simulate
    from kvsim.sim.summary_extras import check_something_ran, complete_summary, setup_notes
    from kvsim.traces import load_trace
    from kvsim.traces.pipeline import shortfall_note

    slo = resolve_slo("simulate", slo_ttft, slo_tpot, slo_itl, percentile, slo_tbt)
    for flag, v in (("--rate", rate), ("--time-scale", time_scale)):
        if v is not None and not 0 < v < float("inf"):  # NaN fails too
            raise ConfigError(f"{flag} must be a finite number > 0, got {v}")
    check_watermark(watermark)
    offload = None
    if kv_offload is not None:
        from kvsim.sim.kv_tiers import parse_offload

        offload = parse_offload(kv_offload)
    run_inputs = (trace, hw, model, calibration, prefill_hw, decode_hw, kv_link)  # (never replaced by an output)
    if out is not None and report is not None:  # two outputs of this run must not name the same file
        _check_report_beside_out(Path(out), Path(report))
    if out is not None:  # before the work: a bad output path must not cost a simulation
        check_tree(out, ["manifest.json"], flag="--out", force=force, inputs=run_inputs)  # the method folders: checked again at write
    if self_contained and report is None:
        raise ConfigError("--self-contained shapes the --report page: give --report FILE too")
    if report is not None:
        # lazy: CLI start-up (plotly)
        from kvsim.plan.report import check_page

        check_page(report, self_contained, "--report", force,
                   inputs=run_inputs)
    if disagg is None and any(v is not None for v in (prefill_hw, decode_hw, prefill_tp, decode_tp, kv_link)):
        raise ConfigError("--prefill-hw, --decode-hw, --prefill-tp, --decode-tp and --kv-link need --disagg P:D")
    split = None
    if disagg is not None:
        # lazy: CLI start-up
        from kvsim.hardware import DEFAULT_KV_LINK, load_link
        from kvsim.plan.disagg import parse_ratio

        counts = parse_ratio(disagg)
        link = load_link(kv_link or DEFAULT_KV_LINK)
        dep_p = _instance("prefill", "--prefill-tp" if prefill_tp else None, lambda: build_deployment(
            prefill_hw or hw, model, tp=prefill_tp or tp, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
            gpu_memory_utilization=gpu_memory_utilization, calibration=calibration, expert_offload=expert_offload))
        split = (counts, link, dep_p)
    dep = _instance("decode" if disagg else None, "--decode-tp" if disagg and decode_tp else None, lambda: build_deployment(
        decode_hw or hw if disagg else hw, model, tp=(decode_tp or tp) if disagg else tp, weight_dtype=weight_dtype,
        kv_dtype=kv_dtype, gpu_memory_utilization=gpu_memory_utilization, calibration=calibration,
        expert_offload=expert_offload))
    if offload is not None:
        from kvsim.sim.kv_tiers import check_offload

        check_offload(offload, (dep if split is None else split[2]).system)  # before the work (--disagg: prefill side)
    tr = load_trace(trace, rate=rate, time_scale=time_scale, num_requests=num_requests, model=trace_model,
                    log_type=log_type, seed=seed, format=trace_format, columns=columns, time_unit=time_unit,
                    arrivals=arrivals, strict=strict, tokenizer=tokenizer, max_prompt_tokens=max_prompt_tokens,
                    max_output_tokens=max_output_tokens)
    wide = None
    if allow_long_context:  # the trace's longest request sets the context the engine is started with
        dep, wide = with_max_context(dep, tr.longest_request_tokens)
        if split is not None:
            split = (split[0], split[1], with_max_context(split[2], tr.longest_request_tokens)[0])
    if tr.notice:
        print(f"note: {tr.notice}", file=sys.stderr)
    short = shortfall_note(num_requests, len(tr), "--num-requests")
    if short:
        print(f"note: {short}", file=sys.stderr)
    specs = split_methods(method)
    methods = []
    skipped: dict[str, str] = {}  # spec -> why (--json keeps each given method's place: user audit)
    for spec in specs:  # every method is checked before any simulation
        try:
            methods.append((spec, make_method(spec, dep)))
            if split is not None:
                make_method(spec, split[2])  # the prefill deployment must run it too
        except ConfigError as err:
            if len(specs) == 1:
                raise
            if methods and methods[-1][0] == spec:
                methods.pop()
            skipped[spec] = str(err).splitlines()[0]
            print(f"note: skipping {spec}: {err}", file=sys.stderr)
    if out is not None and report is not None:  # (a method's folder, known now: before any simulation)
        _check_report_beside_out(Path(out), Path(report), folders={_slug(m.label()) for _, m in methods})
    setup = setup_notes(dep, tr, chunked_prefill=chunked_prefill, max_num_batched_tokens=max_num_batched_tokens,
                        seed=seed, max_num_seqs=max_num_seqs)
    if wide:
        setup.insert(0, wide)
    if as_json:  # (in each summary's notes too: the tables print those with the results)
        for note in setup:
            print(f"note: {note}", file=sys.stderr)
    trace_spec = {"trace": trace, "rate": rate, "time_scale": time_scale, "num_requests": num_requests,
                  "trace_model": trace_model, "log_type": log_type, "seed": seed, "calibration": calibration,
                  "format": trace_format, "columns": columns, "time_unit": time_unit, "arrivals": arrivals,
                  "strict": strict, "tokenizer": tokenizer}
    base_cfg = SimConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                         chunked_prefill=chunked_prefill, preemption_mode=PreemptionMode(preemption.value),
                         enable_prefix_caching=prefix_caching, gpu_memory_utilization=gpu_memory_utilization,
                         watermark=watermark, reserve_full_prompt=reserve_full_prompt, seed=seed,
                         slo_ttft_s=None if slo is None else slo.ttft_s,
                         slo_tpot_s=None if slo is None else slo.tpot_s, kv_offload=offload)
    results = []
    for spec, m in methods:
        try:
            if split is not None:
                # lazy: CLI start-up
                from kvsim.plan.disagg import simulate_disagg

                (n_p, n_d), link, dep_p = split
                m_p = make_method(spec, dep_p)
                res = simulate_disagg(dep_p, m_p, dep, m, tr, link, base_cfg, n_p, n_d)
            else:
                with _progress_bar(enabled=not as_json, label=m.label(), total=len(tr)) as progress:
                    res = simulate(dep, m, tr, base_cfg.model_copy(update={"progress": progress}))
        except ConfigError as err:  # e.g. the weights leave no room for this method's KV
            if len(specs) == 1:
                raise
            skipped[spec] = str(err).splitlines()[0]
            print(f"note: skipping {spec}: {err}", file=sys.stderr)
            continue
        own = complete_summary(res, m, tr, dep, spec=spec, slo=slo, disaggregated=split is not None,
                               extra_notes=tuple(setup), kv_dtype=kv_dtype, trace_spec=trace_spec,
                               prefill=None if split is None else (m_p, split[2]))
        if as_json:  # (the tables print the summary's notes with the results)
            label = f" ({m.label()})" if len(methods) > 1 else ""  # (which method's, as the tables say)
            for note in own:
                print(f"note{label}: {note}", file=sys.stderr)
        results.append(res)
    if not results:
        raise ConfigError("no method could be simulated")
    check_something_ran([r.summary for r in results], "--allow-long-context" if not allow_long_context else None)
    if out is not None:
        write_outputs(results, Path(out), force=force, inputs=run_inputs)
    if report is not None:
        # lazy: CLI start-up
        from kvsim.plan.report import simulation_report

        simulation_report(results, Path(report), self_contained=self_contained, force=force)
    if as_json:
        if len(specs) == 1:
            print_json(results[0].summary)
        else:  # one entry per --method given, in order: a summary, or {"method", "skipped": why}
            by_spec = {r.summary["method_spec"]: r.summary for r in results}
            print_json([by_spec.get(sp) or {"method": sp, "skipped": skipped.get(sp, "not simulated")} for sp in specs])
    elif len(results) == 1:
        print_summary(results[0].summary)
    else:
        print_comparison([r.summary for r in results])


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
    """A method label as a folder name: ``kivi(bits=4)`` -> ``kivi_bits=4``, ``kivi+quest`` -> ``kivi_quest``."""
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in label).strip("_") or "method"


OUTPUT_FILES = ("summary.json", "requests.csv", "timeline.csv", "timeline.json")


def write_outputs(results: list, directory: Path, force: bool = False, inputs=()) -> list[Path]:
    """One run's files into ``directory``: ``manifest.json`` and one sub-directory per method
    (always, however many methods), all or nothing; earlier kvsim outputs there are replaced,
    other files kept (see kvsim.fileio), and none of the run's ``inputs`` is ever replaced.
    docs/outputs.md describes every file and column."""
    from kvsim import __version__  # lazy: CLI start-up

    files: dict[str, str] = {}
    runs = []
    used: set[str] = set()
    for res in results:
        folder = base = _slug(res.summary["method"])
        k = 2
        while folder in used:  # two runs with one label (e.g. kivi:bits=2 and kivi:group=32, both the default kivi)
            folder, k = f"{base}-{k}", k + 1
        used.add(folder)
        out = output_files(res)
        files.update({f"{folder}/{k}": v for k, v in out.items()})
        runs.append({"method": res.summary["method"], "dir": folder, "files": sorted(out)})
    manifest = {"kvsim_version": __version__, "command": "kvsim " + " ".join(sys.argv[1:]), "runs": runs,
                "doc": "docs/outputs.md"}
    files["manifest.json"] = dumps_strict(manifest, indent=2) + "\n"
    return write_tree(directory, files, force=force, flag="--out", inputs=inputs)


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
        # (a one-token output has no gap between tokens: empty, as its tpot_s; it read 0.0: user audit)
        "itl_max_s": np.where((rec.output_tokens >= 2) & (rec.status == RequestStatus.FINISHED), rec.tbt_max_s, np.nan),
        "prompt_tokens": rec.prompt_tokens,
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


def _check_report_beside_out(out: Path, report: Path, folders: set = frozenset()) -> None:
    """``--report`` may sit in the ``--out`` folder (``D/report.html``) but not on a file the run
    writes there (``manifest.json``, its manifest, a method's ``folders``) nor inside a method's folder."""
    od, rp = out.resolve(), report.resolve()
    if od not in rp.parents:
        return
    if rp.parent != od or rp.name in ("manifest.json", MANIFEST, *folders):
        raise ConfigError(f"--report {report}: is among the files --out {out} holds (manifest.json, one folder per "
                          f"method); put the page beside them, e.g. {out / 'report.html'}, or elsewhere")


def _instance(side: str | None, tp_flag: str | None, build):
    """``build()``, with a ConfigError naming the instance (``--disagg``: "decode instances: ...")
    and its TP option (``--decode-tp 16 ...`` rather than ``--tp 16 ...``)."""
    try:
        return build()
    except ConfigError as err:
        if side is None:
            raise
        msg = str(err)
        if tp_flag and msg.startswith("--tp "):
            msg = tp_flag + msg[len("--tp"):]
        raise ConfigError(f"{side} instances: {msg}") from None

