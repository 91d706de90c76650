"""Digests of simulations for plans and reports: a :class:`~kvsim.plan.schema.PointResult`
(summary statistics, CDF quantiles, a downsampled timeline) of a
:class:`kvsim.sim.replica.SimResult` or a :class:`kvsim.plan.cluster.ClusterResult`.
"""

from __future__ import annotations

import math

import numpy as np

from kvsim.plan.schema import CDF_LEVELS, PointResult, Stats, TimelineDigest
from kvsim.sim.metrics import request_metrics, weighted_percentile
from kvsim.sim.request import RequestStatus

#: timeline points kept in digests for plots
TIMELINE_POINTS = 400


def _stats(d: dict | None) -> Stats:
    d = d or {}
    return Stats(**{k: d.get(k) for k in ("mean", "p50", "p90", "p99")})


def _downsample(timeline: dict[str, np.ndarray], points: int) -> TimelineDigest | None:
    t = np.asarray(timeline.get("t_s", []), dtype=np.float64)
    if t.size == 0:
        return None
    g = max(1, math.ceil(t.size / points))

    def red(a):  # max per group: peaks survive downsampling
        a = np.asarray(a, dtype=np.float64)
        pad = (-a.size) % g
        return np.pad(a, (0, pad), mode="edge").reshape(-1, g).max(axis=1).tolist()

    return TimelineDigest(t_s=t[::g].tolist(), gpu_kv_bytes=red(timeline.get("kv_gpu_bytes", np.zeros(t.size))),
                          host_kv_bytes=red(timeline.get("kv_host_bytes", np.zeros(t.size))),
                          batch_size=red(timeline.get("running", np.zeros(t.size))),
                          queue_len=red(timeline.get("waiting", np.zeros(t.size))))


def digest(result, rate_per_s: float | None = None, replicas: int | None = None, wall_s: float = 0.0,
           detail: bool = True) -> PointResult:
    """A :class:`PointResult` (JSON-able) of a SimResult or ClusterResult: summary, CDF quantiles, timelines."""
    s, rec = result.summary, result.records
    n = int(np.asarray(rec.status).size)
    if rate_per_s is None:
        arr = np.asarray(rec.arrival_s, dtype=np.float64)
        span = float(arr.max() - arr.min()) if n > 1 else 0.0
        rate_per_s = (n - 1) / span if span > 0 else 0.0
        if not math.isfinite(rate_per_s):  # arrivals 1e-313 s apart: all at one instant, as span 0
            rate_per_s = 0.0
    extra = {"kv_gpu_capacity_bytes": float(s.get("kv_gpu_capacity_bytes") or 0.0),
             "kv_host_capacity_bytes": float(s.get("kv_host_capacity_bytes") or 0.0),
             "kv_gpu_capacity_sum_bytes": _given(s.get("kv_gpu_capacity_sum_bytes")),
             "kv_host_capacity_sum_bytes": _given(s.get("kv_host_capacity_sum_bytes")),
             "kv_offload": s.get("kv_offload"),
             "slo_ranks_s": {m: Stats(**d) for m, d in (s.get("slo_ranks_s") or {}).items()}}
    if detail:
        done = np.asarray(rec.status) == RequestStatus.FINISHED
        ttft = (np.asarray(rec.first_token_s) - np.asarray(rec.arrival_s))[done]
        lv = np.asarray(CDF_LEVELS)
        if ttft.size:
            extra["ttft_quantiles_s"] = np.quantile(ttft, lv).tolist()
        tpot = request_metrics(rec)["tpot"]
        if tpot.size:
            extra["tpot_quantiles_s"] = np.quantile(tpot, lv).tolist()
        if np.asarray(result.tbt_values).size:
            extra["itl_quantiles_s"] = np.asarray(
                weighted_percentile(np.asarray(result.tbt_values), np.asarray(result.tbt_weights), lv * 100)).tolist()
        extra["timeline"] = _downsample(result.timeline, TIMELINE_POINTS)
    return PointResult(
        rate_per_s=float(rate_per_s), replicas=int(replicas or s.get("replicas", 1)), num_requests=n,
        ttft_s=_stats(s.get("ttft_s")), itl_s=_stats(s.get("itl_s")), tpot_s=_stats(s.get("tpot_s")),
        e2el_s=_stats(s.get("e2el_s")), throughput_output_tok_s=float(s.get("throughput_output_tok_s") or 0.0),
        requests_completed=int(s.get("requests_completed", 0)), requests_rejected=int(s.get("requests_rejected", 0)),
        rejected_reasons={str(k): int(v) for k, v in (s.get("rejected_reasons") or {}).items()},
        preemptions=int(s.get("preemptions", 0)), peak_kv_gpu_bytes=float(s.get("peak_kv_gpu_bytes", 0.0)),
        peak_kv_host_bytes=float(s.get("peak_kv_host_bytes", 0.0)), duration_s=float(s.get("makespan_s") or 0.0),
        sim_wall_s=float(wall_s or s.get("sim", {}).get("wall_s", 0.0)), **extra,
    )


def _given(x) -> float | None:
    """A summed capacity the summary states (disaggregated runs), else None (not a placeholder 0)."""
    return float(x) if x else None
