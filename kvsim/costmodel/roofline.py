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
per-kernel overheads. Three refinements that measured kernels need (kvsim validate kernels),
each off unless the op class's efficiency sets it:

* ``blend = p``: the resource times combine as their p-norm ``(sum t^p)^(1/p)`` instead of
  their maximum (GEMMs and attention near the ridge point are slower than either bound);
* ``wave_tiles_per_sm = w``: the GPU-compute time is multiplied by
  ``max(1, S * w / (tiles / launches))`` on a GPU of ``S`` SMs (a call with too few tiles
  leaves SMs idle; scaling the HBM time the same way fitted the measured kernels worse);
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
against the three stages here): a change to the rule goes to both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from kvsim.costmodel.cost import NUMERIC_FIELDS, Cost, Num, Part
from kvsim.costmodel.roofline_plan import ColumnPlan
from kvsim.hardware import AllReduceFit, System
from kvsim.hardware.spec import LinkSpec

RESOURCES = ("gpu_compute", "hbm", "cpu_compute", "dram", "pcie", "link", "overhead")
# fields whose times take the max within a part ("body"), in RESOURCES order
BODY_RESOURCE_OF_FIELD = {"flops": "gpu_compute", "hbm_bytes": "hbm", "cpu_flops": "cpu_compute",
                          "dram_bytes": "dram", "pcie_bytes": "pcie", "link_bytes": "link"}
OVERHEAD_FIELDS = ("launches", "pcie_round_trips", "tiles")  # fixed seconds per unit, added to the body time
assert set(BODY_RESOURCE_OF_FIELD) | set(OVERHEAD_FIELDS) == set(NUMERIC_FIELDS)
_MAX_CACHED_TEMPLATES = 4096

Column = tuple[int, str]  # (part index in the template, numeric field name)


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


class CompiledRoofline:
    """The roofline rule for a fixed template of parts, vectorized over work amounts.

    Attributes:
        parts: the template (identities, ops, devices, dtypes, overlap tags).
        columns: ``(part index, field)`` of each amount column, in the order :meth:`seconds`
            reads them; fields not listed are zero.
    """

    def __init__(self, roofline: Roofline, parts: tuple[Part, ...], columns: tuple[Column, ...]):
        self.parts, self.columns = parts, columns
        self.column_of = {c: n for n, c in enumerate(columns)}
        assert len(self.column_of) == len(columns), "a (part, field) column is listed twice"
        ncol = len(columns)
        self._divisor = np.array([roofline.unit_divisor(parts[i], f) for i, f in columns])  # [ncol]
        zero = ncol  # index of an all-zero column appended to the resource times
        body = [[n for n, (i, f) in enumerate(columns) if i == part and f in BODY_RESOURCE_OF_FIELD]
                for part in range(len(parts))]
        over = [[n for n, (i, f) in enumerate(columns) if i == part and f in OVERHEAD_FIELDS]
                for part in range(len(parts))]
        width = max([len(b) for b in body] + [1])
        # [P, width] body columns of each part, padded with its own first column (max(a, a) = a)
        self._body_grid = np.array([(b or [zero]) + [(b or [zero])[0]] * (width - len(b or [zero])) for b in body],
                                   dtype=np.intp)
        self._body_columns, self._overhead_columns = body, over
        # per part: (resource, column) of its body columns, in RESOURCES order (Timing.resource_s)
        self._named_body_columns = [sorted(((BODY_RESOURCE_OF_FIELD[columns[n][1]], n) for n in b),
                                           key=lambda rc: RESOURCES.index(rc[0])) for b in body]
        width = max([len(o) for o in over] + [1])
        self._overhead_grid = np.array([o + [zero] * (width - len(o)) for o in over], dtype=np.intp)  # [P, width]
        self._has_overhead = any(over)
        self._needs_zero = any(not b for b in body) or (self._has_overhead and any(len(o) < width for o in over))
        self._serial = [i for i, p in enumerate(parts) if p.overlap is None]
        groups: dict[str, dict[str, list[int]]] = {}
        for i, p in enumerate(parts):
            if p.overlap is not None:
                groups.setdefault(p.overlap, {}).setdefault(p.device, []).append(i)
        self._groups = [list(devices.values()) for devices in groups.values()]  # [group][device] -> parts
        # the refinements of the module docstring, per part that uses them
        col = self.column_of
        sms = roofline.system.gpu.sm_count
        self._blend = []  # (part, body columns, p)
        self._wave = []  # (flops column, tiles column, launches column, S * w)
        self._custom = []  # (part, launches column, link column, latency_s, bus_bw, largest ring bytes per call)
        for i, p in enumerate(parts):
            e = roofline._eff[p.op]
            if e.blend is not None and len(body[i]) > 1:
                self._blend.append((i, body[i], float(e.blend)))
            cols = [col.get((i, f)) for f in ("tiles", "launches")]
            scaled = tuple(c for c in (col.get((i, "flops")),) if c is not None)
            if e.wave_tiles_per_sm is not None and None not in cols and scaled:
                self._wave.append((scaled, *cols, sms * float(e.wave_tiles_per_sm)))
            fit = roofline.allreduce_fit(p, "custom")
            cols = [col.get((i, f)) for f in ("launches", "link_bytes")]
            if fit is not None and None not in cols:
                ring = 2.0 * (p.group - 1) / p.group
                self._custom.append((i, *cols, fit.latency_s, fit.bus_bw_bytes_per_s, ring * (fit.max_message_bytes or np.inf)))
        self._refined = bool(self._blend or self._wave or self._custom)
        # the hot path (decode runs): the same arithmetic on column views (roofline_plan)
        blend_of = {i: q for i, _, q in self._blend}
        self._plan = None
        if ColumnPlan.applies(body, blend_of, self._serial, self._groups, self._custom):
            self._plan = ColumnPlan(self._divisor, body, over, blend_of, {columns[w[1]][0]: w for w in self._wave},
                                    chain=len(parts) == 1 and self._refined)
            if self._groups:
                self._plan.set_groups(self._serial, self._groups)

    # ------------------------------------------------------------------ the rule, in three stages
    def resource_seconds(self, amounts: np.ndarray) -> np.ndarray:
        """``[..., ncol]`` work -> ``[..., ncol (+1 zero column)]`` seconds of each column's resource
        (GPU compute after the wave floor)."""
        if not self._needs_zero:
            out = amounts / self._divisor
        else:
            out = np.empty(amounts.shape[:-1] + (len(self.columns) + 1,))
            np.divide(amounts, self._divisor, out=out[..., :-1])
            out[..., -1] = 0.0
        for scaled, nt, nl, sw in self._wave:
            factor = _wave_factor(amounts[..., nt], amounts[..., nl], sw)
            for n in scaled:
                out[..., n] *= factor
        return out

    def part_seconds(self, times: np.ndarray, amounts: np.ndarray | None = None) -> np.ndarray:
        """``[..., ncol]`` resource seconds -> ``[..., P]``: max (or p-norm) of the body resources +
        overheads; ``amounts`` (the work) is needed by measured custom all-reduce parts."""
        body, over = self._body_and_overhead(times)
        part_s = body if over is None else body + over
        if self._custom:
            part_s = self._with_custom_allreduce(part_s, amounts)
        return part_s

    def _with_custom_allreduce(self, part_s: np.ndarray, amounts: np.ndarray) -> np.ndarray:
        """Parts whose calls are small enough for vLLM's custom all-reduce take its time instead."""
        part_s = np.array(part_s, dtype=np.float64, copy=True)
        for i, nl, nb, latency_s, bus_bw, ring_max in self._custom:
            calls, ring = amounts[..., nl], amounts[..., nb]
            per_call = np.divide(ring, calls, out=np.full_like(ring, np.inf), where=calls > 0)
            part_s[..., i] = np.where(per_call <= ring_max, calls * latency_s + ring / bus_bw, part_s[..., i])
        return part_s

    def _body_and_overhead(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``[..., P]`` max (or p-norm) of each part's body resources, and the sum of its overheads
        (None: none)."""
        grid = self._body_grid
        if grid.shape[1] == 1:
            body = times[..., grid[:, 0]]
        elif grid.shape[1] == 2:
            body = np.maximum(times[..., grid[:, 0]], times[..., grid[:, 1]])
        else:
            body = times[..., grid].max(axis=-1)
        if self._blend:
            body = np.array(body, dtype=np.float64, copy=True)
            for i, cols, p in self._blend:
                body[..., i] = _pnorm([times[..., c] for c in cols], p)
        if not self._has_overhead:
            return body, None
        grid = self._overhead_grid
        over = times[..., grid[:, 0]]
        for j in range(1, grid.shape[1]):
            over = over + times[..., grid[:, j]]
        return body, over

    def total_seconds(self, part_s: np.ndarray) -> np.ndarray:
        """``[..., P]`` part seconds -> ``[...]``: serial parts add; an overlap group takes its
        slowest device, whose parts add."""
        if not self._groups:
            return part_s.sum(axis=-1)
        total = part_s[..., self._serial].sum(axis=-1)
        for devices in self._groups:
            per_device = [part_s[..., d].sum(axis=-1) for d in devices]
            total = total + (per_device[0] if len(per_device) == 1 else np.maximum.reduce(per_device))
        return total

    def seconds(self, amounts: np.ndarray) -> np.ndarray:
        """Seconds ``[...]`` of work ``amounts`` ``[..., ncol]`` (columns as :attr:`columns`)."""
        plan = self._plan
        if plan is not None and (plan.vector or amounts.ndim == 1):
            return plan.seconds(amounts)
        return self.total_seconds(self.part_seconds(self.resource_seconds(amounts), amounts))

    # ------------------------------------------------------------------ a Cost of this template
    def timing(self, parts: Sequence[Part]) -> Timing:
        """The :class:`Timing` of ``parts`` (same template; amounts scalars or broadcastable arrays)."""
        if not parts:
            return Timing(0.0, ())
        values = [getattr(parts[i], f) for i, f in self.columns]
        shape = np.broadcast_shapes(*(np.shape(v) for v in values))
        if shape:
            amounts = np.empty(shape + (len(values),))
            for n, v in enumerate(values):
                amounts[..., n] = v
        else:
            amounts = np.array(values, dtype=np.float64).reshape(len(values))
        times = self.resource_seconds(amounts)
        body, over = self._body_and_overhead(times)
        part_s = body if over is None else body + over
        if self._custom:
            part_s = self._with_custom_allreduce(part_s, amounts)
        total = self.total_seconds(part_s)
        nparts = len(parts)
        # what the bound compares: each resource's mean over the amounts' shape
        column_mean = times.reshape(-1, times.shape[-1]).mean(axis=0).tolist()
        if over is not None:
            flat_over = over.reshape(-1, nparts)
            over_mean, over_nonzero = flat_over.mean(axis=0).tolist(), (flat_over != 0).any(axis=0).tolist()
        if shape:
            column_s = [times[..., n] for n in range(times.shape[-1])]
            part_list = [part_s[..., i] for i in range(nparts)]
            over_list = None if over is None else [over[..., i] for i in range(nparts)]
        else:  # plain floats, as for scalar work
            column_s, part_list, total = times.tolist(), part_s.tolist(), float(total)
            over_list = None if over is None else over.tolist()
        out = []
        for i, p in enumerate(parts):
            named = self._named_body_columns[i]
            resource_s: dict[str, Num] = {name: column_s[n] for name, n in named}
            bound, most = "none", -np.inf
            for name, n in named:
                if column_mean[n] > most:
                    bound, most = name, column_mean[n]
            if over is not None and over_nonzero[i]:
                resource_s["overhead"] = over_list[i]
                if over_mean[i] > most:
                    bound = "overhead"
            out.append(PartTime(p.name, p.op, p.device, part_list[i], bound, resource_s))
        return Timing(total, tuple(out))


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


def _wave_factor(tiles: np.ndarray, launches: np.ndarray, sms_times_w: float) -> np.ndarray:
    """``max(1, S * w / (tiles / launches))``: how much slower a call's FLOPs run when its tiles
    do not fill the GPU (no tiles: no work, factor 1 times zero FLOPs)."""
    return np.maximum(1.0, sms_times_w * launches / np.maximum(tiles, 1e-9))


def _pnorm(times: list, p: float):
    """``(sum t^p)^(1/p)``, computed as ``top * (sum (t/top)^p)^(1/p)`` (no overflow; 0 when all are 0)."""
    if len(times) == 2:
        a, b = times
        top, low = np.maximum(a, b), np.minimum(a, b)
        return top * (1.0 + (low / np.maximum(top, 1e-300)) ** p) ** (1.0 / p)
    top = times[0]
    for t in times[1:]:
        top = np.maximum(top, t)
    safe = np.maximum(top, 1e-300)
    return top * sum((t / safe) ** p for t in times) ** (1.0 / p)


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
