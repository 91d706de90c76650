"""What the scheduler reads (the decoding sequences, :class:`RunningBatch`) and what it emits
for one step (:class:`SchedulerOutput`, vLLM's name)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kvsim.sim.request import Request


class RunningBatch(Protocol):
    """The decoding sequences, as the scheduler sees them (:class:`kvsim.sim.fast.batch.DecodeBatch`).

    Rows hold blocks for their ``ctx`` tokens between steps and for ``ctx + 1`` once the
    scheduler has allocated a step (:meth:`hold_more`); :meth:`decoded1` then advances ``ctx``.
    """

    n: int

    def ctx(self) -> np.ndarray: ...
    def prompts(self) -> np.ndarray: ...
    def rids(self) -> np.ndarray: ...
    def requests(self) -> list[Request]: ...
    def held_blocks(self) -> tuple[int, int]: ...
    def blocks_after_next_token(self) -> tuple[int, int]: ...
    def hold_more(self, gpu: int, host: int) -> None: ...
    def newest(self) -> tuple[int, int]: ...
    def add(self, r: Request, prefix_blocks: int) -> None: ...
    def remove(self, row: int) -> Request: ...
    def decoded1(self, t_start: float, t_end: float, sink=None) -> None: ...
    def may_have_done_rows(self) -> bool: ...
    def done_rows(self) -> list[int]: ...
    def remove_rows(self, rows) -> list[Request]: ...


_NO_CTX = np.zeros(0, dtype=np.int64)
_NO_CTX.flags.writeable = False


class SchedulerOutput:
    """What one step computes.

    ``decode_reqs``/``decode_ctx`` [B]: decoding sequences and their tokens in KV (read
    before :meth:`Scheduler.commit`); ``prefill``: ``(request, num_new_tokens,
    num_cached_before, completes)`` chunks; ``preempted``; blocks copied to / from the host
    pool by SWAP.
    """

    __slots__ = ("num_decode", "_batch", "prefill", "preempted", "swap_out_blocks", "swap_in_blocks",
                 "load_host_blocks", "load_nvme_blocks")

    def __init__(self) -> None:
        self.num_decode = 0
        self._batch = None
        self.prefill: list = []
        self.preempted: list = []
        self.swap_out_blocks = 0
        self.swap_in_blocks = 0
        self.load_host_blocks = 0  # blocks loaded back from the offload tiers (kvsim.sim.kv_tiers)
        self.load_nvme_blocks = 0

    @property
    def decode_ctx(self) -> np.ndarray:
        return self._batch.ctx() if self.num_decode else _NO_CTX

    @property
    def decode_reqs(self) -> list:
        return list(self._batch.reqs) if self.num_decode else []

    @property
    def num_scheduled_tokens(self) -> dict[int, int]:
        """``{req_id: num_tokens}`` as in vLLM."""
        d = {r.req_id: 1 for r in self.decode_reqs}
        for r, n, _, _ in self.prefill:
            d[r.req_id] = n
        return d

    @property
    def total_num_scheduled_tokens(self) -> int:
        return len(self.decode_reqs) + sum(n for _, n, _, _ in self.prefill)

    @property
    def n_sampled(self) -> int:
        return sum(1 for p in self.prefill if p[3])

    def is_empty(self) -> bool:
        return not self.num_decode and not self.prefill
