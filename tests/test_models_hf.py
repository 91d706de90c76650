"""Hugging Face import of qwen3, qwen3_moe, gemma2, gemma3, deepseek_v3 and llama4 configs (real
config.json contents, sources in tests/data/hf/README.md), hybrid layouts, and --model org/name
from the local Hugging Face cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from synthetic import synthetic_system

from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.transformer import linear_cost
from kvsim.errors import SpecError
from kvsim.models import load_model
from kvsim.models.hf_cache import cached_config, hub_cache_dir
from kvsim.models.hf_import import load_hf_config

HF_DIR = Path(__file__).parent / "data" / "hf"
GEMMA3 = HF_DIR / "more" / "gemma-3-4b-it.json"


def _write(tmp_path: Path, data: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def _cfg(name: str) -> dict:
    return json.loads((HF_DIR / name).read_text())


# ---------- shapes of each architecture ----------


def test_qwen3_8b_params_by_hand() -> None:
    """Qwen3-8B: 36 x (q 4096x4096 + k,v 4096x1024 + o 4096x4096 + SwiGLU 3x4096x12288)
    + untied embeddings 2 x 151936 x 4096 + 73 norms x 4096 = 8,190,726,144 (card: 8.2B)."""
    m = load_hf_config(HF_DIR / "qwen3-8b.json")
    attn = 4096 * 4096 + 2 * 4096 * 1024 + 4096 * 4096  # 41,943,040
    mlp = 3 * 4096 * 12288  # 150,994,944
    assert m.total_params == 36 * (attn + mlp) + 2 * 151936 * 4096 + 73 * 4096 == 8_190_726_144
    assert (m.head_dim, m.num_kv_heads, m.attention_bias, m.sliding_window) == (128, 8, False, None)


def test_qwen3_30b_a3b_params_by_hand() -> None:
    """Qwen3-30B-A3B: every layer MoE, 128 experts of 768, top-8, no shared expert:
    48 x (attention 18,874,368 + 128 x 3x2048x768 + router 2048x128) + 2 x 151936 x 2048 + 97 x 2048
    = 30,532,110,336 total; active 48 x (18,874,368 + 8 x 4,718,592 + 262,144) + LM head = 3.04B."""
    m = load_hf_config(HF_DIR / "qwen3-30b-a3b.json")
    attn = 2048 * 4096 + 2 * 2048 * 512 + 4096 * 2048  # 18,874,368 (head_dim 128 x 32 heads = 4096)
    expert = 3 * 2048 * 768  # 4,718,592
    assert m.total_params == 48 * (attn + 128 * expert + 2048 * 128) + 2 * 151936 * 2048 + 97 * 2048 == 30_532_110_336
    assert m.active_params_per_token == 48 * (attn + 8 * expert + 2048 * 128) + 151936 * 2048 == 3_041_656_832
    assert m.moe.moe_layers is None and m.num_moe_layers == 48 and m.intermediate_size == 0


def test_deepseek_v3_params_by_hand() -> None:
    """DeepSeek-V3 (MLA with q_lora 1536; 3 dense layers; 58 MoE layers of 256 experts top-8 + 1 shared):
    MLA 1536x7168 + 1536x128x192 + 7168x576 + 512x128x256 + 128x128x7168 = 187,105,280 per layer;
    total 61 x 187,105,280 + 3 x 3x7168x18432 + 58 x (257 x 3x7168x2048 + 7168x256) + 2 x 129280 x 7168
    + 123 x 7168 = 671,026,279,424 (README_WEIGHTS: 671B main model)."""
    m = load_hf_config(HF_DIR / "deepseek-v3.json")
    mla = 7168 * 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 * 128 * 256 + 128 * 128 * 7168
    assert m.attn_params_per_layer == mla == 187_105_280
    moe_layer = 257 * 3 * 7168 * 2048 + 7168 * 256  # 256 routed + 1 shared expert, router
    total = 61 * mla + 3 * 3 * 7168 * 18432 + 58 * moe_layer + 2 * 129280 * 7168 + 123 * 7168
    assert m.total_params == total == 671_026_279_424
    assert (m.moe.first_dense_layers, m.num_moe_layers, m.num_dense_mlp_layers) == (3, 58, 3)
    # MLA KV: 61 layers x (512 + 64) x 2 B = 70,272 B/token at 16 bit
    assert m.num_layers * m.kv_elements_per_token_per_layer * 2 == 70_272


def test_llama4_scout_params_and_chunked_layers() -> None:
    """Llama-4-Scout: 48 MoE layers (16 experts of 8192 top-1 + 1 shared expert of 8192), GQA 40:8 x 128;
    48 x (62,914,560 attention + 17 x 3x5120x8192 + 5120x16 router) + 2 x 202048 x 5120 + 97 x 5120
    = 107,769,861,120 (the published 109B adds the ~0.9B vision encoder, not counted).
    Chunked attention (8192) on the RoPE layers: no_rope_layers 1,1,1,0 x 12 -> 36 of 48."""
    m = load_hf_config(HF_DIR / "llama-4-scout-17b-16e.json")
    attn = 5120 * 5120 + 2 * 5120 * 1024 + 5120 * 5120  # 62,914,560
    assert m.total_params == 48 * (attn + 17 * 3 * 5120 * 8192 + 5120 * 16) + 2 * 202048 * 5120 + 97 * 5120
    assert m.total_params == 107_769_861_120
    assert (m.sliding_window, m.sliding_window_layers, m.windowed_layers) == (8192, 36, 36)
    assert (m.moe.num_shared_experts, m.moe.shared_intermediate_size, m.moe.experts_per_token) == (1, 8192, 1)
    assert load_model("llama-4-scout").published_params - m.total_params == pytest.approx(1.23e9, rel=0.01)


def test_llama4_interleaved_moe_layers(tmp_path: Path) -> None:
    """interleave_moe_layer_step 2 with 128 experts: layers 1, 3, ..., 47 are MoE (24), the other 24 have a
    dense MLP of intermediate_size_mlp 16384: 24 x 3x5120x16384 + 24 x (128+1) x 3x5120x8192 + ..."""
    data = _cfg("llama-4-scout-17b-16e.json")
    text = data["text_config"]
    del text["moe_layers"]
    text.update(interleave_moe_layer_step=2, num_local_experts=128)
    m = load_hf_config(_write(tmp_path, data))
    assert (m.num_moe_layers, m.num_dense_mlp_layers, m.moe.moe_layers) == (24, 24, 24)
    attn = 62_914_560
    dense = 3 * 5120 * 16384  # 251,658,240
    moe = 129 * 3 * 5120 * 8192 + 5120 * 128  # 128 routed + 1 shared, router
    assert m.total_params == 48 * attn + 24 * dense + 24 * moe + 2 * 202048 * 5120 + 97 * 5120 == 400_711_848_960
    # the cost model charges 24 dense MLPs and 24 MoE layers: FLOPs of one token through the MLP part
    dep = Deployment(system=synthetic_system(), model=m)
    mlp = next(p for p in linear_cost(dep, 1.0, 1.0).parts if p.name == "mlp")
    shared, router, expert = 3 * 5120 * 8192, 5120 * 128, 3 * 5120 * 8192
    assert mlp.flops == pytest.approx(2.0 * (24 * dense + 24 * (shared + router) + 24 * 1 * expert))


def test_gemma2_alternating_window_and_tied_default() -> None:
    """Gemma-2-9B: local 4096 window on the even layers (21 of 42), GeGLU, embeddings tied by default
    (the config omits tie_word_embeddings; Gemma2Config defaults it to true)."""
    m = load_hf_config(HF_DIR / "gemma-2-9b-it.json")
    assert (m.sliding_window, m.sliding_window_layers, m.windowed_layers) == (4096, 21, 21)
    assert (m.tie_word_embeddings, m.mlp_gated, m.head_dim) == (True, True, 256)
    attn = 3584 * 4096 + 2 * 3584 * 2048 + 4096 * 3584
    assert m.total_params == 42 * (attn + 3 * 3584 * 14336) + 256000 * 3584 + 85 * 3584 == 9_241_404_928


def test_gemma3_text_config_defaults_and_pattern() -> None:
    """google/gemma-3-4b-it's config gives only 6 text keys: heads 8, kv 4, head_dim 256, vocab 262208,
    131072 context and tied embeddings come from Gemma3TextConfig's defaults; 5 local : 1 global ->
    34 - 34 // 6 = 29 layers with the 1024 window."""
    m = load_hf_config(GEMMA3)
    assert (m.num_heads, m.num_kv_heads, m.head_dim, m.vocab_size) == (8, 4, 256, 262208)
    assert (m.max_context_tokens, m.tie_word_embeddings, m.architecture) == (131072, True, "gemma3")
    assert (m.sliding_window, m.sliding_window_layers) == (1024, 29)
    assert m.name == m.hf_id == "google/gemma-3-4b-it"


def test_layer_types_are_authoritative(tmp_path: Path) -> None:
    """A layer_types list counts the windowed layers itself (here 2 sliding of 34)."""
    data = json.loads(GEMMA3.read_text())
    data["text_config"]["layer_types"] = ["sliding_attention"] * 2 + ["full_attention"] * 32
    assert load_hf_config(_write(tmp_path, data)).sliding_window_layers == 2
    data["text_config"]["layer_types"] = ["full_attention"] * 34
    assert load_hf_config(_write(tmp_path, data)).sliding_window is None


@pytest.mark.parametrize(
    "layer_types, needle",
    [
        (["full_attention"] * 3, "text_config.layer_types: expected a list of 34 strings (one per layer)"),
        (["linear_attention"] * 34, "text_config.layer_types: unsupported layer type 'linear_attention'"),
        (["sliding_attention", "chunked_attention"] + ["full_attention"] * 32, "sliding and chunked layers"),
    ],
)
def test_bad_layer_types_is_one_line(tmp_path: Path, layer_types: list, needle: str) -> None:
    """A layer_types list of the wrong length or with a kind kvsim cannot model names file and key."""
    data = json.loads(GEMMA3.read_text())
    data["text_config"]["layer_types"] = layer_types
    path = _write(tmp_path, data)
    with pytest.raises(SpecError) as exc:
        load_hf_config(path)
    (line,) = str(exc.value).splitlines()
    assert line.startswith(f"{path}: ") and needle in line


def test_qwen3_moe_dense_layers_from_mlp_only_and_step(tmp_path: Path) -> None:
    """qwen3_moe: layer i is MoE unless in mlp_only_layers or (i + 1) % decoder_sparse_step != 0:
    48 layers, step 2 -> odd layers 1..47 (24), minus mlp_only_layers [1, 3] -> 22 MoE, 26 dense of 6144."""
    data = _cfg("qwen3-30b-a3b.json")
    data.update(decoder_sparse_step=2, mlp_only_layers=[1, 3])
    m = load_hf_config(_write(tmp_path, data))
    assert (m.num_moe_layers, m.num_dense_mlp_layers, m.intermediate_size) == (22, 26, 6144)
    assert m.dense_mlp_params_per_layer == 3 * 2048 * 6144


def test_qwen3_moe_without_num_experts_is_an_error(tmp_path: Path) -> None:
    """A qwen3_moe config missing num_experts used to load as a dense 3.3B model, silently; 0 stays a dense model
    (transformers: MoE only where num_experts > 0): 48 layers of the 6144-wide dense MLP."""
    data = {k: v for k, v in _cfg("qwen3-30b-a3b.json").items() if k != "num_experts"}
    with pytest.raises(SpecError, match="qwen3_moe config without num_experts"):
        load_hf_config(_write(tmp_path, data))
    m = load_hf_config(_write(tmp_path, {**data, "num_experts": 0}))
    assert m.moe is None or m.num_moe_layers == 0


def test_deepseek_moe_layer_freq(tmp_path: Path) -> None:
    """deepseek moe_layer_freq 2 with first_k_dense_replace 3: MoE on layers 4, 6, ..., 60 = 29 of 61."""
    data = _cfg("deepseek-v3.json")
    data.update(moe_layer_freq=2)
    m = load_hf_config(_write(tmp_path, data))
    assert (m.num_moe_layers, m.num_dense_mlp_layers, m.moe.first_dense_layers) == (29, 32, 3)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"text_config": None}, "text_config: expected an object"),
        ({"text_config": {"num_hidden_layers": "many"}}, "text_config.num_hidden_layers: expected a whole number >= 1"),
        ({"text_config": {"num_hidden_layers": 4, "num_attention_heads": 0}}, "text_config.num_attention_heads: "),
    ],
)
def test_wrapper_config_errors_name_the_nested_key(tmp_path: Path, change: dict, needle: str) -> None:
    """Errors inside an image-text wrapper name the key under text_config."""
    data = json.loads(GEMMA3.read_text())
    data.update(change)
    path = _write(tmp_path, {k: v for k, v in data.items() if v is not None})
    with pytest.raises(SpecError) as exc:
        load_hf_config(path)
    assert str(exc.value).splitlines()[0].startswith(f"{path}: ") and needle in str(exc.value)


@pytest.mark.parametrize(
    "yaml_change, needle",
    [
        ("sliding_window_layers: 5\n", "sliding_window_layers needs sliding_window"),
        ("sliding_window: 4096\nsliding_window_layers: 99\n", "sliding_window_layers (99) must be <= num_layers (36)"),
    ],
)
def test_model_yaml_window_fields_validated(tmp_path: Path, yaml_change: str, needle: str) -> None:
    """The window fields of a model YAML are checked with one line naming the file."""
    from kvsim.models import MODELS_DIR

    text = (MODELS_DIR / "qwen3-8b.yaml").read_text().replace("sliding_window: null    # use_sliding_window false\n", "")
    path = tmp_path / "m.yaml"
    path.write_text(text + yaml_change)
    with pytest.raises(SpecError) as exc:
        load_model(str(path))
    assert str(exc.value).startswith(f"{path}: ") and needle in str(exc.value)


# ---------- --model org/name from the local Hugging Face cache ----------


def _cache(root: Path, repo: str, snapshots: dict[str, dict], main: str | None = None) -> Path:
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    for commit, data in snapshots.items():
        _write(repo_dir / "snapshots" / commit, data)
    if main:
        (repo_dir / "refs").mkdir(parents=True)
        (repo_dir / "refs" / "main").write_text(main + "\n")
    return repo_dir


def test_hub_cache_dir_follows_huggingface_hub() -> None:
    """HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub."""
    assert hub_cache_dir({"HF_HUB_CACHE": "/c", "HF_HOME": "/h"}) == Path("/c")
    assert hub_cache_dir({"HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}) == Path("/h/hub")
    assert hub_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/huggingface/hub")
    assert hub_cache_dir({}) == Path.home() / ".cache" / "huggingface" / "hub"


def test_model_org_name_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--model org/name reads the snapshot refs/main names and takes the repo id as its name."""
    g3 = json.loads(GEMMA3.read_text())
    del g3["_name_or_path"]  # cached configs do not carry it
    older = dict(g3, text_config=dict(g3["text_config"], num_hidden_layers=2))
    _cache(tmp_path / "hub", "google/gemma-3-4b-it", {"aaa": older, "bbb": g3}, main="bbb")
    os.utime(tmp_path / "hub" / "models--google--gemma-3-4b-it" / "snapshots" / "aaa" / "config.json", (4e9, 4e9))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    m = load_model("google/gemma-3-4b-it")
    assert (m.name, m.hf_id, m.num_layers) == ("google/gemma-3-4b-it", "google/gemma-3-4b-it", 34)
    # without refs/main, the most recently modified snapshot
    (tmp_path / "hub" / "models--google--gemma-3-4b-it" / "refs" / "main").unlink()
    assert load_model("google/gemma-3-4b-it").num_layers == 2


def test_shipped_alias_wins_over_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped alias (Qwen/Qwen3-8B) resolves to the shipped spec even when the cache has the repo."""
    _cache(tmp_path, "Qwen/Qwen3-8B", {"c1": dict(_cfg("qwen3-8b.json"), num_hidden_layers=2)})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert cached_config("Qwen/Qwen3-8B") is not None
    m = load_model("Qwen/Qwen3-8B")
    assert (m.name, m.num_layers) == ("qwen3-8b", 36)


def test_model_not_in_cache_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An org/name neither shipped nor cached: one line naming the cache folder; nothing downloaded."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(SpecError) as exc:
        load_model("someorg/some-model")
    (line,) = str(exc.value).splitlines()
    assert "unknown model 'someorg/some-model'" in line and str(tmp_path) in line and "never downloads" in line


def test_model_folder_with_config(tmp_path: Path) -> None:
    """--model path/to/folder reads its config.json and names the model after the folder."""
    data = _cfg("qwen3-8b.json")
    del data["_name_or_path"]
    _write(tmp_path / "my-qwen", data)
    assert load_model(str(tmp_path / "my-qwen")).name == "my-qwen"


@pytest.mark.parametrize("qc, dtype", [
    ({"quant_method": "awq", "bits": 4, "group_size": 128}, "int4"),
    ({"quant_method": "gptq", "bits": 8}, "int8"),
    ({"quant_method": "fp8", "activation_scheme": "dynamic"}, "fp8"),
    ({"quant_method": "mxfp4"}, "fp4"),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, "fp4"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "int4"),
    ({"quant_method": "exotic"}, None),
    # compressed-tensors (llm-compressor: RedHatAI / neuralmagic checkpoints): the weights scheme of config_groups
    ({"quant_method": "compressed-tensors", "format": "float-quantized",
      "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 8, "type": "float"}}}}, "fp8"),
    ({"quant_method": "compressed-tensors", "format": "pack-quantized",
      "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int", "group_size": 128}}}}, "int4"),
    ({"quant_method": "compressed-tensors", "config_groups": {}}, None),
    ({"quant_method": "gptq", "bits": "4"}, "int4"),  # bits as a string
    ({"quant_method": "gptq", "bits": 3}, None),      # no 3-bit dtype: 16-bit, said so
    ([1], None),                                      # not a mapping: said so (it was ignored silently)
])
def test_quantization_config_sets_the_auto_weight_dtype(tmp_path: Path, qc: dict, dtype: str | None) -> None:
    """A quantized checkpoint's config.json (quantization_config) is priced in its format under
    --weight-dtype auto, as vLLM loads it, with a note; an explicit --weight-dtype wins (noted); a
    format kvsim does not know keeps 16-bit weights and says so. 7,241,732,096 parameters (Mistral-7B
    shape), of which the embedding and LM head 2 x 32,000 x 4,096 = 262,144,000 stay in bf16: int4
    (7,241,732,096 - 262,144,000) x 0.5 + 262,144,000 x 2 = 4,014,082,048 B; bf16: 14,483,464,192 B."""
    from kvsim.costmodel.deployment import build_deployment

    cfg = {"model_type": "mistral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 32000,
           "max_position_embeddings": 32768, "quantization_config": qc}
    path = _write(tmp_path, cfg)
    dep = build_deployment("h100", str(path))
    assert dep.weight_dtype == (dtype or "bf16")
    assert dep.model.total_params == 7_241_732_096
    if dtype == "int4":
        assert dep.weight_bytes_per_gpu == 4_014_082_048
    note = " ".join(dep.notes)
    assert ("-> " + dtype if dtype else "not understood") in note
    if dtype:
        given = build_deployment("h100", str(path), weight_dtype="bf16")
        assert given.weight_bytes_per_gpu == 14_483_464_192 and f"the checkpoint's is {dtype}" in " ".join(given.notes)


def test_a_quoted_number_is_named_not_a_missing_head_dim(tmp_path: Path) -> None:
    """hidden_size "2048" (a string) or 1e400 (inf) in a config without head_dim: the error names
    hidden_size; it said 'head_dim: Input should be a valid integer (got None)'."""
    base = {"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 32, "num_key_value_heads": 4,
            "intermediate_size": 5632, "vocab_size": 32000, "max_position_embeddings": 2048}
    for bad, shown in (("2048", "'2048'"), (float("inf"), "inf")):
        path = _write(tmp_path, {**base, "hidden_size": bad})
        with pytest.raises(SpecError) as e:
            load_hf_config(path)
        lines = str(e.value).splitlines()
        assert len(lines) == 1 and f"hidden_size: expected a whole number >= 1" in lines[0] and shown in lines[0]


def test_quantization_note_comes_from_its_own_field_not_the_free_text_notes() -> None:
    """Deployment.notes names a checkpoint's quantization from ModelSpec.quantization_note (set by the
    config.json import); a model whose free-text notes happen to start with 'quantization_config'
    gets no such note (it used to be recognised by that prefix)."""
    from kvsim.costmodel.deployment import build_deployment
    from dataclasses import replace

    dep = build_deployment("h100", "llama-3.1-8b")
    odd = replace(dep, model=dep.model.model_copy(update={"notes": "quantization_config lookalike text"}))
    assert not any("lookalike" in n for n in odd.notes)
    noted = replace(dep, model=dep.model.model_copy(update={"quantization_note": "exotic not understood"}))
    assert any("exotic not understood" in n for n in noted.notes)


def test_catalog_deepseek_v3_is_priced_as_its_fp8_checkpoint() -> None:
    """The shipped deepseek-v3 and its published config.json agree: fp8 weights under --weight-dtype auto
    (the name used to give bf16, 167.8 GB per GPU at TP 8, the config 84.1 GB; audit). Hand count:
    (671,026,279,424 - 2 x 926,679,040 embedding/head) x 1 B + 1,853,358,080 x 2 B = 672,879,637,504 B
    / 8 GPUs = 84,109,954,688 B, plus the MLA down-projections every GPU holds whole (q_a_proj and
    kv_a_proj_with_mqa are replicated in vLLM): 61 x 7168 x (1536 + 576) x (1 - 1/8) x 1 B = 808,034,304 B
    -> 84,917,988,992 B."""
    from kvsim.costmodel.deployment import build_deployment

    by_name = build_deployment("h200", "deepseek-v3", tp=8)
    by_config = build_deployment("h200", str(HF_DIR / "deepseek-v3.json"), tp=8)
    assert by_name.weight_dtype == by_config.weight_dtype == "fp8"
    assert by_name.weight_bytes_per_gpu == pytest.approx(84_917_988_992, rel=1e-9)
    assert any("fp8" in n and "deepseek-v3" in n for n in by_name.notes)


def test_yaml_model_quantization_note_is_not_its_free_text(tmp_path: Path) -> None:
    """A model YAML with weight_quantization but no quantization_note: the note says the checkpoint's
    dtype, not the model's unrelated free-text notes (audit)."""
    import yaml as _yaml
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.models import MODELS_DIR

    data = _yaml.safe_load((MODELS_DIR / "llama-3.1-8b.yaml").read_text())
    data.update({"name": "my-int4", "aliases": [], "weight_quantization": "int4"})
    path = tmp_path / "m.yaml"
    path.write_text(_yaml.safe_dump(data))
    notes = build_deployment("h100", str(path)).notes
    assert any(n.startswith("my-int4: checkpoint weights: int4; priced as --weight-dtype int4") for n in notes), notes
    assert not any(data["notes"][:20] in n for n in notes)


def test_use_sliding_window_must_be_a_boolean(tmp_path: Path) -> None:
    """Qwen's use_sliding_window: "false" (a string) turned the window on (audit); it is an error now."""
    cfg = {"model_type": "qwen2", "hidden_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 8,
           "num_key_value_heads": 2, "intermediate_size": 2816, "vocab_size": 1000, "max_position_embeddings": 4096,
           "sliding_window": 1024, "max_window_layers": 2, "use_sliding_window": "false"}
    with pytest.raises(SpecError, match="use_sliding_window: expected true or false"):
        load_hf_config(_write(tmp_path, cfg))
    cfg["use_sliding_window"] = False
    assert load_hf_config(_write(tmp_path, cfg)).sliding_window is None


def test_a_misspelled_config_key_is_named_and_real_configs_are_quiet(tmp_path):
    """'num_key_value_head' (no s) loaded as multi-head attention (32 KV heads: 4x the KV bytes) without a
    word (user audit): a key nobody read that is close to one read and absent is named; the shipped
    real configs give no such note."""
    import json

    from kvsim.costmodel.deployment import build_deployment

    cfg = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_head": 8, "vocab_size": 128256, "intermediate_size": 14336,
           "max_position_embeddings": 131072}
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    m = load_hf_config(p)
    assert m.num_kv_heads == 32  # (what transformers would do too: the default)
    assert "'num_key_value_head' is not read; did you mean 'num_key_value_heads'?" in m.config_note
    assert any("did you mean 'num_key_value_heads'" in n for n in build_deployment("a100", str(p)).notes)
    for real in sorted((Path(__file__).parent / "data" / "hf").rglob("*.json")):
        assert load_hf_config(real).config_note == "", real
