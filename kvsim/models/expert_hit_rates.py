"""Published expert-cache hit rates per MoE model (data: ``expert_cache/segment_cache_hit_rates.yaml``).

Segment Cache Best Hit Rate (SCH) of Liang et al., "Not All Models Suit Expert Offloading"
(arXiv:2505.16056): the per-access hit rate (one access = one token's one activated expert in one
layer) of an expert cache of ``cache_active_multiple x experts_per_token`` experts that keeps the
experts used most in the next ``segment`` tokens. Numbers and their exact provenance: the YAML.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from kvsim.errors import ConfigError
from kvsim.models.spec import ModelSpec
from kvsim.specbase import Fraction, PosInt, Strict, load_yaml_as

DATA = Path(__file__).parent / "expert_cache" / "segment_cache_hit_rates.yaml"
#: segment lengths (tokens of foresight) the paper reports
SEGMENTS = (4, 16, 64, 256)
#: the segment length used when none is named: the paper's tables sort models by it
DEFAULT_SEGMENT = 16


class HitRateTable(Strict):
    kind: Literal["expert_hit_rates"] = "expert_hit_rates"
    source: str
    cache_active_multiple: PosInt = Field(description="cache size in units of experts_per_token")
    models: dict[str, dict[int, tuple[Fraction, Fraction]]] = Field(
        description="model name -> segment length -> (95% CI lower, upper) of SCH")


@lru_cache(maxsize=1)
def hit_rate_table() -> HitRateTable:
    return load_yaml_as(HitRateTable, DATA)


def _row(model: ModelSpec) -> dict[int, tuple[float, float]] | None:
    rows = hit_rate_table().models
    for name in (model.name, model.hf_id, *model.aliases):
        if name and name.lower() in rows:
            return rows[name.lower()]
    return None


def published_cache_experts(model: ModelSpec) -> int:
    """Experts per MoE layer of the cache the published SCH assumes: ``2 x experts_per_token``
    (Mixtral-8x7B: 2 x 2 = 4 of 8)."""
    if model.moe is None:
        raise ConfigError(f"{model.name} is not a mixture-of-experts model")
    return hit_rate_table().cache_active_multiple * model.moe.experts_per_token


def published_hit_rate(model: ModelSpec, segment: int = DEFAULT_SEGMENT) -> tuple[float, str]:
    """``(SCH, where it comes from)`` of ``model`` at ``segment`` tokens, the midpoint of the
    published 95% bounds (Mixtral-8x7B, 16 tokens: (0.737461 + 0.738664) / 2 = 0.7380625).

    Raises ConfigError for a model without published numbers or an unpublished segment length."""
    if segment not in SEGMENTS:
        raise ConfigError(f"--expert-offload sch={segment}: the paper reports segment lengths "
                          f"{', '.join(map(str, SEGMENTS))}")
    row = _row(model)
    if row is None:
        known = ", ".join(sorted(hit_rate_table().models))
        raise ConfigError(f"no published expert-cache hit rate for {model.name} (published: {known}); "
                          "pass --expert-offload hit-rate=FRACTION or routing=FILE")
    lo, hi = row[segment]
    return (lo + hi) / 2.0, f"published SCH, {segment}-token segments (arXiv:2505.16056)"
