"""Two simulator replays run at the same time, one per core, cores swapped every round.

    python benchmarks/sim_pairs.py --n 100000 --base full --other magicpig --rounds 3
    python benchmarks/sim_pairs.py --n 100000 --base full --other full --other-checkout /path/to/old/checkout

On a shared 2-vCPU VM, runs made one after the other see different neighbours: the spread of one
method's sequential runs can be as large as the effect measured (benchmarks/RESULTS.md, eighth
session). Two runs started together see the same neighbours, so their ratio is steadier. Each
side is ``benchmarks/sim_one.py N METHOD [HW]`` (CPU seconds of ``simulate`` alone) under
``taskset``; rounds alternate which side gets core 0. Prints each round's seconds and ratio
(other / base) and the median ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _start(checkout: Path, core: int, n: int, method: str, hw: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(checkout), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(HERE / "sim_one.py"), str(n), method, hw]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cpu_s(p: subprocess.Popen) -> float:
    out, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"error: a replay failed: {err.strip().splitlines()[-1] if err.strip() else p.returncode}")
    return float(out.split()[3])  # "METHOD n=N cpu S wall S ttft_mean X"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="requests per replay")
    ap.add_argument("--base", default="full", help="method of the base side")
    ap.add_argument("--other", default="magicpig", help="method of the other side")
    ap.add_argument("--base-checkout", default=str(HERE.parent), help="checkout the base side imports kvsim from")
    ap.add_argument("--other-checkout", default=str(HERE.parent), help="checkout the other side imports kvsim from")
    ap.add_argument("--hw", default="a100", help="system name or GPU file")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if a.n < 1 or a.rounds < 1:
        raise SystemExit("error: --n and --rounds must be at least 1")
    ratios = []
    for i in range(a.rounds):
        cores = (0, 1) if i % 2 == 0 else (1, 0)
        pb = _start(Path(a.base_checkout), cores[0], a.n, a.base, a.hw)
        po = _start(Path(a.other_checkout), cores[1], a.n, a.other, a.hw)
        b, o = _cpu_s(pb), _cpu_s(po)
        ratios.append(o / b)
        print(f"round {i + 1}: {a.base} {b:.3f} s, {a.other} {o:.3f} s, ratio {o / b:.3f}", flush=True)
    print(f"median ratio {a.other} / {a.base} over {a.rounds} rounds at {a.n:,} requests: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
