"""Price one engine step: the single path from specs to seconds that both
``kvsim estimate`` and the serving simulator use.

A step processes ``B`` decoding sequences (one token each, with ``ctx`` tokens cached)
and ``R`` prefill chunks (``n_new`` tokens after ``n_cached``). Its cost is the shared
transformer work for ``B + sum(n_new)`` tokens, the method's decode attention for the
batch, the method's prefill work for the chunks, and the engine's host overhead for the
step's tokens and sampled sequences (:func:`~kvsim.costmodel.transformer.step_overhead_cost`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.costmodel.cost import Cost, Num
from kvsim.costmodel.deployment import Deployment
from kvsim.methods.base import KVMethod
from kvsim.costmodel.roofline import PartTime, Roofline, Timing
from kvsim.costmodel.transformer import linear_cost, step_overhead_cost

_EMPTY = np.zeros(0)


@dataclass
class StepModel:
    """Cost and time of engine steps for one (deployment, method)."""

    dep: Deployment
    method: KVMethod

    def __post_init__(self) -> None:
        self.roofline = Roofline(self.dep.system)

    @staticmethod
    def overhead_cost(n_tokens: Num, n_seqs: Num) -> Cost:
        """Engine host overhead of a step of ``n_tokens`` tokens and ``n_seqs`` sampled sequences."""
        return step_overhead_cost(n_tokens, n_seqs)

    def cost(
        self,
        decode_ctx: np.ndarray = _EMPTY,
        prefill_new: np.ndarray = _EMPTY,
        prefill_cached: np.ndarray = _EMPTY,
        n_sampled_prefill: int | None = None,
        decode_prompt: np.ndarray | None = None,
    ) -> Cost:
        """Work of one step.

        Args:
            decode_ctx: [B] (or [k, B] for k consecutive steps) tokens cached per decoding
                sequence before the step.
            prefill_new, prefill_cached: [R] prefill chunks.
            n_sampled_prefill: chunks that complete their prompt and sample a first token
                (default: all R).
            decode_prompt: prompt tokens of each decoding sequence (same shape as
                ``decode_ctx``), for methods that treat prompt and generated tokens
                differently (H2O, SnapKV); None = every cached token is prompt.
        """
        decode_ctx = np.asarray(decode_ctx, dtype=np.float64)
        prefill_new = np.asarray(prefill_new, dtype=np.float64)
        prefill_cached = np.asarray(prefill_cached, dtype=np.float64)
        B = decode_ctx.shape[-1] if decode_ctx.ndim else 0
        R = prefill_new.shape[0]
        n_pref = float(prefill_new.sum()) if R else 0.0
        sampled = R if n_sampled_prefill is None else n_sampled_prefill
        tokens, seqs = float(B) + n_pref, float(B + sampled)
        cost = linear_cost(self.dep, tokens, seqs) + step_overhead_cost(tokens, seqs)
        if B:
            if decode_prompt is None:
                cost = cost + self.method.decode_cost(decode_ctx)
            else:
                cost = cost + self.method.decode_cost(decode_ctx, np.asarray(decode_prompt, dtype=np.float64))
        if R:
            cost = cost + self.method.prefill_cost(prefill_new, prefill_cached)
        return cost

    def timing(self, *args, **kwargs) -> Timing:
        return self.roofline(self.cost(*args, **kwargs))

    def time_s(self, *args, **kwargs) -> Num:
        return self.roofline.seconds(self.cost(*args, **kwargs))

    # convenience for the two phases of one request
    def prefill_timing(self, n_prompt: float) -> Timing:
        """One request's whole prompt in one step (TTFT without queueing)."""
        return self.timing(prefill_new=np.array([float(n_prompt)]), prefill_cached=np.array([0.0]))

    def prefill_chunks(self, n_prompt: float, chunk_tokens: float | None) -> list[tuple[float, float]]:
        """``(n_new, n_cached)`` of each step that prefills one lone request.

        The method's analytic prefix hit (``split_prompt``) starts the prompt with that
        many cached tokens; the rest is prefilled in chunks of ``chunk_tokens`` (None or
        >= the remainder: one step), exactly as the simulator schedules a lone request.
        A list of ``ceil(n_new / chunk_tokens)`` steps: see :meth:`prefill_request_timing`
        for the price of a long prompt without listing them.
        """
        n_new, n_cached, full, rest = self._chunking(n_prompt, chunk_tokens)
        if full == 0:
            return [(n_new, n_cached)]
        c = float(chunk_tokens)  # type: ignore[arg-type]
        out = [(c, n_cached + k * c) for k in range(full)]
        return out + ([(rest, n_cached + full * c)] if rest > 0 else [])

    def _chunking(self, n_prompt: float, chunk_tokens: float | None) -> tuple[float, float, int, float]:
        """``(n_new, n_cached, full, rest)``: ``full`` whole chunks then a step of ``rest`` tokens
        (``full == 0``: one step of ``n_new`` tokens)."""
        n_new, n_cached = (float(x) for x in self.method.split_prompt(float(n_prompt)))
        if not chunk_tokens or chunk_tokens >= n_new:
            return n_new, n_cached, 0, n_new
        c = float(chunk_tokens)
        full = int(n_new // c)
        return n_new, n_cached, full, n_new - full * c

    def prefill_request_timing(self, n_prompt: float, chunk_tokens: float | None = None) -> Timing:
        """TTFT of a lone request without queueing: the sum of its prefill steps.

        Parts with the same name are merged (seconds added); a merged part keeps the
        bound of its longest chunk. Up to :data:`EXACT_PREFILL_STEPS` steps are priced one
        by one (exactly what the simulator does); a longer prompt's whole-chunk steps are
        summed by :func:`sum_steps` (a few dozen prices, whatever the length; relative error
        below :data:`PREFILL_SUM_RTOL`), so the estimate of any context is fast.
        """
        n_new, n_cached, full, rest = self._chunking(n_prompt, chunk_tokens)
        last = full if rest > 0 else full - 1  # index of the step that samples the first token

        def step(k: float, n: float | None = None) -> Timing:
            new = float(chunk_tokens) if n is None else n  # type: ignore[arg-type]
            return self.timing(prefill_new=np.array([new]), prefill_cached=np.array([n_cached + k * float(chunk_tokens or 0)]),
                               n_sampled_prefill=int(k == last))

        if full == 0:
            return self.timing(prefill_new=np.array([n_new]), prefill_cached=np.array([n_cached]), n_sampled_prefill=1)
        final = step(last, rest if rest > 0 else None)
        if last + 1 <= EXACT_PREFILL_STEPS:
            timings = [step(k) for k in range(last)] + [final]
            return timings[0] if len(timings) == 1 else merge_timings(timings)
        weighted = sum_steps(step, 0, last - 1) + [(final, 1.0)]
        return merge_timings([t for t, _ in weighted], [w for _, w in weighted])

    def decode_timing(self, ctx: np.ndarray) -> Timing:
        return self.timing(decode_ctx=np.asarray(ctx, dtype=np.float64))


#: prefill steps priced one by one in :meth:`StepModel.prefill_request_timing` (4M tokens in
#: 8192-token chunks); longer prompts are summed by :func:`sum_steps`
EXACT_PREFILL_STEPS = 512
#: relative tolerance of :func:`sum_steps` per segment (so of the whole sum)
PREFILL_SUM_RTOL = 1e-6


def sum_steps(step, a: int, b: int, rtol: float = PREFILL_SUM_RTOL, max_prices: int = 1024) -> list[tuple[Timing, float]]:
    """``(timing, weight)`` pairs whose weighted sum is ``sum(step(k) for k in a..b)`` within
    ``rtol``, from ``O(log(b - a))`` prices of ``step`` (a Timing of a real ``k``).

    The methods' prefill work is affine in the cached tokens (``k``) or piecewise so (a window,
    a budget), so a step's seconds are a convex function of ``k`` between kinks (the max or
    p-norm of affine resource times, plus affine overheads). For a convex ``f`` on the ``n``
    integers ``a..b`` the sum lies between the midpoint rule ``n f(m)`` (Jensen) and the chord
    ``n (f(a) + f(b)) / 2``, and both are exact where ``f`` is affine. A segment where the two
    agree within ``rtol`` of the segment's time, for the total and for every part, counts their
    mean; else it is halved, so segments shrink only around kinks. ``max_prices`` caps the work (float noise of a method at 2**50 tokens).
    """
    memo: dict[float, Timing] = {}

    def at(x: float) -> Timing:
        if x not in memo:
            memo[x] = step(x)
        return memo[x]

    out: list[tuple[Timing, float]] = []
    todo = [(a, b)]
    while todo:
        lo, hi = todo.pop()
        n = hi - lo + 1
        if n <= 3:
            out += [(at(float(k)), 1.0) for k in range(lo, hi + 1)]
            continue
        tl, th, tm = at(float(lo)), at(float(hi)), at((lo + hi) / 2.0)
        mid = n * float(tm.total_s)
        if _gap(tl, th, tm) * n <= rtol * abs(mid) or len(memo) >= max_prices:
            out += [(tl, n / 4.0), (th, n / 4.0), (tm, n / 2.0)]
        else:
            m = (lo + hi) // 2
            todo += [(lo, m), (m + 1, hi)]
    return out


def _gap(lo: Timing, hi: Timing, mid: Timing) -> float:
    """Largest ``|(f(lo) + f(hi)) / 2 - f(mid)|`` over the total and each part (name, device)."""
    def seconds(t: Timing) -> dict:
        out: dict = {}
        for p in t.parts:
            out[(p.name, p.device)] = out.get((p.name, p.device), 0.0) + float(p.seconds)
        return out

    a, b, m = seconds(lo), seconds(hi), seconds(mid)
    gaps = [abs((a.get(k, 0.0) + b.get(k, 0.0)) / 2.0 - m.get(k, 0.0)) for k in set(a) | set(b) | set(m)]
    return max([abs((float(lo.total_s) + float(hi.total_s)) / 2.0 - float(mid.total_s)), *gaps])


def merge_timings(timings: list[Timing], weights: list[float] | None = None) -> Timing:
    """Sum of sequential timings (each counted ``weights[i]`` times, default once), parts
    merged by (name, device); a merged part keeps the bound of its longest timing."""
    weights = [1.0] * len(timings) if weights is None else weights
    merged: dict[tuple[str, str], PartTime] = {}
    longest: dict[tuple[str, str], float] = {}
    for t, w in zip(timings, weights):
        for p in t.parts:
            k = (p.name, p.device)
            if k not in merged:
                merged[k], longest[k] = _scaled(p, w), float(p.seconds)
                continue
            q = merged[k]
            bound = p.bound if float(p.seconds) > longest[k] else q.bound
            longest[k] = max(longest[k], float(p.seconds))
            rs = {r: q.resource_s.get(r, 0.0) + w * p.resource_s.get(r, 0.0) for r in set(q.resource_s) | set(p.resource_s)}
            merged[k] = PartTime(q.name, q.op, q.device, q.seconds + w * p.seconds, bound, rs)
    return Timing(sum(w * t.total_s for t, w in zip(timings, weights)), tuple(merged.values()))


def _scaled(p: PartTime, w: float) -> PartTime:
    if w == 1.0:
        return p
    return PartTime(p.name, p.op, p.device, w * p.seconds, p.bound, {r: w * v for r, v in p.resource_s.items()})
