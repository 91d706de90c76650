"""Process settings and checks for CPU timing runs (no torch).

* :func:`tune_allocator`: glibc returns large freed blocks to the OS and page-faults them back
  on the next allocation; in a VM a 20 MB temporary then costs ~10 ms of faults per call.
  Raising ``M_MMAP_THRESHOLD``/``M_TRIM_THRESHOLD`` keeps freed memory in the heap - what
  Intel's PyTorch CPU tuning guide gets by preloading jemalloc/tcmalloc. Applied by ``kvsim
  validate run`` and ``e2e`` (both the microbenchmarks and the serving loop run with it).
* :func:`other_load`: the CPU time other processes used during a short window, so a run on a
  shared machine can warn that its timings are contended.
* :func:`contention_reasons`: the verdict ``kvsim validate e2e`` refuses to report under: other
  processes' CPU use during the timed loops, hypervisor steal time, and a fixed kernel timed
  before and after the loops (its spread and drift; the kernel is the caller's, this module has
  no torch).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

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


# --------------------------------------------------------------------- contention verdict
#: other processes' CPU use (cores, beyond the cores the run leaves idle) above which timings are contended
OTHER_CORES_MAX = 0.3
#: fraction of the machine's CPU time stolen by the hypervisor (``steal`` in /proc/stat)
STEAL_MAX = 0.05
#: (p90 - p10) / p50 of a fixed kernel's repeated timing
PROBE_SPREAD_MAX = 0.25
#: |median after / median before - 1| of the fixed kernel across the run
PROBE_DRIFT_MAX = 0.15


def cpu_jiffies() -> tuple[float, float, float] | None:
    """(total, steal, wall seconds) from /proc/stat's aggregate line (None without /proc)."""
    try:
        with open("/proc/stat") as f:
            v = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    steal = v[7] if len(v) > 7 else 0.0
    return sum(v[:8]), steal, time.perf_counter()


def steal_since(snap) -> float | None:
    """Fraction of the machine's CPU time stolen by the hypervisor since ``snap`` (:func:`cpu_jiffies`)."""
    now = cpu_jiffies()
    if snap is None or now is None or now[0] <= snap[0]:
        return None
    return (now[1] - snap[1]) / (now[0] - snap[0])


def load_average() -> float | None:
    """1-minute load average (runnable threads, this process's included; None without /proc)."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Probe:
    """Repeated timing of one fixed kernel: per-call seconds of each sample."""

    times_s: list[float]

    @property
    def median_s(self) -> float:
        return float(np.median(self.times_s))

    @property
    def spread(self) -> float:
        """(p90 - p10) / p50 of the samples."""
        p10, p50, p90 = np.percentile(self.times_s, [10, 50, 90])
        return float((p90 - p10) / p50)


def probe(call: Callable[[], object], samples: int = 40, min_sample_s: float = 5e-3) -> Probe:
    """Time ``call`` in ``samples`` samples of back-to-back calls lasting at least ``min_sample_s`` each."""
    for _ in range(3):
        call()
    t0 = time.perf_counter()
    call()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(np.ceil(min_sample_s / one)))
    out = []
    for _ in range(samples):
        t = time.perf_counter()
        for _ in range(inner):
            call()
        out.append((time.perf_counter() - t) / inner)
    return Probe(out)


def contention_reasons(other_cores: float | None, steal: float | None, before: Probe | None, after: Probe | None,
                       idle_cores: float = 0.0) -> list[str]:
    """Why timings taken meanwhile cannot be trusted (empty: no sign of contention).

    Args:
        other_cores: cores other processes kept busy during the timed work (:func:`other_since`).
        steal: hypervisor steal fraction over the same time (:func:`steal_since`).
        before, after: the fixed kernel timed before and after the timed work.
        idle_cores: cores the timed work leaves idle (others may use them without contention).
    """
    out = []
    limit = OTHER_CORES_MAX + max(0.0, idle_cores)
    if other_cores is not None and other_cores > limit:
        out.append(f"other processes kept {other_cores:.2f} cores busy (limit {limit:.2f})")
    if steal is not None and steal > STEAL_MAX:
        out.append(f"the hypervisor stole {steal * 100:.1f}% of CPU time (limit {STEAL_MAX * 100:.0f}%)")
    for name, p in (("before", before), ("after", after)):
        if p is not None and p.spread > PROBE_SPREAD_MAX:
            out.append(f"a fixed kernel's timing {name} the run varied {p.spread * 100:.0f}% (p90-p10 over median; "
                       f"limit {PROBE_SPREAD_MAX * 100:.0f}%)")
    if before is not None and after is not None:
        drift = after.median_s / before.median_s - 1.0
        if abs(drift) > PROBE_DRIFT_MAX:
            out.append(f"a fixed kernel's median time changed {drift * 100:+.0f}% from before to after the run "
                       f"(limit {PROBE_DRIFT_MAX * 100:.0f}%)")
    return out
