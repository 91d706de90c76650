"""MLA: multi-head latent attention's compressed cache (DeepSeek-V2 §2.1; METHODS.md 1.18).

MLA caches the latent ``c_KV`` (``d_c``) plus the decoupled RoPE key (``d_h^R``) per token per
layer: ``(d_c + d_h^R) L b`` bytes (DeepSeek-V2-Lite: 27 x 576 x 2 = 31,104 B/token, ~4.5 d_h L
elements). With ``W^UK`` absorbed into ``W^Q`` and ``W^UV`` into ``W^O`` decode is MQA-like:
the latent is read once per layer for all heads (see :mod:`kvsim.costmodel.attention`). The latent is
a property of the model, so on an MLA model this method prices exactly what ``full`` does;
it is kept as a named method so sweeps can list MLA next to the post-hoc compressors.
Post-training upcycling of a non-MLA model (X-EcoMLA) is not modelled: on a model without an
``mla`` block it raises a one-line ConfigError.
"""

from __future__ import annotations

from kvsim.errors import ConfigError
from kvsim.methods.full import Full, FullParams


class MLAParams(FullParams):
    """Same knobs as ``full`` (the latent's storage dtype)."""


class MLA(Full):
    name = "mla"
    summary = "multi-head latent attention cache (d_c + d_r per token per layer); MLA models only"
    Params = MLAParams

    def check(self) -> None:
        if self.dep.model.mla is None:
            raise ConfigError(f"method mla: model {self.dep.model.name} has no MLA latent; use a model like deepseek-v2-lite")

    def published_accuracy(self):
        return []
