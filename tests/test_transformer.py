"""Shared transformer work (weights GEMMs, attention) with hand-computed numbers."""

import numpy as np
import pytest
from synthetic import llama2_7b, llama31_8b, synthetic_system

from kvsim.costmodel.attention import decode_attention, prefill_attention, sum_seq
from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.roofline import Roofline
from kvsim.costmodel.transformer import linear_cost


def dep(model=None, **kw):
    return Deployment(system=synthetic_system(), model=model or llama2_7b(), **kw)


def test_llama2_7b_param_count():
    """Params per SPECS.md F1 reproduce the published 6.74B."""
    m = llama2_7b()
    # attn 4*4096^2 = 67,108,864; mlp 3*4096*11008 = 135,266,304; x32 layers = 6,476,005,376
    # + embeddings 32000*4096 = 131,072,000 + LM head 131,072,000 + norms 65*4096 = 266,240
    assert m.total_params == 6_738_415_616
    assert m.active_params_per_token == 6_476_005_376 + 131_072_000


def test_full_kv_bytes_per_token_llama2_7b():
    """2 * L * n_kv * d * 2 B = 2*32*32*128*2 = 524,288 B (METHODS.md 1.0)."""
    assert dep().full_kv_bytes_per_token == 524_288


def test_gqa_kv_and_tp_shard():
    """Llama-3.1-8B: 2*32*8*128*2 = 131,072 B/token; TP=2 stores 4 of 8 KV heads per GPU."""
    assert dep(llama31_8b()).full_kv_bytes_per_token == 131_072
    assert dep(llama31_8b(), tp=2).full_kv_bytes_per_token == 65_536
    assert dep(llama31_8b(), tp=2).weight_bytes_per_gpu == llama31_8b().total_params * 2 / 2


def test_decode_linear_flops_are_2P_per_token():
    """One decode token costs 2 * P_active FLOPs in weight GEMMs (SPECS.md F3)."""
    c = linear_cost(dep(), n_tokens=1.0, n_seqs=1.0)
    gemm_flops = sum(p.flops for p in c.parts if p.op == "gemm")
    assert gemm_flops == pytest.approx(2 * 6_607_077_376, rel=1e-12)


def test_decode_attention_time_llama2_7b():
    """Decode attention of one sequence with 4096 cached tokens on the synthetic GPU."""
    d = dep()
    t = Roofline(d.system)(decode_attention(d, np.array([4097.0])))
    # bytes: 32 layers * (4097 tokens read * 16,384 B + 1 written * 16,384 B) + Q,O 32*2*32*128*2
    #      = 2,148,532,224 + 524,288 = 2,149,056,512 B -> / (1e12 * 0.5) = 4.298113024 ms
    # flops: 32 * 4097 * 2*32*(128+128) = 2,147,991,552 -> 43 us (memory bound)
    # + 32 launches * 10 us = 0.32 ms
    assert t.total_s == pytest.approx(4.298113024e-3 + 0.32e-3, rel=1e-12)
    assert t.parts[0].bound == "hbm"


def test_prefill_attention_flops_causal():
    """Prefill of 1024 new tokens: 32 * 2*32*256 * 1024*1025/2 FLOPs."""
    d = dep()
    c = prefill_attention(d, np.array([1024.0]), np.array([0.0]))
    # pairs = 1024*1025/2 = 524,800; per layer 2 * 32 heads * (128+128) = 16,384 FLOPs per pair
    assert c.parts[0].flops == pytest.approx(32 * 16_384 * 524_800, rel=1e-12)


def test_tp_adds_allreduce():
    """TP=2 adds 2 all-reduces per layer of 2*(tp-1)/tp * T*h*2 B each."""
    c = linear_cost(dep(tp=2), n_tokens=10.0, n_seqs=10.0)
    ar = c.by_name("allreduce")
    # per all-reduce 2*(1)/2 * 10*4096*2 = 81,920 B; x 2 x 32 layers = 5,242,880 B
    assert ar.link_bytes == pytest.approx(5_242_880, rel=1e-12)


def test_step_overhead_a_plus_b_seqs_plus_c_tokens():
    """Engine overhead = a + b * sampled sequences + c * tokens, each on its own host op class."""
    from kvsim.costmodel.transformer import step_overhead_cost
    from kvsim.methods import make_method
    from kvsim.pricing.step import StepModel

    s = synthetic_system()
    eff = s.eff.with_overrides({"step": {"overhead_s": 2e-4}, "step_seq": {"overhead_s": 1.5e-5},
                                "step_token": {"overhead_s": 1e-6}})
    rl = Roofline(s.with_efficiencies(eff))
    # 8 decoding sequences + one 100-token prompt that completes (samples): 108 tokens, 9 sequences
    # a + b * 9 + c * 108 = 2e-4 + 1.35e-4 + 1.08e-4 = 4.43e-4 s
    assert rl(step_overhead_cost(108.0, 9.0)).total_s == pytest.approx(4.43e-4, rel=1e-12)
    d = Deployment(system=s.with_efficiencies(eff), model=llama2_7b())
    t = StepModel(d, make_method("full", d)).timing(decode_ctx=np.full(8, 500.0), prefill_new=np.array([100.0]),
                                                   prefill_cached=np.array([0.0]))
    host = sum(p.seconds for p in t.parts if p.device == "host")
    assert host == pytest.approx(4.43e-4, rel=1e-12)
    # the same step whose chunk does not complete its prompt: 108 tokens, 8 sampled sequences
    # 2e-4 + 8 * 1.5e-5 + 108 * 1e-6 = 2e-4 + 1.2e-4 + 1.08e-4 = 4.28e-4 s
    t = StepModel(d, make_method("full", d)).timing(decode_ctx=np.full(8, 500.0), prefill_new=np.array([100.0]),
                                                   prefill_cached=np.array([0.0]), n_sampled_prefill=0)
    assert sum(p.seconds for p in t.parts if p.device == "host") == pytest.approx(4.28e-4, rel=1e-12)


def test_shipped_engine_profiles():
    """Default (vLLM V1, async scheduling): 0.16 ms per step at any batch; vllm-sync.yaml adds 13 us per sequence."""
    from pathlib import Path

    import kvsim
    from kvsim.costmodel.calibration import apply_calibration, load_calibration
    from kvsim.costmodel.transformer import step_overhead_cost
    from kvsim.hardware import load_system

    a100 = load_system("a100")
    rl = Roofline(a100)
    # vLLM PR #11133: 150-170 us gap with async scheduling -> 1.6e-4 s, independent of the batch
    assert rl(step_overhead_cost(1.0, 1.0)).total_s == pytest.approx(1.6e-4)
    assert rl(step_overhead_cost(256.0, 256.0)).total_s == pytest.approx(1.6e-4)
    path = Path(kvsim.__file__).parent / "hardware" / "engines" / "vllm-sync.yaml"
    sync = Roofline(apply_calibration(a100, load_calibration(path)))
    # batch 32: 1.6e-4 + 32 * 1.3e-5 = 5.76e-4 s (tenstorrent/vllm PR #305 measured 0.62 ms: within 8 %)
    assert sync(step_overhead_cost(32.0, 32.0)).total_s == pytest.approx(5.76e-4)


def test_sum_seq_of_one_sequence_per_row_is_the_sum_bit_for_bit():
    """sum_seq on [n, 1] rows skips numpy's length-1 reduction; it must give what the sum gives,
    bit for bit: 0 + x (so -0.0 becomes +0.0), NaN and inf kept; other shapes are plain sums
    (x = [[1, 2, 3]] -> 6)."""
    x = np.array([[1.5], [-0.0], [np.inf], [np.nan], [1e-300]])
    got, want = sum_seq(x), x.sum(axis=-1)
    assert got.tobytes() == want.tobytes()
    assert not np.signbit(got[1])
    assert sum_seq(np.ones((2, 4, 1))).shape == (2, 4)
    assert sum_seq(np.array([[1.0, 2.0, 3.0]])).tolist() == [6.0]
    assert sum_seq(np.array([2.0])) == 2.0 and isinstance(sum_seq(np.array([2.0])), float)
