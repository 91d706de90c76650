"""One simulator replay, timed: CPU seconds of ``simulate`` alone (trace generation excluded).

    PYTHONPATH=. taskset -c 1 python benchmarks/sim_one.py 100000 full [HW]

For paired comparisons on a noisy machine (run it alternately against another checkout with
``PYTHONPATH=<that checkout>``, this file passed by path, and compare medians; it also runs
checkouts from before the redesign); ``benchmarks/sim_speed.py`` is the full table.
Workload as sim_speed.py: ``synthetic-burstgpt`` (seed 0), Llama-3.1-8B on one A100-80GB, defaults
(``HW``: another system name or GPU file, e.g. ``benchmarks/a100-plain-roofline.yaml``).
Prints the TTFT mean too, so that two checkouts' results can be compared at a glance.
"""

from __future__ import annotations

import sys
import time

try:
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.sim.replica import SimConfig, simulate
except ImportError:  # a checkout from before the redesign (485f940 and older): its module paths
    from kvsim.commands.common import build_deployment
    from kvsim.serving import SimConfig, simulate
from kvsim.methods import make_method
from kvsim.traces import load_trace


def main() -> None:
    n, method = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "full"
    trace = load_trace("synthetic-burstgpt", num_requests=n, seed=0)
    dep = build_deployment(sys.argv[3] if len(sys.argv) > 3 else "a100", "llama-3.1-8b")
    m = make_method(method, dep)
    t0, w0 = time.process_time(), time.perf_counter()
    res = simulate(dep, m, trace, SimConfig())
    print(f"{method} n={n} cpu {time.process_time() - t0:.3f} wall {time.perf_counter() - w0:.3f} "
          f"ttft_mean {res.summary['ttft_s']['mean']:.9f}")


if __name__ == "__main__":
    main()
