"""KV offload tiers with disaggregated prefill/decode (`--disagg P:D --kv-offload ...`): the prefill
instances run the tiers, the decode instances run none, the summary's `kv_offload` is the prefill
instances' tiers merged (counters summed, hit rates recomputed from the sums)."""

import json
from dataclasses import replace
import subprocess
import sys

import numpy as np
import pytest

from kvsim.hardware import load_link
from kvsim.methods import make_method
from kvsim.plan.cluster import simulate_cluster
from kvsim.plan.disagg import simulate_disagg
from kvsim.sim.config import SimConfig
from kvsim.sim.kv_tiers import KVOffload, merge_summaries
from kvsim.traces import load_trace
from test_sim_support import a100_llama, make_trace, util_for_blocks

GiB = 2**30
MiB2 = 2**21  # one KV block of Llama-3.1-8B: 16 tokens x 131,072 B


def _disagg(trace, offload, n_p=1, n_d=1, blocks=100, router="round-robin"):
    dep = a100_llama()
    m = make_method("full", dep)
    cfg = SimConfig(kv_offload=offload)
    cfg = cfg.model_copy(update={"gpu_memory_utilization": util_for_blocks(dep, m, blocks, cfg)})
    return simulate_disagg(dep, m, dep, m, trace, load_link("ib-ndr"), cfg, n_p, n_d, router), cfg


def test_two_prefill_instances_tiers_by_hand():
    """2 prefill instances round-robin, 100 GPU blocks each, 1 GiB host tier each; 2 decode instances.
    Prefill instance 0 (requests 0, 2, 4): A's turn 1 (1,100 tokens, entries A1 A2 of 512 tokens = 32
    blocks each), B (t=2, 1,500 other tokens = 94 blocks) evicts A1, A2 from the GPU, A's turn 2 (t=5)
    loads them from the host tier: 2 + 2 + 2 = 6 wanted, 2 host hits. Instance 1 (1, 3, 5): three
    600-token prompts, 1 entry each, no reuse: 3 wanted. Merged: 9 wanted, host hit rate 2 / 9 (the
    mean of the instances' rates, (1/3 + 0) / 2 = 1/6, would be wrong); stored (2 + 2 + 1 + 1 + 1) x 32
    blocks x 2 MiB = 469,762,048 B; loaded 64 blocks = 134,217,728 B; capacity 2 x 1 GiB. Turn 2's 1,024
    tokens are cached (the prefill instance's count, kept in the records)."""
    tr = make_trace([0.0, 0.5, 2.0, 2.5, 5.0, 5.5], [1100, 600, 1500, 600, 1100, 600], [2] * 6,
                    prefix=[(1, 2, 3), (21, 22), (11, 12, 13), (31, 32), (1, 2, 4), (41, 42)], pb=512)
    res, _ = _disagg(tr, KVOffload(host_bytes=GiB), n_p=2, n_d=2)
    s = res.summary["kv_offload"]
    assert s is not None and s["replicas"] == 2 and s["wanted_entries"] == 9
    assert s["host"]["hit_entries"] == 2 and s["host"]["hit_rate"] == pytest.approx(2 / 9, rel=1e-12)
    assert s["gpu"]["hit_entries"] == 0 and s["gpu"]["hit_rate"] == 0.0
    assert s["host"]["bytes_stored"] == 7 * 32 * MiB2 == 469762048
    assert s["host"]["bytes_loaded"] == 64 * MiB2 == 134217728 and s["host"]["capacity_bytes"] == 2 * GiB
    assert "nvme" not in s
    assert res.records.cached_tokens.tolist() == [0, 0, 0, 0, 1024, 0]
    assert res.prefill_of.tolist() == [0, 1, 0, 1, 0, 1]
    # decode instances run no tiers: no tier summary, no "tiers unused" note
    assert all(d.summary["kv_offload"] is None for d in res.parts["decode"])
    assert not any("offload" in n for n in res.summary["notes"])


def test_one_prefill_instance_and_nvme_by_hand():
    """1:1, a host tier of one entry (32 blocks = 64 MiB) and 1 GiB of NVMe. A's turn 1 stores A1, A2
    (the second store overflows the host tier: A1... is spilled), B stores B1, B2; turn 2 finds A1 and
    A2 below the GPU (B evicted them there): 2 hits of 6 wanted from host + NVMe together, 1,024 tokens
    cached. Tier summary of 1 instance: replicas 1."""
    tr = make_trace([0.0, 2.0, 5.0], [1100, 1500, 1100], [2, 2, 2], prefix=[(1, 2, 3), (11, 12, 13), (1, 2, 4)],
                    pb=512)
    res, _ = _disagg(tr, KVOffload(host_bytes=32 * MiB2, nvme_bytes=GiB))
    s = res.summary["kv_offload"]
    assert s["replicas"] == 1 and s["wanted_entries"] == 6
    assert s["host"]["hit_entries"] + s["nvme"]["hit_entries"] == 2 and s["nvme"]["hit_entries"] >= 1
    assert res.records.cached_tokens.tolist() == [0, 0, 1024]
    # the host tier holds at most one entry: 4 entries stored, 3 spilled to NVMe (32 blocks each)
    assert s["host"]["bytes_stored"] == 4 * 32 * MiB2 and s["host"]["bytes_evicted"] == 3 * 32 * MiB2
    assert s["nvme"]["bytes_stored"] == 3 * 32 * MiB2


def test_decode_instances_keep_their_host_pool():
    """The host tier is the prefill instances' memory: a decode instance's host KV pool is the same
    with and without --kv-offload (before, the unused tier was taken from it)."""
    tr = make_trace([0.0, 1.0], [600, 600], [4, 4], prefix=[(1, 2), (1, 3)], pb=512)
    on, _ = _disagg(tr, KVOffload(host_bytes=64 * GiB))
    off, _ = _disagg(tr, None)
    assert on.summary["kv_host_capacity_bytes"] == off.summary["kv_host_capacity_bytes"]
    assert off.summary["kv_offload"] is None
    # the prefill instance's host pool is smaller by the tier (64 GiB = 32,768 blocks of 2 MiB)
    pre_on, pre_off = on.parts["prefill"].summary, off.parts["prefill"].summary
    assert pre_off["num_host_blocks"] - pre_on["num_host_blocks"] == 32768
    # same TTFTs: the tier never served anything here (entry 1 is a GPU hit for request 1)
    assert np.array_equal(on.records.first_token_s, off.records.first_token_s)


def test_disagg_tier_summary_is_the_prefill_instances_merged():
    """Invariant on a reusing trace (SCBench-style contexts, 3 prefill instances, a host tier that evicts
    and an NVMe tier): the summary's tiers are exactly `merge_summaries` of the prefill instances';
    every hit rate is its tier's hits over the summed wanted entries; stored - evicted = held per tier;
    the records' cached tokens are the prefill instances' (a prefill-only cluster run gives the same)."""
    tr = load_trace("synthetic-scbench:contexts=8,context=2048,rate=4,output=8", num_requests=120, seed=3)
    off = KVOffload(host_bytes=400 * MiB2, nvme_bytes=2 * GiB)
    res, cfg = _disagg(tr, off, n_p=3, n_d=2, blocks=600, router="least-outstanding")
    s = res.summary["kv_offload"]
    pre = res.parts["prefill"]
    assert s == merge_summaries([r.summary["kv_offload"] for r in pre.replicas])
    assert s["replicas"] == 3 and s["wanted_entries"] > 0
    total_hits = s["gpu"]["hit_entries"]
    for t in ("host", "nvme"):
        assert s[t]["hit_rate"] == s[t]["hit_entries"] / s["wanted_entries"]
        assert s[t]["bytes_stored"] - s[t]["bytes_evicted"] == s[t]["bytes_held_at_end"] <= s[t]["capacity_bytes"]
        total_hits += s[t]["hit_entries"]
    assert s["host"]["hit_entries"] > 0 and s["host"]["evictions"] > 0
    assert total_hits <= s["wanted_entries"]
    alone = simulate_cluster(a100_llama(), make_method("full", a100_llama()),
                             replace(tr, output_tokens=np.ones(len(tr), dtype=np.int64)),
                             cfg, 3, "least-outstanding")
    assert alone.summary["kv_offload"] == s
    assert np.array_equal(alone.records.cached_tokens, res.records.cached_tokens)


def _kvsim(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_cli_simulate_disagg_reports_the_tiers(tmp_path):
    """`kvsim simulate --disagg 1:1 --kv-offload host=8GiB --json` on a session trace whose GPU pool
    evicts: the summary carries the prefill instance's tiers, no 'tiers unused' note; the table shows them."""
    args = ["simulate", "--trace", "burstgpt3-sample", "--gpu-memory-utilization", "0.22", "--kv-offload", "host=8GiB",
            "--disagg", "1:1"]
    r = _kvsim(*args, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    t = s["kv_offload"]
    assert t["replicas"] == 1 and t["host"]["hit_entries"] > 0 and t["host"]["capacity_bytes"] == 8 * GiB
    assert t["host"]["hit_rate"] == t["host"]["hit_entries"] / t["wanted_entries"]
    assert not any("offload" in n for n in s["notes"])
    table = _kvsim(*args, cwd=tmp_path)
    assert table.returncode == 0 and "host tier: hit rate" in table.stdout


def test_cli_disagg_tier_is_checked_against_the_prefill_node(tmp_path):
    """The tier lives on the prefill node: 1,000 GiB fits an H100 node's usable host memory (0.9 x 2,048
    GiB = 1,843.2 GiB) but not an L20 node's (0.9 x 512 = 460.8 GiB). Prefill H100, decode L20: runs;
    prefill L20, decode H100: exit 1, one 'error:' line naming the host tier, no traceback."""
    base = ["simulate", "--trace", "synthetic-fixed:prompt=10,output=2", "-n", "2", "--disagg", "1:1",
            "--kv-offload", "host=1000GiB", "--json"]
    ok = _kvsim(*base, "--hw", "h100", "--decode-hw", "l20", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    bad = _kvsim(*base, "--hw", "l20", "--decode-hw", "h100", cwd=tmp_path)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "host tier" in lines[0]
