"""The torch kernels shared by the microbenchmarks and the e2e serving loop (imports torch).

Using one implementation in both places means the efficiencies fitted on the
microbenchmarks describe exactly the code the e2e loop runs.

Shapes: ``T`` tokens, ``h`` hidden, ``nh``/``nkv`` query/KV heads, ``d`` head dim, ``f`` MLP width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_HAS_RMS = hasattr(F, "rms_norm")


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm over the last dim: ``x / rms(x) * w``; ``x`` [T, h]."""
    if _HAS_RMS:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    var = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(var + eps)).to(x.dtype) * w


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """SwiGLU activation of the fused gate/up output ``gu`` [T, 2f] -> [T, f]."""
    g, u = gu.chunk(2, dim=-1)
    return F.silu(g) * u


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half form) of ``x`` [T, H, d] with ``cos``/``sin`` [T, 1, d]."""
    d2 = x.shape[-1] // 2
    x1, x2 = x[..., :d2], x[..., d2:]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def rotary_tables(positions: torch.Tensor, d: int, theta: float, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, 1, d] for integer ``positions`` [T]."""
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=positions.device) / d))
    ang = positions.to(torch.float32)[:, None] * inv[None, :]
    ang = torch.cat((ang, ang), dim=-1)[:, None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def layer_elementwise(x, attn_out, mlp_out, gu, q, k, w1, w2, cos, sin):
    """Every non-GEMM op of one transformer layer, in the e2e model's order: input RMSNorm,
    rotary on q and k, residual add, post-attention RMSNorm, SwiGLU, residual add.

    x/attn_out/mlp_out [T, h]; gu [T, 2f]; q [T, nh, d]; k [T, nkv, d]; w1/w2 [h]; cos/sin [T, 1, d].
    """
    h1 = rms_norm(x, w1)
    qr, kr = rotary(q, cos, sin), rotary(k, cos, sin)
    x2 = x + attn_out
    h2 = rms_norm(x2, w2)
    a = silu_mul(gu)
    return x2 + mlp_out, h1, h2, qr, kr, a


def sdpa(q, k, v, *, causal: bool = False, mask=None) -> torch.Tensor:
    """Scaled dot-product attention with grouped KV heads: q [.., nh, S, d], k/v [.., nkv, S', d]."""
    nh, nkv = q.shape[-3], k.shape[-3]
    if nh != nkv:
        try:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        except TypeError:  # torch < 2.5
            k = k.repeat_interleave(nh // nkv, dim=-3)
            v = v.repeat_interleave(nh // nkv, dim=-3)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def decode_attention_loop(q: torch.Tensor, ks: list[torch.Tensor], vs: list[torch.Tensor]) -> torch.Tensor:
    """Decode attention of ``B`` sequences over contiguous per-sequence caches, one call each.

    q [B, nh, 1, d]; ``ks[i]``/``vs[i]`` [nkv, n_i, d] (views of a preallocated cache). Reads
    exactly ``sum(n_i)`` tokens of KV (no padding), at the price of one kernel call per sequence.
    """
    outs = [sdpa(q[i:i + 1], k.unsqueeze(0), v.unsqueeze(0)) for i, (k, v) in enumerate(zip(ks, vs))]
    return torch.cat(outs, dim=0)


def paged_decode_attention(q, k_pool, v_pool, block_table, mask) -> torch.Tensor:
    """Gather KV blocks by block table, then attend with a padding mask.

    q [B, nh, 1, d]; k/v_pool [num_blocks, bs, nkv, d]; block_table [B, nb] (int64, padded);
    mask [B, 1, 1, nb*bs] bool (True = attend).
    """
    B, nb = block_table.shape
    bs, nkv, d = k_pool.shape[1:]
    k = k_pool[block_table].view(B, nb * bs, nkv, d).transpose(1, 2)  # gather: [B, nkv, S, d]
    v = v_pool[block_table].view(B, nb * bs, nkv, d).transpose(1, 2)
    return sdpa(q, k, v, mask=mask)


# ---------------- KIVI-style quantized KV (packed 2/4-bit codes) ----------------

def pack_codes(codes: torch.Tensor, bits: int, container: torch.dtype = torch.uint8) -> torch.Tensor:
    """Pack integer codes [..., n] (values < 2**bits) along the last dim into ``container`` words."""
    per = (8 if container == torch.uint8 else 32) // bits
    c = codes.to(torch.int32 if container == torch.int32 else torch.uint8).reshape(*codes.shape[:-1], -1, per)
    shifts = torch.arange(per, device=codes.device, dtype=c.dtype) * bits
    return (c << shifts).sum(-1, dtype=c.dtype)


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: [..., n/per] words -> [..., n] codes (same integer dtype)."""
    per = (8 if packed.dtype == torch.uint8 else 32) // bits
    shifts = torch.arange(per, device=packed.device, dtype=packed.dtype) * bits
    mask = (1 << bits) - 1
    return ((packed.unsqueeze(-1) >> shifts) & mask).flatten(-2)


def dequant_k(packed, scale, zero, bits: int, group: int, dtype) -> torch.Tensor:
    """Per-channel K (KIVI): codes [B, H, S, d/per]; scale/zero [B, H, S/G, d] -> [B, H, S, d]."""
    c = unpack_codes(packed, bits)
    B, H, S, d = c.shape
    x = c.view(B, H, S // group, group, d).to(dtype) * scale.unsqueeze(3) + zero.unsqueeze(3)
    return x.view(B, H, S, d)


def dequant_v(packed, scale, zero, bits: int, group: int, dtype) -> torch.Tensor:
    """Per-token V (KIVI): codes [B, H, S, d/per]; scale/zero [B, H, S, d/G] -> [B, H, S, d]."""
    c = unpack_codes(packed, bits)
    B, H, S, d = c.shape
    x = c.view(B, H, S, d // group, group).to(dtype) * scale.unsqueeze(-1) + zero.unsqueeze(-1)
    return x.view(B, H, S, d)


def kivi_decode_attention(q, kq, ks, kz, vq, vs, vz, bits: int, group: int) -> torch.Tensor:
    """Dequantize the packed K and V of a batch, then attend: q [B, nh, 1, d]."""
    k = dequant_k(kq, ks, kz, bits, group, q.dtype)
    v = dequant_v(vq, vs, vz, bits, group, q.dtype)
    return sdpa(q, k, v)


# ---------------- sparse attention over gathered indices (MagicPIG CPU path) ----------------

def sparse_attention(q, k, v, idx, logw=None, valid=None) -> torch.Tensor:
    """Attention of each query head over its own index set.

    q [B, nh, d]; k/v [B, nkv, S, d]; idx [B, nh, n] (int64 token indices); ``logw`` [B, nh, n]
    optional additive log-weights (MagicPIG's ``-log u_i``); ``valid`` [B, nh, n] bool padding mask.
    Returns [B, nh, d].
    """
    B, nh, d = q.shape
    nkv = k.shape[1]
    b = torch.arange(B, device=q.device)[:, None, None]
    kvh = (torch.arange(nh, device=q.device) // (nh // nkv))[None, :, None]
    ks = k[b, kvh, idx]  # [B, nh, n, d] gathered rows
    vs = v[b, kvh, idx]
    s = (ks @ q.unsqueeze(-1)).squeeze(-1) * (1.0 / math.sqrt(d))  # [B, nh, n]
    if logw is not None:
        s = s + logw
    if valid is not None:
        s = s.masked_fill(~valid, float("-inf"))
    p = torch.softmax(s.float(), dim=-1).to(q.dtype)
    return (p.unsqueeze(-2) @ vs).squeeze(-2)
