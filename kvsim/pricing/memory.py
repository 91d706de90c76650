"""Static memory accounting per GPU (and per host) of one replica.

GPU: ``memory_bytes * gpu_memory_utilization`` must hold the weights (``P * b_w / tp``),
an activation reserve for the largest step, the method's fixed buffers, and the KV.
The reserve mirrors vLLM's profiling run: the peak live activations of one layer for
``T`` tokens, ``T * (2h + (2 or 3) f) * b_a / tp``, plus fp32 logits of ``S`` sampled rows.

Host: ``host_memory_bytes * host_memory_utilization`` holds what methods keep on the
host (MagicPIG KV and hash tables, InfLLM blocks, SWAP preemption space).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvsim.costmodel.deployment import Deployment
from kvsim.methods.base import KVMethod

#: fraction of host DRAM usable for KV (the OS, the engine and pinned buffers take the rest)
HOST_MEMORY_UTILIZATION = 0.9


def activation_reserve_bytes(dep: Deployment, max_tokens_per_step: float, max_seqs: float) -> float:
    """Peak activation bytes per GPU of a step with ``max_tokens_per_step`` tokens."""
    m = dep.model
    if m.moe is not None:
        f = m.moe.experts_per_token * m.moe.expert_intermediate_size + m.moe.num_shared_experts * m.moe.shared_intermediate_size
    else:
        f = m.intermediate_size
    per_tok = 2 * m.hidden_size + (3 if m.mlp_gated else 2) * f
    return (max_tokens_per_step * per_tok * dep.ab + max_seqs * m.vocab_size * 4) / dep.tp


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes available per GPU and per replica on the host for KV."""

    gpu_total_bytes: float
    weights_bytes: float
    activation_bytes: float
    method_fixed_gpu_bytes: float
    kv_gpu_bytes: float  # what is left for KV on each GPU (may be <= 0: nothing fits)
    host_total_bytes: float
    kv_host_bytes: float


#: count reported when a request needs no bytes of a pool (the pool does not limit the batch)
UNBOUNDED_REQUESTS = 1_000_000


def requests_that_fit(budget_bytes: float, bytes_per_request: float) -> int:
    """Whole requests of ``bytes_per_request`` that fit ``budget_bytes`` (0 if the budget is
    negative; ``UNBOUNDED_REQUESTS`` when a request needs nothing from this pool)."""
    if bytes_per_request <= 0:
        return UNBOUNDED_REQUESTS if budget_bytes >= 0 else 0
    return max(0, int(budget_bytes // bytes_per_request))


def memory_budget(dep: Deployment, method: KVMethod, max_tokens_per_step: float, max_seqs: float,
                  host_share: float = 1.0) -> MemoryBudget:
    """Budget per GPU; ``host_share`` is this replica's share of the node's host memory."""
    total = dep.gpu_memory_budget_bytes
    w = dep.weight_bytes_per_gpu
    act = activation_reserve_bytes(dep, max_tokens_per_step, max_seqs)
    fixed = method.fixed_gpu_bytes()
    host_total = dep.system.host_memory_bytes * HOST_MEMORY_UTILIZATION * host_share
    return MemoryBudget(
        gpu_total_bytes=total,
        weights_bytes=w,
        activation_bytes=act,
        method_fixed_gpu_bytes=fixed,
        kv_gpu_bytes=total - w - act - fixed,
        host_total_bytes=host_total,
        kv_host_bytes=host_total - method.fixed_host_bytes(),
    )
