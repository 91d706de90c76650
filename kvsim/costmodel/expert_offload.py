"""MoE expert offloading: experts live in host memory, each MoE layer keeps a cache of ``C``
experts on the GPU, and a step's experts that miss the cache are fetched over PCIe or computed
on the host CPU.

Notation (per MoE layer): ``E`` routed experts, top-``k``, cache ``C`` experts, per-access hit
rate ``h`` (published SCH or an LRU over a routing trace: :mod:`kvsim.models.expert_hit_rates`,
:mod:`kvsim.costmodel.expert_routing`), ``P_e`` parameters per expert, ``b_w`` bytes per weight,
``n_moe`` MoE layers, ``T`` tokens in the step.

* Distinct experts a step touches (uniform top-k, SPECS.md F7): ``U(T) = E (1 - (1 - k/E)^T)``.
* Experts missed per layer per step: ``M(T) = min(max(U (1 - h), U - C), E - C, U)``, floored at 0.
  A lone decoding token (``U = k``) misses ``k (1 - h)``: the trace's per-access rate. A batch
  cannot miss fewer than ``U - C`` (the cache holds only C) nor more than the ``E - C`` experts
  that are not resident. A large prefill touches every expert and streams all ``E - C``.
* ``miss=fetch`` (Eliseev & Mazur 2023, arXiv:2312.17238: missed experts copied host -> GPU):
  PCIe bytes per GPU ``n_moe M P_e b_w / tp`` (each GPU loads its tensor-parallel shard over its
  own link), plus one synchronous round trip per layer that misses (the router's choice must
  reach the host before the copy), counted ``n_moe q`` (:func:`missing_layer_share`; it was
  ``n_moe min(1, M)``, which counts expected misses, not layers, below one per layer). The GEMMs then read the fetched
  weights from HBM as usual.
* ``miss=cpu`` (Fiddler, Kamahori et al. 2024, arXiv:2402.07033: missed experts run on the CPU
  where their weights are): the share ``f = M / U`` of routed token-expert pairs runs on the
  host: CPU FLOPs ``2 P_e n_moe k T f`` (the whole replica's work, one host), DRAM bytes
  ``n_moe M P_e b_w`` (each missed expert's weights read once), PCIe ``2 n_moe k T f h_model b_a``
  (activations there and back), one call and round trip per missing layer (``n_moe q``); the GPU computes only the
  ``1 - f`` share and reads only the ``U - M`` resident experts.
* ``overlap``: off (default), the step waits for the transfers / CPU work (on-demand loading: a
  layer learns its experts only after its router runs). On, fetches run concurrently with the
  step's linear GPU work (attention projections, MLP, norms, LM head: one overlap group, so the
  step takes the slower of the two) - the ideal of a perfect prefetcher (Eliseev & Mazur's
  speculative loading, ExpertFlow); host-computed experts (``miss=cpu``) run beside their own
  layer's GPU GEMMs only, in the share ``q`` of layers that miss (:func:`missing_layer_share`);
  the other layers' GEMMs are serial. Method attention parts stay serial either way.
* Memory: GPU weights shrink by ``n_moe (E - C) P_e b_w / tp``; the host holds every expert
  (``n_moe E P_e b_w``, pinned: weights are read-only, so an evicted expert needs no write-back).

This module holds the spec and the counts; :mod:`kvsim.costmodel.expert_offload_cost` the work
of a step and the bytes of a deployment.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from kvsim.costmodel.cost import Num
from kvsim.specbase import Bool, Fraction, NonNegInt, Strict

#: overlap tag shared by the offload part and the linear GPU parts when ``overlap`` is on
OVERLAP_TAG = "expert_offload"


class ExpertOffload(Strict):
    """Where a deployment's routed experts live and how a cache miss is served."""

    cache_experts_per_layer: NonNegInt = Field(description="C: routed experts of each MoE layer kept on the GPU")
    miss: Literal["fetch", "cpu"] = Field(description="fetch: copy the expert over PCIe; cpu: compute it on the host")
    overlap: Bool = Field(False, description="transfers / CPU work run concurrently with the linear GPU work")
    hit_rate: Fraction = Field(description="h: per-access hit rate of the GPU expert cache")
    hit_rate_source: str = Field(description="where h comes from (published SCH, LRU over a routing trace, given)")

    def label(self) -> str:
        return (f"cache {self.cache_experts_per_layer} experts/layer, hit rate {self.hit_rate:.3f} "
                f"({self.hit_rate_source}), miss={self.miss}, {'overlapped' if self.overlap else 'serial'}")


def distinct_experts(E: int, k: int, T: Num) -> Num:
    """``U(T) = E (1 - (1 - k/E)^T)``: distinct experts ``T`` tokens touch in a layer under uniform
    top-k routing (SPECS.md F7). Mixtral, T = 2: 8 (1 - 0.75^2) = 3.5."""
    return E * (1.0 - (1.0 - k / E) ** np.asarray(T, dtype=np.float64))


def missing_layer_share(E: int, k: int, C: int, h: float, T: Num) -> Num:
    """``q(T)``: the share of MoE layers whose step finds at least one expert off the GPU. A layer that
    touches ``u`` experts misses for sure when ``u > C``, else with ``1 - h^u`` (each touched expert
    hits with probability ``h``); the expected ``U`` is ``floor(U)`` or ``floor(U) + 1`` touched in the
    proportion that keeps its mean; 0 for an empty step. With ``miss=cpu`` and ``overlap`` only those layers
    run the host's experts beside their GPU GEMMs: a layer either waits for a missed expert or misses
    none, so the step's MoE time is ``(1 - q) L g + q L max(g, c | miss)`` (per layer ``g`` on the
    GPU, ``c`` on the host), not ``max(L g, q L c)``.

    Mixtral (E 8, k 2), C 7, h 0.9025, one token: U = 2 <= 7 -> 1 - 0.9025^2 = 0.18549;
    C 1: U = 2 > 1 -> 1; C 7, 8 tokens: U = 8 (1 - 0.75^8) = 7.199 -> 0.801 (1 - 0.9025^7) + 0.199 x 1 = 0.609."""
    U = np.asarray(distinct_experts(E, k, T), dtype=np.float64)
    lo = np.floor(U)
    frac = U - lo

    def q_at(u: np.ndarray) -> np.ndarray:
        return np.where(u > C, 1.0, 1.0 - h ** u)

    q = (1.0 - frac) * q_at(lo) + frac * q_at(lo + 1.0)
    return float(q) if q.ndim == 0 else q


def experts_missed(E: int, k: int, C: int, h: float, T: Num) -> Num:
    """``M(T)``: experts per MoE layer a step of ``T`` tokens finds off the GPU (module docstring).

    Mixtral (E 8, k 2), C 4, h 0.75: T = 1 -> 2 x 0.25 = 0.5; T = 2 -> U = 3.5,
    max(0.875, -0.5) = 0.875; T = 1000 -> U ~ 8, max(2, 4) = 4 = E - C."""
    U = distinct_experts(E, k, T)
    M = np.minimum(np.minimum(np.maximum(U * (1.0 - h), U - C), E - C), U)
    return np.maximum(M, 0.0)
