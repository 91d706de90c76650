"""kvsim's engine memory vs vLLM 0.19.0's on real start-ups (H100-80GB logs, held out).

    python benchmarks/vllm_memory_logs.py

For each run of ``kvsim/validate/data/vllm_memory_logs/runs.yaml`` (the logs and their provenance
are in that directory) it runs the check of ``kvsim validate memory`` and prints, per term, vLLM's
value, kvsim's and the error, then the KV cache size errors summarised over the held-out runs (no
kvsim constant was read from them) and the in-sample ones apart. Numerics only, no timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from kvsim.validate.memory_check import check_memory
from kvsim.validate.vllm_log import parse_vllm_log

DATA = Path(__file__).resolve().parents[1] / "kvsim" / "validate" / "data" / "vllm_memory_logs"


def main() -> None:
    spec = yaml.safe_load((DATA / "runs.yaml").read_text())
    print("| run | model (kvsim) | TP | weights | KV | weights GiB vLLM / kvsim | activation GiB | non-torch GiB | "
          "KV tokens vLLM / kvsim | error | held out |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    held, ins = [], []
    for run in spec["runs"]:
        log = parse_vllm_log(DATA / run["log"])
        r = check_memory(log, spec["hw"], model=run.get("model"), weight_dtype=run.get("weight_dtype"))
        w, act, nt, _, kv = r["terms"]
        s = r["settings"]
        (ins if run["in_sample"] else held).append(kv.error)
        print(f"| {run['log'].removesuffix('.log')} | {s['model']} | {s['tp']} | {s['weight_dtype']} | {s['kv_dtype']} | "
              f"{w.vllm:.2f} / {w.kvsim:.2f} | {act.vllm:.2f} / {act.kvsim:.2f} | {nt.vllm:.2f} / {nt.kvsim:.2f} | "
              f"{kv.vllm:,.0f} / {kv.kvsim:,.0f} | {kv.error * 100:+.1f}% | "
              f"{'no (in-sample)' if run['in_sample'] else 'yes*' if _moe(s['model']) else 'yes'} |")
    for name, errs in (("held-out", held), ("in-sample", ins)):
        a = np.abs(np.array(errs))
        print(f"\n{name}: {len(a)} runs; KV cache size |error| median {np.median(a) * 100:.1f}%, "
              f"max {a.max() * 100:.1f}%; within 5%: {(a <= 0.05).sum()} of {len(a)}")
    print("\n* MoE runs: no constant was read from them, but the fused-MoE workspace term "
          "(kvsim/pricing/engine_memory.py) was added after they showed a gap (2026-12-02): they are not an "
          "independent check of that term.")


def _moe(model: str) -> bool:
    from kvsim.models import load_model

    return load_model(model).moe is not None


if __name__ == "__main__":
    main()
