"""Engine memory as vLLM v1 (0.19) sizes its KV cache (kvsim/pricing/engine_memory.py)."""

import pytest

from kvsim.costmodel.deployment import build_deployment
from kvsim.methods import make_method
from kvsim.pricing import engine_memory as em
from kvsim.pricing.memory import memory_budget
from kvsim.sim.config import SimConfig
from kvsim.sim.replica import simulate
from kvsim.traces import load_trace

GIB = 2**30


def _blocks(hw: str, util: float, tokens: int, seqs: int) -> int:
    dep = build_deployment(hw, "llama-3.1-8b", gpu_memory_utilization=util)
    b = memory_budget(dep, make_method("full", dep), max_tokens_per_step=tokens, max_seqs=seqs)
    return int(b.kv_gpu_bytes // (16 * dep.full_kv_bytes_per_token))


def test_rtx4090_llama31_8b_kv_blocks_hand_computed():
    """RTX 4090, Llama-3.1-8B bf16, max_num_seqs 256, max_num_batched_tokens 2048, util 0.9: 2,830 blocks.

    requested  = ceil(25,393,692,672 [torch total, rtx4090.yaml] * 0.9)             = 22,854,323,405
    weights    = 8,030,261,248 params * 2 B                                          = 16,060,522,496
    rope cache = 131,072 positions * 128 rotary dims * 2 B (RotaryEmbedding)         =     33,554,432
    sampler    = (2048 + 2*256) * 4096 * 2 [hidden, last hidden, rand_like]          =     20,971,520
               + 256 * 128,256 * (2 + 3*4) [bf16 logits, fp32 logits, probs, q]      =    459,669,504
               + 128 * 128,256 * 4 [Triton top-k/top-p buffer, 128 SMs]             =     65,667,072
               = 546,308,096 > forward 2048 * (2*4096 + 4096 + 3*14336) * 2          =    226,492,416
    activation = 546,308,096 + 8,519,680 [cuBLAS workspace, CC 8.9]                  =    554,827,776
    non-torch  = 0.25 GiB [vLLM 0.19 H100 TP1 log, an estimate]                      =    268,435,456
    KV         = 22,854,323,405 - 16,060,522,496 - 33,554,432 - 554,827,776 - 268,435,456 = 5,936,983,245
    block      = 16 tokens * 32 layers * 2 * 8 heads * 128 * 2 B = 2,097,152 -> 2,830 blocks (45,280 tokens)
    vLLM 0.19 allocated 41,408 tokens (2,588 blocks) on that run: kvsim is +9.4% (was +24.9%, 51,712).
    """
    assert _blocks("rtx4090", 0.9, 2048, 256) == 2830


@pytest.mark.xfail(strict=True, reason="held-out vLLM 0.19 RTX 4090 run: 41,408 tokens; kvsim 45,280 (+9.4%); "
                   "the non-torch memory of that run (an estimate here, 0.25 GiB from H100) is not known")
def test_rtx4090_within_5_percent_of_vllm():
    """The issue's target: kvsim's KV blocks within 5% of the 2,588 vLLM allocated."""
    assert abs(_blocks("rtx4090", 0.9, 2048, 256) / 2588 - 1) <= 0.05


def test_h100_llama31_8b_matches_vllm_019_log():
    """H100, Llama-3.1-8B, util 0.95, vLLM's H100 serve defaults 8192 tokens / 1024 seqs: 29,750 blocks,
    vLLM 0.19 logged 476,016 tokens = 29,751 blocks (llm-d-planner accuracy log; the 0.25 GiB
    non-torch term was read from this same log, so only weights, activations and total are checked).

    requested  = ceil(85,029,158,912 * 0.95)                                      = 80,777,700,967
    sampler    = (8192 + 2*1024) * 4096 * 2 + 1024 * 128,256 * 14 + 132 * 128,256 * 4
               = 83,886,080 + 1,838,678,016 + 67,719,168                          =  1,990,283,264
    activation = 1,990,283,264 + 33,554,432 [cuBLAS, CC 9.0]                       =  2,023,837,696 (1.885 GiB; log 1.89)
    KV         = 80,777,700,967 - 16,060,522,496 - 33,554,432 - 2,023,837,696 - 268,435,456 = 62,391,350,887
               // 2,097,152 = 29,750 blocks
    """
    assert _blocks("h100", 0.95, 8192, 1024) == 29750


def test_simulator_pool_uses_the_engine_budget():
    """`simulate` sizes its GPU pool from the same budget: 2,830 blocks for the RTX 4090 case above."""
    dep = build_deployment("rtx4090", "llama-3.1-8b")
    s = simulate(dep, make_method("full", dep), load_trace("synthetic-fixed:n=2,prompt=64,output=2"),
                 SimConfig(max_num_seqs=256, max_num_batched_tokens=2048)).summary
    assert s["num_gpu_blocks"] == 2830
    assert s["kv_gpu_capacity_tokens"] == 2830 * 16


def test_sampler_dominates_small_steps_and_forward_large_ones():
    """Profiling peak = max(forward, sampler): at 16,384 tokens and 256 rows the forward wins.

    forward(16384) = 16384 * 55,296 * 2 = 1,811,939,328 B; sampler = (16384 + 512) * 4096 * 2
    + 459,669,504 + 65,667,072 = 663,748,608 B."""
    dep = build_deployment("rtx4090", "llama-3.1-8b")
    assert em.forward_peak_bytes(dep, 16384) == 1_811_939_328
    assert em.sampler_peak_bytes(dep, 16384, 256) == 663_748_608
    r = em.engine_reserve(dep, 16384, 256)
    assert r.activation_bytes == 1_811_939_328 + 8_519_680


def test_triton_topk_buffer_rows():
    """Rows = min(next_power_of_2(min(SMs, batch)), SMs): 132 SMs x 1024 -> 132, 128 x 256 -> 128, 132 x 5 -> 8."""
    assert em.triton_topk_rows(132, 1024) == 132
    assert em.triton_topk_rows(128, 256) == 128
    assert em.triton_topk_rows(132, 5) == 8
    assert em.triton_topk_rows(132, 1) == 1


def test_non_torch_by_tp_uses_largest_measured_tp_below():
    """TP 1 -> 0.25 GiB, 2 and 3 -> 2.07 GiB, 4 and 8 -> 2.13 GiB (vLLM 0.19 H100 logs)."""
    assert em.non_torch_increase_bytes(1) == 0.25 * GIB
    assert em.non_torch_increase_bytes(3) == 2.07 * GIB
    assert em.non_torch_increase_bytes(8) == 2.13 * GIB


def test_cublas_workspace_by_compute_capability():
    """PyTorch default: 32 MiB on CC 9.x (H100), 8,519,680 B (4 MiB * 2 + 16 KiB * 8) on CC 8.x."""
    assert em.cublas_workspace_bytes(build_deployment("h100", "llama-3.1-8b")) == 33_554_432
    assert em.cublas_workspace_bytes(build_deployment("a100", "llama-3.1-8b")) == 8_519_680


def test_rope_cache_absent_for_opt_and_uses_mla_rope_dim():
    """OPT has learned positions (no cache); DeepSeek-V2-Lite: 163,840 positions * 64 rope dims * 2 B."""
    assert em.rope_cache_bytes(build_deployment("a100", "opt-6.7b")) == 0
    dep = build_deployment("a100", "deepseek-v2-lite")
    assert em.rope_cache_bytes(dep) == dep.model.max_context_tokens * dep.model.mla.qk_rope_head_dim * 2


def test_requested_memory_uses_torch_total_or_falls_back():
    """Requested = ceil(torch total * util); without a torch total (L4) nvidia-smi's bytes are used."""
    assert build_deployment("rtx4090", "llama-3.1-8b").gpu_memory_budget_bytes == 22_854_323_405
    d = build_deployment("a100-40g", "llama-3.1-8b")  # torch: 40,536 MiB = 42,505,076,736 B
    assert d.gpu_memory_budget_bytes == 38_254_569_063  # ceil(42,505,076,736 * 0.9)
    d = build_deployment("l4", "llama-3.1-8b")
    assert d.gpu_memory_budget_bytes == 21_737_609_626  # ceil(23,034 MiB = 24,152,899,584 B x 0.9)


def test_fused_moe_workspace_from_vllm_shapes():
    """vLLM TritonExperts.workspace_shapes, kept by the workspace manager through the sampler phase.

    Mixtral-8x7B, TP 2, 8192 tokens: N = 2 x 14336 / 2 = 14336, act out 7168, K = 4096, top-2:
    8192 x 2 x (max(7168, 4096) + max(14336, 4096)) x 2 B = 8192 x 2 x 21504 x 2 = 704,643,072 B.
    20,000 tokens (chunks of 16,384): 16384 x 2 x 21504 x 2 + 20000 x 4096 x 2 (separate output)
    = 1,409,286,144 + 163,840,000 = 1,573,126,144 B. A dense model has none."""
    mix = build_deployment("h100", "mixtral-8x7b", tp=2)
    assert em.moe_workspace_bytes(mix, 8192) == 704_643_072
    assert em.moe_workspace_bytes(mix, 20000) == 1_573_126_144
    assert em.moe_workspace_bytes(build_deployment("h100", "llama-3.1-8b"), 8192) == 0.0
    # the reserve: the workspace on top of the larger of forward and sampler peaks
    r = em.engine_reserve(mix, 8192, 1024)
    peak = max(em.forward_peak_bytes(mix, 8192), em.sampler_peak_bytes(mix, 8192, 1024))
    assert r.activation_bytes == peak + 704_643_072 + em.cublas_workspace_bytes(mix)


def test_moe_forward_peak_counts_dense_and_shared_mlps_only():
    """DeepSeek-V2-Lite (one dense layer of 10944, two shared experts of 1408; MLA v_head_dim 128,
    16 heads), TP 1, 8192 tokens: 8192 x (2 x 2048 + 16 x 128 + 3 x max(2 x 1408, 10944)) x 2 B
    = 8192 x (4096 + 2048 + 32832) x 2 = 8192 x 38976 x 2 = 638,582,784 B; its routed experts are in
    the workspace."""
    dep = build_deployment("h100", "deepseek-v2-lite")
    m = dep.model
    assert (m.moe.first_dense_layers, m.moe.dense_intermediate_size, m.moe.num_shared_experts,
            m.moe.shared_intermediate_size, m.num_heads, m.mla.v_head_dim) == (1, 10944, 2, 1408, 16, 128)
    assert em.forward_peak_bytes(dep, 8192) == 638_582_784
