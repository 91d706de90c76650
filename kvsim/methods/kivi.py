"""KIVI: tuning-free asymmetric 2/4-bit KV quantization (Liu et al., ICML 2024; METHODS.md 1.1).

K is quantized per channel (groups of ``G`` tokens per channel), V per token (groups of ``G``
channels); each group keeps a scale and a zero point in the 16-bit data dtype (``s_b`` = 2 B).
Bytes per token per layer per KV head of the quantized store (head dim ``d``, ``b`` bits)::

    q = d * (b_K + b_V) / 8 + 8 d s_b / (2 G)    # 2-bit, G=32, d=128: 64 + 32 = 96 B; 4-bit: 160 B

(the K scale+zero ``2 s_b`` amortized over ``G`` tokens for each of ``d`` channels, and the V
scale+zero once per ``G`` channels). Per element: ``b/8 + 2 s_b / G`` bytes.

Full-precision residual (streaming, §3.3 / ``models/llama_kivi.py``): K keeps 0..R-1 recent
tokens (flushed in blocks of R), V a FIFO of the R most recent. kvsim uses the paper's
expected window exactly: ``r_K = min(n, R/2)`` and ``r_V = min(n, R)`` tokens at 16 bits
(monotone in ``n``; the true K residual saw-tooths between 0 and R-1 around R/2).

Decode reads the codes of ``n - r`` tokens plus the residual, and dequantizes inside the
fused Q_MatMul kernel at 2 FLOP per quantized element (scale and shift) [DERIVED; counted
once per KV element, i.e. a GQA-aware kernel]. The quantize kernel runs every step on the V
token leaving the FIFO and every R steps on a block of R K tokens: amortized, one token of K
and V per step is read at 16 bits and written as codes (~5 FLOP per element: min/max,
scale, round, pack [E]). Prefill: exact FlashAttention, then one quantization pass over the
new tokens (the cached prefix of a chunked prompt is read as codes).

On an MLA model (DeepSeek) the cache is one latent per token (``d_c + d_r`` elements, shared by
K and V; :mod:`kvsim.methods.mla`). KIVI defines no such case (its per-channel K statistics
assume per-head keys); kvsim quantizes the latent at the same bytes per element (``b/8 + 2 s_b /
G``) and counts half of it as "K" and half as "V" for the residual windows [EXTRAPOLATED: no
paper measures KIVI on a latent cache]. DeepSeek-V2-Lite, 2 bits: 27 x 576 x 0.375 = 5,832 B
per token of codes plus the residual's share.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from kvsim.costmodel.attention import prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.errors import ConfigError
from kvsim.methods._common import arr, attn_decode, elems_tok_layer, gpu_pass, has, sum_seq
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Int

#: FLOPs per element of the quantize kernel (min/max reduction, scale, round, pack) [E]
QUANT_FLOPS_PER_ELEM = 5.0
#: FLOPs per element of dequantization fused into attention (scale and shift), METHODS.md 1.1
DEQUANT_FLOPS_PER_ELEM = 2.0


class KIVIParams(MethodParams):
    bits: Int = Field(2, ge=1, le=8)
    """code bits of K and V (paper: 2 and 4)."""
    group: Int = Field(32, gt=0)
    """quantization group size G (paper default 32; ablations 32/64/128)."""
    residual: Int = Field(128, ge=0)
    """full-precision residual length R (paper default 128; ablations 32-128)."""

    @model_validator(mode="after")
    def _r_multiple_of_g(self) -> "KIVIParams":
        if 32 % self.bits:
            raise ValueError(f"bits must divide 32 (codes are packed 32/bits per int32, KIVI quant/new_pack.py): 1, 2, 4 or 8, got {self.bits}")
        if self.residual % self.group:
            raise ValueError(f"residual ({self.residual}) must be a multiple of group ({self.group}) (KIVI asserts R % G == 0)")
        if self.residual < self.group:
            raise ValueError(f"residual ({self.residual}) must be at least one group ({self.group}): K is quantized per "
                             f"channel over groups of G tokens, so the newest tokens wait in 16 bits until a group is full")
        return self


def quant_bytes_per_elem(bits: float, group: int, scale_bytes: float) -> float:
    """Stored bytes per quantized KV element: codes plus amortized scale and zero point."""
    return bits / 8.0 + 2.0 * scale_bytes / group


class KIVI(KVMethod):
    name = "kivi"
    mla_extrapolated = "its per-channel K and per-token V groups are applied to the latent's channels"
    summary = "KIVI 2/4-bit asymmetric KV quantization (per-channel K, per-token V) with a 16-bit residual"
    Params = KIVIParams
    own_kv_format = True  # (its codes and residual do not follow --kv-dtype)
    linear_residency = False  # 16-bit residual window: bytes are not proportional to tokens
    shared_step_parts = True  # kivi_quant runs in decode and prefill
    role = "storage"  # kivi+quest, snapkv+kivi: quantizes what a selection method keeps

    def __init__(self, dep, params=None):
        super().__init__(dep, params)
        p = self.params
        width = dep.model.mla.kv_lora_rank + dep.model.mla.qk_rope_head_dim if dep.model.mla else dep.model.head_dim
        if width % p.group:
            raise ConfigError(f"method kivi: group={p.group} must divide the {width} channels of a {dep.model.name} "
                              f"{'latent' if dep.model.mla else 'head'}: V is quantized per token in groups of G channels")
        self.fe = dep.ab  # 16-bit residual and scales (KIVI keeps them in the data dtype)
        self.qe = quant_bytes_per_elem(p.bits, p.group, dep.ab)
        self.half = elems_tok_layer(dep) / 2.0  # K (or V) elements per token per layer per GPU

    def stored_bytes_per_elem(self) -> float:
        """Bytes per quantized KV element, codes + amortized scale and zero (0.375 at 2 bits, G = 32)."""
        return self.qe

    def residual_tokens(self, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """16-bit residual tokens ``(r_K, r_V) = (min(n, R/2), min(n, R))`` among ``n`` cached tokens."""
        R = float(self.params.residual)
        return np.minimum(n, R / 2.0), np.minimum(n, R)

    def _layer_bytes(self, n: np.ndarray) -> np.ndarray:
        """Bytes per layer per sequence holding ``n`` tokens (codes + residual)."""
        rk, rv = self.residual_tokens(n)
        q, f, h = self.qe, self.fe, self.half
        return h * ((n - rk) * q + rk * f) + h * ((n - rv) * q + rv * f)

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        n = arr(n_tokens)
        return Residency(gpu_bytes=self.dep.model.attn_layers * self._layer_bytes(n))

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, L = self.dep, self.dep.model.attn_layers
        n = arr(ctx) + 1.0
        rk, rv = self.residual_tokens(n)
        dq = DEQUANT_FLOPS_PER_ELEM * self.half * ((n - rk) + (n - rv))
        attn = attn_decode(dep, n, self._layer_bytes(n), layers=L, write_bytes=2 * self.half * self.fe,
                           extra_flops=dq, launches_per_layer=2.0)  # quantized-part kernel + residual matmul
        B = float(n.shape[-1]) if n.ndim else 1.0
        e = 2 * self.half  # one token of K and V quantized per step (amortized)
        quant = gpu_pass(dep, "kivi_quant", flops=L * B * e * QUANT_FLOPS_PER_ELEM + 0 * sum_seq(n),
                         hbm=L * B * e * (self.fe + self.qe) + 0 * sum_seq(n),
                         launches=L * (1.0 + 1.0 / max(self.params.residual, 1)))
        return attn + quant

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, L = self.dep, self.dep.model.attn_layers
        e = 2 * self.half
        # the cache write is the quantize pass below (reads 16-bit K,V, writes codes)
        # the cached prefix is read as codes and dequantized in the kernel, as decode does (DEQUANT_FLOPS_PER_ELEM
        # per element; its 16-bit residual tokens counted as codes too: at most R of the prefix)
        attn = prefill_attention(dep, n_new, n_cached, kv_write_bytes_per_token_layer=0.0,
                                 kv_read_bytes_per_token_layer=e * self.qe,
                                 dequant_flops_per_cached_token_layer=e * DEQUANT_FLOPS_PER_ELEM)
        new = sum_seq(n_new)
        quant = gpu_pass(dep, "kivi_quant", flops=L * new * e * QUANT_FLOPS_PER_ELEM,
                         hbm=L * new * e * (self.fe + self.qe), launches=2 * L * has(new))
        return attn + quant
