"""Notes on a run's inputs that ``estimate`` and ``simulate`` (command line and Python API) both
give: a model whose windowed attention kvsim prices as full attention, and methods that keep a KV
format of their own when a KV dtype was asked for."""

from __future__ import annotations

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
