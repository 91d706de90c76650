"""The roofline rule of :mod:`kvsim.costmodel.roofline` for a fixed template of parts, vectorized.

:class:`CompiledRoofline` maps work ``[..., columns]`` to seconds ``[...]`` in a few numpy
operations; :class:`~kvsim.costmodel.roofline.Roofline` builds one per template (its
``compile``), so the simulator's fast pricer and the reference path share this arithmetic.
The rule and its refinements are documented in :mod:`kvsim.costmodel.roofline`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from kvsim.costmodel.cost import NUMERIC_FIELDS, Num, Part
from kvsim.costmodel.roofline_plan import ColumnPlan, columns_first, first_sum, pnorm_first, wave_floor_idle
from kvsim.costmodel.roofline_plan import pnorm_of_list as _pnorm


RESOURCES = ("gpu_compute", "hbm", "cpu_compute", "dram", "pcie", "link", "overhead")
# fields whose times take the max within a part ("body"), in RESOURCES order
BODY_RESOURCE_OF_FIELD = {"flops": "gpu_compute", "hbm_bytes": "hbm", "cpu_flops": "cpu_compute",
                          "dram_bytes": "dram", "pcie_bytes": "pcie", "link_bytes": "link"}
OVERHEAD_FIELDS = ("launches", "pcie_round_trips", "tiles")  # fixed seconds per unit, added to the body time
assert set(BODY_RESOURCE_OF_FIELD) | set(OVERHEAD_FIELDS) == set(NUMERIC_FIELDS)

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


class CompiledRoofline:
    """The roofline rule for a fixed template of parts, vectorized over work amounts.

    Attributes:
        parts: the template (identities, ops, devices, dtypes, overlap tags).
        columns: ``(part index, field)`` of each amount column, in the order :meth:`seconds`
            reads them; fields not listed are zero.
    """

    def __init__(self, roofline, parts: tuple[Part, ...], columns: tuple[Column, ...]):
        """``roofline``: the :class:`kvsim.costmodel.roofline.Roofline` compiling the template (not
        imported here: roofline imports this module)."""
        self.parts, self.columns = parts, columns
        self.column_of = {c: n for n, c in enumerate(columns)}
        assert len(self.column_of) == len(columns), "a (part, field) column is listed twice"
        ncol = len(columns)
        self._divisor = np.array([roofline.unit_divisor(parts[i], f) for i, f in columns])  # [ncol]
        self._divisor_first = self._divisor[:, None]  # [ncol, 1] (roofline_plan.columns_first)
        zero = ncol  # index of an all-zero column appended to the resource times
        # tiles join the body of an op class with tiles_in_body (their time overlaps the streams)
        in_body = [roofline._eff[p.op].tiles_in_body for p in parts]
        body = [[n for n, (i, f) in enumerate(columns) if i == part and (f in BODY_RESOURCE_OF_FIELD or (f == "tiles" and in_body[i]))]
                for part in range(len(parts))]
        over = [[n for n, (i, f) in enumerate(columns) if i == part and f in OVERHEAD_FIELDS and not (f == "tiles" and in_body[i])]
                for part in range(len(parts))]
        width = max([len(b) for b in body] + [1])
        # [P, width] body columns of each part, padded with its own first column (max(a, a) = a)
        self._body_grid = np.array([(b or [zero]) + [(b or [zero])[0]] * (width - len(b or [zero])) for b in body],
                                   dtype=np.intp)
        self._body_columns, self._overhead_columns = body, over
        # per part: (resource, column) of its body columns, in RESOURCES order (Timing.resource_s)
        self._named_body_columns = [sorted(((BODY_RESOURCE_OF_FIELD.get(columns[n][1], "overhead"), n) for n in b),
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
        # blended parts with the same p and as many body columns: one p-norm on [..., n] gathers
        same: dict[tuple[float, int], list] = {}
        for i, cols, q in self._blend:
            same.setdefault((q, len(cols)), []).append((i, cols))
        self._blend_groups = [(np.array([i for i, _ in g], dtype=np.intp),
                               [np.array([cols[j] for _, cols in g], dtype=np.intp) for j in range(n)], q)
                              for (q, n), g in same.items()]
        # wave floors with the same S * w and one scaled column each: one factor on [..., n] gathers
        waves: dict[float, list] = {}
        for w in self._wave:
            waves.setdefault(w[3] if len(w[0]) == 1 else None, []).append(w)
        self._wave_groups = [(np.array([w[0][0] for w in g]), np.array([w[1] for w in g]), np.array([w[2] for w in g]), sw)
                             for sw, g in waves.items() if sw is not None and len(g) > 1]
        self._wave_alone = [w for sw, g in waves.items() if sw is None or len(g) == 1 for w in g]
        # the hot path (decode runs): the same arithmetic on column views (roofline_plan)
        blend_of = {i: q for i, _, q in self._blend}
        self._plan = None
        if ColumnPlan.applies(body, blend_of, self._serial, self._groups, self._custom):
            self._plan = ColumnPlan(self._divisor, body, over, blend_of, {columns[w[1]][0]: w for w in self._wave})
            if self._groups:
                self._plan.set_groups(self._serial, self._groups)
        # one part whose p-norm spans more than two resources (decode attention with tiles_in_body),
        # which ColumnPlan does not take: the stages' operations on column views, in their order
        self._lone_blend = None
        if (self._plan is None and len(parts) == 1 and self._blend and len(self._blend[0][1]) > 2
                and not self._custom and not self._groups):
            q = self._blend[0][2]
            self._lone_blend = (np.array(self._blend[0][1], dtype=np.intp), q, 1.0 / q, list(over[0]))

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
        for scaled, nt, nl, sw in self._wave_groups:  # (element for element each part's factor)
            out[..., scaled] *= _wave_factor(amounts[..., nt], amounts[..., nl], sw)
        for scaled, nt, nl, sw in self._wave_alone:
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
            for parts, cols, p in self._blend_groups:  # (element for element the p-norm of each part)
                if parts.shape[0] == 1:
                    body[..., parts[0]] = _pnorm([times[..., c[0]] for c in cols], p)
                else:
                    body[..., parts] = _pnorm([times[..., c] for c in cols], p)
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
        if self._lone_blend is not None:
            return self._seconds_lone_blend(amounts)
        return self.total_seconds(self.part_seconds(self.resource_seconds(amounts), amounts))

    def _seconds_lone_blend(self, amounts: np.ndarray) -> np.ndarray:
        """:meth:`seconds` of one part whose body is a p-norm of three or more resources: the
        arithmetic of resource_seconds, _body_and_overhead and total_seconds of one part, bit for
        bit (elementwise the same operations; the p-norm's terms added left to right, the
        overheads summed first and then added), on one ``[..., n]`` gather of the body columns
        instead of ``n`` column views (fewer numpy calls: decode runs price tens of steps at once)."""
        if amounts.ndim == 1:  # one step: priced as a row of a [1, ncol] array, so equal to that row of a run
            return self._seconds_lone_blend(amounts[None, :])[0]
        cols, p, inv_p, over = self._lone_blend
        a, times = columns_first(amounts, self._divisor_first)  # [ncol, ...]
        for scaled, nt, nl, sw in self._wave_alone:
            if wave_floor_idle(a[nl], a[nt], sw):  # (every factor 1: nothing to scale)
                continue
            factor = _wave_factor(a[nt], a[nl], sw)
            for n in scaled:
                times[n] *= factor
        t = pnorm_first(times[cols], p, inv_p)  # (cols: [n] body columns -> a [n, ...] copy)
        if over:
            t += first_sum(times, over)
        return t

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


def _wave_factor(tiles: np.ndarray, launches: np.ndarray, sms_times_w: float) -> np.ndarray:
    """``max(1, S * w / (tiles / launches))``: how much slower a call's FLOPs run when its tiles
    do not fill the GPU (no tiles: no work, factor 1 times zero FLOPs)."""
    return np.maximum(1.0, sms_times_w * launches / np.maximum(tiles, 1e-9))
