"""Multi-GPU serving: TP memory accounting, host sharing, routers, and replica scaling (real simulator)."""

from dataclasses import replace

import numpy as np
import pytest

from kvsim.plan.cluster import host_shared, simulate_cluster
from kvsim.plan.digest import digest
from kvsim.errors import ConfigError
from kvsim.pricing.memory import memory_budget
from kvsim.plan.evaluate import at_rate, build, simulate_point
from kvsim.plan.schema import SLO, ConfigSpec
from kvsim.plan.ratesearch import search_max_rate
from kvsim.sim.replica import SimConfig, simulate
from kvsim.traces import load_trace


@pytest.fixture(scope="module")
def a100_full():
    return build(ConfigSpec(hw="a100", model="llama-3.1-8b", method="full"))


@pytest.fixture(scope="module")
def burst100():
    return load_trace("synthetic-burstgpt", num_requests=100, seed=3)


def test_tp2_halves_weight_bytes_per_gpu():
    """TP=2: weights per GPU are P * 2 B / 2 (Llama-3.1-8B, 8.03e9 params: 16.06 GB -> 8.03 GB) and
    the KV left per GPU grows by the weights saved plus the engine-reserve change. Activation peak:
    tp 1 the forward, 8192 * (2*4096 + 4096 + 3*14336) * 2 B = 905,969,664; tp 2 the forward drops
    to 8192 * (2*4096 + 2048 + 3*7168) * 2 = 520,093,696 below the sampler, whose all-gathered logits
    do not shrink: (8192 + 512) * 4096 * 2 + 256 * 128,256 * 14 + 108 * 128,256 * 4 = 586,379,264.
    Non-torch memory grows from 0.25 to 2.07 GiB (engine_memory.NON_TORCH_INCREASE_BYTES_BY_TP)."""
    d1, m1 = build(ConfigSpec(hw="a100", model="llama-3.1-8b", method="full", tp=1))
    d2, m2 = build(ConfigSpec(hw="a100", model="llama-3.1-8b", method="full", tp=2))
    b1 = memory_budget(d1, m1, max_tokens_per_step=8192, max_seqs=256)
    b2 = memory_budget(d2, m2, max_tokens_per_step=8192, max_seqs=256)
    assert b2.weights_bytes == pytest.approx(b1.weights_bytes / 2)
    assert b1.weights_bytes == pytest.approx(d1.model.total_params * 2)
    ws = 8_519_680  # cuBLAS workspace, CC 8.0
    assert b1.reserve.activation_bytes == 905_969_664 + ws
    assert b2.reserve.activation_bytes == 586_379_264 + ws
    assert b2.reserve.non_torch_bytes - b1.reserve.non_torch_bytes == pytest.approx((2.07 - 0.25) * 2**30)
    assert b2.kv_gpu_bytes - b1.kv_gpu_bytes == pytest.approx(
        b1.weights_bytes / 2 + (905_969_664 - 586_379_264) - (2.07 - 0.25) * 2**30)
    # the simulator's pools use the same budget: 8 KV heads split over 2 GPUs -> half the bytes per token
    # per GPU, so the TP=2 replica holds more than twice the tokens of TP=1
    tr = load_trace("synthetic-fixed:n=4,prompt=512,output=8")
    s1, s2 = simulate(d1, m1, tr).summary, simulate(d2, m2, tr).summary
    assert s2["kv_gpu_capacity_bytes"] > s1["kv_gpu_capacity_bytes"]
    assert s2["num_gpu_blocks"] > 2 * s1["num_gpu_blocks"]


def test_host_memory_is_shared_by_replicas_on_a_node(a100_full):
    """8-GPU node: 4 TP1 replicas get 1/4 of the host each; 16 get 1/8 (8 per node); TP8 keeps it all."""
    dep, _ = a100_full
    host = dep.system.host_memory_bytes
    assert host_shared(dep, 1) is dep
    assert host_shared(dep, 4).system.host_memory_bytes == pytest.approx(host / 4)
    assert host_shared(dep, 16).system.host_memory_bytes == pytest.approx(host / 8)
    tp8 = replace(dep, tp=8)
    assert host_shared(tp8, 3).system.host_memory_bytes == host


def test_replicas_on_a_node_share_its_dram_bandwidth_and_cpu(a100_full):
    """The a100 node's 2 sockets: 4 TP1 replicas each get a quarter of the host's DRAM bandwidth and
    CPU FLOP/s, as of its memory. Eight MagicPIG replicas on one 8-GPU node, each with a burst of 4
    long prompts, then decode far slower than one replica alone (CPU attention on an eighth of the
    DRAM bandwidth); before, each ran as fast as one alone (a user audit: 8.0x the tokens/s)."""
    dep, _ = a100_full
    base, q = dep.system, host_shared(dep, 4).system
    assert q.host_dram_bw_bytes_per_s == pytest.approx(base.host_dram_bw_bytes_per_s / 4)
    assert q.host_peak_flops_per_s("fp32") == pytest.approx(base.host_peak_flops_per_s("fp32") / 4)
    assert q.gpu_host_link == base.gpu_host_link  # each GPU keeps its own PCIe link
    from kvsim.methods import make_method
    from kvsim.traces.base import Trace

    m = make_method("magicpig", dep)
    tpot = {}
    for n in (1, 8):
        k = 4 * n
        tr = Trace(arrival_s=np.zeros(k), prompt_tokens=np.full(k, 16000), output_tokens=np.full(k, 32), name="burst")
        tpot[n] = simulate_cluster(dep, m, tr, SimConfig(), replicas=n, router="round-robin").summary["tpot_s"]["p50"]
    assert tpot[8] > 2 * tpot[1]


def test_plan_prices_a_replica_on_a_full_node(monkeypatch, a100_full, burst100):
    """kvsim plan's evaluator gives every configuration a full node's share of the host (8 TP1 or 4 TP2
    replicas on the a100 node), whatever its replica count."""
    import kvsim.plan.evaluate as ev

    seen = []
    real = ev.simulate_cluster
    monkeypatch.setattr(ev, "simulate_cluster", lambda *a, **k: seen.append(k["node_replicas"]) or real(*a, **k))
    tr = at_rate(load_trace("synthetic-burstgpt", num_requests=3, seed=0), 1.0)
    for tp in (1, 2):
        simulate_point(ConfigSpec(hw="a100", model="llama-3.1-8b", method="full", tp=tp), tr, 1.0, {})
    assert seen == [8, 4]


def test_one_replica_is_exactly_simulate(a100_full, burst100):
    """simulate_cluster with one replica gives simulate's summary."""
    dep, m = a100_full
    tr = at_rate(burst100, 4.0)
    a = simulate(dep, m, tr).summary
    b = simulate_cluster(dep, m, tr, SimConfig(), replicas=1).summary
    for k in ("ttft_s", "itl_s", "e2el_s", "throughput_output_tok_s", "requests_completed"):
        assert a[k] == b[k], k


@pytest.mark.parametrize("rate", [2.0, 30.0])
def test_lockstep_driving_one_replica_matches_simulate(rate, a100_full, burst100):
    """The externally driven replica (ReplicaSim, arrivals fed one by one) reproduces simulate exactly."""
    from kvsim.plan.cluster import lockstep
    from kvsim.sim.replica import ReplicaSim

    dep, m = a100_full
    tr = at_rate(burst100, rate)
    ref = simulate(dep, m, tr)
    sim = ReplicaSim(dep, m, tr, SimConfig())
    assert lockstep([sim], tr, lambda i, loads: 0).tolist() == [0] * len(tr)
    got = sim.finish()
    np.testing.assert_array_equal(got.records.first_token_s, ref.records.first_token_s)
    np.testing.assert_array_equal(got.records.finish_s, ref.records.finish_s)
    assert got.summary["itl_s"] == ref.summary["itl_s"]


@pytest.mark.parametrize("router", ["round-robin", "least-outstanding", "prefix-aware"])
def test_every_request_served_once(router, a100_full, burst100):
    """Merged records: each request on exactly one replica, finished after it arrived; counts add up."""
    dep, m = a100_full
    tr = at_rate(burst100, 12.0)
    res = simulate_cluster(dep, m, tr, SimConfig(), replicas=3, router=router)
    s = res.summary
    assert sorted(set(res.replica_of.tolist())) == [0, 1, 2]
    assert sum(s["requests_per_replica"]) == len(tr) == s["requests_completed"] + s["requests_rejected"]
    rec = res.records
    np.testing.assert_array_equal(rec.arrival_s, tr.arrival_s)
    done = rec.status == 1
    assert np.all(rec.first_token_s[done] >= rec.arrival_s[done]) and np.all(rec.finish_s[done] >= rec.first_token_s[done])
    if router == "round-robin":
        np.testing.assert_array_equal(res.replica_of, np.arange(len(tr)) % 3)
    # cluster timelines sum replicas: running sequences never exceed 3 x max_num_seqs
    assert res.timeline["running"].max() <= 3 * 256


def test_least_outstanding_balances_a_burst(a100_full):
    """40 requests at one instant: least-outstanding deals them 10/10/10/10."""
    dep, m = a100_full
    tr = load_trace("synthetic-fixed:n=40,prompt=256,output=32")
    res = simulate_cluster(dep, m, tr, SimConfig(), replicas=4, router="least-outstanding")
    assert res.summary["requests_per_replica"] == [10, 10, 10, 10]


def test_prefix_aware_sends_a_request_where_most_of_its_prefix_went():
    """Mooncake requests whose leading prefix ids were mostly sent to one replica go there (no spill):
    for each request, more than half of its ids were already on its replica, or no replica had that."""
    dep, m = build(ConfigSpec(hw="a100", model="llama-3.1-8b", method="full"))
    tr = load_trace("mooncake-synthetic", limit=150, max_prompt_tokens=16000)
    res = simulate_cluster(dep, m, at_rate(tr, 2.0), SimConfig(), replicas=3, router="prefix-aware", balance_abs=10**9)
    seen = [set() for _ in range(3)]
    hits = 0
    for i, blocks in enumerate(tr.prefix_blocks):
        if not blocks:
            continue
        lead = [next((j for j, b in enumerate(blocks) if b not in s), len(blocks)) for s in seen]
        k = int(res.replica_of[i])
        if max(lead) > len(blocks) / 2:
            assert lead[k] == max(lead)
            hits += 1
        seen[k].update(blocks)
    assert hits > 0


def test_prefix_trees_route_by_hand():
    """SGLang's cache-aware rule on prefix ids (kvsim/sim/routing.py), three replicas."""
    from kvsim.sim.routing import PrefixTrees

    t = PrefixTrees(3)
    loads = [0, 0, 0]
    assert t.choose([1, 2, 3, 4], loads, 0, 32, 1.5) == 0  # nothing cached anywhere: the least cached, lowest index
    assert t.choose([1, 2, 3, 9], loads, 0, 32, 1.5) == 0  # 3 of 4 leading ids on replica 0 (> half)
    assert t.choose([1, 7, 8, 9], loads, 0, 32, 1.5) == 1  # 1 of 4 (not > half): the least cached (replica 1, 0 ids)
    assert t.choose([5, 6], loads, 0, 32, 1.5) == 2  # replica 2 holds none
    # imbalanced (40 - 0 > 32 and 40 > 1.5 x 0): the least loaded, whatever is cached
    assert t.choose([1, 2, 3, 4], [40, 0, 3], 1, 32, 1.5) == 1
    assert t.ids[1] >= {1, 2, 3, 4}


def test_prefix_aware_caches_more_than_round_robin_on_conversations():
    """Mooncake conversations (300 requests) on 4 H100 replicas: the cache-aware router keeps
    sessions together (193,024 cached tokens against round-robin's 166,400; 189,440 while a finished
    prompt's head was evicted before its tail); routing on the first block's hash, before, sent most
    requests to one replica (their shared first block)."""
    dep, m = build(ConfigSpec(hw="h100", model="llama-3.1-8b", method="full"))
    tr = load_trace("mooncake-conversation", limit=300)
    got = {r: simulate_cluster(dep, m, tr, SimConfig(), replicas=4, router=r) for r in ("round-robin", "prefix-aware")}
    cached = {r: int(res.records.cached_tokens.sum()) for r, res in got.items()}
    assert cached == {"round-robin": 166_400, "prefix-aware": 193_024}
    assert max(got["prefix-aware"].summary["requests_per_replica"]) < 2 * 300 / 4


def test_unknown_router_is_an_error(a100_full, burst100):
    dep, m = a100_full
    with pytest.raises(ConfigError, match="unknown router 'random'"):
        simulate_cluster(dep, m, burst100, SimConfig(), replicas=2, router="random")


def test_more_replicas_never_lower_the_sustainable_rate(burst100):
    """Max rate meeting p90 TTFT <= 0.5 s and TBT <= 0.05 s (real simulator, 100 requests) grows with replicas."""
    slo = SLO(ttft_s=0.5, itl_s=0.05, percentile="p90")
    rates = []
    for n in (1, 2, 3):
        cfg = ConfigSpec(hw="a100", model="llama-3.1-8b", method="full", replicas=n)

        def feasible(r, cfg=cfg):
            p = simulate_point(cfg, at_rate(burst100, r), r, {})
            return p.meets(slo), p

        rates.append(search_max_rate(feasible, start_rate_per_s=2.0, rel_tol=0.1).max_rate_per_s)
    assert rates[0] > 0 and rates[0] <= rates[1] <= rates[2], rates
    assert rates[2] > 1.5 * rates[0]


def test_digest_is_json_and_has_cdfs(a100_full, burst100):
    """The digest keeps percentiles, 101-point CDFs and a downsampled timeline."""
    dep, m = a100_full
    p = digest(simulate(dep, m, at_rate(burst100, 4.0)), 4.0)
    assert len(p.ttft_quantiles_s) == 101 and len(p.itl_quantiles_s) == 101
    assert p.ttft_quantiles_s == sorted(p.ttft_quantiles_s)
    assert p.timeline is not None and 0 < len(p.timeline.t_s) <= 400
    assert p.requests_completed == 100 and p.throughput_output_tok_s > 0
    assert type(p).model_validate_json(p.model_dump_json()) == p


def test_summed_timeline_counts_every_gpu_and_drops_finished_replicas():
    """The cluster's timeline sums each replica's per-GPU KV gauge once per GPU (TP), and a replica
    that has finished adds nothing after its last bucket (user audit: a finished replica's last
    value carried on to the end, and TP 2 replicas counted one GPU each)."""
    from kvsim.plan.cluster import _sum_timelines

    a = {"t_s": np.array([0.0, 1.0, 2.0]), "kv_gpu_bytes": np.array([10.0, 20.0, 30.0]),
         "running": np.array([1.0, 2.0, 3.0])}
    b = {"t_s": np.array([0.0, 1.0]), "kv_gpu_bytes": np.array([5.0, 5.0]), "running": np.array([1.0, 1.0])}
    out = _sum_timelines([a, b], [2, 1], n=4)  # grid 0, 2/3, 4/3, 2
    # a (TP 2): buckets 0, 0, 1, 2 -> 2 x (10, 10, 20, 30); b: buckets 0, 0, 1 and then done (its last bucket ends at 2)
    assert out["kv_gpu_bytes"].tolist() == [25.0, 25.0, 45.0, 60.0]
    assert out["running"].tolist() == [2.0, 2.0, 3.0, 3.0]
