"""Multi-GPU serving: N tensor-parallel replicas behind a router, in one simulated timeline.

* **Tensor parallelism** lives in the :class:`~kvsim.costmodel.deployment.Deployment` (``tp``): weights
  and KV heads are sharded per GPU (``weight_bytes_per_gpu = P * b_w / tp``, plus whole KV heads past
  ``tp = num_kv_heads`` and MLA's replicated down-projections) and each layer's
  two all-reduces are priced over the system's GPU-GPU link (NVLink, or PCIe on L20/4090
  nodes; :mod:`kvsim.costmodel.transformer`).
* **The host** of a node is shared by the replicas on it: replicas are packed ``num_gpus // tp``
  to a node, and each sees ``1 / min(replicas, num_gpus // tp)`` of its host memory, DRAM
  bandwidth and CPU compute (:func:`kvsim.costmodel.deployment.host_shared`), which bounds
  MagicPIG/InfLLM host KV and SWAP space and prices their CPU attention side by side.
* **Routers** (Vidur's ``global_scheduler``; SGLang router policies):
  ``round-robin``: request ``i`` goes to replica ``i mod N``.
  ``least-outstanding``: the replica with the fewest requests sent and not yet finished
  (rejected ones excluded) at the arrival instant; ties to the lowest index.
  ``prefix-aware``: SGLang's cache-aware policy on prefix block ids (Mooncake ``hash_ids``,
  sessions, shared prefixes; :mod:`kvsim.sim.routing`): the replica already sent the longest
  leading run of the request's ids, if that is more than half of them, else the replica sent
  the fewest ids; the least-outstanding replica when the load is imbalanced (the busiest's
  outstanding requests exceed the idlest's by more than ``balance_abs`` *and* by a factor
  ``balance_rel``) or the request has no prefix ids.
* **Lockstep.** All replicas share the arrival sequence. Before arrival ``i`` at ``t_i``
  every replica processes its events strictly before ``t_i``; the router reads their
  outstanding counts, and the request joins the chosen replica's event queue at ``t_i``
  (so same-instant step ends order exactly as in a single simulation). One replica is
  exactly :func:`kvsim.sim.replica.simulate`.

The result has the per-request records of every replica merged in trace order, a summary
recomputed from them (:func:`kvsim.sim.metrics.summarize`), timelines summed over replicas, and the
KV offload tiers' counters summed with hit rates recomputed from the sums
(:func:`kvsim.sim.kv_tiers.merge_summaries`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from kvsim.costmodel.deployment import Deployment, host_shared
from kvsim.errors import ConfigError
from kvsim.methods.base import KVMethod
from kvsim.plan.schema import ROUTERS
from kvsim.sim.inputs import merged_notes
from kvsim.sim.kv_tiers import merge_summaries
from kvsim.sim.metrics import RequestRecords, summarize
from kvsim.sim.replica import ReplicaSim, SimConfig, simulate
from kvsim.sim.routing import PrefixTrees, route
from kvsim.traces.base import Trace


@dataclass
class ClusterResult:
    """Like :class:`kvsim.sim.replica.SimResult`, for N replicas; ``replica_of[i]`` served request i."""

    summary: dict
    records: object  # kvsim.sim.metrics.RequestRecords, merged in trace order
    timeline: dict[str, np.ndarray]  # summed over replicas on a common grid
    tbt_values: np.ndarray
    tbt_weights: np.ndarray
    replica_of: np.ndarray
    replicas: list = field(default_factory=list, repr=False)  # per-replica SimResult


def simulate_cluster(dep: Deployment, method: KVMethod, trace: Trace, config=None, replicas: int = 1,
                     router: str = "least-outstanding", *, balance_abs: int = 32, balance_rel: float = 1.5,
                     node_replicas: int | None = None):
    """Serve ``trace`` with ``replicas`` copies of ``dep`` behind ``router`` (module docstring).

    ``method`` is built for ``dep``; the replicas use a copy for the host-shared deployment.
    ``node_replicas``: replicas that share each node's host (default ``replicas``, at most a node's
    ``num_gpus // tp``); ``kvsim plan`` passes a full node, the GPUs it prices being all in use.
    Returns a :class:`kvsim.sim.replica.SimResult` for one replica, else a :class:`ClusterResult`.
    """
    if router not in ROUTERS:
        raise ConfigError(f"unknown router '{router}'; choices: {', '.join(ROUTERS)}")
    if replicas < 1:
        raise ConfigError(f"replicas must be >= 1, got {replicas}")
    cfg = config or SimConfig()
    shared = host_shared(dep, replicas if node_replicas is None else node_replicas)
    m = type(method)(shared, method.params) if shared is not dep else method
    if replicas == 1:
        return simulate(shared, m, trace, cfg)
    t0 = time.perf_counter()
    sims = [ReplicaSim(shared, m, trace, cfg) for _ in range(replicas)]
    trees = PrefixTrees(replicas)
    owner = lockstep(sims, trace, lambda i, loads: route(router, i, loads, trace, trees, balance_abs, balance_rel))
    results = [s.finish() for s in sims]
    return merge_results(results, owner, cfg, trace, dep, method, router, time.perf_counter() - t0)


def lockstep(sims: list, trace: Trace, choose) -> np.ndarray:
    """Route every request of ``trace`` to one of ``sims`` (:class:`kvsim.sim.replica.ReplicaSim`) at its
    arrival, ``choose(i, outstanding_per_replica) -> replica``; returns the replica of each request."""
    owner = np.full(len(trace), -1, dtype=np.int64)
    for i, t in enumerate(np.asarray(trace.arrival_s, dtype=np.float64)):
        before = math.nextafter(float(t), -math.inf)  # same-instant step ends come after the arrival
        for s in sims:
            s.advance(before)
        k = choose(i, [s.outstanding(before) for s in sims])
        owner[i] = k
        sims[k].arrive(i)
        for s in sims:
            s.routed_up_to(i + 1)
    return owner


def merge_results(results: list, owner: np.ndarray, cfg, trace: Trace, dep: Deployment, method: KVMethod, router: str,
                  wall_s: float) -> ClusterResult:
    """One summary of N replicas' results: records taken from each request's replica."""
    recs = [r.records for r in results]
    fields = ("arrival_s", "scheduled_s", "first_token_s", "finish_s", "tbt_max_s", "prompt_tokens",
              "effective_prompt_tokens", "output_tokens", "cached_tokens", "preemptions", "status", "preempted_kv_tokens")
    merged = {}
    for f in fields:
        a = np.array(getattr(recs[0], f), copy=True)
        for k, rec in enumerate(recs[1:], start=1):
            sel = owner == k
            a[sel] = getattr(rec, f)[sel]
        merged[f] = a
    reasons: dict = {}
    for k, rec in enumerate(recs):
        reasons.update({i: v for i, v in dict(rec.reject_reason).items() if owner[i] == k})
    tokens = None
    if recs[0].token_times is not None:
        tokens = [recs[owner[i]].token_times[i] for i in range(len(owner))]
    rec = RequestRecords(**merged, reject_reason=reasons, token_times=tokens)
    vals = np.concatenate([r.tbt_values for r in results])
    wts = np.concatenate([r.tbt_weights for r in results])
    summ = summarize(rec, vals, wts, slo_ttft_s=cfg.slo_ttft_s, slo_tpot_s=cfg.slo_tpot_s)
    per = [r.summary for r in results]
    timeline = _sum_timelines([r.timeline for r in results], [dep.tp] * len(results))
    summ.update({
        "hw": dep.system.name, "model": dep.model.name, "method": method.label(), "trace": trace.name, "tp": dep.tp,
        "replicas": len(results), "router": router, "gpus": len(results) * dep.tp,
        "requests_per_replica": np.bincount(owner, minlength=len(results)).tolist(),
        "peak_kv_gpu_bytes": max(p["peak_kv_gpu_bytes"] for p in per),  # per GPU, worst replica
        "peak_kv_host_bytes": max(p["peak_kv_host_bytes"] for p in per),
        # every GPU of every replica (the summed timeline's largest point: per-bucket maxima summed, an upper bound)
        "peak_kv_gpu_bytes_cluster": float(timeline["kv_gpu_bytes"].max()) if timeline["t_s"].size else 0.0,
        "kv_gpu_capacity_bytes": per[0].get("kv_gpu_capacity_bytes"),
        "kv_gpu_capacity_tokens": per[0].get("kv_gpu_capacity_tokens"),
        "kv_host_capacity_bytes": per[0].get("kv_host_capacity_bytes"),
        "kv_offload": merge_summaries([p.get("kv_offload") for p in per]),  # tiers of every replica, summed
        "sim": {"wall_s": wall_s, "steps": sum(p.get("sim", {}).get("steps", 0) for p in per)},
        "notes": merged_notes(per, summ["rejected_reasons"], len(rec.status), dep.model.max_context_tokens,
                              full_prompt=method.full_prompt_until_prefilled),
    })
    return ClusterResult(summ, rec, timeline, vals, wts, owner, results)


def _sum_timelines(timelines: list[dict[str, np.ndarray]], gpus: list[int], n: int = 2000) -> dict[str, np.ndarray]:
    """Gauges of every replica on one grid of ``n`` points (value holding at each grid time), summed.

    ``gpus``: GPUs of each replica (its TP): a replica's GPU KV gauge is per GPU, so it counts that
    many times (the sum covers every GPU). A replica adds nothing after its last bucket (it has
    finished: its last bucket's value does not carry on while others still run)."""
    end = max((float(t["t_s"][-1]) for t in timelines if len(t["t_s"])), default=0.0)
    grid = np.linspace(0.0, end, n) if end > 0 else np.zeros(0)
    names = [k for k in timelines[0] if k != "t_s"]
    out = {"t_s": grid, **{k: np.zeros(grid.shape) for k in names}}
    for t, g in zip(timelines, gpus):
        ts = np.asarray(t["t_s"])
        if not len(ts):
            continue
        idx = np.clip(np.searchsorted(ts, grid, side="right") - 1, 0, len(ts) - 1)
        width = ts[1] - ts[0] if len(ts) > 1 else np.inf
        live = grid < ts[-1] + width  # (within its buckets)
        for k in names:
            out[k] = out[k] + np.where(live, np.asarray(t[k])[idx] * (g if k == "kv_gpu_bytes" else 1), 0.0)
    return out

