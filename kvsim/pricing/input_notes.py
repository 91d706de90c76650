"""Notes on a run's inputs that ``estimate`` and ``simulate`` (command line and Python API) both
give: a model whose windowed attention kvsim prices as full attention, and methods that keep a KV
format of their own when a KV dtype was asked for."""

from __future__ import annotations

import numpy as np

from kvsim.models.spec import ModelSpec


def window_note(model: ModelSpec) -> str | None:
    """A note for a model with sliding-window or chunked local attention layers: kvsim prices every
    layer as full attention (``ModelSpec.windowed_layers``), so past the window its KV, its decode
    reads and its prefill FLOPs are overstated (and compression savings measured against them)."""
    if model.sliding_window is None:
        return None
    return (f"{model.name} has windowed attention ({model.sliding_window:,} tokens on {model.windowed_layers} of "
            f"{model.attn_layers} attention layers); kvsim prices every layer as full attention, so beyond "
            f"{model.sliding_window:,} tokens its KV, decode reads and prefill FLOPs are overstated")


def kv_dtype_notes(kv_dtype: str, methods) -> list[str]:
    """Notes for methods that keep a KV format of their own when ``--kv-dtype`` was given."""
    if kv_dtype == "auto":
        return []
    own = [f"{m.label()} stores its KV in its own format: --kv-dtype {kv_dtype} does not change its KV bytes"
           for m in methods if m.own_kv_format]
    return own + [f"{m.label()}: its kv_dtype={m.params.kv_dtype} is used, not --kv-dtype {kv_dtype}" for m in methods
                  if not m.own_kv_format and getattr(m.params, "kv_dtype", "auto") not in ("auto", None, kv_dtype)]


def eager_scores_note(method, prompt_tokens: float, chunk_tokens: float | None, reserve_bytes: float) -> str | None:
    """A note when a method's eager prefill materializes one layer's attention scores larger than the
    engine's activation reserve ``reserve_bytes`` (the profiling run's peak activations,
    :attr:`EngineReserve.activation_bytes`; :meth:`KVMethod.prefill_scores_bytes` counts 2 B per score,
    a lower bound where the softmax runs in fp32): kvsim prices that traffic but reserves no memory for it. The largest chunk product ``n_new x (cached + n_new)`` over the prompt's
    chunks of ``chunk_tokens`` (None: the whole prompt in one step)."""
    prompt = int(prompt_tokens)
    if prompt < 1:
        return None
    chunk = int(chunk_tokens) if chunk_tokens else prompt
    # n x (cached + n) grows with the chunk's start, so the largest is the last full chunk or the last one
    # (two candidates, not every chunk: a 1e13-token prompt has ~1e9 of them)
    last = (prompt - 1) // chunk * chunk
    starts = np.unique(np.array([max(0, last - chunk), last], dtype=np.float64))
    new = np.minimum(float(chunk), prompt - starts)
    need = np.asarray(method.prefill_scores_bytes(new, starts), dtype=np.float64) * np.ones_like(new)
    worst = int(np.argmax(need))
    if need[worst] <= reserve_bytes:
        return None
    return (f"its eager prefill materializes one layer's attention scores (query heads x new x "
            f"attended tokens): {need[worst] / 1e9:,.1f} GB per GPU for the {int(new[worst]):,}-token chunk after "
            f"{int(starts[worst]):,} cached tokens of a {prompt:,}-token prompt, beyond the {reserve_bytes / 1e9:.2f} GB "
            "the engine reserves for activations (at 2 B a score); kvsim prices that traffic but reserves no memory for "
            "it, so a real run needs that much more GPU memory, or runs out of it")
