"""Build a :class:`ModelSpec` from a Hugging Face ``config.json``.

Supported ``model_type`` values and the keys read (HF ``transformers`` config names):

* ``llama``, ``mistral``, ``qwen2``, ``phi3`` (dense, SwiGLU): ``num_hidden_layers``,
  ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads`` (default: heads),
  ``head_dim`` (default: hidden / heads), ``intermediate_size``, ``vocab_size``,
  ``max_position_embeddings``, ``tie_word_embeddings``, ``attention_bias``, ``sliding_window``.
  qwen2 always has q/k/v biases; its window applies only if ``use_sliding_window`` is true.
* ``mixtral``: as above, plus ``num_local_experts`` / ``num_experts_per_tok``; every layer
  is MoE with experts of width ``intermediate_size``.
* ``opt``: ``ffn_dim`` (ReLU, 2 matrices), biases everywhere (``enable_bias``), tied
  embeddings by default, MHA.
* ``deepseek_v2``: MLA (``kv_lora_rank``, ``qk_rope_head_dim``, ``qk_nope_head_dim``,
  ``v_head_dim``, ``q_lora_rank``) and DeepSeekMoE (``n_routed_experts``,
  ``num_experts_per_tok``, ``moe_intermediate_size``, ``n_shared_experts``,
  ``first_k_dense_replace``; dense layers use ``intermediate_size``).

A window at least as long as the context never binds, so it is dropped (Phi-3-mini-128K:
262144 > 131072). Errors are :class:`SpecError` with one line per problem naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kvsim.errors import SpecError
from kvsim.models.spec import ModelSpec
from kvsim.specbase import format_validation_error, read_text

SUPPORTED = ("llama", "mistral", "mixtral", "qwen2", "phi3", "opt", "deepseek_v2")
_MISSING = object()

# HF config defaults of tie_word_embeddings per model_type (transformers' config classes).
_TIE_DEFAULT = {"opt": True}


class _Cfg:
    """Key access that turns a missing key into a one-line SpecError naming file and key."""

    def __init__(self, data: dict[str, Any], path: Path, model_type: str):
        self.data, self.path, self.model_type = data, path, model_type

    def req(self, key: str) -> Any:
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            raise SpecError(f"{self.path}: missing key '{key}' (required for model_type '{self.model_type}')")
        return value

    def opt(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key, _MISSING)
        return default if value is _MISSING or value is None else value


def _read_json(path: Path) -> dict[str, Any]:
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    except RecursionError:
        raise SpecError(f"{path}: invalid JSON: nested too deeply") from None
    except ValueError as err:  # e.g. an integer past Python's 4300-digit limit
        raise SpecError(f"{path}: invalid JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a JSON object at top level, got {type(data).__name__}")
    return data


def _name(data: dict[str, Any], path: Path) -> str:
    """``_name_or_path`` if present, else the file stem (the folder name for ``config.json``)."""
    name = data.get("_name_or_path")
    if isinstance(name, str) and name.strip():
        return name.strip()
    if path.stem == "config" and path.parent.name:
        return path.parent.name
    return path.stem


def _window(c: _Cfg, context: Any) -> Any:
    window = c.opt("sliding_window")
    if c.model_type == "qwen2" and not c.opt("use_sliding_window", False):
        return None
    if isinstance(window, int) and isinstance(context, int) and window >= context:
        return None  # never binds
    return window


def _dense_fields(c: _Cfg) -> dict[str, Any]:
    """Fields shared by the llama-family types (llama, mistral, mixtral, qwen2, phi3)."""
    hidden, heads = c.req("hidden_size"), c.req("num_attention_heads")
    context = c.req("max_position_embeddings")
    head_dim = c.opt("head_dim")
    if head_dim is None and isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        head_dim = hidden // heads
    return {
        "num_layers": c.req("num_hidden_layers"),
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": c.opt("num_key_value_heads", heads),
        "head_dim": head_dim,
        "vocab_size": c.req("vocab_size"),
        "max_context_tokens": context,
        "tie_word_embeddings": c.opt("tie_word_embeddings", _TIE_DEFAULT.get(c.model_type, False)),
        "attention_bias": True if c.model_type == "qwen2" else c.opt("attention_bias", False),
        "sliding_window": _window(c, context),
    }


def _fields(c: _Cfg) -> dict[str, Any]:
    mt = c.model_type
    if mt in ("llama", "mistral", "qwen2", "phi3"):
        return {**_dense_fields(c), "intermediate_size": c.req("intermediate_size")}
    if mt == "mixtral":
        return {
            **_dense_fields(c),
            "intermediate_size": 0,  # every layer is MoE
            "moe": {
                "num_experts": c.req("num_local_experts"),
                "experts_per_token": c.req("num_experts_per_tok"),
                "expert_intermediate_size": c.req("intermediate_size"),
            },
        }
    if mt == "opt":
        hidden, heads = c.req("hidden_size"), c.req("num_attention_heads")
        proj = c.opt("word_embed_proj_dim", hidden)
        if proj != hidden:
            raise SpecError(f"{c.path}: word_embed_proj_dim ({proj}) != hidden_size ({hidden}) is not supported")
        return {
            "num_layers": c.req("num_hidden_layers"),
            "hidden_size": hidden,
            "num_heads": heads,
            "num_kv_heads": heads,
            "head_dim": hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None,
            "intermediate_size": c.req("ffn_dim"),
            "vocab_size": c.req("vocab_size"),
            "max_context_tokens": c.req("max_position_embeddings"),
            "mlp_gated": False,
            "tie_word_embeddings": c.opt("tie_word_embeddings", True),
            "attention_bias": c.opt("enable_bias", True),
        }
    # deepseek_v2
    fields: dict[str, Any] = {
        "num_layers": c.req("num_hidden_layers"),
        "hidden_size": c.req("hidden_size"),
        "num_heads": c.req("num_attention_heads"),
        "num_kv_heads": 1,  # MLA: one latent "head"; the mla block drives KV size
        "head_dim": c.req("v_head_dim"),
        "intermediate_size": c.req("intermediate_size"),
        "vocab_size": c.req("vocab_size"),
        "max_context_tokens": c.req("max_position_embeddings"),
        "tie_word_embeddings": c.opt("tie_word_embeddings", False),
        "attention_bias": c.opt("attention_bias", False),
        "mla": {
            "kv_lora_rank": c.req("kv_lora_rank"),
            "qk_rope_head_dim": c.req("qk_rope_head_dim"),
            "qk_nope_head_dim": c.req("qk_nope_head_dim"),
            "v_head_dim": c.req("v_head_dim"),
            "q_lora_rank": c.opt("q_lora_rank"),
        },
    }
    if c.opt("n_routed_experts") is not None:
        if c.opt("moe_layer_freq", 1) != 1:
            raise SpecError(f"{c.path}: moe_layer_freq {c.opt('moe_layer_freq')} is not supported (only 1)")
        width = c.req("moe_intermediate_size")
        fields["moe"] = {
            "num_experts": c.req("n_routed_experts"),
            "experts_per_token": c.req("num_experts_per_tok"),
            "expert_intermediate_size": width,
            "num_shared_experts": c.opt("n_shared_experts", 0),
            "shared_intermediate_size": width if c.opt("n_shared_experts", 0) else 0,
            "first_dense_layers": c.opt("first_k_dense_replace", 0),
            "dense_intermediate_size": c.req("intermediate_size"),
        }
    return fields


# ModelSpec field path -> HF key, so a validation error names the key found in the file.
_HF_KEY = {
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "max_context_tokens": "max_position_embeddings",
    "moe.expert_intermediate_size": "intermediate_size",
}
_HF_KEY_BY_TYPE = {
    "opt": {"intermediate_size": "ffn_dim", "num_kv_heads": "num_attention_heads", "attention_bias": "enable_bias"},
    "mixtral": {"moe.num_experts": "num_local_experts", "moe.experts_per_token": "num_experts_per_tok"},
    "deepseek_v2": {
        "head_dim": "v_head_dim",
        "moe.num_experts": "n_routed_experts",
        "moe.experts_per_token": "num_experts_per_tok",
        "moe.expert_intermediate_size": "moe_intermediate_size",
        "moe.shared_intermediate_size": "moe_intermediate_size",
        "moe.num_shared_experts": "n_shared_experts",
        "moe.first_dense_layers": "first_k_dense_replace",
        "moe.dense_intermediate_size": "intermediate_size",
        **{f"mla.{k}": k for k in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "q_lora_rank")},
    },
}


def _validate(spec: dict[str, Any], path: Path, model_type: str) -> ModelSpec:
    try:
        return ModelSpec.model_validate(spec)
    except ValidationError as err:
        keys = {**_HF_KEY, **_HF_KEY_BY_TYPE.get(model_type, {}), "": "(config)"}
        raise SpecError(format_validation_error(err, str(path), keys)) from None


def load_hf_config(path: Path) -> ModelSpec:
    """Read a Hugging Face ``config.json`` into a :class:`ModelSpec` (see module docstring)."""
    path = Path(path)
    data = _read_json(path)
    model_type = data.get("model_type")
    if model_type not in SUPPORTED:
        got = "missing" if model_type is None else repr(model_type)
        raise SpecError(f"{path}: model_type: unsupported ({got}); supported: {', '.join(SUPPORTED)}")
    c = _Cfg(data, path, model_type)
    name = _name(data, path)
    spec = {
        "name": name,
        "hf_id": data.get("_name_or_path") or "",
        "architecture": model_type,
        **_fields(c),
        "source": f"Hugging Face config {path}",
    }
    return _validate(spec, path, model_type)
