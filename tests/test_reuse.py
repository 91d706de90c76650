"""Non-prefix KV reuse (CacheBlend, the chunk cache, the RAG generator) and KV streaming (CacheGen)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kvsim.costmodel.deployment import build_deployment
from kvsim.errors import SpecError, TraceError
from kvsim.methods import make_method
from kvsim.pricing.reuse import blend, stream
from kvsim.pricing.reuse.answer import parse_reuse_spec, reuse_answer
from kvsim.pricing.reuse.blend import BlendParams, blend_ttft, load_s_per_layer
from kvsim.pricing.reuse.pipeline import pipeline_s, uniform_pipeline_s
from kvsim.pricing.reuse.stream import StreamParams, stream_ttft
from kvsim.sim.chunk_cache import replay
from kvsim.sim.chunk_reuse import analytic_hits, chunk_cache_summary
from kvsim.sim.reference import simulate_reference
from kvsim.sim.replica import SimConfig, simulate
from kvsim.traces import load_trace
from kvsim.traces.rag import RagParams, generate, popularity
from equivalence_scenarios import Scenario, compare, run_both
from test_sim_support import FakeStep, a100_llama, make_trace


A40_YAML = Path(__file__).resolve().parent.parent / "benchmarks" / "reuse" / "a40.yaml"  # CacheBlend's GPU (user file)


def fake_prefill(step, n_new, n_cached):
    """1 ms per new token, nothing else (replaces the roofline-priced prefill step)."""
    return 0.001 * n_new


@pytest.fixture(scope="module")
def a40_mistral():
    # Mistral-7B: 32 layers, 8 KV heads x 128, bf16 -> 2 * 8 * 128 * 2 = 4096 B per token per layer
    return build_deployment(str(A40_YAML), "mistral-7b-v0.2")


# ---------------------------------------------------------------- pipeline
def test_pipeline_equal_items():
    """n equal items: a + b + (n - 1) max(a, b)."""
    # a_done 1, 2, 3; b_done 1+2=3, max(3,2)+2=5, max(5,3)+2=7
    assert pipeline_s([1, 1, 1], [2, 2, 2]) == 7
    assert uniform_pipeline_s(1, 2, 3) == 7
    assert uniform_pipeline_s(0.5, 2, 0) == 0


def test_pipeline_waits_for_the_slow_first_stage():
    """B of an item starts only when its A is done."""
    # a_done 3, 4; b_done 3+1=4, max(4,4)+1=5
    assert pipeline_s([3, 1], [1, 1]) == 5
    with pytest.raises(ValueError):
        pipeline_s([1], [1, 2])


# ---------------------------------------------------------------- CacheBlend
def test_ssd_load_of_one_layer(a40_mistral):
    """SSD tier: max(PCIe, bytes / SSD bandwidth); the 4.8 GB/s drive is the slower path."""
    # 3072 tokens x 4096 B = 12,582,912 B; / 4.8e9 B/s = 2.62144 ms (PCIe4 at 31.5 GB/s: 0.4 ms)
    assert load_s_per_layer(a40_mistral, 3072, "ssd", 4.8e9) == pytest.approx(2.62144e-3)
    assert load_s_per_layer(a40_mistral, 3072, "gpu", 4.8e9) == 0.0
    host = load_s_per_layer(a40_mistral, 3072, "host", 4.8e9)
    assert 12_582_912 / 31.5e9 <= host < 2.62144e-3  # never faster than the link's peak


def test_blend_ttft_hand_computed(a40_mistral, monkeypatch):
    """TTFT = pipeline(load_l, compute_l) with compute = (r n + q) tokens over L layers."""
    monkeypatch.setattr(blend, "prefill_step_s", fake_prefill)
    r = blend_ttft(a40_mistral, BlendParams(tier="ssd", full_recompute_layers=0))
    # n = 6 x 512 = 3072, q = 64, r = 0.15: recompute 460.8 + 64 = 524.8 tokens = 0.5248 s / 32 = 16.4 ms per layer;
    # load 2.62144 ms per layer < 16.4 ms: TTFT = 2.62144 ms + 32 x 16.4 ms = 0.52742144 s
    assert r.compute_s_per_layer == pytest.approx(0.0164)
    assert r.ttft_s == pytest.approx(0.52742144)
    # full recompute: 3136 tokens = 3.136 s; prefix caching: first chunk's 512 tokens reused,
    # 2624 computed = 82 ms per layer; its load 512 x 4096 / 4.8e9 = 0.436907 ms: 0.436907 ms + 32 x 82 ms
    assert r.full_recompute_s == pytest.approx(3.136)
    assert r.prefix_caching_s == pytest.approx(512 * 4096 / 4.8e9 + 2.624)
    assert r.speedup_vs_recompute == pytest.approx(3.136 / 0.52742144)


def test_blend_default_prefills_the_first_layer_in_full(a40_mistral, monkeypatch):
    """CacheBlend §4.3 picks the HKVD tokens from the first layer's full prefill: one full layer by default."""
    monkeypatch.setattr(blend, "prefill_step_s", fake_prefill)
    assert BlendParams().full_recompute_layers == 1
    r = blend_ttft(a40_mistral, BlendParams(tier="ssd"))
    assert r.full_layers == 1 and r.full_layer_s == pytest.approx(0.098)
    # layer 1: 3.136 s / 32 = 98 ms, no load (it recomputes every token's KV); layers 2-32: 16.4 ms each,
    # their loads of 2.62144 ms hidden behind layer 1's 98 ms: 98 + 31 x 16.4 = 606.4 ms
    assert r.ttft_s == pytest.approx(0.6064)


def test_blend_full_first_layers(a40_mistral, monkeypatch):
    """Leading full-recompute layers cost a full layer each, still pipelined with the loads."""
    monkeypatch.setattr(blend, "prefill_step_s", fake_prefill)
    r = blend_ttft(a40_mistral, BlendParams(tier="ssd", full_recompute_layers=2))
    # layers 1-2: 3.136 / 32 = 98 ms each, no load; 3-32: 16.4 ms, loads of 2.62144 ms hidden.
    # 98 + 98 + 30 x 16.4 = 688 ms
    assert r.ttft_s == pytest.approx(0.688)
    # every layer recomputed in full loads nothing: exactly full recompute (32 x 98 ms = 3.136 s), not more
    every = blend_ttft(a40_mistral, BlendParams(tier="ssd", full_recompute_layers=32))
    assert every.ttft_s == pytest.approx(every.full_recompute_s) == pytest.approx(3.136)


def test_blend_load_bound_on_a_slow_drive(a40_mistral, monkeypatch):
    """When loading is slower than recompute, the loads set the pace."""
    monkeypatch.setattr(blend, "prefill_step_s", fake_prefill)
    r = blend_ttft(a40_mistral, BlendParams(tier="ssd", ssd_bw_bytes_per_s=0.1e9, full_recompute_layers=0))
    # load 12,582,912 / 1e8 = 125.83 ms per layer > 16.4 ms: 32 x 125.82912 ms + 16.4 ms
    assert r.ttft_s == pytest.approx(32 * 0.12582912 + 0.0164)


def test_blend_gpu_tier_equals_one_recompute_step(a40_mistral):
    """With no load, TTFT is exactly the recompute step the simulator charges (r n + q after (1 - r) n)."""
    r = blend_ttft(a40_mistral, BlendParams(tier="gpu", full_recompute_layers=0))
    from kvsim.methods.full import Full
    from kvsim.pricing.step import StepModel

    step = StepModel(a40_mistral, Full(a40_mistral))
    assert r.ttft_s == pytest.approx(blend.prefill_step_s(step, 0.15 * 3072 + 64, 0.85 * 3072), rel=1e-12)
    assert r.ttft_s < r.prefix_caching_s < r.full_recompute_s


def test_blend_gpu_tier_default_close_to_the_simulators_step(a40_mistral):
    """Default (first layer full): the estimate and the simulator's one step with hit (1 - r) n (L - 1) / L
    agree to 1% (equal linear work; the full layer's attention is spread over the step)."""
    r = blend_ttft(a40_mistral, BlendParams(tier="gpu"))
    from kvsim.methods.full import Full
    from kvsim.pricing.step import StepModel

    step = StepModel(a40_mistral, Full(a40_mistral))
    hit = 0.85 * 3072 * 31 / 32  # 2529.6 tokens skipped
    sim = blend.prefill_step_s(step, 3136 - hit, hit)
    assert sim == pytest.approx(r.ttft_s, rel=0.01)
    assert r.ttft_s > blend_ttft(a40_mistral, BlendParams(tier="gpu", full_recompute_layers=0)).ttft_s


# ---------------------------------------------------------------- CacheGen
def test_stream_raw_two_chunks(a40_mistral, monkeypatch):
    """Raw KV: no decode, the chunks' transfers add up, then the suffix prefill."""
    monkeypatch.setattr(stream, "prefill_step_s", fake_prefill)
    p = StreamParams(context_tokens=3000, question_tokens=64, link_gbps=8, level="raw", chunk_tokens=1500)
    r = stream_ttft(a40_mistral, p)
    # 131,072 B/token (32 x 4096) x 1500 = 196,608,000 B per chunk at 8 Gbit/s = 1e9 B/s: 0.196608 s;
    # two chunks 0.393216 s + 64 ms suffix = 0.457216 s; recompute 3064 tokens = 3.064 s -> stream
    assert r.stream_s == pytest.approx(0.457216)
    assert r.recompute_s == pytest.approx(3.064)
    assert r.choice == "stream" and r.ttft_s == pytest.approx(0.457216)
    # at 0.5 Gbit/s (6.25e7 B/s) a chunk takes 3.145728 s: 6.355456 s > 3.064 s -> recompute
    slow = stream_ttft(a40_mistral, p.model_copy(update={"link_gbps": 0.5}))
    assert slow.stream_s == pytest.approx(6.355456) and slow.choice == "recompute" and slow.ttft_s == pytest.approx(3.064)


def test_stream_short_last_chunk(a40_mistral, monkeypatch):
    """A shorter last chunk streams its own bytes only."""
    monkeypatch.setattr(stream, "prefill_step_s", fake_prefill)
    r = stream_ttft(a40_mistral, StreamParams(context_tokens=2000, question_tokens=0, link_gbps=8, level="raw",
                                              chunk_tokens=1500))
    # chunks of 1500 and 500 tokens: 0.196608 + 0.065536 = 0.262144 s, no suffix
    assert r.stream_s == pytest.approx(0.262144)


def test_stream_levels_sizes_and_pipeline(a40_mistral):
    """cachegen is 3.5x smaller than q8; the closed-form pipeline equals the generic flow shop."""
    q8 = stream_ttft(a40_mistral, StreamParams(context_tokens=1000, level="q8"))
    cg = stream_ttft(a40_mistral, StreamParams(context_tokens=1000, level="cachegen"))
    # 1000 tokens x 65,536 elements x 8 bits / 8 = 65,536,000 B; cachegen 8/3.5 bits: 18,724,571.4 B
    assert q8.encoded_bytes == pytest.approx(65_536_000)
    assert cg.encoded_bytes == pytest.approx(65_536_000 / 3.5)
    assert cg.decode_s > 0
    p = StreamParams(context_tokens=4000, question_tokens=0, level="cachegen", chunk_tokens=1500, link_gbps=50)
    r = stream_ttft(a40_mistral, p)
    sizes = [1500, 1500, 1000]
    tx = [n * 65536 * (8 / 3.5) / 8 / (50e9 / 8) for n in sizes]
    from kvsim.methods.full import Full
    from kvsim.pricing.step import StepModel

    step = StepModel(a40_mistral, Full(a40_mistral))
    dec = [stream.decode_seconds(a40_mistral, step, n, p) for n in sizes]
    assert sum(dec) == pytest.approx(r.decode_s)
    assert r.stream_s == pytest.approx(pipeline_s(tx, dec), rel=1e-6)


# ---------------------------------------------------------------- --reuse specs
def test_reuse_spec_errors_are_one_line(a40_mistral):
    """Bad --reuse specs raise one-line SpecErrors naming the field."""
    with pytest.raises(SpecError, match="tier"):
        parse_reuse_spec("cacheblend:tier=disk")
    with pytest.raises(SpecError, match="link_gbps"):
        parse_reuse_spec("cachegen:link_gbps=0")
    with pytest.raises(Exception, match="reuse kind"):
        parse_reuse_spec("cachefoo:x=1")
    a = reuse_answer(a40_mistral, "cachegen:link_gbps=3")
    assert 3.0 in a["ttft_vs_bandwidth"]["link_gbps"]
    lv = a["ttft_vs_bandwidth"]["ttft_s_by_level"]
    assert all(x <= y + 1e-12 for x, y in zip(lv["cachegen"], lv["q8"]))  # smaller bytes never slower


# ---------------------------------------------------------------- chunk cache
def test_lru_demotes_and_promotes():
    """GPU 2 slots, host 1: the GPU's LRU victim goes to the host; a host hit comes back up."""
    # req0: 1, 2 miss -> gpu [1, 2]; req1: 3 miss, 1 demoted -> host [1]; req2: 1 host hit, 2 demoted;
    # req3: 2 host hit
    h = replay([(1, 2), (3,), (1,), (2,)], chunk_bytes=1.0, capacity_bytes=(2, 1, 0), policy="lru")
    assert h.misses.tolist() == [2, 1, 0, 0]
    assert h.hits.tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert h.hit_rate() == pytest.approx(2 / 5)


def test_cachecraft_keeps_the_frequent_chunk():
    """LFU (cachecraft) and LRU evict different chunks from a 2-slot GPU tier."""
    reqs = [(1,), (1,), (2,), (3,), (2,), (1,)]
    # LRU: at 3, chunk 1 (last used 2nd) is older than 2 -> evicted; 2 hits, then 1 misses
    lru = replay(reqs, 1.0, (2, 0, 0), "lru")
    assert lru.misses.tolist() == [1, 0, 1, 1, 0, 1]
    # LFU: at 3, chunk 2 (1 use) goes, 1 (2 uses) stays; 2 misses, evicting 3; 1 hits
    lfu = replay(reqs, 1.0, (2, 0, 0), "cachecraft")
    assert lfu.misses.tolist() == [1, 0, 1, 1, 1, 0]


def test_capacity_in_bytes_rounds_down_to_chunks():
    """A tier of 2.9 chunks' bytes holds 2 chunks; a zero tier is skipped."""
    h = replay([(1,), (2,), (3,), (1,)], chunk_bytes=10.0, capacity_bytes=(29.0, 0.0, 10.0), policy="lru")
    # gpu [1,2]; 3 -> 1 demoted past the empty host tier to the ssd; 1 hits on the ssd
    assert h.hits[3].tolist() == [0, 0, 1]


# ---------------------------------------------------------------- RAG generator
def test_popularity_is_zipf():
    """p_i = i^-a / sum: corpus 3, a = 1 -> 6/11, 3/11, 2/11."""
    assert popularity(3, 1.0).tolist() == pytest.approx([6 / 11, 3 / 11, 2 / 11])


def test_rag_draws_follow_popularity_and_are_distinct():
    """k = 1: chunk 0 drawn ~6/11 of the time; k = corpus: every query holds each chunk once."""
    rng = np.random.default_rng(1)
    raw = generate(RagParams(n=20000, corpus=3, k=1, zipf_a=1.0), rng)
    share = np.mean([c[0] == 0 for c in raw.chunk_ids])
    assert abs(share - 6 / 11) < 0.015  # 3 sigma of a binomial share at n=20000: 0.011
    full = generate(RagParams(n=50, corpus=4, k=4), rng)
    assert all(sorted(c) == [0, 1, 2, 3] for c in full.chunk_ids)


def test_rag_trace_spec():
    """synthetic-rag options set the prompt (k x chunk + question) and carry chunk ids."""
    tr = load_trace("synthetic-rag:n=10,k=3,chunk=100,question=10,output=5,seed=3")
    assert tr.prompt_tokens.tolist() == [310] * 10 and tr.output_tokens.tolist() == [5] * 10
    assert tr.chunk_tokens == 100 and len(tr.chunk_ids) == 10 and all(len(set(c)) == 3 for c in tr.chunk_ids)
    assert len(tr.head(4).chunk_ids) == 4
    with pytest.raises(TraceError, match="corpus"):
        load_trace("synthetic-rag:k=5,corpus=4")


# ---------------------------------------------------------------- simulator
def _rag_trace():
    # two requests with the same 2 chunks of 40 tokens (+ a 20-token question), 1 s apart
    tr = make_trace([0.0, 1.0], [100, 100], [1, 1])
    return replace(tr, chunk_ids=((1, 2), (2, 1)), chunk_tokens=40)


def test_cacheblend_hit_charges_the_full_first_layer():
    """Default: the first of L layers recomputes every reused token, so the hit is (1 - r) h c (L - 1) / L."""
    dep = a100_llama()  # Llama-3.1-8B: 32 layers
    m = make_method("cacheblend:recompute_fraction=0.25", dep)
    # 80 reused tokens: 0.75 x 80 x 31 / 32 = 58.125 -> 58
    assert analytic_hits(m, _rag_trace(), np.array([100, 100])).tolist() == [0, 58]
    m32 = make_method("cacheblend:recompute_fraction=0,full_recompute_layers=32", dep)
    assert analytic_hits(m32, _rag_trace(), np.array([100, 100])).tolist() == [0, 0]  # every layer in full
    with pytest.raises(Exception, match="full_recompute_layers"):
        make_method("cacheblend:full_recompute_layers=-1", dep)


def test_cacheblend_hit_is_the_analytic_hit_in_both_simulators():
    """The second request reuses 2 x 40 chunk tokens and recomputes r = 25% of them."""
    dep = a100_llama()
    m = make_method("cacheblend:recompute_fraction=0.25,full_recompute_layers=0", dep)
    tr = _rag_trace()
    # hits 0 and 80 tokens -> floor(0.75 x 80) = 60 cached
    assert analytic_hits(m, tr, np.array([100, 100])).tolist() == [0, 60]
    cfg = SimConfig(record_token_times=True)
    ref = simulate_reference(dep, m, tr, cfg, step_model=FakeStep())
    fast = simulate(dep, m, tr, cfg, step_model=FakeStep())
    assert compare(fast, ref) == []
    # FakeStep 10 ms + 1 ms per prefill token: 0 + 0.110 s; 1.0 + 0.010 + 0.040 s
    assert ref.first_token_s.tolist() == pytest.approx([0.110, 1.050])
    assert ref.cached_tokens.tolist() == [0, 60]
    s = chunk_cache_summary(m, tr)
    assert s["lookups"] == 4 and s["hit_rate"] == 0.5 and s["hit_rate_by_tier"]["host"] == 0.5


def test_cacheblend_without_cache_is_full():
    """No chunk-cache capacity (or no chunk ids) -> no hit: the full method's prices."""
    dep = a100_llama()
    m = make_method("cacheblend:host_cache_bytes=0", dep)
    assert analytic_hits(m, _rag_trace(), np.array([100, 100])).tolist() == [0, 0]
    m2 = make_method("cacheblend", dep)
    assert analytic_hits(m2, make_trace([0.0], [100], [1]), np.array([100])).tolist() == [0]
    assert chunk_cache_summary(m2, make_trace([0.0], [100], [1])) is None


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_reference_on_rag_traces(seed):
    """Random RAG traces (hits, misses, preemption, chunking) give identical per-request timings."""
    rng = np.random.default_rng(seed)
    raw = generate(RagParams(n=25, rate=float(rng.choice([2.0, 20.0, 200.0])), corpus=12, k=3, chunk=64, question=16,
                             output=int(rng.integers(1, 40))), rng)
    tr = make_trace(raw.time_s, raw.prompt_tokens, raw.output_tokens)
    tr = replace(tr, chunk_ids=tuple(raw.chunk_ids), chunk_tokens=64)
    # 64 tokens x 131,072 B (Llama-3.1-8B) = 8.4 MB per chunk; 5e7 B holds 5 chunks of 12
    policy = ["lru", "cachecraft"][seed % 2]
    cfg = dict(max_num_seqs=int(rng.choice([2, 8, 256])), max_num_batched_tokens=int(rng.choice([64, 256, 2048])),
               chunked_prefill=bool(seed % 3), record_token_times=True)
    sc = Scenario(seed, "llama-3.1-8b", f"cacheblend:recompute_fraction=0.2,host_cache_bytes=5e7,policy={policy}",
                  tr, cfg, int(rng.integers(40, 400)), 1, "round-robin")
    got = run_both(sc)
    assert got is not None
    assert compare(*got) == [], sc.describe()
    assert 0 < np.count_nonzero(np.asarray(got[0].records.cached_tokens)) < len(tr)  # some hits, some misses


def test_successive_draw_excludes_chosen_chunks():
    """Next distinct chunk after chunk 0 of p = (6, 3, 2)/11: chunk 1 with 3/5, chunk 2 with 2/5."""
    from kvsim.traces.rag import _next_distinct

    p = popularity(3, 1.0)
    cdf = np.cumsum(p)
    rng = np.random.default_rng(7)
    draws = [_next_distinct(cdf, p, [0], rng) for _ in range(20000)]
    assert 0 not in draws
    assert abs(np.mean(np.array(draws) == 1) - 0.6) < 0.011  # 3 sigma: 3 x sqrt(0.24 / 20000)


def test_concentrated_popularity_terminates():
    """zipf_a = 10 puts ~all mass on chunk 0; 50 distinct chunks per query still come out."""
    raw = generate(RagParams(n=50, corpus=100, k=50, zipf_a=10.0), np.random.default_rng(0))
    assert all(len(set(c)) == 50 for c in raw.chunk_ids)
    with pytest.raises(ValueError, match="chunk references"):
        RagParams(n=10_000_000, k=10)


# ---------------------------------------------------------------- hybrid models
def test_reuse_refuses_hybrid_models():
    """An SSM layer's state depends on every earlier token, so chunk KVs cannot be blended or
    streamed alone: CacheBlend / CacheGen on Jamba are one-line errors, not a TTFT that loads
    the 4 attention layers' KV 32 times (CacheBlend §9: non-transformer models are future work)."""
    from kvsim.errors import ConfigError

    dep = build_deployment("h200", "jamba-v0.1", tp=2)
    with pytest.raises(ConfigError, match="state-space"):
        blend_ttft(dep, BlendParams())
    with pytest.raises(ConfigError, match="state-space"):
        stream_ttft(dep, StreamParams())
    with pytest.raises(ConfigError, match="state-space"):
        make_method("cacheblend", dep)


# ---------------------------------------------------------------- tensor parallelism
def test_shared_link_carries_the_replicas_kv_whatever_tp():
    """One network link (CacheGen) and one SSD (CacheBlend) feed every GPU of a TP replica: they
    carry the whole KV, so their seconds do not shrink with tp (per-GPU PCIe does)."""
    for tp in (1, 2):
        dep = build_deployment("h200", "llama-2-70b", tp=tp)
        # Llama-2-70B: 80 layers x 2 x 8 KV heads x 128 = 163,840 elements = 327,680 B per token (bf16);
        # 1000 tokens raw at 8 Gbit/s (1e9 B/s): 0.32768 s on the link
        r = stream_ttft(dep, StreamParams(context_tokens=1000, question_tokens=0, link_gbps=8, level="raw",
                                          chunk_tokens=1000))
        assert r.encoded_bytes == pytest.approx(327_680_000)
        assert r.transfer_s == pytest.approx(0.32768)
        # one layer of 3072 tokens: 3072 x 4096 B = 12,582,912 B from a 4.8 GB/s drive = 2.62144 ms
        assert load_s_per_layer(dep, 3072, "ssd", 4.8e9) == pytest.approx(2.62144e-3)


def test_host_chunk_cache_holds_the_replicas_kv():
    """Host DRAM and SSD tiers store a chunk's KV for every GPU of the replica: at tp = 2 a host tier of
    two chunks' replica bytes holds two chunks, not four (the GPU tier's bytes are per GPU)."""
    dep = build_deployment("h200", "llama-3.1-8b", tp=2)
    # Llama-3.1-8B: 32 x 2 x 8 x 128 x 2 B = 131,072 B per token; a 40-token chunk = 5,242,880 B (2,621,440 per GPU)
    tr = replace(make_trace([0.0, 1.0, 2.0, 3.0], [60] * 4, [1] * 4), chunk_ids=((1,), (2,), (3,), (1,)),
                 chunk_tokens=40)
    m = make_method("cacheblend:host_cache_bytes=10485760", dep)
    s = chunk_cache_summary(m, tr)
    # LRU, 2 slots: 1, 2 stored; 3 evicts 1; 1 misses again -> 0 hits of 4
    assert s["lookups"] == 4 and s["hit_rate"] == 0.0
    g = make_method("cacheblend:host_cache_bytes=0,gpu_cache_bytes=5242880", dep)  # per GPU: 2 chunks
    assert chunk_cache_summary(g, tr)["hit_rate"] == 0.0


@pytest.mark.parametrize("spec, needle", [
    ("cacheblend:chunks=0,question_tokens=0", "cacheblend: a request needs at least one token"),
    ("cachegen:context_tokens=0,question_tokens=0", "cachegen: a request needs at least one token"),
    ("cacheblend:tier=ssd,ssd_bw_bytes_per_s=1e-300", "ssd_bw_bytes_per_s: must be in [1000, 1e+15]"),
    ("cachegen:link_gbps=1e-300", "link_gbps: must be in [1e-06, 1e+07]"),
])
def test_reuse_inputs_that_price_nothing_or_overflow_are_one_line_errors(spec, needle):
    """A request of no token raised a ValueError traceback; a bandwidth of 1e-300 B/s printed an inf TTFT
    with exit 0 (user audit)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "kvsim", "estimate", "--hw", "l40s", "--model", "mistral-7b-v0.2",
                        "--reuse", spec], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and needle in r.stderr and "Traceback" not in r.stderr and "inf" not in r.stdout


def test_cacheblend_capacities_beyond_memory_and_a_trace_without_chunks_are_said():
    """gpu_cache_bytes=1e12 on a 48 GB L40S and host_cache_bytes=1e15 were taken as given, and a trace
    without chunk ids ran as full attention without a word (user audit)."""
    from kvsim.errors import ConfigError
    from kvsim.sim.chunk_reuse import unused_chunk_cache_note
    from kvsim.traces import load_trace

    dep = build_deployment("l40s", "mistral-7b-v0.2")
    with pytest.raises(ConfigError, match="gpu_cache_bytes 1e\\+12 exceeds one L40S's memory"):
        make_method("cacheblend:gpu_cache_bytes=1e12", dep)
    with pytest.raises(ConfigError, match="host_cache_bytes 1e\\+15 exceeds the host memory"):
        make_method("cacheblend:host_cache_bytes=1e15", dep)
    m = make_method("cacheblend", dep)
    assert "no chunk ids" in unused_chunk_cache_note(m, load_trace("synthetic-poisson:n=5"))
    assert unused_chunk_cache_note(m, load_trace("synthetic-rag:n=5,corpus=10")) is None
    assert unused_chunk_cache_note(make_method("full", dep), load_trace("synthetic-poisson:n=5")) is None
