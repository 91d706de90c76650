"""KIVI-style quantized KV decode, written in torch (METHODS.md 1.1; one layer).

K codes are per channel (scale/zero per ``G`` tokens per channel), V codes per token (scale/zero
per ``G`` channels); codes are packed along the head dim into ``uint8`` (4 or 2 codes per byte)
or ``int32`` words. Each call dequantizes the batch's K and V to the compute dtype, then runs
one SDPA over them. Work, as two parts:

* ``kivi_dequant`` (``elementwise``): read the codes (``b/8`` B per element) and the scales and
  zeros (``2 * 2 s_b / G`` per element, K and V), write the dequantized K and V; 2 FLOP per
  element (scale and shift, kivi.py ``DEQUANT_FLOPS_PER_ELEM``);
* the attention over the dequantized K and V (:func:`kvsim.costmodel.attention.decode_attention`).
"""

from __future__ import annotations

import numpy as np
import torch

from kvsim.costmodel.attention import decode_attention
from kvsim.costmodel.cost import Part
from kvsim.validate.bench_base import DTYPES, Bench, Kernel, float_parts, rotating
from kvsim.validate.torch_ops import kivi_decode_attention

GROUP = 32


def kivi_kernel(b: Bench, dt: str, B: int, S: int, bits: int, container: str = "uint8") -> Kernel:
    m = b.model
    nh, nkv, d = m.num_heads, m.num_kv_heads, m.head_dim
    dep = b.dep(dt)
    e = dep.ab
    elems = 2.0 * B * nkv * S * d  # K and V elements
    scale_bytes = 2 * (B * nkv * (S // GROUP) * d + B * nkv * S * (d // GROUP)) * e  # scale + zero, K and V
    dq = Part("kivi_dequant", "elementwise", dtype=dt, flops=2.0 * elems,
              hbm_bytes=elems * bits / 8 + scale_bytes + elems * e, launches=2.0)
    attn = float_parts(decode_attention(dep, np.full(B, float(S)), layers=1))

    def make():
        cont = torch.uint8 if container == "uint8" else torch.int32
        per = (8 if container == "uint8" else 32) // bits
        tdt = DTYPES[dt]

        def codes():  # random words are valid packed codes
            t = torch.empty((B, nkv, S, d // per), dtype=cont, device=b.device)
            return t.random_(0, 256) if cont == torch.uint8 else t.random_(-2**31, 2**31 - 1)

        def one():
            ks, kz = b.rand((B, nkv, S // GROUP, d), tdt, scale=0.1), b.rand((B, nkv, S // GROUP, d), tdt)
            vs, vz = b.rand((B, nkv, S, d // GROUP), tdt, scale=0.1), b.rand((B, nkv, S, d // GROUP), tdt)
            return (b.rand((B, nh, 1, d), tdt), codes(), ks, kz, codes(), vs, vz)

        sets = b.sets(one, elems * bits / 8 + scale_bytes)
        return rotating(lambda *a: kivi_decode_attention(*a, bits=bits, group=GROUP), sets)

    return Kernel(f"kivi{bits}_{container}_{dt}_B{B}_S{S}", "kivi", "attn_decode", [dq, *attn], make,
                  shape={"B": B, "S": S, "bits": bits, "group": GROUP, "container": container, "dtype": dt})


def kernels(b: Bench) -> list[Kernel]:
    out: list[Kernel] = []
    if b.quick:
        cfg = [(8, 1024, 2, "uint8"), (8, 1024, 4, "uint8"), (1, 4096, 2, "int32")]
        dts = b.dtypes[:1]
    else:
        cfg = [(1, 4096, 2, "uint8"), (8, 1024, 2, "uint8"), (8, 1024, 4, "uint8"), (8, 4096, 4, "uint8"),
               (8, 1024, 2, "int32"), (8, 1024, 4, "int32")]
        dts = b.dtypes
    for dt in dts:
        out += [kivi_kernel(b, dt, B, S, bits, c) for B, S, bits, c in cfg]
    return out
