"""The reference simulator (kvsim.sim.reference): hand-computed scenarios, and the property
that the fast simulator (simulate / simulate_cluster) equals it on random scenarios.

Hand-computed scenarios use FakeStep: a step costs 10 ms + 1 ms per prefill token (decode
tokens are free), on Llama-3.1-8B / A100 (16-token blocks of full KV; pools sized with
util_for_blocks).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.roofline import Roofline
from kvsim.methods import make_method
from kvsim.sim.reference import simulate_reference
from kvsim.sim.reference_cluster import simulate_cluster_reference
from kvsim.sim.reference_result import COMPLETED, REJECTED
from kvsim.sim.replica import SimConfig, simulate
from equivalence_scenarios import compare, pressure_scenario, run_both, scenario
from test_sim_support import FakeStep, a100_llama, make_trace, util_for_blocks


def _ref(arrival, prompt, output, method="full", blocks=None, prefix=None, pb=0, **cfg):
    dep = a100_llama()
    m = make_method(method, dep)
    c = SimConfig(record_token_times=True, **cfg)
    if blocks is not None:
        c = c.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, blocks, c, max(prompt))})
    trace = make_trace(arrival, prompt, output, prefix=prefix, pb=pb)
    ref = simulate_reference(dep, m, trace, c, step_model=FakeStep())
    fast = simulate(dep, m, trace, c, step_model=FakeStep())
    assert compare(fast, ref) == [], "the fast simulator disagrees on a hand-computed scenario"
    return ref


def test_lone_request():
    # step 1 prefills 100 tokens: 10 + 100 ms = 0.110 s (first token); 2 decode steps of 10 ms
    r = _ref([0.0], [100], [3])
    assert r.status.tolist() == [COMPLETED]
    assert r.first_token_s[0] == pytest.approx(0.110) and r.finish_s[0] == pytest.approx(0.130)
    assert r.tbt_max_s[0] == pytest.approx(0.010) and r.steps == 3
    assert np.allclose(r.token_times[0], [0.110, 0.120, 0.130])


def test_chunked_prefill_samples_at_the_last_chunk():
    # budget 64: chunk 64 (0.074 s), chunk 36 (0.046 s) -> first token at 0.120; one decode -> 0.130
    r = _ref([0.0], [100], [2], max_num_batched_tokens=64)
    assert r.first_token_s[0] == pytest.approx(0.120) and r.finish_s[0] == pytest.approx(0.130)
    assert r.steps == 3


def test_arrival_at_a_step_end_joins_the_next_step():
    # A: prefill 10 tokens [0, 0.020]. B arrives at 0.020 exactly: step 2 [0.020, 0.040] decodes A
    # (its last token: A finishes) and prefills B (10 ms + 10 ms); B decodes in step 3 -> 0.050
    r = _ref([0.0, 0.020], [10, 10], [2, 2])
    assert r.scheduled_s.tolist() == pytest.approx([0.0, 0.020])
    assert r.finish_s.tolist() == pytest.approx([0.040, 0.050])
    assert r.first_token_s[1] == pytest.approx(0.040)


def test_max_num_seqs_holds_the_queue():
    # one sequence at a time: A prefill 0.020, decode 0.030 (done); B prefill 0.050, decode 0.060
    r = _ref([0.0, 0.0], [10, 10], [2, 2], max_num_seqs=1)
    assert r.scheduled_s.tolist() == pytest.approx([0.0, 0.030])
    assert r.finish_s.tolist() == pytest.approx([0.030, 0.060])


def test_whole_prompt_prefill_first():
    # v0: step 1 prefills A (20 ms) -> 0.020; step 2 is prefill-only for B (20 tokens: 30 ms)
    # -> 0.050, B done; A decodes at 0.060, 0.070: A's largest TBT 0.060 - 0.020 = 0.040
    r = _ref([0.0, 0.005], [10, 20], [3, 1], chunked_prefill=False)
    assert r.finish_s.tolist() == pytest.approx([0.070, 0.050])
    assert r.tbt_max_s.tolist() == pytest.approx([0.040, 0.0])


def test_recompute_preemption():
    # Prefix caching off (nothing of a victim stays cached). 5 blocks of 16 tokens. A, B (32 tokens =
    # 2 blocks each) prefill together: 10 + 64 ms -> 0.074.
    # Step 2: both need a 3rd block, 1 is free: B (admitted last) is preempted (RECOMPUTE), A decodes
    # alone (no admission in a step that preempted) -> 0.084. B's re-prefill of 33 tokens needs 3
    # blocks; A holds 3..4 of 5 until it finishes after 19 decodes: 0.074 + 0.190 = 0.264.
    # B re-prefills 33 tokens (43 ms) -> 0.307 (its 2nd token, TBT 0.233), then 18 decodes -> 0.487.
    r = _ref([0.0, 0.0], [32, 32], [20, 20], blocks=5, enable_prefix_caching=False)
    assert r.num_gpu_blocks == 5
    assert r.preemptions.tolist() == [0, 1]
    assert r.finish_s.tolist() == pytest.approx([0.264, 0.487])
    assert r.tbt_max_s[1] == pytest.approx(0.233)
    assert r.token_times[1][1] == pytest.approx(0.307)


def test_recompute_victim_finds_its_parked_blocks():
    """Rule 12 (vLLM v1 prefix caching keeps a freed block's hash): the scenario above with prefix
    caching on (the default). B's 32 computed tokens = 2 whole blocks stay cached when it is
    preempted at 0.074; A takes the 1 free block (3 held). While A runs B cannot come back: with its
    2 parked blocks it needs blocks(33) - 2 = 1 new block and 5 - 3 (A) - 2 (taken back) = 0 are
    left. When A's context reaches 48 tokens it needs a 4th block: nothing is free, so 1 block is
    evicted from B's parked tail (1 left = its first 16 tokens). A finishes at 0.264 as before; B is
    admitted with 16 tokens computed (its 1 parked block) and prefills 33 - 16 = 17 tokens:
    10 + 17 ms -> 0.291 (TBT 0.291 - 0.074 = 0.217), then 18 decodes -> 0.471 (was 0.487)."""
    r = _ref([0.0, 0.0], [32, 32], [20, 20], blocks=5)
    assert r.preemptions.tolist() == [0, 1]
    assert r.preempted_kv_tokens.tolist() == [[0, 0], [32, 16]]  # B lost 32 tokens of KV, found 16 again
    assert r.finish_s.tolist() == pytest.approx([0.264, 0.471])
    assert r.token_times[1][1] == pytest.approx(0.291)
    assert r.tbt_max_s[1] == pytest.approx(0.217)


def test_parked_blocks_shrink_from_the_tail():
    """Rule 12 with generated tokens parked and two tail evictions. 6 blocks; A and B (prompt 32,
    output 40) prefill together -> 0.074 (2 blocks each). 16 decode steps at ctx 32..47 (3 blocks
    each) -> 0.234. At ctx 48 both need a 4th block, none is free: B (17 tokens out, 48 computed) is
    preempted and parks its 3 whole blocks (generated tokens included); A's 4th block evicts 1 of
    them (2 left). A's 5th block at ctx 64 evicts 1 more (1 left: B's first 16 tokens). B cannot
    return while A runs (e.g. with 2 parked: blocks(49) - 2 = 2 new, 6 - 4 - 2 = 0 left). A decodes
    alone at ctx 48..70 (23 steps) -> 0.464 and finishes. B comes back with 16 tokens computed and
    prefills 49 - 16 = 33 tokens: 10 + 33 ms -> 0.507, then 22 decodes -> 0.727. Without prefix
    caching it re-prefills 49 tokens (59 ms): 0.523, finish 0.743."""
    r = _ref([0.0, 0.0], [32, 32], [40, 40], blocks=6)
    assert r.preemptions.tolist() == [0, 1]
    assert r.finish_s.tolist() == pytest.approx([0.464, 0.727])
    assert r.token_times[1][17] == pytest.approx(0.507)
    assert r.preempted_kv_tokens.tolist() == [[0, 0], [48, 16]]  # 48 computed when preempted, 16 found
    off = _ref([0.0, 0.0], [32, 32], [40, 40], blocks=6, enable_prefix_caching=False)
    assert off.finish_s.tolist() == pytest.approx([0.464, 0.743])
    assert off.preempted_kv_tokens.tolist() == [[0, 0], [48, 0]]


def test_swap_preemption():
    # As above with SWAP: B's 2 blocks go to the host in step 2 (+ one PCIe copy of 2 blocks: s),
    # so A's steps after it shift by s. When A finishes, B swaps its 2 blocks back (+ s) and
    # decodes from ctx 33 in that step (its 2nd token, + 10 ms), then 18 more steps of 10 ms.
    dep = a100_llama()
    bb = 16 * dep.full_kv_bytes_per_token
    s = float(Roofline(dep.system)(Cost.of(Part("kv_swap", "pcie", device="pcie", pcie_bytes=2 * bb,
                                                pcie_round_trips=1.0))).total_s)
    r = _ref([0.0, 0.0], [32, 32], [20, 20], blocks=5, preemption_mode="swap")
    a_end = 0.074 + 0.190 + s
    assert r.preemptions.tolist() == [0, 1]
    assert r.finish_s[0] == pytest.approx(a_end)
    assert r.finish_s[1] == pytest.approx(a_end + 0.010 + s + 0.180)
    assert r.tbt_max_s[1] == pytest.approx(a_end + 0.010 + s - 0.074)


def test_prefix_cache_hit():
    # 64-token prefix blocks. A (200 tokens, hashes 1..4) registers min(4, 200 // 64) = 3 entries;
    # B (same prompt, after A) looks up at most (200 - 1) // 64 = 3: 192 tokens cached,
    # prefills 8: 10 + 8 ms -> 1.018.
    r = _ref([0.0, 1.0], [200, 200], [2, 1], prefix=[(1, 2, 3, 4), (1, 2, 3, 4)], pb=64)
    assert r.cached_tokens.tolist() == [0, 192]
    assert r.first_token_s[1] == pytest.approx(1.018)


def test_lru_eviction_of_unreferenced_entries():
    # 40 blocks = 640 tokens. A (256 tokens, hashes 1..4) finishes and leaves 4 entries (16 blocks)
    # cached. C (600 tokens, other hashes) needs 38 blocks: entries 1 and 2 are evicted (released in
    # prompt order: the first entry is the least recent). D then finds no entry 1: no hit.
    r = _ref([0.0, 1.0, 2.0], [256, 600, 256], [1, 1, 1], blocks=40,
             prefix=[(1, 2, 3, 4), tuple(range(10, 20)), (1, 2, 3, 4)], pb=64)
    assert r.cached_tokens.tolist() == [0, 0, 0]
    assert r.prefix_evictions >= 2


def test_analytic_prefix_hit():
    # prefix(hit_ratio=0.5): 100-token prompt starts with 50 cached tokens; prefill 50: 0.060
    r = _ref([0.0], [100], [1], method="prefix")
    assert r.cached_tokens.tolist() == [50] and r.first_token_s[0] == pytest.approx(0.060)


def test_rejections():
    # 131072-token context: 131000 + 100 is over it; with 10 blocks (160 tokens), 150 + 20 - 1
    # tokens need 11 blocks: rejected for GPU memory; 100 + 10 - 1 fits
    r = _ref([0.0, 0.0, 0.0], [131000, 150, 100], [100, 20, 10], blocks=10, max_num_batched_tokens=256)
    assert r.status.tolist() == [REJECTED, REJECTED, COMPLETED]
    assert r.reject_reason == {0: "max_context", 1: "gpu_memory"}


def test_cluster_round_robin_splits_the_trace():
    dep = a100_llama()
    m = make_method("full", dep)
    trace = make_trace([0.0, 0.0, 0.0, 0.0], [100] * 4, [3] * 4)
    r = simulate_cluster_reference(dep, m, trace, SimConfig(), replicas=2, router="round-robin")
    assert r.replica_of.tolist() == [0, 1, 0, 1]
    assert len(set(np.round(r.first_token_s, 12).tolist())) == 1  # both replicas prefill two prompts at once


# ---------------------------------------------------------------- fast == reference
CI = settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@CI
@given(st.integers(0, 2**31 - 1))
def test_fast_simulator_equals_reference(seed):
    """Per-request status, preemptions, cached tokens, every token's time (1e-9 relative),
    steps and peak pool use are identical (see tests/equivalence_scenarios.py for the draws)."""
    sc = scenario(seed, small=True)
    got = run_both(sc)
    if got is None:  # the method does not support the model, or the pool cannot be that small
        return
    diff = compare(*got)
    assert not diff, sc.describe() + "\n" + "\n".join(diff)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.integers(0, 2**31 - 1))
def test_fast_simulator_equals_reference_under_memory_pressure(seed):
    """As above on scenarios where RECOMPUTE victims park their KV and come back for it (rule 12;
    about 60% of these draws park something)."""
    sc = pressure_scenario(seed)
    got = run_both(sc)
    if got is None:
        return
    diff = compare(*got)
    assert not diff, sc.describe() + "\n" + "\n".join(diff)


def test_whole_prompt_budget_miss_keeps_no_prefix_reference():
    """Without chunked prefill, a queue head whose prompt misses the step's token budget drops the
    prefix entries it looked up (a waiting request holds no KV) and looks up again next step.
    (Found by the property test: the engine's scheduler used to keep its first hit.)"""
    # X (128 tokens, hashes 1, 2) registers entries 1, 2. At t=1, A (200, hashes 1..4) and B (300,
    # hashes 1..4) arrive; v0 budget 150: A hits 2 entries (128 tokens), prefills 72 and, scheduled,
    # registers entry 3 (200 // 64 = 3); B hits 3 entries (192) but 108 > 150 - 72 does not fit this
    # step. A's step: 10 + 72 ms -> 1.082. Next step B looks up again: 3 entries, 192 cached tokens,
    # prefills 108 (10 + 108 ms): first token 1.082 + 0.118 = 1.200.
    r = _ref([0.0, 1.0, 1.0], [128, 200, 300], [1, 5, 2], prefix=[(1, 2), (1, 2, 3, 4), (1, 2, 3, 4)], pb=64,
             chunked_prefill=False, max_num_batched_tokens=150)
    assert r.cached_tokens.tolist() == [0, 128, 192]
    assert r.first_token_s[2] == pytest.approx(1.200)


@pytest.mark.parametrize("chunked", [False, True])
def test_entries_are_cached_when_their_chunk_is_scheduled(chunked):
    """vLLM v1 ``allocate_slots`` caches the full blocks of ``num_computed + num_new`` tokens when it
    schedules them (vllm/v1/core/kv_cache_manager.py), so a request admitted behind A in the same
    step hits A's new entries (its prefill reads that KV in the same forward, after A writes it)."""
    # As above with B of 250 tokens: A hits 128, prefills 72 and registers entry 3 when scheduled;
    # B then hits 3 entries (192; at most (250 - 1) // 64 = 3), and its 58 tokens fit 150 - 72 = 78:
    # both in one step of 10 + 72 + 58 ms = 0.140 -> first tokens 1.140. (Registered when A's prompt
    # completes, B would have hit 2 entries, missed the budget and come a step later.)
    r = _ref([0.0, 1.0, 1.0], [128, 200, 250], [1, 5, 2], prefix=[(1, 2), (1, 2, 3, 4), (1, 2, 3, 4)], pb=64,
             chunked_prefill=chunked, max_num_batched_tokens=150)
    assert r.cached_tokens.tolist() == [0, 128, 192]
    assert r.first_token_s[1] == pytest.approx(1.140) and r.first_token_s[2] == pytest.approx(1.140)


def test_a_partial_prefill_shares_its_scheduled_chunks():
    """Chunked prefill: a request admitted in the step that runs another's last prompt chunk hits
    the entries of that prompt's chunks (registered when each was scheduled, not at its end)."""
    # Budget 100, pb 64 (FakeStep: 10 ms + 1 ms per prefill token). A (250 tokens, hashes 1..4) at
    # t=0: chunks 100 (entry 1: 100 // 64), 100 (entries 2, 3: 200 // 64), 50 (250 // 64 = 3, none
    # new). B (280 tokens, hashes 1..4) arrives at 0.05, while A's first step runs (10 + 100 ms).
    # Step 2 (0.110-0.220): A's 100 tokens spend the budget. Step 3 (from 0.220): A's last 50, then B
    # hits 3 entries (192 tokens; at most (280 - 1) // 64 = 4) and takes the 50 left: 10 + 50 + 50 ms
    # -> A's first token 0.330. Step 4: A decodes, B's last 280 - 192 - 50 = 38 tokens: 10 + 38 ms ->
    # B's first token 0.378. (Registered at A's prompt end, B would hit nothing in step 3.)
    r = _ref([0.0, 0.05], [250, 280], [3, 2], prefix=[(1, 2, 3, 4), (1, 2, 3, 4)], pb=64,
             max_num_batched_tokens=100)
    assert r.cached_tokens.tolist() == [0, 192]
    assert r.first_token_s[0] == pytest.approx(0.330)
    assert r.first_token_s[1] == pytest.approx(0.378)


def test_eviction_can_unblock_the_queue_head():
    """A decode allocation that evicts an unreferenced prefix entry can shorten the blocked queue
    head's hit and let it in: the head is retried in that step (vLLM retries it every step).
    (Found by the property test: decode runs used to evict while the head stayed blocked.)"""
    # 33 blocks of 16 tokens, budget 33 (FakeStep: 10 ms + 1 ms per prefill token). A (64 tokens, entry
    # 11) decodes 300 tokens; B (256, entries 11..14): step 1 A 33 (0.043); step 2 A's last 31 (entry 11
    # cached when scheduled) and B hits it, takes 2 (0.086); B's other 190 in 5 steps of 32 and one of 30
    # beside A's decodes (0.336), then finishes and leaves 12..14 cached (12 blocks). A then holds 70
    # tokens and decodes at 10 ms: its 22nd block (337 tokens) comes in the step from 0.336 + 266 x 0.01
    # = 2.996, when 21 + 12 = 33 blocks are taken. C (320 tokens, entries 11..14) at t=2.9 hits all 4
    # (pinned) and needs 2 more blocks: none free. A's growth at 2.996 evicts entry 14 (least recently
    # released: B's entries are released last to first, as vLLM frees a request's blocks); C then hits
    # entries 11..13 (192 tokens), and its 32-token chunk needs 2 of the 3 blocks now free: the reference
    # admits it in that step (2.996 s). (In prompt order, entry 12 went first and C hit only 64 tokens.)
    r = _ref([0.0, 0.0, 2.9], [64, 256, 320], [300, 1, 2], prefix=[(11,), (11, 12, 13, 14), (11, 12, 13, 14)],
             pb=64, blocks=33, max_num_batched_tokens=33)
    assert r.cached_tokens.tolist() == [0, 64, 192]
    assert r.scheduled_s[2] == pytest.approx(2.996)


def test_watermark_holds_back_an_admission():
    """vLLM v0's watermark (W = int(0.1 * 100 blocks) = 10, whole-prompt mode): A (1280 tokens, 80
    blocks) is admitted (100 - 80 = 20 >= 10 free); B (176 tokens, 11 blocks) is not (20 - 11 = 9 < 10)
    and waits for A to finish; without the watermark both prefill in one step.

    W = 10: step 1 prefills A: 10 + 1280 ms -> 1.290; step 2 decodes A (81st block: decodes ignore W),
    A done at 1.300; step 3 prefills B: 10 + 176 ms -> 1.486; step 4 decodes B -> 1.496.
    W = 0: step 1 prefills A and B: 10 + 1280 + 176 ms -> 1.466; step 2 decodes both -> 1.476."""
    kw = dict(blocks=100, chunked_prefill=False)
    r = _ref([0.0, 0.0], [1280, 176], [2, 2], watermark=0.1, **kw)
    assert r.scheduled_s.tolist() == pytest.approx([0.0, 1.300])
    assert r.first_token_s.tolist() == pytest.approx([1.290, 1.486])
    assert r.finish_s.tolist() == pytest.approx([1.300, 1.496])
    r0 = _ref([0.0, 0.0], [1280, 176], [2, 2], watermark=0.0, **kw)
    assert r0.first_token_s.tolist() == pytest.approx([1.466, 1.466])
    assert r0.finish_s.tolist() == pytest.approx([1.476, 1.476])


def test_watermark_default_and_never_rejection():
    """Default watermark: 0.01 without chunked prefill, 0 with it. A prompt needing more than
    num_gpu_blocks - W blocks is rejected at arrival (v0's NEVER): 100 blocks, W = int(0.05 * 100) = 5,
    a 1520-token prompt needs 95 blocks <= 95 (admitted), a 1536-token one 96 > 95 (rejected, though
    its 96 blocks fit the 100-block pool)."""
    assert SimConfig(chunked_prefill=False).effective_watermark == 0.01
    assert SimConfig().effective_watermark == 0.0
    assert SimConfig(chunked_prefill=False).watermark_blocks(2830) == 28  # int(0.01 * 2830)
    r = _ref([0.0, 0.0], [1520, 1536], [1, 1], blocks=100, chunked_prefill=False, watermark=0.05)
    assert r.status.tolist() == [COMPLETED, REJECTED]


def test_parked_head_does_not_stop_every_decode_run():
    """A blocked queue head that parked its KV (rule 12) must not make the fast layer stop its decode
    runs at every eviction: when even its first chunk without any hit does not fit the allocatable
    blocks, no eviction can let it in before a finish (Scheduler.head_cache_keys). 300 requests of 8K
    prompts at 0.6 req/s with 40% of an A100: 884 engine launches (9,723 when every eviction ended a
    run; 931 with prefix caching off, whose preemptions differ). Deterministic counts, not timings."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.traces import load_trace

    dep = build_deployment("a100", "llama-3.1-8b")
    m = make_method("full", dep)
    tr = load_trace("synthetic-poisson:rate=0.6,n=300,prompt=8000,output=1000")
    on = simulate(dep, m, tr, SimConfig(gpu_memory_utilization=0.4))
    off = simulate(dep, m, tr, SimConfig(gpu_memory_utilization=0.4, enable_prefix_caching=False))
    assert on.summary["preemptions"] < off.summary["preemptions"]  # the victims found their blocks
    assert on.summary["preempted_kv_tokens_found_cached"] > 0 == off.summary["preempted_kv_tokens_found_cached"]
    assert 0 < on.summary["preempted_kv_tokens_found_cached"] <= on.summary["preempted_kv_tokens"]
    assert on.summary["sim"]["launches"] <= 1.5 * off.summary["sim"]["launches"]


def test_swap_at_tp2_takes_every_gpus_share_of_host_memory():
    """Host memory is the replica's: each of the tp GPUs swaps its own share of a victim's blocks (vLLM: every TP
    worker its KV cache), so B's 2 blocks per GPU at tp=2 hold 2 x 2 = 4 blocks of host memory (block_bytes is
    per GPU). Before, the host pool counted one GPU's share and held tp times what the host has. Both simulators."""
    dep = a100_llama(tp=2)
    m = make_method("full", dep)
    c = SimConfig(record_token_times=True, preemption_mode="swap")
    c = c.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, 5, c, 32)})
    trace = make_trace([0.0, 0.0], [32, 32], [20, 20])
    ref = simulate_reference(dep, m, trace, c, step_model=FakeStep())
    fast = simulate(dep, m, trace, c, step_model=FakeStep())
    assert compare(fast, ref) == []
    bb = 16 * dep.full_kv_bytes_per_token  # one block on one GPU (half of tp=1's: the KV heads are split)
    assert ref.preemptions.tolist() == [0, 1]
    assert fast.summary["peak_kv_host_bytes"] == pytest.approx(2 * 2 * bb)


def test_an_evicting_method_holds_the_whole_prompt_until_its_prefill_completes():
    """SnapKV keeps C = 1,024 prompt tokens per layer, chosen with the last window of the prompt's queries, so the
    prompt's full KV is resident until its prefill completes (rule 13). Llama-3.1-8B, 16-token blocks: a 4,000-token
    prompt is 250 full blocks, compressed 1,024 / 16 = 64. Pool of 320 blocks, budget 8,192, FakeStep:
    A and B (4,000 tokens each, 10 outputs) arrive together. A's prefill takes 250 blocks; B would need 250 more
    (500 > 320) and waits: step 1 = 10 + 4,000 ms -> A's first token 4.010; A then keeps 64 blocks (65 once it
    decodes: 1,025 tokens), B's prefill runs beside A's decode: 65 + 250 = 315 blocks, 4.010 + 4.010 = 8.020.
    (Before, each prompt took 64 blocks and both prefilled in step 1: first tokens 8.010 and 8.010.)"""
    r = _ref([0.0, 0.0], [4000, 4000], [10, 10], method="snapkv", blocks=320)
    assert r.first_token_s.tolist() == pytest.approx([4.010, 8.020])
    assert r.peak_gpu_blocks == 65 + 250
    # chunks of 1,000 tokens (budget 1,000): 63, 125, 188, then 250 blocks: the same peak alone
    one = _ref([0.0], [4000], [10], method="snapkv", blocks=320, max_num_batched_tokens=1000)
    assert one.peak_gpu_blocks == 250
    # a prompt whose full KV exceeds the pool is rejected, although its compressed KV would fit
    big = _ref([0.0], [4000], [10], method="snapkv", blocks=200)
    assert big.status.tolist() == [REJECTED] and big.reject_reason == {0: "gpu_memory"}
