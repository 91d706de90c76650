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
        """
        n_new, n_cached = (float(x) for x in self.method.split_prompt(float(n_prompt)))
        if not chunk_tokens or chunk_tokens >= n_new:
            return [(n_new, n_cached)]
        out = []
        done = 0.0
        while done < n_new:
            c = min(float(chunk_tokens), n_new - done)
            out.append((c, n_cached + done))
            done += c
        return out

    def prefill_request_timing(self, n_prompt: float, chunk_tokens: float | None = None) -> Timing:
        """TTFT of a lone request without queueing: the sum of its prefill steps.

        Parts with the same name are merged (seconds added); a merged part keeps the
        bound of its longest chunk."""
        steps = self.prefill_chunks(n_prompt, chunk_tokens)
        timings = [
            self.timing(prefill_new=np.array([n]), prefill_cached=np.array([c]), n_sampled_prefill=int(i == len(steps) - 1))
            for i, (n, c) in enumerate(steps)
        ]
        if len(timings) == 1:
            return timings[0]
        return merge_timings(timings)

    def decode_timing(self, ctx: np.ndarray) -> Timing:
        return self.timing(decode_ctx=np.asarray(ctx, dtype=np.float64))


def merge_timings(timings: list[Timing]) -> Timing:
    """Sum of sequential timings, parts merged by (name, device)."""
    merged: dict[tuple[str, str], PartTime] = {}
    longest: dict[tuple[str, str], float] = {}
    for t in timings:
        for p in t.parts:
            k = (p.name, p.device)
            if k not in merged:
                merged[k], longest[k] = p, float(p.seconds)
                continue
            q = merged[k]
            bound = p.bound if float(p.seconds) > longest[k] else q.bound
            longest[k] = max(longest[k], float(p.seconds))
            rs = {r: q.resource_s.get(r, 0.0) + p.resource_s.get(r, 0.0) for r in set(q.resource_s) | set(p.resource_s)}
            merged[k] = PartTime(q.name, q.op, q.device, q.seconds + p.seconds, bound, rs)
    return Timing(sum(t.total_s for t in timings), tuple(merged.values()))
