"""Static memory accounting per GPU (and per host) of one replica.

GPU, as vLLM v1 sizes its KV cache (:mod:`kvsim.pricing.engine_memory`, vLLM 0.19):
``ceil(torch-visible total * gpu_memory_utilization)`` holds the weights (``P * b_w / tp``),
the engine reserve (peak activations of the profiling run, non-torch memory, the rotary
cache), the method's fixed buffers, and the KV.

Host: ``host_memory_bytes * host_memory_utilization`` holds what methods keep on the
host (MagicPIG KV and hash tables, InfLLM blocks, SWAP preemption space) and, with expert
offloading, every routed expert of the replica (:func:`~kvsim.costmodel.expert_offload_cost.expert_host_bytes`).
"""

from __future__ import annotations

import math

from dataclasses import dataclass

from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.expert_offload_cost import expert_host_bytes
from kvsim.errors import ConfigError
from kvsim.methods.base import KVMethod
from kvsim.pricing.engine_memory import EngineReserve, engine_reserve

#: fraction of host DRAM usable for KV (the OS, the engine and pinned buffers take the rest)
HOST_MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes available per GPU and per replica on the host for KV.

    ``gpu_total_bytes`` is vLLM's requested memory; ``reserve`` splits what the engine keeps
    besides the weights (:class:`~kvsim.pricing.engine_memory.EngineReserve`)."""

    gpu_total_bytes: float
    weights_bytes: float
    reserve: EngineReserve
    method_fixed_gpu_bytes: float
    kv_gpu_bytes: float  # what is left for KV on each GPU (may be <= 0: nothing fits)
    host_total_bytes: float
    kv_host_bytes: float
    expert_host_bytes: float = 0.0  # routed experts kept in host memory (expert offloading)

    @property
    def reserve_bytes(self) -> float:
        """Engine memory besides weights and KV: activations, non-torch, buffers, graphs."""
        return self.reserve.total_bytes

    @property
    def non_kv_gpu_bytes(self) -> float:
        """Everything the requested memory holds before the KV cache."""
        return self.weights_bytes + self.reserve_bytes + self.method_fixed_gpu_bytes


#: vLLM's default ``--block-size`` in tokens (``SimConfig.block_size_tokens``'s default)
VLLM_BLOCK_TOKENS = 16


def requests_that_fit(budget_bytes: float, bytes_per_request: float, block_bytes: float | None = None) -> int | None:
    """Whole requests of ``bytes_per_request`` that fit ``budget_bytes`` (0 if the budget is
    negative); ``None`` when a request needs nothing from this pool (it does not limit the batch).
    With ``block_bytes`` the pool is whole blocks and each request takes whole blocks, as the paged
    KV cache (and the simulator) counts them: ``floor(budget / block) // ceil(bytes / block)``."""
    if bytes_per_request <= 0:
        return None if budget_bytes >= 0 else 0
    if block_bytes:
        pool = int(budget_bytes // block_bytes)
        return max(0, pool // _blocks_held(bytes_per_request, block_bytes))
    return max(0, int(budget_bytes // bytes_per_request))


def _blocks_held(bytes_per_request: float, block_bytes: float) -> int:
    """Whole blocks of ``block_bytes`` a request of ``bytes_per_request > 0`` takes (at least one)."""
    return max(math.ceil(bytes_per_request / block_bytes - 1e-9), 1)


def gpu_requests_that_fit(budget_bytes: float, bytes_per_request: float, peak_bytes: float,
                          block_bytes: float | None = None) -> int | None:
    """:func:`requests_that_fit` when one of them, the last admitted, holds ``peak_bytes`` while it
    prefills (a method that keeps the whole prompt's KV until its prefill completes) and the others
    ``bytes_per_request``: ``1 + fit(budget - held(peak))``, or 0 when the peak alone does not fit.

    E.g. blocks of 1 B, a 100 B budget, 10 B per request, a 40 B peak: 1 + floor(60 / 10) = 7."""
    n = requests_that_fit(budget_bytes, bytes_per_request, block_bytes)
    if n is None or peak_bytes <= held_bytes(bytes_per_request, block_bytes):
        return n
    pool = (budget_bytes // block_bytes) * block_bytes if block_bytes else budget_bytes
    rest = pool - held_bytes(peak_bytes, block_bytes)
    if rest < 0:
        return 0
    return min(n, 1 + requests_that_fit(rest, bytes_per_request, block_bytes))


def held_bytes(bytes_per_request: float, block_bytes: float | None = None) -> float:
    """Bytes a request holds in a paged pool: whole blocks of ``block_bytes`` (as
    :func:`requests_that_fit` counts them), or ``bytes_per_request`` without blocks or when it needs none."""
    if not block_bytes or bytes_per_request <= 0:
        return bytes_per_request
    return _blocks_held(bytes_per_request, block_bytes) * block_bytes


def fewest(*counts: int | None) -> int | None:
    """The smallest of the counts that limit (None: no count limits)."""
    limits = [c for c in counts if c is not None]
    return min(limits) if limits else None


def memory_budget(dep: Deployment, method: KVMethod, max_tokens_per_step: float, max_seqs: float,
                  host_share: float = 1.0, host_tier_bytes: float = 0.0) -> MemoryBudget:
    """Budget per GPU for an engine profiled with a step of ``max_tokens_per_step`` tokens and
    ``max_seqs`` sequences; ``host_share`` is this replica's share of the node's host memory;
    ``host_tier_bytes``: the KV offload host tier (:mod:`kvsim.sim.kv_tiers`), pinned host memory
    that the host KV pool (SWAP space, host-resident methods) does not get (bytes)."""
    total = dep.gpu_memory_budget_bytes
    w = dep.weight_bytes_per_gpu
    reserve = engine_reserve(dep, max_tokens_per_step, max_seqs)
    fixed = method.fixed_gpu_bytes()
    host_total = dep.system.host_memory_bytes * HOST_MEMORY_UTILIZATION * host_share
    experts = expert_host_bytes(dep)
    if experts > host_total:
        raise ConfigError(f"--expert-offload: the routed experts of {dep.model.name} need {experts / 1e9:.2f} GB of host "
                          f"memory; {host_total / 1e9:.2f} GB is usable ({HOST_MEMORY_UTILIZATION:.0%} of the host's "
                          f"{dep.system.host_memory_bytes * host_share / 1e9:.2f} GB)")
    return MemoryBudget(
        gpu_total_bytes=total,
        weights_bytes=w,
        reserve=reserve,
        method_fixed_gpu_bytes=fixed,
        kv_gpu_bytes=total - w - reserve.total_bytes - fixed,
        host_total_bytes=host_total,
        kv_host_bytes=host_total - method.fixed_host_bytes() - experts - host_tier_bytes,
        expert_host_bytes=experts,
    )
