"""What the composed GPU steps that miss 10 % are made of: per op, measured vs kvsim.

    python benchmarks/gpu_step_misses.py [--threshold 0.10]

For every step of ``benchmarks/gpu_step_composition.py`` whose composed error is beyond the threshold, each
op of a layer (QKV, O, gate-up and down GEMMs, attention; all-reduce at TP > 1) x layers, and the LM head:
the measured time from the kernel tables (marked L2-warm where the table measured it with its working set in
L2, so faster than in a real step), and kvsim's price of the same op through the system's roofline (each GEMM
alone; the step itself sums a layer's GEMMs into parts first). Numerics only (no timing); benchmarks/RESULTS.md,
"What the composed-step misses are".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_step_composition as comp  # noqa: E402

from kvsim.costmodel.roofline import Roofline  # noqa: E402


def _ms(dep, cost) -> float:
    return 1e3 * sum(p.seconds for p in Roofline(dep.system)(cost).parts)


def breakdown(ts: str, model: str, tp: int, step: str) -> list[tuple[str, float, bool, float | None]]:
    """``(op, measured ms, L2-warm, kvsim ms)`` of one step (``step`` as the composition names it)."""
    dep = comp.build_deployment(comp.SYSTEM_OF_TABLE[ts], model, tp=tp)
    m, L = dep.model, dep.model.num_layers
    heads, kv = m.num_heads // tp, max(1, m.num_kv_heads // tp)
    if step.startswith("decode"):
        batch, ctx = (int(x.split("=")[1]) for x in step.split()[1:])
        tokens, seqs = batch, batch
        attn = comp.attention_ms(ts, "attn_decode", batch, heads, kv, ctx)
        acost = comp.decode_attention(dep, np.full(batch, float(ctx)))
    else:
        tokens, seqs = int(step.split()[1]), 1
        attn = comp.attention_ms(ts, "attn_prefill", 1, heads, kv, tokens)
        acost = comp.prefill_attention(dep, np.array([float(tokens)]), np.zeros(1))
    h, f = m.hidden_size, m.intermediate_size
    q, kvd = m.num_heads * m.head_dim // tp, m.num_kv_heads * m.head_dim // tp
    out = []
    for name, n, k in (("qkv", q + 2 * kvd, h), ("o", h, q), ("gate_up", 2 * f // tp, h), ("down", h, f // tp)):
        cost = comp.gemm_cost(tokens, n, k, weight_bytes=2.0, act_bytes=2.0, dtype="bf16")
        out.append((name, comp.gemm_ms(ts, tokens, n, k) * L, comp._warm(dep, comp._gemm_bytes(tokens, n, k)), _ms(dep, cost) * L))
    out.append(("attention", attn * L, comp._warm(dep, comp._layer_bytes(dep, acost)), _ms(dep, acost)))
    linear = {p.name: 1e3 * p.seconds for p in Roofline(dep.system)(comp.linear_cost(dep, tokens, seqs)).parts}
    if tp > 1:
        out.append(("all-reduce", 2 * comp.allreduce_ms(ts, tp, tokens * h, dep.system.nvlink_peers) * L, False,
                    linear.get("allreduce")))
    out.append(("lm_head", comp.gemm_ms(ts, seqs, m.vocab_size / tp, h), False, linear.get("lm_head")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threshold", type=float, default=0.10, help="composed |error| above which a step is broken down")
    args = ap.parse_args()
    table_of = {(comp.SYSTEM_OF_TABLE[ts], model, tp): ts for ts, model, tp in comp.CASES}
    for row in comp.rows():
        err = row["kvsim_ms"] / row["measured_ms"] - 1
        if abs(err) <= args.threshold:
            continue
        print(f"== {row['gpu']} {row['model']} TP{row['tp']} {row['step']}: composed {err:+.1%}")
        cold_m = cold_k = 0.0
        for op, meas, warm, pred in breakdown(table_of[(row["gpu"], row["model"], row["tp"])], row["model"], row["tp"], row["step"]):
            rel = "" if pred is None else f"  {pred / meas - 1:+.1%}"
            print(f"  {op:10s} measured {meas:9.3f} ms ({'L2-warm' if warm else 'cold'})  kvsim "
                  f"{'-' if pred is None else f'{pred:9.3f}'} ms{rel}")
            if not warm and op in ("qkv", "o", "gate_up", "down"):
                cold_m, cold_k = cold_m + meas, cold_k + pred
        if cold_m:
            print(f"  cold GEMMs together: measured {cold_m:.3f} ms, kvsim {cold_k:.3f} ms ({cold_k / cold_m - 1:+.1%})")


if __name__ == "__main__":
    main()
