"""``kvsim validate e2e``: a real torch serving loop on this CPU against ``kvsim simulate`` on the
same trace (fit run and held-out report run; docs/validate.md)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from kvsim.commands.common import console, metric_name
from kvsim.commands.tables import print_rows
from kvsim.commands.validate_common import (
    argv_after, BeyondTolerance, check_device, check_outputs, Contended, Device, DeviceOpt, pct, QuickOpt,
    ThreadsOpt, WaitQuietOpt, write_hw,
)
from kvsim.durations import parse_duration_s
from kvsim.errors import ConfigError

def e2e_cmd(
    device: DeviceOpt = Device.cpu,
    quick: QuickOpt = False,
    calibration: Annotated[str | None, typer.Option("--calibration", help="calibration YAML of this machine (default: calibrate now, quick kernels)")] = None,
    out: Annotated[str | None, typer.Option("--out", help="results JSON (default kvsim-validate-e2e.json)")] = None,
    save_calibration_to: Annotated[str | None, typer.Option("--save-calibration", help="write the calibration with the fitted step overhead")] = None,
    num_requests: Annotated[int | None, typer.Option("--num-requests", min=4, help="requests per run (fit run and report run; default 64, quick 24)")] = None,
    rate: Annotated[float | None, typer.Option("--rate", min=0.001, help="report run's arrival rate, req/s (default: ~70% busy by kvsim); the fit run uses 0.7x")] = None,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", min=1, max=1_000_000, help="running sequences per step of the real engine and of kvsim")] = 8,
    trace: Annotated[str, typer.Option("--trace", help="trace name or file (needs 2 x --num-requests rows)")] = "azure-conv",
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.001, max=10.0, help="largest |error| of TTFT and ITL p50 and mean before exiting 2")] = 0.25,
    threads: ThreadsOpt = None,
    wait_quiet: WaitQuietOpt = "0",
    write_logs: Annotated[str | None, typer.Option("--write-logs", help="also write the report run's per-request log (vLLM stats JSONL/CSV, bench JSON) + meta for `validate replay` here")] = None,
) -> None:
    """Replay a trace through a real torch serving loop and through kvsim's simulator; compare TTFT/TBT.

    The per-step overhead is fitted on a separate run (the next requests of the trace, at 0.7x the
    rate) and every number printed is from the report run. Exit 2: an error beyond --tolerance;
    exit 3: the machine was contended (nothing is reported)."""
    wait_s = parse_duration_s(wait_quiet, "--wait-quiet", allow_zero=True)
    if device == Device.cuda:
        raise ConfigError("kvsim validate e2e runs the serving loop on the CPU only (use --device cpu)")
    check_device(device, "e2e")
    path = Path(out or "kvsim-validate-e2e.json")
    check_outputs(path, [], None, json_kind="e2e")
    # lazy: CLI start-up
    import torch

    from kvsim.costmodel.calibration import load_calibration
    from kvsim.fileio import check_output_file
    from kvsim.validate import e2e
    from kvsim.validate.models import resolve_model

    if save_calibration_to is not None:
        check_output_file(save_calibration_to, "--save-calibration")
    if write_logs is not None:
        # lazy: CLI start-up
        from kvsim.commands.validate_replay import LOOP_LOG_FILES
        from kvsim.fileio import check_tree

        check_tree(write_logs, LOOP_LOG_FILES, flag="--write-logs")
    hw_file = res = None
    cfg = e2e.E2EConfig.make(quick)
    cfg.max_num_seqs, cfg.rate, cfg.trace, cfg.tolerance = max_num_seqs, rate, trace, tolerance
    if num_requests:
        cfg.num_requests = num_requests
    e2e.load_traces(cfg, None)  # (the trace exists and has rows for both runs: checked before any timing)
    model = resolve_model("tiny-llama")
    cal = load_calibration(calibration) if calibration else None
    if cal is not None:
        if not cal.hw:
            raise ConfigError(f"{calibration}: has no 'hw' (the local spec it was fitted against); re-run kvsim validate calibrate")
        hw_file = Path(calibration).parent / cal.hw
        if not hw_file.is_file():
            raise ConfigError(f"{calibration}: its hw spec {hw_file} is missing (kvsim validate calibrate writes it beside the calibration)")
        system = e2e.system_from_calibration(cal, hw_file, calibration)
        origin = calibration
    if threads is None and cal is not None and cal.host.get("threads"):
        threads = int(cal.host["threads"])  # time the loop with the threads the kernels were calibrated at
    if threads:
        torch.set_num_threads(threads)
    if wait_s > 0:
        # lazy: CLI start-up
        from kvsim.validate.cpuenv import wait_quiet as _wait

        _wait(wait_s, log=lambda s: print(s, file=sys.stderr))
    if cal is None:
        typer.echo("calibrating this machine first (quick fp32 kernels)...")
        # lazy: CLI start-up
        from kvsim.validate.calibrate import make_calibration
        from kvsim.validate.runner import run_benchmarks

        res = run_benchmarks("cpu", model, quick=True, groups=["gemm", "attn_prefill", "attn_decode", "elementwise", "memory"],
                             log=lambda s: None, dtypes=["fp32"])
        cal, _, system = make_calibration(res, "fp32", cross_validate=False)
        origin = "on-the-fly quick calibration"
    r = e2e.run_e2e(model, system, cfg, log=typer.echo, calibration_origin=origin)
    reasons = r["contention"]["reasons"]
    if reasons:
        raise Contended(f"kvsim validate e2e: the machine was busy with other work while timing, so no result is reported "
                        f"(nothing written): {'; '.join(reasons)}. Re-run on a quiet machine (--wait-quiet 300).")
    r["command"] = "kvsim validate " + " ".join(argv_after("validate") or ["e2e"])
    # lazy: CLI start-up
    from kvsim.fileio import staged

    with staged(path) as tmp:
        e2e.save_json(r, tmp)
    _print_e2e(r)
    typer.echo(f"wrote {path}")
    if write_logs is not None:
        # lazy: CLI start-up
        from kvsim.commands.validate_replay import write_loop_logs

        hw_text = None
        if hw_file is None:
            with tempfile.TemporaryDirectory() as d:
                hw_text = write_hw(res, Path(d) / "hw.yaml").read_text(encoding="utf-8")
        cal_log = e2e.calibration_with_step(cal, r["step_overhead_fit"], f"kvsim validate e2e ({path.name}, its fit run)")
        typer.echo(f"wrote {', '.join(str(p) for p in write_loop_logs(write_logs, r, cfg, cal_log, hw_file, hw_text))}")
    if save_calibration_to:
        # lazy: CLI start-up
        from kvsim.costmodel.calibration import save_calibration

        cal2 = e2e.calibration_with_step(cal, r["step_overhead_fit"], f"kvsim validate e2e ({path.name}, its fit run)")
        if calibration and Path(save_calibration_to).resolve().parent != Path(calibration).resolve().parent:
            cal2 = cal2.model_copy(update={"hw": str((Path(calibration).parent / cal.hw).resolve())})
        save_calibration(cal2, save_calibration_to)
        typer.echo(f"wrote {save_calibration_to} (step overhead from the fit run)")
    bad = [c for c in r["checks"] if not c["ok"]]
    if bad:
        raise BeyondTolerance(f"kvsim validate e2e: {len(bad)} of {len(r['checks'])} checks beyond --tolerance "
                              f"{tolerance * 100:.0f}%: " + ", ".join(f"{metric_name(c['metric'])} {c['stat']} {c['error'] * 100:+.1f}%"
                                                                    for c in bad))


def _print_e2e(r: dict) -> None:
    con = console()
    c, st = r["step_overhead_fit"], r["steps"]
    fr = r["fit_run"]
    con.print(f"step overhead fitted on the fit run (requests {fr['requests'][0]}-{fr['requests'][1] - 1}, "
              f"{r['fit_rate_req_s']:.2f} req/s, {fr['steps']} steps): {c['step'] * 1e3:.2f} ms per step + "
              f"{c['step_seq'] * 1e6:.1f} us per sequence + {c['step_token'] * 1e6:.2f} us per token")
    con.print(f"report run ({r['rate_req_s']:.2f} req/s, {st['n']} steps, all held out): step time |error| median "
              f"{pct(st['all'].get('median'))}, p90 {pct(st['all'].get('p90'))}; single-sequence decode steps "
              f"({st['single_sequence_decode']['n']}) median {pct(st['single_sequence_decode'].get('median'))}; other steps "
              f"({st['other']['n']}) median {pct(st['other'].get('median'))}")
    blk = r["heldout"]
    verdict = {(k["metric"], k["stat"]): ("ok" if k["ok"] else "FAIL") for k in r["checks"]}
    rows = []
    for metric in ("ttft_s", "itl_s"):
        for k in ("p50", "p90", "p99", "mean"):
            rv, sv = blk["real"][metric].get(k), blk["sim"][metric].get(k)
            if rv is None:
                continue
            rows.append((metric_name(metric), k, f"{rv * 1e3:.1f} ms", f"{sv * 1e3:.1f} ms", f"{(sv / rv - 1) * 100:+.1f}%",
                         verdict.get((metric, k), "")))
    print_rows(con, "report run (held out): real torch loop vs kvsim simulate",
               ("metric", "stat", "real", "kvsim", "error", "check"), rows, left=("stat",))
    tol = r["config"]["tolerance"]
    con.print(f"checks (|error| <= {tol * 100:.0f}% for TTFT and ITL p50 and mean): {'passed' if r['passed'] else 'FAILED'}")
