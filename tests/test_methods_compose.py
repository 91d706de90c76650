"""`+` composition of a storage method (KIVI) with a selection method: hand-computed residency and
decode/prefill work, the refusal rules, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from synthetic import llama2_7b, synthetic_system

from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError, SpecError
from kvsim.methods import make_method

# Llama-2-7B (MHA): E = 2 * 32 heads * 128 = 8192 KV elements per token per layer, 16-bit KV 16,384 B.
# KIVI 2-bit, G = 32: beta = 2/8 + 2 * 2 B / 32 = 0.375 B per element; residual R = 128 (R/2 keys, R values).
E, BETA, L = 8192, 0.375, 32
RESID = (E / 2) * (2 - BETA) * (64 + 128)  # 4096 * 1.625 * 192 = 1,277,952 B per layer once >= 128 tokens kept


def dep():
    return Deployment(system=synthetic_system(), model=llama2_7b())


def gpu(m, n, **kw):
    return float(np.asarray(m.kv_bytes(float(n), **kw).gpu_bytes))


def test_snapkv_kivi_stores_the_kept_tokens_as_kivi_would():
    """snapkv+kivi at P = 10,000 keeps C = 1024 tokens per layer stored by KIVI:
    32 * (1024 * 8192 * 0.375 + 1,277,952) = 32 * 4,423,680 = 141,557,760 B, exactly KIVI's bytes for 1024 tokens
    (= 32 * 4096 * ((1024-64)*0.375 + 64*2 + (1024-128)*0.375 + 128*2) = 32 * 4096 * 1080)."""
    d = dep()
    m = make_method("snapkv+kivi", d)
    assert gpu(m, 10_000) == pytest.approx(32 * (1024 * E * BETA + RESID))
    assert gpu(m, 10_000) == pytest.approx(gpu(make_method("kivi", d), 1024))
    assert gpu(m, 10_000) == pytest.approx(141_557_760)
    # generated tokens are appended (SnapKV) and stored in KIVI's format
    assert gpu(m, 10_100, n_prompt=10_000) == pytest.approx(32 * (1124 * E * BETA + RESID))
    assert type(m).prompt_aware and not type(m).linear_residency and not m.shares_prefix_blocks(16)
    assert m.label() == "snapkv+kivi" and make_method("kivi+snapkv", d).name == "kivi+snapkv"


def test_kivi_quest_reads_metadata_and_quantized_pages():
    """kivi+quest at 32,768 tokens: Quest's full KV in KIVI codes + 16-bit page metadata
    (30 sparse layers * 2048 pages * 2 * 4096 * 2 B) + residual; a decode step moves
    X = 8192 * (2 * 32,769 + 30 * 2049) = 1,040,449,536 quantized elements (2 dense layers read all,
    30 read the 2048-token budget, + the new token), dequantized at 2 FLOP each."""
    d = dep()
    m = make_method("kivi+quest", d)
    meta = 30 * 2048 * (2 * 4096 * 2)
    assert gpu(m, 32_768) == pytest.approx(32 * 32_768 * E * BETA + meta + 32 * RESID)
    c = m.decode_cost(np.array([32_767.0]))
    X = 8192 * (2 * 32_769 + 30 * 2_049)
    deq = c.by_name("kivi_dequant")
    assert deq.flops == pytest.approx(2 * X)
    assert deq.hbm_bytes == pytest.approx(32 * RESID)
    q = make_method("quest", d).decode_cost(np.array([32_767.0]))
    # the attention reads the same elements as Quest's, at 0.375 instead of 2 B each
    assert c.by_name("attn_decode").hbm_bytes == pytest.approx(q.by_name("attn_decode").hbm_bytes - X * (2 - BETA))
    assert c.by_name("quest_estimate").hbm_bytes == q.by_name("quest_estimate").hbm_bytes  # metadata stays 16-bit
    assert c.by_name("kivi_quant").flops == pytest.approx(32 * 8192 * 5)  # one token of K and V per step


def test_streamingllm_kivi_constant_memory_and_prefill_quantize_pass():
    """streamingllm+kivi keeps 4 + 2044 tokens in KIVI's format at any length:
    32 * 4096 * ((2048-64)*0.375 + 128 + (2048-128)*0.375 + 256) = 32 * 4096 * 1848 = 242,221,056 B;
    prefill of 1000 tokens adds a quantize pass of 32 * 1000 * 8192 * 5 FLOPs reading 32 * 1000 * 8192 * 2 B."""
    d = dep()
    m = make_method("streamingllm+kivi", d)
    assert gpu(m, 100_000) == pytest.approx(32 * 4096 * 1848) == gpu(m, 50_000)
    p = m.prefill_cost(np.array([1000.0]), np.array([0.0]))
    qp = p.by_name("kivi_quant")
    assert qp.flops == pytest.approx(32 * 1000 * 8192 * 5) and qp.hbm_bytes == pytest.approx(32 * 1000 * 8192 * 2)
    s = make_method("streamingllm", d).prefill_cost(np.array([1000.0]), np.array([0.0]))
    assert p.by_name("attn_prefill").flops == s.by_name("attn_prefill").flops  # exact attention over the prompt


@pytest.mark.parametrize("spec, words", [
    ("snapkv+h2o", "both are selection methods"),
    ("kivi+kivi:bits=4", "both are storage methods"),
    ("kivi+magicpig", "magicpig does not compose"),
    ("full+quest", "full does not compose"),
    ("kivi+quest+snapkv", "exactly two methods"),
])
def test_meaningless_compositions_are_refused_in_one_line(spec, words):
    """Two evictors, two storage formats, a complete method or three parts: a one-line ConfigError with the reason."""
    with pytest.raises(ConfigError) as e:
        make_method(spec, dep())
    assert words in str(e.value) and "\n" not in str(e.value)


def test_empty_part_and_params_dict_are_spec_errors():
    with pytest.raises(SpecError):
        make_method("kivi+", dep())
    with pytest.raises(SpecError):
        make_method("kivi+quest", dep(), {"bits": 4})


def test_split_methods_keeps_inline_params_of_both_parts():
    """`kivi:bits=4,group=64+quest:page_size=32,dense_layers=0` is one composed spec, not three methods."""
    from kvsim.commands.common import split_methods

    got = split_methods(["full,kivi:bits=4,group=64+quest:page_size=32,dense_layers=0,snapkv+kivi"])
    assert got == ["full", "kivi:bits=4,group=64+quest:page_size=32,dense_layers=0", "snapkv+kivi"]
    m = make_method(got[1], dep())
    assert m.S.params.bits == 4 and m.S.params.group == 64 and m.T.params.page_size == 32 and m.T.params.dense_layers == 0


def kvsim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_estimate_and_simulate_accept_compositions(tmp_path):
    """--method kivi+quest works in estimate and simulate; snapkv+h2o is one `error:` line and exit 1."""
    r = kvsim("estimate", "--hw", "a100", "--model", "llama-3.1-8b", "--method", "kivi,kivi+quest", "--context", "32768",
              "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["method"] for x in rows] == ["kivi", "kivi+quest"]
    # Llama-3.1-8B: 8 KV heads, E = 2048; Quest adds 16-bit min/max keys per 16-token page in 30 layers:
    # 30 * 2 * 1024 * 2 / 16 = 7,680 B per token on top of KIVI's bytes
    assert rows[1]["kv_bytes_per_token_gpu"] - rows[0]["kv_bytes_per_token_gpu"] == pytest.approx(7_680, abs=1)
    s = kvsim("simulate", "--hw", "a100", "--model", "llama-3.1-8b", "--method", "kivi+quest",
              "--trace", "synthetic-fixed:n=8,prompt=2000,output=50", "--json", cwd=tmp_path)
    assert s.returncode == 0, s.stderr
    assert json.loads(s.stdout)["method"] == "kivi+quest"
    e = kvsim("estimate", "--hw", "a100", "--model", "llama-3.1-8b", "--method", "snapkv+h2o", cwd=tmp_path)
    assert e.returncode == 1 and e.stderr.startswith("error:") and e.stderr.strip().count("\n") == 0
