"""Validation of the cost model on CPUs: per-kernel error (before, held out, in-sample) and the e2e
serving loop vs the simulator. Writes benchmarks/RESULTS.md `## Validation (CPU)`.

One set of committed files per machine in kvsim/validate/results/ (``BASES``: cpu-epyc-tiny-llama.*
on an AMD EPYC 2-vCPU VM, cpu-tiny-llama.* on an Intel Sapphire Rapids 2-vCPU VM); each is rendered
with its machine record. With ``--run [--base NAME]`` the files of NAME are first regenerated on
this machine with the real commands (about 5 minutes on 2 quiet cores)::

    kvsim validate run --device cpu --out kvsim/validate/results/NAME.json --wait-quiet 300
    kvsim validate calibrate --from kvsim/validate/results/NAME.json --out kvsim/validate/results/NAME.calibration.yaml
    kvsim validate e2e --device cpu --calibration kvsim/validate/results/NAME.calibration.yaml \\
        --out kvsim/validate/results/NAME.e2e.json --wait-quiet 300
    kvsim validate calibrate --from kvsim/validate/results/NAME.json \\
        --e2e kvsim/validate/results/NAME.e2e.json --out kvsim/validate/results/NAME.calibration.yaml

The last command refits the same kernels (same result) and adds the per-step overhead the e2e
command fitted on its fit run, so ``--calibration NAME.calibration.yaml`` carries it too.
``e2e`` exits 3 without writing anything when the machine was contended: run it in a quiet window.
A calibration describes the machine its kernels ran on: never run ``e2e`` with another machine's.

Run: python benchmarks/validate_cpu.py [--run [--base NAME]] [--no-record]
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
#: one set of committed files per machine the validation ran on (``--base`` picks one for ``--run``)
BASES = ("cpu-epyc-tiny-llama", "cpu-tiny-llama")


#: runs that the contention checks refused (nothing was committed from them): date, machine, command, outcome
REFUSED = [
    ("2026-12-01", "AMD EPYC 2-vCPU VM (shared with other engineers' test runs)",
     "kvsim validate run --device cpu --out kvsim/validate/results/cpu-epyc-tiny-llama.json (after 20 s of quiet), then "
     "kvsim validate calibrate --from kvsim/validate/results/cpu-epyc-tiny-llama.json",
     "`run` warned that 153 of 160 kernels were timed under other processes' load after retries (1.0-2.0 cores busy); "
     "`calibrate` refused (exit 3: 78 of 83 kernels to fit). No e2e was attempted on that machine without its own calibration."),
]


def commands(base: str) -> list[list[str]]:
    f = f"kvsim/validate/results/{base}"
    return [
        ["run", "--device", "cpu", "--out", f"{f}.json", "--wait-quiet", "300"],
        ["calibrate", "--from", f"{f}.json", "--out", f"{f}.calibration.yaml"],
        ["e2e", "--device", "cpu", "--calibration", f"{f}.calibration.yaml", "--out", f"{f}.e2e.json", "--wait-quiet", "300"],
        ["calibrate", "--from", f"{f}.json", "--e2e", f"{f}.e2e.json", "--out", f"{f}.calibration.yaml"],
    ]


def pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def render_kernels(BASE: str) -> list[str]:
    from kvsim.costmodel.calibration import load_calibration
    from kvsim.validate.compare import by_op, rows_from_results, summarize
    from kvsim.validate.results import load_results

    res = load_results(R / f"{BASE}.json")
    cal = load_calibration(R / f"{BASE}.calibration.yaml")
    rows = rows_from_results(res, cal)
    fitted, every = summarize(rows, "fitted"), summarize(rows, "all")
    v = cal.validation or {}
    kf, sl = v.get("kfold", {}), v.get("small_to_large", {})
    h = res.host
    out = [
        f"Machine: `{h.get('uname', platform.platform())}`; CPU `{h.get('model_name')}` "
        f"({h.get('logical_cpus')} logical CPUs, ISA {', '.join(f for f in h.get('isa_flags', []) if f.startswith(('avx512f', 'amx')))}), "
        f"{h.get('mem_bytes', 0) / 2**30:.1f} GiB; torch {res.torch_version}, {res.threads} threads; kernels timed {res.created}; "
        f"other processes' load during the run: {h.get('other_load_cores_before')} / {h.get('other_load_cores_after')} cores; "
        f"calibration fitted {cal.created}.",
        "",
        "Commands (in this order; the first re-times the kernels, the rest only refit and replay):",
        "",
        "```",
        *("kvsim validate " + " ".join(c) for c in commands(BASE)),
        "```",
        "",
        f"Model shapes: `{res.model}` (kvsim/validate/tiny-llama.yaml). Calibration dtype `{cal.dtype}`; "
        f"*before* = nominal datasheet-like CPU peaks (cores x FLOP/cycle x clock; DRAM = fair share of the socket) with kvsim's "
        f"default efficiencies; *in-sample* = measured best-case peaks (`{BASE}.hw.yaml`) with the efficiencies fitted on these "
        f"same kernels (not a prediction); *held-out* = each kernel predicted by a {kf.get('k', 5)}-fold cross-validation fit that "
        f"did not see it (stratified by op class, seed {kf.get('seed', 0)}).",
        "",
        "| kernels | n | before median | before p90 | in-sample median | in-sample p90 | held-out median | held-out p90 |",
        "|---|---|---|---|---|---|---|---|",
        f"| fitted ({cal.dtype} + copies) | {fitted.n} | {pct(fitted.median_before)} | {pct(fitted.p90_before)} | "
        f"{pct(fitted.median_after)} | {pct(fitted.p90_after)} | {pct(fitted.median_cv)} | {pct(fitted.p90_cv)} |",
    ]
    for op, x in by_op(rows).items():
        out.append(f"| - {op} | {x.n} | {pct(x.median_before)} | {pct(x.p90_before)} | {pct(x.median_after)} | {pct(x.p90_after)} | "
                   f"{pct(x.median_cv)} | {pct(x.p90_cv)} |")
    out.append(f"| all (incl. bf16, not fitted) | {every.n} | {pct(every.median_before)} | {pct(every.p90_before)} | "
               f"{pct(every.median_after)} | {pct(every.p90_after)} | - | - |")
    if sl.get("n"):
        out += ["", f"Shape extrapolation (held out): fitted on the smaller half of each op class's kernels by work ({sl['n_fit']} "
                f"kernels), tested on the larger half ({sl['n']}): |error| median {pct(sl.get('median'))}, p90 {pct(sl.get('p90'))}; "
                "per class: " + ", ".join(f"{op} {pct(x.get('median'))}" for op, x in sl.get("by_op", {}).items() if x.get("n")) + "."]
    out += ["", "Fitted efficiencies (all kernels):", "", "| op class | compute | memory | overhead |", "|---|---|---|---|"]
    for op, e in cal.efficiencies.items():
        fmt = lambda k: f"{e[k]:.3f}" if k in e else "-"  # noqa: E731
        out.append(f"| {op} | {fmt('compute')} | {fmt('memory')} | {e.get('overhead_s', 0.0) * 1e6:.1f} us |")
    return out


def render_e2e(BASE: str) -> list[str]:
    e2e_path = R / f"{BASE}.e2e.json"
    e = json.loads(e2e_path.read_text()) if e2e_path.is_file() else {}
    if e.get("version") != 2:
        return ["", "E2E: no current result on this machine (`kvsim validate e2e` writes one only when the machine was quiet "
                "throughout; an earlier result here was fitted on the run it reported and is withdrawn)."]
    c, st, co, fit = e["config"], e["steps"], e["contention"], e["step_overhead_fit"]
    out = ["", f"E2E ({e['created']}): `{e.get('command', '')}` - report run: requests 0-{c['num_requests'] - 1} of `{c['trace']}` "
           f"(prompt <= {c['max_prompt']}, output <= {c['max_output']}) at {e['rate_req_s']:.2f} req/s, max_num_seqs "
           f"{c['max_num_seqs']}, {c['dtype']}, {e['threads']} threads, loop wall time {e['loop_wall_s']:.1f} s. The step overhead was "
           f"fitted on a separate fit run (requests {e['fit_run']['requests'][0]}-{e['fit_run']['requests'][1] - 1} at "
           f"{e['fit_rate_req_s']:.2f} req/s, {e['fit_run']['steps']} steps): {fit['step'] * 1e3:.2f} ms per step + "
           f"{fit['step_seq'] * 1e6:.1f} us per sequence + {fit['step_token'] * 1e6:.2f} us per token. Everything below is held out.",
           "",
           f"Contention record: other processes {co['other_cores']:.2f} cores (limit 0.30 + {co['idle_cores']:.0f} idle), steal "
           f"{pct(co['steal_fraction'])}, fixed-kernel spread {pct(co['probe_before']['spread'])} before / "
           f"{pct(co['probe_after']['spread'])} after, median drift "
           f"{(co['probe_after']['median_s'] / co['probe_before']['median_s'] - 1) * 100:+.1f}%.",
           "",
           f"Report-run step times ({st['n']} steps): |error| median {pct(st['all'].get('median'))}, p90 {pct(st['all'].get('p90'))}; "
           f"single-sequence decode steps ({st['single_sequence_decode']['n']}): median {pct(st['single_sequence_decode'].get('median'))}; "
           f"all other steps ({st['other']['n']}): median {pct(st['other'].get('median'))} (one-row GEMMs take MKL's GEMV path, "
           "~2x faster than the small-M GEMM the gemm efficiency is fitted to).",
           "", "| metric | stat | real | kvsim | error | check |", "|---|---|---|---|---|---|"]
    verdict = {(k["metric"], k["stat"]): ("ok" if k["ok"] else "FAIL") for k in e["checks"]}
    blk = e["heldout"]
    for m in ("ttft_s", "itl_s"):
        for k in ("p50", "p90", "p99", "mean"):
            rv, sv = blk["real"][m].get(k), blk["sim"][m].get(k)
            if rv:
                out.append(f"| {m[:-2].upper()} | {k} | {rv * 1e3:.1f} ms | {sv * 1e3:.1f} ms | {(sv / rv - 1) * 100:+.1f}% | "
                           f"{verdict.get((m, k), '')} |")
    out += ["", f"Checks (|error| <= {c['tolerance'] * 100:.0f}% for TTFT and ITL p50 and mean): "
            f"{'passed' if e['passed'] else 'FAILED (the command exited 2)'}."]
    return out


def render() -> str:
    from kvsim.validate.results import load_results

    out = []
    for base in BASES:
        if not (R / f"{base}.json").is_file():
            continue
        h = load_results(R / f"{base}.json").host
        out += [f"### {h.get('model_name')} (`kvsim/validate/results/{base}.*`)", ""] + render_kernels(base) + render_e2e(base) + [""]
    if REFUSED:
        out += ["### Refused runs (contended machine; nothing committed from them)", "", "| date | machine | command | outcome |",
                "|---|---|---|---|"] + [f"| {d} | {m} | `{c}` | {o} |" for d, m, c, o in REFUSED]
    return "\n".join(out).rstrip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="store_true", help="regenerate the results with the real commands first")
    ap.add_argument("--base", default=BASES[0], help=f"files to regenerate with --run (default {BASES[0]}: this machine's)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if args.run:
        for c in commands(args.base):
            subprocess.run([sys.executable, "-m", "kvsim", "validate", *c], check=True, cwd=ROOT)
    body = render()
    print(body)
    if not args.no_record:
        write_section("Validation (CPU)", body)


if __name__ == "__main__":
    main()
