"""KV-head compression: MHA (or GQA) turned into GQA with fewer KV heads by low-rank merging
("Effectively Compress KV Heads for LLM", Yu et al., 2024, arXiv 2406.07056).

The KV heads of each group are merged into one by an SVD of their cached keys / values (the
projections are folded into the K/V and Q/O weights), then the model is briefly fine-tuned;
the paper compresses half, or even three quarters, of LLaMA-2's KV heads. The result is a
GQA model with ``n_kv' = keep_ratio x n_kv`` KV heads (default 0.5: "half the heads"), so per
token per layer (METHODS.md 1.0 with ``n_kv'``)::

    bytes = 2 n_kv' d b         Llama-2-7B, keep 0.5: 2 x 16 x 128 x 2 = 8,192 B (half of 16,384)

Decode reads that KV once per step (GQA: the bytes fall by ``1/keep_ratio``, the attention
FLOPs do not, since every query head still attends to every token); prefill is FlashAttention
on the merged model. Not modelled: the smaller K/V projection weights (``2 h d (n_kv - n_kv')``
parameters per layer; the linear layers are priced from the model spec, so weight reads are
slightly overstated). Not defined for MLA (one latent, no KV heads to merge).
"""

from __future__ import annotations

from pydantic import Field

from kvsim.errors import ConfigError
from kvsim.methods._common import ReshapedModelMethod, require_not_mla
from kvsim.methods.base import MethodParams
from kvsim.models import ModelSpec
from kvsim.specbase import Float


class HeadMergeParams(MethodParams):
    keep_ratio: Float = Field(0.5, gt=0, le=1)
    """KV heads kept after merging, as a fraction of the model's (paper: 1/2 and 1/4)."""


class HeadMerge(ReshapedModelMethod):
    name = "headmerge"
    summary = "KV-head compression: merge KV heads by low-rank SVD into GQA with half the KV heads"
    Params = HeadMergeParams

    def reshaped_model(self) -> ModelSpec:
        return self.dep.model.model_copy(update={"num_kv_heads": self.kv_heads})

    @property
    def kv_heads(self) -> int:
        return round(self.dep.model.num_kv_heads * self.params.keep_ratio)

    def check(self) -> None:
        require_not_mla(self.dep, "headmerge", "an MLA latent has no KV heads to merge")
        m, r = self.dep.model, self.params.keep_ratio
        h = self.kv_heads
        if h < 1 or abs(h - m.num_kv_heads * r) > 1e-9 or m.num_heads % h or m.num_kv_heads % h:
            raise ConfigError(f"headmerge keep_ratio {r} of the {m.num_kv_heads} KV heads of {m.name} must give a whole "
                              f"number of heads dividing them and the {m.num_heads} query heads")
        t = self.dep.tp
        if h % t and t % h:
            raise ConfigError(f"headmerge: --tp {t} cannot split or replicate the {h} merged KV heads of {m.name}")
