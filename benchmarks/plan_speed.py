"""Speed of `kvsim plan`: 3 hardware x 4 methods over BurstGPT-modelled traffic, cold cache.

Equivalent CLI::

    kvsim plan --model llama-3.1-8b --trace synthetic-burstgpt --num-requests 500 \\
        --hw a100,l20,4090 --method full,kivi,magicpig,quest --slo-ttft 2 --slo-itl 0.1 --no-cache

Runs the plan ``--repeat`` times (default 3) with the cache off and reports the median wall
time, the simulations run and the simulated requests per second; then once more with a
warm cache (every simulation read back). Exits 1 if the median is over ``--budget-s``
(default 120 s, the target on a 2-core machine).

    python benchmarks/plan_speed.py [--jobs N] [--repeat 3] [--num-requests 500] [--write]

``--write`` replaces the ``## Plan speed`` section of benchmarks/RESULTS.md (other sections untouched).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _results import cpu_model, machine_description, write_section  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=None, help="workers (default: os.cpu_count())")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--num-requests", type=int, default=500)
    ap.add_argument("--budget-s", type=float, default=120.0)
    ap.add_argument("--write", action="store_true", help="record the result in benchmarks/RESULTS.md")
    args = ap.parse_args()
    lines: list[str] = []

    def say(text: str) -> None:
        print(text)
        lines.append(text)

    from kvsim.plan.search import PlanRequest, run_plan
    from kvsim.plan.schema import SLO, TraceSpec

    req = PlanRequest(model="llama-3.1-8b", hws=["a100", "l20", "4090"], methods=["full", "kivi", "magicpig", "quest"],
                      trace=TraceSpec(spec="synthetic-burstgpt", num_requests=args.num_requests, seed=0),
                      slo=SLO(ttft_s=2.0, itl_s=0.1))
    say(f"machine: {' '.join(platform.uname()[i] for i in (0, 2, 4))}; CPU {cpu_model()} x{os.cpu_count()}; "
          f"Python {platform.python_version()}")
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = "?"
    say(f"kvsim at git {rev or '?'}; jobs={args.jobs or os.cpu_count()}; {args.num_requests} requests per simulation")

    walls, plan = [], None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        plan = run_plan(req, jobs=args.jobs, cache_dir=None, progress=False)
        walls.append(time.perf_counter() - t0)
    assert plan is not None
    sims = sum(c.evaluations for c in plan.configs)
    sim_s = sum(p.sim_wall_s for c in plan.configs for p in c.probes)
    med = statistics.median(walls)
    say(f"cold: median {med:.1f} s over {args.repeat} runs ({', '.join(f'{w:.1f}' for w in walls)}); "
          f"{len(plan.configs)} configurations, {sims} simulations, {sims * args.num_requests / med:,.0f} simulated "
          f"requests/s; simulator time {sim_s:.1f} s (sum over workers)")
    with tempfile.TemporaryDirectory() as cache:
        run_plan(req, jobs=args.jobs, cache_dir=cache, progress=False)
        t0 = time.perf_counter()
        warm = run_plan(req, jobs=args.jobs, cache_dir=cache, progress=False)
        warm_s = time.perf_counter() - t0
    say(f"warm cache: {warm_s:.2f} s ({sum(c.cache_hits for c in warm.configs)} hits, "
          f"{sum(c.evaluations for c in warm.configs)} simulations)")
    cli = [sys.executable, "-m", "kvsim", "plan", "--model", "llama-3.1-8b", "--trace", "synthetic-burstgpt",
           "--num-requests", str(args.num_requests), "--hw", "a100,l20,4090", "--method", "full,kivi,magicpig,quest",
           "--slo-ttft", "2", "--slo-itl", "0.1", "--no-cache", "--no-progress"]
    if args.jobs:
        cli += ["--jobs", str(args.jobs)]
    t0 = time.perf_counter()
    r = subprocess.run(cli, capture_output=True, text=True)
    say(f"CLI `kvsim {' '.join(cli[3:])}`: {time.perf_counter() - t0:.1f} s wall (exit {r.returncode}, "
        "includes interpreter start and imports)")
    for i in plan.ranking:
        c = plan.configs[i]
        cost = f"${c.cost_usd_per_mtok:.3f}/M" if c.cost_usd_per_mtok is not None else "-"
        say(f"  {c.label:40s} max {c.max_rate_per_s:7.3f} req/s  {cost:>10s}  {c.error or ''}")
    ok = med <= args.budget_s
    say(f"{'PASS' if ok else 'FAIL'}: median {med:.1f} s vs budget {args.budget_s:.0f} s")
    if args.write:
        cmd = "python benchmarks/plan_speed.py --write" + (f" --jobs {args.jobs}" if args.jobs else "")
        write_section("Plan speed", f"Command: `{cmd}` (a plan of 3 hardware x 4 methods, `kvsim plan --model "
                      "llama-3.1-8b --trace synthetic-burstgpt --num-requests 500 --hw a100,l20,4090 --method "
                      "full,kivi,magicpig,quest --slo-ttft 2 --slo-itl 0.1 --no-cache`). Target: under 120 s on 2 cores.\n\n"
                      f"{machine_description()} `uname -srm`: {' '.join(platform.uname()[i] for i in (0, 2, 4))}; "
                      f"Python {platform.python_version()}.\n\n```\n" + "\n".join(lines) + "\n```")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
