"""Prefix caching with an analytic hit ratio (METHODS.md 1.16).

A fraction ``hit_ratio`` of every prompt is a prefix whose KV is already in GPU memory
(vLLM automatic prefix caching, SGLang RadixAttention). Prefill computes only the other
tokens, attending to the cached prefix: FLOPs ``2 P n_new + attention(n_new after n_cached)``
and the cached KV read once, instead of ``2 P n + attention(n)``. Decode and KV are those of
``full``; the per-request KV still holds the whole prompt (no sharing credit: shared prefix
blocks are counted per request, an upper bound).

The split happens before pricing: :meth:`cached_prompt_fraction` returns ``hit_ratio`` and
``split_prompt(n)`` gives ``(n (1 - h), n h)``; callers (``StepModel.prefill_timing``,
``estimate``, a scheduler without block hashes) pass those as ``(n_new, n_cached)``, so the
linear layers are charged for the new tokens only. ``prefill_cost`` then prices chunks as
given, exactly like ``full``. When a trace carries prefix block ids (Mooncake ``hash_ids``),
the simulator's real block-level prefix cache supersedes this ratio: use ``full`` there, or
this method with ``hit_ratio=0``.

Default ``hit_ratio`` 0.5 is illustrative, not a measured value [UNVERIFIED].
"""

from __future__ import annotations

from pydantic import Field

from kvsim.errors import ConfigError
from kvsim.methods.full import Full, FullParams
from kvsim.specbase import Float


class PrefixParams(FullParams):
    hit_ratio: Float = Field(0.5, ge=0.0, lt=1.0)
    """fraction of each prompt served from the prefix cache."""


class Prefix(Full):
    name = "prefix"
    summary = "full attention with prefix caching: a hit_ratio of each prompt is not recomputed"
    Params = PrefixParams

    def check(self) -> None:
        super().check()
        m = self.dep.model
        if m.ssm is not None and self.params.hit_ratio > 0:
            # (a hit would skip the SSM layers' prefill too, but their state at the prefix's end must then
            # have been cached, which kvsim does not model: memory and the engine's state-caching mode)
            raise ConfigError(f"method prefix: {m.name} has {m.ssm_layers} state-space (SSM) layers; reusing a prefix "
                              "also needs their recurrent state at its end, which kvsim does not model (use hit_ratio=0 "
                              "or an attention-only model)")

    def cached_prompt_fraction(self) -> float:
        return float(self.params.hit_ratio)

    def published_accuracy(self):
        return []
