"""Cost behaviour of the methods: time ratios against published measurements, overlap, chunking, TP."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from synthetic import llama2_7b, llama31_8b, synthetic_system

from kvsim.costmodel.deployment import Deployment
from kvsim.methods import REGISTRY, make_method
from kvsim.methods._common import window_pairs
from kvsim.costmodel.roofline import Roofline
from kvsim.pricing.step import StepModel


def a6000_like():
    """Synthetic system with an A6000's peaks: 154.8 TFLOP/s bf16 dense, 768 GB/s (Gao et al.'s GPU)."""
    s = synthetic_system()
    g = s.gpu.model_copy(update={"memory_bw_bytes_per_s": 768e9,
                                 "peak_flops_per_s": {"fp32": 38.7e12, "bf16": 154.8e12, "fp16": 154.8e12}})
    return replace(s, gpu=g)


def prefill_ratio(method: str, S: int) -> float:
    """FP16 prefill time / method prefill time for one S-token prompt (throughput ratio)."""
    d = Deployment(system=a6000_like(), model=llama2_7b())
    full = StepModel(d, make_method("full", d)).prefill_timing(S).total_s
    return float(full / StepModel(d, make_method(method, d)).prefill_timing(S).total_s)


def test_h2o_prefill_ratio_near_gao_et_al():
    """H2O eager prefill at 2K prompts is 0.5-0.65x FP16 (Gao et al. MLSys'25 measured 0.51-0.58x)."""
    r = prefill_ratio("h2o", 2048)
    assert 0.50 <= r <= 0.65, r  # kvsim: 0.58 (12 score passes); 0.73 at 1K, 0.42 at 4K
    assert prefill_ratio("h2o", 4096) < r < prefill_ratio("h2o", 1024)


def test_gear_and_kivi_prefill_ratios():
    """GEAR-4 prefill is 0.80-0.95x FP16 (Gao et al.: 0.80-0.90x); KIVI stays within 5% of FP16 (1.03-1.09x)."""
    assert 0.80 <= prefill_ratio("gear", 2048) <= 0.95
    assert prefill_ratio("kivi", 2048) >= 0.95


def test_kivi_decode_reads_96_of_512_bytes():
    """At 100K the KIVI-2 decode reads ~96/512 of full's KV bytes (residual negligible)."""
    d = Deployment(system=synthetic_system(), model=llama2_7b())
    k = make_method("kivi", d).decode_cost(np.array([100_000.0])).by_name("attn_decode").hbm_bytes
    f = make_method("full", d).decode_cost(np.array([100_000.0])).by_name("attn_decode").hbm_bytes
    assert k / f == pytest.approx(96 / 512, rel=0.01)


def test_duoattention_decode_speedup_tends_to_inverse_ratio():
    """Attention bytes: full / Duo -> 1/r (=4 for MHA r=0.25) as the context grows (paper §3.4)."""
    d = Deployment(system=synthetic_system(), model=llama2_7b())
    rl = Roofline(d.system)
    duo, full = make_method("duoattention", d), make_method("full", d)
    ratio = [float(rl(full.decode_cost(np.array([n]))).total_s / rl(duo.decode_cost(np.array([n]))).total_s)
             for n in (10_000.0, 1_000_000.0)]
    assert ratio[0] < ratio[1] and ratio[1] == pytest.approx(4.0, rel=0.05)


def test_streamingllm_decode_constant_after_window():
    """StreamingLLM decode time is the same at 2K, 100K and 1M tokens."""
    d = Deployment(system=synthetic_system(), model=llama2_7b())
    rl = Roofline(d.system)
    m = make_method("streamingllm", d)
    t = rl(m.decode_cost(np.array([[2048.0], [100_000.0], [1_000_000.0]]))).total_s
    assert t[0] == t[1] == t[2]


def test_window_pairs_hand_computed():
    """5,000 tokens with a 2,048-token window: 2048*2049/2 + (5000-2048)*2048 = 8,143,872 pairs."""
    assert window_pairs(5000.0, 0.0, 2048.0) == 8_143_872
    assert window_pairs(3000.0, 2000.0, 2048.0) == window_pairs(5000.0, 0.0, 2048.0) - window_pairs(2000.0, 0.0, 2048.0)
    assert window_pairs(100.0, 0.0, 1e9) == 100 * 101 / 2  # no cap: causal


def test_snapkv_vote_adds_up_over_chunks():
    """SnapKV's voting FLOPs of a prompt split in two chunks equal the one-chunk FLOPs (2 w d per key)."""
    d = Deployment(system=synthetic_system(), model=llama2_7b())
    m = make_method("snapkv", d)
    one = m.prefill_cost(np.array([4000.0]), np.array([0.0])).by_name("snapkv_vote").flops
    two = m.prefill_cost(np.array([1000.0, 3000.0]), np.array([0.0, 1000.0])).by_name("snapkv_vote").flops
    assert one == two
    # 32 layers * 4000 keys * 32 window * 32 heads * (2*128 + 5 + 7) FLOPs
    assert one == 32 * 4000 * 32 * 32 * (256 + 12)


def test_magicpig_prefill_overlaps_tables_with_gpu():
    """MagicPIG prefill parts share the 'prefill_tables' tag: the step takes the slowest device, not the sum."""
    d = Deployment(system=synthetic_system(), model=llama31_8b())
    m = make_method("magicpig", d)
    c = m.prefill_cost(np.array([32_768.0]), np.array([0.0]))
    assert {p.overlap for p in c.parts} == {"prefill_tables"}
    t = Roofline(d.system)(c)
    per_device: dict[str, float] = {}
    for p in t.parts:
        per_device[p.device] = per_device.get(p.device, 0.0) + float(p.seconds)
    assert float(t.total_s) == pytest.approx(max(per_device.values()))
    assert float(t.total_s) < sum(per_device.values())


def test_magicpig_cpu_work_is_per_replica_under_tp():
    """With TP=2 each GPU's attention halves but the shared host CPU does the whole replica's sampling."""
    rl = {}
    for tp in (1, 2):
        d = Deployment(system=synthetic_system(), model=llama31_8b(), tp=tp)
        rl[tp] = make_method("magicpig", d).decode_cost(np.array([65_536.0, 65_536.0]))
    assert rl[2].by_name("lsh_cpu_attn").dram_bytes == rl[1].by_name("lsh_cpu_attn").dram_bytes
    assert rl[2].by_name("attn_decode").hbm_bytes < rl[1].by_name("attn_decode").hbm_bytes
    assert rl[2].by_name("lsh_pcie").pcie_bytes == rl[1].by_name("lsh_pcie").pcie_bytes / 2


def test_magicpig_beats_full_decode_at_long_context_large_batch():
    """At 96K the MagicPIG step (CPU sampling) is faster than reading the whole KV on the GPU for B=8."""
    d = Deployment(system=synthetic_system(), model=llama31_8b())
    ctx = np.full(8, 98_304.0)
    t_pig = StepModel(d, make_method("magicpig", d)).time_s(decode_ctx=ctx)
    t_full = StepModel(d, make_method("full", d)).time_s(decode_ctx=ctx)
    assert t_pig < t_full


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - {"mla"}))
def test_step_model_prices_mixed_steps(name):
    """StepModel prices a step with decodes and prefill chunks for every method (finite, positive)."""
    d = Deployment(system=synthetic_system(), model=llama31_8b())
    s = StepModel(d, make_method(name, d))
    t = s.time_s(decode_ctx=np.array([100.0, 5000.0, 80_000.0]), prefill_new=np.array([2048.0]),
                 prefill_cached=np.array([4096.0]))
    assert np.isfinite(t) and t > 0


def test_prefix_hit_ratio_cuts_ttft():
    """Prefilling the split prompt (500 new after 500 cached) is faster than the whole prompt."""
    d = Deployment(system=synthetic_system(), model=llama2_7b())
    m = make_method("prefix", d)
    s = StepModel(d, m)
    new, cached = m.split_prompt(np.array([8192.0]))
    assert s.time_s(prefill_new=new, prefill_cached=cached) < s.prefill_timing(8192).total_s
