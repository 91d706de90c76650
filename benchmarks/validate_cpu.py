"""Validation of the cost model on this machine's CPU: per-kernel error before/after calibration
and the e2e serving loop vs the simulator. Writes benchmarks/RESULTS.md `## Validation (CPU)`.

By default it renders the committed files in kvsim/validate/results/ (cpu-tiny-llama.*). With
``--run`` it first regenerates them with the real commands (about 3 minutes on 2 cores)::

    kvsim validate run --device cpu --out kvsim/validate/results/cpu-tiny-llama.json --wait-quiet 300
    kvsim validate calibrate --from kvsim/validate/results/cpu-tiny-llama.json \\
        --out kvsim/validate/results/cpu-tiny-llama.calibration.yaml
    kvsim validate e2e --device cpu --calibration kvsim/validate/results/cpu-tiny-llama.calibration.yaml \\
        --out kvsim/validate/results/cpu-tiny-llama.e2e.json --wait-quiet 300
    kvsim validate calibrate --from kvsim/validate/results/cpu-tiny-llama.json \\
        --e2e kvsim/validate/results/cpu-tiny-llama.e2e.json --out kvsim/validate/results/cpu-tiny-llama.calibration.yaml

The last command refits the same kernels (same result) and adds the e2e loop's per-step
overhead, so ``--calibration cpu-tiny-llama.calibration.yaml`` carries ``step`` too.

Run: python benchmarks/validate_cpu.py [--run] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT))
from _results import write_section

R = ROOT / "kvsim" / "validate" / "results"
BASE = "cpu-tiny-llama"
COMMANDS = [
    ["run", "--device", "cpu", "--out", f"kvsim/validate/results/{BASE}.json", "--wait-quiet", "300"],
    ["calibrate", "--from", f"kvsim/validate/results/{BASE}.json", "--out", f"kvsim/validate/results/{BASE}.calibration.yaml"],
    ["e2e", "--device", "cpu", "--calibration", f"kvsim/validate/results/{BASE}.calibration.yaml", "--out",
     f"kvsim/validate/results/{BASE}.e2e.json", "--wait-quiet", "300"],
    ["calibrate", "--from", f"kvsim/validate/results/{BASE}.json", "--e2e", f"kvsim/validate/results/{BASE}.e2e.json",
     "--out", f"kvsim/validate/results/{BASE}.calibration.yaml"],
]


def pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def step_split(e: dict) -> str:
    """Held-out step-time error split by single-sequence decode steps (MKL GEMV path) vs the rest."""
    import numpy as np

    groups = {"single-sequence decode steps": [], "all other steps": []}
    for s in e["step_records"]:
        if s["fit"]:
            continue
        meas = s["end_s"] - s["start_s"]
        key = "single-sequence decode steps" if len(s["decode_ctx"]) == 1 and not s["prefill"] else "all other steps"
        groups[key].append(abs(s["predicted_s"] / meas - 1))
    parts = [f"{k}: {len(v)} steps, |error| median {np.median(v) * 100:.1f}%" for k, v in groups.items() if v]
    return "Held-out step times by kind - " + "; ".join(parts) + (
        " (one-row GEMMs take MKL's GEMV path, ~2x faster than the small-M GEMM the gemm efficiency is fitted to).")


def render() -> str:
    from kvsim.costmodel.calibration import load_calibration
    from kvsim.validate.compare import by_op, rows_from_results, summarize
    from kvsim.validate.results import load_results

    res = load_results(R / f"{BASE}.json")
    cal = load_calibration(R / f"{BASE}.calibration.yaml")
    rows = rows_from_results(res, cal)
    fitted, every = summarize(rows, "fitted"), summarize(rows, "all")
    h = res.host
    out = [
        f"Machine: `{h.get('uname', platform.platform())}`; CPU `{h.get('model_name')}` "
        f"({h.get('logical_cpus')} logical CPUs, ISA {', '.join(f for f in h.get('isa_flags', []) if f.startswith(('avx512f', 'amx')))}), "
        f"{h.get('mem_bytes', 0) / 2**30:.1f} GiB; torch {res.torch_version}, {res.threads} threads; results created {res.created}; "
        f"other processes' load during the run: {h.get('other_load_cores_before')} / {h.get('other_load_cores_after')} cores.",
        "",
        "Commands (in this order):",
        "",
        "```",
        *("kvsim validate " + " ".join(c) for c in COMMANDS),
        "```",
        "",
        f"Model shapes: `{res.model}` (kvsim/validate/tiny-llama.yaml). Calibration dtype `{cal.dtype}`; "
        f"*before* = nominal datasheet-like CPU peaks (cores x FLOP/cycle x clock; DRAM = fair share of the socket) with kvsim's "
        f"default efficiencies, *after* = measured best-case peaks (`{BASE}.hw.yaml`) with the fitted efficiencies.",
        "",
        "| kernels | n | before median | before p90 | after median | after p90 |",
        "|---|---|---|---|---|---|",
        f"| fitted ({cal.dtype} + copies) | {fitted.n} | {pct(fitted.median_before)} | {pct(fitted.p90_before)} | "
        f"{pct(fitted.median_after)} | {pct(fitted.p90_after)} |",
    ]
    for op, s in by_op(rows).items():
        out.append(f"| - {op} | {s.n} | {pct(s.median_before)} | {pct(s.p90_before)} | {pct(s.median_after)} | {pct(s.p90_after)} |")
    out.append(f"| all (incl. bf16, not fitted) | {every.n} | {pct(every.median_before)} | {pct(every.p90_before)} | "
               f"{pct(every.median_after)} | {pct(every.p90_after)} |")
    out += ["", "Fitted efficiencies:", "", "| op class | compute | memory | overhead |", "|---|---|---|---|"]
    for op, e in cal.efficiencies.items():
        fmt = lambda k: f"{e[k]:.3f}" if k in e else "-"  # noqa: E731
        out.append(f"| {op} | {fmt('compute')} | {fmt('memory')} | {e.get('overhead_s', 0.0) * 1e6:.1f} us |")
    e2e_path = R / f"{BASE}.e2e.json"
    if e2e_path.is_file():
        e = json.loads(e2e_path.read_text())
        c = e["config"]
        st = e["steps"]
        out += ["", f"E2E: `{e.get('command', '')}` - {c['num_requests']} requests of `{c['trace']}` (prompt <= {c['max_prompt']}, "
                f"output <= {c['max_output']}) at {e['rate_req_s']:.2f} req/s, max_num_seqs {c['max_num_seqs']}, {c['dtype']}; "
                f"loop wall time {e['loop_wall_s']:.1f} s; step overhead fitted on the first half of the run "
                f"({st['n_fit']} of {st['n']} steps): {e['step_overhead_fit_s'] * 1e3:.2f} ms; held-out step time |error| "
                f"median {pct(st['heldout_median_abs_err'])}, p90 {pct(st['heldout_p90_abs_err'])}.", "",
                step_split(e), "",
                "| requests | metric | stat | real | kvsim | error |", "|---|---|---|---|---|---|"]
        for key, lab in (("heldout", "held-out (2nd half)"), ("all", "all")):
            blk = e[key]
            for m in ("ttft_s", "tbt_s"):
                for k in ("p50", "p90", "p99", "mean"):
                    rv, sv = blk["real"][m].get(k), blk["sim"][m].get(k)
                    if rv:
                        out.append(f"| {lab} | {m[:-2].upper()} | {k} | {rv * 1e3:.1f} ms | {sv * 1e3:.1f} ms | {(sv / rv - 1) * 100:+.1f}% |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="regenerate the results with the real commands first")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.run:
        for c in COMMANDS:
            subprocess.run([sys.executable, "-m", "kvsim", "validate", *c], check=True, cwd=ROOT)
    body = render()
    print(body)
    if not args.no_record:
        write_section("Validation (CPU)", body)


if __name__ == "__main__":
    main()
