"""X-EcoMLA: a pre-trained MHA/GQA model upcycled into MLA by SVD initialisation and
distillation (Li et al., AMD, 2025, arXiv 2503.11132; METHODS.md 1.18), priced as an MLA
cache of a chosen rank on a non-MLA model.

Each layer caches the joint latent ``c_KV`` (``kv_lora_rank`` d_c) plus the decoupled RoPE key
(``qk_rope_head_dim`` d_r), DeepSeek-V2 §2.1 / Table 1::

    bytes/token/layer = (d_c + d_r) b      vs the model's 2 n_kv d b

Llama-3.2-1B (16 layers, 8 KV heads, d = 64 -> 1,024 elements): the repo's configs (r_kv = 128 /
64 / 48, d_qk_rope = 32) give 160 / 96 / 80 elements = 15.6 % / 9.4 % / 7.8 % of the KV, i.e.
the paper's 6.4x ("same average score", 3.6B tokens) and 10.6x ("< 0.1 % drop", 7B tokens).
Defaults: ``kv_lora_rank`` 128, ``qk_rope_head_dim`` 32 (the 6.4x config), the non-RoPE query/key
part ``d - d_r`` and the value head dim ``d`` of the original model (repo config:
``qk_nope_head_dim`` 32, ``v_head_dim`` 64 for d = 64).

Decode uses the absorbed form (``W^UK`` into ``W^Q``, ``W^UV`` into ``W^O``): every query head
attends to the shared latent, read once per layer (:mod:`kvsim.costmodel.attention`'s MLA
accounting: FLOPs ``2 Hq (d_c + d_r) + 2 Hq d_c`` per token per layer). Prefill is MLA prefill
(per-head keys of ``d_nope + d_r``, values of ``d_v``). As for MLA models the latent is
replicated over tensor-parallel GPUs. Not modelled: the changed projection weights (priced
from the original model's linear layers). Not defined for a model that is already MLA.
"""

from __future__ import annotations

from pydantic import Field

from kvsim.errors import ConfigError
from kvsim.methods._common import ReshapedModelMethod
from kvsim.methods.base import MethodParams
from kvsim.models import MLASpec, ModelSpec
from kvsim.specbase import Int


class XEcoMLAParams(MethodParams):
    kv_lora_rank: Int = Field(128, gt=0)
    """latent width d_c cached per token per layer (repo configs for Llama-3.2-1B: 128 / 64 / 48)."""
    qk_rope_head_dim: Int = Field(32, gt=0)
    """decoupled RoPE key dim d_r (repo configs: 32)."""


class XEcoMLA(ReshapedModelMethod):
    name = "xecomla"
    summary = "X-EcoMLA: non-MLA model upcycled to an MLA cache of rank 128 + RoPE 32 per token per layer"
    Params = XEcoMLAParams

    def reshaped_model(self) -> ModelSpec:
        p, m = self.params, self.dep.model
        mla = MLASpec(kv_lora_rank=p.kv_lora_rank, qk_rope_head_dim=p.qk_rope_head_dim,
                      qk_nope_head_dim=m.head_dim - p.qk_rope_head_dim, v_head_dim=m.head_dim)
        return m.model_copy(update={"mla": mla, "num_kv_heads": 1})

    def check(self) -> None:
        m, p = self.dep.model, self.params
        if m.mla is not None:
            raise ConfigError(f"method xecomla: model {m.name} already caches an MLA latent; use mla")
        if p.qk_rope_head_dim >= m.head_dim:
            raise ConfigError(f"xecomla qk_rope_head_dim ({p.qk_rope_head_dim}) must be below the head dim "
                              f"({m.head_dim}) of {m.name}")
        full = 2 * m.num_kv_heads * m.head_dim  # K and V values per token per layer of the model's own cache
        if p.kv_lora_rank + p.qk_rope_head_dim >= full:
            raise ConfigError(f"xecomla kv_lora_rank + qk_rope_head_dim ({p.kv_lora_rank} + {p.qk_rope_head_dim}) must be "
                              f"below {m.name}'s own KV width per token and layer (2 x {m.num_kv_heads} KV heads x "
                              f"{m.head_dim} = {full}): the latent would cache no less than full KV")
