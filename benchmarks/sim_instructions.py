"""Instructions per simulated request, counted by valgrind (deterministic: no timing noise).

    python benchmarks/sim_instructions.py --checkouts .,/path/to/other --methods full,magicpig

Wall-time ratios on a shared 2-vCPU VM swing by x0.8-x1.6 between runs of the same pair; the
instruction count of a run is the same to 1e-6 from run to run once numpy's BLAS threads, the
hash seed and the bytecode cache are fixed. Each checkout runs ``benchmarks/sim_one.py`` (this
checkout's copy: it also runs checkouts from before the redesign) under ``valgrind
--tool=callgrind`` at two trace sizes; the difference divided by the extra requests is the cost of
a request without start-up and imports. Instructions are not time (AVX-512 paths, cache and
memory behaviour differ), so a goal stated in seconds still needs a timed check; this is the
measure that can tell a 3 % change apart on a noisy machine.

Prints a markdown table: checkout, method, instructions at each size, per request, ratio to the
first checkout's and to the same checkout's first method.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIM_ONE = HERE / "sim_one.py"


def count(checkout: Path, n: int, method: str, cache_dir: str, hw: str) -> int:
    """Instructions valgrind counts for one ``sim_one.py N METHOD`` run of ``checkout``."""
    env = dict(os.environ, PYTHONPATH=str(checkout), PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPYCACHEPREFIX=cache_dir)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # a first plain run writes the bytecode cache (compiling modules is not what is measured)
    subprocess.run([sys.executable, str(SIM_ONE), "50", method, hw], env=env, check=True, capture_output=True)
    got = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          str(SIM_ONE), str(n), method, hw], env=env, capture_output=True, text=True, check=True)
    m = re.search(r"Collected : (\d+)", got.stderr)
    if m is None:
        raise SystemExit(f"error: valgrind printed no instruction count for {checkout} {method}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkouts", default=".", help="comma-separated checkout folders (the first is the base)")
    ap.add_argument("--methods", default="full", help="comma-separated methods")
    ap.add_argument("--sizes", default="1000,3000", help="two trace sizes: per request = (I2 - I1) / (N2 - N1)")
    ap.add_argument("--hw", default="a100", help="system name or GPU file (default a100)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("error: valgrind is not installed (apt install valgrind)")
    n1, n2 = (int(x) for x in args.sizes.split(","))
    if n2 <= n1:
        raise SystemExit("error: --sizes needs two sizes, the second larger")
    checkouts = [Path(c).resolve() for c in args.checkouts.split(",")]
    methods = args.methods.split(",")
    rows, per = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, c in enumerate(checkouts):
            cache = os.path.join(tmp, f"pyc{i}")
            for m in methods:
                a, b = count(c, n1, m, cache, args.hw), count(c, n2, m, cache, args.hw)
                per[c, m] = (b - a) / (n2 - n1)
                rows.append((c, m, a, b))
    print(f"| checkout | method | instructions at {n1:,} | at {n2:,} | per request | x first checkout | x {methods[0]} |")
    print("|---|---|---|---|---|---|---|")
    for c, m, a, b in rows:
        print(f"| {c.name} | {m} | {a:,} | {b:,} | {per[c, m]:,.0f} | {per[c, m] / per[checkouts[0], m]:.3f} "
              f"| {per[c, m] / per[c, methods[0]]:.3f} |")


if __name__ == "__main__":
    main()
