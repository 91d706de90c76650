"""Seconds of one decode run's pricing: the compiled roofline on a captured ``[43, ncol]`` work array.

    PYTHONPATH=. taskset -c 1 python benchmarks/roofline_micro.py full
    PYTHONPATH=. taskset -c 1 python benchmarks/roofline_micro.py magicpig

A 300-request ``synthetic-burstgpt`` replay (Llama-3.1-8B, one A100) is run once to capture the
work of the first decode run of at least 43 steps and the function the step pricer prices it with
(``full``: one attention part whose p-norm spans bytes, FLOPs and tiles; MagicPIG: its template of
several parts); its first 43 rows are then priced with ``timeit`` (min of 7 x 2,000 calls). For comparing two
checkouts, run it alternately with ``PYTHONPATH`` set to each; the printed sum of the seconds
shows that both price the same work.
"""

from __future__ import annotations

import sys
import timeit

import numpy as np

import kvsim.sim.fast.pricer as pricer
from kvsim.costmodel.deployment import build_deployment
from kvsim.methods import make_method
from kvsim.sim.replica import SimConfig, simulate
from kvsim.traces import load_trace

STEPS = 43  # the median decode run of the 100k-request replay in benchmarks/sim_one.py


def main() -> None:
    method = sys.argv[1] if len(sys.argv) > 1 else "full"
    captured: dict = {}
    summed_run = pricer.StepPricer.summed_run  # (the runs' pricing: the batch's summed rows -> seconds)

    def capture(self, summed, B, masked):
        got = summed_run(self, summed, B, masked)
        if "work" not in captured and summed.shape[0] >= STEPS:
            captured["work"], captured["seconds"] = np.ascontiguousarray(got.work[:STEPS]), self._seconds
        return got

    pricer.StepPricer.summed_run = capture
    dep = build_deployment("a100", "llama-3.1-8b")
    simulate(dep, make_method(method, dep), load_trace("synthetic-burstgpt", num_requests=300, seed=0), SimConfig())
    pricer.StepPricer.summed_run = summed_run
    work, seconds = captured["work"], captured["seconds"]
    best = min(timeit.repeat(lambda: seconds(work), number=2000, repeat=7)) / 2000
    print(f"{method}: work {work.shape}, {best * 1e6:.1f} us per pricing, sum of seconds {float(seconds(work).sum()):.12g}")


if __name__ == "__main__":
    main()
