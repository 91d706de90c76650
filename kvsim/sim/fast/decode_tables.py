"""Decode work of a method, tabulated per context for the fast pricer (per prompt and context:
:mod:`kvsim.sim.fast.request_rows`).

Methods price a decode batch with sums over its sequences, so every numeric field of every
decode part is ``sum_i g(ctx_i, prompt_i) + h(B)`` (separable; the pricer checks it on random
batches when it is built). The tables hold WORK: ``g`` per context (or per request and
context), ``h`` per batch size, as amounts in the columns of a
:class:`~kvsim.costmodel.roofline.CompiledRoofline` of the method's decode parts. A run of
``k`` steps of a batch sums ``[B, k]`` table rows and adds ``h(B)``: exact sums of work that
the compiled roofline turns into seconds. No seconds live in these tables.

Table layout (``[rows, width]``): the compiled roofline's work columns ``[0, ncol)``, then the
caller's per-sequence extras ``[ncol, ncol + E)`` (e.g. KV blocks), then a column of ones
(``count_column``: sums to the sequences of a step). A finished sequence points at an
all-zero row.

Fields a method pays once per batch (``KVMethod.once_per_batch_decode``: 0 or one constant
``c`` per sequence, ``max_i`` over the batch) are summed like the others and capped at ``c``
before pricing (:meth:`DecodeLayout.seconds`): ``min(sum_i g_i, c) = max_i g_i`` when every
``g_i`` is 0 or ``c``, which the table build checks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kvsim.costmodel.cost import NUMERIC_FIELDS, Cost
from kvsim.costmodel.roofline import CompiledRoofline, Roofline

FIELDS = len(NUMERIC_FIELDS)


def part_amounts(cost: Cost, n: int) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    """Part keys, amounts ``[n, parts, fields]`` (each field broadcast to ``n``), and
    ``[parts, fields]``: is the field a plain scalar (the same for every sequence)?"""
    keys = [p.key for p in cost.parts]
    amounts = np.zeros((n, len(cost.parts), FIELDS))
    plain_scalar = np.zeros((len(cost.parts), FIELDS), dtype=bool)
    for i, p in enumerate(cost.parts):
        for j, f in enumerate(NUMERIC_FIELDS):
            v = getattr(p, f)
            if isinstance(v, np.ndarray):
                amounts[:, i, j] = np.broadcast_to(v.astype(np.float64, copy=False), (n,))
            else:
                plain_scalar[i, j] = True
                if v:
                    amounts[:, i, j] = float(v)
    return keys, amounts, plain_scalar


def batch_work(method, keys: list[tuple], max_seqs: int, ctx: float, prompt: float | None) -> np.ndarray | None:
    """Work of ``B`` copies of one sequence, ``[max_seqs + 1, P, F]`` for ``B = 0 .. max_seqs``
    (None when the method's parts change with the batch size)."""
    out = None
    for b in range(1, max_seqs + 1):
        ctx_b = np.full(b, ctx)
        cost = method.decode_cost(ctx_b) if prompt is None else method.decode_cost(ctx_b, np.full(b, prompt))
        got_keys, amounts, _ = part_amounts(cost, 1)
        if got_keys != keys:
            return None
        if out is None:
            out = np.zeros((max_seqs + 1,) + amounts.shape[1:])
        out[b] = amounts[0]
    return out


@dataclass(frozen=True)
class DecodeLayout:
    """How decode work is laid out in table rows, and the compiled roofline that prices it."""

    compiled: CompiledRoofline
    part_of_column: np.ndarray  # [ncol] part index of each work column
    field_of_column: np.ndarray  # [ncol] NUMERIC_FIELDS index of each work column
    n_extras: int  # E
    once: tuple[tuple[int, float], ...] = ()  # (work column, cap): fields paid once per batch

    def seconds(self, amounts: np.ndarray) -> np.ndarray:
        """Seconds of ``[..., ncol]`` summed work (once-per-batch columns capped first)."""
        if self.once:
            amounts = amounts.copy()
            for column, cap in self.once:
                np.minimum(amounts[..., column], cap, out=amounts[..., column])
        return self.compiled.seconds(amounts)

    @property
    def ncol(self) -> int:
        return len(self.compiled.columns)

    @property
    def count_column(self) -> int:
        """Table column of ones (sums to the sequences of a step); extras are ``[ncol, count_column)``."""
        return self.ncol + self.n_extras

    @property
    def width(self) -> int:
        return self.ncol + self.n_extras + 1

    def to_columns(self, amounts: np.ndarray) -> np.ndarray:
        """``[n, P, F]`` amounts -> ``[n, ncol]`` work columns."""
        return amounts[:, self.part_of_column, self.field_of_column]

    def batch_rows(self, batch: np.ndarray, per_sequence: np.ndarray) -> np.ndarray:
        """``[B + 1, ncol]`` work ``h(B) = batch(B) - B g`` a step of ``B`` sequences adds to the
        sum of its sequences' table rows. ``batch`` ``[B + 1, P, F]``: work of ``B`` copies of a
        sequence whose own work is ``g = per_sequence`` ``[P, F]``."""
        count = np.arange(batch.shape[0], dtype=np.float64)[:, None, None]
        return self.to_columns(batch - count * per_sequence)


def decode_layout(roofline: Roofline, parts, used: np.ndarray, shared_keys: set, n_extras: int) -> DecodeLayout:
    """Work columns for the ``used`` ``[P, F]`` (part, field) amounts, and every field of a part
    whose identity the prefill shares (``shared_keys``: its chunks add work there)."""
    used = used | np.array([[p.key in shared_keys] * FIELDS for p in parts], dtype=bool).reshape(used.shape)
    part_index, field_index = np.nonzero(used)
    compiled = roofline.compile(parts, [(int(i), NUMERIC_FIELDS[j]) for i, j in zip(part_index, field_index)])
    return DecodeLayout(compiled, part_index.astype(np.intp), field_index.astype(np.intp), n_extras)


def context_table(step, roofline: Roofline, max_ctx: int, max_seqs: int, extra: np.ndarray, shared_keys: set):
    """("table" mode) g per context ``0 .. max_ctx``: ``(layout, table [max_ctx + 2, width],
    batch rows [max_seqs + 1, ncol])``, the last table row all zero; None if the decode parts
    change with the batch."""
    method, n = step.method, max_ctx + 1
    keys, per_context, _ = part_amounts(method.decode_cost(np.arange(n, dtype=np.float64)[:, None]), n)  # [n, P, F]
    parts = method.decode_cost(np.array([1.0])).parts
    if [p.key for p in parts] != keys:
        return None
    batch = batch_work(method, keys, max_seqs, 0.0, None)  # [B + 1, P, F]: B sequences at context 0
    if batch is None:
        return None
    used = (per_context != 0).any(axis=0) | (batch != 0).any(axis=0)
    layout = decode_layout(roofline, parts, used, shared_keys, extra.shape[1])
    table = np.zeros((n + 1, layout.width))
    table[:n, : layout.ncol] = layout.to_columns(per_context)
    table[:n, layout.ncol:layout.count_column] = extra
    table[:n, layout.count_column] = 1.0
    batch_rows = layout.batch_rows(batch, per_context[0])
    if method.once_per_batch_decode:
        layout = once_columns(layout, parts, method.once_per_batch_decode, table, batch_rows, shared_keys)
        if layout is None:
            return None
    return layout, table, batch_rows


def once_columns(layout: DecodeLayout, parts, declared, table: np.ndarray, batch_rows: np.ndarray,
                 shared_keys: set) -> DecodeLayout | None:
    """``layout`` with the columns of the ``declared`` once-per-batch (part name, field) pairs and
    their caps; None (price by calling the method) unless each such column holds only 0 and one
    constant, adds nothing per batch size and gets no prefill work in a mixed step."""
    once = []
    for column, (i, j) in enumerate(zip(layout.part_of_column.tolist(), layout.field_of_column.tolist())):
        if (parts[i].name, NUMERIC_FIELDS[j]) not in declared:
            continue
        if parts[i].key in shared_keys:
            return None
        values = np.unique(table[:, column])
        if values.size > 2 or values[0] != 0.0 or batch_rows[:, column].any():
            return None
        once.append((column, float(values[-1])))
    return replace(layout, once=tuple(once))
