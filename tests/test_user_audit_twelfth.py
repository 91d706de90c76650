"""Twelfth session: findings of report-only audits and leftovers of the eleventh session's note, each
with a test that failed before its fix."""

from __future__ import annotations

import html

import pytest
from test_plan import CappedKivi, _request

from kvsim.plan.notes import plan_notes, rate_notes, setup_notes
from kvsim.plan.report import plan_report_html
from kvsim.plan.search import load_plan, plan_json, run_plan, save_plan
from kvsim.sim.kv_tiers import parse_offload


class CappedMagicpig(CappedKivi):
    """full meets the SLO up to 2 req/s (a rate that stands); MagicPIG at every rate (capped)."""

    def threshold(self, config) -> float:
        return 1e12 if config.method.startswith("magicpig") else 2.0


def test_plan_notes_reach_the_report_the_json_and_a_reloaded_plan(tmp_path):
    """The eleventh session left: `kvsim plan` printed its notes (host share, capped rows, ...) on stderr
    only; the report page and `--json` did not carry them, so a reader of report.html did not learn that
    MagicPIG's replicas were priced with 1/8 of the node's host. Now one function derives them from the
    plan (kvsim.plan.notes), and the CLI, the page, the JSON and `kvsim report` of a saved plan show the same."""
    plan = run_plan(_request(methods=["full", "magicpig"]), executor="serial", progress=False, evaluator=CappedMagicpig())
    notes = plan_notes(plan)
    # a100: 8 GPUs per node at TP 1 -> 1/8 of the host per replica; MagicPIG keeps KV and attention there
    assert notes[0].startswith("a100-80g · magicpig: each replica is priced with 1/8 of its node's host")
    assert setup_notes(plan) == notes[:1]
    capped = rate_notes(plan)
    assert len(capped) == 1 and capped[0].startswith("a100-80g · magicpig: still meets the SLO at the search's top rate")
    assert "no cost is stated" in capped[0]
    assert plan_json(plan)["notes"] == notes
    page = plan_report_html(plan)
    assert "<h2>Notes</h2>" in page and all(html.escape(n) in page for n in notes)
    save_plan(plan, tmp_path / "p")
    assert plan_notes(load_plan(tmp_path / "p")) == notes


def test_a_plan_without_caveats_has_no_notes_section():
    """full alone, its rate measured (39 request lifetimes): nothing to say, no empty section."""
    plan = run_plan(_request(methods=["full"]), executor="serial", progress=False, evaluator=CappedMagicpig())
    assert plan_notes(plan) == []
    assert "<h2>Notes</h2>" not in plan_report_html(plan)


def test_an_unknown_kv_dtype_lists_only_the_kv_cache_dtypes():
    """The eleventh session left: `--kv-dtype foo` listed every dtype as a choice (int2, int4, fp4, tf32 among
    them), and choosing one of those was then refused. Now the choices are the KV cache's own."""
    from kvsim.costmodel.deployment import KV_CACHE_DTYPES, build_deployment
    from kvsim.errors import KvsimError

    with pytest.raises(KvsimError) as err:
        build_deployment("a100", "llama-3.1-8b", kv_dtype="foo")
    msg = str(err.value)
    assert "fp32, bf16, fp16, fp8, int8" in msg and KV_CACHE_DTYPES == ("fp32", "bf16", "fp16", "fp8", "int8")
    assert not any(d in msg for d in ("int4", "int2", "fp4", "tf32"))


QWEN25_7B = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584, "num_attention_heads": 28,
             "num_key_value_heads": 4, "num_hidden_layers": 28, "intermediate_size": 18944, "vocab_size": 152064,
             "max_position_embeddings": 32768, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


@pytest.mark.parametrize("rope, context", [
    # Qwen2.5's model card: add {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}
    # for 131,072 tokens; vLLM (_get_and_verify_max_len): YaRN -> original x factor = 32,768 x 4
    ({"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"}, 131_072),
    ({"factor": 4.0, "original_max_position_embeddings": 16384, "rope_type": "yarn"}, 65_536),  # 16,384 x 4
    ({"factor": 2.0, "type": "linear"}, 65_536),  # linear / dynamic: max_position_embeddings x factor
    ({"factor": 2.0, "type": "dynamic"}, 65_536),
    ({"factor": 8.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}, 32_768),  # already scaled
    ({"type": "mrope", "mrope_section": [16, 24, 24]}, 32_768),  # no factor: x 1
    (None, 32_768),
])
def test_rope_scaling_sets_the_max_context_as_vllm_derives_it(tmp_path, rope, context):
    """A user audit: Qwen2.5-7B's config with the YaRN block its card prescribes gave a 32,768-token max context
    (a 60,000-token prompt rejected), where vLLM serves 131,072 and kvsim's own catalog says 131,072."""
    import json

    from kvsim.costmodel.deployment import build_deployment
    from kvsim.models import load_model
    from kvsim.pricing.engine_memory import rope_cache_bytes

    path = tmp_path / "config.json"
    path.write_text(json.dumps({**QWEN25_7B, "rope_scaling": rope}))
    assert load_model(str(path)).max_context_tokens == context
    # the rotary cache follows (vLLM's YaRN / linear / dynamic embeddings: original x factor positions)
    assert rope_cache_bytes(build_deployment("a100", str(path))) == context * 128 * 2  # positions x head_dim x 2 B


def test_estimate_defaults_to_a_shorter_models_own_max_context():
    """A user audit: `kvsim estimate --model opt-6.7b` (no --context) failed with "--context 4096 exceeds
    opt-6.7b's max context of 2,048 tokens": the user had typed no --context. Now the default is the
    model's maximum when that is below 4,096, with a note; an explicit --context 4096 is still refused."""
    import json
    import subprocess
    import sys

    run = [sys.executable, "-m", "kvsim", "estimate", "--model", "opt-6.7b"]
    r = subprocess.run([*run, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d[0] if isinstance(d, list) else d)["context"] == 2048
    assert "--context defaults to 2,048, opt-6.7b's max context" in r.stderr
    r = subprocess.run([*run, "--context", "4096"], capture_output=True, text=True)
    assert r.returncode == 1 and "exceeds opt-6.7b's max context of 2,048" in r.stderr


def test_estimate_kv_memory_is_whole_blocks_as_its_max_batch():
    """A user audit: at --context 1 the max batch counted whole 16-token blocks (21,530 requests fill the pool)
    but the KV line counted 1 token each: 2.82 GB instead of the pool's 45.15 GB (16x too little).
    Llama-3.1-8B: a block is 16 tokens x 131,072 B = 2,097,152 B; 21,530 x 2,097,152 = 45,151,682,560 B."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.pricing.estimate import estimate

    dep = build_deployment("h100", "llama-3.1-8b")
    for context in (1, 16):
        r = estimate(dep, make_method("full", dep), context, "max", max_num_seqs=100_000)
        assert r.max_batch == r.batch == 21_530
        assert r.kv_gpu_bytes == 45_151_682_560


def test_every_gpu_holds_whole_kv_heads_and_mla_down_projections():
    """A user audit: past tp = num_kv_heads vLLM gives each rank a whole KV head (QKVParallelLinear replicates
    its K/V projections on tp / n_kv ranks), and MLA's q_a / kv_a projections are replicated on every rank;
    kvsim divided all attention weights by tp (MQA at tp 8: 7.5 % too few weight bytes per GPU).

    Qwen3-30B-A3B (h 2048, d 128, 4 KV heads, 48 layers) at tp 8: 48 x 2 x 2048 x 128 x (1 - 4/8)
    = 12,582,912 params = 25,165,824 B more per GPU (bf16); at tp 4 nothing. DeepSeek-V2-Lite (h 2048,
    no q LoRA, d_c 512 + d_R 64, 27 layers) at tp 2: 27 x 2048 x 576 x (1 - 1/2) = 15,925,248 params."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.costmodel.transformer import linear_cost

    def weights(model, tp):
        return build_deployment("a100", model, tp=tp).weight_bytes_per_gpu

    q = build_deployment("a100", "qwen3-30b-a3b", tp=8).model
    assert q.replicated_attn_params_per_gpu(8) == 12_582_912 and q.replicated_attn_params_per_gpu(4) == 0
    assert weights("qwen3-30b-a3b", 8) - weights("qwen3-30b-a3b", 4) / 2 == pytest.approx(25_165_824, abs=1)
    assert build_deployment("a100", "deepseek-v2-lite", tp=2).model.replicated_attn_params_per_gpu(2) == 15_925_248
    # each GPU also reads and multiplies them every step: attn_proj of one decode token at tp 8 vs tp 4
    def attn_proj(tp):
        p = [p for p in linear_cost(build_deployment("a100", "qwen3-30b-a3b", tp=tp), 1, 1).parts if p.name == "attn_proj"][0]
        return float(p.flops), float(p.hbm_bytes)
    (f8, b8), (f4, b4) = attn_proj(8), attn_proj(4)
    assert f8 - f4 / 2 == pytest.approx(2 * 12_582_912)  # 2 FLOPs per weight per token
    assert b8 - b4 / 2 == pytest.approx(2 * 12_582_912)  # 2 B per weight (activations halve with tp)


def test_ranks_with_misses_rank_the_rejected_last():
    """numpy's linear percentile over all N requests, the rejected ranked above every served value. 191 served
    values 0..190 and 9 rejected (N = 200): p50's rank 0.5 x 199 = 99.5 -> 99.5; p90's 0.9 x 199 = 179.1 ->
    179.1; p99's 0.99 x 199 = 197.01 > 190, among the rejected -> None. Without misses: np.percentile."""
    import numpy as np

    from kvsim.sim.metrics import ranks_with_misses

    assert ranks_with_misses(np.arange(191.0), 9) == {"p50": 99.5, "p90": pytest.approx(179.1), "p99": None}
    x = np.random.default_rng(0).random(57)
    assert list(ranks_with_misses(x, 0).values()) == pytest.approx(np.percentile(x, [50, 90, 99]).tolist())
    assert ranks_with_misses(np.array([]), 3) == {"p50": None, "p90": None, "p99": None}


def test_simulate_and_plan_judge_a_run_with_rejections_alike():
    """A user audit: at a point where 9 of 200 requests were rejected (never fit the pool), `simulate` said the
    p99 SLO was met (its percentiles ignored the rejected) and `plan` said missed (it capped rejections at 1 %);
    and at p50 `plan` met the SLO with 93/200 rejected and only 58 of 200 requests within the TTFT bound (the
    completed requests' p50, and rejections allowed on top). Now both use kvsim.slo.judge: percentiles over all
    requests with the rejected ranked last, and at most 1 - q of them rejected."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.plan.digest import digest
    from kvsim.plan.schema import SLO
    from kvsim.sim.config import SimConfig
    from kvsim.sim.replica import simulate
    from kvsim.slo import verdict
    from kvsim.traces import load_trace

    dep = build_deployment("a100", "llama-3.1-8b", gpu_memory_utilization=0.206)
    res = simulate(dep, make_method("full", dep), load_trace("synthetic-burstgpt", num_requests=200, seed=0), SimConfig())
    s = res.summary
    rejected, total = s["requests_rejected"], s["requests_total"]
    assert 2 < rejected < 100 and "slo_ranks_s" in s
    point = digest(res)
    for pct in ("p50", "p90", "p99"):
        for slo in (SLO(ttft_s=2.0, itl_s=0.1, percentile=pct), SLO(tpot_s=1.0, percentile=pct), SLO(itl_s=1.0, percentile=pct)):
            assert point.meets(slo) == verdict(slo, s)["met"]
    # p99 with more than 1 % rejected: missed by both (the rank of p99 falls among the rejected)
    v = verdict(SLO(ttft_s=100.0, percentile="p99"), s)
    # (allowed: floor(0.01 x 199) = 1, the most that leave p99's rank 197.01 among the served)
    assert not v["met"] and v["checks"][0]["among_rejected"] and v["rejected"] == {"requests": rejected, "allowed": 1, "met": False}
    # the meaning: a met p-q TTFT bound has at least floor(q (N - 1)) + 1 of ALL N requests within it
    import math

    from kvsim.sim.metrics import request_metrics

    ttft = request_metrics(res.records)["ttft"]
    met = 0
    for bound in (1.0, 80.0, 115.0, 150.0):  # (this burst queues: TTFT p50 ~77 s, p90 ~113 s)
        for pct, q in (("p50", 0.5), ("p90", 0.9)):
            if verdict(SLO(ttft_s=bound, percentile=pct), s)["met"]:
                met += 1
                assert int((ttft <= bound).sum()) >= math.floor(q * (total - 1)) + 1
    assert met  # (some bound is met, so the property was exercised)


def test_plan_refuses_a_host_tier_beyond_a_replicas_share_of_the_host():
    """A user audit: `plan --kv-offload host=200GiB` on an a100 node (1 TiB host, 8 replicas: 128 GiB each) ran
    MagicPIG with its host KV pool silently shrunk ("92/100 rejected, do not fit in host memory"), while `simulate`
    refused the option. Now each configuration's row says why (90 % of 128 GiB = 115.2 GiB usable)."""
    offload = parse_offload("host=200GiB").model_dump()  # (as the CLI passes it)
    plan = run_plan(_request(methods=["full", "magicpig"], sim_options={"kv_offload": offload}),
                    executor="serial", progress=False, evaluator=CappedMagicpig())
    for c in plan.configs:
        assert c.error is not None and "200.0 GiB exceeds the usable host memory 115.2 GiB" in c.error


def test_plan_notes_name_the_tp_and_the_target_modes_ranking():
    """A user audit: with --tp-choices 1,2 the plan printed "each replica is priced with 1/8 of its node's host"
    and "... 1/4 ..." for the same hardware and method; and in target mode a capped row's note claimed a ranking
    ("after the rows whose rate stands") that only the max-rate mode applies."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.plan.notes import host_share_note

    dep = build_deployment("a100", "llama-3.1-8b", tp=2)
    assert host_share_note(dep, make_method("magicpig", dep), False) == [
        "a100-80g · magicpig · TP2: each replica is priced with 1/4 of its node's host (memory, DRAM bandwidth, CPU): "
        "the 4 replicas of a full node share it; `kvsim simulate` prices one replica with the whole host"]
    plan = run_plan(_request(methods=["full", "magicpig"]), executor="serial", progress=False, evaluator=CappedMagicpig())
    assert "ranked after the rows whose rate stands" in rate_notes(plan)[0]
    target = rate_notes(plan.model_copy(update={"target_rate_per_s": 1.0}))[0]
    assert "the target mode ranks it by its own target check" in target and "after the rows" not in target


def test_plan_burst_spans_round_down_and_error_rows_name_the_system():
    """A user audit: a target check of 9.948 request lifetimes (a burst: < 10) read "1e+01x E2E: a burst"; and a
    configuration that cannot be built was labelled "a100 · mla" beside rows of "a100-80g"."""
    from kvsim.plan.schema import fmt_lifetimes as _lifetimes

    assert (_lifetimes(9.948), _lifetimes(9.96), _lifetimes(0.96), _lifetimes(12.0)) == ("9.9", "9.9", "1.0", "12.0")
    plan = run_plan(_request(methods=["full", "mla"]), executor="serial", progress=False, evaluator=CappedMagicpig())
    bad = [c for c in plan.configs if c.error is not None]
    assert [c.label for c in bad] == ["a100-80g · mla"] and bad[0].hw_name == "a100-80g"


def test_estimates_max_batch_is_a_batch_that_fits():
    """A user audit: `estimate --method kivi --context 2048` on an H100 reported max batch 973, and `--batch 973`
    then did not fit ("exceeds the 957 requests"): max_batch was counted with the reserves of a 256-sequence
    engine, a batch of 973 with those of a 973-sequence one. Now max_batch is the largest b that fits an
    engine of max(256, b) sequences, the same for every --batch asked."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.pricing.estimate import estimate

    dep = build_deployment("h100", "llama-3.1-8b")
    m = make_method("kivi", dep)
    top = estimate(dep, m, 2048, "max").max_batch
    assert top > 256
    at_top, above = estimate(dep, m, 2048, top), estimate(dep, m, 2048, top + 1)
    assert at_top.fits and at_top.max_batch == top
    assert not above.fits and above.max_batch == top
    assert estimate(dep, m, 2048, 8).max_batch == top


def test_kivi_prefill_dequantizes_the_cached_prefix_it_reads_as_codes():
    """A user audit: KIVI's later prefill chunks read the cached prefix as codes but, unlike its decode, paid no
    dequantization. Llama-3.1-8B: 8 KV heads x 128 = 1,024 elements of K and of V per token and layer ->
    2 x 1,024 x 2 FLOPs (METHODS.md 1.1: scale and shift) x 32 layers = 131,072 FLOPs per cached token; a chunk
    of 100 new tokens after 1,000 cached: 131,072,000 FLOPs more than full's attention."""
    import numpy as np

    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method

    dep = build_deployment("a100", "llama-3.1-8b")

    def attn_flops(method):
        cost = make_method(method, dep).prefill_cost(np.array([100.0]), np.array([1000.0]))
        return sum(float(p.flops) for p in cost.parts if p.op == "attn_prefill")

    assert attn_flops("kivi") - attn_flops("full") == pytest.approx(131_072_000)


def test_served_rate_is_measured_as_the_offered_rate():
    """Two user audits: "offered / served load 0.100 / 0.188" for two requests 10 s apart (offered (N - 1) / arrival
    span, served N / (last finish - first arrival)). Now served is (F - 1) / (last - first finish): 1 / 10 here."""
    import numpy as np

    from kvsim.sim.metrics import RequestRecords, load_summary
    from kvsim.sim.request import RequestStatus

    arr = np.array([0.0, 10.0])
    rec = RequestRecords(arrival_s=arr, scheduled_s=arr.copy(), first_token_s=arr + 0.1, finish_s=arr + 0.6,
                         tbt_max_s=np.zeros(2), prompt_tokens=np.full(2, 1000), effective_prompt_tokens=np.full(2, 1000),
                         output_tokens=np.full(2, 50), cached_tokens=np.zeros(2, dtype=int), preemptions=np.zeros(2, dtype=int),
                         status=np.full(2, RequestStatus.FINISHED, dtype=np.int8), reject_reason={})
    out = load_summary(rec, busy_s=1.2, end_s=10.6, kv_gpu_peak_fraction=0.0)
    assert out["offered_req_s"] == pytest.approx(0.1) and out["served_req_s"] == pytest.approx(0.1)


def _stats_line(rid, arrival, first, last, prompt, output, token_ts=None, itl=None):
    import json

    row = {"request_id": rid, "queued_ts": arrival, "first_token_ts": first, "last_token_ts": last,
           "num_prompt_tokens": prompt, "num_generation_tokens": output}
    if token_ts is not None:
        row["token_ts"] = token_ts
    if itl is not None:
        row["itl"] = itl
    return json.dumps(row)


def test_replay_log_request_ids_that_are_not_values_are_bad_rows():
    """A user audit: a `request_id` that is a list or an object raised `TypeError: unhashable type` (a traceback).
    Now such a row is a bad row (bad_request_id); 1 and "1" are different ids."""
    from kvsim.validate.runlog_stats import read_stats_log

    text = "\n".join([_stats_line([1], 0, 0.1, 1.0, 10, 5), _stats_line({"a": 1}, 0, 0.1, 1.0, 10, 5),
                      _stats_line(1, 0, 0.1, 1.0, 10, 5), _stats_line("1", 0.5, 0.6, 1.5, 10, 5)])
    log = read_stats_log(text, "t.jsonl")
    assert len(log) == 2 and log.bad == {"bad_request_id": 2}


def test_replay_per_token_times_of_a_millisecond_epoch_log_are_kept():
    """A user audit: per-token times were checked against first/last token times to 1e-6 of the log's unit, so
    in a millisecond log on an epoch clock (1.7e12 ms: float steps of 2.4e-4 ms) 44 of 200 exact rows were
    dropped from ITL with a note that they did not match. A run's times in seconds, moved to an epoch clock in
    ms as a logger writes them (each stamp rounded at 1.7e12), its gaps from the seconds: every row kept."""
    import numpy as np

    from kvsim.validate.runlog_stats import read_stats_log

    rng = np.random.default_rng(0)
    old = 0
    for key in ("token_ts", "itl"):
        lines = []
        for i in range(50):
            a = 0.5 * i + rng.random()
            tok_s = a + 0.03 + np.cumsum(rng.random(7) * 0.02)  # seconds since the run started
            ms = [(t + 1.7e9) * 1000.0 for t in [a, *tok_s]]  # the logger's epoch stamps in ms
            gaps = (np.diff(tok_s) * 1000.0).tolist()
            extra = {"token_ts": ms[1:]} if key == "token_ts" else {"itl": gaps}
            lines.append(_stats_line(i, ms[0], ms[1], ms[-1], 100, 7, **extra))
            old += abs(sum(gaps) - (ms[-1] - ms[1])) > 1e-6 * 7 if key == "itl" else 0  # (the old check's verdict)
        log = read_stats_log("\n".join(lines), "ms.jsonl")
        assert all(x is not None for x in log.itl_s) and not any("do not match" in n for n in log.notes), key
    assert old > 10  # (the old fixed 1e-6 margin dropped these rows)


def test_replay_ties_in_arrival_follow_the_first_tokens_not_the_line_order():
    """A user audit: a log of requests with equal arrival stamps replayed in file order, so a shuffled copy
    predicted TTFT 8 % apart. Now ties go in first-token order (FCFS as the engine served them)."""
    from kvsim.validate.runlog_stats import read_stats_log

    lines = [_stats_line(i, 0.0, 0.1 * (i + 1), 1.0 + i, 100 * (i + 1), 5) for i in range(5)]
    a = read_stats_log("\n".join(lines), "a.jsonl")
    b = read_stats_log("\n".join(lines[::-1]), "b.jsonl")
    assert a.prompt_tokens.tolist() == b.prompt_tokens.tolist() == [100, 200, 300, 400, 500]


def test_replay_names_its_own_kv_dtype_flag():
    """A user audit: `validate replay --kv-cache-dtype foo` answered with simulate's flag name, "--kv-dtype foo"."""
    import subprocess
    import sys

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        log = f"{tmp}/r.jsonl"
        with open(log, "w") as f:
            f.write(_stats_line(1, 0.0, 0.1, 1.0, 10, 5) + "\n" + _stats_line(2, 0.5, 0.6, 1.5, 10, 5) + "\n")
        r = subprocess.run([sys.executable, "-m", "kvsim", "validate", "replay", log, "--hw", "h100", "--model", "llama-3.1-8b",
                            "--max-num-seqs", "64", "--max-num-batched-tokens", "2048", "--kv-cache-dtype", "foo"],
                           capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: --kv-cache-dtype foo: unknown") and "Traceback" not in r.stderr


def test_cpu_experts_overlap_only_the_moe_layers_gpu_gemms():
    """A user audit: with miss=cpu,overlap=yes the host's experts ran beside every linear GPU kernel, including
    attention projections that feed them, so Qwen3-30B-A3B on an H200 decoded faster with one expert per layer
    on the host (TPOT 4.527 ms) than with all on the GPU (4.639 ms). CPU experts need the layer's attention output
    and feed the next layer: they overlap the MoE GEMMs only. Fetched experts (a prefetcher) overlap everything."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.costmodel.expert_offload import OVERLAP_TAG
    from kvsim.costmodel.transformer import linear_cost
    from kvsim.methods import make_method
    from kvsim.pricing.estimate import estimate

    def tagged(miss):
        dep = build_deployment("h200", "qwen3-30b-a3b", expert_offload=f"cache=127,hit-rate=0.5,miss={miss},overlap=yes")
        return sorted(p.name for p in linear_cost(dep, 8, 8).parts if p.overlap == OVERLAP_TAG)

    assert tagged("cpu") == ["expert_cpu", "mlp_missing"]  # (since the fourteenth session: the layers that miss)
    assert tagged("fetch") == ["attn_proj", "elementwise", "expert_fetch", "lm_head", "mlp"]
    tpot = {}
    for spec in ("cache=127,hit-rate=0.5,miss=cpu,overlap=yes", None):
        dep = build_deployment("h200", "qwen3-30b-a3b", expert_offload=spec)
        tpot[spec] = estimate(dep, make_method("full", dep), 4096, 1).tpot_s
    assert tpot["cache=127,hit-rate=0.5,miss=cpu,overlap=yes"] > tpot[None]


def _simulate_json(*args):
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "kvsim", "simulate", *args, "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    d = d[0] if isinstance(d, list) else d
    return d.get("summary", d)


def test_a_tier_below_one_prefix_entry_is_noted():
    """A user audit: `--kv-offload host=32MiB` on a Mooncake trace (512-token entries of 64 MiB for Llama-3.1-8B:
    512 x 131,072 B) stored nothing, silently. Now the summary says so."""
    s = _simulate_json("--trace", "mooncake-conversation", "-n", "30", "--rate", "0.3", "--hw", "h100", "--kv-offload", "host=32MiB")
    assert any(n.startswith("KV offload host tier smaller than one prefix entry of this trace (512 tokens, 64 MiB)")
               for n in s["notes"])


def test_disaggregated_runs_say_why_requests_were_rejected():
    """A user audit: `--disagg 1:1 --prefill-hw h100 --decode-hw l4` rejected 10 of 120 requests (gpu_memory: an
    L4 decode instance cannot hold them) with no note; aggregated runs say how many and why."""
    s = _simulate_json("--trace", "mooncake-conversation", "-n", "120", "--rate", "0.3", "--disagg", "1:1",
                       "--prefill-hw", "h100", "--decode-hw", "l4")
    n = s["requests_rejected"]
    assert n > 0
    notes = [x for x in s["notes"] if "requests rejected" in x]
    assert notes == [f"{n} of 120 requests rejected: gpu_memory: {n} (one request's KV alone exceeds the GPU KV pool "
                     "(a KV-compressing method, a larger --tp or --gpu-memory-utilization would admit it))"]


def test_rate_on_a_one_request_trace_is_noted(tmp_path):
    """A user audit: `--rate 2` on a one-request trace was ignored silently (four requests at one instant are an
    error: there is no spacing to rescale)."""
    from kvsim.traces import load_trace

    f = tmp_path / "one.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,5\n")
    assert "rate=2 has no effect on a trace of one request" in (load_trace(str(f), rate=2.0).notice or "")
    assert "no effect" not in (load_trace(str(f)).notice or "")


def test_review_tier_note_without_a_whole_entry_and_tiers_that_stored():
    """The session's review: the tier note indexed the block table at one entry's tokens and raised IndexError
    when every request was shorter than an entry (prompts clipped to 400 tokens, 512-token entries); and it
    claimed "nothing was stored" from the first entry's size alone. Now it needs a tier that stored nothing."""
    s = _simulate_json("--trace", "mooncake-conversation", "-n", "20", "--rate", "0.3", "--hw", "h100", "--max-prompt-tokens",
                       "400", "--max-output-tokens", "50", "--kv-offload", "host=1GiB")
    assert not any("smaller than one prefix entry" in n for n in s["notes"])


def test_review_tpot_ranks_only_requests_that_have_a_tpot(tmp_path):
    """The session's review: with every output one token long (no TPOT) and one request rejected, the TPOT bound
    was judged missed "among the rejected"; a missing TPOT meets its bound. Rejected one-token requests do not
    rank in TPOT either."""
    from kvsim.slo import SLO, verdict

    rows = "\n".join(f"{i * 0.5},100,1" for i in range(100))
    f = tmp_path / "t.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + rows + "\n50.0,200000,1\n")
    s = _simulate_json("--trace", str(f), "--hw", "h100", "--slo-ttft", "2s", "--slo-tpot", "50ms", "--percentile", "p50")
    assert s["requests_rejected"] == 1 and "tpot" not in s["slo_ranks_s"]
    v = verdict(SLO(ttft_s=2.0, tpot_s=0.05, percentile="p50"), s)
    assert v["met"] and [c["metric"] for c in v["checks"] if c.get("among_rejected")] == []


def test_review_burst_spans_round_down_everywhere():
    """The session's review: only the report's note had the rounding; the plan's stderr note, its disaggregation
    rows and the layout note still printed 9.96 as 10.0."""
    import inspect

    import kvsim.commands.plan as cli
    import kvsim.plan.disagg_search as ds
    import kvsim.plan.notes as notes

    for mod in (cli, ds, notes):
        src = inspect.getsource(mod)
        assert "span_over_e2el:.1f" not in src and "span_over_e2el'']:.1f" not in src and "fmt_lifetimes" in src


def test_review_cpu_experts_do_not_overlap_dense_layers():
    """The session's review: with miss=cpu,overlap=yes the tagged `mlp` part still held the dense layers' MLP
    (DeepSeek-V2-Lite's first layer, Jamba's 16). Now those GEMMs are a serial part of their own."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.costmodel.expert_offload import OVERLAP_TAG
    from kvsim.costmodel.transformer import linear_cost

    dep = build_deployment("h200", "deepseek-v2-lite", expert_offload="cache=32,hit-rate=0.5,miss=cpu,overlap=yes")
    parts = {p.name: p for p in linear_cost(dep, 8, 8).parts}
    # (since the fourteenth session the MoE GEMMs of the layers that miss are `mlp_missing`, the others serial `mlp`)
    assert parts["mlp_dense"].overlap is None and parts["mlp_missing"].overlap == OVERLAP_TAG and parts["mlp"].overlap is None
    m = dep.model  # 1 dense layer of 10,944 x 3 x 2,048 weights: 2 FLOPs each per token, 8 tokens
    assert float(parts["mlp_dense"].flops) == pytest.approx(2.0 * m.num_dense_mlp_layers * m.dense_mlp_params_per_layer * 8)


def test_simulate_json_keeps_each_methods_place_and_itl_max_is_empty_without_a_gap(tmp_path):
    """An outputs audit: with `--method full,magicpig` and MagicPIG unable to run, `--json` printed one object
    (a script matching results to methods by position broke) and the skip was on stderr only; and requests.csv
    gave itl_max_s 0.0 for one-token outputs (no gap between tokens), where tpot_s is empty."""
    import csv
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "kvsim", "simulate", "--hw", "a100", "--method", "full,magicpig", "--trace",
                        "burstgpt", "-n", "30", "--gpu-memory-utilization", "0.205", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [x.get("method_spec", x.get("method")) for x in d] == ["full", "magicpig"]
    assert d[0]["method_spec"] == "full" and d[1]["skipped"].startswith("no GPU memory left for the KV cache")
    f = tmp_path / "t.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,1\n1.0,100,5\n")
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-m", "kvsim", "simulate", "--trace", str(f), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(next(out.rglob("requests.csv")))))
    assert rows[0]["itl_max_s"] == "" == rows[0]["tpot_s"] and float(rows[1]["itl_max_s"]) > 0


def test_replay_interval_slack_does_not_grow_with_the_span():
    """The session's review: the rounding slack of a row's intervals grew with span x tokens, so 60 ms off on a
    60 s, 1,000-token request passed as rounding. A 10 ms mismatch on such a row in seconds is refused (the slack
    is 1e-6 per interval added: 1 ms for 1,000 tokens, as before this session)."""
    from kvsim.validate.runlog import itl_from_intervals

    gaps = [0.06] * 999  # 999 x 0.06 = 59.94 s
    assert itl_from_intervals(gaps, 100.0, 100.0 + 59.94, 1000) is not None
    assert itl_from_intervals(gaps, 100.0, 100.0 + 59.94 + 0.01, 1000) is None
