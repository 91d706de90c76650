"""``kvsim validate run|calibrate|compare|e2e|papers|replay``: how far to trust the cost model.

Importing this module imports neither torch nor scipy: each command imports what it needs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from kvsim.commands.common import console, fmt_s, print_json
from kvsim.commands.tables import print_rows
from kvsim.commands.validate_replay import replay_cmd
from kvsim.commands.validate_common import (
    check_outputs, COMMITTED, Contended, Device, DeviceOpt, Dtype, ForceOpt, HwOpt, JsonOpt, ModelOpt, pct,
    QuickOpt, run_benchmarks, ThreadsOpt, WaitQuietOpt, write_hw, wrote_note,
)
from kvsim.commands.validate_common import BeyondTolerance  # noqa: F401  (re-exported: users and tests import them from here)
from kvsim.commands.validate_e2e import e2e_cmd
from kvsim.errors import ConfigError


app = typer.Typer(help="microbenchmarks, calibration and accuracy of the cost model (torch for run/calibrate/e2e)",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


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
        check_outputs(out, [sibling(out, ".hw.yaml")], force)
    else:
        check_outputs(None, [], force)
    res = run_benchmarks(device, model, quick, hw, threads, wait_quiet, "run")
    path = Path(out or f"kvsim-validate-{device.value}-{res.model}.json")
    hw_path = sibling(path, ".hw.yaml")
    if out is None:
        check_outputs(path, [hw_path], force)
    hw_existed = hw_path.exists()
    save_results(res, path)
    write_hw(res, hw_path)
    typer.echo(f"wrote {path} ({len(res.kernels)} kernels) and its local hw spec {wrote_note(hw_path, hw_existed)}")
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
    dtype: Annotated[Dtype | None, typer.Option("--dtype", case_sensitive=False, help="math dtype to fit (default fp32 on cpu, bf16 on cuda)")] = None,
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
    check_outputs(out, [hw_path] + ([] if from_results else [rpath]), force)
    step = _e2e_step(Path(e2e_results)) if e2e_results else None  # (inputs checked before any timing)
    dt = dtype.value if dtype else None
    if from_results:
        res = load_results(from_results)
        want = dt or ("fp32" if res.device == "cpu" else "bf16")
        present = sorted({d for d in map(kernel_dtype, res.kernels) if d})
        if want not in present:
            raise ConfigError(f"--dtype {want}: {from_results} has no {want} kernels (present: {', '.join(present) or 'none'})")
    else:
        res = run_benchmarks(device, model, quick, hw, threads, wait_quiet, "calibrate")
        r_existed = rpath.exists()
        save_results(res, rpath)
        typer.echo(f"wrote the raw timings to {wrote_note(rpath, r_existed)}")
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
    write_hw(res, hw_path)
    save_calibration(cal, outp)
    # lazy: CLI start-up
    from kvsim.validate.compare import rows_from_calibration, summarize

    s = summarize(rows_from_calibration(cal))
    typer.echo(f"wrote {outp} ({cal.dtype}) and the local hw spec it refers to, {wrote_note(hw_path, hw_existed)}")
    _print_effs(cal)
    typer.echo(f"per-kernel |error| over {s.n} fitted kernels: before (default efficiencies) median {pct(s.median_before)} "
               f"p90 {pct(s.p90_before)}; after, IN-SAMPLE (the kernels the fit used) median {pct(s.median_after)} "
               f"p90 {pct(s.p90_after)}")
    for line in _held_out_lines(cal):
        typer.echo(line)
    typer.echo(f"use: kvsim estimate --hw {hw_path} --calibration {outp} --model ...")


def _held_out_lines(cal) -> list[str]:
    """The calibration's held-out errors, one line each (or why there are none)."""
    v = cal.validation or {}
    if not v.get("kfold"):
        return ["held-out error: not computed for this calibration (refit it: kvsim validate calibrate --from RESULTS)"]
    k, sl = v["kfold"], v.get("small_to_large", {})
    out = [f"held-out, {k['k']}-fold cross-validation ({k['n']} kernels): median {pct(k.get('median'))}, p90 {pct(k.get('p90'))}"]
    if sl.get("n"):
        out.append(f"held-out, fit on the smaller half of each op class's shapes ({sl['n_fit']} kernels), test on the larger "
                   f"half ({sl['n']}): median {pct(sl.get('median'))}, p90 {pct(sl.get('p90'))}")
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
               [(r.kernel + ("" if r.fitted else " *"), r.op, fmt_s(r.measured_s), fmt_s(r.before_s), pct(r.err_before),
                 fmt_s(r.after_s), pct(r.err_after), fmt_s(r.cv_s) if r.cv_s is not None else "-", pct(r.err_cv))
                for r in rows if r.fitted or all_kernels], left=("op",))
    con.print("after = the calibration's prediction: IN-SAMPLE for fitted kernels (the fit saw them); held-out = "
              "predicted by a cross-validation fit that did not see the kernel")
    for s in (fitted, every):
        cv = f"; held-out ({s.n_cv}) median {pct(s.median_cv)}, p90 {pct(s.p90_cv)}" if s.n_cv else ""
        con.print(f"{s.subset} kernels ({s.n}): |error| before median {pct(s.median_before)}, p90 {pct(s.p90_before)}; "
                  f"after{' (in-sample)' if s.subset == 'fitted' else ''} median {pct(s.median_after)}, p90 {pct(s.p90_after)}{cv}")
    for op, s in by_op(rows).items():
        con.print(f"  {op:<13s} ({s.n:3d}): before {pct(s.median_before)} / {pct(s.p90_before)}  in-sample {pct(s.median_after)} / "
                  f"{pct(s.p90_after)}  held-out {pct(s.median_cv)} / {pct(s.p90_cv)}")
    for line in _held_out_lines(cal):
        con.print(line)
    if all_kernels:
        con.print("* not in the fit (another dtype than the calibration's)")


app.command("e2e")(e2e_cmd)
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

# `kvsim validate memory`: vLLM start-up logs vs kvsim's engine memory
from kvsim.commands.validate_memory import memory_cmd  # noqa: E402

app.command("memory")(memory_cmd)
