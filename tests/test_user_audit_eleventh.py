"""What an audit of the methods against their papers found (eleventh session): silent wrong numbers at
option edges and on model kinds a method was not written for."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kvsim.cli import app
from kvsim.costmodel.deployment import build_deployment
from kvsim.errors import ConfigError, KvsimError
from kvsim.methods import make_method


def run(*args: str):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.output + (f"error: {r.exception}" if r.exception is not None else "")


@pytest.mark.parametrize("dtype", ["int4", "int2", "fp4", "nvfp4"])
def test_sub_byte_kv_dtype_is_refused_and_points_to_kivi(dtype):
    """--kv-dtype int2 priced 8,192 B/token for Llama-3.1-8B (2 x 32 x 8 x 128 x 0.25 B), no scales,
    3x less than KIVI's 2 bits with its scales and residual (24,888 at 32K): a plain sub-byte cache
    is not a format engines store. Refused, with the method that prices it."""
    code, out = run("estimate", "--hw", "a100", "--kv-dtype", dtype)
    assert code != 0 and "an uncompressed KV cache is stored as fp32, bf16, fp16, fp8, int8" in out
    assert "--method kivi:bits=" in out
    with pytest.raises(ConfigError):
        build_deployment("a100", "llama-3.1-8b", kv_dtype=dtype)
    # the 8-bit and 16-bit caches stay: fp8 halves bf16's 131,072 B/token
    dep = build_deployment("a100", "llama-3.1-8b", kv_dtype="fp8")
    assert dep.full_kv_bytes_per_token == 65_536


@pytest.mark.parametrize("spec, needle", [
    ("kivi:group=48,residual=96", "group=48 must divide the 128 channels"),
    ("kivi:group=256,residual=256", "group=256 must divide the 128 channels"),
    ("kivi:residual=0", "must be at least one group (32)"),
    ("infllm:max_cached_block=4", "max_cached_block (4) must be at least topk (16)"),
    ("infllm:topk=64,max_cached_block=32", "max_cached_block (32) must be at least topk (64)"),
])
def test_method_settings_that_cannot_run_are_refused(spec, needle):
    """KIVI's V groups are G channels of one head (d = 128); K groups G tokens, so at least one
    group waits in 16 bits. InfLLM attends its retrieved blocks on the GPU: its block cache holds
    at least topk of them (with 0 cached blocks it priced 18,680 B/token and half the PCIe)."""
    dep = build_deployment("a100", "llama-2-7b")
    with pytest.raises(KvsimError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        make_method(spec, dep)
    make_method("kivi:group=64,residual=64", dep)  # 64 divides 128
    make_method("infllm:topk=16,max_cached_block=16", dep)


def test_methods_extrapolated_to_mla_say_so():
    """On DeepSeek-V2-Lite (MLA) KIVI, H2O and a composition price the latent with no note; now each
    answer says it is extrapolated (in --json too). Methods defined on MLA (full, mla) and GQA models
    get no such note."""
    r = CliRunner().invoke(app, ["estimate", "--hw", "a100", "--model", "deepseek-v2-lite", "--method",
                                 "kivi,h2o,full,snapkv+kivi", "--context", "8192", "--batch", "4", "--json"])
    assert r.exit_code == 0, r.output
    notes = {a["method"]: " ".join(a["notes"]) for a in json.loads(r.stdout)}
    for name in ("kivi", "h2o", "snapkv+kivi"):
        assert "extrapolated to deepseek-v2-lite's MLA latent" in notes[name], (name, notes)
    assert "per-head eviction is priced as eviction of whole latent rows" in notes["h2o"]
    assert "extrapolated" not in notes["full"]
    dep = build_deployment("a100", "llama-3.1-8b")
    assert make_method("kivi", dep).mla_note() is None


def test_topk_mla_reads_more_than_full_not_less():
    """TopK on MLA read half of the latent for its scores (0.63 of full attention's bytes): the whole
    latent is the key. Now it reads at least what full attention reads (hand count in test_methods_values)."""
    dep = build_deployment("a100", "deepseek-v2-lite")
    ctx = np.array([32_767.0])
    top = make_method("topk", dep).decode_cost(ctx).by_name("attn_decode").hbm_bytes
    full = make_method("full", dep).decode_cost(ctx).by_name("attn_decode").hbm_bytes
    assert top > full


# ---------------------------------------------------------------- a user's own measurement files
HEADER = "queued_ts,first_token_ts,last_token_ts,num_prompt_tokens,num_generation_tokens\n"


def test_a_csv_row_with_more_cells_than_columns_is_dropped(tmp_path):
    """'1,024' unquoted: the row read prompt 1 and output 24 (TPOT 0.0309 s instead of 0.71 / 40 =
    0.0178 s) and was counted good. Now it is unparseable, as `kvsim trace info` counts it."""
    from kvsim.validate.replay import read_run_log

    p = tmp_path / "s.csv"
    p.write_text(HEADER + "8123.50,8123.60,8124.00,300,41\n8123.61,8123.69,8124.40,1,024,41\n8124.0,8124.1,8124.5,200,21\n")
    log = read_run_log(p)
    assert len(log) == 2 and log.bad == {"unparseable": 1}
    assert log.prompt_tokens.tolist() == [300, 200]


def _unstreamed_ms_log(tmp_path, output_tokens: int):
    """A vLLM stats log in milliseconds of 5 requests that did not stream (first = last token, 2,000 ms
    after arrival), 500-token prompts: (its path, its rows)."""
    rows = [{"queued_ts": 1000.0 * i, "first_token_ts": 1000.0 * i + 2000.0, "last_token_ts": 1000.0 * i + 2000.0,
             "num_prompt_tokens": 500, "num_generation_tokens": output_tokens} for i in range(5)]
    p = tmp_path / "ms.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p, rows


def test_millisecond_times_without_a_tpot_are_refused(tmp_path):
    """A run that did not stream (ttft = latency) written in ms: the TPOT guard could not look, so it
    was replayed as seconds (E2E mean 1,987 s). Now the median E2E per request token decides:
    2,000 ms over 500 + 100 tokens read as seconds is 3.3 s per token, above 0.1."""
    from kvsim.errors import TraceError
    from kvsim.validate.replay import read_run_log

    p, rows = _unstreamed_ms_log(tmp_path, output_tokens=1)
    with pytest.raises(TraceError, match="look like milliseconds"):
        read_run_log(p)
    assert len(read_run_log(p, time_unit="ms")) == 5
    # the same run in seconds (2 s TTFT for a 500-token prompt) is fine: 2 / 501 = 0.004 s per token
    p.write_text("\n".join(json.dumps({**r, **{k: r[k] / 1000 for k in ("queued_ts", "first_token_ts", "last_token_ts")}})
                           for r in rows) + "\n")
    assert len(read_run_log(p)) == 5


def test_vllm_args_line_with_objects_keeps_its_settings(tmp_path):
    """A `non-default args` dict holding LoRAModulePath(...) made ast.literal_eval fail and the whole
    line was dropped: the logged gpu_memory_utilization 0.95 became vLLM's default 0.9 (KV -6.9 %)."""
    from pathlib import Path

    from kvsim.validate.vllm_log import parse_vllm_log

    data = Path(__file__).resolve().parents[1] / "kvsim" / "validate" / "data" / "vllm_memory_logs"
    src = data / "qwen-qwen3-8b--h100-80gb--tp1pp1dp1--8192.log"
    text = src.read_text(encoding="utf-8").replace(
        "'enable_prefix_caching': False}",
        "'enable_prefix_caching': False, 'lora_modules': [LoRAModulePath(name='a', path='/loras/a', base_model_name=None)]}")
    assert "LoRAModulePath" in text
    p = tmp_path / "lora.log"
    p.write_text(text, encoding="utf-8")
    assert parse_vllm_log(p).gpu_memory_utilization == parse_vllm_log(src).gpu_memory_utilization == 0.95


def test_replay_meta_bools_boms_names_and_spec_outputs(tmp_path):
    """--meta: `"max_num_seqs": true` ran 1 sequence (now an error); a BOM is read; a catalog name
    ('h100') beside a folder of that name stays a name. --out --force never replaces a spec the
    command reads (the --hw YAML here), as it already refused the log and the meta."""
    from kvsim.validate.replay_settings import read_meta

    meta = tmp_path / "meta.json"
    meta.write_text('{"hw": "h100", "model": "llama-3.1-8b", "max_num_seqs": true, "max_num_batched_tokens": 2048}')
    with pytest.raises(ConfigError, match="'max_num_seqs' must be a number, got true"):
        read_meta(meta)
    (tmp_path / "h100").mkdir()
    meta.write_bytes(b"\xef\xbb\xbf" + b'{"hw": "h100", "model": "llama-3.1-8b", "max_num_seqs": 8, "max_num_batched_tokens": 2048}')
    assert read_meta(meta)["hw"] == "h100"

    log = tmp_path / "r.csv"
    log.write_text(HEADER + "10.0,10.2,11.0,300,41\n11.0,11.2,12.0,200,21\n")
    hw = tmp_path / "node.yaml"
    from kvsim.hardware import load_system

    hw.write_text(load_system("h100").spec.model_dump_json())  # a system spec file the run names (JSON is YAML)
    before = hw.read_text()
    r = CliRunner().invoke(app, ["validate", "replay", str(log), "--hw", str(hw), "--model", "llama-3.1-8b",
                                 "--max-num-seqs", "8", "--max-num-batched-tokens", "2048", "--out", str(hw), "--force"])
    assert r.exit_code != 0 and "is an input of this command" in str(r.exception) and hw.read_text() == before


def test_estimate_notes_reach_json_and_say_what_context_means():
    """--batch above --max-num-seqs was said on stderr only (JSON notes []); a prompt-only compressor
    (SnapKV keeps 1,024 prompt tokens, then every generated token) now says what half the context
    generated would hold: 8,512 prompt -> 1,024 kept + 8,512 generated = 9,536 x 131,072 B = 1.25 GB."""
    r = CliRunner().invoke(app, ["estimate", "--hw", "a100", "--method", "snapkv,full", "--context", "17024",
                                 "--batch", "300", "--json"])
    assert r.exit_code == 0, r.output
    ans = {a["method"]: a["notes"] for a in json.loads(r.stdout)}
    assert all(any("--batch 300 is more than --max-num-seqs 256" in n for n in notes) for notes in ans.values())
    assert any("holds 1.25 GB per GPU, not 0.13 GB" in n for n in ans["snapkv"])
    assert not any("counts every token as prompt" in n for n in ans["full"])


def test_llmlingua_compressor_embedding_is_a_lookup():
    """The compressor's FLOPs and weight reads leave out its 256,002,048 embedding weights (XLM-R large,
    250,002 x 1,024); another compressor counts every weight unless told its table; a table as large as
    the model is refused."""
    dep = build_deployment("a100", "llama-3.1-8b")
    c = make_method("llmlingua", dep).prefill_cost(np.array([1000.0]), np.array([0.0])).by_name("compressor")
    assert c.flops == pytest.approx(2 * (560e6 - 256_002_048) * 3000)
    assert c.hbm_bytes == pytest.approx((560e6 - 256_002_048) * 2)
    small = make_method("llmlingua:compressor_params=2e8", dep).prefill_cost(np.array([1000.0]), np.array([0.0]))
    assert small.by_name("compressor").flops == pytest.approx(2 * 2e8 * 3000)
    with pytest.raises(KvsimError, match="must be fewer than"):
        make_method("llmlingua:compressor_params=2e8,compressor_embedding_params=3e8", dep)


def test_an_older_vllm_bench_file_without_latencies_replays(tmp_path):
    """benchmark_serving.py (and earlier `vllm bench serve`) saved ttfts and itls but no latencies; the
    replay refused it and asked for --save-detailed, which the run had used. E2E = ttft + sum(itls):
    request 0: 0.2 + 0.05 x 3 = 0.35 s."""
    from kvsim.validate.replay import read_run_log

    bench = {"date": "20250101-000000", "backend": "vllm", "request_rate": 1.0, "burstiness": 1.0,
             "input_lens": [100, 200, 300], "output_lens": [4, 3, 2], "ttfts": [0.2, 0.3, 0.25],
             "itls": [[0.05, 0.05, 0.05], [0.04, 0.06], [0.07]], "start_times": [10.0, 11.0, 12.0],
             "errors": ["", "", ""]}
    p = tmp_path / "old.json"
    p.write_text(json.dumps(bench))
    old = read_run_log(p)
    p.write_text(json.dumps({**bench, "latencies": [0.35, 0.4, 0.32]}))
    new = read_run_log(p)
    assert np.allclose(old.last_token_s - old.arrival_s, [0.35, 0.4, 0.32])
    assert np.allclose(old.last_token_s, new.last_token_s) and len(old) == 3
    assert any("no latencies" in n for n in old.notes)


def test_gzip_logs_are_read(tmp_path):
    """`validate replay log.jsonl.gz` said 'cannot read as UTF-8 text' and `validate memory x.log.gz`
    'not a vLLM v1 start-up log', while --trace reads .gz. Both read them now."""
    import gzip
    from pathlib import Path

    from kvsim.validate.replay import read_run_log
    from kvsim.validate.vllm_log import parse_vllm_log

    rows = HEADER + "10.0,10.2,11.0,300,41\n11.0,11.2,12.0,200,21\n"
    p = tmp_path / "r.csv.gz"
    p.write_bytes(gzip.compress(rows.encode()))
    assert len(read_run_log(p)) == 2
    src = Path(__file__).resolve().parents[1] / "kvsim" / "validate" / "data" / "vllm_memory_logs" / \
        "qwen-qwen3-8b--h100-80gb--tp1pp1dp1--8192.log"
    g = tmp_path / "x.log.gz"
    g.write_bytes(gzip.compress(src.read_bytes()))
    assert parse_vllm_log(g).kv_cache_tokens == parse_vllm_log(src).kv_cache_tokens


def test_quest_attends_whole_pages():
    """Quest selects token_budget // page_size pages (mit-han-lab/Quest): T = 100, P = 16 attends
    6 x 16 = 96 tokens per sparse layer (it attended 100); a budget below one page is refused."""
    dep = build_deployment("a100", "llama-3.1-8b")
    assert make_method("quest:page_size=16,token_budget=100", dep).budget(32768) == 96.0
    assert make_method("quest", dep).budget(32768) == 2048.0  # the default is whole pages already
    with pytest.raises(KvsimError, match="at least one page"):
        make_method("quest:page_size=64,token_budget=16", dep)


def test_quest_scores_the_whole_latent_on_mla():
    """DeepSeek-V2-Lite (27 layers, 2 dense, 16 heads, latent 512 + 64): each query head scores a page's
    576-wide bounds (it used q_head_dim 192). 32,768 tokens = 2,048 pages:
    25 x 2048 x 4 x 16 x 576 = 1,887,436,800 FLOPs."""
    dep = build_deployment("a100", "deepseek-v2-lite")
    c = make_method("quest", dep).decode_cost(np.array([32_767.0]))
    assert c.by_name("quest_estimate").flops == pytest.approx(1_887_436_800)


# ---------------------------------------------------------------- second read of this session's changes
def test_plan_disagg_layouts_share_the_host_as_the_plan_does(monkeypatch):
    """Aggregated and disaggregated layouts of `plan --disagg-instances` run on a full node's host share
    (8 on an a100 node), as the plan's own rows; a 1:1 layout had the whole host on each side."""
    import kvsim.plan.disagg as dg
    import kvsim.plan.disagg_search as ds
    from kvsim.hardware import load_link
    from kvsim.traces import load_trace

    seen = []
    real_cluster, real_disagg = ds.simulate_cluster, ds.simulate_disagg
    monkeypatch.setattr(ds, "simulate_cluster", lambda *a, **k: seen.append(("agg", k["node_replicas"])) or real_cluster(*a, **k))
    monkeypatch.setattr(ds, "simulate_disagg", lambda *a, **k: seen.append(("dis", k["node_replicas"])) or real_disagg(*a, **k))
    dep = build_deployment("a100", "llama-3.1-8b")
    m = make_method("full", dep)
    from kvsim.sim.config import SimConfig

    tr = load_trace("synthetic-fixed:n=2,prompt=64,output=2")
    for layout in ((0, 2), (1, 1)):
        ds.simulate_layout(layout, dep, m, tr, load_link("ib-ndr"), SimConfig())
    assert seen == [("agg", 8), ("dis", 8)]
    assert dg.host_shared(dep, 8).system.host_share == pytest.approx(1 / 8)


def test_reference_cluster_follows_the_node_share():
    """The reference cluster takes node_replicas too: with 8 per node both simulators agree on a
    MagicPIG burst (the fast one alone had the parameter)."""
    from kvsim.plan.cluster import simulate_cluster
    from kvsim.sim.config import SimConfig
    from kvsim.sim.reference_cluster import simulate_cluster_reference
    from kvsim.traces.base import Trace

    dep = build_deployment("a100", "llama-3.1-8b")
    m = make_method("magicpig", dep)
    tr = Trace(arrival_s=np.zeros(4), prompt_tokens=np.full(4, 3000), output_tokens=np.full(4, 8), name="b")
    fast = simulate_cluster(dep, m, tr, SimConfig(), 2, "round-robin", node_replicas=8)
    ref = simulate_cluster_reference(dep, m, tr, SimConfig(), 2, "round-robin", node_replicas=8)
    one = simulate_cluster(dep, m, tr, SimConfig(), 2, "round-robin")
    f, r = np.asarray(fast.records.finish_s), np.asarray(ref.finish_s)
    assert np.allclose(f, r, rtol=1e-9) and f.max() > np.asarray(one.records.finish_s).max()


def test_review_fixes_in_the_readers(tmp_path):
    """Trailing commas are harmless extra cells; a failed request of an older bench file is a failed
    request, not a missing field; a non-streamed multi-token log in ms (first = last token) is refused;
    tf32 KV gets no sub-byte advice; a nested speculative model does not pass for the model."""
    from kvsim.errors import TraceError
    from kvsim.validate.replay import read_run_log
    from kvsim.validate.vllm_log import _non_default_args

    p = tmp_path / "tc.csv"
    p.write_text(HEADER + "10.0,10.2,11.0,300,41,\n11.0,11.2,12.0,200,21,\n")
    assert len(read_run_log(p)) == 2
    bench = {"input_lens": [100, 200], "output_lens": [3, 0], "ttfts": [0.2, 0.0], "itls": [[0.05, 0.05], []],
             "start_times": [1.0, 2.0], "errors": ["", "boom"]}
    b = tmp_path / "old.json"
    b.write_text(json.dumps(bench))
    assert read_run_log(b).bad == {"failed_request": 1}
    ms, _ = _unstreamed_ms_log(tmp_path, output_tokens=100)
    with pytest.raises(TraceError, match="look like milliseconds"):
        read_run_log(ms)
    code, out = run("estimate", "--hw", "a100", "--kv-dtype", "tf32")
    assert code != 0 and "kivi" not in out
    line = "non-default args: {'speculative_config': {'model': 'draft'}, 'model': 'm', 'x': Obj(a=1)}"
    assert _non_default_args(line)["model"] == "m"


def test_numpy_printed_token_times_are_read():
    """A `token_ts` cell written by printing a numpy array ('[t0 t1 t2]', no commas) was not a JSON list:
    ITL went unchecked under a note that the times 'do not match'. It is read as the list it is; an
    elided print ('[1 ... 3]') is not."""
    from kvsim.validate.runlog import float_list

    assert float_list("[8123.5 8123.6  8123.7]") == [8123.5, 8123.6, 8123.7]
    assert float_list("[1 ... 3]") is None and float_list("[a b]") is None


def test_replay_notes_a_whole_prompt_budget_vllm_would_refuse(tmp_path):
    """--no-chunked-prefill with --max-num-batched-tokens 64 and prompts of 300 and 200 tokens: vLLM
    would not start; the replay runs it (each prompt alone in a step) and now says so, as simulate does."""
    p = tmp_path / "r.csv"
    p.write_text(HEADER + "10.0,10.2,11.0,300,41\n11.0,11.2,12.0,200,21\n")
    r = CliRunner().invoke(app, ["validate", "replay", str(p), "--hw", "h100", "--model", "llama-3.1-8b",
                                 "--max-num-seqs", "8", "--max-num-batched-tokens", "64", "--no-chunked-prefill", "--json"])
    notes = json.loads(r.stdout)["notes"]
    assert any("2 prompts longer than --max-num-batched-tokens 64 (longest 300)" in n for n in notes), notes


def test_estimate_says_a_host_method_had_the_whole_host():
    """estimate gives one replica the node's whole host; plan gives each 1/(num_gpus // tp) of it. The
    a100 node has 8 GPUs: a MagicPIG answer says so, with the plan's 1/8; full (no host use) does not."""
    r = CliRunner().invoke(app, ["estimate", "--hw", "a100", "--method", "magicpig,full", "--context", "8192",
                                 "--batch", "4", "--json"])
    ans = {a["method"]: " ".join(a["notes"]) for a in json.loads(r.stdout)}
    assert "one replica with the whole host of a100-80g's 8 GPUs" in ans["magicpig"] and "1/8" in ans["magicpig"]
    assert "whole host" not in ans["full"]


def test_simulate_says_a_host_method_had_the_whole_host_once():
    """simulate, like estimate, says a host-using method's replica had the whole host (in the summary's
    notes, printed once); the MLA note is printed once too."""
    r = CliRunner().invoke(app, ["simulate", "--hw", "a100", "--method", "magicpig", "--trace",
                                 "synthetic-fixed:n=3,prompt=256,output=4", "--json"])
    assert any("one replica with the whole host" in n for n in json.loads(r.stdout)["notes"])
    r = CliRunner().invoke(app, ["simulate", "--hw", "a100", "--model", "deepseek-v2-lite", "--method", "h2o",
                                 "--trace", "synthetic-fixed:n=3,prompt=256,output=4"])
    assert r.output.count("extrapolated to deepseek-v2-lite's MLA latent") == 1
