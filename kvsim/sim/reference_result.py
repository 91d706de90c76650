"""What the reference simulator returns: per-request outcomes in trace order and a few totals."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kvsim.sim.request import RequestStatus

COMPLETED, REJECTED = RequestStatus.FINISHED, RequestStatus.REJECTED  # the records' vocabulary


@dataclass(eq=False)
class RefRequest:
    rid: int
    arrival_s: float
    num_prompt_tokens: int  # effective prompt
    max_tokens: int
    prefix_hashes: tuple = ()
    analytic_cached: int = 0
    status: str = "new"  # waiting, running, swapped, finished, rejected
    num_computed_tokens: int = 0
    num_output_tokens: int = 0
    gpu_blocks: int = 0  # private GPU blocks
    host_blocks: int = 0
    num_prefix_entries: int = 0  # leading prefix entries referenced
    admit_seq: int = -1
    preemptions: int = 0
    cached_tokens: int = -1
    lost_tokens: int = 0  # KV tokens freed by its preemptions (RECOMPUTE, or loaded KV dropped)
    refound_tokens: int = 0  # tokens counted as computed when admitted again after a preemption
    readmissions: int = 0
    parked_entries: int = -1  # rule 12: prefix entries it held when its KV was parked (-1: none parked)
    kv_loaded: bool = False  # waiting with tier KV loaded (or loading) into its blocks (rule 11)
    load_ready_s: float = math.nan
    scheduled_s: float = math.nan
    first_token_s: float = math.nan
    last_token_s: float = math.nan
    finish_s: float = math.nan
    reject_s: float = math.nan
    reject_reason: str = ""
    tbt_max_s: float = 0.0
    token_times: list = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens


@dataclass
class RefResult:
    """Per-request arrays (trace order; NaN where a request never got there) and totals."""

    status: np.ndarray
    reject_reason: dict
    scheduled_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    tbt_max_s: np.ndarray
    preemptions: np.ndarray
    cached_tokens: np.ndarray
    token_times: list
    steps: int
    peak_gpu_blocks: int
    peak_host_blocks: int
    num_gpu_blocks: int
    num_host_blocks: int
    prefix_evictions: int
    replica_of: np.ndarray | None = None
    preempted_kv_tokens: np.ndarray | None = None  # per completed request [lost, found again] (rule 12 counters)


def collect_results(reps: list, owner: np.ndarray, n: int) -> RefResult:
    nan = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int8)
    sched, first, fin, tmax = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    pre = np.zeros(n, dtype=np.int64)
    cached = np.zeros(n, dtype=np.int64)
    lost_found = np.zeros((n, 2), dtype=np.int64)
    times: list = [None] * n
    reasons = {}
    for i in range(n):
        r = reps[owner[i]].reqs[i]
        pre[i] = r.preemptions
        if r.status == "rejected":
            status[i] = REJECTED
            reasons[i] = r.reject_reason
            continue
        assert r.status == "finished", f"request {i} ended {r.status}"
        status[i] = COMPLETED
        sched[i], first[i], fin[i], tmax[i] = r.scheduled_s, r.first_token_s, r.finish_s, r.tbt_max_s
        cached[i] = r.cached_tokens
        lost_found[i] = (r.lost_tokens, r.refound_tokens)
        times[i] = np.array(r.token_times)
    for rep in reps:
        pool = rep.pool
        assert pool.gpu_used() == 0 and pool.host_used() == 0, "blocks left at the end"
    return RefResult(status, reasons, sched, first, fin, tmax, pre, cached, times,
                     steps=sum(r.steps for r in reps), peak_gpu_blocks=max(r.pool.peak_gpu for r in reps),
                     peak_host_blocks=max(r.pool.peak_host for r in reps), num_gpu_blocks=reps[0].geo.num_gpu_blocks,
                     num_host_blocks=reps[0].geo.num_host_blocks,
                     prefix_evictions=sum(r.pool.evictions for r in reps), replica_of=owner,
                     preempted_kv_tokens=lost_found)
