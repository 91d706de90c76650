"""Attention work shared by the KV methods (per GPU of a TP replica).

Notation: ``n_h`` query heads (per GPU: ``n_h / tp``), ``d_qk`` query/key head dim, ``d_v``
value head dim, ``L`` layers. FLOPs = 2 per multiply-add.

* Decode (one new token per sequence attending over ``n`` cached tokens + itself):
  FLOPs ``2 * n_h * (d_qk + d_v) * (n + 1)`` per layer (QK^T and PV; METHODS.md 1.0
  ``4 L n_h d S``); HBM bytes = the K and V read once (GenZ accounting, SPECS.md
  takeaway 3), the new token's K,V written, Q and O in and out. GQA saves bytes, not FLOPs.
* MLA decode with absorbed projections (DeepSeek-V2 §2.1.3): each head attends to the
  latent ``c_KV`` (``d_c``) plus the RoPE key (``d_r``): FLOPs ``2 n_h (d_c + d_r) + 2 n_h d_c``
  per token per layer, bytes ``(d_c + d_r) * b`` per token per layer (shared by all heads).
  Q and O live in the latent space too: each head's query is ``d_c + d_r`` wide (``q_nope``
  absorbed through ``W^UK``) and its output ``d_c`` wide (``W^UV`` is applied after the
  kernel), as FlashMLA's interface takes them (q ``[B, s_q, h_q, 576]``, out ``[.., 512]``
  for DeepSeek-V2/V3: github.com/deepseek-ai/FlashMLA README).
* Prefill of ``n`` new tokens after ``c`` cached tokens (causal):
  ``pairs = n*c + n(n+1)/2``; FLOPs ``2 * n_h * (d_qk + d_v) * pairs`` per layer
  (SPECS.md F2 with causal halving, as FlashAttention skips masked blocks). HBM: Q and O of
  the query heads, K and V of the KV heads (GQA), the cached prefix read, the new KV written.
* Tiles (``Part.tiles``, see :mod:`kvsim.costmodel.roofline`): prefill ``heads * ceil(n_new/128)``
  per chunk per layer, decode ``kv_heads`` per sequence per layer.
"""

from __future__ import annotations

import numpy as np

from kvsim.costmodel.cost import Cost, Num, Part, indicator
from kvsim.costmodel.deployment import Deployment

#: query rows per prefill tile: FlashAttention-2/3 forward kernels give each thread block a
#: 128-row block of queries of one head (kBlockM = 128 for head dim 128; Dao 2023 §3.1)
PREFILL_TILE_QUERY_ROWS = 128


def sum_seq(x: Num) -> Num:
    """Sum over the sequence (last) axis; 0-d results become floats."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim >= 2 and a.shape[-1] == 1:  # one sequence per row (the fast layer's [n, 1] rows):
        return a[..., 0] + 0.0  # what the sum gives (0 + x), without numpy's slow length-1 reduction
    out = a.sum(axis=-1) if a.ndim >= 1 else a
    return float(out) if np.ndim(out) == 0 else out


def nseq(x: Num) -> float:
    """Sequences in ``x`` (its last axis); a scalar is one sequence."""
    a = np.asarray(x)
    return float(a.shape[-1]) if a.ndim >= 1 else 1.0


def prefill_tiles(dep: Deployment, n_new: Num, heads_frac: float = 1.0) -> Num:
    """Work tiles of one layer's prefill attention: ``sum over chunks of heads * ceil(n_new / 128)``."""
    per_seq = np.ceil(np.asarray(n_new, dtype=np.float64) / PREFILL_TILE_QUERY_ROWS)
    return dep.q_heads_per_gpu * heads_frac * sum_seq(per_seq)


def decode_tiles(dep: Deployment, n_attended: Num, heads_frac: float = 1.0) -> Num:
    """Work tiles of one layer's decode attention: one per KV head of each sequence (decode
    kernels give each (sequence, KV head) its own thread blocks: per-tile setup, the split-KV
    reduction and the output write do not grow with the context)."""
    per_seq = (np.asarray(n_attended, dtype=np.float64) > 0).astype(np.float64)
    kv_heads = 1.0 if dep.model.mla is not None else dep.kv_heads_per_gpu * heads_frac
    return kv_heads * sum_seq(per_seq)


def decode_flops_per_token_layer(dep: Deployment, heads_frac: float = 1.0) -> float:
    """Attention FLOPs per attended token per layer per GPU for one query token."""
    m = dep.model
    nh = dep.q_heads_per_gpu * heads_frac
    if m.mla is not None:
        dc, dr = m.mla.kv_lora_rank, m.mla.qk_rope_head_dim
        return 2.0 * nh * (dc + dr) + 2.0 * nh * dc
    return 2.0 * nh * (m.q_head_dim + m.head_dim)


def decode_qo_elements_per_head(dep: Deployment) -> float:
    """Elements of one query head's Q read and O written by a decode attention call: ``d_qk + d_v``
    (``2 d`` for Llama-style heads); MLA with absorbed projections: ``(d_c + d_r) + d_c``
    (DeepSeek-V3: 576 + 512 = 1,088; module docstring)."""
    m = dep.model
    if m.mla is not None:
        return float(2 * m.mla.kv_lora_rank + m.mla.qk_rope_head_dim)
    return float(2 * m.q_head_dim)


def kv_bytes_per_token_layer(dep: Deployment, bytes_per_elem: float | None = None, heads_frac: float = 1.0) -> float:
    """KV bytes per token per layer on one GPU for a fraction of the KV heads."""
    b = dep.kvb if bytes_per_elem is None else bytes_per_elem
    return dep.model.kv_elements_per_token_per_layer * dep.kv_shard * b * heads_frac


def decode_attention(
    dep: Deployment,
    n_attended: Num,
    *,
    layers: float | None = None,
    kv_bytes_per_token_layer_read: float | None = None,
    heads_frac: float = 1.0,
    n_written: Num | None = None,
    kv_bytes_per_token_layer_written: float | None = None,
    name: str = "attn_decode",
    extra_flops_per_token_layer: float = 0.0,
) -> Cost:
    """Decode attention of a batch on the GPU.

    Args:
        n_attended: [..., B] tokens each sequence attends to (cached tokens read + its own).
        layers: layers this applies to (default all).
        kv_bytes_per_token_layer_read: bytes read per attended token per layer per GPU
            (default: uncompressed KV of ``heads_frac`` of the heads).
        heads_frac: fraction of the query/KV heads this applies to (DuoAttention groups).
        n_written: [..., B] tokens whose KV is written this step (default 1 per sequence).
        extra_flops_per_token_layer: additional FLOPs per attended token per layer
            (e.g. dequantization: 2 per element, METHODS.md 1.1).
    """
    m = dep.model
    L = m.attn_layers if layers is None else layers
    rb = kv_bytes_per_token_layer(dep, heads_frac=heads_frac) if kv_bytes_per_token_layer_read is None else kv_bytes_per_token_layer_read
    wbytes = kv_bytes_per_token_layer(dep, heads_frac=heads_frac) if kv_bytes_per_token_layer_written is None else kv_bytes_per_token_layer_written
    n_tot = sum_seq(n_attended)
    B = nseq(n_attended)
    w_tot = B if n_written is None else sum_seq(n_written)
    flops = L * n_tot * (decode_flops_per_token_layer(dep, heads_frac) + extra_flops_per_token_layer)
    qo_bytes = L * B * dep.q_heads_per_gpu * heads_frac * decode_qo_elements_per_head(dep) * dep.ab
    hbm = L * (n_tot * rb + w_tot * wbytes) + qo_bytes
    return Cost.of(Part(name, "attn_decode", dtype=dep.act_dtype, flops=flops, hbm_bytes=hbm, launches=float(L),
                        tiles=L * decode_tiles(dep, n_attended, heads_frac)))


def prefill_pairs(n_new: Num, n_cached: Num) -> Num:
    """Causal (query, key) pairs of a chunk of ``n_new`` tokens after ``n_cached`` tokens."""
    return n_new * n_cached + n_new * (n_new + 1) / 2.0


def prefill_attention(
    dep: Deployment,
    n_new: Num,
    n_cached: Num,
    *,
    layers: float | None = None,
    heads_frac: float = 1.0,
    pairs: Num | None = None,
    kv_write_bytes_per_token_layer: float | None = None,
    kv_read_bytes_per_token_layer: float | None = None,
    name: str = "attn_prefill",
    overlap: str | None = None,
    dequant_flops_per_cached_token_layer: float = 0.0,
) -> Cost:
    """Prefill attention of the chunks of one step ([R] arrays or scalars), FlashAttention-style.

    FLOPs ``L * 2 n_h (d_qk + d_v) * pairs``; HBM: Q, K, V, O of the new tokens, the cached
    prefix's KV read once per chunk (only by chunks with new tokens), and the new tokens' KV
    written to the cache. ``pairs`` overrides the causal pair count (window attention:
    StreamingLLM, DuoAttention); ``n_cached`` is then the number of cached tokens read.
    ``kv_read_bytes_per_token_layer`` prices the cached prefix when it is stored compressed
    (KIVI codes), default the uncompressed KV of ``heads_frac`` of the heads, and
    ``dequant_flops_per_cached_token_layer`` the FLOPs of turning them back into 16-bit values in
    the kernel (once per chunk that reads them). ``overlap``: the part's overlap tag
    (:class:`kvsim.costmodel.cost.Part`).
    """
    m = dep.model
    L = m.attn_layers if layers is None else layers
    nh = dep.q_heads_per_gpu * heads_frac
    d_qk, d_v = m.q_head_dim, (m.mla.v_head_dim if m.mla else m.head_dim)
    pr = prefill_pairs(n_new, n_cached) if pairs is None else pairs
    flops = L * 2.0 * nh * (d_qk + d_v) * sum_seq(pr)
    kv_tok = kv_bytes_per_token_layer(dep, heads_frac=heads_frac)
    w_tok = kv_tok if kv_write_bytes_per_token_layer is None else kv_write_bytes_per_token_layer
    r_tok = kv_tok if kv_read_bytes_per_token_layer is None else kv_read_bytes_per_token_layer
    new = sum_seq(n_new)
    # Q in and O out per query head; K and V in per KV head (GQA, Ainslie et al. 2023: the query heads
    # of a group share one K/V, re-read from L2; MLA prefill expands K/V to every query head)
    nkv = nh if m.mla is not None else dep.kv_heads_per_gpu * heads_frac
    act = L * new * (nh + nkv) * (d_qk + d_v) * dep.ab
    # a chunk without new tokens runs no kernel, so it reads none of its cached prefix
    cached_read = sum_seq(np.where(np.asarray(n_new) > 0, n_cached, 0.0))
    hbm = act + L * cached_read * r_tok + L * new * w_tok
    if dequant_flops_per_cached_token_layer:
        flops = flops + L * cached_read * dequant_flops_per_cached_token_layer
    return Cost.of(Part(name, "attn_prefill", dtype=dep.act_dtype, flops=flops, hbm_bytes=hbm, launches=L * indicator(new),
                        tiles=L * prefill_tiles(dep, n_new, heads_frac), overlap=overlap))
