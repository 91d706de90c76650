"""KV offload tiers across replicas: cluster and `kvsim plan` summaries sum every replica's tier
counters and recompute the hit rates from the sums."""

import pytest

from kvsim.methods import make_method
from kvsim.plan.cluster import simulate_cluster
from kvsim.plan.digest import digest
from kvsim.plan.report import tier_note
from kvsim.sim.config import SimConfig
from kvsim.sim.kv_tiers import KVOffload, merge_summaries
from test_sim_support import a100_llama, make_trace, util_for_blocks

GiB = 2**30
MiB2 = 2**21  # one KV block of Llama-3.1-8B: 16 tokens x 131,072 B


def _tier(hits, stored, loaded, load_s, saved):
    return {"capacity_bytes": GiB, "hit_entries": hits, "hit_rate": 0.0, "bytes_stored": stored, "bytes_evicted": 0,
            "bytes_loaded": loaded, "bytes_held_at_end": stored, "evictions": 0, "load_time_s": load_s,
            "ttft_saved_est_s": saved}


def test_merge_sums_counters_and_recomputes_hit_rates():
    """Replica 1: 10 entries wanted, GPU 4, host 2 (rate 0.2); replica 2: 30 wanted, GPU 6, host 12 (0.4),
    no NVMe on replica 1. Cluster: 40 wanted; GPU 10/40 = 0.25; host 14/40 = 0.35 (the mean of the
    rates, 0.3, would be wrong); NVMe 3/40 = 0.075; bytes and seconds add: 1e6 + 5e6 loaded,
    0.1 + 0.3 s of loads."""
    r1 = {"gpu": {"hit_entries": 4, "hit_rate": 0.4}, "wanted_entries": 10, "host": _tier(2, 8e6, 1e6, 0.1, 0.5)}
    r2 = {"gpu": {"hit_entries": 6, "hit_rate": 0.2}, "wanted_entries": 30, "host": _tier(12, 9e6, 5e6, 0.3, 2.0),
          "nvme": _tier(3, 4e6, 2e6, 0.2, 0.1)}
    m = merge_summaries([r1, r2])
    assert m["wanted_entries"] == 40 and m["replicas"] == 2
    assert m["gpu"] == {"hit_entries": 10, "hit_rate": 0.25}
    assert m["host"]["hit_entries"] == 14 and m["host"]["hit_rate"] == pytest.approx(0.35, rel=1e-12)
    assert m["host"]["bytes_loaded"] == 6e6 and m["host"]["bytes_stored"] == 17e6
    assert m["host"]["load_time_s"] == pytest.approx(0.4) and m["host"]["ttft_saved_est_s"] == pytest.approx(2.5)
    assert m["host"]["capacity_bytes"] == 2 * GiB
    assert m["nvme"]["hit_entries"] == 3 and m["nvme"]["hit_rate"] == pytest.approx(0.075, rel=1e-12)
    assert merge_summaries([None, None]) is None
    assert tier_note(m) == "prefix reuse of 40 entries: GPU 25.0%, host 35.0%, nvme 7.5%"


def test_two_replicas_tiers_are_summed_in_the_cluster_summary():
    """Round-robin over 2 replicas with 100 GPU blocks each. Replica 0 (requests 0, 2, 4): session A's
    turn 2 (t=5) finds its 2 entries (512 tokens = 32 blocks each) in the host tier after B evicted
    them from the GPU: 2 + 2 + 2 = 6 wanted, 2 host hits. Replica 1 (1, 3, 5): three 600-token prompts
    with 1 entry each and no reuse: 3 wanted, 0 hits. Cluster: 9 wanted, host hit rate 2 / 9 (not the
    mean of 1/3 and 0, 1/6); stored 4 x 32 + 3 x 32 blocks of 2 MiB = 469,762,048 B; loaded 64 blocks =
    134,217,728 B; capacity 2 x 1 GiB."""
    dep = a100_llama()
    m = make_method("full", dep)
    cfg = SimConfig(kv_offload=KVOffload(host_bytes=GiB))
    cfg = cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, 100, cfg)})
    tr = make_trace([0.0, 0.5, 2.0, 2.5, 5.0, 5.5], [1100, 600, 1500, 600, 1100, 600], [2] * 6,
                    prefix=[(1, 2, 3), (21, 22), (11, 12, 13), (31, 32), (1, 2, 4), (41, 42)], pb=512)
    res = simulate_cluster(dep, m, tr, cfg, replicas=2, router="round-robin")
    per = [r.summary["kv_offload"] for r in res.replicas]
    assert [p["wanted_entries"] for p in per] == [6, 3] and [p["host"]["hit_entries"] for p in per] == [2, 0]
    s = res.summary["kv_offload"]
    assert s["wanted_entries"] == 9 and s["replicas"] == 2
    assert s["host"]["hit_entries"] == 2 and s["host"]["hit_rate"] == pytest.approx(2 / 9, rel=1e-12)
    assert s["host"]["bytes_stored"] == 7 * 32 * MiB2 == 469762048
    assert s["host"]["bytes_loaded"] == 134217728 and s["host"]["capacity_bytes"] == 2 * GiB
    assert s["host"]["load_time_s"] == pytest.approx(per[0]["host"]["load_time_s"], rel=1e-12)
    assert res.records.cached_tokens.tolist() == [0, 0, 0, 0, 1024, 0]
    # the plan's digest carries the merged tiers, and its note shows them
    point = digest(res, 1.0, 2)
    assert point.kv_offload == s
    assert "host 22.2%" in tier_note(point.kv_offload)


def test_cluster_without_tiers_has_no_tier_summary():
    """--kv-offload absent: the cluster summary's kv_offload is None (nothing else changes)."""
    dep = a100_llama()
    m = make_method("full", dep)
    tr = make_trace([0.0, 0.5], [600, 600], [2, 2], prefix=[(1, 2), (3, 4)], pb=512)
    res = simulate_cluster(dep, m, tr, SimConfig(), replicas=2, router="round-robin")
    assert res.summary["kv_offload"] is None and digest(res).kv_offload is None
