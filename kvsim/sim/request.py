"""A request in vLLM's vocabulary, and the one status vocabulary of the simulator.

``vllm/v1/request.py``: a :class:`Request` has ``num_prompt_tokens``, ``num_computed_tokens``
(tokens in its KV cache), ``num_output_tokens`` (generated so far; ``max_tokens`` is the
target) and a ``status``. Per-request records (:class:`kvsim.sim.metrics.RequestRecords`)
store the same :class:`RequestStatus` values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RequestStatus(enum.IntEnum):
    """Where a request is. Records keep ``FINISHED`` or ``REJECTED`` (``WAITING``: never ran,
    e.g. not routed to this replica)."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED = 3
    REJECTED = 4


class PreemptionMode(str, enum.Enum):
    """vLLM ``PreemptionMode``: free the victim's KV and recompute it later, or copy it to host memory."""

    RECOMPUTE = "recompute"
    SWAP = "swap"


@dataclass(slots=True, eq=False)
class Request:
    """One request; token counts are effective (after prompt compression) tokens. Times in seconds."""

    req_id: int
    arrival_s: float
    num_prompt_tokens: int
    max_tokens: int  # output tokens to generate
    prefix_hashes: tuple[int, ...] = ()
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    num_output_tokens: int = 0
    num_prefix_entries: int = 0  # leading prefix-cache entries referenced
    gpu_blocks: int = 0  # private blocks (not counting referenced prefix entries)
    host_blocks: int = 0
    swapped: bool = False  # KV copied to the host pool by SWAP preemption
    admit_seq: int = -1  # admission order: preemption picks the largest
    num_preemptions: int = 0
    num_cached_tokens: int = -1  # prefix-cache hits at first admission
    num_analytic_cached: int = 0  # prompt tokens the method treats as cached (analytic prefix hit)
    num_lost_tokens: int = 0  # KV tokens freed by its preemptions (RECOMPUTE, or loaded KV dropped)
    num_refound_tokens: int = 0  # tokens counted as computed when admitted again after a preemption
    num_readmissions: int = 0  # admissions after a preemption so far
    parked_entries: int = -1  # RECOMPUTE victim whose KV stays cached: prefix entries it held then (-1: none)
    kv_loaded: bool = False  # waiting with KV loaded (or loading) from the offload tiers in its blocks
    load_ready_s: float = -1.0  # when that asynchronous load ends (kvsim.sim.scheduler: offload tiers)
    scheduled_s: float = -1.0
    first_token_s: float = -1.0
    last_token_s: float = -1.0
    finish_s: float = -1.0
    tbt_max_s: float = 0.0
    token_times: list | None = None

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens
