"""The KVMethod contract, checked for every REGISTRY entry on a GQA, an MHA, an MLA and a TP=2 deployment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthetic import llama2_7b, llama31_8b, synthetic_system

from kvsim.costmodel.cost import NUMERIC_FIELDS
from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.methods import REGISTRY, make_method
from kvsim.models import MLASpec, ModelSpec, MoESpec
from kvsim.costmodel.roofline import Roofline


def deepseek_v2_lite() -> ModelSpec:
    """DeepSeek-V2-Lite dims (HF config; MLA d_c 512, d_r 64), built in-test."""
    return ModelSpec(
        name="deepseek-v2-lite-test", architecture="deepseek_v2", num_layers=27, hidden_size=2048, num_heads=16,
        num_kv_heads=1, head_dim=128, intermediate_size=10944, vocab_size=102400, max_context_tokens=163840,
        moe=MoESpec(num_experts=64, experts_per_token=6, expert_intermediate_size=1408, num_shared_experts=2,
                    shared_intermediate_size=1408, first_dense_layers=1, dense_intermediate_size=10944),
        mla=MLASpec(kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128),
        source="HF config deepseek-ai/DeepSeek-V2-Lite")


MODELS = {"gqa": (llama31_8b, 1), "mha": (llama2_7b, 1), "mla": (deepseek_v2_lite, 1), "gqa_tp2": (llama31_8b, 2)}
#: methods that refuse a model kind with a ConfigError (by design)
REFUSES = {"mla": {"magicpig", "duoattention", "razorattention"}}
NOT_MLA = {"gqa": {"mla"}, "mha": {"mla"}, "gqa_tp2": {"mla"}}
NAMES = sorted(REGISTRY)
#: context from which a method's GPU KV must not exceed full's (its budget)
BUDGET = {"quest": 16, "gear": 1024, "infllm": 16384, "magicpig": 512, "h2o": 64, "zipcache": 64}
N_GRID = np.array([0, 1, 7, 16, 64, 127, 128, 500, 1024, 2047, 2048, 4000, 4224, 8320, 20000, 65536, 65537,
                   98304, 131072, 300000], dtype=float)


def _dep(kind: str) -> Deployment:
    fn, tp = MODELS[kind]
    return Deployment(system=synthetic_system(), model=fn(), tp=tp)


def _method(name: str, kind: str, params: dict | None = None):
    dep = _dep(kind)
    if name in REFUSES.get(kind, set()) | NOT_MLA.get(kind, set()):
        with pytest.raises(ConfigError):
            make_method(name, dep, params)
        pytest.skip(f"{name} refuses {kind} by design")
    return make_method(name, dep, params)


CASES = [(n, k) for n in NAMES for k in MODELS]


def _amounts(cost):
    for p in cost.parts:
        for f in NUMERIC_FIELDS:
            yield p.name, f, np.asarray(getattr(p, f), dtype=float)


@pytest.mark.parametrize("name,kind", CASES)
def test_kv_bytes_nonnegative_and_monotone(name, kind):
    """GPU and host bytes are finite, >= 0 and non-decreasing in the context."""
    m = _method(name, kind)
    r = m.kv_bytes(N_GRID)
    for arr in (np.broadcast_to(r.gpu_bytes, N_GRID.shape), np.broadcast_to(r.host_bytes, N_GRID.shape)):
        assert np.all(np.isfinite(arr)) and np.all(arr >= 0)
        assert np.all(np.diff(arr) >= -1e-6 * np.abs(arr[1:]))
    assert float(np.asarray(m.kv_bytes(0.0).gpu_bytes)) == 0.0


@pytest.mark.parametrize("name,kind", CASES)
def test_kv_bytes_with_prompt_monotone(name, kind):
    """With the prompt fixed, bytes stay non-decreasing as tokens are generated."""
    m = _method(name, kind)
    n = 10_000 + np.arange(0, 3000, 37, dtype=float)
    g = np.asarray(m.kv_bytes(n, n_prompt=np.full_like(n, 10_000.0)).gpu_bytes)
    assert np.all(np.diff(g) >= -1e-6 * g[1:])


@pytest.mark.parametrize("name,kind", CASES)
def test_decode_vectorized_equals_stacked_steps(name, kind):
    """decode_cost([k, B]) prices each of the k steps exactly as decode_cost([B]) does."""
    m = _method(name, kind)
    rl = Roofline(m.dep.system)
    rng = np.random.default_rng(7)
    ctx = rng.integers(1, 150_000, size=(4, 3)).astype(float)
    prompt = np.minimum(ctx, rng.integers(1, 150_000, size=(4, 3)).astype(float))
    for kw in ({}, {"n_prompt": prompt}):
        many = rl(m.decode_cost(ctx, **kw)).total_s
        one = [rl(m.decode_cost(ctx[i], **{k: v[i] for k, v in kw.items()})).total_s for i in range(4)]
        assert np.shape(many) == (4,)
        np.testing.assert_allclose(many, one, rtol=1e-12)


@pytest.mark.parametrize("name,kind", CASES)
def test_all_amounts_finite_and_nonnegative(name, kind):
    """Every Part amount of decode and prefill costs is finite and >= 0."""
    m = _method(name, kind)
    costs = [m.decode_cost(np.array([0.0, 1.0, 5000.0, 200_000.0])),
             m.prefill_cost(np.array([1.0, 4096.0, 512.0]), np.array([0.0, 100_000.0, 70_000.0]))]
    for c in costs:
        for part, field, a in _amounts(c):
            assert np.all(np.isfinite(a)) and np.all(a >= 0), (part, field, a)


@pytest.mark.parametrize("name,kind", CASES)
def test_zero_token_prefill_chunk_costs_nothing(name, kind):
    """A chunk with no new tokens runs no kernel and moves no bytes (even after a cached prefix)."""
    m = _method(name, kind)
    rl = Roofline(m.dep.system)
    for cached in (0.0, 5000.0):
        c = m.prefill_cost(np.array([0.0]), np.array([cached]))
        assert float(rl(c).total_s) == 0.0
        for _, _, a in _amounts(c):
            assert np.all(a == 0)


@pytest.mark.parametrize("name,kind", CASES)
def test_never_more_gpu_kv_than_full(name, kind):
    """Past its budget, a method holds no more GPU KV than full (quest: + min/max metadata,
    1/P of the KV, 2/P on MLA where the key is the whole latent)."""
    m = _method(name, kind)
    full = make_method("full", m.dep)
    n = np.array([1.0, 2.0, 10.0, 100.0]) * max(BUDGET.get(name, 1), 1)
    g = np.asarray(m.kv_bytes(n).gpu_bytes, dtype=float)
    f = np.asarray(full.kv_bytes(n).gpu_bytes, dtype=float)
    slack = 1.0 + (2.0 if kind == "mla" else 1.0) / m.params.page_size if name == "quest" else 1.0
    assert np.all(g <= f * slack * (1 + 1e-12))


@pytest.mark.parametrize("name,kind", CASES)
def test_label_and_spec_roundtrip(name, kind):
    """label() is the name at defaults; make_method('name') builds the class."""
    m = _method(name, kind)
    assert m.label() == name
    assert isinstance(m, REGISTRY[name]) and m.summary
    assert isinstance(m.published_accuracy(), list)


@pytest.mark.parametrize("name,kind", CASES)
def test_decode_grows_with_context(name, kind):
    """Decode seconds never decrease as the context grows."""
    m = _method(name, kind)
    rl = Roofline(m.dep.system)
    ctx = np.array([[16.0], [1000.0], [5000.0], [40_000.0], [160_000.0]])
    t = np.asarray(rl(m.decode_cost(ctx)).total_s)
    assert np.all(np.diff(t) >= -1e-15)


@pytest.mark.parametrize("name,params", [
    ("streamingllm", {}), ("snapkv", {}), ("pyramidkv", {}), ("h2o", {"budget_tokens": 2048}),
])
def test_bounded_methods_plateau(name, params):
    """Methods with a fixed budget hold the same bytes at 100K and 300K tokens."""
    m = _method(name, "gqa", params)
    a, b = (float(np.asarray(m.kv_bytes(x).gpu_bytes)) for x in (100_000.0, 300_000.0))
    assert a == b > 0


def test_h2o_ratio_budget_plateaus_for_a_fixed_prompt():
    """H2O's 20%-of-prompt budget stays constant while tokens are generated."""
    m = _method("h2o", "mha")
    g = np.asarray(m.kv_bytes(np.array([10_000.0, 12_000.0, 50_000.0]), n_prompt=10_000.0).gpu_bytes)
    assert g[0] == g[1] == g[2]


def test_duoattention_streaming_part_plateaus():
    """DuoAttention minus its retrieval heads' r*n*full is constant once n >= sink + recent."""
    m = _method("duoattention", "gqa")
    full = m.dep.full_kv_bytes_per_token
    n = np.array([320.0, 1000.0, 100_000.0])
    rest = np.asarray(m.kv_bytes(n).gpu_bytes) - m.r * n * full
    np.testing.assert_allclose(rest, (1 - m.r) * 320 * full, rtol=1e-12)


def test_razor_slope_tends_to_r_plus_one_fifth():
    """RazorAttention's bytes per extra token tend to (r + (1 - r)/5) of full above 20K tokens."""
    m = _method("razorattention", "mha")
    full = m.dep.full_kv_bytes_per_token
    d = np.diff(np.asarray(m.kv_bytes(np.array([200_000.0, 300_000.0])).gpu_bytes))[0] / 100_000
    # r = 0.01 + 0.15 = 0.16 -> 0.16 + 0.84 / 5 = 0.328
    assert d / full == pytest.approx(0.328, rel=1e-9)


def test_unknown_param_is_one_line_error():
    """A typo in a method param raises a SpecError naming the field."""
    from kvsim.errors import SpecError

    with pytest.raises(SpecError, match="bitz"):
        make_method("kivi:bitz=2", _dep("gqa"))
    with pytest.raises(SpecError, match="residual"):
        make_method("kivi", _dep("gqa"), {"residual": 100, "group": 32})


def test_mla_refuses_non_mla_model_in_one_line():
    """mla on a dense model names the model and suggests deepseek-v2-lite."""
    with pytest.raises(ConfigError) as e:
        make_method("mla", _dep("gqa"))
    assert "deepseek-v2-lite" in str(e.value) and "\n" not in str(e.value)


def test_registry_has_every_method():
    """All methods of the brief are registered."""
    want = {"full", "kivi", "magicpig", "quest", "topk", "h2o", "streamingllm", "snapkv", "pyramidkv", "duoattention",
            "infllm", "gear", "zipcache", "razorattention", "mla", "llmlingua", "prefix"}
    assert want <= set(REGISTRY)
    assert math.isfinite(len(REGISTRY))
