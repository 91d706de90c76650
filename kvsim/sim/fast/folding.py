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

Which columns are constant is read from the method at probe points (the trace's prompts and
contexts around them) and checked on every chunk of rows computed: a chunk that breaks it
raises :class:`FoldBroken` and the pricer rebuilds its rows without folding (same prices).
The layout's columns are reordered (varying first, then folded, each in the original order).
"""

from __future__ import annotations

import numpy as np

from kvsim.sim.fast.decode_tables import DecodeLayout


class FoldBroken(Exception):
    """A folded work column took another value in a chunk of request rows."""


def constant_columns(method, layout: DecodeLayout, keys: list, prompt: np.ndarray, max_ctx: int) -> dict[int, float]:
    """``{work column: per-sequence amount}`` of the columns of ``layout`` whose amount is the same
    for every probe (prompt, context): a spread of the trace's prompts, each at contexts from its
    last prompt token to well past it, and the extreme contexts."""
    distinct = np.unique(np.asarray(prompt, dtype=np.int64))
    if not distinct.size:
        return {}
    picks = distinct[np.unique(np.linspace(0, distinct.size - 1, min(distinct.size, 16)).astype(np.intp))]
    prompts, contexts = [1.0, 1.0, float(max(max_ctx, 1))], [0.0, float(max_ctx), float(max_ctx)]
    for p in picks.tolist():
        for c in (p - 1, p, p + 1, p + 7, p + 100, p + 1000, p + 5000):
            if 0 <= c <= max_ctx:
                prompts.append(float(p))
                contexts.append(float(c))
    n = len(contexts)
    cost = method.decode_cost(np.array(contexts)[:, None], np.array(prompts)[:, None])
    if [p.key for p in cost.parts] != keys:
        return {}
    out = {}
    for c, (part, field) in enumerate(layout.compiled.columns):
        v = np.broadcast_to(np.asarray(getattr(cost.parts[part], field), dtype=np.float64), (n,))
        if (v == v[0]).all():
            out[c] = float(v[0])
    return out


def folded_layout(roofline, parts, layout: DecodeLayout, const: dict[int, float], batch: np.ndarray,
                  per_sequence: np.ndarray) -> tuple[DecodeLayout, np.ndarray, int, np.ndarray]:
    """``(layout, base, n_kept, values)``: the layout with the varying columns first (``n_kept``)
    and the ``const`` ones after; ``base`` ``[max_seqs + 1, ncol]`` what a step of ``B`` sequences
    adds to the sum of its rows' kept columns (``h(B)``, and the whole work of the folded ones);
    ``values`` the folded columns' per-sequence amounts (checked on every chunk of rows)."""
    order = [c for c in range(layout.ncol) if c not in const] + [c for c in range(layout.ncol) if c in const]
    n_kept = layout.ncol - len(const)
    compiled = roofline.compile(parts, [layout.compiled.columns[c] for c in order])
    new = DecodeLayout(compiled, layout.part_of_column[order], layout.field_of_column[order], layout.n_extras)
    base = new.batch_rows(batch, per_sequence)
    base[:, n_kept:] = new.to_columns(batch)[:, n_kept:]
    return new, base, n_kept, np.array([const[c] for c in order[n_kept:]])


def unfold(base: np.ndarray, n_kept: int, kept: np.ndarray, batch) -> np.ndarray:
    """``[k, ncol]`` work of ``k`` steps from the sums of their rows' kept columns ``kept``
    ``[k, n_kept]`` and the batch size (an int, or ``[k]`` sizes per step)."""
    if batch.__class__ is int:
        amounts = np.empty((kept.shape[0], base.shape[1]))
        np.add(kept, base[batch, :n_kept], out=amounts[:, :n_kept])
        amounts[:, n_kept:] = base[batch, n_kept:]
        return amounts
    amounts = base[batch]  # [k, ncol] (a copy)
    amounts[:, :n_kept] += kept
    return amounts
