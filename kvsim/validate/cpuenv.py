"""Process settings and checks for CPU timing runs (no torch).

* :func:`tune_allocator`: glibc returns large freed blocks to the OS and page-faults them back
  on the next allocation; in a VM a 20 MB temporary then costs ~10 ms of faults per call.
  Raising ``M_MMAP_THRESHOLD``/``M_TRIM_THRESHOLD`` keeps freed memory in the heap - what
  Intel's PyTorch CPU tuning guide gets by preloading jemalloc/tcmalloc. Applied by ``kvsim
  validate run`` and ``e2e`` (both the microbenchmarks and the serving loop run with it).
* :func:`other_load`: the CPU time other processes used during a short window, so a run on a
  shared machine can warn that its timings are contended.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Keep freed memory in the glibc heap (no-op elsewhere). True if applied."""
    try:
        name = ctypes.util.find_library("c") or "libc.so.6"
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
        ok = (libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1) and ok
        return bool(ok)
    except (OSError, AttributeError):
        return False


def _busy_jiffies() -> tuple[float, float]:
    with open("/proc/stat") as f:
        v = [float(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0.0)
    return sum(v) - idle, sum(v)


def _self_jiffies() -> float:
    t = os.times()
    return (t.user + t.system) * os.sysconf("SC_CLK_TCK")


def snapshot() -> tuple[float, float, float] | None:
    """(busy jiffies of the machine, this process's jiffies, wall time) for :func:`other_since`."""
    try:
        b, _ = _busy_jiffies()
        return b, _self_jiffies(), time.perf_counter()
    except (OSError, ValueError):
        return None


def other_since(snap) -> float | None:
    """Cores other processes kept busy since ``snap`` (None without /proc)."""
    if snap is None:
        return None
    now = snapshot()
    if now is None:
        return None
    dt = max(now[2] - snap[2], 1e-3)
    hz = os.sysconf("SC_CLK_TCK")
    return max(0.0, ((now[0] - snap[0]) - (now[1] - snap[1])) / hz / dt)


def other_load(window_s: float = 0.5) -> float | None:
    """Cores kept busy by *other* processes over ``window_s`` (None if /proc is unavailable)."""
    try:
        b0, _ = _busy_jiffies()
        s0 = _self_jiffies()
        time.sleep(window_s)
        b1, _ = _busy_jiffies()
        s1 = _self_jiffies()
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return max(0.0, ((b1 - b0) - (s1 - s0)) / hz / window_s)


def wait_quiet(max_wait_s: float, threshold: float = 0.3, log=print) -> float | None:
    """Wait up to ``max_wait_s`` for other processes' load to drop below ``threshold`` cores."""
    t0 = time.time()
    load = other_load()
    while load is not None and load > threshold and time.time() - t0 < max_wait_s:
        log(f"waiting for a quiet machine: other processes use {load:.1f} cores")
        time.sleep(5.0)
        load = other_load()
    return load
