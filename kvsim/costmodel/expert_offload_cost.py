"""Work and host bytes of MoE expert offloading for a deployment (formulas: :mod:`kvsim.costmodel.expert_offload`;
the GPU bytes it saves: :attr:`~kvsim.costmodel.deployment.Deployment.offloaded_expert_bytes_per_gpu`)."""

from __future__ import annotations

import numpy as np

from kvsim.costmodel.cost import Num, Part
from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.expert_offload import OVERLAP_TAG, distinct_experts, experts_missed, missing_layer_share


def expert_host_bytes(dep: Deployment) -> float:
    """Host bytes holding the replica's routed experts: ``n_moe E P_e b_w`` (0 without offload)."""
    off, m = dep.expert_offload, dep.model
    if off is None or m.moe is None:
        return 0.0
    return float(m.num_moe_layers * m.moe.num_experts * m.expert_params * dep.wb)


def offload_parts(dep: Deployment, T: Num, has: Num) -> tuple[list[Part], Num]:
    """The offload part of a step of ``T`` tokens, and ``f``, the share of routed token-expert
    pairs the GPU does *not* compute (``M / U`` with ``miss=cpu``, else 0).

    ``has``: 1 for a step with tokens, 0 for an empty one (:func:`~kvsim.costmodel.cost.indicator`)."""
    off, m = dep.expert_offload, dep.model
    assert off is not None and m.moe is not None
    E, k, C = m.moe.num_experts, m.moe.experts_per_token, off.cache_experts_per_layer
    nm, Pe = m.num_moe_layers, m.expert_params
    U = distinct_experts(E, k, T)
    M = experts_missed(E, k, C, off.hit_rate, T)
    q = missing_layer_share(E, k, C, off.hit_rate, T)  # layers that miss: one round trip (and CPU call) each
    round_trips = nm * q * has
    tag = OVERLAP_TAG if off.overlap else None
    if off.miss == "fetch":
        part = Part("expert_fetch", "pcie", device="pcie", pcie_bytes=nm * M * Pe * dep.wb / dep.tp,
                    pcie_round_trips=round_trips, overlap=tag)
        return [part], 0.0
    f = np.divide(M, U, out=np.zeros(np.shape(U)), where=np.asarray(U) > 0)
    f = float(f) if f.ndim == 0 else f
    pairs = nm * k * np.asarray(T, dtype=np.float64) * f  # token-expert pairs run on the host
    part = Part("expert_cpu", "cpu_gemm", device="cpu", dtype=dep.act_dtype,
                cpu_flops=2.0 * Pe * pairs, dram_bytes=nm * M * Pe * dep.wb,
                pcie_bytes=2.0 * pairs * m.hidden_size * dep.ab, pcie_round_trips=round_trips,
                launches=nm * q * has, overlap=tag)
    return [part], f
