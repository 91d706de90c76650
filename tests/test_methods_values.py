"""Hand-computed method numbers against METHODS.md and the papers (synthetic system, in-test models)."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import llama2_7b, llama31_8b, synthetic_system
from test_methods_contract import deepseek_v2_lite

from kvsim.costmodel.attention import prefill_pairs
from kvsim.costmodel.deployment import Deployment
from kvsim.methods import make_method
from kvsim.methods.magicpig import sample_fraction
from kvsim.models import ModelSpec

GiB = 2**30


def _model(name, L, h, nh, nkv, f, V):
    return ModelSpec(name=name, architecture="llama", num_layers=L, hidden_size=h, num_heads=nh, num_kv_heads=nkv,
                     head_dim=128, intermediate_size=f, vocab_size=V, max_context_tokens=131072, source="HF config")


def llama3_70b():
    return _model("llama-3-70b-test", 80, 8192, 64, 8, 28672, 128256)


def codellama_13b():
    return _model("codellama-13b-test", 40, 5120, 40, 40, 13824, 32016)


def codellama_34b():
    return _model("codellama-34b-test", 48, 8192, 64, 8, 22016, 32000)


def dep(model=None, **kw):
    return Deployment(system=synthetic_system(), model=model or llama2_7b(), **kw)


def gpu(m, n, **kw):
    return float(np.asarray(m.kv_bytes(float(n), **kw).gpu_bytes))


# ---------------------------------------------------------------- full / quantization
def test_full_llama2_7b_bytes_per_token():
    """Llama-2-7B bf16 KV = 2 * 32 layers * 32 heads * 128 * 2 B = 524,288 B/token (METHODS.md 1.0)."""
    assert gpu(make_method("full", dep()), 1) == 524_288
    assert gpu(make_method("full:kv_dtype=fp8", dep()), 1) == 262_144


def test_kivi_2bit_bytes_hand_computed():
    """KIVI 2-bit G=32: 96 B per token per layer per KV head + a 16-bit residual of R/2 K and R V tokens."""
    m = make_method("kivi", dep())
    # per layer per KV head: K (n-64)*48 + 64*256, V (n-128)*48 + 128*256 = 96 n + 192*208 = 96 n + 39,936
    # (48 = 128 * 2/8 + 128 * 2*2/32 codes + scales of one tensor; 256 = 128 * 2 B)
    # n = 4096: 32 layers * 32 heads * (393,216 + 39,936) = 443,547,648 B
    assert gpu(m, 4096) == 443_547_648
    assert gpu(m, 10_001) - gpu(m, 10_000) == 32 * 32 * 96  # slope 96 B per layer per KV head
    assert gpu(m, 50) == 50 * 524_288  # all residual below R/2


def test_kivi_4bit_slope_160_bytes():
    """KIVI 4-bit G=32 stores 128*4/4 + 8*128/32 = 160 B per token per layer per KV head (METHODS.md 1.1)."""
    m = make_method("kivi:bits=4", dep())
    assert gpu(m, 10_001) - gpu(m, 10_000) == 32 * 32 * 160


def test_gear_prompt_bytes_per_token():
    """GEAR-4 (G=64, s=0.02, rank 4): per tensor per head 72 + 15.36 + 8 B per prompt token."""
    m = make_method("gear", dep())
    # codes 128*(4/8 + 2*2/64) = 72; outliers 6*0.02*128 = 15.36; A factor 4*2 = 8 -> 95.36; x2 tensors = 190.72
    slope = (gpu(m, 20_000) - gpu(m, 10_000)) / 10_000
    assert slope == pytest.approx(32 * 32 * 190.72, rel=1e-12)


def test_zipcache_bytes_per_token():
    """ZipCache 40% at 4 bits, 60% at 2: 2*128*2.8/8 + 2*2 (V token scale, zero) = 93.6 B per layer per KV head."""
    m = make_method("zipcache", dep())
    assert (gpu(m, 20_000) - gpu(m, 10_000)) / 10_000 == pytest.approx(32 * 32 * 93.6, rel=1e-12)


# ---------------------------------------------------------------- MagicPIG (Table 8)
@pytest.mark.parametrize("model,K,L,S,gb", [
    (llama31_8b, 10, 150, 98_304, 14.2),   # 30 * 8 * 150 * 98,304 * 4 B = 14.16 GB (paper 14 GB)
    (llama31_8b, 10, 150, 65_536, 4.7),    # 30 * 8 * 150 * 65,536 * 2 B = 4.72 GB (int16 indices)
    (llama31_8b, 11, 300, 98_304, 28.3),   # 30 * 8 * 300 * 98,304 * 4 B = 28.3 GB
    (llama3_70b, 10, 150, 65_536, 11.8),   # 75 sparse layers (dense 0,16,32,48,64) * 8 * 150 * 65,536 * 2 B
    (codellama_13b, 10, 150, 16_384, 7.3),  # 37 sparse (0,16,32 dense) * 40 * 150 * 16,384 * 2 B = 7.27 GB
    (codellama_34b, 10, 150, 16_384, 1.8),  # 45 sparse * 8 * 150 * 16,384 * 2 B = 1.77 GB
])
def test_magicpig_hash_tables_match_table8(model, K, L, S, gb):
    """Hash-table bytes per request reproduce MagicPIG Table 8 to its printed precision (2.5%)."""
    m = make_method("magicpig", dep(model()), {"K": K, "L": L})
    t = float(m.host_breakdown(S)["hash_tables"])
    assert t / 1e9 == pytest.approx(gb, rel=0.025)


def test_magicpig_table8_exact_and_projector():
    """Llama-3.1-8B (10,150) at 96K: 30 * 8 * 150 * 98,236 * 4 = 14,147,... B; projector 128*10*150*2 = 384,000 B;
    the prefill's one-layer staging K/V: 131,072 tokens * 8 KV heads * 128 * 2 (K, V) * 2 B = 536,870,912 B."""
    m = make_method("magicpig", dep(llama31_8b()))
    assert float(m.host_breakdown(98_304)["hash_tables"]) == 30 * 8 * 150 * (98_304 - 68) * 4
    assert m.projector_bytes() == 384_000
    assert m.fixed_gpu_bytes() == 384_000 + 536_870_912
    assert m.dense == [0, 16]


def test_magicpig_decode_pcie_and_cpu_work_b1_96k():
    """One decode step, B=1, Llama-3.1-8B at 96K: PCIe, round trips and CPU DRAM bytes by hand."""
    m = make_method("magicpig", dep(llama31_8b()))
    c = m.decode_cost(np.array([98_304.0]))
    pc = c.by_name("lsh_pcie")
    # per sparse layer: 32 * (2*128 + 4*150) + 32 * (2*128 + 4) = 27,392 + 8,320 = 35,712 B; x 30 layers
    assert pc.pcie_bytes == 30 * 35_712 and pc.pcie_round_trips == 30
    cpu = c.by_name("lsh_cpu_attn")
    # S' = 98,304 - 68 = 98,236; candidates 150 * S'/1024; sampled 0.02 S' at 4*128 + 4 = 516 B; lookups 150 * 8
    s = 98_236
    per_head = 150 * 8 + 150 * s / 1024 * 4 + 0.02 * s * 516
    assert cpu.dram_bytes == pytest.approx(30 * 32 * per_head, rel=1e-12)  # ~1.03 GB
    assert cpu.device == "cpu" and cpu.op == "cpu_attn"


def test_magicpig_sample_fraction_table9():
    """Table 9: (10,150) 2%, (11,300) 2%, (8,75) 5%; (10,170) interpolates to 2.4%; outside it the closed form."""
    assert sample_fraction(10, 150) == pytest.approx(0.02)
    assert sample_fraction(11, 300) == pytest.approx(0.02)
    assert sample_fraction(8, 75) == pytest.approx(0.05)
    assert sample_fraction(10, 170) == pytest.approx(0.024)  # 2 + (3-2) * 20/50
    p = 0.515**12  # K=12 not in Table 9
    assert sample_fraction(12, 150) == pytest.approx(1 - (1 - p) ** 150 - 150 * p * (1 - p) ** 149)


def test_magicpig_published_accuracy_matches_config():
    """(10,150) returns its RULER and reasoning rows; an unpublished config returns none."""
    rows = make_method("magicpig", dep(llama31_8b())).published_accuracy()
    avg = [r for r in rows if r.benchmark == "RULER-avg" and r.model == "Llama-3.1-8B-Instruct"]
    assert avg[0].score == 86.4 and avg[0].full_score == 88.7
    assert any(r.benchmark == "reasoning-2ops" and r.score == 68.3 for r in rows)
    assert make_method("magicpig:K=12", dep(llama31_8b())).published_accuracy() == []


# ---------------------------------------------------------------- DuoAttention / StreamingLLM / Quest
def test_duoattention_memory_row14():
    """Llama-2-7B r=0.25 at 100K: weights 12.55 GiB + KV 12.32 GiB = 24.9 GiB, within 5% of row 14's 26 (GiB)."""
    d = dep()
    m = make_method("duoattention", d)
    assert m.r == 0.25
    # 524,288 * (0.25 * 100,000 + 0.75 * (64 + 256)) = 524,288 * 25,240 = 13,233,029,120 B
    assert gpu(m, 100_000) == 13_233_029_120
    total = (d.weight_bytes_per_gpu + gpu(m, 100_000)) / GiB
    assert total == pytest.approx(26, rel=0.05)
    full = (d.weight_bytes_per_gpu + gpu(make_method("full", d), 100_000)) / GiB
    assert full == pytest.approx(61, rel=0.05)  # row 14 full: 61 GB (GiB)
    assert make_method("duoattention", dep(llama31_8b())).r == 0.5  # GQA default


def test_streamingllm_constant_bytes():
    """(4 + 2044) * 524,288 = 1,073,741,824 B for any context >= 2048."""
    m = make_method("streamingllm", dep())
    assert gpu(m, 2048) == gpu(m, 1_000_000) == 1_073_741_824
    assert gpu(m, 100) == 100 * 524_288


def test_quest_metadata_is_one_over_page_of_kv():
    """Quest at 32K: 30 sparse layers * 2048 pages * 2*32*128*2 B = 1,006,632,960 B = (30/32)/16 of the KV."""
    m = make_method("quest", dep())
    full = 32_768 * 524_288
    assert gpu(m, 32_768) - full == 1_006_632_960
    assert (gpu(m, 32_768) - full) / full == pytest.approx(1 / 16 * 30 / 32)


def test_quest_decode_load_fraction():
    """Sparse-layer KV bytes per step = 1/P + T/S of full (P=16, T=2048, S=64K -> 0.09375)."""
    d = dep()
    q = make_method("quest", d).decode_cost(np.array([65_535.0]))
    f = make_method("full", d).decode_cost(np.array([65_535.0]))
    sparse = q.by_name("attn_decode").hbm_bytes + q.by_name("quest_estimate").hbm_bytes
    qo = 32 * 2 * 32 * 128 * 2  # Q in and O out, all layers
    dense_kv = 2 / 32 * (f.by_name("attn_decode").hbm_bytes - qo)
    frac = (sparse - dense_kv - qo) / (30 / 32 * (f.by_name("attn_decode").hbm_bytes - qo))
    assert frac == pytest.approx(1 / 16 + 2048 / 65_536, rel=0.01)


# ---------------------------------------------------------------- eviction methods
def test_h2o_budget_and_score_bytes():
    """P = 10,000: 2,000 tokens * (524,288 KV + 32 layers * 32 heads * 4 B score) = 1,056,768,000 B."""
    m = make_method("h2o", dep())
    assert gpu(m, 10_500, n_prompt=10_000) == 2_000 * (524_288 + 4_096)
    assert gpu(m, 10_000) == 2_000 * 528_384


def test_snapkv_keeps_capacity_plus_generated():
    """SnapKV C=1024: 1024 * 524,288 B after prefill, + 100 generated tokens."""
    m = make_method("snapkv", dep())
    assert gpu(m, 100_000) == 1024 * 524_288
    assert gpu(m, 100_100, n_prompt=100_000) == 1124 * 524_288
    assert gpu(m, 500) == 500 * 524_288


def test_pyramidkv_layer_budgets():
    """C'=960, min = 960/20 = 48, max = 2*960 - 48 = 1872; layer 0 keeps 1936, layer 31 keeps 112, mean 1024."""
    m = make_method("pyramidkv", dep())
    caps = m.layer_capacities()
    assert caps[0] == 1936 and caps[-1] == 112 and caps.mean() == pytest.approx(1024)
    assert gpu(m, 100_000) == pytest.approx(1024 * 524_288)


@pytest.mark.parametrize("P, kept", [(500, 500), (1000, 1000), (1500, 1024), (1800, 1024), (3000, 1024)])
def test_pyramidkv_keeps_min_p_c_per_layer_on_average(P, kept):
    """PyramidKVCluster.update_kv (the reference code): P < C keeps the prompt, C <= P < 2(C - w) = 1,920 a uniform C,
    and above it the pyramid's top is capped at P - w with the bottom raised so the mean stays C. So the mean per
    layer is min(P, C) (a user audit: mean_l min(P, c_l) gave 453.7 / 776.6 / 966.5 at 500 / 1,000 / 1,500).
    Llama-2-7B (the module's dep(): 524,288 B per token over 32 layers)."""
    m = make_method("pyramidkv", dep())
    assert float(m.kv_bytes(float(P), float(P)).gpu_bytes) == pytest.approx(kept * 524_288)
    assert float(m.kv_bytes(float(P + 10), float(P)).gpu_bytes) == pytest.approx((kept + 10) * 524_288)


def test_infllm_span_and_host_bytes():
    """InfLLM attends 128 + 4096 + 16*128 = 6272 tokens; host holds the (n - 4224) block tokens."""
    m = make_method("infllm", dep())
    assert m.span == 6272
    c = m.decode_cost(np.array([100_000.0]))
    assert c.by_name("attn_decode").flops == pytest.approx(32 * 6272 * 2 * 32 * 256)
    assert float(m.kv_bytes(100_000.0).host_bytes) == (100_000 - 4224) * 524_288


def test_topk_reads_all_keys_and_k_values():
    """TopK 4% at S+1 = 10,000: K of all (half KV) + V of 400 tokens + fp32 scores out and back."""
    d = dep()
    c = make_method("topk", d).decode_cost(np.array([9_999.0]))
    per_layer = 10_000 * 8192 + 400 * 8192 + 16_384 + 2 * 4 * 32 * 10_000  # K, V of top-k, new KV, scores
    qo = 2 * 32 * 128 * 2
    assert c.by_name("attn_decode").hbm_bytes == 32 * (per_layer + qo)
    assert c.by_name("attn_decode").flops == 32 * (2 * 32 * 128 * 10_000 + 2 * 32 * 128 * 400)


def test_topk_on_mla_reads_the_whole_latent():
    """DeepSeek-V2-Lite (27 layers, latent 576 x 2 B = 1,152 B per token per layer, 16 query heads):
    the latent is the key, so top-k reads all of it for the scores and the 400 selected rows again.
    Over full attention at S+1 = 10,000: per layer 400 x 1,152 + 2 x 4 x 16 x 10,000 = 460,800 +
    1,280,000 = 1,740,800 B; x 27 = 47,001,600 B (it read 57 % of full's bytes before the fix)."""
    d = dep(deepseek_v2_lite())
    ctx = np.array([9_999.0])
    top = make_method("topk", d).decode_cost(ctx).by_name("attn_decode").hbm_bytes
    full = make_method("full", d).decode_cost(ctx).by_name("attn_decode").hbm_bytes
    assert top - full == 27 * 1_740_800


# ---------------------------------------------------------------- MLA, LLMLingua, prefix
def test_mla_equals_full_latent():
    """DeepSeek-V2-Lite latent: 27 layers * (512 + 64) * 2 B = 31,104 B/token, same as full."""
    d = dep(deepseek_v2_lite())
    assert gpu(make_method("mla", d), 1) == gpu(make_method("full", d), 1) == 31_104


def test_llmlingua_prompt_and_compressor_cost():
    """Ratio 3: 10,000 tokens -> 3,334 prefilled; the 0.56B compressor does 2 x (560e6 - 256,002,048
    embedding weights, a lookup) x 3 x 3334 = 2 x 303,997,952 x 10,002 FLOPs."""
    m = make_method("llmlingua", dep())
    assert m.effective_prompt_tokens(10_000) == 3334
    c = m.prefill_cost(np.array([3334.0]), np.array([0.0]))
    assert c.by_name("compressor").flops == pytest.approx(2 * 303_997_952 * 3 * 3334)
    assert m.fixed_gpu_bytes() == 0.56e9 * 2


def test_prefix_split_and_cached_prefill():
    """hit 0.5: a 1000-token prompt prefills 500 new tokens after 500 cached ones."""
    d = dep()
    m = make_method("prefix", d)
    assert m.split_prompt(1000.0) == (500.0, 500.0)
    new, cached = m.split_prompt(np.array([1000.0]))
    c = m.prefill_cost(new, cached)
    # pairs = 500 * 500 + 500 * 501 / 2 = 375,250; FLOPs 32 * 2 * 32 * 256 * pairs
    assert prefill_pairs(500.0, 500.0) == 375_250
    assert c.by_name("attn_prefill").flops == 32 * 2 * 32 * 256 * 375_250
    assert make_method("full", d).cached_prompt_fraction() == 0.0


def test_quest_and_topk_published_rows():
    """Quest (16, 0.04) and TopK 0.02 return their METHODS.md §4 rows; token budgets return none."""
    q = make_method("quest:budget_ratio=0.04", dep(llama31_8b())).published_accuracy()
    assert any(r.benchmark == "RULER-avg" and r.score == 82.1 for r in q)
    t = make_method("topk:budget_ratio=0.02", dep(llama31_8b())).published_accuracy()
    assert [r.score for r in t] == [71.5, 44.0, 11.3]
    assert make_method("quest", dep()).published_accuracy() == []


def test_infllm_prefill_retrieves_per_512_token_sub_chunk_whatever_the_engine_chunk():
    """InfLLM cuts a prefill into exc_block_size = 512-token sub-chunks, each scoring the representative keys of the
    blocks before it and fetching top-16 of them (a user audit: one 32,000-token call charged no retrieval at all,
    blocks(n_cached = 0) = 0). Local window 128 + 4096 = 4,224 tokens: of the ceil(32000 / 512) = 63 sub-chunks,
    those starting at k x 512 > 4,224 (k = 9..62) retrieve: 54 -> 54 x 16 x 128 x 0.5 = 55,296 fetched tokens per
    layer, and 2 x 32 x 54 = 3,456 launches; the same prompt in four 8,000-token engine chunks costs within 1.5%."""
    m = make_method("infllm", dep())
    one = m.prefill_cost(32_000.0, 0.0)
    assert one.by_name("infllm_block_scores").launches == 2 * 32 * 54
    kv = float(m.kv_bytes(1.0).gpu_bytes) / 32  # one token's KV per layer (Llama-2-7B: 16,384 B)
    offload = (32_000 - 4_224) / 128 * 128  # the tokens past the local window, in blocks
    assert one.by_name("infllm_offload").pcie_bytes == pytest.approx(32 * (offload + 55_296) * kv)
    four = [m.prefill_cost(8_000.0, float(c)) for c in (0, 8_000, 16_000, 24_000)]
    for name, field in (("infllm_block_scores", "flops"), ("infllm_offload", "pcie_bytes")):
        total = sum(getattr(c.by_name(name), field) for c in four)
        assert total == pytest.approx(getattr(one.by_name(name), field), rel=0.015)


def test_magicpig_host_kv_is_in_the_kv_dtype():
    """MagicPIG's host copy is the GPU's KV, in its dtype (as InfLLM's): Llama-3.1-8B at 32,768
    tokens offloads 32,768 - 4 sink - 64 local = 32,700 tokens of 30 sparse layers:
    30 x 2 x 8 KV heads x 128 x 32,700 = 2,009,088,000 elements: 2.009 GB in fp8, 4.018 GB in bf16
    (user audit: it stayed 4.018 GB with an fp8 KV cache)."""
    from kvsim.costmodel.deployment import build_deployment

    for kv_dtype, nbytes in (("bf16", 2), ("fp8", 1)):
        dep = build_deployment("a100", "llama-3.1-8b", kv_dtype=kv_dtype)
        m = make_method("magicpig", dep)
        assert float(m.host_breakdown(32768.0)["kv"]) == 2_009_088_000 * nbytes
