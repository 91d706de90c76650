"""Model specs: shipped YAMLs, hand-computed KV sizes and parameter counts, HF config import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvsim.errors import SpecError
from kvsim.models import MODELS_DIR, ModelSpec, catalog, load_model, names
from kvsim.models.hf_import import load_hf_config
from kvsim.specbase import read_yaml, validate_dict

HF_DIR = Path(__file__).parent / "data" / "hf"
MODEL_FILES = sorted(MODELS_DIR.glob("*.yaml"))
DIMS = [
    "architecture", "num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
    "intermediate_size", "vocab_size", "max_context_tokens", "mlp_gated", "tie_word_embeddings",
    "attention_bias", "sliding_window", "sliding_window_layers", "moe", "mla",
]  # fmt: skip


def kv_bytes_per_token(m: ModelSpec, bytes_per_elem: int = 2) -> int:
    return m.kv_elements_per_token_per_layer * m.num_layers * bytes_per_elem


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_every_shipped_model_yaml_loads(path: Path) -> None:
    """Each model YAML validates, cites a source and records the published parameter count."""
    m = validate_dict(ModelSpec, read_yaml(path), str(path))
    assert m.source and m.published_params and m.hf_id
    assert path.stem == m.name


def test_catalog_names() -> None:
    """All 31 shipped models are in the catalog under unique names."""
    assert len(names()) == 31
    assert "deepseek-v2-lite" in names() and "mistral-7b-v0.1" in names()


def test_kv_llama2_7b() -> None:
    """Llama-2-7B (MHA): 2 (K,V) x 32 layers x 32 heads x 128 x 2 B = 524,288 B/token."""
    m = load_model("llama-2-7b")
    assert m.kv_elements_per_token_per_layer == 2 * 32 * 128  # 8192
    assert kv_bytes_per_token(m) == 524_288


def test_kv_llama31_8b() -> None:
    """Llama-3.1-8B (GQA 8): 2 x 32 x 8 x 128 x 2 B = 131,072 B/token."""
    assert kv_bytes_per_token(load_model("llama-3.1-8b")) == 131_072


def test_kv_deepseek_v2_lite_mla() -> None:
    """DeepSeek-V2-Lite MLA: 27 layers x (512 latent + 64 rope) x 2 B = 31,104 B/token."""
    m = load_model("deepseek-v2-lite")
    assert m.kv_elements_per_token_per_layer == 512 + 64
    assert kv_bytes_per_token(m) == 27 * 576 * 2 == 31_104
    assert m.q_head_dim == 128 + 64


@pytest.mark.parametrize(
    "name,kv",
    [  # SPECS.md Table M1 kv_B/token fp16 column
        ("llama-2-13b", 819_200),  # 2*40*40*128*2
        ("llama-2-70b", 327_680),  # 2*80*8*128*2
        ("llama-3-8b", 131_072),
        ("llama-3-70b", 327_680),
        ("codellama-7b", 524_288),
        ("codellama-13b", 819_200),
        ("codellama-34b", 196_608),  # 2*48*8*128*2
        ("mistral-7b-v0.1", 131_072),
        ("mistral-7b-v0.2", 131_072),
        ("megabeam-mistral-7b-512k", 131_072),
        ("yi-34b-200k", 245_760),  # 2*60*8*128*2
        ("opt-6.7b", 524_288),
        ("opt-30b", 1_376_256),  # 2*48*56*128*2
        ("phi-3-mini-128k", 393_216),  # 2*32*32*96*2
        ("qwen2.5-7b", 57_344),  # 2*28*4*128*2
        ("mixtral-8x7b", 131_072),
        ("qwen3-8b", 147_456),  # 2*36*8*128*2
        ("qwen3-30b-a3b", 98_304),  # 2*48*4*128*2
        ("gemma-2-9b-it", 344_064),  # 2*42*8*256*2 (all layers counted: windows are not priced)
        ("deepseek-v3", 70_272),  # MLA: 61*(512+64)*2
        ("llama-4-scout-17b-16e", 196_608),  # 2*48*8*128*2
    ],
)
def test_kv_bytes_match_specs_table(name: str, kv: int) -> None:
    """KV bytes per token at 16 bit match SPECS.md Table M1."""
    assert kv_bytes_per_token(load_model(name)) == kv


PUBLISHED = {  # SPECS.md Table M1 params column
    "llama-2-7b": 6.74e9, "llama-2-13b": 13.02e9, "llama-2-70b": 68.98e9, "llama-3-8b": 8.03e9,
    "llama-3.1-8b": 8.03e9, "llama-3-70b": 70.55e9, "codellama-7b": 6.74e9, "codellama-13b": 13.02e9,
    "codellama-34b": 33.74e9, "mistral-7b-v0.1": 7.24e9, "mistral-7b-v0.2": 7.24e9,
    "megabeam-mistral-7b-512k": 7.24e9, "yi-34b-200k": 34.39e9, "opt-6.7b": 6.66e9, "opt-30b": 29.97e9,
    "phi-3-mini-128k": 3.82e9, "qwen2.5-7b": 7.62e9, "mixtral-8x7b": 46.70e9, "deepseek-v2-lite": 15.71e9,
    # model cards / reports (sources in each YAML); Llama-4-Scout's 109B includes its vision encoder: see
    # tests/test_models_hf.py
    "qwen3-8b": 8.2e9, "qwen3-30b-a3b": 30.5e9, "gemma-2-9b-it": 9.24e9, "deepseek-v3": 671.0e9,
}  # fmt: skip


@pytest.mark.parametrize("name,published", sorted(PUBLISHED.items()))
def test_total_params_match_published(name: str, published: float) -> None:
    """ModelSpec.total_params is within 0.5 % of the published count (OPT: 1 %, biases partly uncounted)."""
    m = load_model(name)
    tol = 0.01 if m.architecture == "opt" else 0.005
    assert m.total_params == pytest.approx(published, rel=tol)
    assert m.published_params == published


def test_llama2_7b_params_by_hand() -> None:
    """Llama-2-7B: 32 x (4 x 4096^2 + 3 x 4096 x 11008) + 2 x 32000 x 4096 + 65 x 4096 = 6,738,415,616."""
    m = load_model("llama-2-7b")
    attn = 4 * 4096 * 4096  # q, k, v, o (MHA)
    mlp = 3 * 4096 * 11008  # gate, up, down
    assert m.total_params == 32 * (attn + mlp) + 2 * 32000 * 4096 + (2 * 32 + 1) * 4096 == 6_738_415_616


def test_mixtral_active_params() -> None:
    """Mixtral: 12.88B active incl. the embedding lookup (SPECS.md); top-2 of 8 experts."""
    m = load_model("mixtral-8x7b")
    assert m.active_params_per_token + m.embedding_params == pytest.approx(12.88e9, rel=0.005)
    assert m.num_moe_layers == 32 and m.expert_params == 3 * 4096 * 14336


def test_deepseek_v2_lite_structure() -> None:
    """DeepSeek-V2-Lite: 1 dense layer (10944) + 26 MoE layers (64 routed x 1408, top-6, 2 shared)."""
    m = load_model("deepseek-v2-lite")
    assert m.num_moe_layers == 26
    assert m.dense_mlp_params_per_layer == 3 * 2048 * 10944
    assert m.shared_expert_params_per_layer == 2 * 3 * 2048 * 1408
    assert 2.3e9 < m.active_params_per_token < 2.6e9  # model card: ~2.4B active


@pytest.mark.parametrize(
    "alias,name",
    [
        ("meta-llama/Llama-2-7b-hf", "llama-2-7b"),
        ("Llama-3.1-8B", "llama-3.1-8b"),
        ("llama3.1-8b", "llama-3.1-8b"),
        ("codellama/CodeLlama-34b-hf", "codellama-34b"),
        ("qwen2_5_7b", "qwen2.5-7b"),  # '_' == '-'
        ("DeepSeek-V2-Lite", "deepseek-v2-lite"),
    ],
)
def test_model_aliases(alias: str, name: str) -> None:
    """HF ids and short spellings resolve to the shipped spec."""
    assert load_model(alias).name == name


def test_unknown_model_lists_close_matches() -> None:
    """An unknown --model suggests close names and lists the choices."""
    with pytest.raises(SpecError) as exc:
        load_model("llama-2-8b")
    msg = str(exc.value)
    assert "Did you mean:" in msg and "llama-2-7b" in msg and "Choices:" in msg


def test_model_yaml_bad_field_names_file_and_field(tmp_path: Path) -> None:
    """A user model YAML with a wrong type gets one line naming the file and the field."""
    text = (MODELS_DIR / "llama-2-7b.yaml").read_text().replace("num_layers: 32", "num_layers: thirty-two")
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as exc:
        load_model(str(path))
    assert str(exc.value).splitlines() == [
        f"{path}: num_layers: Input should be a valid integer, unable to parse string as an integer (got 'thirty-two')"
    ]


# ---------- Hugging Face config import ----------

HF_FILES = sorted(HF_DIR.glob("*.json"))


@pytest.mark.parametrize("path", HF_FILES, ids=[p.stem for p in HF_FILES])
def test_hf_import_matches_shipped_yaml(path: Path) -> None:
    """Importing the model's config.json gives the same dims as the shipped YAML (same file stem)."""
    imported, shipped = load_hf_config(path), load_model(path.stem)
    assert {k: getattr(imported, k) for k in DIMS} == {k: getattr(shipped, k) for k in DIMS}
    assert imported.total_params == shipped.total_params
    assert imported.name == imported.hf_id == shipped.hf_id


def test_hf_llama_import_dims() -> None:
    """Llama-2-7B config.json: 32 layers, 4096 hidden, 32 heads, kv heads = heads, head_dim 4096/32."""
    m = load_model(str(HF_DIR / "llama-2-7b.json"))  # load_model routes .json to the importer
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim) == (32, 4096, 32, 32, 128)
    assert m.source.startswith("Hugging Face config")


def _write(tmp_path: Path, data: dict, name: str = "cfg.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    return path


def _llama(**changes) -> dict:
    data = json.loads((HF_DIR / "llama-2-7b.json").read_text())
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def test_hf_defaults_kv_heads_and_head_dim(tmp_path: Path) -> None:
    """Missing num_key_value_heads defaults to the query heads; head_dim to hidden / heads."""
    path = _write(tmp_path, _llama(num_key_value_heads=..., head_dim=...))
    m = load_hf_config(path)
    assert (m.num_kv_heads, m.head_dim) == (32, 128)


def test_hf_unsupported_model_type(tmp_path: Path) -> None:
    """An unsupported model_type is one line naming the file, the key and the choices."""
    path = _write(tmp_path, _llama(model_type="gpt2"))
    with pytest.raises(SpecError) as exc:
        load_hf_config(path)
    assert str(exc.value) == (
        f"{path}: model_type: unsupported ('gpt2'); supported: llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, "
        "qwen3_moe, phi3, gemma2, gemma3, gemma3_text, llama4, llama4_text, opt, deepseek_v2, deepseek_v3, jamba"
    )


def test_hf_missing_model_type(tmp_path: Path) -> None:
    """A config without model_type says so."""
    path = _write(tmp_path, _llama(model_type=...))
    with pytest.raises(SpecError, match=r"model_type: unsupported \(missing\)"):
        load_hf_config(path)


def test_hf_missing_key_names_file_and_key(tmp_path: Path) -> None:
    """A missing required key names the file and the HF key."""
    path = _write(tmp_path, _llama(num_hidden_layers=...))
    with pytest.raises(SpecError) as exc:
        load_hf_config(path)
    assert str(exc.value) == f"{path}: missing key 'num_hidden_layers' (required for model_type 'llama')"


def test_hf_wrong_type_names_the_hf_key(tmp_path: Path) -> None:
    """A wrongly typed value is reported under the HF key name, not the kvsim field name."""
    path = _write(tmp_path, _llama(num_hidden_layers="thirty-two"))
    with pytest.raises(SpecError) as exc:
        load_hf_config(path)
    (line,) = str(exc.value).splitlines()
    assert line.startswith(f"{path}: num_hidden_layers: ") and "'thirty-two'" in line


def test_hf_invalid_json_names_line(tmp_path: Path) -> None:
    """Broken JSON is reported as path:line."""
    path = tmp_path / "bad.json"
    path.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}\n')
    with pytest.raises(SpecError, match=rf"^{path}:3: invalid JSON"):
        load_hf_config(path)


def test_hf_name_falls_back_to_folder_or_stem(tmp_path: Path) -> None:
    """Without _name_or_path, config.json takes its folder's name; other files their stem."""
    folder = tmp_path / "my-llama"
    folder.mkdir()
    assert load_hf_config(_write(folder, _llama(_name_or_path=...), "config.json")).name == "my-llama"
    assert load_hf_config(_write(tmp_path, _llama(_name_or_path=...), "tiny.json")).name == "tiny"


def test_hf_qwen2_bias_and_window_rules(tmp_path: Path) -> None:
    """qwen2 always has q/k/v bias; its window counts only with use_sliding_window, and then only on
    the layers from max_window_layers on (transformers' Qwen2Config)."""
    data = json.loads((HF_DIR / "qwen2.5-7b.json").read_text())
    assert load_hf_config(HF_DIR / "qwen2.5-7b.json").attention_bias is True
    data.update(use_sliding_window=True, sliding_window=4096)  # max_window_layers 28 = all 28 layers full
    assert load_hf_config(_write(tmp_path, data)).sliding_window is None
    data.update(max_window_layers=20)  # layers 20..27 windowed: 28 - 20 = 8
    m = load_hf_config(_write(tmp_path, data))
    assert (m.sliding_window, m.sliding_window_layers, m.windowed_layers) == (4096, 8, 8)
    data.update(max_window_layers=0)  # every layer windowed: None means all
    m = load_hf_config(_write(tmp_path, data))
    assert (m.sliding_window, m.sliding_window_layers, m.windowed_layers) == (4096, None, 28)


def test_hf_window_rules() -> None:
    """Mistral v0.1 keeps its 4096 window; Phi-3's 262144 window (> context) is dropped."""
    assert load_hf_config(HF_DIR / "mistral-7b-v0.1.json").sliding_window == 4096
    assert load_hf_config(HF_DIR / "phi-3-mini-128k.json").sliding_window is None
    assert load_hf_config(HF_DIR / "mixtral-8x7b.json").sliding_window is None


def test_hf_opt_rules() -> None:
    """OPT: ffn_dim, 2-matrix MLP, tied embeddings and biases by default."""
    m = load_hf_config(HF_DIR / "opt-6.7b.json")
    assert (m.intermediate_size, m.mlp_gated, m.tie_word_embeddings, m.attention_bias) == (16384, False, True, True)


def test_hf_deepseek_missing_mla_key(tmp_path: Path) -> None:
    """A deepseek_v2 config without kv_lora_rank names that key."""
    data = json.loads((HF_DIR / "deepseek-v2-lite.json").read_text())
    del data["kv_lora_rank"]
    with pytest.raises(SpecError, match="missing key 'kv_lora_rank'"):
        load_hf_config(_write(tmp_path, data))


@given(
    layers=st.integers(1, 96),
    kv_heads=st.sampled_from([1, 2, 4, 8]),
    group=st.sampled_from([1, 2, 4, 8]),
    head_dim=st.sampled_from([64, 96, 128]),
)
def test_dense_kv_elements_formula(layers: int, kv_heads: int, group: int, head_dim: int) -> None:
    """For any dense/GQA shape, KV elements per token per layer = 2 x n_kv x head_dim."""
    heads = kv_heads * group
    m = ModelSpec(
        name="t", architecture="llama", num_layers=layers, hidden_size=heads * head_dim, num_heads=heads,
        num_kv_heads=kv_heads, head_dim=head_dim, intermediate_size=4 * heads * head_dim, vocab_size=1000,
        max_context_tokens=4096, source="test",
    )  # fmt: skip
    assert m.kv_elements_per_token_per_layer == 2 * kv_heads * head_dim
    assert catalog()  # shipped catalog still loads alongside ad-hoc specs
