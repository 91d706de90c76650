"""("rows" mode) Decode work columns that are one constant per sequence, kept out of the rows.

Many decode fields of a prompt-aware method do not depend on the sequence's context or prompt:
MagicPIG's query hashing, PCIe traffic and merge pass are ``B`` times a constant per step of
``B`` sequences, and launches and decode tiles are constants per sequence for most methods.
Such a column adds ``sum_i c + h(B)`` to a step: the method's own work for ``B`` sequences
(:func:`~kvsim.sim.fast.decode_tables.batch_work`), a function of the batch size alone. The
per-request rows (:mod:`kvsim.sim.fast.request_rows`) then hold only the columns that vary
(MagicPIG: 6 of its 19 work columns), so computing, copying, compacting and summing rows costs
less and the shared blocks hold more rows in the same bytes; a run adds the folded columns'
work per batch size (:func:`unfold`) and prices all columns through the compiled roofline.

Which columns are constant the method declares (``KVMethod.constant_decode_fields``, checked by
the method contract test); every chunk of rows computed checks them too: a chunk that breaks a
declaration raises :class:`FoldBroken` and the pricer rebuilds its rows without folding (same
prices), so a wrong declaration costs speed, never a wrong number.
The layout's columns are reordered (varying first, then folded, each in the original order).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kvsim.sim.fast.decode_tables import (
    DecodeLayout,
    batch_work,
    decode_layout,
    part_amounts,
)


class FoldBroken(Exception):
    """A folded work column took another value in a chunk of request rows."""


def rows_layout(method, roofline, max_seqs: int, shared_keys: set, n_extras: int, fold: bool, split_parts: bool):
    """("rows" mode) ``(keys, layout, batch rows, Folded or None)`` of the method's decode work
    per (prompt, context), folded unless ``fold`` is False (``split_parts``: see
    :func:`folded_layout`); None if its parts change with the batch or it pays fields once
    per batch (those are checked on the per-context table only)."""
    keys, per_sequence, plain_scalar = part_amounts(method.decode_cost(np.array([[1.0], [2.0]]), np.array([[1.0], [1.0]])), 2)
    parts = method.decode_cost(np.array([1.0]), np.array([1.0])).parts
    if [p.key for p in parts] != keys or method.once_per_batch_decode:
        return None
    batch = batch_work(method, keys, max_seqs, 1.0, 1.0)  # [B + 1, P, F]: B sequences at (ctx 1, prompt 1)
    if batch is None:
        return None
    used = ~(plain_scalar & (per_sequence == 0).all(axis=0)) | (batch != 0).any(axis=0)
    layout = decode_layout(roofline, parts, used, shared_keys, n_extras)
    const = constant_columns(method, layout, parts, per_sequence[0]) if fold else {}
    if not const:
        return keys, layout, layout.batch_rows(batch, per_sequence[0]), None
    f = folded_layout(roofline, parts, layout, const, batch, per_sequence[0], split_parts)
    return keys, f.layout, f.base, f  # (batch rows: the per-batch-size work that unfold() adds)


def constant_columns(method, layout: DecodeLayout, parts, per_sequence: np.ndarray) -> dict[int, float]:
    """``{work column: per-sequence amount}`` of the columns of ``layout`` (of decode parts
    ``parts``) that the method declares constant per sequence (``constant_decode_fields``); the
    amount is read from ``per_sequence`` (``[P, F]``: one sequence's work at context 1, prompt 1; a
    declared field has that amount everywhere)."""
    declared = set(method.constant_decode_fields)
    return {c: float(per_sequence[p, f])
            for c, (p, f, (_, name)) in enumerate(zip(layout.part_of_column.tolist(), layout.field_of_column.tolist(),
                                                      layout.compiled.columns))
            if (parts[p].name, name) in declared}


class Folded(NamedTuple):
    """A layout with folded columns (:func:`folded_layout`)."""

    layout: DecodeLayout  # the kept parts' columns: varying first (``n_kept``), then folded
    base: np.ndarray  # [max_seqs + 1, ncol] what B sequences add to their rows' sums (h(B); folded: all)
    n_kept: int
    columns: list  # (part of the method's decode cost, field) of each kept column of the rows
    checks: list  # (part, field, per-sequence amount) of every folded column (checked on each chunk)
    fixed_s: np.ndarray  # [max_seqs + 1] seconds of the parts left out of the layout, per batch size


def folded_layout(roofline, parts, layout: DecodeLayout, const: dict[int, float], batch: np.ndarray,
                  per_sequence: np.ndarray, split_parts: bool) -> Folded:
    """The layout with the varying columns first and the ``const`` ones after. With ``split_parts``
    (parts that no prefill work joins), serial parts whose every column is folded depend on the batch
    size alone: they leave the layout and are priced once per batch size (``fixed_s``, the roofline's
    seconds of their work for ``B`` sequences; serial parts add, so a step's time is the sum)."""
    part_of, field_of = layout.part_of_column.tolist(), layout.field_of_column
    names = [f for _, f in layout.compiled.columns]
    fixed = []
    if split_parts and all(p.overlap is None for p in parts):
        fixed = [i for i in range(len(parts)) if i in part_of
                 and all(c in const for c in range(layout.ncol) if part_of[c] == i)]
        if len(fixed) == len(set(part_of)):
            fixed = []
    main = [i for i in range(len(parts)) if i not in fixed]
    remap = {i: n for n, i in enumerate(main)}
    cols = [c for c in range(layout.ncol) if part_of[c] not in fixed]
    order = [c for c in cols if c not in const] + [c for c in cols if c in const]
    n_kept = sum(c not in const for c in cols)
    compiled = roofline.compile([parts[i] for i in main], [(remap[part_of[c]], names[c]) for c in order])
    new = DecodeLayout(compiled, np.array([remap[part_of[c]] for c in order], dtype=np.intp), field_of[order],
                       layout.n_extras)
    base = new.batch_rows(batch[:, main], per_sequence[main])
    base[:, n_kept:] = new.to_columns(batch[:, main])[:, n_kept:]
    fixed_s = np.zeros(batch.shape[0])
    if fixed:
        fcols = [c for c in range(layout.ncol) if part_of[c] in fixed]
        fc = roofline.compile([parts[i] for i in fixed], [(fixed.index(part_of[c]), names[c]) for c in fcols])
        fixed_s[1:] = np.broadcast_to(fc.seconds(batch[1:, [part_of[c] for c in fcols], field_of[fcols]]),
                                      (batch.shape[0] - 1,))
    return Folded(new, base, n_kept, [(part_of[c], names[c]) for c in order[:n_kept]],
                  [(part_of[c], names[c], const[c]) for c in range(layout.ncol) if c in const], fixed_s)


def unfold(base_first: np.ndarray, n_kept: int, kept: np.ndarray, batch) -> np.ndarray:
    """``[k, ncol]`` work of ``k`` steps from the sums of their rows' kept columns ``kept``
    ``[k, n_kept]`` and the batch size (an int, or ``[k]`` sizes per step); ``base_first``: the
    folded base ``[ncol, max_seqs + 1]`` column-first. The result is the transpose of a
    column-first ``[ncol, k]`` array, which the compiled roofline reads column by column
    (:func:`kvsim.costmodel.roofline_plan.columns_first`: contiguous columns, no strided copy)."""
    if batch.__class__ is int:
        amounts = np.empty((base_first.shape[0], kept.shape[0]))  # [ncol, k]
        np.add(kept.T, base_first[:n_kept, batch, None], out=amounts[:n_kept])
        amounts[n_kept:] = base_first[n_kept:, batch, None]
        return amounts.T
    amounts = base_first[:, batch]  # [ncol, k] (a copy)
    amounts[:n_kept] += kept.T
    return amounts.T
