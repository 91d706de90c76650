"""MoE expert offloading: cache misses, PCIe fetch / CPU compute costs, memory, hit rates, the option."""

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from kvsim.costmodel.deployment import Deployment, build_deployment
from kvsim.costmodel.expert_offload import ExpertOffload, distinct_experts, experts_missed
from kvsim.costmodel.expert_offload_cost import expert_host_bytes
from kvsim.costmodel.expert_offload_option import parse_expert_offload
from kvsim.costmodel.expert_routing import lru_hit_rate, read_routing_trace
from kvsim.costmodel.roofline import Roofline
from kvsim.costmodel.transformer import linear_cost
from kvsim.errors import ConfigError, TraceError
from kvsim.models import load_model
from kvsim.models.spec import ModelSpec, MoESpec
from synthetic import synthetic_system


def _offload(cache=2, miss="fetch", overlap=False, h=0.5):
    return ExpertOffload(cache_experts_per_layer=cache, miss=miss, overlap=overlap, hit_rate=h, hit_rate_source="test")


def _tiny_moe() -> ModelSpec:
    """2 MoE layers, 4 experts of 3 x 128 x 1000 = 384,000 params (768,000 B in bf16), top-1."""
    return ModelSpec(name="tiny-moe", architecture="mixtral", num_layers=2, hidden_size=128, num_heads=2, num_kv_heads=2,
                     head_dim=64, intermediate_size=0, vocab_size=1000, max_context_tokens=4096,
                     moe=MoESpec(num_experts=4, experts_per_token=1, expert_intermediate_size=1000), source="test")


def _tiny(off: ExpertOffload | None) -> Deployment:
    return Deployment(synthetic_system(), _tiny_moe(), expert_offload=off)


# ---------------------------------------------------------------- formulas
def test_distinct_experts_uniform_top_k():
    """U(T) = E (1 - (1 - k/E)^T) (SPECS.md F7)."""
    # Mixtral E 8, k 2: T 1 -> 8 x 0.25 = 2; T 2 -> 8 (1 - 0.5625) = 3.5
    assert distinct_experts(8, 2, 1) == pytest.approx(2.0)
    assert distinct_experts(8, 2, 2) == pytest.approx(3.5)


def test_experts_missed_between_the_cache_bounds():
    """M = min(max(U (1 - h), U - C), E - C, U): a lone token misses k (1 - h); a big step misses E - C."""
    # T 1: 2 x (1 - 0.75) = 0.5; T 2: U 3.5 -> max(0.875, -0.5) = 0.875; T 1000: U ~ 8 -> max(2, 4) = 4 = E - C
    assert experts_missed(8, 2, 4, 0.75, 1) == pytest.approx(0.5)
    assert experts_missed(8, 2, 4, 0.75, 2) == pytest.approx(0.875)
    assert experts_missed(8, 2, 4, 0.75, 1000) == pytest.approx(4.0)
    # every expert cached: nothing misses whatever h; no cache: every touched expert misses (U = 3.5)
    assert experts_missed(8, 2, 8, 0.0, 2) == 0.0
    assert experts_missed(8, 2, 0, 0.0, 2) == pytest.approx(3.5)


def test_offloaded_and_host_bytes_mixtral():
    """GPU weights shrink by n_moe (E - C) P_e b_w / tp; the host holds n_moe E P_e b_w."""
    m = load_model("mixtral-8x7b")
    dep = build_deployment("h200", "mixtral-8x7b")
    off = replace(dep, expert_offload=_offload(cache=4, h=0.7))
    # P_e = 3 x 4096 x 14336 = 176,160,768; 32 x (8 - 4) x 176,160,768 x 2 B = 45,097,156,608 B
    assert m.expert_params == 176_160_768
    assert off.offloaded_expert_bytes_per_gpu == 45_097_156_608
    assert dep.weight_bytes_per_gpu - off.weight_bytes_per_gpu == pytest.approx(45_097_156_608)
    # host: 32 x 8 x 176,160,768 x 2 = 90,194,313,216 B
    assert expert_host_bytes(off) == 90_194_313_216
    tp2 = replace(off, tp=2)
    assert tp2.offloaded_expert_bytes_per_gpu == 45_097_156_608 / 2


def test_memory_budget_moves_experts_from_gpu_to_host():
    """The KV budget per GPU grows by exactly the offloaded bytes; the host's shrinks by every expert."""
    from kvsim.methods import make_method
    from kvsim.pricing.memory import memory_budget

    dep = build_deployment("h200", "mixtral-8x7b")
    off = replace(dep, expert_offload=_offload(cache=4, h=0.7))
    m = make_method("full", dep)
    a, b = memory_budget(dep, m, 8192, 256), memory_budget(off, m, 8192, 256)
    assert b.kv_gpu_bytes - a.kv_gpu_bytes == pytest.approx(45_097_156_608)
    assert a.kv_host_bytes - b.kv_host_bytes == pytest.approx(90_194_313_216)


# ---------------------------------------------------------------- priced work
def test_fetch_part_hand_computed():
    """miss=fetch: PCIe bytes n_moe M P_e b_w / tp and one round trip per missing layer."""
    dep = _tiny(_offload(cache=2, h=0.5))
    cost = linear_cost(dep, 1.0, 1.0)
    p = cost.by_name("expert_fetch")
    # U(1) = 4 (1 - 3/4) = 1; M = 1 x 0.5 = 0.5; bytes = 2 layers x 0.5 x 768,000 = 768,000; trips = 2 x 0.5 = 1
    assert p.pcie_bytes == pytest.approx(768_000) and p.pcie_round_trips == pytest.approx(1.0)
    # synthetic PCIe: 10 GB/s x 0.5 = 5 GB/s -> 153.6 us; a round trip 2 x 5 us + 10 us = 20 us -> 173.6 us
    t = Roofline(dep.system)(cost)
    assert t.seconds_of("expert_fetch") == pytest.approx(173.6e-6)
    # the GPU's MoE GEMM work is what it was without offloading
    plain = linear_cost(_tiny(None), 1.0, 1.0).by_name("mlp")
    assert cost.by_name("mlp").flops == plain.flops and cost.by_name("mlp").hbm_bytes == plain.hbm_bytes


def test_cpu_part_hand_computed():
    """miss=cpu: the missed share f = M / U of token-expert pairs runs on the host, off the GPU."""
    dep = _tiny(_offload(cache=2, miss="cpu", h=0.5))
    cost = linear_cost(dep, 1.0, 1.0)
    p = cost.by_name("expert_cpu")
    # f = 0.5 / 1; pairs = 2 layers x k 1 x T 1 x 0.5 = 1: FLOPs 2 x 384,000 = 768,000;
    # DRAM 2 x 0.5 x 768,000 = 768,000 B; PCIe activations 2 x 1 x 128 x 2 B = 512 B
    assert p.cpu_flops == pytest.approx(768_000) and p.dram_bytes == pytest.approx(768_000)
    assert p.pcie_bytes == pytest.approx(512)
    # host 1 TFLOP/s x 0.5 -> 1.536 us; DRAM 100 GB/s x 0.5 -> 15.36 us (bound); + 1 launch x 10 us + 1 trip x 20 us
    assert Roofline(dep.system)(cost).seconds_of("expert_cpu") == pytest.approx(45.36e-6)
    # GPU MoE FLOPs: 2 x router 2 x 128 x 4 = 2,048 + routed 2 x 2 x 1 x 384,000 x (1 - 0.5) = 768,000
    assert cost.by_name("mlp").flops == pytest.approx(770_048)


def test_overlap_hides_the_shorter_of_fetch_and_linear_gpu_work():
    """overlap=yes: the step saves min(linear GPU time, fetch time) over the serial step."""
    serial, over = _tiny(_offload(h=0.2)), _tiny(_offload(h=0.2, overlap=True))
    for T in (1.0, 300.0):  # fetch-bound decode, GPU-bound prefill
        ts = Roofline(serial.system)(linear_cost(serial, T, 1.0))
        to = Roofline(over.system)(linear_cost(over, T, 1.0))
        gpu = sum(p.seconds for p in ts.parts if p.name in ("attn_proj", "mlp", "elementwise", "lm_head"))
        fetch = ts.seconds_of("expert_fetch")
        assert ts.total_s - to.total_s == pytest.approx(min(gpu, fetch), rel=1e-9)


def test_offload_prices_arrays_like_scalars():
    """The simulator prices [k] token counts at once: each entry equals the scalar price."""
    for miss in ("fetch", "cpu"):
        dep = _tiny(_offload(miss=miss, overlap=True))
        rf = Roofline(dep.system)
        T = np.array([0.0, 1.0, 7.0, 512.0])
        many = rf.seconds(linear_cost(dep, T, np.minimum(T, 1.0)))
        one = [rf.seconds(linear_cost(dep, float(t), min(float(t), 1.0))) for t in T]
        assert np.allclose(many, one, rtol=1e-12)


# ---------------------------------------------------------------- hit rates
def test_lru_hit_rate_hand_trace():
    """An access hits when its expert is among the C most recently used of its layer."""
    trace = np.array([0, 1, 0, 2, 1, 0]).reshape(6, 1, 1)
    # C 2: 0 m, 1 m, 0 hit {0,1}, 2 m (evicts 1), 1 m (evicts 0), 0 m -> 1/6
    assert lru_hit_rate(trace, 2, 4) == pytest.approx(1 / 6)
    # C 3: 0 m, 1 m, 0 h, 2 m {0,1,2}, 1 h, 0 h -> 3/6
    assert lru_hit_rate(trace, 3, 4) == pytest.approx(0.5)
    # top-2, C 3: [0,1] [2,3] [0,1]: the 2nd token's 3 evicts 0 (least recent), so 0 misses and 1 hits -> 1/6
    assert lru_hit_rate(np.array([[[0, 1]], [[2, 3]], [[0, 1]]]), 3, 4) == pytest.approx(1 / 6)
    assert lru_hit_rate(trace, 0, 4) == 0.0
    with pytest.raises(ConfigError, match="must hold the 2 experts"):
        lru_hit_rate(np.array([[[0, 1]]]), 1, 4)


def test_routing_trace_file(tmp_path):
    """One line per token, one field per MoE layer, comma-separated ids; bad lines name file:line."""
    f = tmp_path / "r.txt"
    f.write_text("# token 0\n3,7 0,5\n\n3,1 0,5  # token 1\n")
    r = read_routing_trace(f, 8, 2, 32)
    assert r.shape == (2, 2, 2) and r[1, 0].tolist() == [3, 1]
    # layer 0: 3,7 then 3,1 (3 hits); layer 1: 0,5 twice (2 hits) -> 3 hits of 8 accesses with C 4
    assert lru_hit_rate(r, 4, 8) == pytest.approx(3 / 8)
    for text, msg in (("3,7 0\n", "2 distinct experts"), ("3,8 0,5\n", r"\[0, 7\]"), ("3,7 0,5\n1,2\n", ":2: 1 layer fields"),
                      ("3,x 0,5\n", "not a comma-separated"), ("# nothing\n", "no token lines")):
        f.write_text(text)
        with pytest.raises(TraceError, match=msg):
            read_routing_trace(f, 8, 2, 32)


def test_published_hit_rates_from_the_data_file():
    """Default: the published SCH at 16-token segments for a cache of 2 x top-k (midpoint of the 95% bounds)."""
    mix = parse_expert_offload("miss=fetch", load_model("mixtral-8x7b"))
    # (0.737461 + 0.738664) / 2 = 0.7380625, cache 2 x 2 = 4
    assert mix.hit_rate == pytest.approx(0.7380625) and mix.cache_experts_per_layer == 4
    ds = parse_expert_offload("sch=256", load_model("deepseek-v2-lite"))
    # (0.396378 + 0.399451) / 2 = 0.3979145, cache 2 x 6 = 12
    assert ds.hit_rate == pytest.approx(0.3979145) and ds.cache_experts_per_layer == 12
    qw = parse_expert_offload("sch=4,miss=cpu,overlap=yes", load_model("qwen3-30b-a3b"))
    # (0.930240 + 0.931756) / 2 = 0.930998, cache 2 x 8 = 16
    assert qw.hit_rate == pytest.approx(0.930998) and qw.cache_experts_per_layer == 16
    assert qw.miss == "cpu" and qw.overlap


def test_option_cache_bytes_and_errors(tmp_path):
    """cache-bytes picks whole experts per layer; bad option text is a one-line ConfigError."""
    mix = load_model("mixtral-8x7b")
    # one expert in every layer: 32 x 176,160,768 x 2 B = 11,274,289,152 B -> 25e9 B holds 2 per layer
    assert parse_expert_offload("cache-bytes=25e9,hit-rate=0.5", mix).cache_experts_per_layer == 2
    assert parse_expert_offload("cache-bytes=25e9,hit-rate=0.5", mix, tp=2).cache_experts_per_layer == 4
    assert parse_expert_offload("cache=1,hit-rate=0.5", mix).cache_experts_per_layer == 1  # (the bound itself)
    bad = {"cache=3": "cache of 4 experts", "cache=9,hit-rate=1": "exceeds the 8", "hit-rate=1.5": "fraction",
           "hit-rate=0.5,sch=16": "one of", "cache=0,hit-rate=0.2": "cache=0", "colour=red": "unknown key",
           "miss=gpu": "fetch or cpu", "overlap=maybe": "yes or no", "sch=8": "segment lengths", "cache": "KEY=VALUE",
           "cache=-1,hit-rate=0": ">= 0", "cache-bytes=inf,hit-rate=0": "finite",
           # one expert per layer holds at most one of a token's top-2: at most 0.5 hit (user audit)
           "cache=1,hit-rate=0.6": "at most 0.5 of accesses hit"}
    for text, msg in bad.items():
        with pytest.raises(ConfigError, match=msg):
            parse_expert_offload(text, mix)
    with pytest.raises(ConfigError, match="not a mixture-of-experts"):
        parse_expert_offload("hit-rate=0.5", load_model("llama-3.1-8b"))
    with pytest.raises(ConfigError, match="no published"):
        parse_expert_offload("miss=fetch", _tiny_moe())


# ---------------------------------------------------------------- simulator and CLI
@pytest.mark.parametrize("text", ["miss=fetch", "miss=cpu,overlap=yes"])
def test_fast_simulator_equals_reference_with_offload(text):
    """The fast simulator reproduces the reference with experts offloaded (one cost path)."""
    from equivalence_scenarios import compare
    from kvsim.methods import make_method
    from kvsim.sim.reference import simulate_reference
    from kvsim.sim.reference_result import COMPLETED
    from kvsim.sim.replica import SimConfig, simulate
    from test_sim_support import make_trace

    dep = build_deployment("a100", "mixtral-8x7b", weight_dtype="int4", expert_offload=text)
    m = make_method("full", dep)
    trace = make_trace([0.0, 0.05, 0.1, 0.4], [300, 40, 900, 12], [5, 9, 3, 7])
    cfg = SimConfig(record_token_times=True, max_num_batched_tokens=512)
    fast, ref = simulate(dep, m, trace, cfg), simulate_reference(dep, m, trace, cfg)
    assert compare(fast, ref) == []
    assert (ref.status == COMPLETED).all()


def _kvsim(*args):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, timeout=120)


def test_cli_estimate_with_offload_and_bad_option():
    """--expert-offload on estimate: the JSON names the offload; a bad value is one error line, exit 1."""
    import json

    ok = _kvsim("estimate", "--hw", "rtx4090", "--model", "mixtral-8x7b", "--weight-dtype", "int4",
                "--expert-offload", "miss=fetch", "--context", "512", "--json")
    assert ok.returncode == 0, ok.stderr
    r = json.loads(ok.stdout)[0]
    assert r["fits"] and "published SCH" in r["expert_offload"]
    assert any(row["component"] == "expert_fetch" for row in r["breakdown"])
    bad = _kvsim("estimate", "--model", "mixtral-8x7b", "--expert-offload", "hit-rate=2")
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("model, saved", [
    # DeepSeek-V2-Lite: P_e = 3 x 2048 x 1408 = 8,650,752; 26 MoE layers (layer 0 dense) x (64 - 12) x 2 B
    #   = 23,391,633,408 B (the 2 shared experts stay on the GPU)
    ("deepseek-v2-lite", 23_391_633_408),
    # Qwen3-30B-A3B: P_e = 3 x 2048 x 768 = 4,718,592; 48 x (128 - 16) x 2 B = 50,734,301,184 B
    ("qwen3-30b-a3b", 50_734_301_184),
])
def test_required_models_offload_with_published_defaults(model, saved):
    """DeepSeek-V2-Lite and Qwen3-30B-A3B: default cache 2 x top-k, weights shrink by n_moe (E - C) P_e b_w."""
    from kvsim.methods import make_method
    from kvsim.pricing.estimate import estimate

    plain = build_deployment("a100", model)
    dep = build_deployment("a100", model, expert_offload="miss=fetch")
    assert plain.weight_bytes_per_gpu - dep.weight_bytes_per_gpu == pytest.approx(saved)
    r = estimate(dep, make_method("full", dep), 1024, 1)
    assert r.fits and any(row.component == "expert_fetch" for row in r.breakdown)
    assert r.max_batch > estimate(plain, make_method("full", plain), 1024, 1).max_batch  # freed memory holds KV


def test_experts_that_do_not_fit_the_host_are_an_error():
    """A host too small for every routed expert is a one-line ConfigError, not a negative budget."""
    from kvsim.methods import make_method
    from kvsim.pricing.memory import memory_budget

    dep = build_deployment("h200", "mixtral-8x7b", expert_offload="miss=fetch")
    small = replace(dep, system=replace(dep.system, host_memory_bytes=64e9))
    # experts 90.19 GB (test_offloaded_and_host_bytes_mixtral) > 0.9 x 64 GB = 57.6 GB usable
    with pytest.raises(ConfigError, match="need 90.19 GB of host memory; 57.60 GB is usable"):
        memory_budget(small, make_method("full", small), 8192, 256)


def test_cli_simulate_with_offload(tmp_path):
    """--expert-offload on simulate: the summary names it; a routing file error is one line, exit 1."""
    import json

    common = ("simulate", "--hw", "rtx4090", "--model", "mixtral-8x7b", "--weight-dtype", "int4",
              "--trace", "synthetic-poisson:n=5,prompt=64,output=4,rate=1", "--json")
    ok = _kvsim(*common, "--expert-offload", "miss=cpu,overlap=yes")
    assert ok.returncode == 0, ok.stderr
    s = json.loads(ok.stdout)
    assert s["requests_completed"] == 5 and "miss=cpu, overlapped" in s["expert_offload"]
    bad_file = tmp_path / "r.txt"
    bad_file.write_text("3,7 0,5\n3,7\n")  # the second token names one layer, the first two
    bad = _kvsim(*common, "--expert-offload", f"cache=4,routing={bad_file}")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [f"error: {bad_file}:2: 1 layer fields, the first token line has 2"]


def _plan_request(expert_offload):
    from kvsim.plan.schema import SLO, SearchOptions, TraceSpec
    from kvsim.plan.search import PlanRequest

    return PlanRequest(model="mixtral-8x7b", hws=["h100"], methods=["full"], slo=SLO(ttft_s=1.0, itl_s=1.0),
                       trace=TraceSpec(spec="synthetic-fixed:prompt=200,output=16,rate=1", num_requests=40),
                       search=SearchOptions(rel_tol=0.1), expert_offload=expert_offload)


def test_plan_with_expert_offload_plans_a_model_that_does_not_fit_the_gpu():
    """Mixtral-8x7B bf16 on one H100: weights 46,702,792,704 x 2 = 93,405,585,408 B exceed the GPU's
    0.9 x 85,029,158,912 = 76,526,243,020.8 B budget, so the plan finds no rate; with --expert-offload cache=4
    the GPU keeps 4 of 8 experts per layer, 93,405,585,408 - 32 x 4 x 176,160,768 x 2 (= 45,097,156,608)
    = 48,308,428,800 B of weights, and the plan finds a rate > 0."""
    from kvsim.plan.evaluate import build
    from kvsim.plan.search import config_specs, run_plan

    spec = config_specs(_plan_request("cache=4"))[0]
    assert spec.expert_offload == "cache=4"
    dep, _ = build(spec)
    assert dep.weight_bytes_per_gpu == 48_308_428_800
    assert build(spec.model_copy(update={"expert_offload": None}))[0].weight_bytes_per_gpu == 93_405_585_408
    without = run_plan(_plan_request(None), executor="serial", progress=False)
    assert not without.configs[0].runs and without.configs[0].max_rate_per_s == 0
    with_off = run_plan(_plan_request("cache=4"), executor="serial", progress=False)
    c = with_off.configs[0]
    assert c.runs and c.max_rate_per_s > 0
    assert "experts offloaded (cache 4/layer)" in c.label


def test_plan_cache_keys_differ_with_expert_offload():
    """The result cache key holds the resolved offload (hit rate included): a cached run without offload, or with
    another hit rate, is never reused."""
    from kvsim.plan.evaluate import build, config_identity
    from kvsim.plan.search import config_specs

    ids = []
    for text in ("cache=4", "cache=4,hit-rate=0.5"):
        spec = config_specs(_plan_request(text))[0]
        dep, m = build(spec)
        ids.append(config_identity(spec, dep, m)["deployment"]["expert_offload"])
    assert ids[0]["hit_rate"] == pytest.approx(0.7380625) and ids[1]["hit_rate"] == 0.5  # published SCH-16 midpoint


def test_cli_plan_expert_offload(tmp_path):
    """kvsim plan --expert-offload: a rate for Mixtral on one H100; a bad option or a dense model is one error line."""
    base = ["plan", "--model", "mixtral-8x7b", "--hw", "h100", "--trace", "synthetic-fixed:prompt=200,output=16,rate=1",
            "--num-requests", "40", "--slo-ttft", "1s", "--slo-itl", "1s", "--no-cache", "--executor", "serial",
            "--no-progress", "--json"]
    r = subprocess.run([sys.executable, "-m", "kvsim", *base, "--expert-offload", "cache=4"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    import json
    assert json.loads(r.stdout)["configs"][0]["max_rate_per_s"] > 0
    for bad, needle in ((["--expert-offload", "cache=9"], "exceeds the 8 experts"),
                        (["--expert-offload", "cache=4", "--model", "llama-3.1-8b"], "not a mixture-of-experts")):
        r = subprocess.run([sys.executable, "-m", "kvsim", *base, *bad], capture_output=True, text=True, cwd=tmp_path,
                           timeout=120)
        assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert all(line.startswith("error: ") for line in r.stderr.strip().splitlines())


def test_cache_of_every_expert_needs_no_hit_rate():
    """cache=E (or cache-bytes for all of them) keeps every expert on the GPU: hit rate 1, nothing offloaded
    (Mixtral: 8 of 8 experts; 0 bytes saved, M(T) = min(.., E - C = 0) = 0), instead of demanding a hit rate."""
    m = load_model("mixtral-8x7b")
    off = parse_expert_offload("cache=8", m)
    assert off.hit_rate == 1.0 and off.cache_experts_per_layer == 8
    off = parse_expert_offload("cache-bytes=1e15", m)
    assert off.cache_experts_per_layer == 8 and off.hit_rate == 1.0
    assert build_deployment("h200", "mixtral-8x7b", expert_offload="cache=8").offloaded_expert_bytes_per_gpu == 0
    assert experts_missed(8, 2, 8, 1.0, 1000) == 0
