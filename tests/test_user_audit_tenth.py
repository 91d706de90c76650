"""What a user audit of simulate / estimate found (tenth session): options that were ignored,
notes that gave wrong advice, a degenerate method setting accepted, errors naming the wrong option."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kvsim.cli import app


class _Run:
    """A CliRunner result; ``output`` holds the printed text and the message of a KvsimError (the
    entry point prints it as one ``error:`` line)."""

    def __init__(self, r) -> None:
        self.exit_code, self.stdout = r.exit_code, r.stdout
        self.output = r.output + (f"error: {r.exception}" if r.exception is not None else "")


def run(*args: str) -> _Run:
    return _Run(CliRunner().invoke(app, list(args)))


def test_h2o_must_keep_some_and_at_most_all_of_the_prompt():
    """heavy_ratio = recent_ratio = 0 kept 0 KV bytes per token (batch not limited by memory);
    1 + 1 kept 200 % of the prompt. Both are errors; 0.5 + 0.5 (all of it) is allowed."""
    for params, kept in (("heavy_ratio=0,recent_ratio=0", "got 0"), ("heavy_ratio=1,recent_ratio=1", "got 2")):
        r = run("estimate", "--hw", "h100", "--method", f"h2o:{params}", "--context", "32768")
        assert r.exit_code != 0 and "heavy_ratio + recent_ratio must be above 0 and at most 1" in r.output
        assert kept in r.output
    assert run("estimate", "--hw", "h100", "--method", "h2o:heavy_ratio=0.5,recent_ratio=0.5").exit_code == 0


def test_simulate_clips_prompts_as_its_rejection_note_advises():
    """The max_context rejection note advised --max-prompt-tokens, which simulate did not have."""
    spec = "synthetic-poisson:n=3,rate=0.02,prompt=8192,output=256"
    r = run("simulate", "--hw", "h100", "--model", "llama-3-70b", "--tp", "4", "--trace", spec, "--json")
    # every request rejected: one error line naming why (fourteenth session; it printed dashes and exited 0)
    assert r.exit_code == 1 and r.stdout == ""
    assert "3 of 3 requests rejected (all of them): max_context" in r.output and "--max-prompt-tokens" in r.output
    r = run("simulate", "--hw", "h100", "--model", "llama-3-70b", "--tp", "4", "--trace", spec, "--json",
            "--max-prompt-tokens", "7000")
    s = json.loads(r.stdout)[0] if r.stdout.lstrip().startswith("[") else json.loads(r.stdout)
    assert r.exit_code == 0 and s["requests_completed"] == 3  # 7,000 + 256 <= 8,192


def test_a_whole_prompt_method_rejection_says_the_prompt_is_held_uncompressed():
    """SnapKV compresses: 'a KV-compressing method would admit it' was wrong advice; the peak is its
    whole prompt's KV, held until the prefill completes (and estimate says so beside its batch)."""
    spec = "synthetic-poisson:n=2,rate=0.001,prompt=500000,output=32"
    r = run("simulate", "--hw", "h100", "--model", "megabeam-mistral-7b-512k", "--method", "snapkv", "--trace", spec)
    assert "holds uncompressed on the GPU until its prefill completes" in r.output
    assert "a KV-compressing method" not in r.output
    r = run("estimate", "--hw", "h100", "--model", "megabeam-mistral-7b-512k", "--method", "snapkv",
            "--context", "500032")
    # 500,032 tokens x 131,072 B (32 layers x 8 KV heads x 128 x 2 x 2 B) = 65.54 GB > the pool
    assert r.exit_code == 0 and "65.54 GB per GPU" in r.output and "rejects it" in r.output


def test_magicpig_prefills_layer_by_layer_so_a_500k_prompt_runs():
    """MagicPIG's reference code stages one layer's K/V at a time (models/llama.py): the whole-prompt
    peak no longer applies (simulate rejected both requests, estimate said batch 14); its staging
    buffer is a fixed allocation: 524,288 tokens x 8 KV heads x 128 x 2 (K, V) x 2 B = 2,147,483,648 B."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method

    spec = "synthetic-poisson:n=2,rate=0.001,prompt=500000,output=32"
    r = run("simulate", "--hw", "h100", "--model", "megabeam-mistral-7b-512k", "--method", "magicpig", "--trace", spec,
            "--json")
    s = json.loads(r.stdout)
    s = s[0] if isinstance(s, list) else s
    assert r.exit_code == 0 and s["requests_completed"] == 2
    m = make_method("magicpig", build_deployment("h100", "megabeam-mistral-7b-512k"))
    assert m.prefill_buffer_bytes() == 524_288 * 8 * 128 * 2 * 2
    assert m.fixed_gpu_bytes() == m.prefill_buffer_bytes() + 128 * 10 * 150 * 2  # + the (10,150) projector


def test_disaggregated_instance_errors_name_their_own_option():
    r = run("simulate", "--disagg", "1:1", "--prefill-tp", "3", "-n", "5")
    assert r.exit_code != 0 and "prefill instances: --prefill-tp 3 does not divide" in r.output
    r = run("simulate", "--disagg", "1:1", "--decode-tp", "16", "-n", "5")
    assert r.exit_code != 0 and "decode instances: --decode-tp 16 must be between 1 and the 8 GPUs" in r.output


def test_a_budget_below_the_prompts_without_chunked_prefill_is_said():
    spec = "synthetic-poisson:n=20,rate=20,prompt=8192,output=4"
    r = run("simulate", "--hw", "h100", "--trace", spec, "--no-chunked-prefill", "--max-num-batched-tokens", "100")
    assert ("20 prompts longer than --max-num-batched-tokens 100 (longest 8,192) were each prefilled alone"
            in r.output.replace("\n", " "))


def test_prefix_hit_ratio_unused_with_prefix_ids_is_said():
    r = run("simulate", "--trace", "mooncake-conversation", "-n", "50", "--method", "prefix:hit_ratio=0.9")
    assert "its analytic hit ratio is not used" in r.output


def test_the_spec_seed_winning_over_seed_is_said():
    r = run("simulate", "--trace", "synthetic-poisson:n=20,rate=1,seed=3", "--seed", "7")
    assert "the trace spec's seed=3 draws the trace; --seed 7 seeds only the simulator" in r.output
    assert "seed=3 draws" not in run("simulate", "--trace", "synthetic-poisson:n=20,rate=1,seed=3").output


def test_a_method_kv_dtype_over_the_flag_is_said():
    r = run("estimate", "--hw", "h100", "--method", "full:kv_dtype=fp8", "--kv-dtype", "int8")
    assert "full(kv_dtype=fp8): its kv_dtype=fp8 is used, not --kv-dtype int8" in r.output


@pytest.mark.parametrize("spec", ["cachegen:context_tokens=100000000", "cacheblend:chunks=300,chunk_tokens=512"])
def test_reuse_requests_beyond_the_model_context_need_allow_long_context(spec):
    """(cachegen 100M tokens printed TTFTs of up to 4,242 s; 300 x 512 + 64 = 153,664 > 131,072)"""
    r = run("estimate", "--hw", "h100", "--reuse", spec)
    assert r.exit_code != 0 and "exceeds llama-3.1-8b's max context of 131,072 tokens" in r.output
