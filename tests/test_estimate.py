"""estimate(): memory budget, max batch, TTFT/TBT consistency (synthetic system)."""

import numpy as np
import pytest
from synthetic import llama2_7b, synthetic_system

from kvsim.costmodel.deployment import Deployment
from kvsim.pricing.estimate import estimate
from kvsim.methods import make_method
from kvsim.pricing.step import StepModel


def _dep(**kw):
    return Deployment(system=synthetic_system(), model=llama2_7b(), **kw)


def test_max_batch_hand_computed():
    """Max batch = (ceil(0.9 * 80 GB) - weights - engine reserve) // KV per request (vLLM 0.19 profiling)."""
    d = _dep()
    r = estimate(d, make_method("full", d), context=4096, batch=1)
    # requested 72e9 (no torch_memory_bytes: memory_bytes); weights 6,738,415,616 * 2 = 13,476,831,232
    # reserve (8192-token step, 256 sampled rows; kvsim/pricing/engine_memory.py):
    #   forward 8192 * (2*4096 + 4096 + 3*11008) * 2 = 742,391,808
    #     > sampler (8192 + 512) * 4096 * 2 + 256 * 32000 * 14 + 100 * 32000 * 4 = 198,791,168
    #   + cuBLAS 8,519,680 (no compute capability: the pre-Hopper default) = 750,911,488
    #   + non-torch 0.25 GiB 268,435,456 + rope 4096 * 128 * 2 = 1,048,576  -> 1,020,395,520
    # KV left 57,502,773,248; per request 524,288 * 4096 = 2,147,483,648 -> 26.8 -> 26
    assert r.activation_reserve_bytes == 1_020_395_520
    assert r.max_batch == 26
    # unchunked, one sampled row: forward 4096 * 45,312 * 2 = 371,195,904 + 8,519,680 + 268,435,456
    # + 1,048,576 = 649,199,616 -> KV left 57,873,969,152 -> 26.95 -> 26
    r1 = estimate(d, make_method("full", d), context=4096, batch=1, max_num_batched_tokens=None, max_num_seqs=1)
    assert r1.activation_reserve_bytes == 649_199_616
    assert r1.max_batch == 26
    assert r.kv_bytes_per_token_gpu == 524_288
    assert r.weights_bytes_per_gpu == 13_476_831_232


def test_ttft_tbt_are_step_times():
    """TTFT is one whole-prompt step; TBT one decode step at the context (same StepModel)."""
    d = _dep()
    m = make_method("full", d)
    r = estimate(d, m, context=2048, batch=4)
    s = StepModel(d, m)
    assert r.ttft_s == s.prefill_timing(2048).total_s  # 2048 <= 8192: one chunk
    assert r.tpot_s == s.decode_timing(np.full(4, 2048.0)).total_s
    assert r.throughput_tok_s == pytest.approx(4 / r.tpot_s, rel=1e-12)


def test_batch_max_picks_best_throughput():
    """--batch max returns a batch no worse than every other feasible batch."""
    d = _dep()
    m = make_method("full", d)
    r = estimate(d, m, context=4096, batch="max")
    s = StepModel(d, m)
    thr = [b / s.decode_timing(np.full(b, 4096.0)).total_s for b in range(1, r.max_batch + 1)]
    assert r.throughput_tok_s == pytest.approx(max(thr), rel=1e-9)


def test_oom_reports_zero_batch():
    """A context whose KV exceeds memory gives max_batch 0 and fits False."""
    d = _dep()
    r = estimate(d, make_method("full", d), context=200_000, batch="max")
    # 524,288 * 200,000 = 104.9 GB > 72 GB
    assert r.max_batch == 0 and not r.fits and r.tpot_s is None


def test_chunked_ttft_sums_chunk_steps():
    """A 20,000-token prompt with 8192-token chunks takes 3 steps: 8192, 8192, 3616 tokens."""
    d = _dep()
    m = make_method("full", d)
    s = StepModel(d, m)
    r = estimate(d, m, context=20_000, batch=1)
    # chunk 1: 8192 new after 0; chunk 2: 8192 after 8192; chunk 3: 20000-16384 = 3616 after 16384
    t = (s.timing(prefill_new=np.array([8192.0]), prefill_cached=np.array([0.0]), n_sampled_prefill=0).total_s
         + s.timing(prefill_new=np.array([8192.0]), prefill_cached=np.array([8192.0]), n_sampled_prefill=0).total_s
         + s.timing(prefill_new=np.array([3616.0]), prefill_cached=np.array([16384.0]), n_sampled_prefill=1).total_s)
    assert r.ttft_s == pytest.approx(t, rel=1e-12)


def test_batch_max_stays_within_max_num_seqs():
    """--batch max is the best-throughput batch that fits in memory AND within the engine's max_num_seqs
    (it used to ignore --max-num-seqs when memory held more: H100, Llama-3.1-8B, 1,024 tokens -> 441 > 64)."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.pricing.estimate import estimate

    dep = build_deployment("h100", "llama-3.1-8b")
    r = estimate(dep, make_method("full", dep), 1024, "max", max_num_seqs=64)
    assert r.max_batch > 64 and 1 <= r.batch <= 64  # memory holds more; the engine runs at most 64
    assert estimate(dep, make_method("full", dep), 1024, "max", max_num_seqs=1024).batch > 64


def test_a_methods_own_kv_dtype_is_the_one_reported():
    """full:kv_dtype=fp8 prices 1-byte KV (Llama-3.1-8B: 2 x 32 layers x 8 KV heads x 128 x 1 B =
    65,536 B per token) and says fp8, in estimate and in simulate's summary and provenance
    (user audit: the numbers were fp8's, the label the deployment's bf16)."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.sim.replica import SimConfig, simulate
    from kvsim.traces import load_trace

    dep = build_deployment("a100", "llama-3.1-8b")
    m = make_method("full:kv_dtype=fp8", dep)
    got = estimate(dep, m, 1024)
    assert got.kv_bytes_per_token_gpu == 65536 and got.kv_dtype == "fp8"
    res = simulate(dep, m, load_trace("synthetic-burstgpt", num_requests=5, seed=0), SimConfig())
    assert res.summary["kv_dtype"] == "fp8" and res.summary["provenance"]["deployment"]["kv_dtype"] == "fp8"
    assert estimate(dep, make_method("full", dep), 1024).kv_dtype == "bf16"


def test_kv_bytes_per_token_are_per_context_token_for_a_prompt_compressor():
    """llmlingua (ratio 3) keeps ceil(4096 / 3) = 1,366 of 4,096 tokens: 1,366 x 524,288 B / 4,096 = 174,848 B per
    context token. It printed 524,288 (per kept token, as full), hiding the saving every other method shows
    (user audit). The request holds whole 16-token blocks: ceil(1,366 / 16) = 86 blocks = 1,376 tokens (twelfth session)."""
    d = Deployment(system=synthetic_system(), model=llama2_7b(), tp=1)
    r = estimate(d, make_method("llmlingua", d), context=4096, batch=1)
    assert r.kv_gpu_bytes == 1_376 * 524_288
    assert r.kv_bytes_per_token_gpu == 174_848
