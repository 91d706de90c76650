"""The hot path of :class:`kvsim.costmodel.roofline.CompiledRoofline`: its rule evaluated on
the work's columns, with the numpy calls of one evaluation kept few (the fast simulator
prices every run of decode steps here, mostly tens of steps at a time). Work ``[..., ncol]`` is
divided into seconds column-first (``[ncol, ...]``, :func:`columns_first`), so that every later
operation on a column or a gather of columns runs on contiguous memory.

It is the same arithmetic as ``CompiledRoofline``'s three stages, operation for operation, so
the seconds are bit-identical: per part, the body resources' max (or p-norm, after the wave
floor on GPU FLOPs) plus its overheads (summed first, as the stages do), parts added left to right (numpy's sum over at most 7
parts does the same). The p-norms of several parts are computed together on ``[n, ...]``
arrays; one step (a row) is priced on Python floats, its powers on numpy elements (numpy's
vectorized power rounds differently from the C library's). P-norms of more than two resources
(decode attention with its tiles in the body) are computed as the stages compute them
(:func:`pnorm_first`), on ``[n, parts, ...]`` gathers of parts with the same p and width; a row is then
priced as a ``[1, ncol]`` array. Not used with overlap groups, measured custom all-reduce parts,
or a lone part with a p-norm of more than two resources (the compiled roofline's own path).
"""

from __future__ import annotations

import numpy as np

MAX_PARTS = 7  # numpy adds at most this many parts left to right (more: pairwise)


def pnorm_of_list(times: list, p: float):
    """``(sum t^p)^(1/p)`` of ``n`` arrays. Two arrays: ``top * (1 + (low/top)^p)^(1/p)`` (no
    overflow; 0 when both are 0). More: :func:`pnorm_first` of the arrays stacked on a first axis
    (the roofline's stages and the plan both call these, so their p-norms are the same operations)."""
    if len(times) == 2:
        a, b = times
        top, low = np.maximum(a, b), np.minimum(a, b)
        return top * (1.0 + (low / np.maximum(top, 1e-300)) ** p) ** (1.0 / p)
    return pnorm_first(np.stack(np.broadcast_arrays(*times), dtype=np.float64), p, 1.0 / p)


# p-norms of more than two resources with p at most this are computed as (sum t^p)^(1/p): seconds
# of work are >= 1e-30 s or 0, so t^p neither underflows nor overflows (1e-30^8 = 1e-240); above it,
# as top * (sum (t/top)^p)^(1/p)
DIRECT_P_MAX = 8.0


def pnorm_rows(t: np.ndarray, p: float, inv_p: float) -> np.ndarray:
    """``(sum t^p)^(1/p)`` of ``n > 2`` arrays stacked on the last axis of ``t`` (``[..., n]``,
    a contiguous copy it may change): :func:`pnorm_first` of the terms' axis moved first (a view)."""
    return pnorm_first(t.transpose((t.ndim - 1,) + tuple(range(t.ndim - 1))), p, inv_p)


def pnorm_first(t: np.ndarray, p: float, inv_p: float) -> np.ndarray:
    """``(sum t^p)^(1/p)`` of ``n > 2`` arrays stacked on the first axis of ``t`` (``[n, ...]``,
    a copy it may change): terms added left to right (``0 + t0 == t0``); ``inv_p`` is ``1.0 / p``.
    Computed directly for ``p <= DIRECT_P_MAX``, else normalized by the largest term (0 when all
    are 0 either way)."""
    if p <= DIRECT_P_MAX:
        t **= p
        out = t[0] + t[1]
        for j in range(2, t.shape[0]):
            out += t[j]
        out **= inv_p
        return out
    top = np.maximum.reduce(t, axis=0)  # (max is exact in any order)
    t /= np.maximum(top, 1e-300)
    t **= p
    out = t[0] + t[1]
    for j in range(2, t.shape[0]):
        out += t[j]
    out **= inv_p
    out *= top
    return out


def first_sum(times: np.ndarray, cols) -> np.ndarray:
    """``times[cols[0]] + times[cols[1]] + ...`` of column-first ``times`` (``[ncol, ...]``), added
    left to right as the stages add a part's overheads (one column: a view of it)."""
    out = times[cols[0]]
    for c in cols[1:]:
        out = out + times[c]
    return out


def columns_first(amounts: np.ndarray, divisor_first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(amounts [ncol, ...] (a view), times [ncol, ...])``: work ``[..., ncol]`` with its columns
    moved to the first axis, and its seconds per resource ``amounts / divisor`` there, contiguous
    (each column's seconds one contiguous block: the operations on columns that follow run on
    contiguous arrays instead of strided column views). ``divisor_first``: ``[ncol, 1]``."""
    if amounts.ndim == 2:
        a = amounts.T
    else:  # (np.moveaxis costs ~7 us in argument checks)
        a = amounts.transpose((amounts.ndim - 1,) + tuple(range(amounts.ndim - 1)))
        divisor_first = divisor_first.reshape(divisor_first.shape + (1,) * (a.ndim - 2))
    times = np.empty(a.shape)
    np.divide(a, divisor_first, out=times)
    return a, times


def column_index(cols: list[int]):
    """Columns ``cols`` as an index of the last axis: a slice when they are evenly spaced (a view,
    no gather), else an ``intp`` array."""
    step = cols[1] - cols[0] if len(cols) > 1 else 1
    if step > 0 and all(b - a == step for a, b in zip(cols, cols[1:])):
        return slice(cols[0], cols[-1] + 1, step)
    return np.array(cols, dtype=np.intp)


def wave_floor_idle(launches: np.ndarray, tiles: np.ndarray, sms_times_w: float) -> bool:
    """True when no row's wave factor ``max(1, S w launches / max(tiles, 1e-9))`` exceeds 1, so that
    multiplying by it would change nothing: decided from the largest launches over the fewest tiles
    (rounding is monotone, so ``fl(fl(S w l) / t)`` of every row is at most that of the extremes)."""
    if launches.size == 0:
        return True
    return sms_times_w * float(launches.max()) / max(float(tiles.min()), 1e-9) <= 1.0


class ColumnPlan:
    """Args: ``divisor`` ``[ncol]`` (work per second of each column's resource); per part its
    body columns ``body`` and overhead columns ``over``; ``blend`` part -> p (parts whose two body
    resources combine as a p-norm); ``wave`` part -> (flops columns, tiles column, launches
    column, S * w)."""

    def __init__(self, divisor: np.ndarray, body: list, over: list, blend: dict, wave: dict) -> None:
        self.divisor, self.divisor_list = divisor, divisor.tolist()
        self.divisor_first = divisor[:, None]  # [ncol, 1] (columns_first)
        pairs = [i for i in range(len(body)) if i in blend and len(body[i]) == 2]
        slot = {i: j for j, i in enumerate(pairs)}  # part -> its p-norm among those computed together
        # p-norms of n > 2 resources: parts with the same (p, n) together, as the stages group them
        same: dict[tuple[float, int], list[int]] = {}
        for i in range(len(body)):
            if i in blend and len(body[i]) > 2:
                same.setdefault((float(blend[i]), len(body[i])), []).append(i)
        self.wide = [(np.array(g, dtype=np.intp), np.array([body[i] for i in g], dtype=np.intp), q, 1.0 / q)
                     for (q, n), g in same.items()]  # (parts, [parts, n] their body columns, p, 1 / p)
        self.wide_rows = [(cols.tolist(), q, inv_q) for _, cols, q, inv_q in self.wide]  # (for row())
        # (for seconds(): the same groups with [n, parts] columns, so that a gather is [n, parts, ...])
        self.wide_first = [(parts, np.ascontiguousarray(cols.T), q, inv_q) for parts, cols, q, inv_q in self.wide]
        wide_of = {i: (w, m) for w, (parts, _, _, _) in enumerate(self.wide) for m, i in enumerate(parts.tolist())}
        # a group whose every part has a wave floor on one body column, at the same place in each
        # part's body and with the same S * w, takes its floors on the gathered [..., parts, n] body
        # (one factor [..., parts] for the group; elementwise the same operations as on the columns)
        self.wide_waves, fused = [], set()
        for parts, cols, _, _ in self.wide:
            ws = [wave.get(i) for i in parts.tolist()]
            ok = all(w is not None and len(w[0]) == 1 and w[0][0] in body[i] and w[3] == ws[0][3]
                     and body[i].index(w[0][0]) == body[parts[0]].index(ws[0][0][0]) for i, w in zip(parts.tolist(), ws))
            if ok:
                self.wide_waves.append((column_index([w[2] for w in ws]), column_index([w[1] for w in ws]),
                                        ws[0][3], body[parts[0]].index(ws[0][0][0])))
                fused.update(parts.tolist())
            else:
                self.wide_waves.append(None)
        # each wide part's one overhead column, added to the group's p-norms at once (None: not that case)
        self.wide_over = [column_index([over[i][0] for i in parts.tolist()])
                          if all(len(over[i]) == 1 for i in parts.tolist()) else None for parts, _, _, _ in self.wide]
        self.parts = tuple((tuple(body[i]), tuple(over[i]), slot.get(i), wide_of.get(i)) for i in range(len(body)))
        # per part for seconds(): its overheads, unless its group adds them (wide_over)
        self.vec_parts = tuple((b, () if w is not None and self.wide_over[w[0]] is not None else o, j, w)
                               for b, o, j, w in self.parts)
        self.pairs = (np.array([body[i][0] for i in pairs], dtype=np.intp), np.array([body[i][1] for i in pairs], dtype=np.intp))
        self.p = np.array([float(blend[i]) for i in pairs])
        self.inv_p = 1.0 / self.p
        self.p_list, self.inv_p_list = self.p.tolist(), self.inv_p.tolist()
        self.lone_pair = len(pairs) == 1  # (then column views beat gathers)
        waved = list(wave.values())
        self.wave_list = waved
        self.vec_waves = [w for i, w in wave.items() if i not in fused]  # (seconds(): the others on the gathers)
        self._buf = np.empty(len(pairs))
        self.groups = None
        self.vector = True  # (False: overlap groups, priced by the caller's stages on arrays)
        if len(body) == 1 and self.lone_pair:  # one blended part (attention decode): straight-line
            self.lone = (self.parts[0][0][0], self.parts[0][0][1], self.p_list[0], self.inv_p_list[0],
                         waved[0] if waved else None, self.parts[0][1])
            self.seconds = self._seconds_lone

    @staticmethod
    def applies(body: list, blend: dict, serial: list, groups: list, custom: list) -> bool:
        """Can a plan price this template? (Parts added left to right; p-norms of two resources,
        or of more with several parts and no overlap groups.)"""
        wide = any(len(body[i]) > 2 for i in blend)
        return (not custom and len(serial) <= MAX_PARTS and all(len(d) <= MAX_PARTS for g in groups for d in g)
                and all(len(body[i]) >= 2 for i in blend) and not (wide and (groups or len(body) == 1)))

    def set_groups(self, serial: list, groups: list) -> None:
        """Overlap groups (``[group][device] -> parts``): only :meth:`row` prices them (serial parts
        add, then each group's slowest device, whose parts add); :attr:`vector` is False."""
        self.serial, self.groups, self.vector = serial, groups, False

    def seconds(self, amounts: np.ndarray) -> np.ndarray:
        """Seconds ``[...]`` of work ``[..., ncol]`` (computed column-first: :func:`columns_first`)."""
        if amounts.ndim == 1:
            return self.row(amounts.tolist())
        if amounts.shape[0] == 1 and amounts.ndim == 2:
            return np.array([self.row(amounts[0].tolist())])
        a, times = columns_first(amounts, self.divisor_first)  # [ncol, ...]
        for scaled, nt, nl, sw in self.vec_waves:
            if wave_floor_idle(a[nl], a[nt], sw):
                continue
            factor = a[nl] * sw
            factor /= np.maximum(a[nt], 1e-9)
            np.maximum(factor, 1.0, out=factor)
            for c in scaled:
                times[c] *= factor
        pnorm = None
        if self.p.size:
            if self.lone_pair:
                x, y, p, inv_p = times[self.pairs[0][0]], times[self.pairs[1][0]], self.p_list[0], self.inv_p_list[0]
            else:  # [pairs, ...] gathers; p and 1 / p broadcast over the first axis
                x, y = times[self.pairs[0]], times[self.pairs[1]]
                shape = self.p.shape + (1,) * (a.ndim - 1)
                p, inv_p = self.p.reshape(shape), self.inv_p.reshape(shape)
            top = np.maximum(x, y)
            pnorm = np.minimum(x, y)
            pnorm /= np.maximum(top, 1e-300)
            pnorm **= p
            pnorm += 1.0
            pnorm **= inv_p
            pnorm *= top
        wide = []
        for (_, cols, q, inv_q), fw, wo in zip(self.wide_first, self.wide_waves, self.wide_over):
            t = times[cols]  # [n, parts, ...]
            if fw is not None:  # (no idle test first: a factor of 1 changes nothing, and the
                # group's floors usually bind: MagicPIG's few-sequence attention parts)
                nl, nt, sw, slot = fw
                factor = a[nl] * sw  # [parts, ...]
                factor /= np.maximum(a[nt], 1e-9)
                np.maximum(factor, 1.0, out=factor)
                t[slot] *= factor
            t = pnorm_first(t, q, inv_q)  # [parts, ...]
            if wo is not None:
                t += times[wo]
            wide.append(t)
        total = None
        for body, over, j, w in self.vec_parts:
            t = None
            if j is not None:
                t = pnorm if self.lone_pair else pnorm[j]
            elif w is not None:
                t = wide[w[0]][w[1]]
            elif body:
                t = times[body[0]]
                for c in body[1:]:
                    t = np.maximum(t, times[c])
            if over:
                o = first_sum(times, over)
                t = o if t is None else t + o
            if t is not None:
                total = t if total is None else total + t
        return np.zeros(amounts.shape[:-1]) if total is None else total

    def _seconds_lone(self, amounts: np.ndarray) -> np.ndarray:
        """:meth:`seconds` of one part whose two body resources make a p-norm."""
        if amounts.ndim == 1:
            return self.row(amounts.tolist())
        if amounts.shape[0] == 1 and amounts.ndim == 2:
            return np.array([self.row(amounts[0].tolist())])
        ca, cb, p, inv_p, wave, over = self.lone
        a, times = columns_first(amounts, self.divisor_first)  # [ncol, ...]
        if wave is not None:
            scaled, nt, nl, sw = wave
            factor = a[nl] * sw
            factor /= np.maximum(a[nt], 1e-9)
            np.maximum(factor, 1.0, out=factor)
            for c in scaled:
                times[c] *= factor
        x, y = times[ca], times[cb]
        top = np.maximum(x, y)
        t = np.minimum(x, y)
        t /= np.maximum(top, 1e-300)
        t **= p
        t += 1.0
        t **= inv_p
        t *= top
        if over:
            t += first_sum(times, over)
        return t

    def row(self, row: list) -> float:
        """:meth:`seconds` of one step (``row``: ``[ncol]`` floats)."""
        times = [a / d for a, d in zip(row, self.divisor_list)]
        for scaled, nt, nl, sw in self.wave_list:
            factor = row[nl] * sw / max(row[nt], 1e-9)
            if factor < 1.0:
                factor = 1.0
            for c in scaled:
                times[c] *= factor
        tops = []
        if self.p_list:
            buf = self._buf
            for j, (a, b) in enumerate(zip(self.pairs[0].tolist(), self.pairs[1].tolist())):
                a, b = times[a], times[b]
                top, low = (a, b) if a >= b else (b, a)
                tops.append(top)
                buf[j] = low / max(top, 1e-300)
            np.power(buf, self.p, out=buf)
            buf += 1.0
            np.power(buf, self.inv_p, out=buf)
            ratios = buf.tolist()
        # p-norms of more resources: the same pnorm_rows on a [parts, n] gather as on [k, parts, n]
        wide_s = [pnorm_rows(np.array([[times[c] for c in r] for r in cols]), q, inv_q).tolist()
                  for cols, q, inv_q in self.wide_rows]
        total = 0.0
        part_s = []
        for body, over, j, w in self.parts:
            if j is not None:
                t = tops[j] * ratios[j]
            elif w is not None:
                t = wide_s[w[0]][w[1]]
            elif body:
                t = max(times[c] for c in body)
            else:
                t = 0.0
            if over:
                o = times[over[0]]
                for c in over[1:]:
                    o += times[c]
                t = o if not body else t + o
            if self.groups is None:
                total += t
            else:
                part_s.append(t)
        if self.groups is not None:
            for i in self.serial:
                total += part_s[i]
            for devices in self.groups:
                slowest = 0.0
                for parts in devices:
                    device_s = 0.0
                    for i in parts:
                        device_s += part_s[i]
                    if device_s > slowest:
                        slowest = device_s
                total += slowest
        return total
