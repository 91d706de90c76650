"""The Ray executor gives the same plan as the process pool (skipped when Ray is not installed;
CI installs the ``ray`` extra)."""

from __future__ import annotations

import signal

import pytest

ray = pytest.importorskip("ray")

from kvsim.plan.schema import SLO, SearchOptions, TraceSpec  # noqa: E402
from kvsim.plan.search import PlanRequest, run_plan  # noqa: E402

#: fields that measure this machine, not the plan
_TIMES = {"sim_wall_s", "wall_s"}


def _without_times(obj):
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k not in _TIMES}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


@pytest.mark.slow
def test_ray_plan_equals_process_pool():
    """A small plan (2 methods x 2 GPUs) through --executor ray equals the process pool's, result by result."""
    req = PlanRequest(model="llama-3.1-8b", hws=["a100", "v100"], methods=["full", "kivi"],
                      trace=TraceSpec(spec="azure-conv", num_requests=6, max_output_tokens=16),
                      slo=SLO(ttft_s=2, itl_s=0.1), search=SearchOptions(rel_tol=0.5))
    pool = run_plan(req, executor="process", jobs=2, progress=False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # ray.init replaces them
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        on_ray = run_plan(req, executor="ray", progress=False)
    finally:
        ray.shutdown()
        for s, h in handlers.items():
            signal.signal(s, h)
    a, b = _without_times(pool.model_dump(mode="json")), _without_times(on_ray.model_dump(mode="json"))
    assert len(a["configs"]) == 4 and any(c["max_rate_per_s"] > 0 for c in a["configs"])
    assert a == b
