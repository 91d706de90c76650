"""Hand-computed numbers of the methods added for issue 13 (MiKV, CAKE, oracle sampling, KV-head
merging, X-EcoMLA, NSA, MoBA), with the published numbers they reproduce."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import llama2_7b, llama31_8b, synthetic_system

from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.methods import make_method
from kvsim.models import ModelSpec


def dep(model=None, **kw):
    return Deployment(system=synthetic_system(), model=model or llama2_7b(), **kw)


def gpu(m, n, **kw):
    return float(np.asarray(m.kv_bytes(float(n), **kw).gpu_bytes))


def llama32_1b():
    """Llama-3.2-1B dims (HF config): 16 layers, 32 heads, 8 KV heads, head dim 64."""
    return ModelSpec(name="llama-3.2-1b-test", architecture="llama", num_layers=16, hidden_size=2048, num_heads=32,
                     num_kv_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                     max_context_tokens=131072, tie_word_embeddings=True, source="HF config")


# ---------------------------------------------------------------- MiKV
def test_mikv_bytes_hand_computed():
    """MiKV 20 % at 16 bits, 80 % at 2 bits + per-token scale/zero, H2O score, balancer (Llama-2-7B)."""
    m = make_method("mikv", dep())
    # per layer: E = 2*32*128 = 8192 elements; hi = 8192*2 = 16,384 B; lo = 8192/4 + 32 heads * 2 (K,V) * 2 (s,z) * 2 B
    # = 2048 + 256 = 2304 B; KV = 0.2*16,384 + 0.8*2304 = 3276.8 + 1843.2 = 5120 B (16,384 / 5120 = 3.2x)
    # + fp32 score per query head 4*32 = 128 B -> 5248 B per token; balancer 4096 channels * 2 B = 8192 B per layer
    assert m.kv == pytest.approx(5120.0) and m.tok == pytest.approx(5248.0)
    assert gpu(m, 10_000) == pytest.approx(32 * (10_000 * 5248 + 8192))  # 1,679,622,144 B
    assert gpu(m, 0) == 0.0


def test_mikv_decode_reads_mixed_precision_kv():
    """Decode at S + 1 = 10,000: KV read 10,000 * 5120 + 8192 per layer; dequant 2 FLOP on the 80 % low part."""
    d = dep()
    c = make_method("mikv", d).decode_cost(np.array([9_999.0]))
    a = c.by_name("attn_decode")
    qo = 2 * 32 * 128 * 2
    scores = 32 * 10_000 * (12 * 2 + 2 * 4)  # eager score passes + accumulated score read/write
    assert a.hbm_bytes == pytest.approx(32 * (10_000 * 5120 + 8192 + 16_384 + scores + qo))
    attn_flops = 10_000 * 2 * 32 * 256
    assert a.flops == pytest.approx(32 * (attn_flops + 2 * 0.8 * 10_000 * 8192 + 5 * 32 * 10_000))


# ---------------------------------------------------------------- CAKE
def test_cake_total_budget_and_ratio():
    """CAKE keeps L x 1024 tokens (mean 1024 per layer) + generated ones; budget_ratio 0.032 keeps 3.2 % of the prompt."""
    m = make_method("cake", dep())
    assert gpu(m, 100_000) == 1024 * 524_288
    assert gpu(m, 100_100, n_prompt=100_000) == 1124 * 524_288
    assert gpu(m, 500) == 500 * 524_288
    r = make_method("cake:budget_ratio=0.032", dep())
    # 0.032 * 100,000 = 3,200 tokens per layer -> 3.2 % of full's 100,000 * 524,288 B
    assert gpu(r, 100_000) == pytest.approx(3_200 * 524_288)
    assert gpu(r, 100_000) / gpu(make_method("full", dep()), 100_000) == pytest.approx(0.032)


def test_cake_prefill_selection_work():
    """One 4096-token chunk: 4096 keys * 32 window queries * 32 heads = 4,194,304 scores per layer,
    2*128 + 5 + 7 = 268 FLOPs each; fp32 scores 8 B + 2 compactions of 1024 kept tokens (16,384 B, read+write)."""
    c = make_method("cake", dep()).prefill_cost(np.array([4096.0]), np.array([0.0]))
    s = c.by_name("cake_select")
    assert s.flops == pytest.approx(32 * 4_194_304 * 268)
    assert s.hbm_bytes == pytest.approx(32 * (4_194_304 * 8 + 2 * 2 * 1024 * 16_384))


# ---------------------------------------------------------------- oracle sampling
@pytest.mark.parametrize("ratio,cost_total", [(0.3, 0.52), (0.1, 0.51), (0.02, 0.505)])
def test_oracle_flops_equal_tutorial_cost_columns(ratio, cost_total):
    """Attention FLOPs / full = Cost1 + Cost2 of MagicPIG Table 6 (tutorial): 0.5 (logits over every key)
    + the measured unique fraction (an input from the same table; the check is the 0.5 structure)."""
    d = dep()
    o = make_method("oracle", d, {"budget_ratio": ratio}).decode_cost(np.array([99_999.0])).by_name("attn_decode")
    f = make_method("full", d).decode_cost(np.array([99_999.0])).by_name("attn_decode")
    assert o.flops / f.flops == pytest.approx(cost_total, rel=1e-12)


def test_oracle_bytes_and_interpolation():
    """u(0.1) = 0.01: per layer K of 10,000 tokens (8192 B) + K,V of 100 unique samples (16,384 B) + fp32
    weights out and back (8 * 32 * 10,000) + new KV 16,384 + Q/O; u(0.2) = 0.015 (linear between Table 6 points)."""
    d = dep()
    m = make_method("oracle", d)
    a = m.decode_cost(np.array([9_999.0])).by_name("attn_decode")
    per_layer = 10_000 * 8192 + 100 * 16_384 + 8 * 32 * 10_000 + 16_384 + 2 * 32 * 128 * 2
    assert a.hbm_bytes == pytest.approx(32 * per_layer)
    assert make_method("oracle:budget_ratio=0.2", d).u == pytest.approx(0.015)
    with pytest.raises(ConfigError, match="unique_fraction"):
        make_method("oracle:budget_ratio=0.5", d)
    assert gpu(m, 1000) == 1000 * 524_288  # no memory saved


def test_oracle_published_rows():
    """Oracle sampling 0.02 returns Table 6's reasoning row (83.1 / 57.9 / 11.9)."""
    rows = make_method("oracle:budget_ratio=0.02", dep(llama31_8b())).published_accuracy()
    assert [r.score for r in rows] == [83.1, 57.9, 11.9]


# ---------------------------------------------------------------- KV-head merging
def test_headmerge_halves_kv_not_flops():
    """Llama-2-7B, half the KV heads: 2 * 32 layers * 16 heads * 128 * 2 B = 262,144 B/token; decode
    attention bytes fall, FLOPs stay (every query head still attends to every token)."""
    d = dep()
    m = make_method("headmerge", d)
    assert m.kv_heads == 16 and gpu(m, 1) == 262_144
    c, f = (x.decode_cost(np.array([9_999.0])).by_name("attn_decode") for x in (m, make_method("full", d)))
    assert c.flops == f.flops
    # KV read 10,000 * 8192 + new token 8192 + Q/O 16,384 per layer (full: 16,384-byte tokens)
    assert c.hbm_bytes == 32 * (10_000 * 8192 + 8192 + 16_384)
    assert gpu(make_method("headmerge:keep_ratio=0.25", dep(llama31_8b())), 1) == 2 * 32 * 2 * 128 * 2
    with pytest.raises(ConfigError, match="whole"):
        make_method("headmerge:keep_ratio=0.3", d)


# ---------------------------------------------------------------- X-EcoMLA
def test_xecomla_reproduces_6_4x_and_10_6x():
    """Llama-3.2-1B: full 2 * 8 * 64 = 1024 elements per token per layer; r_kv 128 + 32 = 160 (15.6 %, 6.4x);
    r_kv 64 + 32 = 96 (9.4 %, 10.67x; paper 10.6x); r_kv 48 + 32 = 80 (7.8 %)."""
    d = dep(llama32_1b())
    full = gpu(make_method("full", d), 1)
    assert full == 16 * 1024 * 2  # 32,768 B
    assert gpu(make_method("xecomla", d), 1) == 16 * 160 * 2  # 5,120 B
    assert full / gpu(make_method("xecomla", d), 1) == pytest.approx(6.4)
    assert full / gpu(make_method("xecomla:kv_lora_rank=64", d), 1) == pytest.approx(10.6, rel=0.01)
    assert gpu(make_method("xecomla:kv_lora_rank=48", d), 1) / full == pytest.approx(0.078, rel=0.01)


def test_xecomla_decode_is_absorbed_mla():
    """Absorbed MLA decode per token per layer: 2 * 32 * (128 + 32) + 2 * 32 * 128 = 18,432 FLOPs; bytes 320 per token."""
    d = dep(llama32_1b())
    a = make_method("xecomla", d).decode_cost(np.array([999.0])).by_name("attn_decode")
    assert a.flops == 16 * 1000 * 18_432
    # latent read 1000 * 320 + written 320; Q and O in the latent space (attention.py: FlashMLA's
    # q is d_c + d_r wide, its output d_c): 32 heads * (128 + 32 + 128) * 2 B = 18,432 B
    assert a.hbm_bytes == 16 * (1000 * 320 + 320 + 32 * (128 + 32 + 128) * 2)
    with pytest.raises(ConfigError, match="already"):
        from test_methods_contract import deepseek_v2_lite
        make_method("xecomla", dep(deepseek_v2_lite()))


# ---------------------------------------------------------------- NSA
@pytest.mark.parametrize("t,paper", [(8192, 2048), (16384, 2560), (32768, 3584), (65536, 5632)])
def test_nsa_memory_access_table4(t, paper):
    """Tokens loaded per decode step: floor((t-32)/16)+1 compressed + 16*64 selected + 512 window
    (64K: 4095 + 1024 + 512 = 5631; NSA Table 4: 5632, within 0.05 %)."""
    m = make_method("nsa", dep(llama31_8b()))
    assert float(m.loaded(float(t))) == pytest.approx(paper, rel=5e-4)
    assert t / float(m.loaded(float(t))) == pytest.approx(t / paper, rel=5e-4)


def test_nsa_cmp_pairs_closed_form_and_residency():
    """sum_{t<=m} cmp(t) equals the brute-force sum; residency at 64K = (65,536 + 4,095 + 512 + 32) tokens."""
    m = make_method("nsa", dep())
    for mm in (0, 31, 32, 33, 47, 48, 1000, 4097):
        brute = sum(float(m.cmp(float(t))) for t in range(1, mm + 1))
        assert float(m.cmp_pairs(float(mm))) == brute
    assert gpu(m, 65_536) == (65_536 + 4_095 + 512 + 32) * 524_288
    c = m.prefill_cost(np.array([100.0]), np.array([0.0])).by_name("attn_prefill")
    # 100 queries: cmp pairs sum_{t=32..100} (floor((t-32)/16)+1) = 69 + 16*(0+1+2+3) + 4*5 = 185 (J=68, q=4, r=4);
    # selection and window see every earlier token (100*101/2 = 5050 each)
    assert c.flops == pytest.approx(32 * 2 * 32 * 256 * (185 + 2 * 5050))


# ---------------------------------------------------------------- MoBA
def test_moba_span_and_sparsity():
    """B = 4096, k = 12: a query attends (12 - 1/2) * 4096 = 47,104 tokens; at 1M that is 95.5 % sparse
    (the paper's 95.31 % = 1 - 12 * 4096 / 1M counts the current block as full)."""
    d = dep()
    m = make_method("moba", d)
    assert m.span == 47_104
    a = m.decode_cost(np.array([1_048_575.0])).by_name("attn_decode")
    assert a.flops == 32 * 47_104 * 2 * 32 * 256
    assert 1 - 47_104 / 1_048_576 == pytest.approx(0.9551, abs=1e-4)
    assert 1 - 12 * 4096 / 1_048_576 == pytest.approx(0.9531, abs=1e-4)
    # gate: 255 completed blocks before position 1,048,576: mean keys 255 * 4096 * 2 B + fp32 scores 4 * 32
    g = m.decode_cost(np.array([1_048_575.0])).by_name("moba_gate")
    assert g.hbm_bytes == 32 * 255 * (8192 + 128)
    assert gpu(m, 1_048_576) == 32 * (1_048_576 * 16_384 + 256 * 8192)
    s = make_method("moba:block_size=512,top_k=3", d)
    assert s.span == 1280  # 8K scaling-law setting: 2.5 * 512


# ---------------------------------------------------------------- Locret
def test_locret_kept_tokens_and_compression():
    """Budget 6000 + 100 local tokens: P = 100,000 keeps 6,100 per layer and head; generated tokens append.
    At 128K: 131,072 / 16,484 = 7.95x with budget 16384 (paper: 8x, Llama-3.1-8B) and 131,072 / 6,100 = 21.5x
    with 6000 (paper: 20x, Phi-3-mini-128K)."""
    m = make_method("locret", dep())
    assert gpu(m, 100_000) == 6_100 * 524_288
    assert gpu(m, 100_050, n_prompt=100_000) == 6_150 * 524_288
    assert gpu(m, 3_000) == 3_000 * 524_288  # below the budget nothing is evicted
    full = make_method("full", dep())
    assert gpu(full, 131_072) / gpu(m, 131_072) == pytest.approx(21.49, rel=1e-3)
    big = make_method("locret:budget=16384", dep(llama31_8b()))
    assert gpu(make_method("full", dep(llama31_8b())), 131_072) / gpu(big, 131_072) == pytest.approx(7.951, rel=1e-3)


def test_locret_chunked_prefill_pairs_and_retaining_head():
    """8192 new tokens, nothing cached, chunks of 3072 against a 6000-token retained set:
    3072*3073/2 + (3072*3072 + 3072*3073/2) + (2048*6000 + 2048*2049/2) = 33,263,616 pairs;
    retaining head (32 + 2*32) * 128 = 12,288 inputs -> 1024 -> 32: 2*12,288*1024 + 2*1024*32 = 25,231,360 FLOPs/token/layer."""
    m = make_method("locret", dep())
    c = m.prefill_cost(np.array([8192.0]), np.array([0.0]))
    assert c.by_name("attn_prefill").flops == pytest.approx(32 * 2 * 32 * 256 * 33_263_616)
    assert c.by_name("locret_evict").flops == pytest.approx(32 * 8192 * 25_231_360)
    # after a 10,000-token prefix the retained set is full: one 3072 chunk sees 6000 + causal
    c2 = m.prefill_cost(np.array([3072.0]), np.array([10_000.0])).by_name("attn_prefill")
    assert c2.flops == pytest.approx(32 * 2 * 32 * 256 * (3072 * 6000 + 3072 * 3073 / 2))


# ---------------------------------------------------------------- Elastic Cache
def test_elastic_keeps_eighty_percent_and_prices_merge():
    """ratio 0.2: 0.8 x 10,000 x 524,288 = 4,194,304,000 B; decode attends 8,000 of 10,000 tokens and shifts
    25 tokens every 5 steps (32 layers * 0.2 * 25 * 2 * 16,384 B); prefill: eager scores of a 1000-token
    prompt (1000 * 1000 * 32 heads, 12 two-byte passes) + merge of 200 tokens (3 KV reads/writes)."""
    d = dep()
    m = make_method("elastic", d)
    assert gpu(m, 10_000) == pytest.approx(0.8 * 10_000 * 524_288)
    c = m.decode_cost(np.array([9_999.0]))
    assert c.by_name("attn_decode").flops == pytest.approx(32 * 8_000 * 2 * 32 * 256)
    assert c.by_name("elastic_evict").hbm_bytes == pytest.approx(32 * 0.2 * 25 * 2 * 16_384)
    p = m.prefill_cost(np.array([1000.0]), np.array([0.0]))
    assert p.by_name("elastic_scores").hbm_bytes == pytest.approx(32 * (1000 * 1000 * 32 * 12 * 2 + 1000 * 8))
    assert p.by_name("elastic_merge").hbm_bytes == pytest.approx(32 * 200 * 3 * 16_384)
    assert not m.shares_prefix_blocks(16)  # survivors depend on the whole prompt's scores


# ---------------------------------------------------------------- EMS
def test_ems_keeps_256_per_head_and_prices_global_local_score_and_merge():
    """EMS budget 256 per head (LongBench): P = 10,000 keeps 256 x 524,288 B; generated tokens append.
    Prefill of 1000 tokens: global score over 500,500 causal pairs x 32 heads at 2*128 + 5 FLOPs; merge of the
    744 evicted tokens against 256 kept ones (2*128 FLOPs per pair per KV head)."""
    m = make_method("ems", dep())
    assert gpu(m, 10_000) == 256 * 524_288
    assert gpu(m, 10_100, n_prompt=10_000) == 356 * 524_288
    assert gpu(m, 100) == 100 * 524_288  # below the budget nothing is evicted
    c = m.prefill_cost(np.array([1000.0]), np.array([0.0]))
    g = c.by_name("ems_global_score")
    assert g.flops == pytest.approx(32 * 500_500 * 32 * 261)
    assert g.hbm_bytes == pytest.approx(32 * 1000 * (32 * 128 * 2 + 8 * 32))  # K re-read + fp32 score written and read per head
    mg = c.by_name("ems_merge")
    assert mg.flops == pytest.approx(32 * 744 * 256 * 256 * 32)
    assert mg.hbm_bytes == pytest.approx(32 * (744 * 16_384 + 4 * 256 * 16_384))
    # decode reads the 256 kept tokens + the new one
    assert m.decode_cost(np.array([9_999.0])).by_name("attn_decode").flops == pytest.approx(32 * 257 * 2 * 32 * 256)
    with pytest.raises(Exception):
        make_method("ems:capacity=16,window=32", dep())


# ---------------------------------------------------------------- KVCrush
def test_kvcrush_keeps_a_quarter_and_its_pass_is_a_tiny_share_of_prefill():
    """budget_ratio 0.25: P = 10,000 keeps 2,500 tokens per head (4x smaller, the abstract's LongBench setting by
    construction, not a check); at a LongBench-like 13,000-token prompt (SnapKV: average input ~13K) the
    vote + KVCrush pass is 0.05 % of the prefill FLOPs of Llama-2-7B (paper: < 0.5 % of latency)."""
    d = dep()
    m = make_method("kvcrush", d)
    assert gpu(m, 10_000) == 2_500 * 524_288
    assert gpu(m, 10_100, n_prompt=10_000) == 2_600 * 524_288
    assert gpu(make_method("full", d), 10_000) / gpu(m, 10_000) == 4.0
    c = m.prefill_cost(np.array([13_000.0]), np.array([0.0]))
    vote = c.by_name("kvcrush_vote")
    assert vote.flops == pytest.approx(32 * 13_000 * 32 * 32 * (256 + 5 + 1))  # 111,602,417,664 FLOPs
    # kept 3,250; candidates 13,000 - 0.5 * 3,250 = 11,375; sort 11,375 log2(11,375); 32 heads -> 1 word
    sel = c.by_name("kvcrush_select")
    assert sel.flops == pytest.approx(32 * (13_000 * 32 + 11_375 + 11_375 * np.log2(11_375)))
    assert sel.hbm_bytes == pytest.approx(32 * (13_000 * 32 / 8 + 2 * 3_250 * 16_384))
    attn = c.by_name("attn_prefill").flops  # 32 * 2*32*256 * 13,000*13,001/2 = 4.43e13
    linear = 2 * 6.74e9 * 13_000  # ~2 P FLOPs per token (Llama-2-7B, 6.74e9 params) = 1.75e14
    share = (vote.flops + sel.flops) / (attn + linear)
    assert 4e-4 < share < 6e-4  # 1.116e11 / 2.20e14 = 0.051 %
    fixed = make_method("kvcrush:capacity=512", d)
    assert gpu(fixed, 10_000) == 512 * 524_288


# ---------------------------------------------------------------- A^2ATS
def test_a2ats_gpu_codes_host_kv_and_topk_fetch():
    """Llama-3.1-8B (8 KV heads, KV/token/layer 2*8*128*2 = 4096 B), M = 16 sub-vectors of 8-bit codes:
    codes 8 * 16 = 128 B per token per layer on the GPU, 68 window tokens in full, the rest on the host;
    decode at 100,000 fetches 1024 tokens per layer over PCIe in one round trip and attends 68 + 1024."""
    d = dep(llama31_8b())
    m = make_method("a2ats", d)
    r = m.kv_bytes(100_000.0)
    assert float(r.gpu_bytes) == 32 * (68 * 4096 + 100_000 * 128)  # 418,308,096 B
    assert float(r.host_bytes) == 32 * 99_932 * 4096
    assert m.fixed_gpu_bytes() == 32 * 8 * 256 * 128 * 2  # 16,777,216 B of codebooks
    full = gpu(make_method("full", d), 100_000)
    assert full / float(r.gpu_bytes) == pytest.approx(31.32, rel=1e-3)  # 409,600,000 / 13,078,528 per layer
    c = m.decode_cost(np.array([99_999.0]))
    assert c.by_name("attn_decode").flops == pytest.approx(32 * 1092 * 2 * 32 * 256)
    s = 99_931
    assert c.by_name("a2ats_score").flops == pytest.approx(32 * (32 * 2 * 128 * 256 + s * 32 * 16))
    f = c.by_name("a2ats_fetch")
    assert f.pcie_bytes == 32 * 1024 * 4096 and f.pcie_round_trips == 32
    p = m.prefill_cost(np.array([1000.0]), np.array([0.0]))
    assert p.by_name("a2ats_encode").flops == pytest.approx(32 * 1000 * 8 * 3 * 128 * 256)
    assert p.by_name("a2ats_offload").pcie_bytes == 32 * 932 * 4096
    with pytest.raises(ConfigError):
        make_method("a2ats:subvectors=48", d)  # 48 does not divide 128
