"""NSA: natively trainable sparse attention (Yuan et al., DeepSeek, 2025, arXiv 2502.11089).

Each query attends through three branches (§3.3), each with its own keys and values (§3.3.3):
compressed tokens (a learned MLP ``phi`` over blocks of ``l`` keys every ``d`` tokens, eq. 7),
the tokens of the top-``n`` selection blocks of ``l'`` tokens (scored from the compressed
branch's attention, §3.3.2; the initial block and 2 local blocks are always among them) and a
sliding window of ``w`` tokens. Defaults are the paper's (§4.1): ``l`` = 32, ``d`` = 16,
``l'`` = 64, ``n`` = 16, ``w`` = 512. The method is trained in; kvsim prices its attention on
the given model's dims (the paper's model: 27B MoE, GQA with 4 groups).

Tokens seen by the query at position ``t`` (its KV loaded once per GQA group, §3.4)::

    cmp(t) = floor((t - l) / d) + 1   (t >= l, else 0)     compressed tokens
    sel(t) = min(t, n l')                                 selected tokens
    win(t) = min(t, w)
    decode tokens loaded = cmp + sel + win    t = 64K: 4,095 + 1,024 + 512 = 5,631

(Table 4: 5,632 at 64K, 11.6x fewer than full attention's 65,536; 2,048 / 2,560 / 3,584 at
8K / 16K / 32K). Resident per layer: the selection branch's raw KV of all ``n`` tokens, the
compressed KV (``cmp(n)`` tokens), the window branch's KV (``min(n, w)``) and the compression
branch's last ``min(n, l)`` raw tokens: slightly *more* than full attention (x (1 + 1/d) +
544 tokens). Decode per layer also writes the new token to the three branches' caches,
makes one compressed token every ``d`` steps (reads ``l`` raw tokens; ``phi`` priced as one
``l d_k x d_k`` linear map per K and V [E]) and scores the selection blocks from the
compressed attention (2 FLOPs per compressed token per query head) before a top-n.
Prefill: the same three branches per query (pairs summed exactly over the chunk), the
compression of the new tokens, the selection scoring. Not defined for MLA.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from kvsim.costmodel.attention import prefill_attention
from kvsim.costmodel.cost import Cost, Num
from kvsim.methods._common import (
    arr,
    attn_decode,
    gpu_pass,
    has,
    kv_tok_layer,
    require_not_mla,
    sum_seq,
    window_pairs,
)
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Int

SELECT_FLOPS_PER_CMP = 2.0  # sum of the compressed attention into selection blocks, per query head


class NSAParams(MethodParams):
    cmp_block: Int = Field(32, gt=0)
    """compression block length l (§4.1: 32)."""
    cmp_stride: Int = Field(16, gt=0)
    """compression stride d (§4.1: 16)."""
    sel_block: Int = Field(64, gt=0)
    """selection block size l' (§4.1: 64)."""
    sel_blocks: Int = Field(16, gt=0)
    """selected blocks n, incl. the initial and 2 local blocks (§4.1: 16)."""
    window: Int = Field(512, gt=0)
    """sliding window w (§4.1: 512)."""


class NSA(KVMethod):
    name = "nsa"
    summary = "NSA trained sparse attention: compressed (32/16) + 16 selected 64-token blocks + 512 window"
    Params = NSAParams
    linear_residency = False  # + compressed tokens (floor), window and compression buffers

    def check(self) -> None:
        require_not_mla(self.dep, "nsa", "NSA's branches keep per-head keys and values")

    def cmp(self, t: Num) -> np.ndarray:
        """Compressed tokens available at position ``t``: ``floor((t - l)/d) + 1`` for ``t >= l``."""
        p, t = self.params, arr(t)
        return np.where(t >= p.cmp_block, np.floor((t - p.cmp_block) / p.cmp_stride) + 1.0, 0.0)

    def cmp_pairs(self, m: Num) -> np.ndarray:
        """``sum_{t=1..m} cmp(t)`` in closed form: with ``J = m - l``, ``q = floor(J/d)``, ``r = J - q d``,
        ``(J + 1) + d q (q - 1)/2 + q (r + 1)`` for ``J >= 0``."""
        p, m = self.params, arr(m)
        J = m - p.cmp_block
        q = np.floor(np.maximum(J, 0.0) / p.cmp_stride)
        r = J - q * p.cmp_stride
        return np.where(J >= 0, (J + 1.0) + p.cmp_stride * q * (q - 1.0) / 2.0 + q * (r + 1.0), 0.0)

    @property
    def sel_span(self) -> float:
        return float(self.params.sel_blocks * self.params.sel_block)

    def loaded(self, t: Num) -> np.ndarray:
        """KV tokens a decode query at position ``t`` loads (Table 4's memory access)."""
        t = arr(t)
        return self.cmp(t) + np.minimum(t, self.sel_span) + np.minimum(t, float(self.params.window))

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        p, n = self.params, arr(n_tokens)
        tokens = n + self.cmp(n) + np.minimum(n, float(p.window)) + np.minimum(n, float(p.cmp_block))
        return Residency(gpu_bytes=self.dep.model.num_layers * tokens * kv_tok_layer(self.dep))

    def _phi_flops(self) -> float:
        """FLOPs of one compressed token per layer (K and V: an ``l d x d`` map per KV head) [E]."""
        d = self.dep.model.head_dim
        return 2.0 * 2.0 * self.params.cmp_block * d * d * self.dep.kv_heads_per_gpu

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        dep, p, L = self.dep, self.params, self.dep.model.num_layers
        n = arr(ctx) + 1.0
        kv = kv_tok_layer(dep)
        att = self.loaded(n)
        per_step = 1.0 / p.cmp_stride  # compressed tokens made per step (amortized)
        write = kv * (2.0 + per_step)  # selection and window caches + compressed token
        attn = attn_decode(dep, att, att * kv, layers=L, write_bytes=write,
                           extra_flops=SELECT_FLOPS_PER_CMP * dep.q_heads_per_gpu * self.cmp(n),
                           extra_hbm=per_step * p.cmp_block * kv, launches_per_layer=3.0)
        B = float(n.shape[-1]) if n.ndim else 1.0
        zero = 0.0 * sum_seq(n)
        comp = gpu_pass(dep, "nsa_compress", flops=L * B * per_step * self._phi_flops() + zero,
                        launches=2.0 * L / p.cmp_stride + zero)  # phi + top-n
        return attn + comp

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep, p, L = self.dep, self.params, self.dep.model.num_layers
        n_new, n_cached = arr(n_new), arr(n_cached)
        c = self.cmp_pairs(n_cached + n_new) - self.cmp_pairs(n_cached)
        pairs = c + window_pairs(n_new, n_cached, self.sel_span) + window_pairs(n_new, n_cached, float(p.window))
        kv = kv_tok_layer(dep)
        attn = prefill_attention(dep, n_new, n_cached, pairs=pairs,
                                 kv_write_bytes_per_token_layer=kv * (2.0 + 1.0 / p.cmp_stride))
        new = sum_seq(n_new)
        made = sum_seq(self.cmp(n_cached + n_new) - self.cmp(n_cached))  # compressed tokens made
        comp = gpu_pass(dep, "nsa_compress_prefill", op="attn_prefill",
                        flops=L * (made * self._phi_flops() + SELECT_FLOPS_PER_CMP * dep.q_heads_per_gpu * sum_seq(c)),
                        hbm=L * new * kv, launches=3.0 * L * has(new))  # phi, block scores, top-n
        return attn + comp
