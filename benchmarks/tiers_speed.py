"""KV offload tiers' speed cost: the same replay with tiers off and on (goal: on within 1.5x of off).

Trace: ``synthetic-scbench`` (SCBench-style shared contexts, multi-turn sessions; kvsim.traces.scbench)
so that the tiers are used: contexts the GPU prefix cache evicts are loaded back from host or
NVMe. Deployment: the CLI defaults (Llama-3.1-8B on one A100-80GB, vLLM engine defaults),
``full`` KV. Tiers on: ``host=64GiB,nvme=1TiB``. Runs alternate off/on after one warm-up pair;
the median wall time of each is reported.

    PYTHONPATH=. python benchmarks/tiers_speed.py --n 100000 [--repeats 3] [--write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402

SECTION = "KV offload tiers: speed"
GOAL = 1.5


def main() -> None:
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.sim.config import SimConfig
    from kvsim.sim.kv_tiers import parse_offload
    from kvsim.sim.replica import simulate
    from kvsim.traces import load_trace

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="requests")
    ap.add_argument("--spec", default="synthetic-scbench:contexts=512,turns=5,context=4096,query=64,output=64,gap=20,rate=4")
    ap.add_argument("--offload", default="host=64GiB,nvme=1TiB")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true", help=f"replace '## {SECTION}' in benchmarks/RESULTS.md")
    a = ap.parse_args()
    dep = build_deployment("a100", "llama-3.1-8b")
    m = make_method("full", dep)
    tr = load_trace(a.spec, num_requests=a.n)
    cfgs = {"off": SimConfig(), "on": SimConfig(kv_offload=parse_offload(a.offload))}
    times: dict[str, list[float]] = {"off": [], "on": []}
    walls: dict[str, list[float]] = {"off": [], "on": []}
    summaries = {}
    for rep in range(a.repeats + 1):  # the first pair warms up
        for key in ("off", "on"):
            t0, c0 = time.perf_counter(), time.process_time()
            res = simulate(dep, m, tr, cfgs[key])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if rep:
                times[key].append(cpu)
                walls[key].append(wall)
            summaries[key] = res.summary
            print(f"{key}: cpu {cpu:.2f} s, wall {wall:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    wmed = {k: statistics.median(v) for k, v in walls.items()}
    ratio = med["on"] / med["off"]
    s_on, s_off = summaries["on"], summaries["off"]
    tiers = s_on["kv_offload"]
    lines = [
        f"Command: `PYTHONPATH=. python benchmarks/tiers_speed.py --n {a.n} --repeats {a.repeats}"
        + (" --write`." if a.write else "`."),
        _results.machine_description(),
        "",
        f"- Trace: `{a.spec}`, {len(tr):,} requests; Llama-3.1-8B on one A100-80GB, `full`; tiers `{a.offload}`.",
        f"- Median CPU time over {a.repeats} runs each (after a warm-up pair): off {med['off']:.2f} s, "
        f"on {med['on']:.2f} s: **{ratio:.2f}x** (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'MISSED'}); "
        f"median wall time off {wmed['off']:.2f} s, on {wmed['on']:.2f} s ({wmed['on'] / wmed['off']:.2f}x; "
        f"load average {os.getloadavg()[0]:.1f} at the end).",
        f"- What the tiers did: prefix-cached prompt tokens {s_off['cached_prompt_tokens']:,} -> "
        f"{s_on['cached_prompt_tokens']:,}; mean TTFT {s_off['ttft_s']['mean']:.3f} -> {s_on['ttft_s']['mean']:.3f} s; "
        f"entries reused from GPU {tiers['gpu']['hit_rate'] * 100:.1f}%, host {tiers['host']['hit_rate'] * 100:.1f}%"
        + (f", NVMe {tiers['nvme']['hit_rate'] * 100:.1f}%" if "nvme" in tiers else "") + ".",
    ]
    print("\n".join(lines))
    if a.write:
        _results.write_section(SECTION, "\n".join(lines))


if __name__ == "__main__":
    main()
