"""The reference for N replicas behind a router (:mod:`kvsim.plan.cluster`), in lockstep (rule 9 of
:mod:`kvsim.sim.reference`)."""

from __future__ import annotations

import math

import numpy as np

from kvsim.costmodel.deployment import host_shared
from kvsim.sim.config import SimConfig
from kvsim.sim.reference import RefReplica
from kvsim.sim.reference_result import RefResult, collect_results
from kvsim.sim.routing import PrefixTrees, route


def simulate_cluster_reference(dep, method, trace, config=None, replicas: int = 1, router: str = "least-outstanding",
                               *, balance_abs: int = 32, balance_rel: float = 1.5,
                               node_replicas: int | None = None) -> RefResult:
    """``replicas`` engines behind ``router`` in lockstep (rule 9); the host of a node is shared by
    the replicas on it (``num_gpus // tp`` per node, :func:`kvsim.costmodel.deployment.host_shared`)."""
    cfg = config or SimConfig()
    shared = host_shared(dep, replicas if node_replicas is None else node_replicas)
    if shared is not dep:
        dep, method = shared, type(method)(shared, method.params)
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
