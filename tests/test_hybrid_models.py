"""Hybrid (attention + Mamba-2) models: the spec's counts, the recurrent state per request, the Mamba
layers' step work, and KV methods applied to the attention layers only (Granite-4.0-H-Micro)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from synthetic import synthetic_system

from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.transformer import linear_cost
from kvsim.methods import make_method
from kvsim.models import ModelSpec, load_model

STATE = 36 * (64 * 64 * 128 + 3 * (4096 + 2 * 128)) * 2  # 36 x 537,344 elements x 2 B = 38,688,768 B


def granite(**kw):
    return Deployment(system=synthetic_system(), model=load_model("granite-4.0-h-micro"), **kw)


def test_granite_counts_by_hand():
    """4 attention layers x (2048*2048*2 + 2*2048*512) = 41,943,040; Mamba-2 layer: in_proj 2048 * (8192 + 256 + 64)
    = 17,432,576 + conv 4352*4 + 4352 + A,D,dt 192 + norm 4096 + out_proj 4096*2048 = 25,847,232 (x36);
    MLP 3*2048*8192 = 50,331,648 (x40); tied embeddings 100352*2048; norms 81*2048 -> 3,191,396,096 (IBM: "3B")."""
    m = load_model("granite-4.0-h-micro")
    assert m.attention_layers == 4 and m.ssm.params_per_layer(2048) == 25_847_232
    assert m.total_params == 4 * 10_485_760 + 36 * 25_847_232 + 40 * 50_331_648 + 100352 * 2048 + 81 * 2048
    assert m.total_params == 3_191_396_096
    assert m.state_elements_per_sequence * 2 == STATE == 38_688_768


def test_kv_methods_price_attention_layers_plus_constant_state():
    """full: n x 4 layers x 2 x 8 x 64 x 2 B = 8,192 B/token + the state; SnapKV keeps 1024 per attention layer;
    nothing for an empty request; TP=2 halves the state (Mamba heads split)."""
    d = granite()
    full = make_method("full", d)
    assert float(full.kv_bytes(10_000.0).gpu_bytes) == 10_000 * 8_192 + STATE
    assert float(np.asarray(full.kv_bytes(0.0).gpu_bytes)) == 0.0
    snap = make_method("snapkv", d)
    assert float(snap.kv_bytes(10_000.0).gpu_bytes) == 1024 * 8_192 + STATE
    arr = full.kv_bytes(np.array([0.0, 1.0, 100.0])).gpu_bytes
    assert list(arr) == [0.0, 8_192 + STATE, 819_200 + STATE]
    assert not type(full).linear_residency and not full.shares_prefix_blocks(16)
    assert granite(tp=2).state_bytes_per_seq == STATE / 2
    # decode attention runs in 4 layers: 32 heads x (64 + 64) x 2 FLOPs per attended token per layer
    c = full.decode_cost(np.array([9_999.0])).by_name("attn_decode")
    assert c.flops == 4 * 10_000 * 2 * 32 * 128


def test_mamba_layers_step_work_by_hand():
    """One decoding token: scan 36 x (6 x 4096 x 128 + 2 x 4 x 4352) = 114,499,584 FLOPs; state read + written
    36 x 2 x 537,344 x 2 B = 77,377,536 B plus conv/scan activations 36 x (4352 + 4096) x 2 B = 608,256 B;
    projections 2 x 36 x 25,847,232 FLOPs."""
    d = granite()
    c = linear_cost(d, 1.0, 1.0)
    scan = c.by_name("ssm_scan")
    assert scan.flops == pytest.approx(114_499_584)
    assert scan.hbm_bytes == pytest.approx(77_377_536 + 608_256)
    assert c.by_name("ssm_proj").flops == pytest.approx(2 * 36 * 25_847_232)
    assert c.by_name("attn_proj").flops == pytest.approx(2 * 4 * 10_485_760)
    # an attention-only model has no Mamba parts
    assert linear_cost(Deployment(system=synthetic_system(), model=load_model("llama-3.1-8b")), 1.0, 1.0).by_name("ssm_scan") is None


def test_spec_rejects_all_mamba_layers_and_tp_not_dividing_heads():
    m = load_model("granite-4.0-h-micro")
    data = m.model_dump()
    data["ssm"]["num_layers"] = 40
    with pytest.raises(ValueError):
        ModelSpec.model_validate(data)
    data["ssm"]["num_layers"] = 36
    data["ssm"]["num_heads"] = 6
    data["ssm"]["head_dim"] = 64
    from kvsim.errors import ConfigError
    with pytest.raises(ConfigError):
        ModelSpec.model_validate(data).check_tensor_parallel(4)


def test_cli_simulate_hybrid_model(tmp_path):
    """simulate runs a hybrid model under a compressed method; its memory counts the recurrent state."""
    r = subprocess.run([sys.executable, "-m", "kvsim", "simulate", "--hw", "a100", "--model", "granite-4.0-h-micro",
                        "--method", "snapkv+kivi", "--trace", "synthetic-fixed:n=6,prompt=3000,output=40", "--json"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "granite-4.0-h-micro" and out["method"] == "snapkv+kivi"
