"""What an audit of the methods against their papers found (eleventh session): silent wrong numbers at
option edges and on model kinds a method was not written for."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kvsim.cli import app
from kvsim.costmodel.deployment import build_deployment
from kvsim.errors import ConfigError, KvsimError
from kvsim.methods import make_method


def run(*args: str):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output + (f"error: {r.exception}" if r.exception is not None else "")


@pytest.mark.parametrize("dtype", ["int4", "int2", "fp4", "nvfp4"])
def test_sub_byte_kv_dtype_is_refused_and_points_to_kivi(dtype):
    """--kv-dtype int2 priced 8,192 B/token for Llama-3.1-8B (2 x 32 x 8 x 128 x 0.25 B), no scales,
    3x less than KIVI's 2 bits with its scales and residual (24,888 at 32K): a plain sub-byte cache
    is not a format engines store. Refused, with the method that prices it."""
    code, out = run("estimate", "--hw", "a100", "--kv-dtype", dtype)
    assert code != 0 and "an uncompressed KV cache is stored as fp32, bf16, fp16, fp8, int8" in out
    assert "--method kivi:bits=" in out
    with pytest.raises(ConfigError):
        build_deployment("a100", "llama-3.1-8b", kv_dtype=dtype)
    # the 8-bit and 16-bit caches stay: fp8 halves bf16's 131,072 B/token
    dep = build_deployment("a100", "llama-3.1-8b", kv_dtype="fp8")
    assert dep.full_kv_bytes_per_token == 65_536


@pytest.mark.parametrize("spec, needle", [
    ("kivi:group=48,residual=96", "group=48 must divide the 128 channels"),
    ("kivi:group=256,residual=256", "group=256 must divide the 128 channels"),
    ("kivi:residual=0", "must be at least one group (32)"),
    ("infllm:max_cached_block=4", "max_cached_block (4) must be at least topk (16)"),
    ("infllm:topk=64,max_cached_block=32", "max_cached_block (32) must be at least topk (64)"),
])
def test_method_settings_that_cannot_run_are_refused(spec, needle):
    """KIVI's V groups are G channels of one head (d = 128); K groups G tokens, so at least one
    group waits in 16 bits. InfLLM attends its retrieved blocks on the GPU: its block cache holds
    at least topk of them (with 0 cached blocks it priced 18,680 B/token and half the PCIe)."""
    dep = build_deployment("a100", "llama-2-7b")
    with pytest.raises(KvsimError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        make_method(spec, dep)
    make_method("kivi:group=64,residual=64", dep)  # 64 divides 128
    make_method("infllm:topk=16,max_cached_block=16", dep)


def test_methods_extrapolated_to_mla_say_so():
    """On DeepSeek-V2-Lite (MLA) KIVI, H2O and a composition price the latent with no note; now each
    answer says it is extrapolated (in --json too). Methods defined on MLA (full, mla) and GQA models
    get no such note."""
    r = CliRunner().invoke(app, ["estimate", "--hw", "a100", "--model", "deepseek-v2-lite", "--method",
                                 "kivi,h2o,full,snapkv+kivi", "--context", "8192", "--batch", "4", "--json"])
    assert r.exit_code == 0, r.output
    notes = {a["method"]: " ".join(a["notes"]) for a in json.loads(r.stdout)}
    for name in ("kivi", "h2o", "snapkv+kivi"):
        assert "extrapolated to deepseek-v2-lite's MLA latent" in notes[name], (name, notes)
    assert "per-head eviction is priced as eviction of whole latent rows" in notes["h2o"]
    assert "extrapolated" not in notes["full"]
    dep = build_deployment("a100", "llama-3.1-8b")
    assert make_method("kivi", dep).mla_note() is None


def test_topk_mla_reads_more_than_full_not_less():
    """TopK on MLA read half of the latent for its scores (0.63 of full attention's bytes): the whole
    latent is the key. Now it reads at least what full attention reads (hand count in test_methods_values)."""
    dep = build_deployment("a100", "deepseek-v2-lite")
    ctx = np.array([32_767.0])
    top = make_method("topk", dep).decode_cost(ctx).by_name("attn_decode").hbm_bytes
    full = make_method("full", dep).decode_cost(ctx).by_name("attn_decode").hbm_bytes
    assert top > full
