"""Fourteenth session: findings of report-only audits and left-overs of earlier notes, each with a
test that fails on the code before its fix (488ceea)."""

import kvsim
from kvsim.errors import KvsimError
from kvsim.plan.schema import SLO, SearchOptions, TraceSpec
from kvsim.plan.search import PlanRequest, run_plan
from kvsim.sim.config import SimConfig


class _Counting:
    """A plan evaluator that meets the SLO below 4 req/s and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, config, trace, rate, sim_options):
        from kvsim.plan.schema import PointResult, Stats
        self.calls += 1
        ok = rate <= 4.0
        lat = Stats(mean=0.5, p50=0.5, p90=0.8, p99=1.0) if ok else Stats(mean=5, p50=5, p90=8, p99=10)
        tbt = Stats(mean=0.02, p50=0.02, p90=0.03, p99=0.05)
        return PointResult(rate_per_s=rate, replicas=1, num_requests=40, ttft_s=lat, itl_s=tbt, e2el_s=lat,
                           throughput_output_tok_s=100.0 * rate, requests_completed=40, requests_rejected=0)


def _plan(sim_options, ev, cache):
    req = PlanRequest(model="llama-3.1-8b", hws=["a100"], methods=["full"],
                      trace=TraceSpec(spec="synthetic-burstgpt", num_requests=40, seed=1),
                      slo=SLO(ttft_s=2.0, itl_s=0.1), search=SearchOptions(rel_tol=0.05, start_rate_per_s=1.0),
                      sim_options=sim_options)
    return run_plan(req, executor="serial", progress=False, evaluator=ev, cache_dir=cache)


def test_plan_cache_keys_resolved_engine_settings(tmp_path):
    """An explicitly given default (``--watermark 0`` in the chunked mode, ``--max-num-seqs 256``)
    runs the same simulation, so it hits the cache (it missed: the key hashed the options as given)."""
    ev = _Counting()
    _plan({}, ev, tmp_path)
    first = ev.calls
    assert first > 0
    _plan({"watermark": 0.0, "max_num_seqs": 256}, ev, tmp_path)
    assert ev.calls == first
    # the whole-prompt mode's default is vLLM v0's 0.01: the same as giving it, not the same as 0
    _plan({"chunked_prefill": False}, ev, tmp_path)
    n = ev.calls
    assert n > first
    _plan({"chunked_prefill": False, "watermark": 0.01}, ev, tmp_path)
    assert ev.calls == n
    _plan({"chunked_prefill": False, "watermark": 0.0}, ev, tmp_path)
    assert ev.calls > n


def test_resolved_settings_fill_the_watermark():
    assert SimConfig().resolved()["watermark"] == 0.0
    assert SimConfig(chunked_prefill=False).resolved()["watermark"] == 0.01  # vLLM v0 BlockSpaceManager default
    assert SimConfig(watermark=0.05).resolved()["watermark"] == 0.05


def test_refused_run_leaves_no_new_folder(tmp_path):
    """``simulate --out D --report D/<method>`` is refused after --out was checked: the check must
    not leave the folder it created to test writing (it left an empty D)."""
    import subprocess
    import sys

    out = tmp_path / "new" / "run"
    res = subprocess.run([sys.executable, "-m", "kvsim", "simulate", "--hw", "a100", "--method", "full", "--trace",
                          "synthetic-burstgpt:n=5", "--out", str(out), "--report", str(out / "full")],
                         capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.startswith("error: --report")
    assert not (tmp_path / "new").exists()


def test_writable_check_keeps_existing_folders(tmp_path):
    from kvsim.fileio import check_writable_dir

    (tmp_path / "kept").mkdir()
    assert check_writable_dir(tmp_path / "kept" / "a" / "b", "--out") == tmp_path / "kept" / "a" / "b"
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "a").exists()
    check_writable_dir(tmp_path / "kept", "--out")
    assert (tmp_path / "kept").is_dir()


def test_qwen25_instruct_has_its_own_context_limit():
    """Qwen/Qwen2.5-7B-Instruct's config has max_position_embeddings 32,768 (the base model's is
    131,072; SPECS.md Table M1): the alias priced a 65,536-token prompt without a word (model audit)."""
    import pytest

    from kvsim.costmodel.deployment import build_deployment
    from kvsim.models import load_model

    inst, base = load_model("Qwen/Qwen2.5-7B-Instruct"), load_model("Qwen/Qwen2.5-7B")
    assert (inst.name, inst.max_context_tokens) == ("qwen2.5-7b-instruct", 32_768)
    assert (base.name, base.max_context_tokens) == ("qwen2.5-7b", 131_072)
    same = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size", "vocab_size")
    assert all(getattr(inst, f) == getattr(base, f) for f in same)
    with pytest.raises(KvsimError, match="32,768"):
        kvsim.estimate(hw="h100", model="Qwen/Qwen2.5-7B-Instruct", context=65_536)
    assert build_deployment("h100", "qwen2.5-7b-instruct").model.max_context_tokens == 32_768


def test_jamba_config_imports(tmp_path):
    """``model_type: jamba`` was refused (model audit). Its Mamba layers are those off the attention
    period (JambaConfig.layers_block_type: attention where i % 8 == 4: 4 of 32) and its MoE layers
    those on the expert period (i % 2 == 1: 16 of 32); "auto" dt rank is ceil(4096 / 16) = 256."""
    import json
    from pathlib import Path

    import pytest

    from kvsim.errors import SpecError
    from kvsim.models import load_model
    from kvsim.models.hf_import import load_hf_config

    src = Path(__file__).parent / "data" / "hf" / "jamba-v0.1.json"
    m = load_hf_config(src)
    assert (m.ssm.num_layers, m.moe.moe_layers, m.moe.num_experts, m.moe.experts_per_token) == (28, 16, 2 * 8, 2)
    assert m.total_params == load_model("jamba-v0.1").total_params == 51_570_315_264
    data = json.loads(src.read_text())
    data.update(mamba_dt_rank="auto", attn_layer_period=4, attn_layer_offset=0)  # 8 attention layers
    (tmp_path / "config.json").write_text(json.dumps(data))
    m2 = load_hf_config(tmp_path / "config.json")
    assert m2.ssm.num_layers == 24 and m2.ssm.dt_rank is None  # (None: ceil(h / 16), the same 256)
    # KV per token: 2 (K, V) x 8 attention layers x 8 KV heads x 128 x 2 B = 32,768 B
    assert m2.attn_layers == 8 and 2 * m2.attn_layers * m2.num_kv_heads * m2.head_dim * 2 == 32_768
    data.update(attn_layer_offset=4)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(SpecError, match="attn_layer_offset"):
        load_hf_config(tmp_path / "config.json")


def test_shipped_gpu_profile_follows_the_gpu(tmp_path):
    """A measured profile measures a GPU: another node with the same shipped GPU (a100-80g-spr, a
    user's system file) gets its kernel efficiencies (it got the datasheet defaults: decode 10 %
    faster than the same GPU in a100-80g, hardware audit); all-reduce fits only over the same NVLink
    fabric (over PCIe the server's topology decides)."""
    from kvsim.hardware import load_system

    a100, spr = load_system("a100-80g"), load_system("a100-80g-spr")
    assert spr.eff.gemm == a100.eff.gemm and spr.eff.attn_decode == a100.eff.attn_decode
    assert spr.allreduce == a100.allreduce and spr.calibration.startswith("measured GPU kernels of a100-80g")
    l40s = load_system("l40s")
    (tmp_path / "four-l40s.yaml").write_text("kind: system\nname: my-l40s\ngpu: L40S\nnum_gpus: 4\nhost: EPYC-9654\n"
                                             "source: a user's node\n")
    mine = load_system(str(tmp_path / "four-l40s.yaml"))
    assert mine.eff.gemm == l40s.eff.gemm and mine.allreduce == () and l40s.allreduce != ()
    assert "all-reduce from the datasheet" in mine.calibration
    (tmp_path / "h100x4.yaml").write_text("kind: system\nname: my-h100\ngpu: H100-SXM\nnum_gpus: 4\nhost: EPYC-9654\n"
                                          "source: a user's node\n")
    assert load_system(str(tmp_path / "h100x4.yaml")).allreduce == load_system("h100").allreduce
    assert load_system("a100-40g").calibration == "datasheet"  # no profile measures that GPU
    # decode priced alike for the same GPU in both nodes
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.pricing.step import StepModel
    import numpy as np

    from kvsim.methods import make_method

    t = [StepModel(d, make_method("full", d)).decode_timing(np.full(8, 4096.0)).total_s
         for d in (build_deployment("a100-80g", "llama-3.1-8b"), build_deployment("a100-80g-spr", "llama-3.1-8b"))]
    assert t[0] == t[1]


def test_list_hardware_says_whose_profile(tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "n.yaml").write_text("kind: system\nname: my-l40s\ngpu: L40S\nnum_gpus: 4\nhost: EPYC-9654\nsource: mine\n")
    rows = json.loads(subprocess.run([sys.executable, "-m", "kvsim", "list", "hardware", "--hw", str(tmp_path / "n.yaml"),
                                      "--json"], capture_output=True, text=True, check=True).stdout)
    by = {r["name"]: r["cost model"] for r in rows}
    assert by["a100-80g-spr"].startswith("measured kernels of a100-80g (the same GPU)")
    assert by["my-l40s"].startswith("measured kernels of l40s (the same GPU; all-reduce from the datasheet)")
    assert by["a100-80g"].startswith("measured kernels, held-out")


def test_eager_scores_note_at_long_context():
    """H2O's eager prefill materializes one layer's scores, query heads x new x attended x 2 B; at a
    131,008-token prompt the last chunk (8,128 tokens after 122,880) needs 32 x 8,128 x 131,008 x 2 B
    = 68,149,313,536 B per GPU, far beyond the activation reserve, and `fits: true` said nothing (long-
    context audit). The bound is the profiling run's activations (0.94 GB here; the whole reserve, 1.24 GB,
    also holds non-torch memory and buffers): at the default 4,096 tokens 32 x 4,096 x 4,096 x 2 = 1.07 GB
    exceeds it (a review found the note compared against the whole reserve); at 2,048, 0.27 GB does not."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method

    d = build_deployment("h100", "llama-3.1-8b")
    h2o = make_method("h2o", d)
    assert h2o.prefill_scores_bytes(8128.0, 122880.0) == 32 * 8128 * 131008 * 2 == 68_149_313_536
    assert make_method("snapkv", d).prefill_scores_bytes(8128.0, 122880.0) == 0.0
    est = kvsim.estimate(hw="h100", model="llama-3.1-8b", method="h2o", context=131_008)
    assert any("68.1 GB per GPU for the 8,128-token chunk after 122,880 cached tokens" in n for n in est.notes)
    assert any("1.1 GB per GPU for the 4,096-token chunk" in n
               for n in kvsim.estimate(hw="h100", model="llama-3.1-8b", method="h2o").notes)
    assert not any("eager prefill" in n
                   for n in kvsim.estimate(hw="h100", model="llama-3.1-8b", method="h2o", context=2048).notes)
    sim = kvsim.simulate(hw="h100", model="llama-3.1-8b", method="h2o", trace="synthetic-poisson:n=2,prompt=65536,output=2")
    assert any("34.4 GB per GPU for the 8,192-token chunk after 57,344" in n for n in sim.summary["notes"])


def test_estimate_max_batch_counts_the_prefilling_prompt():
    """SnapKV holds a prompt's full KV until its prefill completes, as `simulate` does: the largest
    batch has its last request prefilling (1,024 blocks of a 16,384-token prompt) and the others at 64
    blocks: RTX 4090 pool 2,659 blocks -> 1 + floor((2,659 - 1,024) / 64) = 26 (it said 2,659 // 64 = 41)."""
    from kvsim.pricing.memory import gpu_requests_that_fit

    assert gpu_requests_that_fit(100.0, 10.0, 40.0, 1.0) == 7  # 1 + floor(60 / 10)
    assert gpu_requests_that_fit(30.0, 10.0, 40.0, 1.0) == 0  # the peak alone does not fit
    assert gpu_requests_that_fit(100.0, 10.0, 10.0, 1.0) == 10  # no peak above a request's own blocks
    est = kvsim.estimate(hw="rtx4090", model="llama-3.1-8b", method="snapkv", context=16_384, batch="max")
    assert est.max_batch == 26
    assert kvsim.estimate(hw="rtx4090", model="llama-3.1-8b", method="full", context=16_384, batch="max").max_batch == 2


def test_simulate_allow_long_context_and_all_rejected(tmp_path):
    """Long-context audit: `simulate` had no --allow-long-context (estimate has it), and a run whose every
    request was rejected printed a table of dashes with exit 0. Now the flag serves the trace's longest
    request (prompt 65,536 + output 64 = 65,600 tokens > Qwen3-32B's 40,960) and an all-rejected run is a
    one-line error naming why."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "kvsim", "simulate", "--hw", "h200", "--model", "qwen3-32b", "--trace",
            "synthetic-poisson:n=2,prompt=65536,output=64,rate=0.1", "--json"]
    bad = subprocess.run(argv, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("error: every request was rejected: 2 of 2 requests rejected (all of them): max_context")
    assert bad.stderr.rstrip().endswith("or pass --allow-long-context")
    ok = subprocess.run([*argv, "--allow-long-context"], capture_output=True, text=True, check=True)
    import json

    got = json.loads(ok.stdout)
    assert got["requests_completed"] == 2 and got["notes"][0].startswith("--allow-long-context: qwen3-32b serves "
                                                                          "requests of up to 65,600 tokens")
    api = kvsim.simulate(hw="h200", model="qwen3-32b", trace="synthetic-poisson:n=2,prompt=65536,output=64,rate=0.1",
                         allow_long_context=True)
    assert api.summary["notes"][0] == got["notes"][0] and api.summary["ttft_s"] == got["ttft_s"]


def test_measured_slow_pcie_allreduce_gets_a_note():
    """L40S at TP 8: its measured NCCL bus bandwidth (1.5 GB/s, 5 % of PCIe 4 x16's 31.5 GB/s) makes a
    128K prefill 2.6x slower than at TP 1, and nothing said why (long-context audit; the datasheet form
    had a note, the measured one none). TP 2 (20 GB/s, above half the link) gets none."""
    from kvsim.costmodel.deployment import build_deployment

    note = build_deployment("l40s", "llama-3.1-8b", tp=8).allreduce_note
    assert note.startswith("all-reduce at TP 8 on l40s is priced from its measured NCCL bus bandwidth, 1.5 GB/s, 5% of")
    assert build_deployment("l40s", "llama-3.1-8b", tp=4).allreduce_note is not None
    assert build_deployment("l40s", "llama-3.1-8b", tp=2).allreduce_note is None
    assert build_deployment("h100", "llama-3.1-8b", tp=8).allreduce_note is None


def test_plan_rows_name_the_bound_that_sets_the_max_rate(tmp_path):
    """The ranked table showed a max rate whose TTFT and ITL were well inside the SLO and never said
    which bound the next rate broke (long-context audit: an ITL cliff). The note names the misses of
    the search's upper bracket."""
    from kvsim.plan.report import recommendation_rows

    plan = _plan({}, _Counting(), None)
    c = plan.configs[0]
    assert 4.0 / 1.05 <= c.max_rate_per_s <= 4.0 < c.upper_rate_per_s
    note = recommendation_rows(plan)[0]["note"]
    assert f"limit: p99 TTFT 10 s > 2 s at {c.upper_rate_per_s:.3g} req/s" in note


def test_retrieval_heads_priced_on_the_busiest_gpu():
    """Tensor parallelism gives each GPU whole KV heads: with 8 KV heads at TP 8, each GPU has one, and
    four of them hold a retrieval head (DuoAttention's 0.5 of GQA heads) at full length, so every step
    waits for one and its pool fills as full KV's (long-context audit: kvsim spread the retrieval heads
    evenly, 8,212 B/token per GPU, and priced DuoAttention slower than full at TP 8 through its extra
    streaming kernel). busiest_gpu_head_fraction: TP 2 ceil(4 / 2) / 4 = 0.5; TP 8 ceil(4 / 8) / 1 = 1;
    RazorAttention's 0.16 at TP 2: R = 1.28 -> 0.72 x ceil(1/2) + 0.28 x ceil(2/2) = 1 head of 4 = 0.25."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.methods._common import busiest_gpu_head_fraction

    frac = [busiest_gpu_head_fraction(build_deployment("h100", "llama-3.1-8b", tp=t), 0.5) for t in (1, 2, 4, 8)]
    assert frac == [0.5, 0.5, 0.5, 1.0]
    assert busiest_gpu_head_fraction(build_deployment("h100", "llama-3.1-8b", tp=2), 0.16) == 0.25
    assert busiest_gpu_head_fraction(build_deployment("h100", "llama-2-7b", tp=8), 0.25) == 0.25  # 32 heads: 8 / 8 of 4
    assert busiest_gpu_head_fraction(build_deployment("h100", "llama-3.1-8b"), 0.16) == 0.16
    est = {m: kvsim.estimate(hw="h100", model="llama-3.1-8b", method=m, context=131_008, tp=8)
           for m in ("full", "duoattention")}
    assert est["duoattention"].tpot_s == est["full"].tpot_s and est["duoattention"].max_batch == est["full"].max_batch
    d2 = build_deployment("h100", "llama-3.1-8b", tp=2)
    duo = make_method("duoattention", d2)
    assert (duo.ratio, duo.r) == (0.5, 0.5)
    razor = make_method("razorattention", d2)
    assert razor.ratio == 0.16 and razor.r == 0.25


def test_cpu_experts_overlap_only_the_layers_that_miss():
    """miss=cpu, overlap=yes: a layer either misses an expert (and waits for the host beside its GPU
    GEMMs) or misses none, so only the share q of layers that miss overlaps. Mixtral, C 7, h 0.9025,
    one token: q = 1 - 0.9025^2 = 0.18549; 8 tokens: U = 8 (1 - 0.75^8) = 7.199 -> 0.801 (1 - 0.9025^7)
    + 0.199 = 0.6094. Decode offloaded this way was faster than every expert on the GPU (H200, batch 1:
    7.86 vs 8.41 ms; MoE audit); now it is slower, and the serial path slower still."""
    import pytest

    from kvsim.costmodel.expert_offload import missing_layer_share

    assert missing_layer_share(8, 2, 7, 0.9025, 1) == pytest.approx(1 - 0.9025 ** 2, rel=1e-12)
    u = 8 * (1 - 0.75 ** 8)  # 7.19909: 7 touched with 0.80091, 8 (> C, a sure miss) with 0.19909
    assert missing_layer_share(8, 2, 7, 0.9025, 8) == pytest.approx((8 - u) * (1 - 0.9025 ** 7) + (u - 7), rel=1e-12)
    assert missing_layer_share(8, 2, 1, 0.9025, 1) == 1.0 and missing_layer_share(8, 2, 7, 0.9025, 0) == 0.0

    def tpot(offload=None, batch=1):
        kw = {} if offload is None else {"expert_offload": offload}
        return kvsim.estimate(hw="h200", model="mixtral-8x7b", context=1024, batch=batch, **kw).tpot_s

    for b in (1, 8, 64):
        on_gpu = tpot(batch=b)
        over = tpot("cache=7,miss=cpu,overlap=yes,hit-rate=0.9025", b)
        serial = tpot("cache=7,miss=cpu,overlap=no,hit-rate=0.9025", b)
        assert on_gpu < over <= serial, b


def test_synthetic_arrivals_go_to_the_rows_left():
    """--arrivals was drawn for every row before the filters and the failed-row drop: --trace-model GPT-4
    kept 77 of 400 rows' draws (0.68 req/s for rate=4), and --start-s filtered the synthetic times (trace
    audit). Now the rows left get them in file order: the mean rate is the asked one up to chance."""
    import numpy as np

    rates = []
    for seed in range(40):
        tr = kvsim.load_trace("burstgpt-sample", model="GPT-4", arrivals="poisson:rate=4", seed=seed)
        assert len(tr) == 77
        rates.append((len(tr) - 1) / float(tr.arrival_s[-1]))
    assert 3.6 < float(np.mean(rates)) < 4.4  # (it was ~0.77 over seeds)
    raw = kvsim.load_trace("burstgpt3-sample")
    start = float(raw.meta["raw_start_s"] + raw.arrival_s[10])
    windowed = kvsim.load_trace("burstgpt3-sample", start_s=start, arrivals="poisson:rate=4")
    assert len(windowed) == len(kvsim.load_trace("burstgpt3-sample", start_s=start))  # the raw window


def test_clipped_lengths_are_reported():
    tr = kvsim.load_trace("azure-code", max_prompt_tokens=3000)
    assert "--max-prompt-tokens 3,000 clipped 1,909 of 8,819 prompts" in tr.notice


def test_extreme_zipf_exponents_draw_lengths():
    """synthetic-burstgpt:prompt_a=-100 (inside its validated [-100, 100]) raised OverflowError, a
    traceback (trace audit): top**101 overflows a float. The CDF is scaled so no power overflows; the
    shipped defaults keep their draws."""
    hi = kvsim.load_trace("synthetic-burstgpt:n=1000,prompt_a=-100")
    lo = kvsim.load_trace("synthetic-burstgpt:n=1000,prompt_a=100")
    assert hi.prompt_tokens.min() >= 12 and hi.prompt_tokens.max() == 2048 and hi.prompt_tokens.mean() > 2000
    assert (lo.prompt_tokens == 12).all()


def test_review_eager_note_prices_the_prefill_side_and_admitted_prompts(tmp_path):
    """Review of the change: a disaggregated run's note followed the decode instances' TP (8.6 GB at a
    decode TP 4, where the TP 1 prefill instance materializes 34.4 GB), and a rejected 200,000-token
    request set the note's prompt although it never ran."""
    import json
    import subprocess
    import sys

    base = [sys.executable, "-m", "kvsim", "simulate", "--hw", "h100", "--model", "llama-3.1-8b", "--method", "h2o",
            "--json"]
    trace = ["--trace", "synthetic-poisson:n=2,prompt=65536,output=2"]
    r = subprocess.run([*base, *trace, "--disagg", "1:1", "--prefill-tp", "1", "--decode-tp", "4"],
                       capture_output=True, text=True, check=True)
    assert "34.4 GB per GPU" in " ".join(json.loads(r.stdout)["notes"])
    (tmp_path / "mix.csv").write_text("ts,in,out\n0,1000,10\n1,200000,10\n")
    r = subprocess.run([*base, "--trace", str(tmp_path / "mix.csv"), "--columns", "arrival=ts,prompt=in,output=out"],
                       capture_output=True, text=True, check=True)
    notes = " ".join(json.loads(r.stdout)["notes"])
    assert "200,000-token prompt" not in notes and "1 of 2 requests rejected" in notes


def test_review_offload_round_trips_per_missing_layer_and_jamba_without_mamba(tmp_path):
    """Round trips (and CPU calls) were n_moe min(1, M), expected misses below one per layer, while the
    overlap used the share q of layers that miss: C 4, h 0.75, 2 tokens -> min(1, 0.875) against
    q = 0.631 (review). A Jamba config whose every layer attends raised on ssm.num_layers 0."""
    import json
    from pathlib import Path

    from kvsim.costmodel.deployment import build_deployment
    from kvsim.costmodel.expert_offload import missing_layer_share
    from kvsim.costmodel.expert_offload_cost import offload_parts
    from kvsim.models.hf_import import load_hf_config

    dep = build_deployment("h100", "mixtral-8x7b", expert_offload="cache=4,miss=fetch,hit-rate=0.75")
    (part,), _ = offload_parts(dep, 2.0, 1.0)
    assert part.pcie_round_trips == 32 * missing_layer_share(8, 2, 4, 0.75, 2.0)
    data = json.loads((Path(__file__).parent / "data" / "hf" / "jamba-v0.1.json").read_text())
    data.update(attn_layer_period=1, attn_layer_offset=0)
    (tmp_path / "config.json").write_text(json.dumps(data))
    m = load_hf_config(tmp_path / "config.json")
    assert m.ssm is None and m.attn_layers == 32


def test_review_lengths_only_file_draws_arrivals_after_the_drops(tmp_path):
    """A file without timestamps still drew --arrivals for every row, failed ones included (review):
    2,000 rows, every other one with 0 output tokens, poisson:rate=4 replayed at 1.98 req/s."""
    import numpy as np

    rows = "prompt,output\n" + "".join(f"100,{0 if i % 2 else 50}\n" for i in range(2000))
    (tmp_path / "lens.csv").write_text(rows)
    rates = []
    for seed in range(20):
        tr = kvsim.load_trace(str(tmp_path / "lens.csv"), columns="prompt=prompt,output=output",
                              arrivals="poisson:rate=4", seed=seed)
        assert len(tr) == 1000
        rates.append((len(tr) - 1) / float(tr.arrival_s[-1]))
    assert 3.8 < float(np.mean(rates)) < 4.2
    win = kvsim.load_trace(str(tmp_path / "lens.csv"), columns="prompt=prompt,output=output",
                           arrivals="poisson:rate=4", start_s=10, end_s=20)
    assert 20 < len(win) < 70 and win.meta["raw_start_s"] >= 10  # (the window reads the synthetic times)


def test_review_estimate_widens_the_context_as_simulate_does():
    """--allow-long-context in estimate priced beyond the context without the engine's wider rotary
    cache, which simulate's with_max_context adds (review): Qwen3-32B at 65,600 tokens, the reserve
    grows by (65,600 - 40,960) x 128 x 2 B = 6,307,840 B."""
    a = kvsim.estimate(hw="h200", model="qwen3-32b", context=65_600, allow_long_context=True)
    b = kvsim.estimate(hw="h200", model="qwen3-32b", context=40_960)
    assert a.activation_reserve_bytes - b.activation_reserve_bytes == (65_600 - 40_960) * 128 * 2


def test_failed_rows_counted_within_the_kept_requests():
    """`-n 300` on the BurstGPT sample said 17 failed rows dropped, the whole file's count; 12 of them lie
    before the 300th kept request (trace audit)."""
    assert kvsim.load_trace("burstgpt-sample").num_failed_dropped == 17
    assert kvsim.load_trace("burstgpt-sample", num_requests=300).num_failed_dropped == 12


def test_bursts_of_one_timestamp_are_reported():
    """Mooncake's conversation trace puts 10,851 of 12,031 requests at the same millisecond as the one before
    (batches of up to 28 every ~3 s); trace info gave its arrival CV of 3.03 with no word (trace audit)."""
    from kvsim.traces.arrivals import ties_note

    tr = kvsim.load_trace("mooncake-conversation")
    assert "10,851 of 12,031 requests arrive at the same time as the one before (up to 28 at once)" in tr.notice
    assert "same time as the one before" not in (kvsim.load_trace("mooncake-conversation",
                                                                 arrivals="poisson:rate=3").notice or "")
    # 0, 0, 0, 1, 2, 2: 3 ties of 6 (>= 5 %), the longest run 3 at once
    assert ties_note([0, 0, 0, 1, 2, 2], "t").startswith("t: 3 of 6 requests arrive at the same time as the one before "
                                                         "(up to 3 at once)")
    assert ties_note([0, 1, 2, 3], "t") is None


def test_json_notes_of_several_methods_name_their_method():
    """`simulate --method h2o,mikv,full --json` printed each method's own notes as bare `note:` lines on stderr,
    twice the same eager-prefill note with no method named (review); the tables say `note (h2o):`."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "kvsim", "simulate", "--hw", "h100", "--method", "h2o,mikv,full", "--trace",
                        "synthetic-poisson:n=2,prompt=65536,output=2", "--json"], capture_output=True, text=True, check=True)
    eager = [line for line in r.stderr.splitlines() if "eager prefill" in line]
    assert [line.split(":")[0] for line in eager] == ["note (h2o)", "note (mikv)"]


def test_eager_note_reads_two_chunks_not_every_chunk():
    """The note built an array over every prefill chunk: a 1e13-token context (about 1.2e9 chunks of 8,192)
    needed 9 GiB and raised a traceback under a memory limit (docs audit). The product n (c + n) is
    largest at the last full chunk or the last chunk, so those two are read. 10^13 = 8,192 x 1,220,703,125
    exactly: the last chunk is full, 8,192 tokens after 10^13 - 8,192 = 9,999,999,991,808; 10^13 + 6,144
    tokens end in a 6,144-token chunk, and the full one before it (after 9,999,999,991,808) is the larger."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.pricing.input_notes import eager_scores_note

    h2o = make_method("h2o", build_deployment("h100", "llama-3.1-8b"))
    assert "for the 8,192-token chunk after 9,999,999,991,808 cached tokens" in eager_scores_note(h2o, 10**13, 8192, 1e9)
    # 8,192 x (9,999,999,991,808 + 8,192) > 6,144 x (10^13 + 6,144)
    assert "for the 8,192-token chunk after 9,999,999,991,808 cached" in eager_scores_note(h2o, 10**13 + 6144, 8192, 1e9)
