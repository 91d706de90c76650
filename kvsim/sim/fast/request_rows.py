"""("rows" mode) Decode work rows of prompt-aware methods, per request or shared by prompt length.

A method whose decode work depends on the prompt (MagicPIG, H2O, SnapKV, ...) has one table row
per (prompt, context): the work ``g(ctx, prompt)`` in the work columns of a
:class:`~kvsim.sim.fast.decode_tables.DecodeLayout`, then the per-sequence extras, then a one
(see :mod:`kvsim.sim.fast.decode_tables`). Request ``i`` decodes contexts ``prompt_i - 1 ..
prompt_i + output_i - 2`` and reads table row ``base[i] + ctx``.

A row depends only on (prompt, ctx), so requests with the same effective prompt length ``P``
can read one shared block of rows covering contexts ``P - 1 .. P - 1 + longest(P) - 1``
(``longest(P)``: the largest output of the trace's requests with that prompt). Sharing pays
when the prompt's requests together need many more rows than ``longest(P)``; blocks are kept
for the whole run (never moved), so their rows must fit a memory budget. Which prompts share
is decided once, from the whole trace (its prompts and outputs are known up front): those
that save the most rows per row kept, while their blocks fit ``SHARED_TABLE_BYTES``. Every
other request gets its own block (its ``output_i`` rows), dropped once it is released.

(Why not cache every prompt's block and evict the least recently used? On
``synthetic-burstgpt`` nearly every prompt length has a request with the maximum output
(1,024 tokens), so all blocks take ~2.07M rows whichever the trace size, 150 MB for MagicPIG's
9 columns (330 MB for its 20 before folding); an LRU cache of 1M rows still recomputes ~300M
rows at 1M requests, about as many as one block per request, because evicted blocks come back
at full length.)

Table layout (``[rows, width]``): row 0 all zero (finished sequences point at it); rows
``[1, own_start)`` the shared blocks, each at a fixed place; rows ``[own_start, top)`` the
blocks of single requests, compacted when the table is full. Rows are computed a chunk of
requests at a time, all the chunk's missing blocks (shared and own) together, in method calls of
``METHOD_ROWS`` rows.
"""

from __future__ import annotations

import numpy as np

from kvsim.sim.fast.folding import FoldBroken

ROWS_PER_CHUNK = 1 << 16  # rows computed per chunk (about; at least the requested request's)
# rows per method call within a chunk: the method's ~50 temporaries of 64 KiB stay in malloc's heap
# (at 64k rows each is 512 KiB, mmapped and faulted in page by page on every call: ~2.5x slower)
METHOD_ROWS = 1 << 13
# Memory for the shared blocks (fixed: kept for the whole run; copied once more while the table
# grows). Rows hold the work columns that vary per sequence (kvsim.sim.fast.folding): 9 columns of
# 8 bytes for MagicPIG, 48 MiB hold ~700k rows (10k synthetic-burstgpt requests: 1.28M rows computed
# vs 1.53M with 32 MiB). Bounded by peak memory, MagicPIG at 1M requests (the goal is under 500 MB):
# 464 MB with 32 MiB, 480 MB with 48 MiB, 500 MB with 64 MiB (measured 2026-12-01, branch mpig).
SHARED_TABLE_BYTES = 48 << 20


def choose_shared(longest: np.ndarray, total: np.ndarray, budget_rows: int) -> np.ndarray:
    """``[D]`` bool: prompts whose requests share one block. ``longest`` ``[D]``: rows of the
    prompt's block; ``total`` ``[D]``: rows its requests need one block each. Prompts that save
    rows, most rows saved per row kept first, while their blocks fit ``budget_rows``."""
    saves = total > longest  # (a prompt with one request saves nothing)
    candidates = np.flatnonzero(saves)
    order = candidates[np.argsort(-(total[candidates] / longest[candidates]), kind="stable")]
    fits = np.cumsum(longest[order]) <= budget_rows
    shared = np.zeros(longest.shape[0], dtype=bool)
    shared[order[fits]] = True  # (cumsum rises: ``fits`` is a prefix)
    return shared


def _runs(start: np.ndarray, count: np.ndarray, n_rows: int) -> list[tuple[int, int]]:
    """``(first table row, rows)`` of the runs of adjacent blocks among the leading blocks of
    ``start``/``count`` that hold ``n_rows`` rows (blocks in increasing table order; a chunk computes
    some tens of shared blocks of ~1,000 rows, so slices beat a fancy-index scatter of every row)."""
    out: list[tuple[int, int]] = []
    total = 0
    for dst, n in zip(start.tolist(), count.tolist()):
        if total >= n_rows:
            break
        total += n
        if out and out[-1][0] + out[-1][1] == dst:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((dst, n))
    return out


class RequestRows:
    """Table rows of the requests' decode work; table row of request ``i`` at context ``ctx``
    is ``base[i] + ctx``.

    Args:
        step: the StepModel (its ``method`` computes the work).
        layout: the :class:`~kvsim.sim.fast.decode_tables.DecodeLayout` of the columns.
        keys: the method's decode part keys (checked on every call).
        prompt, output: ``[N]`` effective prompt and output tokens of every request
            (rejected requests: output 1).
        extra: ``[max_ctx + 1, E]`` extras per context (used when ``extra_fn`` is None).
        extra_fn: ``extra_fn(ctx [n, 1], prompt [n, 1]) -> E`` arrays ``[n, 1]``: extras per (ctx, prompt).
        shared_bytes: memory for the shared blocks (default ``SHARED_TABLE_BYTES``).
        columns: ``(part of the method's decode cost, field)`` of the work columns the rows
            hold (default: the layout's); the layout's other columns are folded
            (:mod:`kvsim.sim.fast.folding`). Rows: ``ncol`` work columns, the extras, a one.
        checks: ``(part, field, amount)`` of the folded columns, checked on every chunk.
    """

    def __init__(self, step, layout, keys: list[tuple], prompt: np.ndarray, output: np.ndarray,
                 extra: np.ndarray, extra_fn, shared_bytes: int | None = None, columns: list | None = None,
                 checks: list = ()) -> None:
        self.method, self.layout, self.keys = step.method, layout, keys
        self.columns = list(layout.compiled.columns) if columns is None else columns
        self.checks = list(checks)
        self.ncol = len(self.columns)  # work columns in the rows
        self.count_column = self.ncol + layout.n_extras
        self.width = self.count_column + 1
        self.extra, self.extra_fn = extra, extra_fn
        self.prompt = np.asarray(prompt, dtype=np.int64)  # [N] tokens
        self.output = np.asarray(output, dtype=np.int64)  # [N] tokens (= rows of the request)
        n_requests = self.prompt.shape[0]
        # distinct prompt lengths [D] and each request's index into them [N]
        self.distinct_prompt, self.prompt_index = np.unique(self.prompt, return_inverse=True)
        self.prompt_index = self.prompt_index.reshape(-1).astype(np.int64)
        n_distinct = self.distinct_prompt.shape[0]
        self.longest = np.zeros(n_distinct, dtype=np.int64)  # [D] rows of each prompt's block
        np.maximum.at(self.longest, self.prompt_index, self.output)
        total = np.bincount(self.prompt_index, weights=self.output, minlength=n_distinct)  # [D] rows
        budget_rows = int(SHARED_TABLE_BYTES if shared_bytes is None else shared_bytes) // (8 * self.width)
        shared = choose_shared(self.longest, total, budget_rows)  # [D]
        size = np.where(shared, self.longest, 0)
        self.block_start = 1 + np.cumsum(size) - size  # [D] table row of context P - 1 (shared prompts)
        self.block_done = ~shared  # [D] shared block computed (True for prompts that do not share)
        self.own_start = 1 + int(size.sum())  # first row of the single requests' blocks
        self.shares = shared[self.prompt_index]  # [N] request reads a shared block
        self.base = np.zeros(n_requests, dtype=np.int64)  # [N] table row = base[request] + ctx
        sharing = np.flatnonzero(self.shares)
        self.base[sharing] = self.block_start[self.prompt_index[sharing]] - (self.prompt[sharing] - 1)
        self.alive = np.ones(n_requests, dtype=bool)  # [N] not released
        self.filled = 0  # requests [0, filled) have rows
        self.first_alive = 0
        self.table = np.zeros((self.own_start + 2 * ROWS_PER_CHUNK, self.width))  # [rows, width]
        self.top = self.own_start  # first free row
        self.zero_row = 0
        self.method_calls = 0

    def ensure(self, i: int) -> None:
        if i >= self.filled:
            self._fill(i)

    def _fill(self, i: int) -> None:
        """Rows of a chunk of requests from ``filled`` (at least up to ``i``)."""
        first, n_requests = self.filled, self.prompt.shape[0]
        stop = min(n_requests, first + max(ROWS_PER_CHUNK, i - first + 1))
        index = self.prompt_index[first:stop]  # [W]
        # new rows per request: its own block, or its prompt's block if not computed yet
        # (counted at each of the prompt's requests in the window: chunks come out smaller)
        new_rows = np.where(self.shares[first:stop], np.where(self.block_done[index], 0, self.longest[index]),
                            self.output[first:stop])
        end = first + max(i - first + 1, int(np.searchsorted(np.cumsum(new_rows), ROWS_PER_CHUNK, side="right")))
        end = min(end, n_requests)
        chunk_shares = self.shares[first:end]
        wanted = np.zeros(self.longest.shape[0], dtype=bool)  # (a mask, not np.unique: that imports numpy.ma, ~30 ms)
        wanted[self.prompt_index[first:end][chunk_shares & ~self.block_done[self.prompt_index[first:end]]]] = True
        blocks = np.flatnonzero(wanted)  # [S] prompts whose shared block this chunk computes
        own = first + np.flatnonzero(~chunk_shares)  # requests with their own block
        own_count = self.output[own]  # [R] rows
        n_own = int(own_count.sum())
        if self.top + n_own > self.table.shape[0]:
            self._compact(n_own)
        own_rows = self.top + np.cumsum(own_count) - own_count  # [R] table row of each request's first context
        self.base[own] = own_rows - (self.prompt[own] - 1)
        self._compute(np.concatenate([self.block_start[blocks], own_rows]),
                      np.concatenate([self.distinct_prompt[blocks], self.prompt[own]]),
                      np.concatenate([self.longest[blocks], own_count]), n_own)
        self.block_done[blocks] = True
        self.top += n_own
        self.filled = end

    def _compute(self, start: np.ndarray, prompt: np.ndarray, count: np.ndarray, n_own: int) -> None:
        """Rows of blocks ``[S]``: block ``s`` holds contexts ``prompt[s] - 1 ..`` (``count[s]``
        rows) from table row ``start[s]``; the last ``n_own`` rows are ``[top, top + n_own)``."""
        layout, n_rows = self.layout, int(count.sum())
        if not n_rows:
            return
        offset = np.arange(n_rows) - np.repeat(np.cumsum(count) - count, count)  # [n_rows] within its block
        row_prompt = np.repeat(prompt, count)  # [n_rows] tokens
        ctx = row_prompt - 1 + offset  # [n_rows] tokens in KV before the step
        n_shared = n_rows - n_own
        # columns first ([width, n_rows], each written contiguously), then one transposing copy
        # into the table (writing each column into the row-major table would stream it once per column)
        columns = np.empty((self.width, n_rows))
        kept, ctx_f, prompt_f = self.ncol, ctx.astype(np.float64), row_prompt.astype(np.float64)
        for a in range(0, n_rows, METHOD_ROWS):  # (the method's temporaries stay small: see METHOD_ROWS)
            b = min(a + METHOD_ROWS, n_rows)
            cost = self.method.decode_cost(ctx_f[a:b, None], prompt_f[a:b, None])
            self.method_calls += 1
            assert [p.key for p in cost.parts] == self.keys, "method decode parts changed with the batch"
            for c, (part, field) in enumerate(self.columns):
                columns[c, a:b] = getattr(cost.parts[part], field)
            for part, field, amount in self.checks:
                if not np.all(getattr(cost.parts[part], field) == amount):
                    raise FoldBroken(f"decode {field} of part {part} is not one constant per sequence")
            if layout.n_extras and self.extra_fn is not None:  # (each extra into its column: no stacking)
                for e, values in enumerate(self.extra_fn(ctx[a:b, None], row_prompt[a:b, None])):
                    columns[kept + e, a:b] = values[:, 0]
            elif layout.n_extras:
                columns[kept:self.count_column, a:b] = self.extra[ctx[a:b]].T
        columns[self.count_column] = 1.0
        rows = columns.T  # [n_rows, width]
        if n_shared:  # shared blocks (first, in table order): one slice copy per run of adjacent blocks
            src = 0
            for dst, n in _runs(start, count, n_shared):
                self.table[dst:dst + n] = rows[src:src + n]
                src += n
        self.table[self.top:self.top + n_own] = rows[n_shared:]

    def _compact(self, need: int) -> None:
        """Keep the single requests' rows that may still decode (and the shared blocks, in
        place); make room for ``need`` more rows, growing the table if needed."""
        while self.first_alive < self.filled and not self.alive[self.first_alive]:
            self.first_alive += 1
        span = slice(self.first_alive, self.filled)
        live = self.first_alive + np.flatnonzero(self.alive[span] & ~self.shares[span])  # [R]
        count = self.output[live]  # [R] rows
        start = self.base[live] + self.prompt[live] - 1  # [R] current first row
        keep = int(count.sum())
        index = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(keep)  # [keep] rows kept, in order
        low, region = self.own_start, self.table.shape[0] - self.own_start
        if keep + need > region // 2:  # (grow to twice what is needed: compaction stays rare)
            table = np.zeros((low + max(region, 2 * (keep + need)), self.width))
            table[:low] = self.table[:low]
            table[low:low + keep] = self.table[index]
            self.table = table
        else:
            self.table[low:low + keep] = self.table[index]  # (the gather is copied before the write)
        self.base[live] = low + (np.cumsum(count) - count) - (self.prompt[live] - 1)
        self.top = low + keep

    def blocks(self, rid: int, n: int) -> tuple[int, int] | None:
        """Extras (GPU, host blocks) of request ``rid`` holding ``n`` tokens (None if out of range)."""
        if rid >= self.filled:
            return None
        p = self.prompt.item(rid)  # (item: a Python int, no numpy scalar)
        if not p <= n <= p + self.output.item(rid) - 1:
            return None
        row, first = self.base.item(rid) + n - 1, self.ncol  # (the first two extras)
        return int(self.table.item(row, first)), int(self.table.item(row, first + 1))

    def blocks_sum(self, rid: np.ndarray, n: np.ndarray) -> tuple[int, int]:
        """Sum of :meth:`blocks` over a decode batch (``n`` in range)."""
        first = self.ncol
        e = self.table[self.base[rid] + n - 1, first:first + 2].sum(axis=0)
        return int(e[0]), int(e[1])
