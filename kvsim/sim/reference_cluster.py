"""The reference for N replicas behind a router (:mod:`kvsim.plan.cluster`), in lockstep (rule 9 of
:mod:`kvsim.sim.reference`)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from kvsim.sim.config import SimConfig
from kvsim.sim.reference import RefReplica
from kvsim.sim.reference_result import RefResult, collect_results
from kvsim.sim.routing import PrefixTrees, route


def simulate_cluster_reference(dep, method, trace, config=None, replicas: int = 1, router: str = "least-outstanding",
                               *, balance_abs: int = 32, balance_rel: float = 1.5) -> RefResult:
    """``replicas`` engines behind ``router`` in lockstep (rule 9); the host memory of a node is
    shared by the replicas on it (``num_gpus // tp`` per node)."""
    cfg = config or SimConfig()
    per_node = max(1, dep.system.num_gpus // dep.tp)
    share = 1.0 / min(max(replicas, 1), per_node)
    if share != 1.0:
        dep = replace(dep, system=replace(dep.system, host_memory_bytes=dep.system.host_memory_bytes * share))
        method = type(method)(dep, method.params)
    reps = [RefReplica(dep, method, trace, cfg) for _ in range(replicas)]
    owner = np.zeros(len(trace), dtype=np.int64)
    trees = PrefixTrees(replicas)
    for i, t in enumerate(np.asarray(trace.arrival_s, dtype=np.float64).tolist()):
        for rep in reps:
            rep.run_before(t)
        k = route(router, i, [rep.outstanding(t) for rep in reps], trace, trees, balance_abs, balance_rel)
        owner[i] = k
        reps[k].arrive(i)
    for rep in reps:
        rep.run_before(math.inf)
    return collect_results(reps, owner, len(trace))
