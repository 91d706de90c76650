"""LLMLingua / LLMLingua-2 prompt compression (Jiang et al., EMNLP 2023; Pan et al., ACL 2024
Findings; METHODS.md 1.17).

A small compressor model drops prompt tokens before the target model sees them: the target
prefills ``ceil(n / ratio)`` tokens (``effective_prompt_tokens``) and its KV and decode reads
scale with that count (full attention over it). TTFT adds one compressor forward pass over the
*original* ``n`` tokens: ``2 (P_c - P_emb) n`` FLOPs (the embedding table is a lookup) with the
compressor's weights read once per chunk
(an encoder: no KV cache). The compressor runs on the same GPU (on TP, on one GPU of the
replica while the others wait), and its weights stay resident (``fixed_gpu_bytes``).

``prefill_cost(n_new, ...)`` receives the *compressed* chunk sizes (the caller prefills
``effective_prompt_tokens(n)``), so the compressor work is charged for ``ratio x n_new``
original tokens. Defaults: LLMLingua-2 with XLM-RoBERTa-large (~560M parameters, the
``llmlingua-2-xlm-roberta-large-meetingbank`` model) at ratio 3 (``rate=0.33`` in the
LLMLingua-2 README example; the papers report 2-5x, LLMLingua up to 20x). For LLMLingua with
LLaMA-7B as the compressor set ``compressor_params=6.7e9,compressor_embedding_params=131072000``.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from kvsim.costmodel.attention import decode_attention, prefill_attention
from kvsim.costmodel.cost import Cost, Num, Part
from kvsim.methods._common import arr, has, sum_seq
from kvsim.methods.base import KVMethod, MethodParams, Residency
from kvsim.specbase import Float


#: kernels of one compressor forward: 24 encoder layers x ~8 kernels [E]
COMPRESSOR_LAUNCHES = 200.0
#: LLMLingua-2's compressor, XLM-RoBERTa-large: ~560M parameters, of them the 250,002 x 1,024 embedding table
XLMR_LARGE_PARAMS = 560e6
XLMR_LARGE_EMBEDDING_PARAMS = 250_002 * 1024


class LLMLinguaParams(MethodParams):
    ratio: Float = Field(3.0, ge=1.0, le=1000.0)
    """compression ratio rho: original prompt tokens per kept token."""
    compressor_params: Float = Field(XLMR_LARGE_PARAMS, gt=0, le=1e13)
    """parameters of the compressor model (XLM-RoBERTa-large ~560M; LLaMA-7B 6.7e9)."""
    compressor_embedding_params: Float | None = Field(None, ge=0, le=1e13)
    """of them, the token-embedding table: a lookup, no FLOPs and only the looked-up rows read
    (XLM-RoBERTa-large: 250,002 tokens x 1,024 = 256,002,048; LLaMA-7B: 32,000 x 4,096 =
    131,072,000). None: XLM-R's table with the default compressor_params, else 0 (every weight a matrix)."""

    @model_validator(mode="after")
    def _embedding_within(self) -> "LLMLinguaParams":
        if self.compressor_embedding_params is not None and self.compressor_embedding_params >= self.compressor_params:
            raise ValueError(f"compressor_embedding_params ({self.compressor_embedding_params:g}) must be fewer than "
                             f"compressor_params ({self.compressor_params:g})")
        return self

    @property
    def embedding_params(self) -> float:
        if self.compressor_embedding_params is not None:
            return self.compressor_embedding_params
        return XLMR_LARGE_EMBEDDING_PARAMS if self.compressor_params == XLMR_LARGE_PARAMS else 0.0


class LLMLingua(KVMethod):
    name = "llmlingua"
    summary = "LLMLingua-2 prompt compression (3x) by a 0.56B encoder on the same GPU"
    Params = LLMLinguaParams
    compresses_prompt = True

    def effective_prompt_tokens(self, n_prompt: Num) -> Num:
        out = np.ceil(arr(n_prompt) / self.params.ratio)
        return float(out) if np.ndim(out) == 0 else out

    def fixed_gpu_bytes(self) -> float:
        return self.params.compressor_params * self.dep.ab

    def kv_bytes(self, n_tokens: Num, n_prompt: Num | None = None) -> Residency:
        return Residency(gpu_bytes=arr(n_tokens) * self.dep.full_kv_bytes_per_token)

    def decode_cost(self, ctx: np.ndarray, n_prompt: np.ndarray | None = None) -> Cost:
        return decode_attention(self.dep, arr(ctx) + 1.0)

    def prefill_cost(self, n_new: Num, n_cached: Num) -> Cost:
        dep = self.dep
        orig = self.params.ratio * sum_seq(n_new)
        pc = self.params.compressor_params
        live = has(orig)
        # 2 FLOPs per token per weight of the matrices the token passes through; the embedding table is a
        # lookup (no FLOPs, and only the rows looked up are read: not counted, a few KB per token)
        matrices = pc - self.params.embedding_params
        comp = Part("compressor", "gemm", dtype=dep.act_dtype, flops=2.0 * matrices * orig,
                    hbm_bytes=matrices * dep.ab * live, launches=COMPRESSOR_LAUNCHES * live)
        return prefill_attention(dep, n_new, n_cached) + Cost.of(comp)
