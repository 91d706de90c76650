"""Two-stage pipelines: stage A of item i+1 overlaps stage B of item i.

CacheBlend loads layer l+1's KV while it recomputes layer l (CacheBlend §5, METHODS.md 1.16);
CacheGen streams chunk i+1 while it decodes chunk i (CacheGen §5, METHODS.md 1.15). Both are
the same flow shop: item i's B starts when its A is done and item i-1's B is done.
"""

from __future__ import annotations

from collections.abc import Sequence


def pipeline_s(a_s: Sequence[float], b_s: Sequence[float]) -> float:
    """Seconds until the last B ends (a two-machine flow shop in item order).

    ``a_done[i] = a_done[i-1] + a_s[i]``; ``b_done[i] = max(b_done[i-1], a_done[i]) + b_s[i]``.
    With ``n`` equal items it is ``a + b + (n - 1) * max(a, b)``: METHODS.md's
    ``sum_i max(a_i, b_i)`` plus the pipeline fill ``min(a, b)``.
    """
    if len(a_s) != len(b_s):
        raise ValueError(f"stages differ in length: {len(a_s)} vs {len(b_s)}")
    a_done = b_done = 0.0
    for a, b in zip(a_s, b_s):
        a_done += float(a)
        b_done = max(b_done, a_done) + float(b)
    return b_done


def uniform_pipeline_s(a: float, b: float, n: int) -> float:
    """:func:`pipeline_s` of ``n`` equal items in closed form: ``a + b + (n - 1) max(a, b)`` (0 for n = 0)."""
    if n <= 0:
        return 0.0
    return a + b + (n - 1) * max(a, b)
