"""Wall time of `kvsim estimate` including interpreter start (issue goal: one configuration
< 1 s, `--method all` < 2 s). Medians of repeated runs; appends to benchmarks/RESULTS.md.

Run: python benchmarks/cli_speed.py [--repeats 7] [--no-record]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import machine_description, write_section  # noqa: E402

CASES = {
    "one configuration": ["estimate", "--hw", "a100-40g", "--model", "codellama-7b", "--method", "magicpig",
                          "--context", "16384", "--batch", "8"],
    "--method all": ["estimate", "--hw", "a100", "--model", "llama-3.1-8b", "--method", "all", "--context", "32768",
                     "--batch", "max"],
    "import kvsim.cli only": None,
}


def wall(args: list[str] | None) -> float:
    cmd = [sys.executable, "-c", "import kvsim.cli"] if args is None else [sys.executable, "-m", "kvsim", *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    lines = ["| case | median wall (s) | min | max | goal |", "|---|---|---|---|---|"]
    goals = {"one configuration": "< 1 s", "--method all": "< 2 s", "import kvsim.cli only": "-"}
    for name, args in CASES.items():
        wall(args)  # warm the page cache / .pyc
        ts = [wall(args) for _ in range(a.repeats)]
        lines.append(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} | {max(ts):.3f} | {goals[name]} |")
        print(lines[-1])
    torch_loaded = subprocess.run([sys.executable, "-c", "import kvsim.cli, sys; print('torch' in sys.modules)"],
                                  capture_output=True, text=True).stdout.strip()
    body = "\n".join([
        f"Command: `python benchmarks/cli_speed.py --repeats {a.repeats}` (python {platform.python_version()}).",
        machine_description(), "", *lines, "", f"torch imported by `import kvsim.cli`: {torch_loaded}",
        "Cases: " + "; ".join(f"{k}: `kvsim {' '.join(v)}`" for k, v in CASES.items() if v),
    ])
    if not a.no_record:
        write_section("CLI speed", body)


if __name__ == "__main__":
    main()
