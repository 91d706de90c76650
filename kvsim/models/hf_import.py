"""Build a :class:`ModelSpec` from a Hugging Face ``config.json``.

Supported ``model_type`` values and the keys read (HF ``transformers`` config names):

* ``llama``, ``mistral``, ``qwen2``, ``qwen3``, ``phi3`` (dense, SwiGLU): ``num_hidden_layers``,
  ``hidden_size``, ``num_attention_heads``, ``num_key_value_heads`` (default: heads),
  ``head_dim`` (default: hidden / heads), ``intermediate_size``, ``vocab_size``,
  ``max_position_embeddings``, ``tie_word_embeddings``, ``attention_bias``, ``sliding_window``.
  The max context is vLLM's: ``max_position_embeddings`` times ``rope_scaling``'s factor except for
  llama3 / longrope rope (already scaled) and Gemma-3; YaRN scales ``original_max_position_embeddings``.
  qwen2 always has q/k/v biases. Qwen's window applies only with ``use_sliding_window``, and then
  only to the layers from ``max_window_layers`` on (transformers' Qwen2/Qwen3 configs).
* ``gemma2``, ``gemma3`` / ``gemma3_text``: GeGLU MLP (3 matrices), tied embeddings by default.
  Gemma-2 alternates local (``sliding_window``) and global layers, even layers local; Gemma-3 has
  ``sliding_window_pattern`` - 1 local layers per global one. ``gemma3`` (image-text) reads its
  ``text_config``, where Google's own files leave most keys to the ``Gemma3TextConfig`` defaults.
* ``mixtral``: every layer MoE with experts of width ``intermediate_size``.
* ``qwen3_moe`` (and ``qwen2_moe``): ``num_experts``, ``num_experts_per_tok``,
  ``moe_intermediate_size``; a layer is MoE unless listed in ``mlp_only_layers`` or off the
  ``decoder_sparse_step``; qwen2_moe adds one shared expert of ``shared_expert_intermediate_size``.
* ``llama4`` / ``llama4_text``: ``num_local_experts`` routed experts top-``num_experts_per_tok``
  plus one shared expert (width ``intermediate_size``) on the ``moe_layers`` (default: every
  ``interleave_moe_layer_step``-th layer), dense MLP ``intermediate_size_mlp`` elsewhere; chunked
  local attention (``attention_chunk_size``) on the RoPE layers (``no_rope_layers`` 1, default
  3 in 4), global attention on the NoPE layers. ``llama4`` reads its ``text_config``.
* ``opt``: ``ffn_dim`` (ReLU, 2 matrices), biases everywhere (``enable_bias``), tied
  embeddings by default, MHA.
* ``deepseek_v2``, ``deepseek_v3``: MLA (``kv_lora_rank``, ``qk_rope_head_dim``,
  ``qk_nope_head_dim``, ``v_head_dim``, ``q_lora_rank``) and DeepSeekMoE (``n_routed_experts``,
  ``num_experts_per_tok``, ``moe_intermediate_size``, ``n_shared_experts``,
  ``first_k_dense_replace``, ``moe_layer_freq``; dense layers use ``intermediate_size``).

A ``layer_types`` list, where a config has one, is authoritative for the windowed layers
(``sliding_attention`` / ``chunked_attention`` vs ``full_attention``). A window at least as long
as the context never binds, so it is dropped (Phi-3-mini-128K: 262144 > 131072).

Not counted (each well under 0.01 % of the weights): Qwen-3 / Gemma-3 per-head q/k norms, Gemma's
two extra norms per layer, DeepSeek's MLA latent norms and router bias. Not part of the spec: the
vision tower of image-text models (Gemma-3 SigLIP, Llama-4) and DeepSeek-V3's MTP module, which a
serving engine loads only for images or speculative decoding. Errors are :class:`SpecError` with
one line per problem naming the file and the HF key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kvsim.errors import SpecError
from kvsim.jsonutil import loads_unique
from kvsim.models.hf_layouts import HF_KEY, HF_KEY_BY_TYPE, SUPPORTED, TEXT_CONFIG, Cfg, fields_of, type_defaults
from kvsim.models.spec import ModelSpec
from kvsim.specbase import format_validation_error, read_text, short_repr

__all__ = ["SUPPORTED", "load_hf_config"]


def _read_json(path: Path) -> dict[str, Any]:
    text = read_text(path)
    try:
        data = loads_unique(text)
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


def _text_part(data: dict[str, Any], path: Path, model_type: str) -> tuple[dict[str, Any], str, str]:
    """(keys of the language model, its model_type, the key prefix for messages).

    Image-text wrappers (``gemma3``, ``llama4``) keep the language model under ``text_config``."""
    if model_type not in TEXT_CONFIG:
        return data, model_type, ""
    text = data.get("text_config")
    if not isinstance(text, dict):
        got = "missing" if text is None else f"a {type(text).__name__}"
        raise SpecError(f"{path}: text_config: expected an object (the language model of a "
                        f"'{model_type}' config), got {got}")
    return text, TEXT_CONFIG[model_type], "text_config."


def _validate(spec: dict[str, Any], path: Path, text_type: str, prefix: str) -> ModelSpec:
    try:
        return ModelSpec.model_validate(spec)
    except ValidationError as err:
        keys = {**HF_KEY, **HF_KEY_BY_TYPE.get(text_type, {})}
        keys = {k: f"{prefix}{v}" for k, v in keys.items()}
        raise SpecError(format_validation_error(err, str(path), {**keys, "": "(config)"})) from None


#: quant_method of a ``quantization_config`` -> kvsim weight dtype (None: by its ``bits``); vLLM's
#: ``--quantization`` takes the same names (kvsim.validate.memory_check reads them from its logs)
QUANT_METHODS = {"fp8": "fp8", "fbgemm_fp8": "fp8", "mxfp4": "fp4", "nvfp4": "fp4", "awq": None, "gptq": None,
                  "marlin": None, "gptq_marlin": None, "awq_marlin": None, "hqq": None, "bitsandbytes": None}


def weight_quantization(data: dict[str, Any]) -> tuple[str | None, str]:
    """(kvsim weight dtype, description) of a config's ``quantization_config`` (transformers'
    key; vLLM loads such a checkpoint in that format): ``fp8`` for fp8 checkpoints, ``fp4`` for
    MXFP4/NVFP4 (gpt-oss, ModelOpt ``quant_algo: NVFP4``), ``int4``/``int8`` by ``bits`` for
    AWQ/GPTQ/HQQ, bitsandbytes ``load_in_4bit``/``load_in_8bit``. (None, why) when there is none
    or it is not understood."""
    q = data.get("quantization_config")
    if q is None:
        return None, ""
    if not isinstance(q, dict):
        return None, f"quantization_config {short_repr(q)} not understood (not a mapping)"
    method = str(q.get("quant_method", "")).lower()
    algo = str(q.get("quant_algo", "")).upper()
    if "NVFP4" in algo or "FP4" in algo:
        return "fp4", f"{method or 'modelopt'} {algo}"
    if "FP8" in algo:
        return "fp8", f"{method or 'modelopt'} {algo}"
    if method == "bitsandbytes":
        dt = "int4" if q.get("load_in_4bit") else "int8" if q.get("load_in_8bit") else None
        return dt, "bitsandbytes"
    if method in QUANT_METHODS and QUANT_METHODS[method]:
        return QUANT_METHODS[method], method
    if method == "compressed-tensors":
        return _compressed_tensors(q)
    bits = _bits(q.get("bits", q.get("w_bit")))
    if method in QUANT_METHODS and bits in (2, 4, 8):
        return f"int{bits}", f"{method} {bits}-bit"
    if method in QUANT_METHODS and bits is not None:
        return None, f"quantization_config {method} {bits}-bit not understood (kvsim prices 2, 4 or 8-bit integer weights)"
    return None, f"quantization_config {method or '?'} not understood"


def _bits(value: Any) -> int | None:
    """``bits`` as an int (configs write 4 or "4"); None when absent or not a whole number."""
    try:
        b = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return b if str(b) == str(value).strip() else None


def _compressed_tensors(q: dict[str, Any]) -> tuple[str | None, str]:
    """Weight dtype of a compressed-tensors config (llm-compressor checkpoints: RedHatAI / neuralmagic
    FP8, W8A8, W4A16, NVFP4): the ``weights`` scheme of its ``config_groups`` (``num_bits`` and
    ``type`` "float" or "int"); every group must agree."""
    groups = q.get("config_groups")
    found = set()
    if isinstance(groups, dict):
        for g in groups.values():
            w = g.get("weights") if isinstance(g, dict) else None
            if isinstance(w, dict):
                found.add((_bits(w.get("num_bits")), str(w.get("type", "int")).lower()))
    names = {(8, "float"): "fp8", (4, "float"): "fp4", (8, "int"): "int8", (4, "int"): "int4", (2, "int"): "int2"}
    if len(found) == 1 and next(iter(found)) in names:
        bits, kind = next(iter(found))
        return names[(bits, kind)], f"compressed-tensors {kind} {bits}-bit weights"
    return None, "quantization_config compressed-tensors not understood (no single weights scheme in config_groups)"


def load_hf_config(path: Path, name: str | None = None) -> ModelSpec:
    """Read a Hugging Face ``config.json`` into a :class:`ModelSpec` (see module docstring).

    ``name``: the model's name when the file does not carry ``_name_or_path`` (a config found in
    the Hugging Face cache is named by its repository, not its snapshot folder)."""
    path = Path(path)
    data = _read_json(path)
    model_type = data.get("model_type")
    if model_type not in SUPPORTED:
        got = "missing" if model_type is None else repr(model_type)
        raise SpecError(f"{path}: model_type: unsupported ({got}); supported: {', '.join(SUPPORTED)}")
    text, text_type, prefix = _text_part(data, path, model_type)
    c = Cfg(text, path, text_type, prefix, type_defaults(text_type))
    label = data.get("_name_or_path")
    label = label.strip() if isinstance(label, str) else ""
    spec = {
        "name": label or name or _name(data, path),
        "hf_id": label or name or "",
        "architecture": model_type,
        **fields_of(c),
        "source": f"Hugging Face config {path}",
    }
    near = c.near_misses()
    if near:
        spec["config_note"] = f"{path}: " + "; ".join(near)
    quant, how = weight_quantization(data)
    if quant is not None:
        spec["weight_quantization"] = quant
        spec["notes"] = spec["quantization_note"] = f"checkpoint weights: {how} (quantization_config) -> {quant}"
    elif how:
        spec["notes"] = spec["quantization_note"] = f"{how}: weights are priced in --weight-dtype (default 16-bit)"
    return _validate(spec, path, text_type, prefix)
