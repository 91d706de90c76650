"""Hybrid attention / state-space models (ModelSpec.ssm): parameters, KV, recurrent state, costs.

Numbers by hand from Jamba-v0.1's config.json (ai21labs/Jamba-v0.1) and the Mamba mixers of
Gu & Dao 2023 (mamba1) and Dao & Gu 2024 (mamba2); published figures from Lieber et al. 2024
(arXiv 2403.19887) Table 1.
"""

from __future__ import annotations

import pytest

from kvsim.costmodel.deployment import build_deployment
from kvsim.costmodel.transformer import linear_cost
from kvsim.errors import ConfigError
from kvsim.models import load_model
from kvsim.models.spec import ModelSpec, SSMSpec
from kvsim.pricing.engine_memory import engine_reserve, ssm_state_bytes

JAMBA_MAMBA_LAYER = (
    4096 * 16384            # in_proj h x 2 d_i              = 67,108,864
    + 8192 * 4 + 8192       # conv1d taps + bias             =     40,960
    + 8192 * (256 + 2 * 16)  # x_proj d_i x (r + 2N)          =  2,359,296
    + 256 * 8192 + 8192     # dt_proj + bias                 =  2,105,344
    + 8192 * 16 + 8192      # A_log, D                       =    139,264
    + 8192 * 4096           # out_proj d_i x h               = 33,554,432
)  # = 105,308,160


def test_jamba_mamba_layer_params_by_hand() -> None:
    assert JAMBA_MAMBA_LAYER == 105_308_160
    m = load_model("jamba-v0.1")
    assert m.ssm.params_per_layer(m.hidden_size) == JAMBA_MAMBA_LAYER


def test_jamba_totals_within_the_papers_rounding() -> None:
    """52B total / 12B active (paper, whole billions: +-0.5B). By hand:
    total = 2 x 65536 x 4096 (embed + head, 536,870,912) + 4 x 41,943,040 (attention: 2 x 4096^2 +
    2 x 4096 x 1024) + 28 x 105,308,160 + 16 x 176,160,768 (dense MLP 3 x 4096 x 14336)
    + 16 x (16 x 176,160,768 + 4096 x 16) (MoE) + 65 x 4096 (norms) = 51,570,315,264."""
    m = load_model("jamba-v0.1")
    assert m.total_params == 51_570_315_264
    assert abs(m.total_params - 52e9) <= 0.5e9
    # active: head 268,435,456 + attention 167,772,160 + Mamba 2,948,628,480 + dense MLP 2,818,572,288
    # + MoE 16 x (2 x 176,160,768 + 65,536) = 5,638,193,152 -> 11,841,601,536
    assert m.active_params_per_token == 11_841_601_536
    assert abs(m.active_params_per_token - 12e9) <= 0.5e9


def test_jamba_kv_cache_matches_table_1() -> None:
    """Only the 4 attention layers keep KV: 2 x 4 x 8 x 128 x 2 B = 16,384 B/token; at 256K tokens
    16,384 x 262,144 B = 4 GiB (paper Table 1: 'KV cache (256K context, 16bit) 4GB'; Mixtral 32GB)."""
    m = load_model("jamba-v0.1")
    assert m.attn_layers == 4 and m.ssm_layers == 28
    dep = build_deployment("h200", "jamba-v0.1", tp=2)
    one_gpu_bytes = dep.full_kv_bytes_per_token  # 8 KV heads split over 2 GPUs: 8,192 B each
    assert one_gpu_bytes == 8192
    assert one_gpu_bytes * 2 * 262_144 == 4 * 2**30
    mixtral = build_deployment("h200", "mixtral-8x7b", tp=2)
    assert mixtral.full_kv_bytes_per_token * 2 * 262_144 == 32 * 2**30


def test_jamba_recurrent_state_and_its_reserve() -> None:
    """State per Mamba layer 8192 x 16 + 3 x 8192 = 155,648 elements; x 28 = 4,358,144 per sequence;
    256 sequences in bf16 on one GPU: 256 x 4,358,144 x 2 B = 2,231,369,728 B (half per GPU at tp 2)."""
    m = load_model("jamba-v0.1")
    assert m.ssm.state_elements_per_layer(4096) == 155_648
    assert m.ssm_state_elements_per_seq == 4_358_144
    dep = build_deployment("h200", "jamba-v0.1", tp=2)
    assert ssm_state_bytes(dep, 256) == 2_231_369_728 / 2
    r = engine_reserve(dep, 8192, 256)
    assert r.ssm_state_bytes == 2_231_369_728 / 2
    assert r.total_bytes == pytest.approx(r.activation_bytes + r.non_torch_bytes + r.buffers_bytes + 2_231_369_728 / 2)
    # a dense model reserves no state
    assert engine_reserve(build_deployment("a100", "llama-3.1-8b"), 8192, 256).ssm_state_bytes == 0.0


def test_linear_cost_splits_attention_and_ssm_layers() -> None:
    """T = 10 tokens, 10 sampling sequences, tp 1 (H200, bf16): attention projections of the 4
    attention layers only, 2 x 4 x 41,943,040 x 10 = 3,355,443,200 FLOPs; the Mamba mixers'
    GEMMs 2 x 28 x 105,308,160 x 10 = 58,972,569,600 FLOPs; the scan reads and writes each
    sequence's state once: 2 x 28 x 155,648 x 2 B x 10 seqs = 174,325,760 B plus its input and
    output 28 x 10 x (8192 + 8192) x 2 B = 9,175,040 B."""
    dep = build_deployment("h200", "jamba-v0.1", tp=1)
    parts = {p.name: p for p in linear_cost(dep, 10.0, 10.0).parts}
    assert float(parts["attn_proj"].flops) == 2 * 4 * 41_943_040 * 10
    assert float(parts["ssm_proj"].flops) == 2 * 28 * JAMBA_MAMBA_LAYER * 10
    assert float(parts["ssm_scan"].hbm_bytes) == 2 * 28 * 155_648 * 2 * 10 + 28 * 10 * 16384 * 2
    # scan FLOPs: 6 x 8192 x 16 + 2 x 4 x 8192 = 851,968 per token per layer
    assert float(parts["ssm_scan"].flops) == 28 * 10 * 851_968
    # a dense model has no SSM parts
    names = {p.name for p in linear_cost(build_deployment("a100", "llama-3.1-8b"), 10.0, 10.0).parts}
    assert not names & {"ssm_proj", "ssm_scan"}


def test_decode_reads_kv_of_attention_layers_only() -> None:
    """Full-KV decode of one sequence at 100k tokens: Jamba reads 4 layers' KV, 4/32 of what an
    all-attention model of the same attention shape would read."""
    from kvsim.methods import make_method

    hybrid = build_deployment("h200", "jamba-v0.1", tp=2)
    dense_model = hybrid.model.model_copy(update={"ssm": None})
    from dataclasses import replace

    dense = replace(hybrid, model=dense_model)
    import numpy as np

    ctx = np.array([[100_000.0]])
    hb = sum(float(np.sum(p.hbm_bytes)) for p in make_method("full", hybrid).decode_cost(ctx).parts)
    db = sum(float(np.sum(p.hbm_bytes)) for p in make_method("full", dense).decode_cost(ctx).parts)
    assert hb == pytest.approx(db * 4 / 32, rel=1e-3)


def _mamba2(**kw) -> dict:
    base = {"kind": "mamba2", "num_layers": 3, "d_state": 128, "num_heads": 32, "head_dim": 64, "n_groups": 1}
    return {**base, **kw}


def test_mamba2_state_and_params_by_hand() -> None:
    """h 1024, expand 2 -> d_i 2048 = 32 heads x 64; N 128, 1 group, 4 taps: conv_dim 2048 + 256 = 2304;
    state 32 x 64 x 128 + 3 x 2304 = 262,144 + 6,912 = 269,056; params: in_proj 1024 x (2048 + 2304 + 32)
    = 1024 x 4384 = 4,489,216, conv 2304 x 4 + 2304 = 11,520, 3 x 32 = 96, norm 2048, out_proj 2048 x 1024
    = 2,097,152 -> 6,600,032."""
    s = SSMSpec(**_mamba2())
    assert s.state_elements_per_layer(1024) == 269_056
    assert s.params_per_layer(1024) == 6_600_032


def _model(**ssm) -> dict:
    return {"name": "tiny-hybrid", "architecture": "x", "num_layers": 4, "hidden_size": 1024, "num_heads": 8,
            "num_kv_heads": 8, "head_dim": 128, "intermediate_size": 4096, "vocab_size": 1000,
            "max_context_tokens": 4096, "source": "test", "ssm": ssm}


@pytest.mark.parametrize("ssm,match", [
    (_mamba2(num_layers=4), "at least one attention layer"),
    (_mamba2(num_heads=16), "must equal expand x hidden_size"),
    ({"kind": "mamba2", "num_layers": 2, "d_state": 16}, "needs num_heads and head_dim"),
    ({"kind": "mamba1", "num_layers": 2, "d_state": 16, "num_heads": 4}, "mamba2 fields"),
])
def test_bad_hybrid_specs_are_refused(ssm: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModelSpec(**_model(**ssm))


def test_tp_must_split_the_ssm_heads() -> None:
    m = ModelSpec(**_model(**_mamba2(num_heads=2, head_dim=1024)))
    with pytest.raises(ConfigError, match="does not divide the 2 SSM heads"):
        m.check_tensor_parallel(4)
    m.check_tensor_parallel(2)


def test_tp_must_split_or_replicate_the_mamba2_groups() -> None:
    """vLLM's MambaMixer2: tp divides n_groups, or n_groups == 1 (replicated); 2 groups over tp 4 is refused."""
    m = ModelSpec(**_model(**_mamba2(n_groups=2)))  # 32 heads: tp 4 splits the heads
    with pytest.raises(ConfigError, match="2 SSM groups"):
        m.check_tensor_parallel(4)
    m.check_tensor_parallel(2)
    ModelSpec(**_model(**_mamba2(n_groups=1))).check_tensor_parallel(4)
