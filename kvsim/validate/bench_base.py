"""What the ``bench_*`` modules build kernels from (imports torch): :class:`Bench` (device,
dtypes, model shapes, buffer helpers), :class:`Kernel` (work + a factory of the callable to
time), rotating input sets, and :func:`float_parts` (a kvsim cost as plain-float parts).
:mod:`kvsim.validate.runner` collects the kernels and times them.

Rotating buffers: each kernel cycles through enough distinct input sets that one sweep
touches at least ``flush_bytes`` (256 MiB: several times this VM's effective last-level
cache, ~64-96 MiB measured; 5x an H100's 50 MiB L2), so memory-bound kernels stream from
DRAM/HBM as they do inside a model, not from cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.deployment import Deployment
from kvsim.models import ModelSpec

MiB = 2**20
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Settings:
    """Timing knobs of a run (see :func:`kvsim.validate.runner.time_calls`) and the rotating-set size."""

    quick: bool
    warmup: int
    repeats: int
    min_sample_s: float
    flush_bytes: int

    @staticmethod
    def make(quick: bool, device: str) -> Settings:
        if quick:
            return Settings(True, warmup=1, repeats=5, min_sample_s=0.004, flush_bytes=256 * MiB)
        return Settings(False, warmup=3, repeats=15, min_sample_s=0.02, flush_bytes=256 * MiB)


@dataclass
class Kernel:
    """One microbenchmark: its work (parts) and a factory of the callable to time."""

    name: str
    group: str
    op: str
    parts: list[Part]
    make: Callable[[], Callable[[], object]]
    shape: dict = field(default_factory=dict)
    on_host: bool = False  # runs on the CPU even in a CUDA run (MagicPIG CPU path)
    fit: bool = True
    note: str = ""


class Bench:
    """Device, dtypes, model shapes and buffer helpers shared by the ``bench_*`` modules."""

    def __init__(self, device: str, model: ModelSpec, settings: Settings, dtypes: list[str], system, seed: int = 0):
        self.device = device
        self.model = model
        self.s = settings
        self.dtypes = dtypes
        self.system = system  # nominal local System (for kvsim work formulas via Deployment)
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self._pools: dict = {}

    @property
    def quick(self) -> bool:
        return self.s.quick

    def dep(self, dtype: str) -> Deployment:
        """A 1-layer-agnostic deployment of the model at ``dtype`` (kvsim's work formulas)."""
        return Deployment(system=self.system, model=self.model, weight_dtype=dtype, kv_dtype=dtype, act_dtype=dtype)

    def rand(self, shape, dtype, device=None, scale: float = 1.0) -> torch.Tensor:
        t = torch.empty(shape, dtype=dtype, device=device or self.device)
        if dtype.is_floating_point:
            t.uniform_(-scale, scale)
        else:
            t.random_(0, 127)
        return t

    def n_sets(self, set_bytes: float) -> int:
        return max(1, min(4096, math.ceil(self.s.flush_bytes / max(set_bytes, 1.0))))

    def sets(self, make_one: Callable[[], tuple], set_bytes: float) -> list[tuple]:
        """Enough independent input sets that one sweep touches ``flush_bytes``."""
        return [make_one() for _ in range(self.n_sets(set_bytes))]

    def pool_sets(self, shapes: list[tuple], dtype: str) -> list[tuple]:
        """Like :meth:`sets` for float tensors of one dtype, carved from a shared pool (no
        per-kernel allocation): views at distinct offsets of a ``2 * flush_bytes`` buffer."""
        tdt = DTYPES[dtype]
        esz = torch.empty((), dtype=tdt).element_size()
        sizes = [math.prod(s) for s in shapes]
        per = sum(-(-n // 16) * 16 for n in sizes)  # 64-byte aligned for fp32
        n = self.n_sets(per * esz)
        pool = self._pool(tdt)
        if n * per > pool.numel():
            return [tuple(self.rand(s, tdt, scale=0.05) for s in shapes)]
        out, off = [], 0
        for _ in range(n):
            views = []
            for s, k in zip(shapes, sizes):
                views.append(pool[off:off + k].view(s))
                off += -(-k // 16) * 16
            out.append(tuple(views))
        return out

    def _pool(self, tdt) -> torch.Tensor:
        if tdt not in self._pools:
            esz = torch.empty((), dtype=tdt).element_size()
            self._pools[tdt] = self.rand((2 * self.s.flush_bytes // esz,), tdt, scale=0.05)
        return self._pools[tdt]

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def rotating(fn: Callable, sets: list[tuple]) -> Callable[[], object]:
    """A zero-argument callable that calls ``fn(*sets[i])`` with i cycling."""
    it = [0]
    n = len(sets)

    def call():
        i = it[0]
        it[0] = i + 1 if i + 1 < n else 0
        return fn(*sets[i])

    return call


def float_parts(cost: Cost, launches: float | None = None) -> list[Part]:
    """``cost``'s parts with ``flops``, ``hbm_bytes`` and ``launches`` as floats (``launches``
    replaced when given): the work of one timed kernel."""
    parts = list(cost.parts)
    if launches is not None:
        parts = [replace(p, launches=launches) for p in parts]
    return [replace(p, **{f: float(getattr(p, f)) for f in ("flops", "hbm_bytes", "launches")}) for p in parts]
