"""Cost per test-time-scaling task (kvsim.pricing.tts; Kinetics, arXiv 2506.05333 §3 Eq. 4)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from kvsim.costmodel.deployment import build_deployment
from kvsim.errors import ConfigError
from kvsim.methods import make_method
from kvsim.pricing.tts import (
    TTSTask, affordable_gen_tokens, eflops, intensity_flops_per_byte, kinetics_eq4, linear_per_token, sum_steps,
    task_cost,
)
from kvsim.pricing.tts_spec import parse_task


@pytest.fixture(scope="module")
def dep():
    return build_deployment("b200", "qwen3-8b", weight_dtype="fp8")


def test_eq4_terms_by_hand():
    """Kinetics Eq. 4 evaluates its three terms as published."""
    k = kinetics_eq4(P=1, r=2, D=3, L_in=4, L_out=5, N=6, I=7)
    assert k["linear"] == 60  # 2 * 6 * 1 * 5
    assert k["attn_compute"] == 2340  # 2*2*6*4*3*5 = 1440 ; 2*6*3*5^2 = 900
    assert k["kv_access"] == 3990  # 7 * (2*4*3*5 = 120 + 6*3*25 = 450)


def test_intensity_is_kinetics_b200_value(dep):
    """I = fp8 dense peak / HBM bandwidth on B200 = 4.5e15 / 8e12 = 562.5 FLOPs/byte (Kinetics' I)."""
    assert intensity_flops_per_byte(dep) == pytest.approx(562.5)


def test_dense_attention_one_sample_by_hand(dep):
    """One sample, L_in=10, L_out=4: steps read 11, 12, 13, 14 tokens (50 in all) on Qwen3-8B."""
    task = TTSTask(samples=1, prompt_tokens=10, gen_tokens=4)
    c = task_cost(dep, make_method("full", dep), task)
    # FLOPs per token read per layer 2 * 32 heads * (128 + 128) = 16,384; x 36 layers = 589,824; x 50
    assert float(c.attention.total("flops")) == pytest.approx(29_491_200)
    # KV 2 * 8 * 128 * 2 B = 4,096 B/token/layer: reads 50*36*4096 = 7,372,800; writes 4*36*4096 = 589,824;
    # Q in + O out 36 * 2 * 32 * 128 * 2 B = 589,824 per step x 4 = 2,359,296 -> 10,321,920 B
    assert float(c.attention.total("hbm_bytes")) == pytest.approx(10_321_920)
    assert c.attention_eflops == pytest.approx(29_491_200 + 562.5 * 10_321_920)  # 5,835,571,200


def test_shared_prompt_read_once_per_step(dep):
    """N=4 samples share the prompt's KV: 3 of the 4 prompt reads per step vanish (cascade attention)."""
    full = make_method("full", dep)
    shared = task_cost(dep, full, TTSTask(samples=4, prompt_tokens=100, gen_tokens=2))
    own = task_cost(dep, full, TTSTask(samples=4, prompt_tokens=100, gen_tokens=2, shared_prompt=False))
    # prompt read per step 100 * 36 * 4096 = 14,745,600 B; unshared reads it 4x: 3 * 14,745,600 * 2 steps
    # = 88,473,600 more, less the shared kernel's second Q/O pass 589,824 * 2 steps * 4 samples = 4,718,592
    diff = float(own.attention.total("hbm_bytes")) - float(shared.attention.total("hbm_bytes"))
    assert diff == pytest.approx(88_473_600 - 4_718_592)
    assert float(own.attention.total("flops")) == pytest.approx(float(shared.attention.total("flops")))


def test_linear_marginal_token_has_no_weight_reads(dep):
    """batch=None (large-batch limit) drops exactly the weight bytes of a lone token; FLOPs ~ 2P."""
    lone, marg = linear_per_token(dep, 1), linear_per_token(dep, None)
    # 7,568,097,280 active params: layers' 6,945,767,424 in fp8 (1 B) + LM head 151,936 x 4,096 = 622,329,856
    # kept in bf16 (2 B; Deployment.wb_head) = 8,190,427,136 B
    assert float(lone.total("hbm_bytes")) - float(marg.total("hbm_bytes")) == pytest.approx(8_190_427_136)
    # 2 * 7,568,097,280 + elementwise 36 * (10*4096 + 4*12288) = 15,136,194,560 + 3,244,032
    assert float(marg.total("flops")) == pytest.approx(15_139_438_592)


def test_sparse_method_is_its_own_decode_cost_summed(dep):
    """A sparse method's task attention is N x the sum of its decode_cost over the L_out steps."""
    quest = make_method("quest", dep)
    task = TTSTask(samples=3, prompt_tokens=5000, gen_tokens=7)
    got = task_cost(dep, quest, task).attention
    want = sum((quest.decode_cost(np.array([5000.0 + t])) for t in range(7)), start=type(got)(()))
    assert eflops(got, 562.5) == pytest.approx(3 * eflops(want, 562.5))


def test_sum_steps_broadcasts_per_step_constants():
    """A per-step scalar field counts once per step."""
    from kvsim.costmodel.cost import Cost, Part

    c = sum_steps(Cost.of(Part("a", "gemm", flops=np.array([1.0, 2.0, 3.0]), launches=2.0)), 3)
    assert c.parts[0].flops == 6.0 and c.parts[0].launches == 6.0  # 1+2+3 ; 2 x 3 steps


def test_attention_dominates_long_generation(dep):
    """Qwen3-8B, one 32K CoT on B200: attention is ~98% of decode eFLOPs (Kinetics §3: attention dominates)."""
    c = task_cost(dep, make_method("full", dep), TTSTask(samples=1, prompt_tokens=128, gen_tokens=32768))
    m = dep.model
    k = kinetics_eq4(m.active_params_per_token, 4, 36 * 2048, 128, 32768, 1, 562.5)
    # kvsim's attention within 0.1% of Eq. 4's (Q/O bytes and the new token's write are kvsim's extra)
    assert c.attention_eflops == pytest.approx(k["attn_compute"] + k["kv_access"], rel=1e-3)
    assert c.attention_share > 0.95


def test_bad_task_rejected():
    """Zero samples or tokens are a validation error, not a silent number."""
    with pytest.raises(ValidationError):
        TTSTask(samples=0)
    with pytest.raises(ValidationError):
        TTSTask(gen_tokens=0)
    with pytest.raises(ValidationError):
        TTSTask(samples=2, extra=1)


def test_affordable_generation_by_hand(dep):
    """I = 0 (FLOPs only), L_in = 1: the budget of exactly 5 generated tokens affords 5; one FLOP less, 4."""
    full, task = make_method("full", dep), TTSTask(samples=1, prompt_tokens=1, gen_tokens=1)
    # prefill: 1 token without LM head 15,139,438,592 - 2 * 151936 * 4096 = 13,894,778,880, + attention 589,824
    # gen g=5: linear 5 * 15,139,438,592 = 75,697,192,960; attention 589,824 * (2+3+4+5+6 = 20) = 11,796,480
    total5 = 13_894_778_880 + 589_824 + 75_697_192_960 + 11_796_480  # 89,604,358,144
    assert task_cost(dep, full, task.model_copy(update={"gen_tokens": 5}), intensity=0).total_eflops == \
        pytest.approx(total5, rel=1e-12)
    assert affordable_gen_tokens(dep, full, task, total5, intensity=0) == 5
    assert affordable_gen_tokens(dep, full, task, total5 - 1, intensity=0) == 4
    assert affordable_gen_tokens(dep, full, task, 1.0, intensity=0) == 0


def test_parse_task_keys_and_suffixes():
    """'best-of-n=8,gen=16k' -> N 8, 16,384 tokens; batch, intensity and budget parsed."""
    o = parse_task("best-of-n=8,gen=16k,prompt=512,shared=false,batch=256,intensity=562.5")
    assert (o.task.samples, o.task.gen_tokens, o.task.prompt_tokens, o.task.shared_prompt) == (8, 16384, 512, False)
    assert (o.batch, o.intensity, o.budget_eflops) == (256, 562.5, None)
    assert parse_task("n=8,prompt=512,budget=1e16").budget_eflops == 1e16


def test_cli_tts_says_why_no_token_and_that_tp_splits_the_task():
    """A budget too small for one token, or a prompt filling the context, prints 0 gen tokens with the reason;
    at TP 2 the eFLOPs are each GPU's share, and the output says so (a user audit)."""
    r = _cli("estimate", "--model", "qwen3-8b", "--tts", "n=8,budget=1e3")
    assert r.returncode == 0 and "does not buy one generated token" in r.stderr
    r = _cli("estimate", "--model", "qwen3-8b", "--tts", "n=1,prompt=100000,budget=1e16")
    assert r.returncode == 0 and "leaves no room in qwen3-8b's context of 40,960" in r.stderr
    r = _cli("estimate", "--hw", "b200", "--model", "qwen3-8b", "--tp", "2", "--tts", "n=4,prompt=2k,gen=8k")
    assert r.returncode == 0 and "per GPU of the TP-2 replica" in r.stderr


@pytest.mark.parametrize("spec,word", [("gen=0", "gen"), ("n=abc", "n"), ("fanout=2", "unknown key"),
                                       ("shared=maybe", "shared"), ("intensity=-1", "intensity"),
                                       ("budget=0", "budget"), ("batch=0", "batch"), ("gen", "key=value"),
                                       # budget= solves for gen, so both at once is an error (gen was silently
                                       # ignored); a key twice is an error, not the last one winning (a user audit)
                                       ("n=8,gen=1k,budget=1e16", "give it instead of gen="),
                                       ("n=8,samples=4", "'samples' given twice"), ("n=8,n=4", "'n' given twice")])
def test_parse_task_errors(spec, word):
    """Bad --tts values are one ConfigError naming the key."""
    with pytest.raises(ConfigError, match=word):
        parse_task(spec)


def _cli(*args):
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "kvsim", *args], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=300)


def test_cli_tts_json_matches_library(dep):
    """`kvsim estimate --tts ... --json` prints the library's numbers; a bad key is one error line, exit 1."""
    r = _cli("estimate", "--hw", "b200", "--model", "qwen3-8b", "--weight-dtype", "fp8", "--tts",
             "n=1,prompt=10,gen=4", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)[0]
    assert row["attention_eflops"] == pytest.approx(5_835_571_200)  # test_dense_attention_one_sample_by_hand
    bad = _cli("estimate", "--hw", "b200", "--model", "qwen3-8b", "--tts", "gen=0")
    lines = [x for x in (bad.stdout + bad.stderr).splitlines() if x.strip()]
    assert bad.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: --tts gen")


def test_api_tts_cost_matches_library(dep):
    """kvsim.tts_cost with a --tts string gives task_cost's numbers."""
    import kvsim

    c = kvsim.tts_cost(hw="b200", model="qwen3-8b", method="full", tts="n=1,prompt=10,gen=4", weight_dtype="fp8")
    assert c.attention_eflops == pytest.approx(5_835_571_200)  # as test_dense_attention_one_sample_by_hand
    with pytest.raises(ConfigError, match="budget"):
        kvsim.tts_cost(hw="b200", model="qwen3-8b", tts="budget=1e16")


def test_roofline_seconds_of_attention_by_hand(dep):
    """The task's attention through kvsim's roofline without overheads (B200 shared defaults, attn_decode:
    compute eff 0.4746, memory eff 0.8480, blend p = 1.742; default.yaml)."""
    from kvsim.costmodel.roofline import Roofline
    from kvsim.pricing.tts import without_overheads

    c = task_cost(dep, make_method("full", dep), TTSTask(samples=1, prompt_tokens=10, gen_tokens=4))
    # compute 29,491,200 / (2.25e15 * 0.4746) = 2.76174e-8 s; HBM 10,321,920 / (8e12 * 0.8480) = 1.521509e-6 s;
    # p-norm: 1.521509e-6 * (1 + (2.76174e-8 / 1.521509e-6)^1.742)^(1/1.742) = 1.522319e-6 s
    t = float(Roofline(dep.system)(without_overheads(c.attention)).total_s)
    assert t == pytest.approx(1.522319e-6, rel=1e-5)
    assert c.roofline_s > t  # plus the prefill and the linear layers


def test_host_methods_flagged_and_prompt_aware_told_the_prompt(dep):
    """MagicPIG's CPU attention is off-GPU work (eFLOPs leave it out); full has none. H2O (prompt-aware)
    keeps its prompt budget and appends generated tokens, so its attention grows with the generation."""
    t = TTSTask(samples=1, prompt_tokens=4096, gen_tokens=64)
    assert task_cost(dep, make_method("magicpig", dep), t).off_gpu
    assert not task_cost(dep, make_method("full", dep), t).off_gpu
    h2o = make_method("h2o", dep)
    # the step-t decode of the task = h2o.decode_cost(4096 + t, n_prompt=4096), summed over 64 steps
    want = sum(eflops(h2o.decode_cost(np.array([4096.0 + s]), np.array([4096.0])), 562.5) for s in range(64))
    assert task_cost(dep, h2o, t).attention_eflops == pytest.approx(want)


def test_moe_marginal_token_reads_no_expert_weights():
    """Mixtral: a lone step's second token touches 1.5 more experts per layer (E (1 - (1 - k/E)^T): 8 x
    (1 - 0.75^2) - 8 x 0.25 = 1.5), so linear_cost(2, 2) - linear_cost(1, 1) read 1.5 x 32 x 352 MB = 16.9 GB
    of expert weights per generated token: 'amortized' came out 100x above batch=100000 (user audit)."""
    d = build_deployment("h200", "mixtral-8x7b")
    marg = linear_per_token(d, None)
    # 2 x 12,748,587,008 active params = 25,497,174,016, + the elementwise kernels' 4,980,736 = 25,502,154,752
    assert float(marg.total("flops")) == pytest.approx(25_502_154_752)
    assert float(marg.total("hbm_bytes")) < 0.1 * 176_160_768 * 2  # activations only: a tenth of one expert's bytes
    I = intensity_flops_per_byte(d)
    for b in (1, 64, 100_000):  # the large-batch limit is at or below every finite batch
        assert eflops(marg, I) <= eflops(linear_per_token(d, b), I)
