"""One configuration made concrete and evaluated at one rate: the pieces that the plan search
(:mod:`kvsim.plan.search`) and the per-configuration worker (:mod:`kvsim.plan.result`) share.

* :func:`build`: ``(deployment, method)`` of a :class:`~kvsim.plan.schema.ConfigSpec`.
* :func:`config_identity`: what a simulation of it depends on (part of the cache key).
* :func:`load_plan_trace`, :func:`at_rate`: the workload, and the same requests at a rate
  (BurstGPT README's "RPS scaling": ``(N - 1) / span = R``).
* :func:`start_rate_guess`: the analytic first probe of the rate search.
* :func:`simulate_point`: the plan's default evaluator (a cluster simulation, digested).
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

import numpy as np

from kvsim import __version__
from kvsim.costmodel.deployment import build_deployment, host_shared
from kvsim.errors import ConfigError
from kvsim.methods import make_method
from kvsim.plan.cluster import simulate_cluster
from kvsim.plan.digest import digest
from kvsim.plan.schema import ConfigSpec, PointResult, TraceSpec
from kvsim.plan.sweep import source_digest
from kvsim.pricing.memory import memory_budget
from kvsim.pricing.step import StepModel
from kvsim.sim.kv_tiers import check_offload
from kvsim.sim.provenance import provenance
from kvsim.sim.replica import SimConfig
from kvsim.traces import load_trace
from kvsim.traces.base import Trace


def at_rate(trace: Trace, rate_per_s: float) -> Trace:
    """The same requests with arrivals scaled to a mean rate of ``rate_per_s`` ((N-1)/span)."""
    base = trace.mean_rate_per_s
    if not math.isfinite(base):
        raise ConfigError(f"trace {trace.name} has all requests at one instant; it cannot be replayed at a rate")
    t0 = float(trace.arrival_s[0])
    return trace.with_arrivals((trace.arrival_s - t0) * (base / rate_per_s))


def load_plan_trace(spec: TraceSpec) -> Trace:
    return load_trace(spec.spec, num_requests=spec.num_requests, seed=spec.seed,
                      max_prompt_tokens=spec.max_prompt_tokens, max_output_tokens=spec.max_output_tokens,
                      format=spec.format, columns=spec.columns, time_unit=spec.time_unit, arrivals=spec.arrivals,
                      strict=spec.strict, tokenizer=spec.tokenizer)


def build(config: ConfigSpec):
    """``(deployment, method)`` of a configuration (raises one-line KvsimErrors)."""
    dep = build_deployment(config.hw, config.model, tp=config.tp, weight_dtype=config.weight_dtype,
                           kv_dtype=config.kv_dtype, gpu_memory_utilization=config.gpu_memory_utilization,
                           calibration=config.calibration, expert_offload=config.expert_offload)
    return dep, make_method(config.method, dep)


def config_identity(config: ConfigSpec, dep, method) -> dict:
    """What a simulation of ``config`` depends on, besides the trace and simulator options."""
    s = dep.system
    calib = None
    if config.calibration:
        calib = hashlib.sha256(Path(config.calibration).read_bytes()).hexdigest()
    return {
        "kvsim": __version__,
        "kvsim_source": source_digest(),
        "system": {"spec": s.spec, "gpu": s.gpu, "host": s.host, "num_gpus": s.num_gpus, "host_sockets": s.host_sockets,
                   "host_memory_bytes": s.host_memory_bytes, "gpu_host_link": s.gpu_host_link,
                   "gpu_gpu_link": s.gpu_gpu_link, "eff": s.eff},
        "model": dep.model,
        "deployment": {"weight_dtype": dep.weight_dtype, "kv_dtype": dep.kv_dtype, "act_dtype": dep.act_dtype,
                       "tp": dep.tp, "gpu_memory_utilization": dep.gpu_memory_utilization,
                       # the resolved option (hit rate included), so a routing file's content keys the cache
                       "expert_offload": None if dep.expert_offload is None else dep.expert_offload.model_dump()},
        "method": {"name": method.name, "params": method.params},
        "replicas": config.replicas, "router": config.router, "calibration_sha256": calib,
    }


def config_provenance(config: ConfigSpec, trace: Trace) -> dict:
    """What ``config``'s results depend on, the same record as ``kvsim simulate``'s summary.json
    (:func:`kvsim.sim.provenance.provenance`: version, method with every parameter, deployment,
    cost model, trace, sha256 of each spec as loaded) plus replicas, router and the sha256 of
    the calibration file; ``{"error": ...}`` when the configuration cannot be built."""
    try:
        dep, method = build(config)
    except ConfigError as err:
        return {"error": str(err).splitlines()[0]}
    calib = hashlib.sha256(Path(config.calibration).read_bytes()).hexdigest() if config.calibration else None
    return {**provenance(dep, method, trace), "replicas": config.replicas, "router": config.router,
            "calibration_file": config.calibration, "calibration_sha256": calib}


def start_rate_guess(dep, method, trace: Trace, growth: float = 2.0, replicas: int = 1) -> float:
    """Analytic first probe, req/s: a decode batch of up to 64 mean-context requests that fits
    the KV budget, ``replicas * B / (TBT * mean output)``, rounded to a power of ``growth``
    (so that every search probes the same grid, see :mod:`kvsim.plan.ratesearch`)."""
    ctx = float(np.mean(trace.prompt_tokens) + np.mean(trace.output_tokens) / 2)
    budget = memory_budget(dep, method, max_tokens_per_step=8192, max_seqs=256)
    per_req = float(method.kv_bytes(ctx).gpu_bytes)
    batch = int(max(1, min(64, budget.kv_gpu_bytes // per_req if per_req > 0 else 64)))
    tbt = float(StepModel(dep, method).decode_timing(np.full(batch, ctx)).total_s)
    guess = replicas * batch / (tbt * float(np.mean(trace.output_tokens)))
    return growth ** round(math.log(max(guess, 1e-3)) / math.log(growth))


def check_host_tier(dep, cfg: SimConfig) -> None:
    """ConfigError when ``cfg``'s --kv-offload host tier exceeds the usable host memory of the share of its node a
    plan prices each replica with (``1 / replicas_per_node``, :func:`simulate_point`; docs/kv-tiers.md). The
    simulator checks it only when a trace has prefix ids, and a host method's pool shrank silently instead."""
    off = cfg.kv_offload
    if off is not None and off.enabled:
        check_offload(off, host_shared(dep, dep.replicas_per_node).system)


def simulate_point(config: ConfigSpec, trace: Trace, rate_per_s: float, sim_options: dict) -> PointResult:
    """The plan's default evaluator: simulate ``config`` on ``trace`` (already at ``rate_per_s``)."""
    dep, method = build(config)
    t0 = time.perf_counter()
    # each replica on a full node's share of its host: a plan prices GPUs, so the node's other GPUs serve
    # replicas too (a lone replica with the whole host's DRAM would not scale to a packed node)
    res = simulate_cluster(dep, method, trace, SimConfig(**sim_options), config.replicas, config.router,
                           node_replicas=dep.replicas_per_node)
    return digest(res, rate_per_s, config.replicas, time.perf_counter() - t0)
