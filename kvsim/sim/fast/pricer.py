"""Exact, cached step pricing for the simulator: the numbers of :class:`~kvsim.pricing.step.StepModel`,
at a fraction of the Python cost.

``StepModel.time_s`` builds a :class:`~kvsim.costmodel.cost.Cost` (linear layers + framework overhead
+ the method's decode attention + the method's prefill work) and prices it with the roofline:
~140 us per call, too slow for millions of steps. :class:`StepPricer` splits the same work into
pieces that can be cached; every conversion to seconds goes through the roofline (a
:class:`~kvsim.costmodel.roofline.CompiledRoofline` for decode runs). Which pieces apply follows
the method's declared traits (``additive_decode``, ``prompt_aware``, ``shared_step_parts``);
a stand-in step model (tests) is priced by calling it (``mode == "exact"``). What makes the
split safe is ``tests/test_sim_reference.py`` (the fast simulator equals the plain reference)
and the pricer tests of ``tests/test_roofline.py``, not a check at build time.

1. The linear layers and the engine overhead (both functions of the step's tokens and sampled
   sequences only) share no part identity or overlap tag with the
   method's parts (:meth:`Roofline.separable`), so a step's time is theirs (cached per
   sampled rows, in blocks of token counts) plus the method's. The method's decode and
   prefill parts are priced apart (prefill cached per tuple of ``(new, cached)`` chunks)
   unless they share an identity (KIVI and GEAR quantize in both: ``joint_mixed``); then the
   prefill's work on the shared parts is added to the decode work before pricing.
2. Decode work is separable (:mod:`kvsim.sim.fast.decode_tables`): tabulated per context
   (``decode_mode == "table"``) or, when it depends on the prompt (H2O, SnapKV, MagicPIG), per
   request or per prompt length (``"rows"``, :mod:`kvsim.sim.fast.request_rows`). A run of
   ``k`` decode steps of a batch is one gather ``[B, k]`` of
   work rows, a sum over the batch, and one compiled roofline evaluation; sequences that
   finish inside the run drop out by pointing at an all-zero row. Methods whose decode is not
   separable are called on the ``[k, B]`` context array (``"call"``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.roofline import Roofline
from kvsim.costmodel.transformer import linear_cost
from kvsim.pricing.step import StepModel
from kvsim.sim.fast.decode_tables import context_table
from kvsim.sim.fast.folding import FoldBroken, rows_layout, unfold
from kvsim.sim.fast.request_rows import RequestRows

TOKEN_BLOCK = 512  # token counts per cached linear-layer block


class DecodeRunPrices(NamedTuple):
    """What :meth:`StepPricer.decode_run` returns for a run of ``k`` decode-only steps
    (a NamedTuple: named fields, created once per run on the hot path)."""

    dt: np.ndarray  # [k] seconds of each step
    extras: np.ndarray  # [k, E] per-sequence extras summed over each step's batch
    batch_sizes: np.ndarray | None  # [k] sequences in each step (runs with ``left``), else None
    work: np.ndarray | None  # [k, ncol] decode work summed over the batch ("table"/"rows"), else None


class StepPricer:
    """Step times equal (to ~1e-15 relative) to ``StepModel.time_s``.

    Args:
        step: the StepModel to reproduce (or any object with its ``time_s``: priced as given).
        max_ctx: largest decode context (tokens in KV before a step) to tabulate.
        max_seqs: largest batch size.
        extra: optional ``[max_ctx + 1, E]`` per-sequence quantities indexed by context that
            :meth:`decode_run` sums over the batch alongside the price (e.g. KV blocks).
        extra_fn: ``extra_fn(ctx [..., B], prompt [B]) -> E`` arrays ``[..., B]``, used
            instead of ``extra`` when the decode depends on the prompt.
        prompt, output: ``[N]`` effective prompt and output tokens of the trace's requests
            (for per-request rows; without them prompt-aware methods use ``"call"``).
    """

    def __init__(self, step, max_ctx: int, max_seqs: int, extra: np.ndarray | None = None,
                 extra_fn=None, roofline=None, prompt: np.ndarray | None = None,
                 output: np.ndarray | None = None) -> None:
        self.step = step
        self.roofline = roofline if roofline is not None else step.roofline  # also prices SWAP copies
        self.max_ctx, self.max_seqs = int(max_ctx), int(max_seqs)
        n = self.max_ctx + 1
        self.extra = np.zeros((n, 0)) if extra is None else np.asarray(extra, dtype=np.float64).reshape(n, -1)
        self.extra_fn = extra_fn
        self._linear_cache: dict[tuple[int, int], list[float]] = {}  # (sampled, token block) -> seconds
        self._prefill_cache: dict[tuple, object] = {}
        self._lone_prefill: dict[int, list[float]] = {}  # token block -> seconds of one chunk, nothing cached
        self._step_offsets = np.arange(1024)  # [>= k] 0, 1, 2, ...
        self.layout = self.table = self.batch_rows = self.rows = None  # (batch_rows: [max_seqs + 1, ncol] work)
        self.joint_mixed = False
        self._split_prefill = False
        self.table_generation = 0  # changes when the table's columns do (a WorkLedger rebuilds then)
        # folded "rows" (kvsim.sim.fast.folding): [max_seqs + 1, ncol] work and seconds of parts of B alone
        self._fold_base, self._fixed_s = None, 0.0
        self._fold_base_first = None  # (the same base, column-first [ncol, max_seqs + 1]: unfold())
        # seconds of the linear layers + overhead of a decode-only step of B sequences: [max_seqs + 1]
        self.linear_decode = np.zeros(self.max_seqs + 1)  # (zero while the method's decode is checked)
        is_model = isinstance(step, StepModel)
        method = step.method if is_model else None
        # what the method declares (tests/test_methods_contract.py checks each declaration)
        self.mode = "fast" if is_model and self._read_structure() else "exact"
        self._lone_prefill_ok = is_model and method.vectorized  # (array calls equal per-chunk calls)
        self.prompt_aware = is_model and method.prompt_aware
        self.decode_mode = "call"
        if self.mode == "fast" and method.additive_decode:
            if not self.prompt_aware and extra_fn is None:  # (prompt-aware extras need per-request rows)
                self.decode_mode = "table"
                ok = self._build_table()
            else:
                self.decode_mode = "rows"
                ok = prompt is not None and self._build_rows(prompt, output)
            if not ok:
                self.decode_mode = "call"
                self.rows = None
        if self.mode == "fast":
            self.linear_decode = np.array([self.lin_time(b, b) for b in range(self.max_seqs + 1)])
        self.set_flags()

    def set_flags(self) -> None:
        """Plain-Python copies of what decode_run checks on every call."""
        self._tables = self.mode == "fast" and self.decode_mode in ("table", "rows")
        self._linear_decode_list = self.linear_decode.tolist()
        self._run_linear = self.linear_decode + self._fixed_s  # (a run's: + parts of the batch size alone)
        self._run_linear_list = self._run_linear.tolist()
        if self._tables:
            layout = self.layout
            cols = layout if self._fold_base is None else self.rows  # (folded: the rows' kept columns; unfold() adds the rest)
            self._ncol, self._count = cols.ncol, cols.count_column
            # the run's pricing: the compiled roofline (after the once-per-batch caps, if any)
            self._seconds = layout.seconds if layout.once else layout.compiled.seconds
            no_batch_work = ~self.batch_rows.any(axis=1) | (self._fold_base is not None)  # [max_seqs + 1] nothing to add
            self._no_batch_work, self._never_batch_work = no_batch_work.tolist(), bool(no_batch_work.all())

    # ------------------------------------------------------------------ structure
    def _read_structure(self) -> bool:
        """Part identities of the method's decode and prefill work. The method's parts never meet
        the linear layers' and the overhead's (a contract rule; if broken, price exactly);
        ``joint_mixed``: decode and prefill parts meet (the ``shared_step_parts`` trait)."""
        m = self.step.method
        linear = linear_cost(self.step.dep, 8.0, 2.0).parts + self.step.overhead_cost(8.0, 2.0).parts
        decode = m.decode_cost(np.array([3.0, 5.0])).parts
        prefill = m.prefill_cost(np.array([7.0]), np.array([2.0])).parts
        if not Roofline.separable(linear, decode + prefill):
            return False
        self.joint_mixed = m.shared_step_parts
        decode_keys = {p.key for p in decode}
        self._shared_keys = decode_keys & {p.key for p in prefill}  # (the prefill adds work to these)
        self._split_prefill = Roofline.separable(decode, [p for p in prefill if p.key not in decode_keys])
        return True

    def _build_table(self) -> bool:
        """"table" mode: work per context; False if the decode is not separable."""
        got = context_table(self.step, self.roofline, self.max_ctx, self.max_seqs, self.extra, self._shared_keys)
        if got is None:
            return False
        self.layout, self.table, self.batch_rows = got
        self.zero_row = self.table.shape[0] - 1
        return True

    def _build_rows(self, prompt: np.ndarray, output: np.ndarray, fold: bool = True) -> bool:
        """"rows" mode: work per request and context (:func:`kvsim.sim.fast.folding.rows_layout`:
        columns constant per sequence folded out of the rows unless ``fold`` is False)."""
        got = rows_layout(self.step.method, self.roofline, self.max_seqs, self._shared_keys, self.extra.shape[1],
                          fold, split_parts=not self.joint_mixed)
        if got is None:
            return False
        keys, self.layout, self.batch_rows, f = got
        if f is not None:
            self._fold_base, self._fixed_s = f.base, f.fixed_s
            self._fold_base_first = np.ascontiguousarray(f.base.T)
        self.rows = RequestRows(self.step, self.layout, keys, prompt, output, self.extra, self.extra_fn,
                                columns=None if f is None else f.columns, checks=() if f is None else f.checks)
        self.zero_row = self.rows.zero_row
        return True

    # ------------------------------------------------------------------ per-request rows
    def ensure_rows(self, i: int) -> None:
        """Rows of request ``i`` (and the next ones, a chunk at a time) are in the table."""
        if self.rows is not None:
            try:
                self.rows.ensure(i)
            except FoldBroken:  # a folded column varies after all: rows with every column
                old = self.rows
                self._fold_base, self._fixed_s, self._fold_base_first = None, 0.0, None
                self._build_rows(old.prompt, old.output, fold=False)
                self.rows.alive[:] = old.alive
                self.rows.ensure(max(i, old.filled - 1))
                self.set_flags()
                self.table_generation += 1

    def work_rows(self) -> np.ndarray:
        """``[rows, width]`` the decode work table ("table" or "rows" mode)."""
        return self.table if self.rows is None else self.rows.table

    def first_row(self, rid, ctx):
        """Row of :meth:`work_rows` of request ``rid`` at context ``ctx`` (ints, or ``[B]`` arrays)."""
        return ctx if self.rows is None else self.rows.base[rid] + ctx

    def release(self, i: int) -> None:
        """Request ``i`` will not decode again (finished or rejected)."""
        if self.rows is not None:
            self.rows.alive[i] = False

    def row_blocks(self, rid: int, n: int) -> tuple[int, int] | None:
        """Extras (GPU, host blocks) of request ``rid`` holding ``n`` tokens, from its rows (None if out of range)."""
        return None if self.rows is None or self.decode_mode != "rows" else self.rows.blocks(rid, n)

    def rows_blocks_sum(self, rid: np.ndarray, n: np.ndarray) -> tuple[int, int]:
        """Sum of :meth:`row_blocks` over a decode batch (``n = ctx + 1`` in range by construction)."""
        return self.rows.blocks_sum(rid, n)

    # ------------------------------------------------------------------ pieces
    def lin_time(self, tokens: int, sampled: int) -> float:
        """Linear layers + framework overhead of a step with ``tokens`` tokens and ``sampled`` sampled rows."""
        key = (sampled, tokens // TOKEN_BLOCK)
        row = self._linear_cache.get(key)
        if row is None:
            t = np.arange(key[1] * TOKEN_BLOCK, (key[1] + 1) * TOKEN_BLOCK, dtype=np.float64)
            cost = linear_cost(self.step.dep, t, float(sampled)) + self.step.overhead_cost(t, float(sampled))
            row = np.broadcast_to(np.asarray(self.roofline.seconds(cost), dtype=np.float64), t.shape).tolist()
            self._linear_cache[key] = row
        return row[tokens % TOKEN_BLOCK]

    def prefill_time(self, new: tuple, cached: tuple) -> float:
        """Method prefill work of chunks ``new`` tokens after ``cached`` tokens (cached per tuple;
        one chunk with nothing cached, the common case, from :meth:`_lone_prefill_row`)."""
        key = (new, cached)
        t = self._prefill_cache.get(key)
        if t is None:
            if len(new) == 1 and cached[0] == 0 and self._lone_prefill_ok:
                t = self._prefill_cache[key] = self._lone_prefill_row(new[0] // TOKEN_BLOCK)[new[0] % TOKEN_BLOCK]
                return t
            t = float(self.roofline.seconds(self._prefill_cost(new, cached)))
            self._prefill_cache[key] = t
        return t

    def _lone_prefill_row(self, block: int) -> list[float]:
        """Seconds of one chunk of ``n`` new tokens after none cached, for every ``n`` of token
        block ``block``, from one array call of the method (``vectorized``: the trait, checked by
        the method contract test, says it prices each element as a per-chunk call would) and the
        roofline."""
        row = self._lone_prefill.get(block)
        if row is None:
            n = np.arange(block * TOKEN_BLOCK, (block + 1) * TOKEN_BLOCK, dtype=np.float64)
            n[n == 0] = 1.0  # (a chunk has at least one token; entry 0 is never read)
            cost = self.step.method.prefill_cost(n[:, None], np.zeros((n.size, 1)))
            row = self._lone_prefill[block] = np.broadcast_to(np.asarray(self.roofline.seconds(cost), dtype=np.float64),
                                                              n.shape).tolist()
        return row

    def _prefill_cost(self, new: tuple, cached: tuple) -> Cost:
        return self.step.method.prefill_cost(np.array(new, dtype=np.float64), np.array(cached, dtype=np.float64))

    def _prefill_split(self, new: tuple, cached: tuple) -> tuple[np.ndarray, float]:
        """(``[ncol]`` work of the prefill parts sharing a decode identity, seconds of the other parts)."""
        key = ("split", new, cached)
        got = self._prefill_cache.get(key)
        if got is None:
            compiled = self.layout.compiled
            part_index = {p.key: i for i, p in enumerate(compiled.parts)}
            shared_work, rest = np.zeros(self.layout.ncol), []
            for p in self._prefill_cost(new, cached).parts:
                if p.key not in part_index:
                    rest.append(p)
                    continue
                for (i, field), column in compiled.column_of.items():  # every field of a shared part is a column
                    if i == part_index[p.key]:
                        shared_work[column] += float(getattr(p, field))
            got = self._prefill_cache[key] = (shared_work, float(self.roofline.seconds(Cost(tuple(rest)))))
        return got

    def decode_run(self, ctx: np.ndarray, k: int, left: np.ndarray | None = None, prompt: np.ndarray | None = None,
                   rid: np.ndarray | None = None) -> DecodeRunPrices:
        """Prices of ``k`` decode-only steps of batch ``ctx`` ([B] int, tokens in KV before
        step 0; step j has ``ctx + j``).

        ``left`` ([B], needs :attr:`masked_ok`): sequence ``i`` takes part in steps
        ``j < left[i]`` only (it finishes after its last token); at least one is in every
        step. ``prompt`` [B]: prompt tokens per sequence; ``rid`` [B]: request ids ("rows").
        """
        B = ctx.shape[0]
        if not self._tables:
            assert left is None, "runs with finishing sequences need table pricing"
            steps = ctx[None, :] + np.arange(k)[:, None]  # [k, B]
            contexts = steps.astype(np.float64)
            prompts = None if prompt is None else np.broadcast_to(np.asarray(prompt, dtype=np.float64), contexts.shape)
            if self.mode == "exact":
                dt = self.step.time_s(decode_ctx=contexts, decode_prompt=prompts)
            else:
                dt = self._linear_decode_list[B] + self.roofline.seconds(self.step.method.decode_cost(contexts, prompts))
            dt = np.broadcast_to(np.asarray(dt, dtype=np.float64), (k,))
            if self.extra_fn is not None:
                extras = np.stack([e.sum(axis=1) for e in self.extra_fn(steps, prompt)], axis=-1)
            else:
                extras = self.extra[steps].sum(axis=1) if self.extra.shape[1] else self.extra[:k]
            return DecodeRunPrices(dt, extras, None, None)
        table = self.work_rows()
        first_row = self.first_row(rid, ctx)  # [B] table row of step 0
        offsets = self._offsets(k)
        if left is None:
            index = first_row[:, None] + offsets  # [B, k]
        else:  # finished rows read the all-zero row
            index = np.where(offsets < left[:, None], first_row[:, None] + offsets, self.zero_row)
        return self.summed_run(table[index].sum(axis=0), B, left is not None)

    def summed_run(self, summed: np.ndarray, B: int, masked: bool) -> DecodeRunPrices:
        """:meth:`decode_run` of a batch whose rows' work per step is already summed: ``summed``
        ``[k, width]`` (a :class:`kvsim.sim.fast.work_ledger.WorkLedger` window, read only); ``B``
        rows; ``masked``: rows finish inside the run (the steps' batch sizes from the count column)."""
        ncol, count, seconds = self._ncol, self._count, self._seconds
        if not masked:
            if self._fold_base is not None:
                amounts = unfold(self._fold_base_first, ncol, summed[:, :ncol], B)
            elif self._no_batch_work[B]:
                amounts = summed[:, :ncol]
            else:
                amounts = summed[:, :ncol] + self.batch_rows[B]
            dt = seconds(amounts)
            dt += self._run_linear_list[B]
            return DecodeRunPrices(dt, summed[:, ncol:count], None, amounts)
        batch_sizes = summed[:, count].astype(np.intp)  # [k]
        amounts = (unfold(self._fold_base_first, ncol, summed[:, :ncol], batch_sizes) if self._fold_base is not None
                   else summed[:, :ncol] if self._never_batch_work else summed[:, :ncol] + self.batch_rows[batch_sizes])
        dt = seconds(amounts)
        dt += self._run_linear[batch_sizes]
        return DecodeRunPrices(dt, summed[:, ncol:count], batch_sizes, amounts)

    def _offsets(self, k: int) -> np.ndarray:
        """``[k]`` 0, 1, ..., k - 1 (a view of a cached range)."""
        if k > self._step_offsets.shape[0]:
            self._step_offsets = np.arange(2 * k)
        return self._step_offsets[:k]

    @property
    def masked_ok(self) -> bool:
        """Can :meth:`decode_run` price runs in which sequences finish (``left``)?"""
        return self.mode == "fast" and self.decode_mode in ("table", "rows")

    # ------------------------------------------------------------------ whole steps
    def step_time(self, decode_ctx: np.ndarray, new: tuple = (), cached: tuple = (), n_sampled: int = 0,
                  decode_dt: float | None = None, decode_prompt: np.ndarray | None = None,
                  rid: np.ndarray | None = None, decode_sums: np.ndarray | None = None, direct: bool = False) -> float:
        """One step: ``decode_ctx`` [B] decoding sequences (prompts ``decode_prompt``, request
        ids ``rid``) plus prefill chunks ``new``/``cached``. With ``decode_dt`` (and no
        ``joint_mixed``), ``decode_ctx`` may be just the batch size ``B``.

        ``decode_dt`` / ``decode_sums`` may pass the decode-only time / ``[ncol]`` decode work
        (:attr:`DecodeRunPrices.work`) of the same batch from a previous :meth:`decode_run`.
        ``direct``: price the decode by calling the method (checks, before any row exists).
        """
        B = decode_ctx if decode_ctx.__class__ is int else int(decode_ctx.shape[0])
        if decode_dt is not None and not self.joint_mixed and self.mode == "fast":  # the common case
            tokens = B + sum(new)
            row = self._linear_cache.get((B + n_sampled, tokens // TOKEN_BLOCK))
            t = row[tokens % TOKEN_BLOCK] if row is not None else self.lin_time(tokens, B + n_sampled)
            if B:  # (a prefill-only step ignores the decode time it was offered)
                t += decode_dt - self._linear_decode_list[B]
            if new:
                p = self._prefill_cache.get((new, cached))
                t += p if p is not None else self.prefill_time(new, cached)
            return t
        prompt_array = None if decode_prompt is None or not B else np.asarray(decode_prompt)  # [B]
        prompts = None if prompt_array is None else prompt_array.astype(np.float64)
        if self.mode == "exact":
            return float(self.step.time_s(decode_ctx=decode_ctx.astype(np.float64),
                                          prefill_new=np.array(new, dtype=np.float64),
                                          prefill_cached=np.array(cached, dtype=np.float64),
                                          n_sampled_prefill=n_sampled, decode_prompt=prompts))
        t = self.lin_time(B + sum(new), B + n_sampled)
        if B and (direct or (new and self.joint_mixed and (self.decode_mode == "call" or not self._split_prefill))):
            cost = self.step.method.decode_cost(decode_ctx.astype(np.float64), prompts)
            if new:
                cost = cost + self._prefill_cost(new, cached)
            return float(t + self.roofline.seconds(cost))
        if B and new and self.joint_mixed:
            if decode_sums is None:
                decode_sums = self.decode_run(decode_ctx, 1, prompt=prompt_array, rid=rid).work[0]
            shared_work, rest_s = self._prefill_split(new, cached)
            return float(t + self.layout.seconds(decode_sums + shared_work) + rest_s)
        if B:
            if decode_dt is None:
                decode_dt = float(self.decode_run(decode_ctx, 1, prompt=prompt_array, rid=rid).dt[0])
            t += decode_dt - self._linear_decode_list[B]
        if new:
            t += self.prefill_time(new, cached)
        return float(t)

    def swap_time(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` between GPU and host (one synchronous copy over PCIe)."""
        if nbytes <= 0:
            return 0.0
        part = Part("kv_swap", "pcie", device="pcie", pcie_bytes=float(nbytes), pcie_round_trips=1.0)
        return float(self.roofline.seconds(Cost.of(part)))
