"""Dtype names: any case and vLLM's spellings mean kvsim's dtypes, everywhere a deployment is built."""

import pytest

from kvsim.costmodel.deployment import build_deployment
from kvsim.costmodel.dtypes import canonical_dtype
from kvsim.errors import KvsimError


@pytest.mark.parametrize("written, meant", [("BF16", "bf16"), ("bfloat16", "bf16"), ("Float16", "fp16"), ("half", "fp16"),
                                            ("fp8_e4m3", "fp8"), ("FP8_E5M2", "fp8"), (" int8 ", "int8"), ("AUTO", "auto")])
def test_spellings(written, meant):
    assert canonical_dtype(written) == meant


def test_deployment_takes_them_and_still_refuses_unknown_names():
    """Llama-3.1-8B KV per token: 32 layers x 2 x 8 KV heads x 128 x 2 B = 131,072 B (bf16), 65,536 (fp8)."""
    a = build_deployment("a100", "llama-3.1-8b", weight_dtype="BFLOAT16", kv_dtype="fp8_e4m3")
    assert (a.weight_dtype, a.kv_dtype) == ("bf16", "fp8")
    m = a.model
    assert m.num_layers * 2 * m.num_kv_heads * m.head_dim * a.kvb == 65_536  # 1 byte per fp8 element
    with pytest.raises(KvsimError, match="unknown dtype 'bfloat17'"):
        build_deployment("a100", "llama-3.1-8b", kv_dtype="bfloat17")
