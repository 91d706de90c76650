"""The Qwen3 dense family (0.6B-32B) used by the Kinetics example: sizes and KV by hand."""

import pytest

from kvsim.models import load_model


@pytest.mark.parametrize("name,kv_bytes,params,card", [
    # 2 (K,V) x 28 layers x 8 kv heads x 128 x 2 B = 114,688; 28 x (1024x2048 + 2x1024x1024 + 2048x1024
    # + 3x1024x3072) + 151936 x 1024 (tied) + 57 x 1024 = 596,042,752 (card: 0.6B)
    ("qwen3-0.6b", 114_688, 596_042_752, 0.6e9),
    # 28 x (2048x2048 + 2x2048x1024 + 2048x2048 + 3x2048x6144) + 151936 x 2048 + 57 x 2048 = 1,720,567,808 (1.7B)
    ("qwen3-1.7b", 114_688, 1_720_567_808, 1.7e9),
    # 2 x 36 x 8 x 128 x 2 = 147,456; 36 x (2560x4096 + 2x2560x1024 + 4096x2560 + 3x2560x9728)
    # + 151936 x 2560 + 73 x 2560 = 4,022,458,880 (4.0B)
    ("qwen3-4b", 147_456, 4_022_458_880, 4.0e9),
    # 2 x 40 x 8 x 128 x 2 = 163,840; 40 x (5120x5120 + 2x5120x1024 + 5120x5120 + 3x5120x17408)
    # + 2 x 151936 x 5120 (untied) + 81 x 5120 = 14,768,296,960 (14.8B)
    ("qwen3-14b", 163_840, 14_768_296_960, 14.8e9),
    # 2 x 64 x 8 x 128 x 2 = 262,144; 64 x (5120x8192 + 2x5120x1024 + 8192x5120 + 3x5120x25600)
    # + 2 x 151936 x 5120 + 129 x 5120 = 32,762,106,880 (32.8B)
    ("qwen3-32b", 262_144, 32_762_106_880, 32.8e9),
])
def test_qwen3_sizes(name, kv_bytes, params, card):
    """KV bytes per token and the weight count match the hand count, and the card within 1.5%."""
    m = load_model(name)
    assert m.kv_elements_per_token_per_layer * m.num_layers * 2 == kv_bytes
    assert m.total_params == params
    assert m.total_params == pytest.approx(card, rel=0.015)  # 1.7B: 1.72 / 1.7 = +1.2%
