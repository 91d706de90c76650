"""Decode work of a method, tabulated per context (or per request and context) for the fast pricer.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.costmodel.cost import NUMERIC_FIELDS, Cost
from kvsim.costmodel.roofline import CompiledRoofline, Roofline

FIELDS = len(NUMERIC_FIELDS)
ROWS_PER_CHUNK = 1 << 16  # per-request rows computed per method call ("rows" mode)


def part_amounts(cost: Cost, n: int) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    """Part keys, amounts ``[n, parts, fields]`` (each field broadcast to ``n``), and
    ``[parts, fields]``: is the field a plain scalar (the same for every sequence)?"""
    keys = [p.key for p in cost.parts]
    amounts = np.zeros((n, len(cost.parts), FIELDS))
    plain_scalar = np.zeros((len(cost.parts), FIELDS), dtype=bool)
    for i, p in enumerate(cost.parts):
        for j, f in enumerate(NUMERIC_FIELDS):
            v = getattr(p, f)
            plain_scalar[i, j] = not isinstance(v, np.ndarray)
            amounts[:, i, j] = np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))
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
    return layout, table, layout.batch_rows(batch, per_context[0])


class RequestRows:
    """("rows" mode) g per request and context, for methods whose decode work depends on the
    prompt: rows of request ``i`` hold contexts ``prompt_i - 1 .. prompt_i + output_i - 2``,
    computed a chunk of requests at a time; table row ``base[i] + ctx``. Row 0 is all zero."""

    def __init__(self, step, layout: DecodeLayout, keys: list[tuple], prompt: np.ndarray, output: np.ndarray,
                 extra: np.ndarray, extra_fn) -> None:
        self.method, self.layout, self.keys = step.method, layout, keys
        self.extra, self.extra_fn = extra, extra_fn
        self.prompt = np.asarray(prompt, dtype=np.int64)  # [N]
        self.output = np.asarray(output, dtype=np.int64)  # [N]
        self.base = np.zeros(self.prompt.shape[0], dtype=np.int64)  # table row = base[request] + ctx
        self.alive = np.ones(self.prompt.shape[0], dtype=bool)
        self.filled = 0  # requests [0, filled) have rows
        self.first_alive = 0
        self.table = np.zeros((2 * ROWS_PER_CHUNK, layout.width))
        self.top = 1  # first free row
        self.zero_row = 0

    def ensure(self, i: int) -> None:
        if i >= self.filled:
            self._fill(i)

    def _fill(self, i: int) -> None:
        """Rows of a chunk of requests from ``filled`` (at least up to ``i``)."""
        prompt, output, layout = self.prompt, self.output, self.layout
        window = output[self.filled:min(prompt.shape[0], self.filled + max(ROWS_PER_CHUNK, i - self.filled + 1))]
        end = self.filled + max(i - self.filled + 1, int(np.searchsorted(np.cumsum(window), ROWS_PER_CHUNK, side="right")))
        end = min(end, prompt.shape[0])
        requests = np.arange(self.filled, end)
        count = output[requests]
        n_rows = int(count.sum())
        if self.top + n_rows > self.table.shape[0]:
            self._compact(n_rows)
        starts = np.repeat(np.cumsum(count) - count, count)
        request_prompt = np.repeat(prompt[requests], count)
        ctx = request_prompt - 1 + (np.arange(n_rows) - starts)
        cost = self.method.decode_cost(ctx.astype(np.float64)[:, None], request_prompt.astype(np.float64)[:, None])
        assert [p.key for p in cost.parts] == self.keys, "method decode parts changed with the batch"
        rows = self.table[self.top:self.top + n_rows]
        for c, (part, field) in enumerate(layout.compiled.columns):
            rows[:, c] = np.asarray(getattr(cost.parts[part], field), dtype=np.float64)
        if layout.n_extras:
            rows[:, layout.ncol:layout.count_column] = (
                self.extra_fn(ctx[:, None], request_prompt[:, None])[:, 0, :] if self.extra_fn is not None
                else self.extra[ctx])
        rows[:, layout.count_column] = 1.0
        self.base[requests] = self.top + (np.cumsum(count) - count) - (prompt[requests] - 1)
        self.top += n_rows
        self.filled = end

    def _compact(self, need: int) -> None:
        """Keep the rows of requests that may still decode; grow the table if needed."""
        while self.first_alive < self.filled and not self.alive[self.first_alive]:
            self.first_alive += 1
        live = self.first_alive + np.flatnonzero(self.alive[self.first_alive:self.filled])
        count = self.output[live]
        start = self.base[live] + self.prompt[live] - 1
        index = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        keep = int(count.sum())
        table = np.zeros((max(self.table.shape[0], 2 * (1 + keep + need)), self.layout.width))
        table[1:1 + keep] = self.table[index]
        self.base[live] = 1 + (np.cumsum(count) - count) - (self.prompt[live] - 1)
        self.table, self.top = table, 1 + keep

    def blocks(self, rid: int, n: int) -> tuple[int, int] | None:
        """Extras (GPU, host blocks) of request ``rid`` holding ``n`` tokens (None if out of range)."""
        if rid >= self.filled:
            return None
        p = int(self.prompt[rid])
        if not p <= n <= p + int(self.output[rid]) - 1:
            return None
        row = self.table[int(self.base[rid]) + n - 1]
        first = self.layout.ncol  # (the first two extras)
        return int(row[first]), int(row[first + 1])

    def blocks_sum(self, rid: np.ndarray, n: np.ndarray) -> tuple[int, int]:
        first = self.layout.ncol
        e = self.table[self.base[rid] + n - 1, first:first + 2].sum(axis=0)
        return int(e[0]), int(e[1])
