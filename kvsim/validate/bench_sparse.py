"""Sparse attention over gathered index sets on the CPU (MagicPIG's CPU path; op ``cpu_attn``).

Per sequence a KV cache ``[n_kv, S, d]`` in host memory; each query head attends to its own
index set: ``topk`` (``k = frac * S`` indices, as exact top-k retrieval returns them) or
``sampled`` (LSH-style: a Binomial(S, frac) number of indices per head, padded to the largest
set and masked, with MagicPIG's ``-log u_i`` additive weights). One call gathers the K and V
rows of the whole batch, scores, softmaxes and reduces (torch advanced indexing + bmm).

Work as kvsim's MagicPIG model counts it (magicpig.py, per query head, GQA: each query head
samples its own set): ``4d + 10`` FLOPs and ``2 d b`` bytes of K and V per gathered index,
plus the index (8 B) and weight (4 B, sampled) reads. The gathered copy that torch
materializes is not counted: ``cpu_attn`` efficiency absorbs it (MagicPIG's kernel is fused).
Runs on the CPU even in a CUDA run.
"""

from __future__ import annotations

import numpy as np
import torch

from kvsim.costmodel.cost import Part
from kvsim.costmodel.dtypes import nbytes
from kvsim.validate.bench_base import DTYPES, Bench, Kernel, rotating
from kvsim.validate.torch_ops import sparse_attention


def sparse_kernel(b: Bench, dt: str, B: int, S: int, frac: float, kind: str) -> Kernel:
    m = b.model
    nh, nkv, d = m.num_heads, m.num_kv_heads, m.head_dim
    e = nbytes(dt)
    rng = np.random.default_rng(int(S * frac * 1000) + B)
    if kind == "topk":
        counts = np.full((B, nh), max(1, int(frac * S)))
    else:
        counts = np.maximum(1, rng.binomial(S, frac, size=(B, nh)))
    n = int(counts.max())
    n_idx = B * nh * n  # gathered (padded) indices
    extra = 8 + (4 if kind == "sampled" else 0)
    part = Part("sparse_attn", "cpu_attn", device="cpu", dtype=dt, cpu_flops=float(n_idx * (4 * d + 10)),
                dram_bytes=float(n_idx * (2 * d * e + extra) + 2 * B * nh * d * e), launches=1.0)

    def make():
        tdt = DTYPES[dt]
        g = torch.Generator().manual_seed(S + B)
        idx = torch.sort(torch.randint(0, S, (B, nh, n), generator=g), dim=-1).values
        valid = torch.arange(n)[None, None, :] < torch.as_tensor(counts)[:, :, None]
        logw = -torch.log(torch.rand(B, nh, n, generator=g).clamp_min(1e-3)).to(tdt) if kind == "sampled" else None

        def one():
            return (b.rand((B, nh, d), tdt, device="cpu"), b.rand((B, nkv, S, d), tdt, device="cpu", scale=0.1),
                    b.rand((B, nkv, S, d), tdt, device="cpu", scale=0.1))

        sets = b.sets(one, 2 * B * nkv * S * d * e)
        if kind == "sampled":
            return rotating(lambda q, k, v: sparse_attention(q, k, v, idx, logw, valid), sets)
        return rotating(lambda q, k, v: sparse_attention(q, k, v, idx), sets)

    return Kernel(f"sparse_{kind}_{dt}_B{B}_S{S}_f{frac:g}", "sparse", "cpu_attn", [part], make, on_host=True,
                  shape={"B": B, "S": S, "frac": frac, "kind": kind, "indices_per_head_max": n, "dtype": dt})


def kernels(b: Bench) -> list[Kernel]:
    out: list[Kernel] = []
    if b.quick:
        cfg = [(1, 8192, 0.05, "topk"), (4, 8192, 0.02, "sampled")]
    else:
        cfg = [(1, 16384, 0.02, "topk"), (1, 16384, 0.05, "topk"), (4, 16384, 0.02, "sampled"),
               (4, 16384, 0.05, "sampled"), (8, 32768, 0.02, "sampled"), (8, 32768, 0.02, "topk")]
    dts = [d for d in b.dtypes if d in ("fp32", "bf16")] or ["bf16"]
    for dt in dts:
        out += [sparse_kernel(b, dt, B, S, f, kind) for B, S, f, kind in cfg]
    return out
