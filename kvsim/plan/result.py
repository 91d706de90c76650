"""Search one plan configuration: cached simulations, max-rate search, target-rate replicas.

A :class:`ConfigTask` is one unit of parallel work; :func:`run_config` runs it inside a worker
process (started by :func:`kvsim.plan.search.run_plan`); see :mod:`kvsim.plan.search` for the
rules it applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvsim.errors import ConfigError, KvsimError
from kvsim.methods._published import applies_to
from kvsim.plan.evaluate import (
    at_rate,
    build,
    check_host_tier,
    config_identity,
    load_plan_trace,
    simulate_point,
    start_rate_guess,
)
from kvsim.plan.ratesearch import search_max_rate
from kvsim.plan.schema import (
    SLO,
    STEADY_SPAN_OVER_E2EL,
    ConfigResult,
    ConfigSpec,
    PointResult,
    SearchOptions,
    TargetResult,
    TraceSpec,
    cost_usd_per_mtok,
)
from kvsim.plan.sweep import ResultCache, cached
from kvsim.sim.config import SimConfig
from kvsim.traces.base import Trace

#: (config, trace at the rate, rate req/s, simulator options) -> digest
Evaluator = Callable[[ConfigSpec, Trace, float, dict], PointResult]


@dataclass(frozen=True)
class ConfigTask:
    """One unit of parallel work: search one configuration (picklable)."""

    config: ConfigSpec
    trace: TraceSpec
    slo: SLO
    search: SearchOptions
    sim_options: dict
    target_rate_per_s: float | None = None
    max_replicas: int = 64
    cache_dir: str | None = None
    evaluator: Evaluator | None = None  # None: kvsim.plan.evaluate.simulate_point


def run_config(task: ConfigTask) -> dict:
    """Search one configuration; returns ``ConfigResult.model_dump()`` (errors become ``error``)."""
    return config_result(task).model_dump(mode="json")


@dataclass
class _Evaluations:
    """Cached evaluation of one configuration at given rates; counts misses and hits."""

    task: ConfigTask
    identity: dict
    misses: int = 0
    hits: int = 0
    traces: dict = field(default_factory=dict)  # TraceSpec -> Trace, loaded once per worker task

    def trace(self, spec: TraceSpec) -> Trace:
        if spec not in self.traces:
            self.traces[spec] = load_plan_trace(spec)
        return self.traces[spec]

    def __call__(self, config: ConfigSpec, trace_spec: TraceSpec, rate_per_s: float) -> PointResult:
        task = self.task
        evaluator = simulate_point if task.evaluator is None else task.evaluator
        inputs = {**self.identity, "replicas": config.replicas, "router": config.router, "trace": trace_spec,
                  "rate_per_s": rate_per_s,
                  # the engine settings as resolved (defaults filled in): an explicitly given default
                  # (``--watermark 0``) is the same simulation, so it hits the same entry
                  "sim": SimConfig(**task.sim_options).resolved(),
                  "evaluator": _name(evaluator)}

        def compute() -> dict:
            trace = at_rate(self.trace(trace_spec), rate_per_s)
            return evaluator(config, trace, rate_per_s, dict(task.sim_options)).model_dump(mode="json")

        value, hit = cached(ResultCache(None if task.cache_dir is None else Path(task.cache_dir)), inputs, compute)
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        return PointResult.model_validate(value)


def _name(fn) -> str:
    """``module.qualname`` of an evaluator function or callable object (part of the cache key)."""
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', None) or type(fn).__module__}.{qual}"


def _label(config: ConfigSpec, dep, method) -> str:
    extra = f" · TP{config.tp}" if config.tp > 1 else ""
    extra += f" · {config.replicas} replicas" if config.replicas > 1 else ""
    extra += f" · experts offloaded (cache {dep.expert_offload.cache_experts_per_layer}/layer)" if dep.expert_offload else ""
    return f"{dep.system.name} · {method.label()}{extra}"


def _system_name(hw: str) -> str:
    """The system's name, as the other rows' labels give it (``a100`` -> ``a100-80g``); as written if it cannot load."""
    from kvsim.hardware import load_system  # lazy: (the plan's workers import this module)

    try:
        return load_system(hw).name
    except KvsimError:
        return hw


def config_result(task: ConfigTask) -> ConfigResult:
    """Search ``task.config``."""
    cfg: ConfigSpec = task.config
    try:
        dep, method = build(cfg)
    except ConfigError as err:  # e.g. a method that does not apply to this model
        name = cfg.method.partition(":")[0]
        hw = _system_name(cfg.hw)
        return ConfigResult(config=cfg, label=f"{hw} · {cfg.method}", hw_name=hw, gpu_name="", method_name=name,
                            method_label=cfg.method, gpus=cfg.gpus, slo=task.slo, error=str(err).splitlines()[0])
    base = dict(config=cfg, label=_label(cfg, dep, method), hw_name=dep.system.name, gpu_name=dep.system.gpu.name,
                method_name=method.name, method_label=method.label(), gpus=cfg.gpus, price=dep.system.gpu.price, slo=task.slo,
                accuracy=[vars(a) for a in method.published_accuracy() if applies_to(a, dep)])
    evals = _Evaluations(task, config_identity(cfg, dep, method))
    trace = evals.trace(task.trace)
    ctx = float(np.mean(trace.prompt_tokens) + np.mean(trace.output_tokens) / 2)
    res = method.kv_bytes(ctx)
    base.update(kv_bytes_per_token_gpu=float(res.gpu_bytes) / ctx, kv_bytes_per_token_host=float(res.host_bytes) / ctx)
    s = task.search
    try:
        check_host_tier(dep, SimConfig(**task.sim_options))
        start = s.start_rate_per_s or start_rate_guess(dep, method, trace, s.growth, cfg.replicas)
        found = search_max_rate(lambda r: _verdict(evals(cfg, task.trace, r), task.slo), start_rate_per_s=start,
                                rel_tol=s.rel_tol, growth=s.growth, min_rate_per_s=s.min_rate_per_s,
                                max_rate_per_s=s.max_rate_per_s)
    except KvsimError as err:  # e.g. the weights leave no room for KV on this GPU
        return ConfigResult(**base, error=str(err).splitlines()[0], evaluations=evals.misses, cache_hits=evals.hits)
    best = found.best.info if found.best is not None else None
    target = None
    if task.target_rate_per_s is not None and found.max_rate_per_s > 0:
        e2el = best.e2el_s.mean if best is not None else None
        target = _replicas_for_target(task, evals, found.max_rate_per_s, found.upper_rate_per_s, e2el)
        if (target.replicas is not None and target.transient and target.point is not None
                and (target.point.e2el_s.mean or 0) > (e2el or 0)):
            # latencies at the target were longer than at the single replica's max rate: check again on a trace
            # sized by them (once; a check that is still too short is reported as a lower bound)
            target = _replicas_for_target(task, evals, found.max_rate_per_s, found.upper_rate_per_s,
                                          target.point.e2el_s.mean)
        target = target.model_copy(update={"output_tok_per_s": task.target_rate_per_s * float(np.mean(trace.output_tokens))})
    if target is not None and target.verified:
        cost = cost_usd_per_mtok(base["price"], target.gpus, target.output_tok_per_s)
    elif task.target_rate_per_s is not None:  # not met, or met by a check too short to stand by: no cost to state
        cost = None
    elif found.capped:  # still feasible at the search's top rate: a burst, no rate measured, no cost to state
        cost = None
    else:  # at the max rate, the workload's token rate (as at a target): max rate x mean output tokens
        demand = found.max_rate_per_s * float(np.mean(trace.output_tokens))
        cost = cost_usd_per_mtok(base["price"], cfg.gpus, demand) if best else None
    return ConfigResult(
        **base, max_rate_per_s=found.max_rate_per_s, infeasible=why_infeasible(found, task.slo),
        upper_rate_per_s=found.upper_rate_per_s if math.isfinite(found.upper_rate_per_s) else None,
        capped=found.capped, probes=[p.info.light() for p in found.probes], best=best, cost_usd_per_mtok=cost,
        target=target, evaluations=evals.misses, cache_hits=evals.hits,
    )


#: what each reject reason of the simulator (kvsim.sim.inputs.REJECT_REASONS) means
REJECTED = {"max_context": "longer than the model's max context", "gpu_memory": "do not fit in GPU KV memory",
            "host_memory": "do not fit in host memory", "unschedulable": "could not be scheduled"}


def why_infeasible(found, slo: SLO) -> str | None:
    """Why no rate met the SLO (None when one did): what the lowest rate probed missed."""
    if found.max_rate_per_s > 0 or not found.probes:
        return None
    probe = min(found.probes, key=lambda p: p.rate_per_s)
    p: PointResult = probe.info
    at = f"SLO not met even at {probe.rate_per_s:.3g} req/s"
    if p.requests_rejected:
        kinds = ", ".join(f"{n} {REJECTED.get(k, k)}" for k, n in sorted(p.rejected_reasons.items())) or "rejected"
        return f"{at}: {p.requests_rejected}/{p.num_requests} requests rejected ({kinds})"
    return f"{at}: {p.misses(slo)}"


def _verdict(point: PointResult, slo) -> tuple[bool, PointResult]:
    return point.meets(slo), point


#: most requests a check at the target simulates to make it last STEADY_SPAN_OVER_E2EL request lifetimes
MAX_TARGET_CHECK_REQUESTS = 50_000


def target_check_requests(per_replica: int, replicas: int, target_rate_per_s: float, e2el_s: float | None) -> int:
    """Requests of the check of ``replicas`` replicas at the target: the search's per replica, or as
    many as arrive in ``1.25 x STEADY_SPAN_OVER_E2EL`` mean E2E latencies (``e2el_s``, measured at the
    single replica's max rate) at the target when that is more (a shorter check is a burst the
    replicas drain, not a rate they sustain), at most :data:`MAX_TARGET_CHECK_REQUESTS`.
    Example: 500 per replica, 9 replicas, 400 req/s, E2EL 4 s: max(4,500, ceil(1.25 x 10 x 4 x 400) + 1
    = 20,001) = 20,001."""
    need = math.ceil(1.25 * STEADY_SPAN_OVER_E2EL * (e2el_s or 0.0) * target_rate_per_s) + 1
    return max(per_replica * replicas, min(need, MAX_TARGET_CHECK_REQUESTS))


def _replicas_for_target(task: ConfigTask, evals: _Evaluations, lo_rate: float, hi_rate: float,
                         e2el_s: float | None = None) -> TargetResult:
    """Fewest replicas that meet the SLO at the target rate (monotone in replicas), each checked on
    :func:`target_check_requests` requests.

    Starts at ``ceil(target / hi_rate)`` (the per-replica threshold lies in ``[lo_rate, hi_rate)``),
    walks up (steps of 1, widening after 3 misses) or down (doubling) to bracket, then bisects."""
    cfg: ConfigSpec = task.config
    target, cap = float(task.target_rate_per_s), task.max_replicas
    tried: dict[int, PointResult] = {}

    def ok(n: int) -> bool:
        c = cfg.model_copy(update={"replicas": n})
        requests = target_check_requests(task.trace.num_requests, n, target, e2el_s)
        spec = task.trace.model_copy(update={"num_requests": requests})
        tried[n] = evals(c, spec, target)
        return tried[n].meets(task.slo)

    rate = hi_rate if math.isfinite(hi_rate) else lo_rate
    n = min(cap, max(1, math.ceil(target / rate - 1e-9)))
    if ok(n):
        hit, miss, step = n, 0, 1
        while hit > 1 and miss == 0:
            m = max(1, hit - step)
            if ok(m):
                hit, step = m, step * 2
            else:
                miss = m
    else:
        miss, hit = n, None
        while miss < cap:
            n = min(cap, miss + (1 if len(tried) < 3 else max(1, miss // 2)))
            if ok(n):
                hit = n
                break
            miss = n
        if hit is None:  # (point: the check at the most replicas tried, which says what missed)
            return TargetResult(rate_per_s=target, replicas=None, gpus=None, point=tried[max(tried)], tried=sorted(tried))
    while hit - miss > 1:
        mid = (hit + miss) // 2
        if ok(mid):
            hit = mid
        else:
            miss = mid
    return TargetResult(rate_per_s=target, replicas=hit, gpus=hit * cfg.tp, point=tried[hit], tried=sorted(tried))
