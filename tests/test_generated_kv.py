"""Generated tokens' KV in the prefix cache: a finishing request whose prefix ids go past its prompt's
blocks caches the full entries of its generated tokens (`Scheduler.register_generated`, rule 3b of
`kvsim.sim.reference`), in both simulators."""

import numpy as np
import pytest

from kvsim.methods import make_method
from kvsim.sim.config import SimConfig
from kvsim.sim.kv_cache import KVCacheManager
from kvsim.sim.reference import simulate_reference
from kvsim.sim.replica import ReplicaSim
from test_sim_support import FakeStep, a100_llama, make_trace, util_for_blocks


def test_generated_entries_by_hand():
    """pb 16: prompt 40, output 30, 5 ids: 5 > ceil(40/16) = 3, KV of 40 + 30 - 1 = 69 tokens, 69 // 16 = 4
    entries; 3 ids (= ceil): the trace names prompt blocks only, 0; 9 ids: still 4 (the KV's full
    entries); pb 0 (prefix caching off): 0; prompt 48 (ceil 3), output 1, 4 ids: (48 + 0) // 16 = 3."""
    dep = a100_llama()
    m = make_method("full", dep)
    from kvsim.sim.kv_cache import kv_layout

    lay = kv_layout(dep, m, 200, max_tokens_per_step=8192, max_seqs=256)
    kv = KVCacheManager(lay, prefix_block_tokens=16)
    assert kv.generated_entries(5, 40, 30) == 4
    assert kv.generated_entries(3, 40, 30) == 0
    assert kv.generated_entries(9, 40, 30) == 4
    assert kv.generated_entries(4, 48, 1) == 3
    assert KVCacheManager(lay, prefix_block_tokens=0).generated_entries(5, 40, 30) == 0


def _run(prefix, blocks=200):
    """A (t=0): prompt 600, 500 tokens generated; B (t=10, after A finished): prompt 1,100. Entries of
    512 tokens (32 blocks of 16). Step = 10 ms + 1 ms per prefill token (decode free): A prefills in
    0.610 s and decodes 499 steps of 10 ms, finishing at 5.600 s."""
    dep = a100_llama()
    m = make_method("full", dep)
    cfg = SimConfig(record_token_times=True)
    cfg = cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, blocks, cfg)})
    tr = make_trace([0.0, 10.0], [600, 1100], [500, 2], prefix=prefix, pb=512)
    sim = ReplicaSim(dep, m, tr, cfg, step_model=FakeStep())
    res = sim.run()
    ref = simulate_reference(dep, m, tr, cfg, step_model=FakeStep())
    assert np.allclose(res.records.first_token_s, ref.first_token_s, rtol=1e-12, atol=0)
    assert res.records.cached_tokens.tolist() == ref.cached_tokens.tolist()
    assert res.summary["peak_kv_gpu_bytes"] == pytest.approx(ref.peak_gpu_blocks * 2**21, rel=1e-12)
    sim.kv.check()
    return sim, res


def test_next_prompt_reuses_the_generated_entry():
    """A's ids (1, 2, 3) go past ceil(600 / 512) = 2: at its finish its KV holds 600 + 500 - 1 = 1,099
    tokens, 1099 // 512 = 2 full entries: entry 2 (tokens 512..1023, 88 prompt + 424 generated) is
    cached besides entry 1 (registered when the prompt was scheduled). B (ids 1, 2, 4) looks up
    (1100 - 1) // 512 = 2 entries and finds both: 1,024 cached tokens, TTFT = 0.010 + 0.001 x 76 =
    0.086 s. With A's ids (1, 2) (prompt blocks only, as Mooncake's hash_ids) B finds entry 1 only:
    512 cached, TTFT = 0.010 + 0.588 = 0.598 s."""
    sim, on = _run([(1, 2, 3), (1, 2, 4)])
    _, off = _run([(1, 2), (1, 2, 4)])
    assert on.records.finish_s[0] == pytest.approx(0.610 + 499 * 0.010, rel=1e-12)
    assert on.records.cached_tokens.tolist() == [0, 1024] and off.records.cached_tokens.tolist() == [0, 512]
    assert on.records.first_token_s[1] - 10.0 == pytest.approx(0.086, rel=1e-12)
    assert off.records.first_token_s[1] - 10.0 == pytest.approx(0.598, rel=1e-12)
    # after the run: entries 1, 2 (A) and 4 (B: 1100 // 512 = 2 prompt entries, ids 1, 2; B's 2 outputs
    # fill nothing), all unreferenced: 2 x 32 blocks cached and evictable, nothing private
    assert set(sim.kv.entries) == {1, 2} and sim.kv.cached_free == 64 and sim.kv.gpu_used == 0


def _evicting_case(cfg: SimConfig):
    """A (t=0, prompt 600, output 500, ids 1,2,3), C (t=7, 1,200, ids 7,8,9), B (t=10, 1,100, ids 1,2,4) on an
    80-block GPU pool of 512-token entries, priced by FakeStep: (fast ReplicaSim after its run, its result,
    the reference's result)."""
    dep = a100_llama()
    m = make_method("full", dep)
    cfg = cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, 80, cfg)})
    tr = make_trace([0.0, 7.0, 10.0], [600, 1200, 1100], [500, 2, 2], prefix=[(1, 2, 3), (7, 8, 9), (1, 2, 4)],
                    pb=512)
    sim = ReplicaSim(dep, m, tr, cfg, step_model=FakeStep())
    res = sim.run()
    return sim, res, simulate_reference(dep, m, tr, cfg, step_model=FakeStep())


def test_generated_entries_are_evictable_like_prompt_entries():
    """A GPU pool of 80 blocks: A's two cached entries (64 blocks) are evicted by C (t=7, prompt 1,200 =
    75 blocks, other ids), so B finds nothing (0 cached) in both simulators, and the pool stays
    consistent (kv.check, peaks equal)."""
    sim, res, ref = _evicting_case(SimConfig(record_token_times=True))
    assert res.records.cached_tokens.tolist() == ref.cached_tokens.tolist() == [0, 0, 0]
    assert np.allclose(res.records.first_token_s, ref.first_token_s, rtol=1e-12, atol=0)
    assert sim.kv.evictions >= 2
    sim.kv.check()


def test_generated_entries_are_written_through_to_the_host_tier():
    """The evicting case above with a 1 GiB host tier: A stores entry 1 when its prompt completes and,
    finishing at 5.6 s, entry 2 (its generated entry, 32 blocks); C (t=7) evicts both from the GPU and
    stores its own 2; B (t=10) loads entries 1 and 2 from the host tier: 1,024 cached tokens, TTFT =
    0.010 + 0.001 x 76 + one PCIe copy of 64 blocks (134,217,728 B / 26.775e9 B/s + 24 us), in both
    simulators. Host bytes stored: (1 + 1 + 2) entries x 32 blocks x 2 MiB = 268,435,456 (without
    storing generated entries B would find entry 1 only: 512 cached, TTFT 0.598 s + a 32-block copy)."""
    from kvsim.sim.kv_tiers import KVOffload

    sim, res, ref = _evicting_case(SimConfig(record_token_times=True, kv_offload=KVOffload(host_bytes=2**30)))
    assert res.records.cached_tokens.tolist() == ref.cached_tokens.tolist() == [0, 0, 1024]
    assert np.allclose(res.records.first_token_s, ref.first_token_s, rtol=1e-12, atol=0)
    load_s = 134217728 / 26.775e9 + 2.4e-5
    assert res.records.first_token_s[2] - 10.0 == pytest.approx(0.010 + 0.076 + load_s, rel=1e-12)
    s = res.summary["kv_offload"]
    assert s["host"]["bytes_stored"] == 4 * 32 * 2**21 == 268435456
    assert s["host"]["hit_entries"] == 2 and s["host"]["bytes_loaded"] == 64 * 2**21
    sim.tiers.check()


def test_pool_invariants_in_random_stream_replays():
    """The `streams` equivalence scenarios of seeds 0..199 (prefix ids naming prompt and output), one
    replica each: at the end every request's references and blocks are released (GPU used 0: generated
    entries registered and released like prompt entries), the pool and tier invariants hold, and
    some scenarios cache generated entries and hit them later."""
    from equivalence_scenarios import single_replicas

    added = hits = 0
    for _, sim in single_replicas(range(200), keep=lambda sc: sc.trace.name == "streams"):
        generated: set = set()
        register, lookup = sim.sched.register_generated, sim.kv.lookup

        def counted(r, t_end=None, register=register, generated=generated):
            first = r.num_prefix_entries
            n = register(r, t_end)
            generated.update(r.prefix_hashes[first:first + n])
            return n

        def looked(hashes, max_entries, lookup=lookup, generated=generated):
            nonlocal hits
            n = lookup(hashes, max_entries)
            hits += sum(1 for h in hashes[:n] if h in generated)
            return n

        sim.sched.register_generated, sim.kv.lookup = counted, looked
        sim.run()
        added += len(generated)
        sim.kv.check()
        assert sim.kv.gpu_used == 0 and sim.kv.host_used == 0
        if sim.tiers is not None:
            sim.tiers.check()
    assert added > 0 and hits > 0
