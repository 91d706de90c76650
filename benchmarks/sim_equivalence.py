"""Fast simulator = reference: replay N random scenarios through both and count mismatches.

    PYTHONPATH=. python benchmarks/sim_equivalence.py --examples 1000 [--write]

Scenarios are ``tests/equivalence_scenarios.scenario(seed)`` for seeds ``0..N-1`` (models
llama-3.1-8b, mixtral-8x7b, deepseek-v2-lite; every method of the list; chunked and
whole-prompt prefill; RECOMPUTE and SWAP; prefix caching; 1-3 replicas behind each router).
Draws a method cannot run (ConfigError) are skipped and counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _results  # noqa: E402
from equivalence_scenarios import compare, pressure_scenario, run_both, scenario  # noqa: E402

SECTION = "Fast simulator = reference"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000, help="scenarios (seeds 0..N-1)")
    ap.add_argument("--start", type=int, default=0, help="first seed")
    ap.add_argument("--pressure", action="store_true", help="memory-pressure scenarios where RECOMPUTE victims "
                    "park their KV (equivalence_scenarios.pressure_scenario) instead of the general draws")
    ap.add_argument("--write", action="store_true", help=f"replace '## {SECTION}' in benchmarks/RESULTS.md")
    a = ap.parse_args()
    t0 = time.perf_counter()
    ran = skipped = 0
    bad: list[str] = []
    for seed in range(a.start, a.start + a.examples):
        sc = pressure_scenario(seed) if a.pressure else scenario(seed)
        got = run_both(sc)
        if got is None:
            skipped += 1
            continue
        ran += 1
        diff = compare(*got)
        if diff:
            bad.append(f"seed {seed}: {sc.model} {sc.method} replicas={sc.replicas}: {diff[0][:200]}")
            print("MISMATCH", bad[-1], flush=True)
    wall = time.perf_counter() - t0
    print(f"{a.examples} scenarios: {ran} compared, {skipped} skipped (method/model or pool not possible), "
          f"{len(bad)} mismatches; wall {wall:.1f} s")
    if a.write and a.pressure:
        sys.exit("--write records the general draws; give --pressure runs' numbers by hand")
    if a.write:
        cmd = f"PYTHONPATH=. python benchmarks/sim_equivalence.py --examples {a.examples}" + (
            f" --start {a.start}" if a.start else "") + " --write"
        body = [
            f"Command: `{cmd}`.",
            _results.machine_description(),
            "",
            f"- Scenarios: {a.examples} (seeds {a.start}..{a.start + a.examples - 1}); compared {ran}, skipped "
            f"{skipped} (method does not support the model, or the drawn KV pool does not fit).",
            f"- Mismatches between `simulate`/`simulate_cluster` and `kvsim.sim.reference`: {len(bad)} "
            "(per-request status, preemptions, cached tokens, every token's time within 1e-9 relative, steps, "
            "peak pool blocks).",
            f"- Wall time: {wall:.0f} s.",
        ] + [f"  - {b}" for b in bad[:20]]
        _results.write_section(SECTION, "\n".join(body))
        print(f"wrote {_results.RESULTS}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
