"""The only place that turns :class:`~kvsim.costmodel.cost.Cost` (work) into seconds.

For one part on op class ``c`` (efficiencies ``eff[c]``), each resource gives a time:

* GPU compute   ``flops / (peak_gpu[dtype] * eff[c].compute)``
* HBM           ``hbm_bytes / (hbm_bw * eff[c].memory)``
* CPU compute   ``cpu_flops / (peak_cpu[dtype] * sockets * eff[c].compute)``
* DRAM          ``dram_bytes / (dram_bw * sockets * eff[c].memory)``
* PCIe          ``pcie_bytes / (pcie_bw * eff.pcie.memory)``
* GPU-GPU link  ``link_bytes / (link_bw(group) * eff.collective.memory)`` (``LinkSpec.collective_bw_bytes_per_s``)
* KV link       ``bytes / (lanes * link_bw)`` between prefill and decode instances (:func:`link_transfer_seconds`)

and the part takes ``max(resource times) + launches * eff[c].overhead_s +
tiles * eff[c].tile_s + round_trips * (2 * pcie_latency + eff.pcie.overhead_s)``: the classic
roofline (Williams et al., CACM 2009) per kernel with separate compute and memory efficiencies
(llm-analysis, GenZ ``ceff/meff``; SPECS.md "Takeaways") plus LLMCompass-style fixed
per-kernel overheads. Four refinements that measured kernels need (kvsim validate kernels),
each off unless the op class's efficiency sets it:

* ``blend = p``: the resource times combine as their p-norm ``(sum t^p)^(1/p)`` instead of
  their maximum (GEMMs and attention near the ridge point are slower than either bound);
* ``wave_tiles_per_sm = w``: the GPU-compute time is multiplied by
  ``max(1, S * w / (tiles / launches))`` on a GPU of ``S`` SMs (a call with too few tiles
  leaves SMs idle; scaling the HBM time the same way fitted the measured kernels worse);
* ``tiles_in_body``: the tiles' time (``tiles * tile_s``) joins the resource times of the max
  (or p-norm) instead of being added after it. A paged decode kernel is a stream of (sequence,
  KV head) tiles (FlashDecoding / FlashAttention-2 split-KV decode, Dao et al. 2023): a tile's
  fixed work (setup, softmax and split-KV reduction, output write) runs on some SMs while other
  tiles stream KV from HBM, so with many tiles (decode at large batch and short context, where
  that work is of the order of the KV read) it overlaps the stream instead of adding to it;
* measured all-reduce costs (``System.allreduce``) replace the link's datasheet for a
  ``collective`` part of group size ``g``: NCCL's ``latency + ring_bytes / bus_bw``, or vLLM's
  custom all-reduce for messages up to its ``max_message_bytes`` when the GPUs are NVLink peers
  or ``g == 2`` (vLLM disables it on more than two PCIe-only GPUs:
  vllm/distributed/device_communicators/custom_all_reduce.py).

Parts without an ``overlap`` tag run one after another. Parts sharing a tag run
concurrently: per device their times add, and the group takes the slowest device
(e.g. MagicPIG v0.2 builds hash tables on the CPU while the GPU prefills).

One implementation of this rule: :meth:`Roofline.compile` fixes a template of parts
(identities, ops, devices, dtypes, overlap tags) and an ordered list of the (part, field)
amounts it reads, and gives a :class:`CompiledRoofline` that maps work ``[..., columns]``
to seconds ``[...]`` in a few vectorized numpy operations. ``Roofline.__call__`` compiles
the template of its cost (cached) and evaluates it on the cost's amounts, so the simulator's
fast pricer, which hands summed work to a compiled template, follows any change here.
``CompiledRoofline.seconds`` (the hot path) runs the same operations on column views
(:mod:`kvsim.costmodel.roofline_plan`; ``tests/test_roofline.py`` checks them bit for bit
against the three stages of :mod:`kvsim.costmodel.compiled`): a change to the rule goes to both.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from kvsim.costmodel.compiled import (  # noqa: F401  (re-exported: the rule's vocabulary)
    BODY_RESOURCE_OF_FIELD,
    OVERHEAD_FIELDS,
    RESOURCES,
    Column,
    CompiledRoofline,
    PartTime,
    Timing,
)
from kvsim.costmodel.cost import NUMERIC_FIELDS, Cost, Num, Part
from kvsim.hardware import AllReduceFit, System
from kvsim.hardware.spec import LinkSpec

_MAX_CACHED_TEMPLATES = 4096


class Roofline:
    """Roofline of one system: call it on a cost to get a :class:`Timing`."""

    def __init__(self, system: System):
        self.system = system
        g, eff = system.gpu, system.eff
        self._hbm_bw = g.memory_bw_bytes_per_s
        self._dram_bw = system.host_dram_bw_bytes_per_s
        self._pcie_bw = system.gpu_host_link.bw_bytes_per_s * eff.pcie.memory
        self._link_eff = eff.collective.memory
        self._round_trip_s = 2.0 * system.gpu_host_link.latency_s + eff.pcie.overhead_s
        self._eff = {op: eff.of(op) for op in type(eff).model_fields if op != "source"}
        self._templates: dict[tuple, CompiledRoofline] = {}

    def allreduce_fit(self, part: Part, algo: str) -> AllReduceFit | None:
        """The measured all-reduce of ``algo`` for a collective part's group size, if any (the
        custom algorithm only where vLLM would use it: NVLink peers or two GPUs)."""
        if part.op != "collective" or part.group < 2:
            return None
        if algo == "custom" and not (self.system.nvlink_peers or part.group == 2):
            return None
        for fit in self.system.allreduce:
            if fit.algo == algo and fit.group == part.group:
                return fit
        return None

    def unit_divisor(self, part: Part, field: str) -> float:
        """One unit of ``field`` of ``part`` takes ``1 / unit_divisor`` seconds of its resource:
        the rate (FLOP/s, bytes/s) of a body resource, ``1 / seconds`` per launch, tile or round trip."""
        e, s = self._eff[part.op], self.system
        nccl = self.allreduce_fit(part, "nccl")
        if nccl is not None and field in ("link_bytes", "launches"):
            return nccl.bus_bw_bytes_per_s if field == "link_bytes" else 1.0 / nccl.latency_s if nccl.latency_s else np.inf
        if field == "flops":
            return s.gpu_peak_flops_per_s(part.dtype) * e.compute
        if field == "hbm_bytes":
            return self._hbm_bw * e.memory
        if field == "cpu_flops":
            return s.host_peak_flops_per_s(part.dtype) * e.compute
        if field == "dram_bytes":
            return self._dram_bw * e.memory
        if field == "pcie_bytes":
            return self._pcie_bw
        if field == "link_bytes":  # a full-mesh link gives a group of g GPUs (g - 1) peer links
            return self.system.gpu_gpu_link.collective_bw_bytes_per_s(part.group) * self._link_eff
        per_unit_s = {"launches": e.overhead_s, "tiles": e.tile_s}.get(field, self._round_trip_s)
        return 1.0 / per_unit_s if per_unit_s else np.inf
        # (amount / inf = 0: a free launch)

    def compile(self, parts: Sequence[Part], columns: Iterable[Column] | None = None) -> "CompiledRoofline":
        """The rule for the template ``parts`` (their amounts are not read), on work laid out in
        ``columns`` (default: the fields that are nonzero in ``parts``)."""
        parts = tuple(parts)
        if columns is None:
            columns = [(i, f) for i, p in enumerate(parts) for f in NUMERIC_FIELDS if _nonzero(getattr(p, f))]
        return CompiledRoofline(self, parts, tuple(columns))

    def _template(self, cost: Cost) -> "CompiledRoofline":
        used = tuple((p.key, tuple(f for f in NUMERIC_FIELDS if _nonzero(getattr(p, f)))) for p in cost.parts)
        compiled = self._templates.get(used)
        if compiled is None:
            if len(self._templates) >= _MAX_CACHED_TEMPLATES:
                self._templates.clear()
            columns = [(i, f) for i, (_, fields) in enumerate(used) for f in fields]
            compiled = self._templates[used] = CompiledRoofline(self, cost.parts, tuple(columns))
        return compiled

    def __call__(self, cost: Cost) -> Timing:
        return self._template(cost).timing(cost.parts)

    def seconds(self, cost: Cost) -> Num:
        """``self(cost).total_s`` without the per-part breakdown (the simulator's hot paths)."""
        if not cost.parts:
            return 0.0
        compiled = self._template(cost)
        values = [getattr(cost.parts[i], f) for i, f in compiled.columns]
        if not any(v.__class__ is np.ndarray for v in values):  # scalars (e.g. prefill chunks' sums)
            return float(compiled.seconds(np.array(values, dtype=np.float64)))
        shape = np.broadcast_shapes(*(np.shape(v) for v in values))
        if not shape:
            return float(compiled.seconds(np.array(values, dtype=np.float64)))
        amounts = np.empty(shape + (len(values),))
        for n, v in enumerate(values):
            amounts[..., n] = v
        return compiled.seconds(amounts)

    @staticmethod
    def storage_seconds(nbytes: float, bw_bytes_per_s: float, latency_s: float) -> float:
        """Seconds of one sequential transfer of ``nbytes`` to or from a storage device (an NVMe
        SSD of :class:`kvsim.hardware.StorageSpec`): ``latency_s + nbytes / bw_bytes_per_s``, the
        datasheet's sequential bandwidth with no efficiency factor (0 for no bytes)."""
        if nbytes <= 0:
            return 0.0
        return float(latency_s + nbytes / bw_bytes_per_s)

    def part_resource_times(self, p: Part) -> dict[str, Num]:
        """Seconds of each resource ``p`` uses (``"overhead"``: launches and round trips)."""
        return self.part_time(p).resource_s

    def part_time(self, p: Part) -> PartTime:
        return self(Cost((p,))).parts[0]

    @staticmethod
    def separable(parts_a: Iterable[Part], parts_b: Iterable[Part]) -> bool:
        """Is the time of ``a + b`` the time of ``a`` plus the time of ``b``? (No part identity
        and no overlap tag in common: the parts of one never merge or overlap with the other's.)"""
        parts_a, parts_b = list(parts_a), list(parts_b)
        keys = {p.key for p in parts_a} & {p.key for p in parts_b}
        tags = {p.overlap for p in parts_a if p.overlap is not None} & {p.overlap for p in parts_b}
        return not keys and not tags


def roofline(cost: Cost, system: System) -> Timing:
    """Seconds of ``cost`` on ``system`` (see module docstring)."""
    return Roofline(system)(cost)


def link_transfer_seconds(nbytes: Num, link: LinkSpec, lanes: int = 1) -> Num:
    """Seconds ``nbytes`` occupy ``lanes`` parallel links of ``link`` (one per GPU): ``nbytes / (lanes * bw)``.

    Used for the KV of a finished prefill sent to a decode instance (:mod:`kvsim.plan.disagg`);
    the one-way ``link.latency_s`` is added once per transfer by the caller (it delays the
    arrival but does not occupy the link). ``bw`` is the datasheet rate per direction
    (``LinkSpec.bw_bytes_per_s``; no efficiency: no measured network fraction is shipped).
    Example: 1 GiB over one NDR port (50 GB/s): 1073741824 / 50e9 = 0.02147 s."""
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    return nbytes / (lanes * link.bw_bytes_per_s)


def _nonzero(x: Num) -> bool:
    if x.__class__ is np.ndarray:
        return bool(x.any())  # (the method: no numpy dispatch wrapper on a hot path)
    return x != 0


def transfer_seconds(n_bytes: Num, bw_bytes_per_s: float) -> Num:
    """Seconds to move ``n_bytes`` over a path the System does not describe (an NVMe drive,
    a network link the user names): ``n_bytes / bw_bytes_per_s``. The bandwidth given is the
    achieved one (no efficiency factor, no latency). Used by :mod:`kvsim.reuse` (CacheBlend's
    SSD tier, CacheGen's network link)."""
    if not bw_bytes_per_s > 0:
        raise ValueError(f"bandwidth must be > 0 bytes/s, got {bw_bytes_per_s}")
    return n_bytes / bw_bytes_per_s
