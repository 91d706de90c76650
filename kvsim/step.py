"""Price one engine step: the single path from specs to seconds that both
``kvsim estimate`` and the serving simulator use.

A step processes ``B`` decoding sequences (one token each, with ``ctx`` tokens cached)
and ``R`` prefill chunks (``n_new`` tokens after ``n_cached``). Its cost is the shared
transformer work for ``B + sum(n_new)`` tokens, the method's decode attention for the
batch, the method's prefill work for the chunks, and the framework's per-step overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvsim.cost import Cost, Num
from kvsim.deployment import Deployment
from kvsim.methods.base import KVMethod
from kvsim.roofline import Roofline, Timing
from kvsim.transformer import linear_cost, step_overhead_cost

_EMPTY = np.zeros(0)


@dataclass
class StepModel:
    """Cost and time of engine steps for one (deployment, method)."""

    dep: Deployment
    method: KVMethod

    def __post_init__(self) -> None:
        self.roofline = Roofline(self.dep.system)
        self._overhead = step_overhead_cost()

    def cost(
        self,
        decode_ctx: np.ndarray = _EMPTY,
        prefill_new: np.ndarray = _EMPTY,
        prefill_cached: np.ndarray = _EMPTY,
        n_sampled_prefill: int | None = None,
    ) -> Cost:
        """Work of one step.

        Args:
            decode_ctx: [B] (or [k, B] for k consecutive steps) tokens cached per decoding
                sequence before the step.
            prefill_new, prefill_cached: [R] prefill chunks.
            n_sampled_prefill: chunks that complete their prompt and sample a first token
                (default: all R).
        """
        decode_ctx = np.asarray(decode_ctx, dtype=np.float64)
        prefill_new = np.asarray(prefill_new, dtype=np.float64)
        prefill_cached = np.asarray(prefill_cached, dtype=np.float64)
        B = decode_ctx.shape[-1] if decode_ctx.ndim else 0
        R = prefill_new.shape[0]
        n_pref = float(prefill_new.sum()) if R else 0.0
        sampled = R if n_sampled_prefill is None else n_sampled_prefill
        cost = linear_cost(self.dep, float(B) + n_pref, float(B + sampled)) + self._overhead
        if B:
            cost = cost + self.method.decode_cost(decode_ctx)
        if R:
            cost = cost + self.method.prefill_cost(prefill_new, prefill_cached)
        return cost

    def timing(self, *args, **kwargs) -> Timing:
        return self.roofline(self.cost(*args, **kwargs))

    def time_s(self, *args, **kwargs) -> Num:
        return self.roofline(self.cost(*args, **kwargs)).total_s

    # convenience for the two phases of one request
    def prefill_timing(self, n_prompt: float) -> Timing:
        """One request's whole prompt in one step (TTFT without queueing)."""
        return self.timing(prefill_new=np.array([float(n_prompt)]), prefill_cached=np.array([0.0]))

    def decode_timing(self, ctx: np.ndarray) -> Timing:
        return self.timing(decode_ctx=np.asarray(ctx, dtype=np.float64))
