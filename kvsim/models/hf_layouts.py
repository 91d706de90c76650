"""Per-architecture reading of Hugging Face config keys into :class:`ModelSpec` fields.

:mod:`kvsim.models.hf_import` reads the file and validates; this module knows, per
``model_type``, which keys hold the shapes, which layers are windowed or MoE, and which
defaults ``transformers`` applies when a published config leaves a key out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvsim.errors import SpecError, misspelling_of
from kvsim.specbase import short_repr

SUPPORTED = (
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "gemma2",
    "gemma3", "gemma3_text", "llama4", "llama4_text", "opt", "deepseek_v2", "deepseek_v3", "jamba",
)  # fmt: skip
#: image-text wrappers: the language model's keys sit under ``text_config``, of this model_type
TEXT_CONFIG = {"gemma3": "gemma3_text", "llama4": "llama4_text"}
_MISSING = object()

# Defaults of transformers' config classes for keys that published configs leave out (the class
# fills them in when it loads the file). Gemma3TextConfig: transformers
# src/transformers/models/gemma3/configuration_gemma3.py (google/gemma-3-4b-it's config.json gives
# only hidden_size, intermediate_size, num_hidden_layers, rope_scaling and sliding_window);
# Gemma2Config: tie_word_embeddings=True, sliding_window=4096; Qwen2Config / Qwen3Config:
# max_window_layers=28; Qwen*MoeConfig: decoder_sparse_step=1, mlp_only_layers=[];
# Llama4TextConfig (configuration_llama4.py): attention_chunk_size=8192, interleave_moe_layer_step=1,
# no_rope_layer_interval=4, intermediate_size_mlp=16384, head_dim=128, 16 experts top-1.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma2": {"tie_word_embeddings": True, "sliding_window": 4096},
    "gemma3_text": {
        "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131_072,
        "tie_word_embeddings": True, "attention_bias": False, "sliding_window": 4096, "sliding_window_pattern": 6,
    },
    "qwen2": {"max_window_layers": 28},
    "qwen3": {"max_window_layers": 28},
    "qwen2_moe": {"max_window_layers": 28, "decoder_sparse_step": 1, "mlp_only_layers": []},
    "qwen3_moe": {"max_window_layers": 28, "decoder_sparse_step": 1, "mlp_only_layers": []},
    "llama4_text": {
        "attention_chunk_size": 8192, "interleave_moe_layer_step": 1, "no_rope_layer_interval": 4,
        "intermediate_size_mlp": 16384, "head_dim": 128, "num_local_experts": 16, "num_experts_per_tok": 1,
    },
    "opt": {"tie_word_embeddings": True, "enable_bias": True},
    # JambaConfig (transformers src/transformers/models/jamba/configuration_jamba.py, v4.46)
    "jamba": {
        "vocab_size": 65_536, "tie_word_embeddings": False, "hidden_size": 4096, "intermediate_size": 14_336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "sliding_window": None,
        "max_position_embeddings": 262_144, "num_experts_per_tok": 2, "num_experts": 16, "expert_layer_period": 2,
        "expert_layer_offset": 1, "attn_layer_period": 8, "attn_layer_offset": 4, "mamba_d_state": 16,
        "mamba_d_conv": 4, "mamba_expand": 2, "mamba_dt_rank": "auto", "mamba_conv_bias": True,
        "mamba_proj_bias": False,
    },
}  # fmt: skip
_QWEN = ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe")

# ModelSpec field path -> HF key, so a validation error names the key found in the file.
HF_KEY = {
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "max_context_tokens": "max_position_embeddings",
    "moe.expert_intermediate_size": "intermediate_size",
    "sliding_window_layers": "layer_types",
}
_QWEN_MOE_KEYS = {
    "moe.num_experts": "num_experts", "moe.experts_per_token": "num_experts_per_tok",
    "moe.expert_intermediate_size": "moe_intermediate_size",
    "moe.shared_intermediate_size": "shared_expert_intermediate_size", "moe.dense_intermediate_size": "intermediate_size",
}  # fmt: skip
_DEEPSEEK_KEYS = {
    "head_dim": "v_head_dim",
    "moe.num_experts": "n_routed_experts",
    "moe.experts_per_token": "num_experts_per_tok",
    "moe.expert_intermediate_size": "moe_intermediate_size",
    "moe.shared_intermediate_size": "moe_intermediate_size",
    "moe.num_shared_experts": "n_shared_experts",
    "moe.first_dense_layers": "first_k_dense_replace",
    "moe.dense_intermediate_size": "intermediate_size",
    **{f"mla.{k}": k for k in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "q_lora_rank")},
}
HF_KEY_BY_TYPE = {
    "opt": {"intermediate_size": "ffn_dim", "num_kv_heads": "num_attention_heads", "attention_bias": "enable_bias"},
    "mixtral": {"moe.num_experts": "num_local_experts", "moe.experts_per_token": "num_experts_per_tok"},
    "qwen2_moe": _QWEN_MOE_KEYS,
    "qwen3_moe": _QWEN_MOE_KEYS,
    "llama4_text": {
        "moe.num_experts": "num_local_experts", "moe.experts_per_token": "num_experts_per_tok",
        "moe.shared_intermediate_size": "intermediate_size", "moe.dense_intermediate_size": "intermediate_size_mlp",
        "intermediate_size": "intermediate_size_mlp", "sliding_window": "attention_chunk_size",
    },
    "deepseek_v2": _DEEPSEEK_KEYS,
    "deepseek_v3": _DEEPSEEK_KEYS,
}  # fmt: skip


def type_defaults(model_type: str) -> dict[str, Any]:
    return _DEFAULTS.get(model_type, {})


class Cfg:
    """Key access that turns a missing key into a one-line SpecError naming file and key.

    A key absent from the file takes the ``transformers`` default of its model_type (``defaults``);
    a key present as ``null`` is null (``sliding_window: null`` switches the window off)."""

    def __init__(self, data: dict[str, Any], path: Path, model_type: str, prefix: str = "",
                 defaults: dict[str, Any] | None = None):
        self.data, self.path, self.model_type, self.prefix = data, path, model_type, prefix
        self.defaults = defaults or {}
        self.asked: set[str] = set()  # keys read (for near_misses)

    def _get(self, key: str) -> Any:
        self.asked.add(key)
        value = self.data.get(key, _MISSING)
        return self.defaults.get(key, _MISSING) if value is _MISSING else value

    def near_misses(self) -> list[str]:
        """Keys of the file that nobody read and that look like a key kvsim read and did not find
        (``num_key_value_head`` for ``num_key_value_heads``: the default was used instead)."""
        absent = sorted(k for k in self.asked if k not in self.data)
        out = []
        for key in self.data:
            if key in self.asked or key.startswith("_"):
                continue
            close = misspelling_of(key, absent)
            if close:
                out.append(f"key '{self.prefix}{key}' is not read; did you mean '{self.prefix}{close}'? "
                           f"(absent: its default was used)")
        return out

    def req(self, key: str) -> Any:
        value = self._get(key)
        if value is _MISSING or value is None:
            raise SpecError(f"{self.path}: missing key '{self.prefix}{key}' (required for model_type '{self.model_type}')")
        return value

    def opt(self, key: str, default: Any = None) -> Any:
        value = self._get(key)
        return default if value is _MISSING or value is None else value

    def flag(self, key: str, default: bool = False) -> bool:
        """A boolean key (a string such as "false" is an error, not a true value)."""
        value = self.opt(key, default)
        if not isinstance(value, bool):
            raise self.bad(key, "true or false", value)
        return value

    def bad(self, key: str, expected: str, got: Any) -> SpecError:
        return SpecError(f"{self.path}: {self.prefix}{key}: expected {expected} (got {short_repr(got)})")

    def whole(self, key: str, lo: int = 1, default: Any = _MISSING) -> int:
        """A whole number >= ``lo`` (booleans rejected): layer counts and steps used in loops."""
        value = self.req(key) if default is _MISSING else self.opt(key, default)
        if isinstance(value, bool):
            raise self.bad(key, f"a whole number >= {lo}, not a boolean", value)
        if not isinstance(value, int) or value < lo:
            raise self.bad(key, f"a whole number >= {lo}", value)
        return value

    def layer_list(self, key: str, layers: int, values: tuple[int, ...] | None = None) -> list[int]:
        """A list of layer indices (``values`` None) or of per-layer flags in ``values``."""
        items = self.opt(key, [])
        ok = isinstance(items, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in items)
        if ok and values is None:
            ok = all(0 <= x < layers for x in items)
        elif ok:
            ok = (not items or len(items) == layers) and all(x in values for x in items)
        if not ok:
            what = f"a list of layer indices in [0, {layers})" if values is None else \
                f"a list of {layers} values in {set(values)} (one per layer)"
            raise self.bad(key, what, items)
        return items


def _head_dim(c: Cfg) -> Any:
    """``head_dim``, or ``hidden_size // num_attention_heads`` when the file has none (both must
    then be whole numbers: a quoted "2048" or a 1e400 is named here, not as a missing head_dim)."""
    hidden, heads = c.req("hidden_size"), c.req("num_attention_heads")
    head_dim = c.opt("head_dim")
    if head_dim is None:
        for key, value in (("hidden_size", hidden), ("num_attention_heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise c.bad(key, "a whole number >= 1 (head_dim is hidden_size / num_attention_heads)", value)
        head_dim = hidden // heads
    return head_dim


def _window_by_type(c: Cfg, layers: int) -> tuple[Any, int]:
    """(window, windowed layer count) from the keys each model_type uses (no ``layer_types``)."""
    mt = c.model_type
    if mt in _QWEN:
        if not c.flag("use_sliding_window", False):
            return None, 0
        first = c.whole("max_window_layers", lo=0)  # layers before it attend fully
        return c.opt("sliding_window"), max(0, layers - first)
    if mt == "gemma2":  # even layers local (Gemma2Attention: sliding unless layer_idx % 2)
        return c.opt("sliding_window"), (layers + 1) // 2
    if mt == "gemma3_text":  # layer i global when (i + 1) % pattern == 0
        key = "sliding_window_pattern" if c.opt("sliding_window_pattern") is not None else "_sliding_window_pattern"
        pattern = c.whole(key, default=6)
        return c.opt("sliding_window"), layers - layers // pattern
    if mt == "llama4_text":  # chunked attention on the RoPE layers (no_rope_layers[i] == 1)
        flags = c.layer_list("no_rope_layers", layers, values=(0, 1))
        if not flags:
            interval = c.whole("no_rope_layer_interval")
            flags = [int((i + 1) % interval != 0) for i in range(layers)]
        return c.opt("attention_chunk_size"), sum(flags)
    return c.opt("sliding_window"), layers


def _windows(c: Cfg, layers: int, context: Any) -> dict[str, Any]:
    """``sliding_window`` and ``sliding_window_layers`` (None: every layer) of the spec."""
    types = c.opt("layer_types")
    if types is not None:
        if not (isinstance(types, list) and len(types) == layers and all(isinstance(t, str) for t in types)):
            raise c.bad("layer_types", f"a list of {layers} strings (one per layer)", types)
        kinds = set(types) - {"full_attention"}
        unknown = sorted(kinds - {"sliding_attention", "chunked_attention"})
        if unknown:
            raise SpecError(f"{c.path}: {c.prefix}layer_types: unsupported layer type '{unknown[0]}' (kvsim "
                            "models full_attention, sliding_attention and chunked_attention)")
        if len(kinds) > 1:
            raise SpecError(f"{c.path}: {c.prefix}layer_types: sliding and chunked layers in one model are not "
                            "supported (one window per model)")
        if not kinds:
            return {"sliding_window": None}
        kind = kinds.pop()
        window = c.req("sliding_window" if kind == "sliding_attention" else "attention_chunk_size")
        count = types.count(kind)
    else:
        window, count = _window_by_type(c, layers)
    if window is None or count == 0:
        return {"sliding_window": None}
    if isinstance(window, int) and isinstance(context, int) and window >= context:
        return {"sliding_window": None}  # never binds
    return {"sliding_window": window, "sliding_window_layers": None if count == layers else count}


#: rope types whose max_position_embeddings already includes the scaling (vLLM: "su" is longrope's old name)
_ROPE_PRESCALED = ("su", "longrope", "llama3")


def _max_context(c: Cfg) -> Any:
    """vLLM's max_model_len of the config (``_get_and_verify_max_len``, vllm/config/model.py): the
    ``max_position_embeddings``, times the ``rope_scaling`` (transformers v5: ``rope_parameters``)
    ``factor`` unless its type is llama3 / longrope / su (already scaled) or the model is Gemma-3; YaRN
    multiplies ``original_max_position_embeddings`` instead (Qwen2.5's YaRN block: 32,768 x 4 = 131,072);
    a type without a factor (default, mrope) keeps 1."""
    context = c.req("max_position_embeddings")
    rope = c.opt("rope_scaling") or c.opt("rope_parameters")
    if not isinstance(rope, dict) or not isinstance(context, int) or c.model_type.startswith("gemma3"):
        return context
    rope_type = rope.get("rope_type", rope.get("type"))
    factor = rope.get("factor", 1.0)
    if rope_type in _ROPE_PRESCALED or not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
        return context
    if rope_type == "yarn":
        original = rope.get("original_max_position_embeddings", context)
        context = original if isinstance(original, int) and not isinstance(original, bool) and original > 0 else context
    return int(context * factor)


def _dense_fields(c: Cfg) -> dict[str, Any]:
    """Fields shared by the decoder-only types with rotary attention (all but opt and deepseek)."""
    layers = c.whole("num_hidden_layers")
    heads = c.req("num_attention_heads")
    context = _max_context(c)
    return {
        "num_layers": layers,
        "hidden_size": c.req("hidden_size"),
        "num_heads": heads,
        "num_kv_heads": c.opt("num_key_value_heads", heads),
        "head_dim": _head_dim(c),
        "vocab_size": c.req("vocab_size"),
        "max_context_tokens": context,
        "tie_word_embeddings": c.opt("tie_word_embeddings", False),
        "attention_bias": True if c.model_type in ("qwen2", "qwen2_moe") else c.opt("attention_bias", False),
        **_windows(c, layers, context),
    }


def _moe(c: Cfg, layers: int, moe_at: list[int], *, experts: str, top_k: str, width: str,
         dense_width: str, shared: int = 0, shared_width: Any = 0) -> dict[str, Any]:
    """Fields of a model whose MoE layers are ``moe_at`` (dense MLP of ``dense_width`` elsewhere)."""
    n = len(set(moe_at))
    if n == 0:
        return {"intermediate_size": c.req(dense_width)}
    dense = c.req(dense_width) if n < layers else 0
    return {
        "intermediate_size": dense,
        "moe": {
            "num_experts": c.req(experts),
            "experts_per_token": c.req(top_k),
            "expert_intermediate_size": c.req(width),
            "num_shared_experts": shared,
            "shared_intermediate_size": shared_width,
            "dense_intermediate_size": dense,
            "moe_layers": None if n == layers else n,
        },
    }


def _type_fields(c: Cfg) -> dict[str, Any]:
    """The MLP (dense or MoE) of each rotary model_type."""
    mt, layers = c.model_type, c.whole("num_hidden_layers")
    if mt == "mixtral":
        return _moe(c, layers, list(range(layers)), experts="num_local_experts", top_k="num_experts_per_tok",
                    width="intermediate_size", dense_width="intermediate_size")
    if mt in ("qwen2_moe", "qwen3_moe"):
        step, dense_only = c.whole("decoder_sparse_step"), set(c.layer_list("mlp_only_layers", layers))
        if c.opt("num_experts") is None:  # (0 is a dense model, as in transformers; absent is not a choice)
            raise SpecError(f"{c.path}: a {mt} config without num_experts (its routed experts per MoE layer; 0 for a "
                            "dense model)")
        at = [i for i in range(layers) if i not in dense_only and (i + 1) % step == 0] if c.opt("num_experts") else []
        shared = c.opt("shared_expert_intermediate_size", 0) if mt == "qwen2_moe" else 0
        return _moe(c, layers, at, experts="num_experts", top_k="num_experts_per_tok", width="moe_intermediate_size",
                    dense_width="intermediate_size", shared=1 if shared else 0, shared_width=shared)
    if mt == "llama4_text":
        if c.opt("moe_layers") is not None:
            at = c.layer_list("moe_layers", layers)
        else:
            step = c.whole("interleave_moe_layer_step")
            at = list(range(step - 1, layers, step))
        return _moe(c, layers, at, experts="num_local_experts", top_k="num_experts_per_tok", width="intermediate_size",
                    dense_width="intermediate_size_mlp", shared=1, shared_width=c.req("intermediate_size"))
    if mt == "jamba":  # JambaConfig.layers_num_experts: experts where i % expert_layer_period == offset
        period, offset = _period_offset(c, "expert_layer_period", "expert_layer_offset")
        at = [i for i in range(layers) if i % period == offset] if c.opt("num_experts") != 1 else []
        return _moe(c, layers, at, experts="num_experts", top_k="num_experts_per_tok", width="intermediate_size",
                    dense_width="intermediate_size")
    return {"intermediate_size": c.req("intermediate_size")}


def _period_offset(c: Cfg, period_key: str, offset_key: str) -> tuple[int, int]:
    """A layer period and its offset (JambaConfig._check_supported_offset: offset < period)."""
    period, offset = c.whole(period_key), c.whole(offset_key, lo=0)
    if offset >= period:
        raise c.bad(offset_key, f"a whole number below {period_key} ({period})", offset)
    return period, offset


def _jamba_ssm(c: Cfg) -> dict[str, Any]:
    """Jamba's Mamba (mamba1) layers: every layer but those with ``i % attn_layer_period ==
    attn_layer_offset`` (JambaConfig.layers_block_type); ``mamba_dt_rank`` "auto" is ceil(h / 16)."""
    layers = c.whole("num_hidden_layers")
    period, offset = _period_offset(c, "attn_layer_period", "attn_layer_offset")
    attention = sum(1 for i in range(layers) if i % period == offset)
    rank = c.opt("mamba_dt_rank", "auto")
    if attention == layers:  # (every layer attends: a plain MoE transformer)
        return {}
    return {"ssm": {
        "kind": "mamba1", "num_layers": layers - attention, "d_state": c.req("mamba_d_state"),
        "d_conv": c.req("mamba_d_conv"), "expand": c.req("mamba_expand"),
        "dt_rank": None if rank == "auto" else rank, "conv_bias": c.flag("mamba_conv_bias", True),
        "proj_bias": c.flag("mamba_proj_bias", False),
    }}


def _opt(c: Cfg) -> dict[str, Any]:
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


def _deepseek(c: Cfg) -> dict[str, Any]:
    layers = c.whole("num_hidden_layers")
    fields: dict[str, Any] = {
        "num_layers": layers,
        "hidden_size": c.req("hidden_size"),
        "num_heads": c.req("num_attention_heads"),
        "num_kv_heads": 1,  # MLA: one latent "head"; the mla block drives KV size
        "head_dim": c.req("v_head_dim"),
        "intermediate_size": c.req("intermediate_size"),
        "vocab_size": c.req("vocab_size"),
        "max_context_tokens": _max_context(c),
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
        # DeepseekV2/V3 decoder layer: MoE when layer_idx >= first_k_dense_replace and layer_idx % moe_layer_freq == 0
        first, freq = c.whole("first_k_dense_replace", lo=0, default=0), c.whole("moe_layer_freq", default=1)
        n = sum(1 for i in range(first, layers) if i % freq == 0)
        width, shared = c.req("moe_intermediate_size"), c.opt("n_shared_experts", 0)
        fields["moe"] = {
            "num_experts": c.req("n_routed_experts"),
            "experts_per_token": c.req("num_experts_per_tok"),
            "expert_intermediate_size": width,
            "num_shared_experts": shared,
            "shared_intermediate_size": width if shared else 0,
            "first_dense_layers": first,
            "dense_intermediate_size": c.req("intermediate_size"),
            "moe_layers": None if n == layers - first else n,
        }
    return fields


def fields_of(c: Cfg) -> dict[str, Any]:
    """ModelSpec fields (shapes, MoE, MLA, windows) of a config of ``c.model_type``."""
    if c.model_type == "opt":
        return _opt(c)
    if c.model_type in ("deepseek_v2", "deepseek_v3"):
        return _deepseek(c)
    if c.model_type == "jamba":
        return {**_dense_fields(c), **_type_fields(c), **_jamba_ssm(c)}
    return {**_dense_fields(c), **_type_fields(c)}
