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
REFUSES = {"mla": {"magicpig", "duoattention", "razorattention", "mikv", "headmerge", "xecomla", "nsa", "moba", "locret", "elastic", "ems", "a2ats", "duoattention+kivi"}}
NOT_MLA = {"gqa": {"mla"}, "mha": {"mla"}, "gqa_tp2": {"mla"}}
#: compositions checked like registered methods (kvsim.methods.compose)
COMPOSED = ["kivi+quest", "snapkv+kivi", "streamingllm+kivi", "h2o+kivi", "duoattention+kivi"]
NAMES = sorted(REGISTRY) + COMPOSED
#: context from which a method's GPU KV must not exceed full's (its budget)
BUDGET = {"quest": 16, "gear": 1024, "infllm": 16384, "magicpig": 512, "h2o": 64, "zipcache": 64, "mikv": 64, "a2ats": 128, "kivi+quest": 1024, "h2o+kivi": 64}
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
    if name == "nsa":  # three branches: + 1/d compressed tokens, the window's and compression buffer's own KV
        p = m.params
        slack = 1.0 + 1.0 / p.cmp_stride + (p.window + p.cmp_block) / n
    assert np.all(g <= f * slack * (1 + 1e-12))


@pytest.mark.parametrize("name,kind", CASES)
def test_label_and_spec_roundtrip(name, kind):
    """label() is the name at defaults; make_method('name') builds the class."""
    m = _method(name, kind)
    assert m.label() == name
    if "+" in name:  # a composition: its class is made from its parts
        from kvsim.methods.compose import Composed

        assert isinstance(m, Composed) and m.summary and type(m).name == name
        return
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
            "infllm", "gear", "zipcache", "razorattention", "mla", "llmlingua", "prefix",
            "mikv", "cake", "oracle", "headmerge", "xecomla", "nsa", "moba", "locret", "elastic", "ems", "a2ats", "kvcrush"}
    assert want <= set(REGISTRY)
    assert math.isfinite(len(REGISTRY))


# ----------------------------------------------------------------------------- declared traits
# Every trait of KVMethod is checked against behaviour at random points (fixed seeds). A trait
# has a safe value (the simulator's general path) and an optimistic one (a shortcut): an
# optimistic declaration must hold at every parameter setting below, and a safe one must be
# observed at the defaults (a method may not be needlessly conservative).

TRAITS = {  # trait -> its safe value
    "prompt_aware": True, "bounded": False, "uses_host": True, "linear_residency": False,
    "compresses_prompt": True, "additive_decode": False, "shared_step_parts": True, "vectorized": False,
    "own_kv_format": False,
}
#: non-default params under which the optimistic declarations must still hold
VARIANTS = {
    "full": [{"kv_dtype": "fp8"}],
    "kivi": [{"bits": 4, "group": 64, "residual": 64}, {"residual": 32}],
    "gear": [{"bits": 2, "rank_prefill": 0, "rank_decode": 0, "buffer": 16}],
    "zipcache": [{"salient_ratio": 1.0, "probe_ratio": 0.0}],
    "magicpig": [{"dense_layers": [], "gen_buffer": 0}, {"K": 8, "L": 75, "sink": 0, "local": 0}],
    "quest": [{"budget_ratio": 0.04, "page_size": 32}, {"dense_layers": 0}],
    "topk": [{"budget_tokens": 512}],
    "h2o": [{"budget_tokens": 2048}, {"heavy_ratio": 0.0, "recent_ratio": 1.0}],
    "streamingllm": [{"sink": 0, "window": 100}],
    "snapkv": [{"capacity": 4096, "window": 16, "kernel": 5}],
    "pyramidkv": [{"capacity": 256, "beta": 2.0, "window": 8}],
    "duoattention": [{"retrieval_ratio": 1.0}, {"retrieval_ratio": 0.0}],
    "razorattention": [{"echo_ratio": 0.0, "induction_ratio": 0.0}, {"min_recent": 0, "recent_frac": 1.0}],
    "infllm": [{"topk": 0, "max_cached_block": 0, "miss_rate": 1.0}],
    "llmlingua": [{"ratio": 1.0}, {"ratio": 7.5}],
    "prefix": [{"hit_ratio": 0.0}],
    "mikv": [{"important_ratio": 1.0, "hi_bits": 8, "lo_bits": 4}, {"important_ratio": 0.0}],
    "cake": [{"budget_ratio": 0.032}, {"capacity": 256, "window": 8}],
    "oracle": [{"budget_ratio": 0.3}, {"budget_ratio": 0.5, "unique_fraction": 0.05}],
    "headmerge": [{"keep_ratio": 0.25}, {"keep_ratio": 1.0}],
    "xecomla": [{"kv_lora_rank": 64}, {"kv_lora_rank": 512, "qk_rope_head_dim": 64}],
    "nsa": [{"cmp_block": 64, "cmp_stride": 64, "sel_blocks": 1, "window": 1}],
    "moba": [{"block_size": 512, "top_k": 3}, {"block_size": 1, "top_k": 1}],
    "locret": [{"budget": 16384, "chunk": 1024, "stabilizers": 0, "local": 0}],
    "elastic": [{"ratio": 0.0, "distance": 0}, {"ratio": 0.9}],
    "ems": [{"capacity": 1024, "window": 16}],
    "a2ats": [{"top_k": 0, "sink": 0, "local": 0}, {"subvectors": 128, "codebook_size": 2}],
    "kvcrush": [{"capacity": 512}, {"budget_ratio": 1.0, "crush_fraction": 0.0}],
}
SETTINGS = [(n, {}, k) for n, k in CASES] + [(n, v, "gqa") for n in NAMES for v in VARIANTS.get(n, [])]
SETTING_IDS = [f"{n}-{k}" + ("-" + ",".join(f"{a}={b}" for a, b in v.items()) if v else "") for n, v, k in SETTINGS]
SEED = 20240611
MAX_N = 300_000.0


def _agree(m, trait: str, observed: bool, at_defaults: bool) -> None:
    """An optimistic declaration must be observed everywhere; a safe one at the defaults."""
    declared = getattr(type(m), trait)
    if declared != TRAITS[trait] or at_defaults:
        assert observed == declared, f"{m.label()} declares {trait}={declared}, behaves as {observed}"


def _points(rng, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Random integer contexts ``n`` (log-uniform in 1..300K) and prompts ``1 <= p <= n``."""
    n = np.floor(np.exp(rng.uniform(0.0, np.log(MAX_N), size)))
    return n, np.maximum(1.0, np.floor(n * rng.uniform(0.0, 1.0, size)))


def _close(a, b, scale=None, rtol: float = 1e-12) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    s = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0)) if scale is None else scale
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rtol * max(s, 1e-300)))


def _fields(cost) -> dict[tuple, np.ndarray]:
    """``{(part key, field): amount}`` of a cost."""
    return {(p.key, f): np.asarray(getattr(p, f), dtype=float) for p in cost.parts for f in NUMERIC_FIELDS}


def _same_cost(a, b, rtol: float = 1e-12) -> bool:
    fa, fb = _fields(a), _fields(b)
    return fa.keys() == fb.keys() and all(_close(np.broadcast_to(fa[k], np.broadcast_shapes(fa[k].shape, fb[k].shape)),
                                                 np.broadcast_to(fb[k], np.broadcast_shapes(fa[k].shape, fb[k].shape)),
                                                 rtol=rtol) for k in fa)


def _res(r, shape) -> tuple[np.ndarray, np.ndarray]:
    return (np.broadcast_to(np.asarray(r.gpu_bytes, dtype=float), shape),
            np.broadcast_to(np.asarray(r.host_bytes, dtype=float), shape))


def _tags(parts) -> set:
    return {p.key for p in parts} | {("overlap", p.overlap) for p in parts if p.overlap is not None}


def _decode_parts(m, rng) -> list:
    ctx, prompt = _points(rng, 24)
    return list(m.decode_cost(ctx.reshape(3, 8), prompt.reshape(3, 8)).parts) + list(m.decode_cost(ctx[:5]).parts)


def _prefill_parts(m, rng) -> list:
    out = []
    for _ in range(4):
        r = int(rng.integers(1, 5))
        out += m.prefill_cost(rng.integers(1, 8193, r).astype(float), rng.integers(0, 100_001, r).astype(float)).parts
    return out


def test_traits_are_declared_bools():
    """Every method class has every trait as a plain class-level bool (no instance magic)."""
    for cls in REGISTRY.values():
        for t in TRAITS:
            assert type(getattr(cls, t)) is bool, (cls.name, t)
        pairs = cls.constant_decode_fields
        assert type(pairs) is tuple and all(type(p) is tuple and len(p) == 2 and p[1] in NUMERIC_FIELDS for p in pairs), cls.name


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_own_kv_format(name, params, kind):
    """own_kv_format <=> the resident bytes (GPU and host) are the same with an fp8 and a bf16 KV
    dtype (the CLI's note that --kv-dtype changes nothing rests on it)."""
    m = _method(name, kind, params)
    rng = np.random.default_rng(SEED)
    n, p = _points(rng)
    got = []
    for kv_dtype in ("bf16", "fp8"):
        dep = _dep(kind)
        dep = Deployment(system=dep.system, model=dep.model, tp=dep.tp, kv_dtype=kv_dtype)
        got.append(_res(make_method(name, dep, params).kv_bytes(n, p), n.shape))
    same = all(_close(x, y) for x, y in zip(*got))
    _agree(m, "own_kv_format", same, not params)


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_full_prompt_until_prefilled(name, params, kind):
    """full_prompt_until_prefilled => (default parameters) the prompt is compressed at the end of prefill: a 200K
    prompt's ``kv_bytes(P, P)`` is below its full KV (a setting that keeps everything, e.g. KVCrush's
    budget_ratio 1.0, compresses nothing, and the trait then changes no block count). Most such methods are
    prompt-aware (they compress the prompt, not the generated tokens); Elastic Cache, MiKV and ZipCache
    compress every token alike but choose among the prompt's tokens from its whole attention, so they
    hold its full KV until prefill ends too (a user audit, thirteenth session)."""
    m = _method(name, kind, params)
    if not m.full_prompt_until_prefilled:
        return
    P = np.array([200_000.0])
    kept = float(np.asarray(m.kv_bytes(P, P).gpu_bytes).reshape(-1)[0])
    full = float(P[0]) * m.dep.full_kv_bytes_per_token
    if not params:  # (H2O keeping 100% holds more than the KV: its scores; the completing step takes the larger)
        assert kept < full, name


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_prompt_aware(name, params, kind):
    """prompt_aware <=> kv_bytes(n, p) or decode_cost(ctx, p) differ from the all-prompt call somewhere."""
    m = _method(name, kind, params)
    rng = np.random.default_rng(SEED)
    n, p = _points(rng)
    a, b = _res(m.kv_bytes(n), n.shape), _res(m.kv_bytes(n, p), n.shape)
    same = all(_close(x, y) for x, y in zip(a, b))
    same = same and _same_cost(m.decode_cost(n.reshape(8, 8)), m.decode_cost(n.reshape(8, 8), p.reshape(8, 8)))
    _agree(m, "prompt_aware", not same, not params)


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_bounded(name, params, kind):
    """bounded <=> for every prompt P, kv_bytes(P + g, P) (GPU and host) is the same for all large g."""
    m = _method(name, kind, params)
    rng = np.random.default_rng(SEED)
    P = np.floor(rng.uniform(1.0, 50_000.0, 32))
    g = np.floor(rng.uniform(1e5, 1e6, (2, 32)))
    a, b = (_res(m.kv_bytes(P + gi, P), P.shape) for gi in g)
    _agree(m, "bounded", all(_close(x, y) for x, y in zip(a, b)), not params)


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_uses_host(name, params, kind):
    """uses_host <=> some residency has host bytes (or the method has fixed host bytes)."""
    m = _method(name, kind, params)
    rng = np.random.default_rng(SEED)
    n, p = _points(rng)
    host = [_res(m.kv_bytes(n), n.shape)[1], _res(m.kv_bytes(n, p), n.shape)[1]]
    _agree(m, "uses_host", bool(any(np.any(h > 0) for h in host) or m.fixed_host_bytes() > 0), not params)


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_linear_residency(name, params, kind):
    """linear_residency <=> kv_bytes(n[, p]).gpu_bytes == n * kv_bytes(1).gpu_bytes and no host bytes,
    at random integer and fractional n and random prompts."""
    m = _method(name, kind, params)
    rng = np.random.default_rng(SEED)
    n, p = _points(rng)
    n = np.concatenate([n, rng.uniform(0.0, MAX_N, 16)])
    p = np.concatenate([p, np.full(16, None)])
    c = float(np.asarray(m.kv_bytes(1.0).gpu_bytes))
    linear = True
    for ni, pi in zip(n, p):
        g, h = _res(m.kv_bytes(float(ni), pi), ())
        linear &= _close(g, ni * c) and float(h) == 0.0
    _agree(m, "linear_residency", linear, not params)


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_shares_prefix_blocks_means_entries_cost_the_same(name, params, kind):
    """shares_prefix_blocks(b) => a prompt of e whole entries holds e times one entry's bytes, on the
    GPU only, whatever the prompt around it (random e, prompts); and it is never claimed by a
    prompt-aware, host-resident or prompt-compressing method."""
    m = _method(name, kind, params)
    rng = np.random.default_rng(SEED)
    for b in (16, 64, 512, 100):
        if not m.shares_prefix_blocks(b):
            continue
        assert not (m.prompt_aware or m.uses_host or m.compresses_prompt), f"{name} shares blocks of {b}"
        one = float(np.asarray(m.kv_bytes(float(b)).gpu_bytes))
        for e in rng.integers(1, 64, size=16):
            n = float(e * b)
            for prompt in (None, n, float(rng.integers(int(n), int(n) + 4096))):
                g, h = _res(m.kv_bytes(n, prompt), ())
                assert _close(g, e * one) and float(h) == 0.0, (name, b, e, prompt)


def test_quest_shares_whole_pages_only():
    """Quest's metadata is per page: entries of whole pages share (512 = 32 pages of 16), others do not."""
    q = make_method("quest", _dep("gqa"))
    assert q.shares_prefix_blocks(512) and not q.shares_prefix_blocks(100)
    assert not make_method("kivi", _dep("gqa")).shares_prefix_blocks(512)  # 16-bit residual window


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_compresses_prompt(name, params, kind):
    """compresses_prompt <=> effective_prompt_tokens(p) != p for some random prompt p."""
    m = _method(name, kind, params)
    rng = np.random.default_rng(SEED)
    p = rng.integers(1, int(MAX_N), 64).astype(float)
    _agree(m, "compresses_prompt", any(float(m.effective_prompt_tokens(float(x))) != x for x in p), not params)


def _separable(m, rng) -> bool:
    """Are the decode parts' keys batch-independent and every field ``sum_i g(ctx_i, p_i) + h(B)``
    (the declared ``once_per_batch_decode`` fields: ``max_i g_i + h(B)``, each ``g`` 0 or one constant)?
    ``h(B)`` is read off B copies of a random reference sequence: ``F(ref x B) - B g(ref)``."""
    (rc,), (rp,) = _points(rng, 1)
    for i in range(8):
        B = int(rng.integers(1, 33))
        ctx, prompt = _points(rng, B)
        kw = (lambda v: {"n_prompt": v}) if i % 2 else (lambda v: {})
        one = lambda c, q: _fields(m.decode_cost(np.array([c]), **kw(np.array([q]))))  # noqa: E731
        batch, ref = _fields(m.decode_cost(ctx, **kw(prompt))), one(rc, rp)
        copies = _fields(m.decode_cost(np.full(B, rc), **kw(np.full(B, rp))))
        singles = [one(c, q) for c, q in zip(ctx, prompt)]
        if any(f.keys() != batch.keys() for f in [ref, copies] + singles):
            return False
        for k, got in batch.items():
            if (k[0][0], k[1]) in m.once_per_batch_decode:  # paid once: max_i g_i (each 0 or one constant)
                values = {float(s[k]) for s in singles + [ref]} - {0.0}
                if len(values) > 1 or not _close(got, max([float(s[k]) for s in singles]) + copies[k] - ref[k]):
                    return False
                continue
            terms = [s[k] for s in singles] + [copies[k], B * ref[k]]
            want = sum(terms[:-1]) - terms[-1]
            if not _close(got, want, scale=max(np.abs(t).max() for t in terms + [got]), rtol=1e-9):
                return False
    return True


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_additive_decode(name, params, kind):
    """additive_decode <=> on random batches (with and without prompts) every decode field equals
    the per-sequence sum plus a batch-size term, with the same parts whatever the contexts."""
    m = _method(name, kind, params)
    _agree(m, "additive_decode", _separable(m, np.random.default_rng(SEED)), not params)


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_shared_step_parts(name, params, kind):
    """shared_step_parts <=> a decode part and a prefill part share a Part.key or an overlap tag."""
    m = _method(name, kind, params)
    rng = np.random.default_rng(SEED)
    shared = bool(_tags(_decode_parts(m, rng)) & _tags(_prefill_parts(m, rng)))
    _agree(m, "shared_step_parts", shared, not params)


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_method_parts_apart_from_linear_layers(name, params, kind):
    """No method part shares a Part.key or overlap tag with the linear layers or the step overhead."""
    from kvsim.costmodel.transformer import linear_cost, step_overhead_cost

    m = _method(name, kind, params)
    rng = np.random.default_rng(SEED)
    lin = set()
    for T, S in ((1.0, 1.0), (float(rng.integers(2, 9000)), float(rng.integers(1, 256)))):
        lin |= _tags(linear_cost(m.dep, T, S).parts + step_overhead_cost(T, S).parts)
    assert not lin & (_tags(_decode_parts(m, rng)) | _tags(_prefill_parts(m, rng)))


def _vectorized(m, rng) -> bool:
    """Do array calls equal per-element (or per-row) scalar calls? Any exception counts as no."""
    try:
        n, p = _points(rng, 24)
        for kw in ({}, {"n_prompt": p}):
            arr = _res(m.kv_bytes(n, **kw), n.shape)
            for i in range(n.size):
                one = _res(m.kv_bytes(float(n[i]), *([float(p[i])] if kw else [])), ())
                if not all(_close(a[i], b) for a, b in zip(arr, one)):
                    return False
        ctx, prompt = n.reshape(3, 8), p.reshape(3, 8)
        for kw in ({}, {"n_prompt": prompt}):
            many = _fields(m.decode_cost(ctx, **kw))
            for i in range(3):
                row = _fields(m.decode_cost(ctx[i], **{k: v[i] for k, v in kw.items()}))
                if row.keys() != many.keys() or not all(_close(np.broadcast_to(many[k], (3,))[i], row[k]) for k in row):
                    return False
        new, cached = rng.integers(1, 8193, 4).astype(float), rng.integers(0, 100_001, 4).astype(float)
        for i in range(4):
            if not _same_cost(m.prefill_cost(new[i:i + 1], cached[i:i + 1]), m.prefill_cost(float(new[i]), float(cached[i]))):
                return False
        perm = rng.permutation(4)
        if not _same_cost(m.prefill_cost(new, cached), m.prefill_cost(new[perm], cached[perm]), rtol=1e-9):
            return False
        eff = np.asarray(m.effective_prompt_tokens(n), dtype=float)
        return _close(eff, [float(m.effective_prompt_tokens(float(x))) for x in n])
    except (TypeError, ValueError, IndexError):
        return False


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_vectorized(name, params, kind):
    """vectorized <=> kv_bytes, effective_prompt_tokens ([N]), decode_cost ([k, B] rows) and
    prefill_cost ([1] chunks; [R] chunks in any order) equal their scalar / per-row calls."""
    m = _method(name, kind, params)
    _agree(m, "vectorized", _vectorized(m, np.random.default_rng(SEED)), not params)


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_trait_constant_decode_fields(name, params, kind):
    """Each declared (part, field) of constant_decode_fields is one amount for every sequence:
    one-sequence decode steps at random contexts and prompts all read the same amount (the fast
    simulator adds B times it per step instead of keeping it in per-request rows); at the
    defaults every declared part exists (a misspelt name would fold nothing)."""
    m = _method(name, kind, params)
    declared = type(m).constant_decode_fields
    if not declared:
        return
    ctx, prompt = _points(np.random.default_rng(SEED), 200)
    parts = m.decode_cost(ctx[:, None], prompt[:, None]).parts  # [200, 1]: one sequence per step
    by_name = {}
    for p in parts:
        by_name.setdefault(p.name, []).append(p)
    for part, field in declared:
        if not params:
            assert part in by_name, f"{m.label()} declares {part}.{field} constant; no decode part is named {part}"
        for p in by_name.get(part, []):
            amount = np.asarray(getattr(p, field), dtype=float).reshape(-1)  # ([200, 1], [200] per step, or a scalar)
            assert (amount == amount[0]).all(), (
                f"{m.label()} declares {part}.{field} constant per sequence; it ranges "
                f"{amount.min():.6g}..{amount.max():.6g} over contexts 1..{int(ctx.max())}")


@pytest.mark.parametrize("name,params,kind", SETTINGS, ids=SETTING_IDS)
def test_prefill_scores_bytes_match_the_eager_prefill(name, params, kind):
    """``prefill_scores_bytes`` > 0 exactly for methods whose prefill streams a score matrix (an eager
    ``*_scores`` part with query heads x n x (c + n) scores per layer), and then it is one layer's matrix:
    the part's score traffic / (layers x passes x 2 B) with its accumulated-score bytes taken out."""
    m = _method(name, kind, params)
    n_new, n_cached = np.array([512.0]), np.array([1536.0])
    got = float(np.asarray(m.prefill_scores_bytes(n_new, n_cached)).reshape(-1)[0])
    eager = [p for p in m.prefill_cost(n_new, n_cached).parts if p.name.endswith("_scores")
             and not p.name.endswith("block_scores")]  # (InfLLM scores blocks by their representatives)
    assert (got > 0) == bool(eager), name
    if got:
        d = m.dep
        assert got == d.q_heads_per_gpu * 512.0 * 2048.0 * d.ab, name  # 1 layer, heads x 512 x (1,536 + 512)
