"""``kvsim validate run|calibrate|compare|e2e|papers|replay``: how far to trust the cost model.

Importing this module imports neither torch nor scipy: each command imports what it needs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from kvsim.commands.common import DURATION_HELP, console, fmt_s, metric_name, print_json
from kvsim.commands.tables import print_rows
from kvsim.commands.validate_replay import replay_cmd
from kvsim.durations import parse_duration_s
from kvsim.errors import ConfigError, KvsimError

app = typer.Typer(help="microbenchmarks, calibration and accuracy of the cost model (torch for run/calibrate/e2e)",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

RESULTS_DIR = Path(__file__).resolve().parent.parent / "validate" / "results"
COMMITTED = RESULTS_DIR / "cpu-tiny-llama"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class Dtype(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class BeyondTolerance(KvsimError):
    """A validation ran and printed its numbers, and some are beyond the thresholds."""

    exit_code = 2


class Contended(KvsimError):
    """The machine was busy with other work while timing: no number is reported."""

    exit_code = 3


DeviceOpt = Annotated[Device, typer.Option("--device", help="where the kernels run")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="model whose shapes to benchmark (default: tiny-llama on cpu, llama-3.1-8b on cuda)")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="small shapes, few repeats (< 60 s on 2 CPU cores; CI)")]
HwOpt = Annotated[str | None, typer.Option("--hw", help="cuda: the GPU spec (name or YAML) if the device name is not recognised")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="torch intra-op threads (default: torch's; e2e: the calibration's)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
WaitQuietOpt = Annotated[str, typer.Option("--wait-quiet", metavar="DURATION", help=f"wait up to this long for other processes to go idle ({DURATION_HELP})")]


def _torch(cmd: str):
    # lazy: CLI start-up
    from kvsim.validate import require_torch

    return require_torch(cmd)


def _check_device(device: Device, cmd: str) -> None:
    torch = _torch(cmd)
    if device == Device.cuda and not torch.cuda.is_available():
        raise ConfigError(f"kvsim validate {cmd} --device cuda: torch sees no CUDA device (torch {torch.__version__})")


def _model(name: str | None, device: Device):
    # lazy: CLI start-up
    from kvsim.validate.models import default_model, resolve_model

    return resolve_model(name) if name else default_model(device.value)


def _gpu_spec(hw: str | None):
    if not hw:
        return None
    # lazy: CLI start-up
    from kvsim.hardware import load_system

    return load_system(hw).gpu


def _run(device: Device, model: str | None, quick: bool, hw: str | None, threads: int | None, wait_quiet: str, cmd: str):
    wait_s = parse_duration_s(wait_quiet, "--wait-quiet", allow_zero=True)
    _check_device(device, cmd)
    # lazy: CLI start-up
    from kvsim.validate.cpuenv import wait_quiet as _wait
    from kvsim.validate.runner import run_benchmarks

    spec, gpu = _model(model, device), _gpu_spec(hw)  # (bad names fail before any waiting or timing)
    if wait_s > 0:
        _wait(wait_s, log=lambda s: print(s, file=sys.stderr))
    return run_benchmarks(device.value, spec, quick=quick, gpu_spec=gpu, threads=threads,
                          command="kvsim validate " + " ".join(_argv_after("validate") or [cmd]))


def _argv_after(word: str) -> list[str]:
    """The command line after ``word`` (for the record in results files)."""
    argv = sys.argv
    return argv[argv.index(word) + 1:] if word in argv else []


HW_MARK = "# Local device spec written by `kvsim validate`"
ForceOpt = Annotated[bool, typer.Option("--force", help="overwrite companion files (X.hw.yaml, X.results.json) kvsim did not write")]


def _kvsim_wrote(path: Path) -> bool:
    """Whether the existing ``path`` looks like kvsim's own companion file (hw YAML header, results JSON)."""
    try:
        if path.name.endswith(".hw.yaml"):
            with open(path, encoding="utf-8") as f:
                return f.readline().startswith(HW_MARK)
        data = json.loads(path.read_text(encoding="utf-8"))
        return isinstance(data, dict) and "kernels" in data
    except (OSError, ValueError):
        return False


def _check_outputs(main: str | Path | None, companions: list[Path], force: bool) -> None:
    """Before measuring (minutes): every output can be written, and no companion file kvsim
    derived from --out (a name the user never gave) would replace a file kvsim did not write."""
    # lazy: CLI start-up
    from kvsim.fileio import OutputError, check_output_file, check_writable_dir

    if main is None:
        check_writable_dir(".", "--out (default: the current directory)")
    else:
        check_output_file(main, "--out")
    for c in companions:
        check_output_file(c, "--out")
        if c.exists() and not force and not _kvsim_wrote(c):
            raise OutputError(f"{c} (derived from --out) exists and was not written by kvsim; "
                              "move it away, choose another --out, or pass --force")


def _write_hw(res, path: Path) -> Path:
    # lazy: CLI start-up
    from kvsim.fileio import staged
    from kvsim.hardware import GPUSpec
    from kvsim.validate.localhw import write_spec_yaml

    spec = GPUSpec.model_validate(res.measured_gpu or res.nominal_gpu)
    note = (HW_MARK + " (use with --hw this-file).\n"
            + ("# CPU: the peaks below are MEASURED best cases, not datasheet values (see notes).\n" if res.measured_gpu else ""))
    with staged(path) as tmp:
        write_spec_yaml(spec, tmp, header=note)
    return path


def _wrote(path: Path, existed: bool) -> str:
    return f"{path} (replaced the previous one)" if existed else str(path)


@app.command("run")
def run_cmd(
    device: DeviceOpt = Device.cpu,
    model: ModelOpt = None,
    quick: QuickOpt = False,
    out: Annotated[str | None, typer.Option("--out", help="results JSON (default kvsim-validate-DEVICE-MODEL.json)")] = None,
    hw: HwOpt = None,
    threads: ThreadsOpt = None,
    wait_quiet: WaitQuietOpt = "0",
    force: ForceOpt = False,
) -> None:
    """Time torch kernels at a model's shapes; save raw timings and each kernel's work (JSON + local hw YAML)."""
    # lazy: CLI start-up
    from kvsim.validate.calibrate import sibling
    from kvsim.validate.results import save_results

    if out is not None:
        _check_outputs(out, [sibling(out, ".hw.yaml")], force)
    else:
        _check_outputs(None, [], force)
    res = _run(device, model, quick, hw, threads, wait_quiet, "run")
    path = Path(out or f"kvsim-validate-{device.value}-{res.model}.json")
    hw_path = sibling(path, ".hw.yaml")
    if out is None:
        _check_outputs(path, [hw_path], force)
    hw_existed = hw_path.exists()
    save_results(res, path)
    _write_hw(res, hw_path)
    typer.echo(f"wrote {path} ({len(res.kernels)} kernels) and its local hw spec {_wrote(hw_path, hw_existed)}")
    # lazy: CLI start-up
    from kvsim.validate.fit import contended_kernels

    busy = contended_kernels([k for k in res.kernels if k.fit])
    if busy:
        print(f"warning: {len(busy)} of {len([k for k in res.kernels if k.fit])} kernels were timed while other processes kept "
              "the CPU busy (after retries); `calibrate` refuses to fit more than 10% of them", file=sys.stderr)


@app.command("calibrate")
def calibrate_cmd(
    device: DeviceOpt = Device.cpu,
    model: ModelOpt = None,
    quick: QuickOpt = False,
    out: Annotated[str, typer.Option("--out", help="calibration YAML to write")] = "kvsim-calibration.yaml",
    from_results: Annotated[str | None, typer.Option("--from", help="refit saved results instead of running the benchmarks")] = None,
    dtype: Annotated[Dtype | None, typer.Option("--dtype", help="math dtype to fit (default fp32 on cpu, bf16 on cuda)")] = None,
    hw: HwOpt = None,
    threads: ThreadsOpt = None,
    wait_quiet: WaitQuietOpt = "0",
    e2e_results: Annotated[str | None, typer.Option("--e2e", help="add the per-step overhead fitted by a saved `validate e2e` run (its JSON)")] = None,
    allow_contended: Annotated[bool, typer.Option("--allow-contended", help="fit even if more than 10% of the kernels were timed under other processes' load")] = False,
    force: ForceOpt = False,
) -> None:
    """Run the microbenchmarks (or load --from), fit efficiencies and overheads per op class, write a calibration.

    Prints the per-kernel error in-sample (the kernels the fit used) and held out (5-fold
    cross-validation; fit on the smaller half of each op class's shapes, test on the larger half)."""
    # lazy: CLI start-up
    from kvsim.costmodel.calibration import save_calibration
    from kvsim.validate.calibrate import make_calibration, sibling
    from kvsim.validate.fit import kernel_dtype
    from kvsim.validate.results import load_results, save_results

    outp = Path(out)
    hw_path, rpath = sibling(outp, ".hw.yaml"), sibling(outp, ".results.json")
    _check_outputs(out, [hw_path] + ([] if from_results else [rpath]), force)
    step = _e2e_step(Path(e2e_results)) if e2e_results else None  # (inputs checked before any timing)
    dt = dtype.value if dtype else None
    if from_results:
        res = load_results(from_results)
        want = dt or ("fp32" if res.device == "cpu" else "bf16")
        present = sorted({d for d in map(kernel_dtype, res.kernels) if d})
        if want not in present:
            raise ConfigError(f"--dtype {want}: {from_results} has no {want} kernels (present: {', '.join(present) or 'none'})")
    else:
        res = _run(device, model, quick, hw, threads, wait_quiet, "calibrate")
        r_existed = rpath.exists()
        save_results(res, rpath)
        typer.echo(f"wrote the raw timings to {_wrote(rpath, r_existed)}")
    # lazy: CLI start-up
    from kvsim.validate.fit import CONTENDED_SHARE_MAX, contended_kernels, select_kernels

    chosen = select_kernels(res.kernels, dt or ("fp32" if res.device == "cpu" else "bf16"))
    busy = contended_kernels(chosen)
    if len(busy) > CONTENDED_SHARE_MAX * len(chosen) and not allow_contended:
        raise Contended(f"kvsim validate calibrate: {len(busy)} of {len(chosen)} kernels were timed while other processes "
                        f"kept the CPU busy (after retries), so no calibration is fitted or reported"
                        f"{'' if from_results else f' (raw timings kept in {rpath})'}. Re-time on a quiet machine "
                        f"(--wait-quiet 300), or pass --allow-contended.")
    typer.echo("fitting, then 6 held-out refits (5-fold cross-validation, small -> large shapes)...")
    cal, _, _ = make_calibration(res, dt, hw_path=hw_path.name)
    if step is not None:
        # lazy: CLI start-up
        from kvsim.validate.e2e import calibration_with_step

        cal = calibration_with_step(cal, step, f"kvsim validate e2e ({Path(e2e_results).name}, fitted on its fit run)")
    hw_existed = hw_path.exists()
    _write_hw(res, hw_path)
    save_calibration(cal, outp)
    # lazy: CLI start-up
    from kvsim.validate.compare import rows_from_calibration, summarize

    s = summarize(rows_from_calibration(cal))
    typer.echo(f"wrote {outp} ({cal.dtype}) and the local hw spec it refers to, {_wrote(hw_path, hw_existed)}")
    _print_effs(cal)
    typer.echo(f"per-kernel |error| over {s.n} fitted kernels: before (default efficiencies) median {_pct(s.median_before)} "
               f"p90 {_pct(s.p90_before)}; after, IN-SAMPLE (the kernels the fit used) median {_pct(s.median_after)} "
               f"p90 {_pct(s.p90_after)}")
    for line in _held_out_lines(cal):
        typer.echo(line)
    typer.echo(f"use: kvsim estimate --hw {hw_path} --calibration {outp} --model ...")


def _held_out_lines(cal) -> list[str]:
    """The calibration's held-out errors, one line each (or why there are none)."""
    v = cal.validation or {}
    if not v.get("kfold"):
        return ["held-out error: not computed for this calibration (refit it: kvsim validate calibrate --from RESULTS)"]
    k, sl = v["kfold"], v.get("small_to_large", {})
    out = [f"held-out, {k['k']}-fold cross-validation ({k['n']} kernels): median {_pct(k.get('median'))}, p90 {_pct(k.get('p90'))}"]
    if sl.get("n"):
        out.append(f"held-out, fit on the smaller half of each op class's shapes ({sl['n_fit']} kernels), test on the larger "
                   f"half ({sl['n']}): median {_pct(sl.get('median'))}, p90 {_pct(sl.get('p90'))}")
    return out


def _e2e_step(path: Path) -> dict[str, float]:
    """The per-step overhead fitted by a saved, uncontended `validate e2e` run."""
    # lazy: CLI start-up
    from kvsim.validate.e2e import step_overhead_of

    if not path.is_file():
        raise ConfigError(f"--e2e {path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        coef = step_overhead_of(data)
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"--e2e {path}: not a current `kvsim validate e2e` results file (no step_overhead_fit)") from None
    if (data.get("contention") or {}).get("reasons"):
        raise ConfigError(f"--e2e {path}: that run was contended ({'; '.join(data['contention']['reasons'])}); not used")
    return coef


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _print_effs(cal) -> None:
    print_rows(console(), f"fitted efficiencies ({cal.device}, {cal.dtype})", ("op class", "compute", "memory", "overhead"),
               [(op, f"{e['compute']:.3f}" if "compute" in e else "-", f"{e['memory']:.3f}" if "memory" in e else "-",
                 f"{e.get('overhead_s', 0.0) * 1e6:.1f} us") for op, e in cal.efficiencies.items()])


def _defaults(results: str | None, calibration: str | None) -> tuple[str | None, str | None]:
    if results is None and calibration is None:
        r, c = COMMITTED.with_suffix(".json"), Path(str(COMMITTED) + ".calibration.yaml")
        if c.is_file():
            return (str(r) if r.is_file() else None), str(c)
        raise ConfigError("kvsim validate compare: pass --results and/or --calibration (no committed calibration found)")
    return results, calibration


@app.command("compare")
def compare_cmd(
    results: Annotated[str | None, typer.Option("--results", help="results JSON from `kvsim validate run`")] = None,
    calibration: Annotated[str | None, typer.Option("--calibration", help="calibration YAML (default: fit the results now)")] = None,
    all_kernels: Annotated[bool, typer.Option("--all/--fitted", help="list every kernel, or only the fitted dtype's")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Predicted vs measured per kernel, with median and p90 |error|, before (datasheet) and after calibration."""
    # lazy: CLI start-up
    from kvsim.costmodel.calibration import load_calibration
    from kvsim.validate.compare import (
        as_dicts,
        by_op,
        rows_from_calibration,
        rows_from_results,
        summarize,
    )

    results, calibration = _defaults(results, calibration)
    if results:
        # lazy: CLI start-up
        from kvsim.validate.results import load_results

        res = load_results(results)
        if calibration:
            cal = load_calibration(calibration)
        else:
            # lazy: CLI start-up
            from kvsim.validate.calibrate import make_calibration

            cal, _, _ = make_calibration(res)
        rows = rows_from_results(res, cal)
    else:
        cal = load_calibration(calibration)
        rows = rows_from_calibration(cal)
    fitted, every = summarize(rows, "fitted"), summarize(rows, "all")
    if as_json:
        print_json({"fitted": fitted.__dict__, "all": every.__dict__, "by_op": {k: v.__dict__ for k, v in by_op(rows).items()},
                    "kernels": as_dicts(rows), "device": cal.device, "dtype": cal.dtype, "validation": cal.validation,
                    "note": "after = in-sample for fitted kernels; cv = held-out (k-fold cross-validation)"})
        return
    con = console()
    print_rows(con, f"predicted vs measured: {cal.device} (calibration dtype {cal.dtype or 'all'})",
               ("kernel", "op", "measured", "before", "err before", "after", "err after", "held-out", "err held-out"),
               [(r.kernel + ("" if r.fitted else " *"), r.op, fmt_s(r.measured_s), fmt_s(r.before_s), _pct(r.err_before),
                 fmt_s(r.after_s), _pct(r.err_after), fmt_s(r.cv_s) if r.cv_s is not None else "-", _pct(r.err_cv))
                for r in rows if r.fitted or all_kernels], left=("op",))
    con.print("after = the calibration's prediction: IN-SAMPLE for fitted kernels (the fit saw them); held-out = "
              "predicted by a cross-validation fit that did not see the kernel")
    for s in (fitted, every):
        cv = f"; held-out ({s.n_cv}) median {_pct(s.median_cv)}, p90 {_pct(s.p90_cv)}" if s.n_cv else ""
        con.print(f"{s.subset} kernels ({s.n}): |error| before median {_pct(s.median_before)}, p90 {_pct(s.p90_before)}; "
                  f"after{' (in-sample)' if s.subset == 'fitted' else ''} median {_pct(s.median_after)}, p90 {_pct(s.p90_after)}{cv}")
    for op, s in by_op(rows).items():
        con.print(f"  {op:<13s} ({s.n:3d}): before {_pct(s.median_before)} / {_pct(s.p90_before)}  in-sample {_pct(s.median_after)} / "
                  f"{_pct(s.p90_after)}  held-out {_pct(s.median_cv)} / {_pct(s.p90_cv)}")
    for line in _held_out_lines(cal):
        con.print(line)
    if all_kernels:
        con.print("* not in the fit (another dtype than the calibration's)")


@app.command("e2e")
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
    _check_device(device, "e2e")
    path = Path(out or "kvsim-validate-e2e.json")
    _check_outputs(path, [], False)
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
    r["command"] = "kvsim validate " + " ".join(_argv_after("validate") or ["e2e"])
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
                hw_text = _write_hw(res, Path(d) / "hw.yaml").read_text(encoding="utf-8")
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
              f"{_pct(st['all'].get('median'))}, p90 {_pct(st['all'].get('p90'))}; single-sequence decode steps "
              f"({st['single_sequence_decode']['n']}) median {_pct(st['single_sequence_decode'].get('median'))}; other steps "
              f"({st['other']['n']}) median {_pct(st['other'].get('median'))}")
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


app.command("replay")(replay_cmd)


@app.command("papers")
def papers_cmd(as_json: JsonOpt = False) -> None:
    """Reproduce published measurements (METHODS.md section 2) with kvsim's defaults: published, predicted, error."""
    # lazy: CLI start-up
    from kvsim.validate.papers import render_table, run_papers

    rows = run_papers()
    if as_json:
        print_json([r.model_dump() for r in rows])
        return
    typer.echo(render_table(rows))


# `kvsim validate kernels` lives in its own module (the GPU kernel tables)
from kvsim.commands.validate_kernels import kernels_cmd  # noqa: E402

app.command("kernels")(kernels_cmd)
