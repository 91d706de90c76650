"""Sweeps: parallel executors keep task order; the cache key covers every input; Ray is optional."""

import importlib.util

import pytest

from kvsim.errors import ConfigError
from kvsim.plan.sweep import ResultCache, cache_key, cached, run_tasks


def square(x: int) -> int:
    return x * x


def test_process_pool_keeps_task_order():
    """Results come back in task order whatever order workers finish in."""
    assert run_tasks(square, list(range(12)), jobs=2, executor="process", progress=False) == [i * i for i in range(12)]


def test_serial_and_progress_bar(capsys):
    """The serial executor with a progress bar gives the same results."""
    assert run_tasks(square, [3, 4], executor="serial", progress=True) == [9, 16]


def test_cache_key_is_canonical_and_sensitive():
    """Key order does not matter; any changed value changes the key."""
    a = {"hw": {"name": "a100", "bw": 2.039e12}, "rate": 4.0, "trace": ("burstgpt", 500, 0)}
    b = {"trace": ["burstgpt", 500, 0], "rate": 4.0, "hw": {"bw": 2.039e12, "name": "a100"}}
    assert cache_key(a) == cache_key(b)
    assert cache_key(a) != cache_key({**a, "rate": 4.0000001})


def test_cached_computes_once(tmp_path):
    """The second lookup of the same inputs is a hit and does not call compute."""
    calls = []
    cache = ResultCache(tmp_path)

    def compute():
        calls.append(1)
        return {"x": 1}

    assert cached(cache, {"k": 1}, compute) == ({"x": 1}, False)
    assert cached(cache, {"k": 1}, compute) == ({"x": 1}, True)
    assert len(calls) == 1
    assert cached(ResultCache(None), {"k": 1}, compute) == ({"x": 1}, False) and len(calls) == 2


def test_bad_executor_and_jobs_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        run_tasks(square, [1], executor="dask")
    with pytest.raises(ConfigError, match="--jobs must be >= 1"):
        run_tasks(square, [1], jobs=0)


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed")
def test_ray_missing_is_a_clear_error():
    """--executor ray without Ray installed: one line naming the extra to install."""
    with pytest.raises(ConfigError, match=r"pip install 'kvsim\[ray\]'"):
        run_tasks(square, [1, 2], executor="ray", progress=False)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (optional extra kvsim[ray])")
def test_ray_executor_on_a_local_instance():
    """The same tasks on a local Ray instance give the same ordered results."""
    import signal

    import ray

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # ray.init replaces them
    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    tasks = [{"i": i} for i in range(6)]  # a kvsim function: Ray workers import it by name
    try:
        assert run_tasks(cache_key, tasks, executor="ray", progress=False) == [cache_key(t) for t in tasks]
    finally:
        ray.shutdown()
        for s, h in handlers.items():
            signal.signal(s, h)
