"""Small helpers shared by the method modules (array-safe; per GPU of a TP replica).

Shapes: ``ctx`` / ``n_prompt`` are ``[..., B]`` (B sequences, optional leading step axis);
every ``*_cost`` sums over the last axis. Bytes are per GPU unless a name says ``host``.
"""

from __future__ import annotations

import math

import numpy as np

from dataclasses import replace

from kvsim.costmodel.attention import (
    decode_attention,
    decode_flops_per_token_layer,
    decode_qo_elements_per_head,
    kv_bytes_per_token_layer,
    nseq,
    prefill_attention,
    sum_seq,
)
from kvsim.costmodel.cost import Cost, Num, Part
from kvsim.costmodel.cost import indicator as has  # noqa: F401  (1.0 where x > 0; methods' name for it)
from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.methods.base import KVMethod, Residency
from kvsim.models import ModelSpec


def arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def split_prompt(n: Num, n_prompt: Num | None) -> tuple[np.ndarray, np.ndarray]:
    """(prompt tokens held, generated tokens) of ``n`` cached tokens; ``None``: all prompt."""
    n = arr(n)
    p = n if n_prompt is None else np.minimum(np.broadcast_to(arr(n_prompt), n.shape), n)
    return p, n - p


def kv_tok_layer(dep: Deployment, bytes_per_elem: float | None = None, heads_frac: float = 1.0) -> float:
    """KV bytes per token per layer on one GPU (default: the uncompressed KV dtype)."""
    return kv_bytes_per_token_layer(dep, bytes_per_elem, heads_frac)


def elems_tok_layer(dep: Deployment) -> float:
    """Cached KV elements per token per layer on one GPU (K and V of its KV heads, or MLA latent)."""
    return dep.model.kv_elements_per_token_per_layer * dep.kv_shard


def key_elems_tok_layer(dep: Deployment) -> float:
    """Key elements per token per layer on one GPU: ``n_kv * d`` (MLA: the whole latent + RoPE key)."""
    m = dep.model
    if m.mla is not None:
        return float(m.mla.kv_lora_rank + m.mla.qk_rope_head_dim)
    return m.num_kv_heads * m.head_dim * dep.kv_shard


def host_kv_tok_layer(dep: Deployment, bytes_per_elem: float) -> float:
    """KV bytes per token per layer of the whole replica (all KV heads), for host copies."""
    return dep.model.kv_elements_per_token_per_layer * bytes_per_elem


def attn_decode(
    dep: Deployment,
    n_attended: Num,
    read_bytes: Num,
    *,
    layers: float,
    heads_frac: float = 1.0,
    write_bytes: Num = 0.0,
    extra_flops: Num = 0.0,
    extra_hbm: Num = 0.0,
    launches_per_layer: float = 1.0,
    name: str = "attn_decode",
    op: str = "attn_decode",
) -> Cost:
    """Decode attention over per-sequence token counts and byte counts (per layer).

    Args:
        n_attended: [..., B] tokens each query attends to per layer (QK^T and PV FLOPs).
        read_bytes / write_bytes / extra_flops / extra_hbm: [..., B] or scalars per layer
            per sequence (KV read, KV written, dequantization or score FLOPs, score traffic).
    Same accounting as :func:`kvsim.costmodel.attention.decode_attention` (which it equals for
    ``read_bytes = n * kv_tok``) plus Q in and O out per sequence.
    """
    B = nseq(n_attended)
    nf = decode_flops_per_token_layer(dep, heads_frac)
    flops = layers * sum_seq(arr(n_attended) * nf + extra_flops + 0 * arr(n_attended))
    qo = layers * B * dep.q_heads_per_gpu * heads_frac * decode_qo_elements_per_head(dep) * dep.ab
    body = arr(read_bytes) + write_bytes + extra_hbm + 0 * arr(n_attended)
    hbm = layers * sum_seq(body) + qo
    return Cost.of(Part(name, op, dtype=dep.act_dtype, flops=flops, hbm_bytes=hbm, launches=layers * launches_per_layer))


def gpu_pass(dep: Deployment, name: str, *, flops: Num = 0.0, hbm: Num = 0.0, launches: Num = 0.0,
             op: str = "elementwise", overlap: str | None = None) -> Cost:
    """One GPU kernel class (quantize pass, scoring, top-k, gather) as a cost."""
    return Cost.of(Part(name, op, dtype=dep.act_dtype, flops=flops, hbm_bytes=hbm, launches=launches, overlap=overlap))


def window_pairs(n_new: Num, n_cached: Num, window: Num) -> Num:
    """Causal (query, key) pairs when each query sees at most ``window`` keys (itself included).

    The query at position ``k`` (1-based) sees ``min(k, W)`` keys; with
    ``F(m) = sum_{k<=m} min(k, W)`` = ``m(m+1)/2`` if ``m <= W`` else ``W(W+1)/2 + (m-W) W``,
    a chunk of ``n`` tokens after ``c`` has ``F(c+n) - F(c)`` pairs."""
    W = arr(window)

    def F(m):
        m = arr(m)
        mm = np.minimum(m, W)
        return mm * (mm + 1) / 2.0 + np.maximum(m - W, 0.0) * W

    return F(arr(n_cached) + arr(n_new)) - F(n_cached)


def dense_layer_list(spec, num_layers: int, every: int = 16) -> list[int]:
    """``"auto"``: every ``every``-th layer from 0 (MagicPIG's attnserver default
    ``[0, 16, 32, 48, 64]``); otherwise the given indices, checked against the model."""
    if spec == "auto":
        return list(range(0, num_layers, every))
    out = sorted(set(int(i) for i in spec))
    bad = [i for i in out if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(f"dense_layers {bad} outside the model's {num_layers} attention layers (indices count attention layers)")
    return out


def require_not_mla(dep: Deployment, method: str, why: str) -> None:
    if dep.model.mla is not None:
        raise ConfigError(f"{method} does not apply to MLA model {dep.model.name}: {why}")


def is_mha(dep: Deployment) -> bool:
    m = dep.model
    return m.mla is None and m.num_kv_heads == m.num_heads


def busiest_gpu_head_fraction(dep: Deployment, ratio: float) -> float:
    """The fraction of its KV heads that the busiest GPU keeps whole, when ``ratio`` of each layer's
    ``H`` KV heads are kept whole (retrieval heads: DuoAttention, RazorAttention) and tensor
    parallelism gives each GPU whole heads: at best (an engine may permute heads per layer) the
    ``R = ratio H`` retrieval heads spread evenly over the ``g = min(tp, H)`` GPUs holding distinct
    heads, so the busiest holds ``ceil(R / g)`` of its ``ceil(H / tp)``. A fractional ``R`` (a ratio
    over every layer's heads) is ``floor`` or ``ceil`` in the proportion that keeps its mean. Each
    step waits for the slowest GPU and each GPU's pool holds its own heads' KV, so that GPU's share
    prices both; on one GPU it is ``ratio`` itself.

    Llama-3.1-8B (8 KV heads), ratio 0.5: TP 2 -> ceil(4 / 2) / 4 = 0.5; TP 8 -> ceil(4 / 8) / 1 = 1.0
    (every GPU has one head; four of them hold a retrieval head). Ratio 0.16 at TP 2: R = 1.28 ->
    0.72 ceil(1 / 2) + 0.28 ceil(2 / 2) = 1 of 4 heads = 0.25."""
    H = dep.model.num_kv_heads
    groups = min(dep.tp, H)
    if groups <= 1 or ratio <= 0.0 or ratio >= 1.0:
        return ratio
    rh = ratio * H
    lo = math.floor(rh)
    f = rh - lo
    busiest = (1.0 - f) * math.ceil(lo / groups) + f * math.ceil((lo + 1) / groups)
    return busiest / dep.kv_heads_per_gpu


def eager_scores_bytes(dep: Deployment, n_new: Num, n_cached: Num) -> Num:
    """One layer's attention-weight matrix per GPU in eager attention: ``query heads x n x (c + n)``
    scores of the activation dtype (HF eager attention materializes ``[heads, q, k]`` per layer, the
    masked half included). Llama-3.1-8B, one GPU, the last 8,192-token chunk of a 131,072-token
    prompt: 32 x 8,192 x 131,072 x 2 B = 68,719,476,736 B."""
    return dep.q_heads_per_gpu * arr(n_new) * (arr(n_cached) + arr(n_new)) * dep.ab


def eager_prefill(dep: Deployment, n_new: Num, n_cached: Num, *, score_passes: float, accum_bytes_per_token: float,
                  name: str, softmax_flops: float = 5.0, kv_write_bytes_per_token_layer: float | None = None,
                  kv_read_bytes_per_token_layer: float | None = None) -> Cost:
    """Prefill with eager (non-Flash) attention that materializes the attention weights, as H2O-style
    importance scores need them (see :mod:`kvsim.methods.h2o`): the full ``n x (c + n)`` score matrix per
    query head is computed (masked entries included) and streams through HBM ``score_passes`` times
    (2-byte passes); ``accum_bytes_per_token`` of accumulated scores are read and written per new token
    and layer; ``softmax_flops`` per score. Parts: ``attn_prefill`` and ``name``."""
    L, hq = dep.model.attn_layers, dep.q_heads_per_gpu
    n_new, n_cached = arr(n_new), arr(n_cached)
    full_pairs = n_new * (n_cached + n_new)
    attn = prefill_attention(dep, n_new, n_cached, pairs=full_pairs, kv_write_bytes_per_token_layer=kv_write_bytes_per_token_layer,
                             kv_read_bytes_per_token_layer=kv_read_bytes_per_token_layer)
    s = sum_seq(full_pairs) * hq
    new = sum_seq(n_new)
    scores = gpu_pass(dep, name, flops=L * s * softmax_flops,
                      hbm=L * s * score_passes * dep.ab + L * new * accum_bytes_per_token, launches=3.0 * L * has(new))
    return attn + scores


class ReshapedModelMethod(KVMethod):
    """A method that turns the model's attention into another full-attention shape (fewer KV heads,
    an MLA latent) and then serves it as dense attention: resident bytes, decode and prefill are
    those of full KV on ``self.mdep``, the deployment with :meth:`reshaped_model`.

    Subclasses define ``reshaped_model()`` (and ``check()``); nothing else."""

    def __init__(self, dep, params=None):
        super().__init__(dep, params)
        self.mdep = replace(dep, model=self.reshaped_model())

    def reshaped_model(self) -> ModelSpec:
        raise NotImplementedError

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        return Residency(gpu_bytes=arr(n_tokens) * self.mdep.full_kv_bytes_per_token)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        return decode_attention(self.mdep, arr(ctx) + 1.0)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        return prefill_attention(self.mdep, n_new, n_cached)
