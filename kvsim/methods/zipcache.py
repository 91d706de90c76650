"""ZipCache: mixed-precision KV by normalized-attention saliency (He et al., NeurIPS 2024;
METHODS.md 1.12, row 25).

Salient tokens (``salient_ratio``, 40%) are stored at ``hi_bits`` (4), the rest at ``lo_bits``
(2). Keys use channelwise quantization (one scale and zero per channel for the whole sequence,
per precision group); values use channel-separable tokenwise quantization (a per-channel
normalizer plus a scale and zero per token). Quantization parameters drop from
``O(b h l d / n)`` to ``O(h d + 2 b l)``. Per token per layer per KV head of dim ``d``::

    codes  2 d (0.4 x 4 + 0.6 x 2) / 8 = 2 d x 0.35 B        (d=128: 89.6 B vs 512 B at 16 bit)
    V      2 s_b                                            (token scale + zero)
    fixed  5 d s_b per layer per KV head per request         (K: 2 groups x scale, zero; V: normalizer)

i.e. ~5.5x at 16 bit (the paper reports 4.98x on GSM8K with Mistral-7B; the gap is its
full-precision parts we do not model [UNVERIFIED]). Decode reads codes and parameters and
dequantizes in the kernel (2 FLOP/element); the new token is quantized as it is written.
Prefill: FlashAttention for all queries, plus standard (non-Flash) attention for the
``probe_ratio`` (10%) probe queries to get the normalized scores: QK FLOPs on their pairs and
the scores streamed through HBM 4 times (write S, read, write P, read for the column sums),
then one quantization pass over the new tokens. New tokens are not kept in a 16-bit buffer.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import prefill_attention, prefill_pairs
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import arr, attn_decode, elems_tok_layer, gpu_pass, has, sum_seq
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Float, Int

QUANT_FLOPS_PER_ELEM = 5.0
SCORE_PASSES = 4.0
SOFTMAX_FLOPS_PER_SCORE = 5.0


class ZipCacheParams(MethodParams):
    salient_ratio: Float = Field(0.4, ge=0, le=1)
    hi_bits: Int = Field(4, ge=1, le=8)
    lo_bits: Int = Field(2, ge=1, le=8)
    probe_ratio: Float = Field(0.1, ge=0, le=1)
    """fraction of prefill queries used as probes (random + recent)."""


class ZipCache(KVMethod):
    name = "zipcache"
    mla_extrapolated = "its salient-token quantization is applied to the latent"
    summary = "ZipCache: 40% salient tokens at 4 bits, the rest at 2 bits (probe-token saliency)"
    Params = ZipCacheParams
    own_kv_format = True  # (its codes and residual do not follow --kv-dtype)
    linear_residency = False  # + fixed per-request quantization parameters
    full_prompt_until_prefilled = True  # (saliency from the probe tokens' attention over the whole prompt: the prefill peak holds its KV)

    def __init__(self, dep, params=None):
        super().__init__(dep, params)
        p = self.params
        self.E = elems_tok_layer(dep)
        self.H = float(dep.kv_heads_per_gpu) if dep.model.mla is None else 1.0
        avg_bits = p.salient_ratio * p.hi_bits + (1 - p.salient_ratio) * p.lo_bits
        self.tok = self.E * avg_bits / 8.0 + self.H * 2.0 * dep.ab  # bytes per token per layer
        self.fixed = 5.0 * (self.E / 2.0) * dep.ab  # bytes per layer per request

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        n = arr(n_tokens)
        return Residency(gpu_bytes=self.dep.model.attn_layers * (n * self.tok + self.fixed * has(n)))

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, L = self.dep, self.dep.model.attn_layers
        n = arr(ctx) + 1.0
        return attn_decode(dep, n, n * self.tok + self.fixed, layers=L, write_bytes=self.E * dep.ab + self.tok,
                           extra_flops=n * self.E * 2.0 + self.E * QUANT_FLOPS_PER_ELEM, launches_per_layer=2.0)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, m, L = self.dep, self.dep.model, self.dep.model.attn_layers
        n_new, n_cached = arr(n_new), arr(n_cached)
        attn = prefill_attention(dep, n_new, n_cached, kv_write_bytes_per_token_layer=0.0,
                                 kv_read_bytes_per_token_layer=self.tok)
        hq = dep.q_heads_per_gpu
        probe = self.params.probe_ratio * sum_seq(prefill_pairs(n_new, n_cached)) * hq  # probe scores
        new = sum_seq(n_new)
        probes = gpu_pass(dep, "zipcache_probe", op="attn_prefill",
                          flops=L * probe * (2.0 * m.q_head_dim + SOFTMAX_FLOPS_PER_SCORE),
                          hbm=L * probe * SCORE_PASSES * dep.ab, launches=3.0 * L * has(new))
        quant = gpu_pass(dep, "zipcache_quant", flops=L * new * self.E * QUANT_FLOPS_PER_ELEM,
                         hbm=L * new * (self.E * dep.ab + self.tok), launches=2.0 * L * has(new))
        return attn + probes + quant
