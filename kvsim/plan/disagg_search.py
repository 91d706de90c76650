"""Aggregated or disaggregated, and which P:D ratio: the highest request rate meeting the SLO for each
layout of ``N`` instances of one deployment (``kvsim plan --disagg-instances N``).

Layouts: ``aggregated``, ``N`` replicas behind the router (:func:`kvsim.plan.cluster.simulate_cluster`),
and every ``P:D`` with ``P + D = N`` (:func:`kvsim.plan.disagg.simulate_disagg`). Every layout uses
the same GPUs (``N x tp``), so the highest SLO-meeting rate is also the highest per GPU and the
cheapest per token. Each layout's rate is searched as the plan does
(:func:`kvsim.plan.ratesearch.search_max_rate`, same start grid, the trace replayed at each rate
by :func:`kvsim.plan.evaluate.at_rate`, the verdict :meth:`kvsim.plan.schema.PointResult.meets`).
Ranking: highest max rate first; ties go to the aggregated layout (no KV link needed), then to
more decode instances. DistServe (OSDI'24 §4) searches placements the same way: per-GPU
goodput under TTFT and TPOT SLOs, by simulation, over instance counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.hardware.spec import LinkSpec
from kvsim.methods.base import KVMethod
from kvsim.plan.cluster import simulate_cluster
from kvsim.plan.digest import digest
from kvsim.plan.disagg import simulate_disagg
from kvsim.plan.evaluate import at_rate, check_host_tier, start_rate_guess
from kvsim.plan.ratesearch import search_max_rate
from kvsim.plan.schema import SLO, PointResult, fmt_lifetimes, short_of_steady
from kvsim.sim.config import SimConfig
from kvsim.sim.kv_tiers import reuse_note
from kvsim.traces.base import Trace


@dataclass(frozen=True)
class LayoutResult:
    """One layout's search: ``prefill == 0`` is aggregated (``decode`` replicas)."""

    prefill: int
    decode: int
    gpus: int
    max_rate_per_s: float
    best: PointResult | None  # the simulation at max_rate_per_s (None: no rate met the SLO)
    evaluations: int
    wall_s: float
    capped: bool = False  # still feasible at the search's top rate: the trace is too short to load the layout

    @property
    def label(self) -> str:
        return f"aggregated x{self.decode}" if self.prefill == 0 else f"disaggregated {self.prefill}:{self.decode}"

    @property
    def span_over_e2el(self) -> float | None:
        """How many mean E2E latencies the trace lasts at the max rate (:attr:`best`'s
        :attr:`kvsim.plan.schema.PointResult.lifetimes`; None without an answer)."""
        return self.best.lifetimes if self.best is not None and self.max_rate_per_s > 0 else None

    @property
    def transient(self) -> bool:
        """The layout drained a burst (:func:`kvsim.plan.schema.short_of_steady`): its max rate is high."""
        return short_of_steady(self.span_over_e2el)


def layouts(instances: int) -> list[tuple[int, int]]:
    """``(0, N)`` (aggregated) then ``(P, N - P)`` for ``P = 1 .. N - 1``."""
    if instances < 1:
        raise ConfigError(f"--disagg-instances must be >= 1, got {instances}")
    return [(0, instances)] + [(p, instances - p) for p in range(1, instances)]


def simulate_layout(layout: tuple[int, int], dep: Deployment, method: KVMethod, trace: Trace, link: LinkSpec,
                    cfg: SimConfig, router: str = "least-outstanding"):
    """One simulation of ``layout`` on ``trace`` (arrivals as given), every instance on a full node's
    share of its host, as the plan's aggregated rows (:func:`kvsim.plan.evaluate.simulate_point`)."""
    p, d = layout
    node = dep.replicas_per_node
    if p == 0:
        return simulate_cluster(dep, method, trace, cfg, d, router, node_replicas=node)
    return simulate_disagg(dep, method, dep, method, trace, link, cfg, p, d, router, node_replicas=node)


def search_layout(layout: tuple[int, int], dep: Deployment, method: KVMethod, trace: Trace, link: LinkSpec,
                  slo: SLO, cfg: SimConfig, router: str = "least-outstanding", rel_tol: float = 0.05,
                  start_rate_per_s: float | None = None) -> LayoutResult:
    """Highest rate at which ``layout`` meets ``slo`` (module docstring)."""
    t0 = time.perf_counter()
    n = layout[0] + layout[1]

    def feasible(rate: float):
        res = simulate_layout(layout, dep, method, at_rate(trace, rate), link, cfg, router)
        point = digest(res, rate, n, detail=False)
        return point.meets(slo), point

    start = start_rate_per_s or start_rate_guess(dep, method, trace, replicas=n)
    rs = search_max_rate(feasible, start_rate_per_s=start, rel_tol=rel_tol)
    best = rs.best.info if rs.best is not None else None
    return LayoutResult(layout[0], layout[1], n * dep.tp, rs.max_rate_per_s, best, len(rs.probes),
                        time.perf_counter() - t0, rs.capped)


def plan_layouts(dep: Deployment, method: KVMethod, trace: Trace, link: LinkSpec, slo: SLO, instances: int,
                 cfg: SimConfig | None = None, router: str = "least-outstanding",
                 rel_tol: float = 0.05) -> list[LayoutResult]:
    """Every layout of ``instances`` instances searched, best first (module docstring)."""
    cfg = cfg or SimConfig()
    if len(trace) < 2:
        raise ConfigError("a layout search needs a trace of >= 2 requests (it replays them at several rates)")
    check_host_tier(dep, cfg)  # (a layout's instances get a full node's share, as the plan's rows)
    start = start_rate_guess(dep, method, trace, replicas=instances)  # one grid for every layout
    out = [search_layout(lay, dep, method, trace, link, slo, cfg, router, rel_tol, start) for lay in layouts(instances)]
    return sorted(out, key=layout_order)


def layout_order(r: LayoutResult) -> tuple:
    """Sort key, best first: layouts whose max rate stands (not measured on a burst: a short trace's
    rate is high and would win by the artefact), then the highest rate, aggregated before
    disaggregated, more decode instances first."""
    return (r.transient or r.capped, -r.max_rate_per_s, r.prefill != 0, -r.decode)


def layout_row(hw: str, method: str, r: LayoutResult, slo: SLO) -> dict:
    """One JSON-able row of a layout search (the CLI's table and ``--json``)."""
    b = r.best
    pct = slo.percentile
    values = {} if b is None else b.values_at(pct)
    token = [m for m in ("tpot", "itl") if m in slo.bounds()] or ["itl"]
    return {"hw": hw, "method": method, "layout": r.label, "prefill_instances": r.prefill,
            "decode_instances": r.decode, "gpus": r.gpus, "max_rate_per_s": r.max_rate_per_s,
            "rate_per_gpu_per_s": r.max_rate_per_s / r.gpus if r.gpus else 0.0,
            f"ttft_{pct}_s": values.get("ttft"), **{f"{m}_{pct}_s": values.get(m) for m in token},
            "throughput_output_tok_s": None if b is None else b.throughput_output_tok_s,
            "note": "; ".join(n for n in (
                f"short trace ({fmt_lifetimes(r.span_over_e2el)}x E2E): rate likely high" if r.transient and not r.capped else None,
                reuse_note(b.kv_offload) if b is not None and b.kv_offload else None) if n) or None,
            "transient": r.transient, "span_over_e2el": r.span_over_e2el,
            "capped": r.capped, "evaluations": r.evaluations, "wall_s": r.wall_s}
