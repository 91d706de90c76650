"""KV offload tiers (host DRAM, NVMe): flag parsing, hand-computed transfer times, the tier
invariants, and a multi-turn session whose second turn the host tier turns into a hit."""

import random

import numpy as np
import pytest

from kvsim.costmodel.roofline import Roofline
from kvsim.errors import ConfigError
from kvsim.methods import make_method
from kvsim.sim.config import SimConfig
from kvsim.sim.kv_tiers import KVOffload, OffloadTiers, make_tiers, parse_offload, parse_size
from kvsim.sim.reference import simulate_reference
from kvsim.sim.replica import ReplicaSim
from test_sim_support import FakeStep, a100_llama, make_trace, util_for_blocks

GiB = 2**30


def test_parse_offload_sizes_and_errors():
    """host=64GiB,nvme=1TiB is 64 x 2^30 and 2^40 bytes; GB is 10^9; bad items are one ConfigError."""
    off = parse_offload("host=64GiB,nvme=1TiB")
    assert off.host_bytes == 64 * 2**30 and off.nvme_bytes == 2**40 and off.nvme_drive == "pm9a3"
    assert parse_size("500GB") == 500e9 and parse_size("1.5KiB") == 1536
    for bad in ("host=64", "host=lots", "hots=1GiB", "host=1GiB,host=2GiB", "nvme=1TiB", "host=2PiB", "host="):
        if bad == "host=64":  # a plain number is bytes: valid
            assert parse_offload(bad).host_bytes == 64
            continue
        with pytest.raises(ConfigError):
            parse_offload(bad)


def test_storage_seconds_hand_computed():
    """PM9A3 sequential read of 6.5e9 bytes: 1e-4 s latency + 6.5e9 / 6.5e9 B/s = 1.0001 s; write of
    3.5e9 bytes: 1e-4 + 1.0 s; nothing: 0."""
    assert Roofline.storage_seconds(6.5e9, 6.5e9, 1e-4) == pytest.approx(1.0001, rel=1e-12)
    tiers = make_tiers(KVOffload(host_bytes=GiB, nvme_bytes=GiB), 2**21, a100_llama().system)
    assert tiers.nvme_read_s(6.5e9) == pytest.approx(1.0001, rel=1e-12)
    assert tiers.nvme_write_s(3.5e9) == pytest.approx(1.0001, rel=1e-12)
    assert tiers.nvme_read_s(0) == 0.0


def test_pcie_copy_hand_computed():
    """A100 node (PCIe4 x16, 31.5e9 B/s per direction, efficiency 0.85, latency 2 us, round-trip
    overhead 20 us): 134,217,728 bytes take 134217728 / 26.775e9 + 2 x 2e-6 + 2e-5 = 0.0050368 s."""
    tiers = make_tiers(KVOffload(host_bytes=GiB), 2**21, a100_llama().system)
    assert tiers.pcie_s(134217728) == pytest.approx(134217728 / 26.775e9 + 2.4e-5, rel=1e-12)
    # a step's load of 40 host + 24 NVMe blocks of 2 MiB: one PCIe copy of 64 blocks + an NVMe read of 24
    want = 134217728 / 26.775e9 + 2.4e-5 + (1e-4 + 24 * 2**21 / 6.5e9)
    tiers = make_tiers(KVOffload(host_bytes=GiB, nvme_bytes=GiB), 2**21, a100_llama().system)
    assert tiers.load_seconds(40, 24) == pytest.approx(want, rel=1e-12)


def _toy(host_blocks=10, nvme_blocks=0) -> OffloadTiers:
    """1 MB blocks, PCIe 1 GB/s, NVMe read 0.5 GB/s, write 0.25 GB/s (no latencies)."""
    off = KVOffload(host_bytes=host_blocks * 1e6, nvme_bytes=nvme_blocks * 1e6)
    return OffloadTiers(off, 1e6, lambda n: n / 1e9, lambda n: n / 0.5e9, lambda n: n / 0.25e9, log_transfers=True)


def test_stores_queue_on_the_link_and_are_found_when_done():
    """Store 3 entries of 2 blocks at t=0: 6 MB at 1 GB/s end at 6 ms; a store of 1 entry issued at
    1 ms waits for the link and ends at 6 + 2 = 8 ms. Before its copy ends an entry is not found."""
    t = _toy()
    t.store([(1, 2), (2, 2), (3, 2)], 0.0)
    t.store([(4, 2)], 0.001)
    assert [s[1:3] for s in t.log] == [(0.0, pytest.approx(0.006)), (pytest.approx(0.006), pytest.approx(0.008))]
    assert t.hits((1, 2, 3, 4), 0, 4, 0.005) == []
    assert t.hits((1, 2, 3, 4), 0, 4, 0.007) == ["host"] * 3
    assert t.hits((1, 2, 3, 4), 0, 4, 0.008) == ["host"] * 4
    t.store([(1, 2)], 0.01)  # already held: no copy
    assert len(t.log) == 2
    t.check()


def test_host_overflow_spills_lru_to_nvme_and_loads_touch():
    """Host 4 blocks, NVMe 4: storing a, b (2 blocks each) then loading a makes b the LRU entry; storing
    c spills b to NVMe (its write starts when c's copy ends at 4 ms: 2 MB at 0.25 GB/s, done at 12 ms);
    storing d then spills a; a later load finds a and b in NVMe, c in host."""
    t = _toy(host_blocks=4, nvme_blocks=4)
    t.store([("a", 2), ("b", 2)], 0.0)  # ends 4 ms
    assert t.load(("a",), 0, t.hits(("a",), 0, 1, 1.0), 1, 16) == (2, 0)
    t.store([("c", 2)], 1.0)  # copy 1.000 -> 1.002, b spilled 1.002 -> 1.010
    assert list(t.entries["host"]) == ["a", "c"] and list(t.entries["nvme"]) == ["b"]
    assert t.log[-1] == ("nvme_write", pytest.approx(1.002), pytest.approx(1.010), 2e6)
    t.store([("d", 2)], 2.0)
    assert list(t.entries["host"]) == ["c", "d"] and list(t.entries["nvme"]) == ["b", "a"]
    assert t.hits(("a", "b", "c", "x"), 0, 4, 3.0) == ["nvme", "nvme", "host"]
    t.check()


@pytest.mark.parametrize("seed", range(20))
def test_tier_invariants_under_random_use(seed):
    """Random stores, lookups and loads: capacities hold, blocks in - out = held per tier, no entry in
    host and NVMe, and a queue's transfers never overlap, so none runs above the link's bandwidth."""
    rng = random.Random(seed)
    t = _toy(host_blocks=rng.randint(1, 12), nvme_blocks=rng.choice([0, 3, 20]))
    now = 0.0
    for _ in range(200):
        now += rng.choice([0.0, 0.0005, 0.003])
        hashes = tuple(rng.randint(0, 15) for _ in range(rng.randint(1, 4)))
        hashes = tuple(dict.fromkeys(hashes))
        if rng.random() < 0.5:
            t.store([(h, rng.randint(1, 3)) for h in hashes], now)
        else:
            got = t.hits(hashes, 0, len(hashes), now)
            t.load(hashes, 0, got, len(hashes), 16)
        t.check()
    for q, bw in (("d2h", 1e9), ("nvme_write", 0.25e9)):
        for _, s, e, nbytes in (x for x in t.log if x[0] == q):
            assert nbytes / (e - s) <= bw * (1 + 1e-9)


# ----- a multi-turn session through both simulators -----

def _session(offload: KVOffload | None, method: str = "full", blocks: int = 100):
    """Llama-3.1-8B on an A100 with 100 GPU blocks of 16 tokens (2 MiB each), step = 10 ms + 1 ms per
    prefill token. Turn 1 of session A (t=0, 1,100 tokens, entries A1 A2 of 512 tokens = 32 blocks
    each); request B (t=2, 1,500 other tokens) evicts A1, A2 from the GPU; turn 2 of A at t=5 has
    the same first 1,024 tokens."""
    dep = a100_llama()
    m = make_method(method, dep)
    cfg = SimConfig(kv_offload=offload, record_token_times=True)
    cfg = cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, blocks, cfg)})
    tr = make_trace([0.0, 2.0, 5.0], [1100, 1500, 1100], [2, 2, 2],
                    prefix=[(1, 2, 3), (11, 12, 13), (1, 2, 4)], pb=512)
    sim = ReplicaSim(dep, m, tr, cfg, step_model=FakeStep())
    res = sim.run()
    ref = simulate_reference(dep, m, tr, cfg, step_model=FakeStep())
    assert np.allclose(res.records.first_token_s, ref.first_token_s, rtol=1e-12, atol=0)
    return sim, res


def test_host_tier_turns_a_gpu_miss_into_a_hit():
    """Without tiers turn 2 prefills 1,100 tokens: TTFT = 10 + 1,100 ms = 1.110 s. With a 1 GiB host
    tier it loads A1, A2 (64 blocks = 134,217,728 bytes; 0.0050368 s over PCIe, see above) and
    prefills 76 tokens: TTFT = 0.010 + 0.076 + 0.0050368 = 0.0910368 s, 1.0189632 s less."""
    load_s = 134217728 / 26.775e9 + 2.4e-5
    _, off = _session(None)
    sim, on = _session(KVOffload(host_bytes=GiB))
    ttft_off = off.records.first_token_s[2] - 5.0
    ttft_on = on.records.first_token_s[2] - 5.0
    assert ttft_off == pytest.approx(1.110, rel=1e-12)
    assert ttft_on == pytest.approx(0.010 + 0.076 + load_s, rel=1e-12)
    assert ttft_off - ttft_on == pytest.approx(1.024 - load_s, rel=1e-12)
    assert on.records.cached_tokens.tolist() == [0, 0, 1024] and off.records.cached_tokens.tolist() == [0, 0, 0]
    s = on.summary["kv_offload"]
    # entries wanted: 2 (A turn 1) + 2 (B) + 2 (A turn 2); the host served 2 of them
    assert s["wanted_entries"] == 6 and s["host"]["hit_entries"] == 2 and s["host"]["hit_rate"] == pytest.approx(2 / 6)
    assert s["load"] == "async"  # (the default; an idle engine waits for the load either way: same TTFT)
    assert s["host"]["bytes_loaded"] == 134217728 and s["host"]["bytes_stored"] == 4 * 32 * 2**21
    assert s["host"]["load_time_s"] == pytest.approx(load_s, rel=1e-12)
    # estimate: 1,024 tokens' prefill (1.024 s with this step model) less the load
    assert s["host"]["ttft_saved_est_s"] == pytest.approx(1.024 - load_s, rel=1e-12)
    sim.tiers.check()


def test_nvme_tier_serves_what_the_host_tier_spilled():
    """Host tier of one entry (64 MiB), NVMe 1 GiB: A's and B's stores spill A1, A2 to NVMe; turn 2
    loads both from NVMe: one PCIe copy (0.0050368 s) + an NVMe read of 134,217,728 bytes
    (1e-4 + 134217728 / 6.5e9 = 0.0207489 s); TTFT = 0.086 + both."""
    load_s = 134217728 / 26.775e9 + 2.4e-5 + 1e-4 + 134217728 / 6.5e9
    sim, res = _session(KVOffload(host_bytes=32 * 2**21, nvme_bytes=GiB))
    assert res.records.first_token_s[2] - 5.0 == pytest.approx(0.086 + load_s, rel=1e-12)
    s = res.summary["kv_offload"]
    assert s["nvme"]["hit_entries"] == 2 and s["host"]["hit_entries"] == 0
    assert s["host"]["bytes_evicted"] == s["nvme"]["bytes_stored"] == 3 * 32 * 2**21
    sim.tiers.check()


def test_compressed_kv_moves_its_compressed_bytes():
    """HeadMerge halves the KV (65,536 B/token): an entry of 512 tokens is 16 blocks of 2 MiB, so turn 2
    loads 2 x 16 blocks = 67,108,864 bytes (half of full's), in 67108864 / 26.775e9 + 2.4e-5 =
    0.0025304 s; the host tier stored A1, A2, B1, B2 = 64 blocks. (60 GPU blocks: B evicts A's entries.)"""
    load_s = 67108864 / 26.775e9 + 2.4e-5
    _, off = _session(None, "headmerge", 60)
    sim, on = _session(KVOffload(host_bytes=GiB), "headmerge", 60)
    s = on.summary["kv_offload"]["host"]
    assert s["bytes_loaded"] == 67108864 and s["bytes_stored"] == 64 * 2**21
    assert s["load_time_s"] == pytest.approx(load_s, rel=1e-12)
    assert off.records.first_token_s[2] - 5.0 == pytest.approx(1.110, rel=1e-12)
    assert on.records.first_token_s[2] - 5.0 == pytest.approx(0.086 + load_s, rel=1e-12)


def test_tiers_off_by_default_change_nothing():
    """SimConfig() has no tiers; kv_offload with 0 host bytes is off too (no summary)."""
    assert SimConfig().kv_offload is None
    _, res = _session(KVOffload())
    assert res.summary["kv_offload"] is None and res.records.cached_tokens.tolist() == [0, 0, 0]


def test_cli_kv_offload_flag(tmp_path):
    """`--kv-offload` on Mooncake rows: the JSON summary has the tiers; bad values are one `error:` line
    and exit code 1."""
    import json
    import subprocess
    import sys

    def kvsim(*args):
        return subprocess.run([sys.executable, "-m", "kvsim", "simulate", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    r = kvsim("--trace", "mooncake-conversation", "-n", "40", "--kv-offload", "host=8GiB,nvme=64GiB", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)["kv_offload"]
    assert s["host"]["capacity_bytes"] == 8 * GiB and s["nvme"]["capacity_bytes"] == 64 * GiB
    for bad, msg in (("host=lots", "bad size"), ("nvme=1TiB", "needs a host tier"), ("host=100TiB", "host memory"),
                     ("host=1GiB,drive=floppy", "unknown storage"), ("host=1MiB", "holds no KV block")):
        r = kvsim("-n", "5", "--kv-offload", bad)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] and msg in r.stderr, r.stderr


def test_tier_invariants_in_random_replays():
    """The equivalence scenarios that draw tiers (seeds 0..199), replayed with every background
    transfer logged: the invariants hold at the end, some of them load from host and NVMe, and
    with load=async some loads run while the engine decodes other requests (asynchronous loads
    queue on one host-to-device direction: they never overlap)."""
    from equivalence_scenarios import single_replicas

    from kvsim.sim import scheduler as scheduler_module

    hits = {"host": 0, "nvme": 0}
    loads = []  # (scenario load mode, start of the step, ready, requests running then)
    start_load = scheduler_module.Scheduler._start_load

    def logged(self, r, g_host, g_nvme):
        start_load(self, r, g_host, g_nvme)
        loads.append((self.now, r.load_ready_s, self.num_running))

    scheduler_module.Scheduler._start_load = logged
    try:
        for sc, sim in single_replicas(range(200), keep=lambda sc: sc.offload):
            if sim.tiers is None:
                continue
            sim.tiers.log = []
            before = len(loads)
            sim.run()
            sim.tiers.check()
            for t in hits:
                hits[t] += sim.tiers.hit_entries[t]
            ends = [ready for _, ready, _ in loads[before:]]
            assert ends == sorted(ends) and all(ready >= now for now, ready, _ in loads[before:]), sc
            assert sc.offload[2] == "async" or len(loads) == before
    finally:
        scheduler_module.Scheduler._start_load = start_load
    assert hits["host"] > 0 and hits["nvme"] > 0
    assert sum(1 for _, _, running in loads if running) >= 20  # loads beside running requests (54 of 74 here)


def test_simconfig_takes_the_cli_spelling():
    """SimConfig(kv_offload="host=1GiB,nvme=2GiB") is KVOffload(2^30, 2^31); a bad string is a ConfigError."""
    assert SimConfig(kv_offload="host=1GiB,nvme=2GiB").kv_offload == KVOffload(host_bytes=2**30, nvme_bytes=2**31)
    with pytest.raises(ConfigError):
        SimConfig(kv_offload="host=x")


# ----- review (issue 14 item 1): compressed entries of zero blocks; vLLM's LRU touch order -----

def _both(host_blocks, nvme_blocks=0):
    """The fast tiers and the reference's, with _toy's prices (1 MB blocks, PCIe 1 GB/s)."""
    from kvsim.sim.reference_pool import RefTiers

    off = KVOffload(host_bytes=host_blocks * 1e6, nvme_bytes=nvme_blocks * 1e6)
    prices = (lambda n: n / 1e9, lambda n: n / 0.5e9, lambda n: n / 0.25e9)
    return [OffloadTiers(off, 1e6, *prices), RefTiers(off, 1e6, *prices)]


@pytest.mark.parametrize("which", [0, 1])
def test_zero_block_entries_keep_the_prefix_chain(which):
    """A compressed method's entry can add 0 blocks (HeadMerge at 16-token entries: blocks(16 i) =
    ceil(i / 2), so entries 1, 2, 3 take 1, 0, 1 blocks); it is stored (0 bytes) so the next entries
    stay reachable: all 3 are found once the 2 MB copy ends at 2 ms, not only entry 1."""
    t = _both(10)[which]
    t.store([(1, 1), (2, 0), (3, 1)], 0.0)
    assert t.hits((1, 2, 3), 0, 3, 0.002) == ["host"] * 3


@pytest.mark.parametrize("which", [0, 1])
def test_lru_keeps_the_head_of_a_prefix(which):
    """vLLM's LRUOffloadingManager.touch walks a request's blocks in reverse, so a prompt's first block
    is its most recently used. Host of 3 blocks: store a1 a2 a3 (1 block each) at t=0, then b1 at t=1:
    the victim is a3 (the tail), and a later lookup of a1 a2 a3 still finds a1 a2. (Evicting a1 would
    strand a2 a3: unreachable behind a miss.)"""
    t = _both(3)[which]
    t.store([("a1", 1), ("a2", 1), ("a3", 1)], 0.0)
    t.store([("b1", 1)], 1.0)
    assert t.hits(("a1", "a2", "a3"), 0, 3, 2.0) == ["host", "host"]
    assert t.hits(("b1",), 0, 1, 2.0) == ["host"]


@pytest.mark.parametrize("which", [0, 1])
def test_load_touches_the_head_last(which):
    """Host of 4 blocks: store a1 a2 (t=0) then c1 c2 (t=1); loading a1 a2 at t=2 makes a1 the most
    recently used, then a2, c1, c2 in turn; storing d1 (t=3) evicts c2 (least recent; a1 a2 c1 left)."""
    t = _both(4)[which]
    t.store([("a1", 1), ("a2", 1)], 0.0)
    t.store([("c1", 1), ("c2", 1)], 1.0)
    hashes = ("a1", "a2")
    got = t.hits(hashes, 0, 2, 2.0)
    if which == 0:
        t.load(hashes, 0, got, 2, 16)
    else:
        t.load(hashes, 0, got, 2)
    t.store([("d1", 1)], 3.0)
    assert t.hits(("a1", "a2"), 0, 2, 4.0) == ["host", "host"] and t.hits(("c1", "c2"), 0, 2, 4.0) == ["host"]


def test_compressed_session_with_16_token_entries_in_both_simulators():
    """HeadMerge (half the KV) on 16-token prefix entries (BurstGPT sessions, vLLM's block size): turn 1
    of A (100 tokens, 6 full entries = blocks 1,0,1,0,1,0 = 3 blocks of 2 MiB) is partly evicted from a
    6-block GPU pool by B: its tail first (vLLM frees a request's blocks last to first), entries 6 and 5
    (one block). Turn 2 of A hits entries 1-4 on the GPU and loads 5-6 from the host tier (1 block,
    2,097,152 bytes: 2097152 / 26.775e9 + 2.4e-5 = 0.000102325 s) and prefills 4 tokens:
    TTFT = 0.010 + 0.004 + load = 0.014102325 s (the fast engine; the reference agrees inside _session2).
    (Before the tail-first order: B evicted A's head, entry 1, the rest was unreachable, and all 6 were
    loaded: 0.01425898 s.)"""
    dep = a100_llama()
    m = make_method("headmerge", dep)
    cfg = SimConfig(kv_offload=KVOffload(host_bytes=GiB), record_token_times=True)
    cfg = cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, 6, cfg)})
    tr = make_trace([0.0, 2.0, 5.0], [100, 100, 100], [2, 2, 2],
                    prefix=[(1, 2, 3, 4, 5, 6, 7), (11, 12, 13, 14, 15, 16, 17), (1, 2, 3, 4, 5, 6, 8)], pb=16)
    sim = ReplicaSim(dep, m, tr, cfg, step_model=FakeStep())
    res = sim.run()
    ref = simulate_reference(dep, m, tr, cfg, step_model=FakeStep())
    assert np.allclose(res.records.first_token_s, ref.first_token_s, rtol=1e-12, atol=0)
    load_s = 2097152 / 26.775e9 + 2.4e-5
    assert res.records.cached_tokens.tolist() == [0, 0, 96]
    assert res.records.first_token_s[2] - 5.0 == pytest.approx(0.010 + 0.004 + load_s, rel=1e-12)
    s = res.summary["kv_offload"]["host"]
    assert s["hit_entries"] == 2 and s["bytes_loaded"] == 2097152
    sim.tiers.check()


def test_host_tier_comes_out_of_the_host_kv_pool():
    """The host tier is pinned host memory like the SWAP space / host KV pool (vLLM allocates both):
    A100 node, 1 TiB host, 90% usable = 989,560,464,998.4 B = 471,859 blocks of 2 MiB without tiers;
    a 512 GiB tier leaves 989,560,464,998.4 - 549,755,813,888 = 439,804,651,110.4 B = 209,715 blocks,
    in both simulators. A tier above the usable 921.6 GiB is a ConfigError."""
    from kvsim.sim.kv_tiers import check_offload
    from kvsim.sim.reference_pool import RefGeometry

    dep = a100_llama()
    m = make_method("full", dep)
    tr = make_trace([0.0], [100], [2], prefix=[(1,)], pb=512)
    for off, want in ((None, 471859), (KVOffload(host_bytes=512 * GiB), 209715)):
        cfg = SimConfig(kv_offload=off)
        assert ReplicaSim(dep, m, tr, cfg).layout.num_host_blocks == want
        assert RefGeometry(dep, m, cfg, cfg.max_num_batched_tokens).num_host_blocks == want
    check_offload(KVOffload(host_bytes=921 * GiB), dep.system)
    with pytest.raises(ConfigError, match="usable host memory"):
        check_offload(KVOffload(host_bytes=922 * GiB), dep.system)


def test_a_tier_smaller_than_one_block_is_an_error():
    """host=1MiB with 2 MiB blocks (Llama-3.1-8B, 16 tokens x 131,072 B) would be a tier of 0 blocks that
    silently stores nothing: a ConfigError naming the block size; so is nvme=1MiB. host=0 stays 'off'."""
    sys_ = a100_llama().system
    for off in (KVOffload(host_bytes=2**20), KVOffload(host_bytes=GiB, nvme_bytes=2**20)):
        with pytest.raises(ConfigError, match="holds no KV block"):
            make_tiers(off, 2**21, sys_)
    assert make_tiers(KVOffload(host_bytes=2**21), 2**21, sys_).capacity == {"host": 1, "nvme": 0}
    assert make_tiers(KVOffload(), 2**21, sys_) is None


def test_gpu_served_entries_missing_below_are_stored_again():
    """vLLM's connector prepares a store of every full block of a request (prepare_store drops those
    the CPU holds), so a prefix the GPU cache serves but the host tier evicted is offloaded again.
    200 GPU blocks (nothing evicted there), host tier 64 blocks = 2 entries of 32: A's turn 1 stores
    A1 A2; B's store evicts them; A's turn 2 is served by the GPU (1,024 cached tokens) and its
    completion stores A1 A2 again (evicting B1 B2): 6 entries x 32 blocks x 2 MiB = 402,653,184 B
    stored, the host tier ends with A1 A2, in both simulators."""
    from kvsim.sim.reference import RefReplica

    dep = a100_llama()
    m = make_method("full", dep)
    cfg = SimConfig(kv_offload=KVOffload(host_bytes=64 * 2**21))
    cfg = cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, 200, cfg)})
    tr = make_trace([0.0, 2.0, 5.0], [1100, 1500, 1100], [2, 2, 2],
                    prefix=[(1, 2, 3), (11, 12, 13), (1, 2, 4)], pb=512)
    sim = ReplicaSim(dep, m, tr, cfg, step_model=FakeStep())
    res = sim.run()
    assert res.records.cached_tokens.tolist() == [0, 0, 1024]
    assert res.summary["kv_offload"]["host"]["bytes_stored"] == 6 * 32 * 2**21 == 402653184
    assert list(sim.tiers.entries["host"]) == [2, 1]  # A1 most recently used
    ref = RefReplica(dep, m, tr, cfg, step_model=FakeStep())
    for i in range(3):
        ref.arrive(i)
    ref.run_before(float("inf"))
    assert sorted(h for h, e in ref.tiers.where.items() if e[0] == "host") == [1, 2]
    sim.tiers.check()


def _session_beside_a_decode(load: str):
    """_session's three requests plus C (t=4, 16 tokens, 200 output, no prefix entry) decoding while
    turn 2 of A arrives; both simulators (first tokens, TBT maxima and cached tokens agree)."""
    dep = a100_llama()
    m = make_method("full", dep)
    cfg = SimConfig(kv_offload=KVOffload(host_bytes=GiB, load=load), record_token_times=True)
    cfg = cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, 100, cfg)})
    tr = make_trace([0.0, 2.0, 4.0, 5.0], [1100, 1500, 16, 1100], [2, 2, 200, 2],
                    prefix=[(1, 2, 3), (11, 12, 13), (21,), (1, 2, 4)], pb=512)
    res = ReplicaSim(dep, m, tr, cfg, step_model=FakeStep()).run()
    ref = simulate_reference(dep, m, tr, cfg, step_model=FakeStep())
    assert np.allclose(res.records.first_token_s, ref.first_token_s, rtol=1e-12, atol=0)
    assert np.allclose(res.records.tbt_max_s, ref.tbt_max_s, rtol=1e-12, atol=0)
    assert res.records.cached_tokens.tolist() == [0, 0, 0, 1024]
    return res.records


def test_async_tier_load_runs_beside_the_decode_steps():
    """vLLM v1 loads tier KV asynchronously (WAITING_FOR_REMOTE_KVS). C decodes in 10 ms steps from
    its first token at 4.026 s; turn 2 of A arrives at 5.0 and is scheduled at the step boundary
    5.006 (4.026 + 98 x 0.010); its 64-block host load takes 0.0050368 s (test_pcie_copy_hand_computed).

    sync: the step at 5.006 loads, then prefills the 76 new tokens beside C's decode:
      A's TTFT = 0.006 + 0.010 + 0.076 + 0.0050368 = 0.0970368 s; C's longest gap = 0.0910368 s.
    async: the step at 5.006 only decodes C (ends 5.016) while the load runs (ready 5.0110368); the
      step at 5.016 admits A: TTFT = 0.016 + 0.086 = 0.102 s; C's longest gap = 0.086 s (no load in it)."""
    load_s = 134217728 / 26.775e9 + 2.4e-5
    sync, asyn = _session_beside_a_decode("sync"), _session_beside_a_decode("async")
    assert sync.first_token_s[3] - 5.0 == pytest.approx(0.006 + 0.086 + load_s, rel=1e-9)
    assert sync.tbt_max_s[2] == pytest.approx(0.086 + load_s, rel=1e-9)
    assert asyn.first_token_s[3] - 5.0 == pytest.approx(0.016 + 0.086, rel=1e-9)
    assert asyn.tbt_max_s[2] == pytest.approx(0.086, rel=1e-9)
    assert sync.first_token_s[:3].tolist() == asyn.first_token_s[:3].tolist()


def test_parse_offload_load_mode():
    """load=async (the default, vLLM v1) or sync; anything else is one ConfigError."""
    assert parse_offload("host=1GiB").load == "async" and parse_offload("host=1GiB,load=SYNC").load == "sync"
    with pytest.raises(ConfigError, match="load='later': expected async or sync"):
        parse_offload("host=1GiB,load=later")
    for alone in ("load=sync", "drive=pm9a3", "load=async,drive=pm9a3"):  # (were no tiers, silently: user audit)
        with pytest.raises(ConfigError, match="no host tier; give host=SIZE"):
            parse_offload(alone)


def test_loaded_kv_of_waiting_requests_is_dropped_before_a_runner_preempts_itself():
    """Equivalence scenario 793 (2 replicas, 207 GPU blocks, 3 sequences, 64-token budget, async
    loads): requests back from their loads wait holding KV while a prefilling request runs out of
    blocks. Preempting the runner (the only one) would restart it forever; the waiting request's
    loaded KV is dropped first (counted as its preemption). Both simulators finish and agree."""
    import signal

    from equivalence_scenarios import compare, run_both, scenario

    from kvsim.sim import scheduler as scheduler_module

    def hung(*_):
        raise AssertionError("the replay did not finish in 60 s (a preemption livelock)")

    drops = []
    preempt = scheduler_module.Scheduler._preempt

    def logged(self, out):
        waiting = [id(x) for x in self.waiting if x.kv_loaded]  # (running requests are not in the queue)
        r = preempt(self, out)
        drops.append(id(r) in waiting)
        return r

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    scheduler_module.Scheduler._preempt = logged
    try:
        sc = scenario(793)
        assert sc.replicas == 2 and sc.offload[2] == "async"
        fast, ref = run_both(sc)
    finally:
        scheduler_module.Scheduler._preempt = preempt
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert compare(fast, ref) == []
    assert any(drops) and int(fast.records.preemptions.sum()) >= 1


def test_kv_offload_text_with_a_zero_tier_is_an_error():
    """`--kv-offload host=0` was accepted and did nothing without a word (audit): a tier of size 0 is a
    one-line error saying how to have no tiers."""
    from kvsim.sim.kv_offload import parse_offload

    for text in ("host=0", "host=1GiB,nvme=0GB"):
        with pytest.raises(ConfigError, match="a tier needs a size above 0"):
            parse_offload(text)
    assert parse_offload("host=1GiB").enabled


def test_a_tier_holds_every_gpus_share_of_a_block():
    """At tp=4 a block is 4 shares, one per GPU, each offloaded by its own worker: a 1 GiB host tier of 2 MiB
    per-GPU blocks holds 2**30 // (4 x 2**21) = 128 blocks (it held 512 before: one GPU's share counted), the
    same tokens as at tp=1 with 8 MiB blocks. PCIe loads copy one share per GPU, in parallel (2 MiB per block);
    the NVMe drive reads all four: 24 blocks x 8 MiB at 6.5 GB/s + 100 us."""
    sys_ = a100_llama().system
    t4 = make_tiers(KVOffload(host_bytes=GiB, nvme_bytes=GiB), 2**21, sys_, gpus=4)
    t1 = make_tiers(KVOffload(host_bytes=GiB, nvme_bytes=GiB), 2**23, sys_)
    assert t4.capacity == {"host": 128, "nvme": 128} == t1.capacity
    want = 64 * 2**21 / 26.775e9 + 2.4e-5 + (1e-4 + 24 * 4 * 2**21 / 6.5e9)
    assert t4.load_seconds(40, 24) == pytest.approx(want, rel=1e-12)
    t4.store([(1, 2)], 0.0)
    s = t4.summary(lambda cached, new: 0.0)["host"]
    assert s["bytes_stored"] == 2 * 4 * 2**21 and s["capacity_bytes"] == GiB  # bytes of the replica
    with pytest.raises(ConfigError, match="holds no KV block"):  # 4 MiB < one block of every GPU (8 MiB)
        make_tiers(KVOffload(host_bytes=2**22), 2**21, sys_, gpus=4)
