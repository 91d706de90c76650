"""GEAR: quantization + low-rank + sparse error correction (Kang et al., 2024; METHODS.md 1.13).

``X ~ Q_b(X) + A B + S``: b-bit group quantization (KIVI-like, group ``G``, 16-bit scale and
zero), a rank-``r`` low-rank approximation of the quantization error (power iteration,
``power_iters`` loops; rank 4 for the prompt, 2 for the streamed chunks) and an ``s`` fraction
of outliers kept as 16-bit values with int32 indices. Per token, per K or V tensor, per KV head
of head dim ``d`` [DERIVED, METHODS.md 1.13]::

    codes   d (b/8 + 2 s_b / G)        4-bit, G=64: 64 + 8 = 72 B
    sparse  6 s d                       s = 0.02: 15.4 B
    A       r s_b                       prompt rank 4: 8 B
    B       r d s_b per chunk           once for the prompt, once per ``buffer`` generated tokens

plus a 16-bit streaming buffer of generated tokens compressed every ``buffer`` (64) steps
(expected ``buffer/2`` tokens). Without ``n_prompt`` every token counts as prompt.

Decode reads all of it and reconstructs inside attention: ``2 + 2 r`` FLOPs per element
(dequantize, add ``A B``) plus 2 per outlier. Prefill: FlashAttention, then the compression of
the new tokens: ~``PASSES = 5 + 2 power_iters`` 16-bit passes over the KV (quantize, outlier
top-k, error, power iterations) [E], ``4 r power_iters + 15`` FLOPs per element. Gao et al.
(MLSys'25) measured GEAR-4 prefill at 0.80-0.90x FP16 (tests record kvsim's value).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import arr, attn_decode, elems_tok_layer, gpu_pass, has, split_prompt, sum_seq
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Float, Int

OUTLIER_BYTES = 6.0  # fp16 value + int32 index
QUANT_FLOPS_PER_ELEM = 15.0  # quantize (5) + outlier top-k selection (~10) [E]


class GEARParams(MethodParams):
    bits: Int = Field(4, ge=1, le=8)
    """quantization bits (repo: 2 or 4)."""
    group: Int = Field(64, gt=0)
    outlier_ratio: Float = Field(0.02, ge=0, lt=1)
    """s, the fraction of entries kept exactly (repo 'left' = 0.02)."""
    rank_prefill: Int = Field(4, ge=0)
    rank_decode: Int = Field(2, ge=0)
    buffer: Int = Field(64, gt=0)
    """streaming buffer: generated tokens are compressed every ``buffer`` steps."""
    power_iters: Int = Field(3, ge=0)


class GEAR(KVMethod):
    name = "gear"
    mla_extrapolated = "its quantization, low-rank and sparse parts are applied to the latent"
    summary = "GEAR 4-bit group quantization + rank-4/2 low-rank + 2% sparse outliers"
    Params = GEARParams
    own_kv_format = True  # (its codes and residual do not follow --kv-dtype)
    prompt_aware = True  # prompt rank-4 vs generated rank-2 + 16-bit buffer
    full_prompt_until_prefilled = True  # (the prefill peak holds the whole prompt's KV)
    constant_decode_fields = (("attn_decode", "launches"), ("gear_compress", "flops"), ("gear_compress", "hbm_bytes"),
                              ("gear_compress", "launches"))  # the 16-bit buffer's compression per token
    linear_residency = False  # 16-bit streaming buffer + per-chunk low-rank factors
    shared_step_parts = True  # gear_compress runs in decode and prefill

    def __init__(self, dep, params=None):
        super().__init__(dep, params)
        p = self.params
        self.h = elems_tok_layer(dep) / 2.0  # elements of K (or V) per token per layer per GPU
        self.H = float(dep.kv_heads_per_gpu) if dep.model.mla is None else 1.0
        self.d = self.h / self.H
        self.per_elem = p.bits / 8.0 + 2.0 * dep.ab / p.group + OUTLIER_BYTES * p.outlier_ratio
        self.passes = 5.0 + 2.0 * p.power_iters

    def _tensor_bytes(self, n: np.ndarray, n_prompt) -> np.ndarray:
        """Bytes of one tensor (K or V) per layer per sequence."""
        p, ab = self.params, self.dep.ab
        pr, g = split_prompt(n, n_prompt)
        buf = np.minimum(g, p.buffer / 2.0)
        comp = g - buf
        codes = (pr + comp) * self.h * self.per_elem
        a = self.H * ab * (pr * p.rank_prefill + comp * p.rank_decode)
        b = self.H * self.d * ab * (p.rank_prefill * has(pr) + p.rank_decode * comp / p.buffer)
        return codes + a + b + buf * self.h * ab

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        return Residency(gpu_bytes=self.dep.model.attn_layers * 2.0 * self._tensor_bytes(arr(n_tokens), n_prompt))

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, p, L = self.dep, self.params, self.dep.model.attn_layers
        ctx = arr(ctx)
        n = ctx + 1.0
        pr, _ = split_prompt(ctx, n_prompt)
        prompt = pr if n_prompt is not None else ctx  # the new token joins the generated part
        read = 2.0 * self._tensor_bytes(n, prompt)
        comp = n - np.minimum(n - prompt, p.buffer / 2.0)
        r_avg = np.where(comp > 0, (prompt * p.rank_prefill + (comp - prompt) * p.rank_decode) / np.maximum(comp, 1.0), 0.0)
        recon = 2.0 * self.h * comp * (2.0 + 2.0 * r_avg + 2.0 * p.outlier_ratio)
        attn = attn_decode(dep, n, read, layers=L, write_bytes=2.0 * self.h * dep.ab, extra_flops=recon)
        B = float(ctx.shape[-1]) if ctx.ndim else 1.0
        zero = 0.0 * sum_seq(ctx)
        e = 2.0 * self.h  # one token's K and V compressed per step (amortized over the buffer)
        comp_cost = gpu_pass(dep, "gear_compress", flops=L * B * e * (QUANT_FLOPS_PER_ELEM + 4.0 * p.rank_decode * p.power_iters) + zero,
                             hbm=L * B * e * dep.ab * self.passes + zero, launches=L * 2.0 * (4.0 + 2.0 * p.power_iters) / p.buffer)
        return attn + comp_cost

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, p, L = self.dep, self.params, self.dep.model.attn_layers
        e = 2.0 * self.h
        attn = prefill_attention(dep, n_new, n_cached, kv_write_bytes_per_token_layer=0.0,
                                 kv_read_bytes_per_token_layer=e * (self.per_elem + p.rank_prefill * dep.ab / self.d))
        new = sum_seq(n_new)
        comp = gpu_pass(dep, "gear_compress", flops=L * new * e * (QUANT_FLOPS_PER_ELEM + 4.0 * p.rank_prefill * p.power_iters),
                        hbm=L * new * e * (dep.ab * self.passes + self.per_elem),
                        launches=L * 2.0 * (4.0 + 2.0 * p.power_iters) * has(new))
        return attn + comp
