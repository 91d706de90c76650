"""The only place that turns :class:`~kvsim.costmodel.cost.Cost` (work) into seconds.

For one part on op class ``c`` (efficiencies ``eff[c]``), each resource gives a time:

* GPU compute   ``flops / (peak_gpu[dtype] * eff[c].compute)``
* HBM           ``hbm_bytes / (hbm_bw * eff[c].memory)``
* CPU compute   ``cpu_flops / (peak_cpu[dtype] * sockets * eff[c].compute)``
* DRAM          ``dram_bytes / (dram_bw * sockets * eff[c].memory)``
* PCIe          ``pcie_bytes / (pcie_bw * eff.pcie.memory)``
* GPU-GPU link  ``link_bytes / (link_bw * eff.collective.memory)``

and the part takes ``max(resource times) + launches * eff[c].overhead_s +
round_trips * (2 * pcie_latency + eff.pcie.overhead_s)``: the classic roofline
(Williams et al., CACM 2009) per kernel with separate compute and memory efficiencies
(llm-analysis, GenZ ``ceff/meff``; SPECS.md "Takeaways") plus LLMCompass-style fixed
per-kernel overheads.

Parts without an ``overlap`` tag run one after another. Parts sharing a tag run
concurrently: per device their times add, and the group takes the slowest device
(e.g. MagicPIG v0.2 builds hash tables on the CPU while the GPU prefills).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from kvsim.costmodel.cost import Cost, Num, Part
from kvsim.hardware import System

RESOURCES = ("gpu_compute", "hbm", "cpu_compute", "dram", "pcie", "link", "overhead")


@dataclass(frozen=True)
class PartTime:
    """Seconds of one part, and the resource that bounds it."""

    name: str
    op: str
    device: str
    seconds: Num
    bound: str
    resource_s: dict[str, Num]


@dataclass(frozen=True)
class Timing:
    total_s: Num
    parts: tuple[PartTime, ...]

    def seconds_of(self, name: str) -> Num:
        return sum((p.seconds for p in self.parts if p.name == name), 0.0)


class Roofline:
    """Roofline of one system: call it on a cost to get a :class:`Timing`."""

    def __init__(self, system: System):
        self.system = system
        g, eff = system.gpu, system.eff
        self._hbm_bw = g.memory_bw_bytes_per_s
        self._dram_bw = system.host_dram_bw_bytes_per_s
        self._pcie_bw = system.gpu_host_link.bw_bytes_per_s * eff.pcie.memory
        self._link_bw = system.gpu_gpu_link.bw_bytes_per_s * eff.collective.memory
        self._rtt_s = 2.0 * system.gpu_host_link.latency_s + eff.pcie.overhead_s
        self._eff = {op: eff.of(op) for op in type(eff).model_fields if op != "source"}

    def part_resource_times(self, p: Part) -> dict[str, Num]:
        e = self._eff[p.op]
        s = self.system
        out: dict[str, Num] = {}
        if _nonzero(p.flops):
            out["gpu_compute"] = p.flops / (s.gpu_peak_flops_per_s(p.dtype) * e.compute)
        if _nonzero(p.hbm_bytes):
            out["hbm"] = p.hbm_bytes / (self._hbm_bw * e.memory)
        if _nonzero(p.cpu_flops):
            out["cpu_compute"] = p.cpu_flops / (s.host_peak_flops_per_s(p.dtype) * e.compute)
        if _nonzero(p.dram_bytes):
            out["dram"] = p.dram_bytes / (self._dram_bw * e.memory)
        if _nonzero(p.pcie_bytes):
            out["pcie"] = p.pcie_bytes / self._pcie_bw
        if _nonzero(p.link_bytes):
            out["link"] = p.link_bytes / self._link_bw
        over = 0.0
        if _nonzero(p.launches):
            over = over + p.launches * e.overhead_s
        if _nonzero(p.pcie_round_trips):
            over = over + p.pcie_round_trips * self._rtt_s
        if _nonzero(over):
            out["overhead"] = over
        return out

    def part_time(self, p: Part) -> PartTime:
        rt = self.part_resource_times(p)
        body = [v for k, v in rt.items() if k != "overhead"]
        seconds: Num = 0.0
        if body:
            seconds = body[0] if len(body) == 1 else np.maximum.reduce(np.broadcast_arrays(*body))
        seconds = seconds + rt.get("overhead", 0.0)
        return PartTime(p.name, p.op, p.device, seconds, _bound(rt), rt)

    def __call__(self, cost: Cost) -> Timing:
        times = [self.part_time(p) for p in cost.parts]
        total: Num = 0.0
        groups: dict[str, dict[str, Num]] = defaultdict(lambda: defaultdict(float))
        for p, t in zip(cost.parts, times):
            if p.overlap is None:
                total = total + t.seconds
            else:
                groups[p.overlap][p.device] = groups[p.overlap][p.device] + t.seconds
        for per_device in groups.values():
            vals = list(per_device.values())
            total = total + (vals[0] if len(vals) == 1 else np.maximum.reduce(np.broadcast_arrays(*vals)))
        return Timing(total, tuple(times))


def roofline(cost: Cost, system: System) -> Timing:
    """Seconds of ``cost`` on ``system`` (see module docstring)."""
    return Roofline(system)(cost)


def _nonzero(x: Num) -> bool:
    if isinstance(x, np.ndarray):
        return bool(np.any(x))
    return x != 0


def _bound(rt: dict[str, Num]) -> str:
    if not rt:
        return "none"
    return max(rt, key=lambda k: float(np.mean(rt[k])))
