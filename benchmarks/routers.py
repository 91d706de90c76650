"""Routers side by side on a trace with shared prefixes: requests per replica, cached prompt tokens, TTFT.

    PYTHONPATH=. python benchmarks/routers.py --requests 600 --replicas 4

Workload: ``mooncake-conversation`` (its first N requests), Llama-3.1-8B, full KV, H100 replicas
(``kvsim.plan.cluster.simulate_cluster``). Numbers: benchmarks/RESULTS.md, "The prefix-aware router".
"""

from __future__ import annotations

import argparse

try:
    from kvsim.costmodel.deployment import build_deployment
except ImportError:  # (checkouts from before the redesign)
    from kvsim.commands.common import build_deployment
from kvsim.methods import make_method
from kvsim.plan.cluster import simulate_cluster
from kvsim.sim.config import SimConfig
from kvsim.traces import load_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--hw", default="h100")
    args = ap.parse_args()
    dep = build_deployment(args.hw, "llama-3.1-8b")
    m = make_method("full", dep)
    tr = load_trace("mooncake-conversation", limit=args.requests)
    print("| router | requests per replica | cached prompt tokens | TTFT p50 | TTFT mean |")
    print("|---|---|---|---|---|")
    for router in ("round-robin", "least-outstanding", "prefix-aware"):
        res = simulate_cluster(dep, m, tr, SimConfig(), replicas=args.replicas, router=router)
        s = res.summary
        print(f"| {router} | {' / '.join(map(str, s['requests_per_replica']))} | {int(res.records.cached_tokens.sum()):,} "
              f"| {s['ttft_s']['p50']:.3f} s | {s['ttft_s']['mean']:.3f} s |")


if __name__ == "__main__":
    main()
