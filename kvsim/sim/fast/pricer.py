"""Exact, cached step pricing for the simulator: the numbers of :class:`~kvsim.pricing.step.StepModel`,
at a fraction of the Python cost.

``StepModel.time_s`` builds a :class:`~kvsim.costmodel.cost.Cost` (linear layers + framework overhead
+ the method's decode attention + the method's prefill work) and prices it with the
roofline: ~140 us per call, too slow for millions of steps. :class:`StepPricer` splits the
same computation into pieces that can be cached, and *checks* the split against
``StepModel.time_s`` on random steps when it is built; if a check fails it prices every
step with ``StepModel.time_s`` itself (``mode == "exact"``).

1. Additivity. The roofline sums parts with no ``overlap`` tag and takes, per tag, the
   slowest device. The linear layers and overhead share no part identity or tag with the
   method's parts, so ``t(T, S, ctx, chunks) = t_lin(T, S) + t_method(ctx, chunks)`` with
   ``T`` tokens and ``S`` sampled rows; ``t_lin`` is cached in blocks of 512 token counts
   per ``S``. The method's decode and prefill parts are priced apart (prefill cached per
   tuple of ``(n_new, n_cached)`` chunks) unless they share an identity (KIVI and GEAR
   quantize in both: ``joint_mixed``), then merged in field space as the roofline would.
2. Separable decode. Methods price a decode batch with sums over its sequences, so every
   numeric field of every part is ``sum_i g(ctx_i, prompt_i) + h(B)``. ``g`` in roofline
   seconds per field (the roofline of a part is linear in each field before the ``max``
   over resources; coefficients are probed from :meth:`Roofline.part_resource_times` with
   unit amounts, so no hardware constant lives here) is tabulated once per context
   (``decode_mode == "table"``) or, when it depends on the prompt (H2O, SnapKV, MagicPIG),
   per request for the contexts it will decode, in chunks of requests (``"rows"``). A run of
   ``k`` decode steps of a batch is then one gather ``[B, k]`` and a sum; sequences that
   finish inside the run drop out by pointing at an all-zero row. If the probes disagree
   (e.g. a method that prices ``B * max(ctx)``) decode runs call the method on the ``[k, B]``
   context array (``"call"``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kvsim.costmodel.cost import NUMERIC_FIELDS, Cost, Part
from kvsim.pricing.step import StepModel
from kvsim.costmodel.transformer import linear_cost

_T_BLOCK = 512  # token counts per cached t_lin block
_REL_TOL = 1e-9  # agreement required between the split and StepModel.time_s
_CHUNK_ROWS = 1 << 16  # per-request rows computed per method call ("rows" mode)
F = len(NUMERIC_FIELDS)


def _fields(cost: Cost, n: int) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    """Part keys, ``[n, parts, fields]`` amounts, and ``[parts, fields]`` "is a plain scalar"."""
    keys = [p.key for p in cost.parts]
    out = np.zeros((n, len(cost.parts), F))
    scalar = np.zeros((len(cost.parts), F), dtype=bool)
    for i, p in enumerate(cost.parts):
        for j, f in enumerate(NUMERIC_FIELDS):
            v = getattr(p, f)
            scalar[i, j] = not isinstance(v, np.ndarray)
            out[:, i, j] = np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))
    return keys, out, scalar


def _close(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return bool(np.all(np.abs(a - b) <= _REL_TOL * np.maximum(np.abs(b), 1e-300)))


def _decode_prompt_aware(step: StepModel) -> bool:
    """Does the method's decode cost depend on how many cached tokens are prompt? (probed)"""
    m = step.method
    ctx = np.array([[3000.0, 5000.0, 20000.0]])
    prompt = np.array([[1000.0, 4000.0, 1000.0]])
    return not _close(step.roofline(m.decode_cost(ctx)).total_s, step.roofline(m.decode_cost(ctx, prompt)).total_s)


class StepPricer:
    """Step times equal (to ~1e-15 relative) to ``StepModel.time_s``.

    Args:
        step: the StepModel to reproduce (or any object with its ``time_s``: priced as given).
        max_ctx: largest decode context (tokens in KV before a step) to tabulate.
        max_seqs: largest batch size.
        extra: optional ``[max_ctx + 1, E]`` per-sequence quantities indexed by context that
            :meth:`decode_run` sums over the batch alongside the price (e.g. KV blocks).
        extra_fn: ``extra_fn(ctx [..., B], prompt [B]) -> [..., B, E]``, used instead of
            ``extra`` when the decode depends on the prompt.
        prompt, output: ``[N]`` effective prompt and output tokens of the trace's requests
            (for per-request rows; without them prompt-aware methods use ``"call"``).
    """

    def __init__(self, step, max_ctx: int, max_seqs: int, extra: np.ndarray | None = None, seed: int = 0,
                 extra_fn=None, roofline=None, prompt: np.ndarray | None = None,
                 output: np.ndarray | None = None) -> None:
        self.step = step
        self.roofline = roofline if roofline is not None else step.roofline  # also prices SWAP copies
        self.max_ctx, self.max_seqs = int(max_ctx), int(max_seqs)
        n = self.max_ctx + 1
        self._extra = np.zeros((n, 0)) if extra is None else np.asarray(extra, dtype=np.float64).reshape(n, -1)
        self._E = self._extra.shape[1]
        self._extra_fn = extra_fn
        self._rng = np.random.default_rng(seed)
        self._lin: dict[tuple[int, int], np.ndarray] = {}
        self._pref: dict[tuple, object] = {}
        self._J = np.arange(1024)
        self._dec_const = np.zeros(self.max_seqs + 1)
        self.joint_mixed = False
        is_model = isinstance(step, StepModel)
        self.mode = "fast" if is_model and self._additive() else "exact"
        self.prompt_aware = is_model and _decode_prompt_aware(step)
        self.decode_mode = "call"
        if self.mode == "fast":  # the mode is set while its checks run through decode_run
            if not self.prompt_aware and extra_fn is None:  # (prompt-aware extras need per-request rows)
                self.decode_mode = "table"
                ok = self._build_table()
            else:
                self.decode_mode = "rows"
                ok = prompt is not None and self._build_rows(prompt, output)
            if not ok:
                self.decode_mode = "call"
                self._dec_const = np.zeros(self.max_seqs + 1)
        lin = [self.lin_time(b, b) for b in range(self.max_seqs + 1)] if self.mode == "fast" else [0.0]
        self._cst = np.zeros(self.max_seqs + 1) + lin + self._dec_const
        self._lin_dec = (self._cst - self._dec_const).tolist()  # lin(B, B), as floats for scalar use
        self._set_flags()
        if self.mode == "fast" and not self._verify_steps():
            self.mode, self.decode_mode = "exact", "call"
        self._set_flags()

    def _set_flags(self) -> None:
        """Plain-Python copies of what decode_run checks on every call."""
        self._tables = self.mode == "fast" and self.decode_mode in ("table", "rows")
        if self._tables:
            self._hz = self._hzero.tolist()
            self._hz_all = bool(self._hzero.all())

    # ------------------------------------------------------------------ structure
    def _additive(self) -> bool:
        """Are the linear layers and overhead apart from the method's parts (identity and overlap
        tag)? Sets ``joint_mixed`` when the method's decode and prefill parts meet."""
        m = self.step.method
        comps = [
            linear_cost(self.step.dep, 8.0, 2.0).parts + self.step._overhead.parts,
            m.decode_cost(np.array([3.0, 5.0])).parts,
            m.prefill_cost(np.array([7.0]), np.array([2.0])).parts,
        ]
        keys = [{p.key for p in c} for c in comps]
        tags = [{p.overlap for p in c if p.overlap is not None} for c in comps]
        if (keys[0] & (keys[1] | keys[2])) or (tags[0] & (tags[1] | tags[2])):
            return False
        self.joint_mixed = bool(keys[1] & keys[2] or tags[1] & tags[2])
        self._pref_keys = keys[2]
        return True

    def _coefficients(self, parts) -> tuple[np.ndarray, np.ndarray] | None:
        """Roofline seconds per unit of each field of each part, and whether it enters the max."""
        coef = np.zeros((len(parts), F))
        body = np.zeros((len(parts), F), dtype=bool)
        for i, p in enumerate(parts):
            for j, f in enumerate(NUMERIC_FIELDS):
                unit = replace(p, **{x: (1.0 if x == f else 0.0) for x in NUMERIC_FIELDS})
                rt = self.roofline.part_resource_times(unit)
                if len(rt) > 1:
                    return None
                (res, c), = rt.items() if rt else (("overhead", 0.0),)
                coef[i, j] = float(c)
                body[i, j] = res != "overhead"
        return coef, body

    def _columns(self, parts, coef, body, used, folded) -> None:
        """Lay the used, unfolded (part, field) amounts out as table columns; build the combiner."""
        shared = np.array([p.key in getattr(self, "_pref_keys", set()) for p in parts]) if self.joint_mixed else None
        if shared is not None:  # a prefill part of the same identity may bring any body field
            used = used | (body & shared[:, None])
        cols, body_grid, over_cols = [], [], []
        for i in range(len(parts)):
            row = []
            for j in range(F):
                if used[i, j] and not folded[i, j]:
                    (row if body[i, j] else over_cols).append(len(cols))
                    cols.append((i, j))
            body_grid.append(row)
        R = max([len(r) for r in body_grid] + [1])
        zero = len(cols)  # an all-zero padding column
        self._parts, self._coef, self._cols = parts, coef, cols
        self._ci = np.array([c[0] for c in cols], dtype=np.int64)
        self._cj = np.array([c[1] for c in cols], dtype=np.int64)
        self._ncol = len(cols) + 1
        self._next = self._ncol + self._E  # index of the sequence-count column
        self._width = self._next + 1
        self._body = np.array([r + [zero] * (R - len(r)) for r in body_grid], dtype=np.int64)  # [P, R]
        self._P, self._R = len(parts), R
        self._over = np.array(over_cols, dtype=np.int64)
        self._groups = self._overlap_groups(parts, cols, over_cols)
        self._simple = self._groups is None and len(parts) == 1 and not over_cols
        self._pair = tuple(self._body[0].tolist()) if self._simple and R == 2 else None
        self._key_index = {p.key: i for i, p in enumerate(parts)}

    def _to_columns(self, fields: np.ndarray) -> np.ndarray:
        """``[n, P, F]`` amounts -> ``[n, ncol]`` seconds in the table's price columns."""
        out = np.zeros((fields.shape[0], self._ncol))
        out[:, : len(self._cols)] = fields[:, self._ci, self._cj] * self._coef[self._ci, self._cj]
        return out

    def _build_table(self) -> bool:
        """Tabulate g(ctx) and h(B) in roofline seconds; False if the decode is not separable."""
        m, n, B = self.step.method, self.max_ctx + 1, self.max_seqs
        keys, g, _ = _fields(m.decode_cost(np.arange(n, dtype=np.float64)[:, None]), n)  # [n, P, F]
        parts = m.decode_cost(np.array([1.0])).parts
        cb = self._coefficients(parts)
        if [p.key for p in parts] != keys or cb is None:
            return False
        coef, body = cb
        P = len(parts)
        h = np.zeros((B + 1, P, F))
        for b in range(1, B + 1):
            kb, fb, _ = _fields(m.decode_cost(np.zeros(b)), 1)
            if kb != keys:
                return False
            h[b] = fb[0] - b * g[0]
        gs, hs = g * coef, h * coef  # seconds per sequence, per batch size
        free = np.array([[p.overlap is None] * F for p in parts])
        varies = (gs != gs[:1]).any(axis=0)  # [P, F] column depends on ctx
        used = (gs != 0).any(axis=0) | (hs != 0).any(axis=0)
        folded = (~varies) & (~body) & free  # constant overheads fold into a per-B constant
        self._dec_const = (np.arange(B + 1)[:, None] * gs[0][folded] + hs[:, folded]).sum(axis=1)
        self._columns(parts, coef, body, used, folded)
        tab = self._to_columns(g)
        self._hcol = np.concatenate([self._to_columns(h), np.zeros((B + 1, self._E + 1))], axis=1)
        self._hzero = ~(self._hcol != 0).any(axis=1)
        # columns: prices, extras, a 1 (counts the sequences of a step); row n: a finished sequence
        self._tab = np.concatenate([np.concatenate([tab, self._extra, np.ones((n, 1))], axis=1),
                                    np.zeros((1, self._width))])
        self._zero_row = n
        return self._verify_decode()

    def _build_rows(self, prompt: np.ndarray, output: np.ndarray) -> bool:
        """Per-request rows: check ``sum_i g(ctx_i, prompt_i) + h(B)`` on random batches first."""
        m, B = self.step.method, self.max_seqs
        one = m.decode_cost(np.array([[1.0], [2.0]]), np.array([[1.0], [1.0]]))
        keys, g1, scalar = _fields(one, 2)
        parts = m.decode_cost(np.array([1.0]), np.array([1.0])).parts
        cb = self._coefficients(parts)
        if [p.key for p in parts] != keys or cb is None:
            return False
        coef, body = cb
        self._row_keys = keys
        h = np.zeros((B + 1, len(parts), F))
        for b in range(1, B + 1):  # h(B) = F(B copies of (1, 1)) - B g(1, 1)
            kb, fb, _ = _fields(m.decode_cost(np.ones(b), np.ones(b)), 1)
            if kb != keys:
                return False
            h[b] = fb[0] - b * g1[0]
        free = np.array([[p.overlap is None] * F for p in parts])
        folded = scalar & (~body) & free  # plain-scalar overheads are the same for every sequence
        used = ~(scalar & (g1 == 0).all(axis=0)) | (h != 0).any(axis=0)
        self._dec_const = (np.arange(B + 1)[:, None] * (g1[0] * coef)[folded] + (h * coef)[:, folded]).sum(axis=1)
        self._columns(parts, coef, body, used, folded)
        self._hcol = np.concatenate([self._to_columns(h * 1.0), np.zeros((B + 1, self._E + 1))], axis=1)
        self._hzero = ~(self._hcol != 0).any(axis=1)
        self._rows_P = np.asarray(prompt, dtype=np.int64)
        self._rows_O = np.asarray(output, dtype=np.int64)
        self.base = np.zeros(self._rows_P.shape[0], dtype=np.int64)  # table row = base[req] + ctx
        self._alive = np.ones(self._rows_P.shape[0], dtype=bool)
        self._filled = self._lo = 0
        self._tab = np.zeros((2 * _CHUNK_ROWS, self._width))  # row 0: a finished sequence
        self._top = 1
        self._zero_row = 0
        return self._verify_rows()

    # ------------------------------------------------------------------ per-request rows
    def ensure_rows(self, i: int) -> None:
        """Rows of request ``i`` (and the next ones, a chunk at a time) are in the table."""
        if self.decode_mode == "rows" and i >= self._filled:
            self._fill(i)

    def release(self, i: int) -> None:
        """Request ``i`` will not decode again (finished or rejected)."""
        if self.decode_mode == "rows":
            self._alive[i] = False

    def _fill(self, i: int) -> None:
        """Rows of a chunk of requests: contexts ``P - 1 .. P + O - 2`` (the first row only
        serves :meth:`row_blocks` at ``n = P``)."""
        P, out_n = self._rows_P, self._rows_O
        window = out_n[self._filled:min(P.shape[0], self._filled + max(_CHUNK_ROWS, i - self._filled + 1))]
        cum = np.cumsum(window)
        end = self._filled + max(i - self._filled + 1, int(np.searchsorted(cum, _CHUNK_ROWS, side="right")))
        end = min(end, P.shape[0])
        reqs = np.arange(self._filled, end)
        cnt = out_n[reqs]
        M = int(cnt.sum())
        if self._top + M > self._tab.shape[0]:
            self._compact(M)
        starts = np.repeat(np.cumsum(cnt) - cnt, cnt)
        pr = np.repeat(P[reqs], cnt)
        ctx = pr - 1 + (np.arange(M) - starts)
        m = self.step.method
        cost = m.decode_cost(ctx.astype(np.float64)[:, None], pr.astype(np.float64)[:, None])
        assert [p.key for p in cost.parts] == self._row_keys, "method decode parts changed with the batch"
        rows = self._tab[self._top:self._top + M]
        for c, (pi, fj) in enumerate(self._cols):
            rows[:, c] = np.asarray(getattr(cost.parts[pi], NUMERIC_FIELDS[fj]), dtype=np.float64) * self._coef[pi, fj]
        if self._E:
            ext = self._extra_fn(ctx[:, None], pr[:, None])[:, 0, :] if self._extra_fn is not None else self._extra[ctx]
            rows[:, self._ncol:self._next] = ext
        rows[:, self._next] = 1.0
        self.base[reqs] = self._top + (np.cumsum(cnt) - cnt) - (P[reqs] - 1)
        self._top += M
        self._filled = end

    def row_blocks(self, rid: int, n: int) -> tuple[int, int] | None:
        """Extras (GPU, host blocks) of request ``rid`` holding ``n`` tokens, from its rows (None if out of range)."""
        if self.decode_mode != "rows" or rid >= self._filled:
            return None
        p = int(self._rows_P[rid])
        if not p <= n <= p + int(self._rows_O[rid]) - 1:
            return None
        row = self._tab[int(self.base[rid]) + n - 1]
        return int(row[self._ncol]), int(row[self._ncol + 1])

    def rows_blocks_sum(self, rid: np.ndarray, n: np.ndarray) -> tuple[int, int]:
        """Sum of :meth:`row_blocks` over a decode batch (``n = ctx + 1`` in range by construction)."""
        e = self._tab[self.base[rid] + n - 1, self._ncol:self._ncol + 2].sum(axis=0)
        return int(e[0]), int(e[1])

    def _compact(self, need: int) -> None:
        """Keep the rows of requests that may still decode; grow the table if needed."""
        while self._lo < self._filled and not self._alive[self._lo]:
            self._lo += 1
        live = self._lo + np.flatnonzero(self._alive[self._lo:self._filled])
        cnt = self._rows_O[live]
        start = self.base[live] + self._rows_P[live] - 1
        idx = np.repeat(start - (np.cumsum(cnt) - cnt), cnt) + np.arange(int(cnt.sum()))
        keep = int(cnt.sum())
        size = max(self._tab.shape[0], 2 * (1 + keep + need))
        tab = np.zeros((size, self._width))
        tab[1:1 + keep] = self._tab[idx]
        self.base[live] = 1 + (np.cumsum(cnt) - cnt) - (self._rows_P[live] - 1)
        self._tab, self._top = tab, 1 + keep

    # ------------------------------------------------------------------ checks
    def _overlap_groups(self, parts, cols, over_cols):
        """None when no part has an overlap tag, else per-part overhead columns and groups."""
        if all(p.overlap is None for p in parts):
            return None
        per_part_over = [[c for c in over_cols if cols[c][0] == i] for i in range(len(parts))]
        groups: dict[str, dict[str, list[int]]] = {}
        for i, p in enumerate(parts):
            if p.overlap is not None:
                groups.setdefault(p.overlap, {}).setdefault(p.device, []).append(i)
        free = [i for i, p in enumerate(parts) if p.overlap is None]
        return per_part_over, free, [list(d.values()) for d in groups.values()]

    def _probe_batches(self):
        probes = [np.array([0]), np.array([self.max_ctx - 1])]
        for _ in range(6):
            b = int(self._rng.integers(1, min(self.max_seqs, 48) + 1))
            probes.append(self._rng.integers(0, self.max_ctx, size=b))
        return probes

    def _verify_decode(self) -> bool:
        self._cst = np.zeros(self.max_seqs + 1) + self._dec_const
        self._set_flags()
        for ctx in self._probe_batches():
            k = max(1, int(min(3, self.max_ctx - ctx.max())))
            rows = ctx[None, :] + np.arange(k)[:, None]
            want = self.roofline(self.step.method.decode_cost(rows.astype(np.float64))).total_s
            if not _close(self.decode_run(ctx, k)[0], want):
                return False
        return True

    def _verify_rows(self) -> bool:
        """Field sums of random prompt-aware batches and their times, against the method."""
        m = self.step.method
        self._cst = np.zeros(self.max_seqs + 1) + self._dec_const
        self._set_flags()
        for ctx in self._probe_batches():
            ctx = np.maximum(ctx, 1)
            prompt = np.maximum(1, (ctx * self._rng.random(ctx.shape)).astype(np.int64))
            cost = m.decode_cost(ctx.astype(np.float64), prompt.astype(np.float64))
            keys, _, _ = _fields(cost, 1)
            if keys != self._row_keys:
                return False
            one = m.decode_cost(ctx.astype(np.float64)[:, None], prompt.astype(np.float64)[:, None])
            _, g, _ = _fields(one, ctx.shape[0])
            S = self._to_columns(g).sum(axis=0) + self._hcol[ctx.shape[0], : self._ncol]
            got = self._combine(S[None, :], 1)[0] + self._cst[ctx.shape[0]]
            if not _close(got, self.roofline(cost).total_s):
                return False
        return True

    def _verify_steps(self) -> bool:
        """Compare whole steps against StepModel.time_s (decode-only, prefill-only, mixed)."""
        r = self._rng
        cases = [(np.array([min(5, self.max_ctx - 1)]), [], []), (np.array([], dtype=np.int64), [17], [0])]
        for _ in range(4):
            b = int(r.integers(0, min(self.max_seqs, 8) + 1))
            nch = int(r.integers(1, 3))
            cases.append((r.integers(0, self.max_ctx, size=b), list(r.integers(1, 300, size=nch)),
                          list(r.integers(0, 500, size=nch))))
        for ctx, new, cached in cases:
            sampled = len(new)
            prompt = np.minimum(ctx, r.integers(1, 400, size=ctx.shape))
            want = self.step.time_s(decode_ctx=ctx.astype(np.float64), prefill_new=np.array(new, dtype=np.float64),
                                    prefill_cached=np.array(cached, dtype=np.float64), n_sampled_prefill=sampled,
                                    decode_prompt=prompt.astype(np.float64))
            got = self.step_time(ctx, tuple(int(x) for x in new), tuple(int(x) for x in cached), sampled,
                                 decode_prompt=prompt, direct=self.decode_mode == "rows")
            if not _close(got, want):
                return False
        return True

    # ------------------------------------------------------------------ pieces
    def lin_time(self, T: int, S: int) -> float:
        """Linear layers + framework overhead of a step with ``T`` tokens and ``S`` sampled rows."""
        key = (S, T // _T_BLOCK)
        row = self._lin.get(key)
        if row is None:
            t = np.arange(key[1] * _T_BLOCK, (key[1] + 1) * _T_BLOCK, dtype=np.float64)
            cost = linear_cost(self.step.dep, t, float(S)) + self.step._overhead
            row = np.broadcast_to(np.asarray(self.roofline(cost).total_s, dtype=np.float64), t.shape).tolist()
            self._lin[key] = row
        return row[T % _T_BLOCK]

    def prefill_time(self, new: tuple, cached: tuple) -> float:
        """Method prefill work of chunks ``new`` tokens after ``cached`` tokens (cached per tuple)."""
        key = (new, cached)
        t = self._pref.get(key)
        if t is None:
            c = self.step.method.prefill_cost(np.array(new, dtype=np.float64), np.array(cached, dtype=np.float64))
            t = float(self.roofline(c).total_s)
            self._pref[key] = t
        return t

    def _prefill_split(self, new: tuple, cached: tuple) -> tuple[np.ndarray, float]:
        """(amounts of the prefill parts sharing a decode identity, in table columns; time of the rest)."""
        key = ("split", new, cached)
        v = self._pref.get(key)
        if v is None:
            c = self.step.method.prefill_cost(np.array(new, dtype=np.float64), np.array(cached, dtype=np.float64))
            cols = np.zeros(self._ncol)
            over_t = 0.0
            rest = []
            index = {c2: n for n, c2 in enumerate(self._cols)}
            for p in c.parts:
                i = self._key_index.get(p.key)
                if i is None:
                    rest.append(p)
                    continue
                for j, f in enumerate(NUMERIC_FIELDS):
                    amount = float(getattr(p, f))
                    if amount == 0.0:
                        continue
                    if (i, j) in index:
                        cols[index[(i, j)]] += amount * self._coef[i, j]
                    else:  # a folded overhead: adds linearly
                        over_t += amount * self._coef[i, j]
            v = (cols, over_t + float(self.roofline(Cost(tuple(rest))).total_s))
            self._pref[key] = v
        return v

    def decode_run(self, ctx: np.ndarray, k: int, left: np.ndarray | None = None, prompt: np.ndarray | None = None,
                   rid: np.ndarray | None = None, sums: bool = False):
        """Times of ``k`` decode-only steps of batch ``ctx`` ([B] int, tokens in KV before
        step 0; step j has ``ctx + j``) and the extras summed over the batch ``[k, E]``.

        ``left`` ([B], needs :attr:`masked_ok`): sequence ``i`` takes part in steps
        ``j < left[i]`` only (it finishes after its last token); at least one is in every
        step. ``prompt`` [B]: prompt tokens per sequence; ``rid`` [B]: request ids ("rows").
        Returns ``(dt [k], extras [k, E], sequences per step [k] or None)`` (and the price
        columns ``[k, ncol]`` with ``sums``).
        """
        B = ctx.shape[0]
        if not self._tables:
            assert left is None, "runs with finishing sequences need table pricing"
            rows = ctx[None, :] + np.arange(k)[:, None]
            rf = rows.astype(np.float64)
            pr = None if prompt is None else np.broadcast_to(np.asarray(prompt, dtype=np.float64), rf.shape)
            if self.mode == "exact":
                dt = self.step.time_s(decode_ctx=rf, decode_prompt=pr)
            else:
                dt = self._cst[B] + self.roofline(self.step.method.decode_cost(rf, pr)).total_s
            dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), (k,))
            if self._extra_fn is not None:
                ext = self._extra_fn(rows, prompt).sum(axis=1)
            else:
                ext = self._extra[rows].sum(axis=1) if self._E else self._extra[:k]
            return (dt, ext, None, None) if sums else (dt, ext, None)
        tab = self._tab
        tix = ctx if self.decode_mode == "table" else self.base[rid] + ctx
        if B <= 8:  # a slice per sequence beats a gather for small batches
            if B == 1:
                c = int(tix[0])
                S = tab[c:c + k]
            else:
                S = np.zeros((k, self._width))
                if left is None:
                    for c in tix.tolist():
                        S += tab[c:c + k]
                else:
                    for c, m in zip(tix.tolist(), left.tolist()):
                        if m >= k:
                            S += tab[c:c + k]
                        else:
                            S[:m] += tab[c:c + m]
        else:
            J = self._J
            if k > J.shape[0]:
                J = self._J = np.arange(2 * k)
            idx = tix[:, None] + J[:k]  # [B, k]
            if left is not None:
                idx = np.where(J[:k] < left[:, None], idx, self._zero_row)
            S = tab[idx].sum(axis=0)
        if left is None:
            if not self._hz[B]:
                S = S + self._hcol[B]
            out = self._combine(S, k) + self._cst[B], S[:, self._ncol:self._next], None
        else:
            Bj = S[:, self._next].astype(np.intp)
            if not self._hz_all:
                S = S + self._hcol[Bj]
            out = self._combine(S, k) + self._cst[Bj], S[:, self._ncol:self._next], Bj
        return out + (S[:, : self._ncol],) if sums else out

    @property
    def masked_ok(self) -> bool:
        """Can :meth:`decode_run` price runs in which sequences finish (``left``)?"""
        return self.mode == "fast" and self.decode_mode in ("table", "rows")

    def _combine(self, S: np.ndarray, k: int) -> np.ndarray:
        """Roofline seconds of the decode parts from ``[k, ncol]`` amounts (in seconds per resource)."""
        if self._simple:
            if self._pair is not None:
                return np.maximum(S[:, self._pair[0]], S[:, self._pair[1]])
            return S[:, self._body[0]].max(axis=1) if self._R > 1 else S[:, self._body[0, 0]]
        body = S[:, self._body.ravel()].reshape(k, self._P, self._R).max(axis=2)  # [k, P]
        if self._groups is None:
            t = body.sum(axis=1)
            return t + S[:, self._over].sum(axis=1) if self._over.size else t
        per_part_over, free, groups = self._groups
        for i, oc in enumerate(per_part_over):
            if oc:
                body[:, i] += S[:, oc].sum(axis=1)
        t = body[:, free].sum(axis=1) if free else np.zeros(k)
        for devs in groups:
            t = t + np.max([body[:, d].sum(axis=1) for d in devs], axis=0)
        return t

    # ------------------------------------------------------------------ whole steps
    def step_time(self, decode_ctx: np.ndarray, new: tuple = (), cached: tuple = (), n_sampled: int = 0,
                  decode_dt: float | None = None, decode_prompt: np.ndarray | None = None,
                  rid: np.ndarray | None = None, decode_sums: np.ndarray | None = None, direct: bool = False) -> float:
        """One step: ``decode_ctx`` [B] decoding sequences (prompts ``decode_prompt``, request
        ids ``rid``) plus prefill chunks ``new``/``cached``. With ``decode_dt`` (and no
        ``joint_mixed``), ``decode_ctx`` may be just the batch size ``B``.

        ``decode_dt`` / ``decode_sums`` may pass the decode-only time / price columns of the
        same batch (from a previous :meth:`decode_run`) to skip recomputing them.
        ``direct``: price the decode by calling the method (checks, before any row exists).
        """
        B = decode_ctx if decode_ctx.__class__ is int else int(decode_ctx.shape[0])
        if decode_dt is not None and not self.joint_mixed and self.mode == "fast":  # the common case
            T = B + sum(new)
            row = self._lin.get((B + n_sampled, T // _T_BLOCK))
            t = row[T % _T_BLOCK] if row is not None else self.lin_time(T, B + n_sampled)
            if B:  # (a prefill-only step ignores the decode time it was offered)
                t += decode_dt - self._lin_dec[B]
            if new:
                p = self._pref.get((new, cached))
                t += p if p is not None else self.prefill_time(new, cached)
            return t
        dp = None if decode_prompt is None or not B else np.asarray(decode_prompt)
        if self.mode == "exact":
            return float(self.step.time_s(decode_ctx=decode_ctx.astype(np.float64),
                                          prefill_new=np.array(new, dtype=np.float64),
                                          prefill_cached=np.array(cached, dtype=np.float64),
                                          n_sampled_prefill=n_sampled,
                                          decode_prompt=None if dp is None else dp.astype(np.float64)))
        T = B + sum(new)
        row = self._lin.get((B + n_sampled, T // _T_BLOCK))
        t = row[T % _T_BLOCK] if row is not None else self.lin_time(T, B + n_sampled)
        m = self.step.method
        if B and direct:
            pf = None if dp is None else dp.astype(np.float64)
            cost = m.decode_cost(decode_ctx.astype(np.float64), pf)
            if new:
                cost = cost + m.prefill_cost(np.array(new, dtype=np.float64), np.array(cached, dtype=np.float64))
            return float(t + self.roofline(cost).total_s)
        if B and new and self.joint_mixed:
            if self.decode_mode == "call":
                cost = m.decode_cost(decode_ctx.astype(np.float64), None if dp is None else dp.astype(np.float64))
                cost = cost + m.prefill_cost(np.array(new, dtype=np.float64), np.array(cached, dtype=np.float64))
                return float(t + self.roofline(cost).total_s)
            if decode_sums is None:
                decode_sums = self.decode_run(decode_ctx, 1, prompt=dp, rid=rid, sums=True)[3][0]
            cols, rest_t = self._prefill_split(new, cached)
            S = (decode_sums + cols)[None, :]
            return float(t + self._combine(S, 1)[0] + self._dec_const[B] + rest_t)
        if B:
            if decode_dt is None:
                decode_dt = float(self.decode_run(decode_ctx, 1, prompt=dp, rid=rid)[0][0])
            t += decode_dt - self._cst[B] + self._dec_const[B]
        if new:
            t += self.prefill_time(new, cached)
        return float(t)

    def swap_time(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` between GPU and host (one synchronous copy over PCIe)."""
        if nbytes <= 0:
            return 0.0
        part = Part("kv_swap", "pcie", device="pcie", pcie_bytes=float(nbytes), pcie_round_trips=1.0)
        return float(self.roofline(Cost.of(part)).total_s)
