"""Bandwidth, host-to-device copies, norms and elementwise kernels.

* ``stream_read`` (probe, not fitted): ``x.sum()`` over a large buffer - the best-case read
  bandwidth that the local CPU spec records as its measured peak.
* ``copy`` (``memcpy``): ``y.copy_(x)``, bytes = read + write; small sizes measure the
  per-call overhead.
* ``h2d`` (``pcie``, CUDA only): pinned host -> device ``copy_(non_blocking=True)``.
* ``layer_elementwise``: every non-GEMM op of one layer (2 RMSNorms, rotary on q and k,
  SwiGLU, 2 residual adds) with the e2e model's code (:func:`~kvsim.validate.torch_ops.layer_elementwise`);
  its work is exactly kvsim's per-layer ``elementwise`` part (logical bytes: the extra passes
  of unfused eager ops show up as efficiency < 1, as they would in the e2e run).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from kvsim.costmodel.cost import Part
from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.dtypes import nbytes
from kvsim.costmodel.transformer import linear_cost
from kvsim.validate.bench_base import DTYPES, Bench, Kernel, MiB, rotating
from kvsim.validate.torch_ops import layer_elementwise, rotary_tables


def copy_kernel(b: Bench, dt: str, nbytes_: int) -> Kernel:
    e = nbytes(dt)
    n = int(nbytes_ // e)

    def make():
        sets = b.pool_sets([(n,), (n,)], dt)
        return rotating(lambda x, y: y.copy_(x), sets)

    return Kernel(f"copy_{dt}_{_size(nbytes_)}", "memory", "memcpy",
                  [Part("copy", "memcpy", dtype=dt, hbm_bytes=2.0 * n * e, launches=1.0)], make, shape={"bytes": nbytes_})


def read_probe(b: Bench, dt: str, nbytes_: int) -> Kernel:
    e = nbytes(dt)
    n = int(nbytes_ // e)

    def make():
        sets = b.pool_sets([(n,)], dt)
        return rotating(lambda x: x.sum(), sets)

    return Kernel(f"stream_read_{dt}_{_size(nbytes_)}", "memory", "memcpy",
                  [Part("read", "memcpy", dtype=dt, hbm_bytes=float(n * e), launches=1.0)], make,
                  shape={"bytes": nbytes_}, fit=False, note="probe: best-case read bandwidth (measured peak), not fitted")


def h2d_kernel(b: Bench, nbytes_: int) -> Kernel:
    def make():
        src = torch.empty(nbytes_, dtype=torch.uint8).pin_memory()
        dst = torch.empty(nbytes_, dtype=torch.uint8, device="cuda")
        return lambda: dst.copy_(src, non_blocking=True)

    part = Part("h2d", "pcie", device="pcie", dtype="fp32", pcie_bytes=float(nbytes_), launches=1.0)
    return Kernel(f"h2d_pinned_{_size(nbytes_)}", "h2d", "pcie", [part], make, shape={"bytes": nbytes_})


def layer_elementwise_kernel(b: Bench, dt: str, T: int) -> Kernel:
    """All non-GEMM ops of one layer at ``T`` tokens; work = kvsim's ``elementwise`` part of
    :func:`kvsim.costmodel.transformer.linear_cost` for one layer (``T (12h + 3f)`` elements moved,
    ``T (10h + 4f)`` FLOPs, 4 launches)."""
    m = b.model
    h, f, nh, nkv, d = m.hidden_size, m.intermediate_size, m.num_heads, m.num_kv_heads, m.head_dim
    one_layer = m.model_copy(update={"num_layers": 1})
    dep = Deployment(system=b.system, model=one_layer, weight_dtype=dt, kv_dtype=dt, act_dtype=dt)
    part = linear_cost(dep, float(T), 0.0).by_name("elementwise")
    part = replace(part, **{k: float(getattr(part, k)) for k in ("flops", "hbm_bytes", "launches")})

    def make():
        cos, sin = rotary_tables(torch.arange(T, device=b.device), d, 1e4, DTYPES[dt])
        shapes = [(T, h), (T, h), (T, h), (T, 2 * f), (T, nh, d), (T, nkv, d), (h,), (h,)]
        return rotating(lambda *a: layer_elementwise(*a, cos, sin), b.pool_sets(shapes, dt))

    return Kernel(f"layer_elementwise_{dt}_T{T}", "elementwise", "elementwise", [part], make, shape={"T": T, "dtype": dt})


def kernels(b: Bench) -> list[Kernel]:
    dt0 = b.dtypes[0]
    out: list[Kernel] = [read_probe(b, dt0, 128 * MiB)]
    sizes = [64 * 1024, 4 * MiB, 64 * MiB] if b.quick else [64 * 1024, 1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB, 128 * MiB]
    out += [copy_kernel(b, dt0, s) for s in sizes]
    if b.device == "cuda":
        out += [h2d_kernel(b, s) for s in ([1 * MiB, 64 * MiB] if b.quick else [64 * 1024, 1 * MiB, 16 * MiB, 64 * MiB, 256 * MiB])]
    ts = [1, 8, 64, 512, 2048] if b.quick else [1, 2, 4, 8, 16, 64, 256, 1024, 4096]
    for dt in b.dtypes:
        out += [layer_elementwise_kernel(b, dt, T) for T in ts]
    return out


def _size(n: int) -> str:
    return f"{n // MiB}MiB" if n >= MiB else f"{n // 1024}KiB"
