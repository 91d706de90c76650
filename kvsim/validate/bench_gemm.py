"""Weight GEMMs of a model at prefill and decode token counts (op class ``gemm``).

``[T, K] @ [K, N]`` for the fused QKV, O, fused gate/up and down projections and the LM head
(decode row counts only: engines project only the last position). Work as kvsim counts it
(:func:`kvsim.costmodel.transformer.linear_cost`): FLOPs ``2 T K N``; bytes ``(K N + T K + T N) * b``
(weights once, activations in and out); one launch.
"""

from __future__ import annotations

import torch

from kvsim.costmodel.cost import Part
from kvsim.costmodel.dtypes import nbytes
from kvsim.validate.bench_base import Bench, Kernel, rotating


def gemm_shapes(m) -> list[tuple[str, int, int]]:
    h, d = m.hidden_size, m.head_dim
    return [
        ("qkv", h, (m.num_heads + 2 * m.num_kv_heads) * d),
        ("o", m.num_heads * d, h),
        ("gate_up", h, (2 if m.mlp_gated else 1) * m.intermediate_size),
        ("down", m.intermediate_size, h),
    ]


def token_counts(b: Bench) -> tuple[list[int], list[int]]:
    """(all T, LM-head T): decode batches and prefill chunks.

    Decode batches of 2-16 dominate serving, so they get most of the small-T shapes: on CPUs
    the single-row GEMV (T=1, MKL's gemv path) streams weights up to ~2x faster than small-M
    GEMM, which one memory efficiency per op class cannot follow (docs/validate.md)."""
    if b.quick:
        return [1, 2, 4, 8, 16, 64, 256], [1, 8]
    return [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024], [1, 4, 16, 64]


def gemm_kernel(b: Bench, label: str, dt: str, T: int, K: int, N: int) -> Kernel:
    e = nbytes(dt)
    part = Part(f"gemm_{label}", "gemm", dtype=dt, flops=2.0 * T * K * N, hbm_bytes=(K * N + T * K + T * N) * e, launches=1.0)

    def make():
        return rotating(torch.matmul, b.pool_sets([(T, K), (K, N)], dt))

    return Kernel(f"gemm_{dt}_{label}_T{T}", "gemm", "gemm", [part], make, shape={"T": T, "K": K, "N": N, "dtype": dt})


def kernels(b: Bench) -> list[Kernel]:
    m = b.model
    ts, head_ts = token_counts(b)
    out: list[Kernel] = []
    for dt in b.dtypes:
        for T in ts:
            for label, K, N in gemm_shapes(m):
                out.append(gemm_kernel(b, label, dt, T, K, N))
        for T in head_ts:
            out.append(gemm_kernel(b, "lm_head", dt, T, m.hidden_size, m.vocab_size))
    return out
