"""Work, not seconds: what a piece of computation asks of each resource.

A :class:`Part` is one kernel class (``op``) running on one stream (``device``): GPU
FLOPs in one math dtype and HBM bytes, or host CPU FLOPs and DRAM bytes, or PCIe bytes
and synchronous round trips, or collective bytes over the GPU-GPU link. A :class:`Cost`
is a tuple of parts. Only :mod:`kvsim.costmodel.roofline` turns a cost into seconds.

Every numeric field may be a float or a numpy array (all broadcastable to one shape):
the simulator prices many steps at once that way (e.g. ``[k]`` consecutive decode steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal, Union

import numpy as np

Num = Union[float, np.ndarray]
Device = Literal["gpu", "cpu", "pcie", "link", "host"]

_NUMERIC = (
    "flops",
    "hbm_bytes",
    "cpu_flops",
    "dram_bytes",
    "pcie_bytes",
    "pcie_round_trips",
    "link_bytes",
    "launches",
    "tiles",
)


@dataclass(frozen=True, slots=True)
class Part:
    """Work of one component of a step.

    Attributes:
        name: component, e.g. ``"mlp"``, ``"attn_decode"``, ``"lsh_tables"``.
        op: op class whose efficiencies apply (see ``kvsim.hardware.spec.OP_CLASSES``).
        device: stream the part runs on: ``gpu``, ``cpu`` (host compute), ``pcie``,
            ``link`` (GPU-GPU collectives) or ``host`` (framework overhead only).
        dtype: math dtype of ``flops`` / ``cpu_flops`` (selects the peak FLOP/s).
        flops: GPU floating point operations (2 per multiply-add).
        hbm_bytes: bytes read + written in GPU memory.
        cpu_flops: host CPU operations.
        dram_bytes: bytes read + written in host DRAM.
        pcie_bytes: bytes over the GPU-host link (both directions summed).
        pcie_round_trips: synchronous host<->device round trips (latency-bound).
        link_bytes: bytes each GPU sends over the GPU-GPU link (collectives).
        launches: kernel launches / collectives / steps that pay ``overhead_s`` of ``op``.
        tiles: independent work units the kernels of this part split into (attention: one
            head x 128 query rows in prefill, one KV head of one sequence in decode),
            summed over its launches; each pays ``tile_s`` of ``op`` and ``tiles / launches``
            sets the wave floor (see :mod:`kvsim.costmodel.roofline`).
        group: GPUs taking part in a collective (the TP degree); 1 for everything else.
        overlap: parts sharing a non-None tag run concurrently across devices.
    """

    name: str
    op: str
    device: Device = "gpu"
    dtype: str = "bf16"
    flops: Num = 0.0
    hbm_bytes: Num = 0.0
    cpu_flops: Num = 0.0
    dram_bytes: Num = 0.0
    pcie_bytes: Num = 0.0
    pcie_round_trips: Num = 0.0
    link_bytes: Num = 0.0
    launches: Num = 0.0
    tiles: Num = 0.0
    group: int = 1
    overlap: str | None = None

    def scaled(self, k: Num) -> "Part":
        """This part repeated ``k`` times (every amount multiplied)."""
        return replace(self, **{f: getattr(self, f) * k for f in _NUMERIC})

    def plus(self, other: "Part") -> "Part":
        """Add the amounts of a part with the same identity (name, op, device, dtype, group, overlap)."""
        return replace(self, **{f: getattr(self, f) + getattr(other, f) for f in _NUMERIC})

    @property
    def key(self) -> tuple:
        return (self.name, self.op, self.device, self.dtype, self.group, self.overlap)


@dataclass(frozen=True, slots=True)
class Cost:
    """A bag of parts; ``+`` merges parts with the same identity."""

    parts: tuple[Part, ...] = field(default_factory=tuple)

    def __add__(self, other: "Cost") -> "Cost":
        merged: dict[tuple, Part] = {p.key: p for p in self.parts}
        for p in other.parts:
            merged[p.key] = merged[p.key].plus(p) if p.key in merged else p
        return Cost(tuple(merged.values()))

    def scaled(self, k: Num) -> "Cost":
        return Cost(tuple(p.scaled(k) for p in self.parts))

    def total(self, attr: str) -> Num:
        """Sum of one amount (e.g. ``"hbm_bytes"``) over all parts."""
        return sum((getattr(p, attr) for p in self.parts), 0.0)

    def by_name(self, name: str) -> Part | None:
        for p in self.parts:
            if p.name == name:
                return p
        return None

    @staticmethod
    def of(*parts: Part) -> "Cost":
        return Cost(()) + Cost(tuple(parts))


NUMERIC_FIELDS = _NUMERIC
assert set(_NUMERIC) <= {f.name for f in fields(Part)}


def indicator(x: Num) -> Num:
    """1.0 where ``x > 0`` else 0.0: keeps fixed work (weight reads, launches) out of empty
    steps. Array-safe; a scalar or 0-d input gives a float."""
    if isinstance(x, np.ndarray) and x.ndim:
        return (x > 0).astype(np.float64)
    return 1.0 if x > 0 else 0.0

