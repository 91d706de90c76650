"""Attention kernels at a model's head shapes (one layer each).

* ``attn_prefill``: causal SDPA over one prompt of ``n`` tokens; work from
  :func:`kvsim.costmodel.attention.prefill_attention` (FLOPs ``2 n_h (d+d) n(n+1)/2``, Q/K/V/O bytes).
* ``attn_decode`` (contiguous): a batch of ``B`` sequences with mixed context lengths in a
  preallocated per-sequence cache, attended one SDPA call per sequence (reads exactly
  ``sum(lengths)`` tokens); work from :func:`kvsim.costmodel.attention.decode_attention` with ``B`` launches.
* ``attn_paged``: the same batch in a paged pool (16-token blocks, shuffled): gather the
  blocks by block table (``memcpy``: read + write the padded ``B * nb * 16`` tokens), then
  one masked SDPA over the padded batch (``attn_decode`` over the padded lengths).
"""

from __future__ import annotations

import numpy as np
import torch

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Part
from kvsim.validate.bench_base import DTYPES, Bench, Kernel, float_parts, rotating
from kvsim.validate.torch_ops import decode_attention_loop, paged_decode_attention, sdpa

BLOCK = 16


def mixed_lengths(b: Bench, B: int, ctx: int) -> list[int]:
    """B context lengths spread uniformly over [ctx/4, ctx] (fixed seed)."""
    rng = np.random.default_rng(1000 + B * 7 + ctx)
    return [int(x) for x in rng.integers(max(1, ctx // 4), ctx + 1, size=B)]


def prefill_kernel(b: Bench, dt: str, n: int) -> Kernel:
    m = b.model
    nh, nkv, d = m.num_heads, m.num_kv_heads, m.head_dim
    parts = float_parts(prefill_attention(b.dep(dt), np.array([float(n)]), np.array([0.0]), layers=1))

    def make():
        sets = b.pool_sets([(1, nh, n, d), (1, nkv, n, d), (1, nkv, n, d)], dt)
        return rotating(lambda q, k, v: sdpa(q, k, v, causal=True), sets)

    return Kernel(f"attn_prefill_{dt}_n{n}", "attn_prefill", "attn_prefill", parts, make, shape={"n": n, "dtype": dt})


def decode_kernel(b: Bench, dt: str, B: int, ctx: int) -> Kernel:
    m = b.model
    nh, nkv, d = m.num_heads, m.num_kv_heads, m.head_dim
    lengths = mixed_lengths(b, B, ctx)
    parts = float_parts(decode_attention(b.dep(dt), np.array(lengths, dtype=float), layers=1), launches=float(B))

    def make():
        sets = b.pool_sets([(B, nh, 1, d), (B, nkv, ctx, d), (B, nkv, ctx, d)], dt)
        return rotating(lambda q, k, v: decode_attention_loop(q, [k[i, :, :n] for i, n in enumerate(lengths)],
                                                             [v[i, :, :n] for i, n in enumerate(lengths)]), sets)

    return Kernel(f"attn_decode_{dt}_B{B}_ctx{ctx}", "attn_decode", "attn_decode", parts, make,
                  shape={"B": B, "ctx_max": ctx, "lengths": lengths, "dtype": dt})


def paged_kernel(b: Bench, dt: str, B: int, ctx: int) -> Kernel:
    m = b.model
    nh, nkv, d = m.num_heads, m.num_kv_heads, m.head_dim
    lengths = mixed_lengths(b, B, ctx)
    nblocks = [-(-n // BLOCK) for n in lengths]
    nb = max(nblocks)
    padded = B * nb * BLOCK
    dep = b.dep(dt)
    kv_tok = 2 * nkv * d * dep.kvb  # K and V bytes per token (one layer)
    gather = Part("kv_gather", "memcpy", dtype=dt, hbm_bytes=2.0 * padded * kv_tok, launches=2.0)
    attn = float_parts(decode_attention(dep, np.full(B, float(nb * BLOCK)), layers=1))
    total_blocks = sum(nblocks)

    def make():
        g = torch.Generator().manual_seed(B * 131 + ctx)
        perm = torch.randperm(total_blocks, generator=g)
        table = torch.zeros(B, nb, dtype=torch.int64)
        mask = torch.zeros(B, 1, 1, nb * BLOCK, dtype=torch.bool)
        o = 0
        for i, (n, k) in enumerate(zip(lengths, nblocks)):
            table[i, :k] = perm[o:o + k]
            mask[i, ..., :n] = True
            o += k
        table, mask = table.to(b.device), mask.to(b.device)
        sets = b.pool_sets([(B, nh, 1, d), (total_blocks, BLOCK, nkv, d), (total_blocks, BLOCK, nkv, d)], dt)
        return rotating(lambda q, kp, vp: paged_decode_attention(q, kp, vp, table, mask), sets)

    return Kernel(f"attn_paged_{dt}_B{B}_ctx{ctx}", "attn_paged", "attn_decode", [gather, *attn], make,
                  shape={"B": B, "ctx_max": ctx, "lengths": lengths, "block": BLOCK, "dtype": dt})


def kernels(b: Bench) -> list[Kernel]:
    out: list[Kernel] = []
    if b.quick:
        pre, dec, paged = [128, 512], [(1, 1024), (8, 256), (8, 1024)], [(8, 1024)]
    else:
        pre = [128, 512, 2048]
        dec = [(1, 256), (1, 2048), (8, 256), (8, 1024), (32, 512), (32, 2048)]
        paged = [(8, 256), (8, 1024), (32, 2048)]
    for dt in b.dtypes:
        out += [prefill_kernel(b, dt, n) for n in pre]
        out += [decode_kernel(b, dt, B, c) for B, c in dec]
        out += [paged_kernel(b, dt, B, c) for B, c in paged]
    assert all(k.shape["dtype"] in DTYPES for k in out)
    return out
