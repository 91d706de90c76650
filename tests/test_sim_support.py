"""Shared builders for the simulator tests (no tests here)."""

from dataclasses import replace
from functools import lru_cache

import numpy as np

from kvsim.costmodel.deployment import Deployment
from kvsim.traces.base import Trace


@lru_cache(maxsize=None)
def a100_llama(tp: int = 1) -> Deployment:
    """Llama-3.1-8B on one A100-80GB (the CLI defaults)."""
    from kvsim.hardware import load_system
    from kvsim.models import load_model

    return Deployment(load_system("a100"), load_model("llama-3.1-8b"), tp=tp)


def make_trace(arrival, prompt, output, prefix=None, pb=0, name="t") -> Trace:
    return Trace(name, np.asarray(arrival, dtype=np.float64), np.asarray(prompt, dtype=np.int64),
                 np.asarray(output, dtype=np.int64), prefix_blocks=None if prefix is None else tuple(map(tuple, prefix)),
                 prefix_block_tokens=pb)


def util_for_blocks(dep: Deployment, method, n_blocks: int, cfg, max_prompt: int = 0) -> float:
    """gpu_memory_utilization that leaves exactly ``n_blocks`` KV blocks for ``cfg``'s engine
    (without chunked prefill the activation reserve covers the longest prompt, ``max_prompt``)."""
    from kvsim.pricing.memory import memory_budget

    step = cfg.max_num_batched_tokens if cfg.chunked_prefill else max(cfg.max_num_batched_tokens, max_prompt)
    b = memory_budget(replace(dep, gpu_memory_utilization=1.0), method, max_tokens_per_step=step,
                      max_seqs=cfg.max_num_seqs)
    bb = cfg.block_size_tokens * method.dep.full_kv_bytes_per_token
    fixed = b.non_kv_gpu_bytes
    return (fixed + (n_blocks + 0.5) * bb) / b.gpu_total_bytes


class FakeStep:
    """Step time = ``base_s`` + ``per_prefill_token_s`` x prefill tokens (decode tokens free).

    Records every step's prefill chunks ``(new, cached)`` in ``prefills``.
    """

    def __init__(self, base_s: float = 0.010, per_prefill_token_s: float = 0.001) -> None:
        self.base_s, self.per_tok_s = base_s, per_prefill_token_s
        self.prefills: list[tuple[tuple, tuple]] = []

    def time_s(self, decode_ctx=None, prefill_new=None, prefill_cached=None, n_sampled_prefill=None, decode_prompt=None):
        ctx = np.asarray(decode_ctx if decode_ctx is not None else np.zeros(0))
        new = np.asarray(prefill_new if prefill_new is not None else np.zeros(0))
        if new.size:
            self.prefills.append((tuple(new.tolist()), tuple(np.asarray(prefill_cached).tolist())))
        t = self.base_s + self.per_tok_s * float(new.sum())
        return np.full(ctx.shape[0], t) if ctx.ndim == 2 else t


class ExactStep:
    """A StepModel that the simulator must call for every step (no tables, no fast-forward through finishes)."""

    def __init__(self, step) -> None:
        self.step = step

    def time_s(self, **kw):
        return self.step.time_s(**kw)
