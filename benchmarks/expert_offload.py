"""MoE expert offloading vs measured Mixtral-8x7B offloading runs (LRU hit rates and decode tokens/s).

Measured: github.com/h39s/mlsys (a fork of Eliseev & Mazur's mixtral-offloading, MIT), benchmark logs
``logs/<run>/overall_results.txt`` at commit 02a78184ba0de2df499beeb919fec8215f7d3ed2: Mixtral-8x7B-Instruct,
attention 4-bit / experts 2-bit HQQ, 10 prompts x up to 256 new tokens, batch 1, LRU expert cache of
``8 - offload_per_layer`` experts per layer, no speculative prefetch; tokens/s = tokens / wall time.

kvsim: (1) the LRU hit rate over the routing trace the same project published (one prompt, 773 tokens,
``benchmarks/data/mixtral-8x7b-routing-h39s-prompt1.txt``): not the 10 benchmark prompts, so a consistency
check, not a replay; (2) ``kvsim estimate`` decode tokens/s (1 / TBT at 256 tokens of context) with the
run's measured hit rate, ``--weight-dtype int2`` (the 2-bit experts; HQQ scales and zeros not counted) and
default efficiencies. Nothing here was tuned to these numbers.

Run: python benchmarks/expert_offload.py [--no-record]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _results import machine_description, write_section

TRACE = Path(__file__).parent / "data" / "mixtral-8x7b-routing-h39s-prompt1.txt"
#: (kvsim system, GPU as logged, cache experts per layer) -> (measured tokens/s, measured LRU hit rate, log run)
MEASURED = {
    ("rtx4090", "4090", 4): (4.251723586946781, 0.5902933294173794, "2024-05-01-22-32-22_4090_4_lru_256"),
    ("rtx4090", "4090", 3): (3.6107937376195016, 0.4635871073622223, "2024-05-01-23-08-28_4090_5_lru_256"),
    ("a100", "A100", 4): (2.9308126573252244, 0.5889114144010426, "2024-05-01-22-42-48_A100_4_lru_256"),
    ("a100", "A100", 3): (2.531490490685952, 0.46978363441093773, "2024-05-02-00-00-12_A100_5_lru_256"),
    ("a100", "A100", 2): (2.2065593427692525, 0.33712224052320705, "2024-05-02-01-53-03_A100_[6]_lru_256"),
}


def rows() -> list[str]:
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.costmodel.expert_routing import lru_hit_rate, read_routing_trace
    from kvsim.methods import make_method
    from kvsim.pricing.estimate import estimate

    trace = read_routing_trace(TRACE, 8, 2, 32)
    out = ["| GPU (kvsim system) | cache / layer | measured LRU hit | kvsim LRU on trace | error | measured tok/s | "
           "kvsim tok/s (serial / overlap) | error (serial) | run |",
           "|---|---|---|---|---|---|---|---|---|"]
    for (hw, gpu, cache), (tps, hit, run) in MEASURED.items():
        h = lru_hit_rate(trace, cache, 8)
        got = []
        for overlap in ("no", "yes"):
            dep = build_deployment(hw, "mixtral-8x7b", weight_dtype="int2",
                                   expert_offload=f"cache={cache},hit-rate={hit},miss=fetch,overlap={overlap}")
            got.append(1.0 / estimate(dep, make_method("full", dep), 256, 1).tpot_s)
        out.append(f"| {gpu} ({hw}) | {cache} | {hit:.3f} | {h:.3f} | {h / hit - 1:+.1%} | {tps:.2f} | "
                   f"{got[0]:.1f} / {got[1]:.1f} | {got[0] / tps - 1:+.0%} | `{run}` |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-record", action="store_true", help="print only; do not update RESULTS.md")
    args = ap.parse_args()
    table = "\n".join(rows())
    print(table)
    if args.no_record:
        return
    body = "\n".join([
        "Command: `python benchmarks/expert_offload.py`. " + " ".join(__doc__.split("\n\n")[1:3]).replace("\n", " ").replace("``", "`"),
        "",
        "Reading: the LRU simulator lands within a few percent of the measured hit rates (different prompts). "
        "The roofline's decode speed is 4-8x the measured one: the measured runs are eager Hugging Face decoding "
        "with HQQ dequantization, whose per-token time outside the transfers (~0.1 s) and per-expert copy rate "
        "(~9-13 GB/s, from the slope between cache sizes) kvsim's defaults (vLLM-like engine overhead, 85 % of "
        "PCIe) do not describe. `--calibration` can set `pcie` and `step` efficiencies for such an engine; no "
        "default was changed toward these numbers.",
        "",
        machine_description(),
        "",
        table,
    ])
    write_section("Expert offloading", body)
    print(f"\nwrote section 'Expert offloading' of {Path(__file__).parent / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
