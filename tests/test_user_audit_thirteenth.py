"""Findings of the thirteenth session's audits (Python API; less-covered methods), each fixed:
every test here failed on the code before the fix (b836b4e)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import kvsim
from kvsim.errors import ConfigError, KvsimError
from kvsim.methods import make_method


# ---------------------------------------------------------------- Python API


def test_a_method_built_for_another_model_is_refused():
    """Before: ``estimate(model="qwen3-8b", method=<full built for Llama-3.1-8B>)`` priced Llama's
    131,072 B/token under Qwen3-8B's name (Qwen3-8B: 36 layers x 8 KV heads x 128 x 2 x 2 B = 147,456)."""
    m = make_method("full", kvsim.deployment("h100", "llama-3.1-8b"))
    assert kvsim.estimate(hw="h100", model="llama-3.1-8b", method=m, context=8192).kv_bytes_per_token_gpu == 131_072
    with pytest.raises(ConfigError, match="model llama-3.1-8b vs qwen3-8b"):
        kvsim.estimate(hw="h100", model="qwen3-8b", method=m, context=8192, batch=8)
    assert kvsim.estimate(hw="h100", model="qwen3-8b", context=8192).kv_bytes_per_token_gpu == 36 * 8 * 128 * 2 * 2


def test_estimate_api_answers_as_the_command_does():
    """A batch that does not fit has no TPOT / throughput (the CLI printed null, the API numbers);
    an OPT model defaults to its own 2,048-token maximum (the API raised); notes as `note:` lines."""
    r = kvsim.estimate(batch=512)
    assert not r.fits and r.tpot_s is None and r.throughput_tok_s is None and r.breakdown == []
    assert any("more than max_num_seqs 256" in n for n in r.notes)
    cli = json.loads(subprocess.run([sys.executable, "-m", "kvsim", "estimate", "--batch", "512", "--json"],
                                    capture_output=True, text=True, check=True).stdout)[0]
    assert cli["tpot_s"] is None and cli["ttft_s"] == pytest.approx(r.ttft_s, rel=1e-12)
    long = kvsim.estimate(context=10**6, allow_long_context=True)
    assert long.max_batch == 0 and long.ttft_s is None
    opt = kvsim.estimate(model="opt-6.7b")
    assert opt.context == 2048 and any("defaults to 2,048" in n for n in opt.notes)
    assert any("measure it (nccl-tests" in n for n in kvsim.estimate(hw="l4", tp=4).notes)


@pytest.mark.parametrize("call", [
    lambda: kvsim.estimate(gpu_memory_utilization="0.9"),
    lambda: kvsim.estimate(kv_dtype=None),
    lambda: kvsim.estimate(context=2.5),
    lambda: kvsim.tts_cost(batch=float("nan")),
    lambda: kvsim.tts_cost(batch=2.5),
    lambda: kvsim.tts_cost(tts=None),
    lambda: kvsim.tts_cost(intensity="x"),
    lambda: kvsim.tts_cost(foo=1),
    lambda: kvsim.load_trace("burstgpt", foo=1),
    lambda: kvsim.plan(hws=None),
    lambda: kvsim.plan(max_num_seqs=0),
    lambda: kvsim.plan(sim_options={"foo": 1}),
    lambda: kvsim.plan(hws=[kvsim.hardware.load_system("h100")]),
])
def test_bad_api_arguments_are_one_line_kvsim_errors(call):
    """Before: TypeError / AttributeError / ValueError tracebacks, a pydantic block, or NaN eFLOPs."""
    with pytest.raises(KvsimError) as err:
        call()
    assert "\n" not in str(err.value)


def test_tts_cost_carries_its_notes_and_serializes():
    c = kvsim.tts_cost(tts="best-of-n=1,gen=1000000")
    assert any("past qwen3-8b's context of 40,960" in n for n in c.notes)
    d = json.loads(json.dumps(c.to_dict()))
    # eFLOPs per generated token: total / (samples x gen tokens)
    assert d["eflops_per_generated_token"] == pytest.approx(c.total_eflops / 1_000_000, rel=1e-12)
    assert d["gen_tokens"] == 1_000_000 and d["notes"] == list(c.notes)


def test_plan_api_takes_the_commands_token_bound_lists_and_engine_settings():
    """Before: ``slo_tpot_s=1.0`` kept ITL <= 0.1 s (the CLI drops it), ``"a100,h100"`` was one
    unknown name, ``max_num_seqs=`` was refused, and a plan nothing could run returned rate 0."""
    p = kvsim.plan(hws="a100", methods="full", slo_ttft_s=10.0, slo_tpot_s=1.0, num_requests=60)
    assert p.slo.itl_s is None and p.slo.tpot_s == 1.0
    assert kvsim.plan(hws="a100", num_requests=60).slo.itl_s == 0.1  # neither bound: ITL <= 100 ms
    labels = [c.label for c in kvsim.plan(hws="a100,h100", methods="full,kivi:bits=2,group=32", num_requests=60,
                                          max_num_seqs=64).configs]
    assert sorted(labels) == sorted(["a100-80g · full", "a100-80g · kivi", "h100 · full", "h100 · kivi"])
    with pytest.raises(ConfigError, match="no configuration can run"):
        kvsim.plan(kv_dtype="int4", num_requests=50)


def test_simulate_api_summary_is_the_commands_json():
    """Before: the API's summary lacked ``slo``, ``method_spec``, ``trace_source`` and the notes the
    command prints (a method's own KV format, windowed attention)."""
    kw = dict(hw="h100", model="mistral-7b-v0.1", trace="azure-conv", num_requests=30, kv_dtype="fp8", method="kivi",
              slo_ttft_s=2.0, slo_tpot_s=0.05)
    r = kvsim.simulate(**kw)
    cli = json.loads(subprocess.run(
        [sys.executable, "-m", "kvsim", "simulate", "--hw", "h100", "--model", "mistral-7b-v0.1", "--trace", "azure-conv",
         "-n", "30", "--kv-dtype", "fp8", "--method", "kivi", "--slo-ttft", "2s", "--slo-tpot", "50ms", "--json"],
        capture_output=True, text=True, check=True).stdout)
    assert r.summary["slo"] == cli["slo"] and r.summary["method_spec"] == cli["method_spec"] == "kivi"
    assert r.summary["notes"] == cli["notes"]
    assert any("windowed attention" in n for n in cli["notes"]) and any("own format" in n for n in cli["notes"])
    assert r.summary["config"]["gpu_memory_utilization"] == cli["config"]["gpu_memory_utilization"] == 0.9
    assert r.summary["ttft_s"] == cli["ttft_s"]
    assert set(cli) - set(r.summary) == {"trace_spec"}  # (the command's own flags)


def test_a_method_built_for_the_same_deployment_is_accepted_and_a_dtype_difference_named():
    """The memory fraction sizes pools, not a method's costs: a method built at 0.8 runs in a simulation at
    0.8 (an engine setting there, so the API's deployment stays at 0.9). A KV dtype difference is named
    (review: the first message named model, system and TP only, equal on both sides)."""
    m = make_method("full", kvsim.deployment("h100", gpu_memory_utilization=0.8))
    r = kvsim.simulate(hw="h100", method=m, gpu_memory_utilization=0.8, trace="synthetic-poisson", num_requests=5)
    assert r.summary["requests_completed"] == 5
    with pytest.raises(ConfigError, match="kv_dtype fp8 vs bf16"):
        kvsim.estimate(hw="h100", method=make_method("full", kvsim.deployment("h100", kv_dtype="fp8")))


def test_plan_api_memory_fraction_is_the_deployments_and_itl_can_be_turned_off():
    """Review of this stop's API change: gpu_memory_utilization went to the engine only (provenance 0.9);
    an explicit slo_itl_s=None means "not judged" again (the default is the CLI's 100 ms rule)."""
    p = kvsim.plan(hws="a100", methods="full", num_requests=60, gpu_memory_utilization=0.5)
    assert p.provenance[0]["deployment"]["gpu_memory_utilization"] == 0.5
    assert kvsim.plan(hws="a100", num_requests=60, slo_itl_s=None).slo.itl_s is None


def test_tts_cost_notes_are_the_commands():
    argv = ["estimate", "--hw", "l4", "--tp", "4", "--model", "mistral-7b-v0.1", "--method", "magicpig",
            "--tts", "best-of-n=4,gen=8k", "--json"]
    cli = subprocess.run([sys.executable, "-m", "kvsim", *argv], capture_output=True, text=True, check=True)
    printed = [line[len("note: "):] for line in cli.stderr.splitlines() if line.startswith("note: ")]
    c = kvsim.tts_cost(hw="l4", tp=4, model="mistral-7b-v0.1", method="magicpig", tts="best-of-n=4,gen=8k")
    assert list(c.notes) == printed and len(printed) == 4


def test_cacheblend_summary_notes_equal_the_commands_json():
    kw = ["--trace", "synthetic-rag", "-n", "40", "--method", "cacheblend", "--hw", "l40s", "--model", "mistral-7b-v0.2"]
    cli = json.loads(subprocess.run([sys.executable, "-m", "kvsim", "simulate", *kw, "--json"], capture_output=True,
                                    text=True, check=True).stdout)
    r = kvsim.simulate(trace="synthetic-rag", num_requests=40, method="cacheblend", hw="l40s", model="mistral-7b-v0.2")
    assert r.summary["notes"] == cli["notes"] and any("chunk cache (lru) hit rate" in n for n in cli["notes"])
    assert r.summary["chunk_cache"] == cli["chunk_cache"]


def test_replay_names_a_key_written_twice_in_a_bench_result(tmp_path):
    """Review: the DuplicateKeyError was read as "several results, one per line" (one-line file) or
    "no usable request" (pretty-printed)."""
    text = json.dumps({"num_prompts": 2, "date": "x", "input_lens": [10, 20]})
    for name, body in (("one.json", text), ("pretty.json", text.replace(", ", ",\n"))):
        f = tmp_path / name
        f.write_text(body[:-1] + ', "num_prompts": 3}')
        code, _, err = _cli("validate", "replay", str(f), "--hw", "a100", "--model", "llama-3.1-8b",
                            "--max-num-seqs", "256", "--max-num-batched-tokens", "8192")
        assert code == 1 and "'num_prompts' given twice" in err, err


def test_a_trace_option_and_its_alias_together_are_an_error():
    from kvsim.errors import TraceError

    with pytest.raises(TraceError, match="given twice"):
        kvsim.load_trace("synthetic-poisson:n=10,num_requests=20")  # (20 requests before)
    assert len(kvsim.load_trace("synthetic-poisson:num_requests=7")) == 7


def test_sexagesimal_yaml_floats_are_refused(tmp_path):
    from kvsim.errors import SpecError
    from kvsim.specbase import read_yaml

    f = tmp_path / "s.yaml"
    f.write_text("a: 1:30.5\n")
    with pytest.raises(SpecError, match="read as 90.5"):
        read_yaml(f)
    f.write_text("a: 1.5\nb: .inf\n")
    assert read_yaml(f) == {"a": 1.5, "b": float("inf")}


def test_split_methods_lives_in_the_library():
    """The library's own split (the CLI layer's is a thin wrapper over it): plan() takes the CLI's text."""
    import inspect

    from kvsim.commands import common
    from kvsim.methods import split_methods

    assert split_methods(["full,kivi:bits=4,group=64+quest:page_size=32,snapkv"]) == [
        "full", "kivi:bits=4,group=64+quest:page_size=32", "snapkv"]
    assert "kvsim.methods import split_methods" in inspect.getsource(common.split_methods)


# ---------------------------------------------------------------- methods


def _one_request_csv(tmp_path, prompt: int) -> str:
    f = tmp_path / "one.csv"
    f.write_text(f"arrival,prompt,output\n0,{prompt},16\n")
    return str(f)


@pytest.mark.parametrize("method,rejected", [("elastic", 1), ("mikv", 1), ("zipcache", 1), ("h2o", 1), ("cake", 0)])
def test_prefill_peak_of_methods_that_choose_from_the_whole_prompt(tmp_path, method, rejected):
    """One 40,000-token prompt of Llama-3.1-8B on an L4: its 16-bit KV is 40,000 x 131,072 B = 5.24 GB,
    above the L4's KV pool (4.46 GB). Elastic Cache merges by the whole prompt's scores, MiKV picks
    precision by H2O importance, ZipCache saliency from probe tokens' attention over the prompt: each
    holds the prompt's full KV until prefill ends, as H2O does, so the request is rejected (before:
    Elastic ran with a 4.20 GB peak = 0.8 x 5.24). CAKE's cascade trims layer by layer (METHODS.md 1.8:
    it caps the peak at the budget), so it runs (before: rejected as SnapKV is)."""
    from kvsim.traces import load_trace

    tr = load_trace(_one_request_csv(tmp_path, 40_000), format="csv",
                    columns="arrival=arrival,prompt=prompt,output=output")
    r = kvsim.simulate(hw="l4", method=method, trace=tr)
    assert r.summary["requests_rejected"] == rejected
    if rejected:
        assert r.summary["rejected_reasons"] == {"gpu_memory": 1}


def test_xecomla_refuses_a_latent_no_smaller_than_full_kv():
    """Llama-3.1-8B caches 2 x 8 x 128 = 2,048 values per token and layer; rank 4,096 + RoPE 32 gave
    264,192 B/token (2.02x full's 131,072) with no word. Rank 1,983 + 32 = 2,015 < 2,048 is allowed:
    2,015 x 2 B x 32 layers = 128,960 B/token."""
    with pytest.raises(ConfigError, match="no less than full KV"):
        kvsim.estimate(method="xecomla:kv_lora_rank=4096")
    with pytest.raises(ConfigError, match="no less than full KV"):
        kvsim.estimate(method="xecomla:kv_lora_rank=2016")  # 2,016 + 32 = 2,048
    assert kvsim.estimate(method="xecomla:kv_lora_rank=1983").kv_bytes_per_token_gpu == 2015 * 2 * 32


def test_a_bad_inline_trace_option_is_an_error_even_when_a_flag_overrides_it():
    """Before: ``synthetic-poisson:n=-5`` with ``num_requests=20`` ran 20 requests; without it, an error."""
    from kvsim.errors import TraceError

    with pytest.raises(TraceError, match="n: must be in"):
        kvsim.load_trace("synthetic-poisson:n=-5", num_requests=20)
    assert len(kvsim.load_trace("synthetic-poisson:n=5", num_requests=20)) == 20  # (a good one is still overridden)


# ---------------------------------------------------------------- command line: outputs and bad input


def _cli(*argv, cwd=None):
    from test_answers_hardening import cli

    return cli(*argv, cwd=cwd)


def test_a_forged_manifest_never_removes_files_outside_the_output_folder(tmp_path):
    """Before: a .kvsim-manifest.json listing ``../victim.txt`` (or an absolute path, or ``full/../../x``)
    in an --out folder made `kvsim simulate --out` delete that file, and folders emptied on its way."""
    (tmp_path / "evil").mkdir()
    (tmp_path / "victim.txt").write_text("mine")
    (tmp_path / "victimdir").mkdir()
    (tmp_path / "victimdir" / "a").write_text("mine too")
    (tmp_path / "evil" / ".kvsim-manifest.json").write_text(json.dumps({"written_by": "kvsim", "files": [
        "../victim.txt", str(tmp_path / "victim.txt"), "full/../../victim.txt", "../victimdir/a"]}))
    code, _, err = _cli("simulate", "-n", "20", "--out", str(tmp_path / "evil"))
    assert code == 0, err
    assert (tmp_path / "victim.txt").read_text() == "mine" and (tmp_path / "victimdir" / "a").exists()
    assert (tmp_path / "evil" / "full" / "summary.json").exists()


def test_report_never_replaces_what_it_reads_nor_its_script(tmp_path):
    """Before: `kvsim report D --out D/configs/000-...json --force` replaced a configuration's result
    with HTML (the folder no longer made a report), and `--out D/plotly-*.min.js` the script pages load."""
    d = tmp_path / "plan1"
    code, _, err = _cli("plan", "-n", "30", "--executor", "serial", "--no-cache", "--no-progress", "--out", str(d))
    assert code == 0, err
    config = next((d / "configs").glob("*.json"))
    before = config.read_bytes()
    code, _, err = _cli("report", str(d), "--out", str(config), "--force")
    assert code == 1 and "is an input of this run" in err and config.read_bytes() == before
    js = next(d.glob("plotly-*.min.js"))
    code, _, err = _cli("report", str(d), "--out", str(js), "--force")
    assert code == 1 and "plotly.js that kvsim's pages load" in err
    assert _cli("report", str(d))[0] == 0


def test_simulate_report_may_not_name_a_file_of_its_own_out_folder(tmp_path):
    """Before: --report D/full/summary.json --force replaced the run's summary with the page (exit 0);
    --report D/manifest.json failed after writing D. Now refused before any work; D/report.html is fine."""
    for bad in ("full/summary.json", "manifest.json"):
        d = tmp_path / f"o{len(bad)}"
        code, _, err = _cli("simulate", "-n", "20", "--out", str(d), "--report", str(d / bad), "--force")
        assert code == 1 and "is among the files --out" in err and not d.exists()
    d = tmp_path / "ok"
    assert _cli("simulate", "-n", "20", "--out", str(d), "--report", str(d / "report.html"))[0] == 0
    assert json.loads((d / "full" / "summary.json").read_text())["method"] == "full"


@pytest.mark.parametrize("argv,message", [
    (("trace", "info", "synthetic-gamma:cv=1e-200", "-n", "20"), "greater than or equal to 0.001"),  # ZeroDivisionError
    (("trace", "info", "burstgpt", "-n", "5", "--arrivals", "gamma:rate=4,cv=1e-200"), "cv must be in [0.001, 10]"),
    (("trace", "info", "burstgpt", "-n", "50", "--rate", "1e200"), "must be at most 1e+09"),  # CV read 0
    (("trace", "info", "burstgpt", "-n", "50", "--time-scale", "1e308"), "must be at most 1e+09"),
    (("plan", "-n", "30", "--no-cache", "--target-rate", "1e308"), "between 1e-09 and 1e+09"),  # OverflowError
    (("plan", "-n", "30", "--no-cache", "--target-rate", "1e-320"), "between 1e-09 and 1e+09"),  # "arrives at nan s"
    (("trace", "info", "synthetic-poisson:n=10,n=20"), "option 'n' given twice"),  # 20 requests
    (("plan", "-n", "30", "--no-cache", "--method", "kivi", "--sweep", "kivi.bits=2,4", "--sweep", "kivi.bits=8"),
     "kivi.bits=2,4,8"),  # bits=4 vanished
    (("trace", "info", "synthetic-tree:width=1000,depth=1000", "-n", "20"), "prefix block ids"),  # MemoryError / OOM kill
])
def test_bad_values_are_one_line_errors(argv, message):
    code, _, err = _cli(*argv)
    assert code in (1, 2) and message in err and "Traceback" not in err, err


def test_yaml_integers_read_as_a_reader_reads_them(tmp_path):
    """PyYAML (YAML 1.1) read ``num_layers: 040`` as 32 layers (octal) with no word; ``1:30`` would be 90."""
    from kvsim.errors import SpecError
    from kvsim.specbase import read_yaml

    for text, shown in (("num_layers: 040\n", "'040' is read as 32"), ("x: 1:30\n", "'1:30' is read as 90")):
        f = tmp_path / "m.yaml"
        f.write_text(text)
        with pytest.raises(SpecError, match=shown):
            read_yaml(f)
    f.write_text("a: 40\nb: 0\nc: 3_2\nd: '040'\n")
    assert read_yaml(f) == {"a": 40, "b": 0, "c": 32, "d": "040"}


def test_json_inputs_with_a_key_written_twice(tmp_path):
    """Before: the last copy won silently (a Mooncake row read prompt 5,000; a replay meta max_num_seqs 8)."""
    rows = tmp_path / "moon.jsonl"
    rows.write_text('{"timestamp": 0, "input_length": 100, "output_length": 10, "input_length": 5000}\n'
                    '{"timestamp": 1, "input_length": 100, "output_length": 10}\n')
    tr = kvsim.load_trace(str(rows))
    assert len(tr) == 1 and int(tr.prompt_tokens[0]) == 100 and "given twice" in tr.notice
    from kvsim.validate.replay_settings import read_meta

    meta = tmp_path / "meta.json"
    meta.write_text('{"hw": "h100", "max_num_seqs": 256, "max_num_seqs": 8}')
    with pytest.raises(ConfigError, match="'max_num_seqs' given twice"):
        read_meta(meta)


# ---------------------------------------------------------------- scheduler vs vLLM v1


def test_prefix_cache_evicts_a_prompts_tail_before_its_head():
    """vLLM v1 frees a request's blocks last to first ("so that the tail blocks are freed first",
    SingleTypeKVCacheManager.free), so under pressure a cached prompt loses its tail and keeps a usable
    head. kvsim released in prompt order and evicted the head: every other entry became unreachable.
    A100, Llama-3.1-8B, a 644-block pool (gpu_memory_utilization 0.2143), budget 2,048, 16-token ids:
    X (3,200 tokens, ids 1..200) finishes; Y (7,200 tokens, other ids) needs 8 of X's 200 cached blocks
    (plus the 6 its decodes take); X again at t = 3 s now hits 192 entries = 3,072 tokens (0 before, TTFT
    0.205 s, a cold prefill) and gets its first token in 24 ms."""
    from kvsim.traces import Trace

    x = tuple(range(1, 201))
    y = tuple(range(100_000, 100_450))
    tr = Trace("t", arrival_s=np.array([0.0, 1.0, 3.0]), prompt_tokens=np.array([3200, 7200, 3200]),
               output_tokens=np.array([1, 20, 1]), prefix_blocks=(x, y, x), prefix_block_tokens=16)
    for engine in ("fast", "reference"):
        if engine == "fast":
            r = kvsim.simulate("a100", "llama-3.1-8b", "full", tr, gpu_memory_utilization=0.2143, max_num_batched_tokens=2048)
            cached, ttft = r.requests["cached_tokens"], r.requests["ttft_s"]
        else:
            from kvsim.sim.config import SimConfig
            from kvsim.sim.reference import simulate_reference

            dep = kvsim.deployment("a100", "llama-3.1-8b")
            rec = simulate_reference(dep, make_method("full", dep), tr,
                                     SimConfig(gpu_memory_utilization=0.2143, max_num_batched_tokens=2048))
            cached, ttft = rec.cached_tokens, rec.first_token_s - tr.arrival_s
        assert cached.tolist() == [0, 0, 3072], engine
        assert ttft[2] < 0.2 * ttft[0], engine


def test_a_budget_below_the_sequence_limit_is_noted():
    """vLLM refuses max_num_batched_tokens < max_num_seqs; kvsim ran it without a word (8 decodes in
    steps of a 4-token budget)."""
    from kvsim.sim.summary_extras import budget_below_seqs_note

    assert budget_below_seqs_note(256, 8192) is None and budget_below_seqs_note(8, 8) is None
    assert "vLLM refuses" in budget_below_seqs_note(8, 4)
    r = kvsim.simulate(trace="synthetic-poisson", num_requests=8, max_num_seqs=8, max_num_batched_tokens=4)
    assert any("below --max-num-seqs 8" in n for n in r.summary["notes"])


def test_reserve_full_prompt_admits_only_requests_whose_whole_prompt_fits():
    """vLLM's scheduler_reserve_full_isl (PR #37307): two 6,000-token prompts at t = 0 on a 642-block
    pool (A100, Llama-3.1-8B, gpu_memory_utilization 0.2186; 6,000 tokens = 375 blocks each). Without the
    gate B's first chunk (8,192 - 6,000 = 2,192 tokens) joins A's prefill step, B is preempted later and A's
    TTFT is 0.525 s; with it B waits (375 + 375 > 642), A's TTFT is A's alone and nobody is preempted.
    Both simulators agree."""
    from kvsim.sim.config import SimConfig
    from kvsim.sim.reference import simulate_reference
    from kvsim.traces import Trace

    two = Trace("t", np.array([0.0, 0.0]), np.array([6000, 6000]), np.array([300, 300]))
    alone = kvsim.simulate("a100", "llama-3.1-8b", "full", two.head(1), gpu_memory_utilization=0.2186)
    dep = kvsim.deployment("a100", "llama-3.1-8b")
    for gate in (False, True):
        r = kvsim.simulate("a100", "llama-3.1-8b", "full", two, gpu_memory_utilization=0.2186, reserve_full_prompt=gate)
        ref = simulate_reference(dep, make_method("full", dep), two,
                                 SimConfig(gpu_memory_utilization=0.2186, reserve_full_prompt=gate))
        assert np.allclose(ref.first_token_s, r.requests["first_token_s"], rtol=1e-12, atol=0)
        if gate:
            assert r.requests["ttft_s"][0] == pytest.approx(alone.requests["ttft_s"][0], rel=1e-12)
            assert r.requests["preemptions"].tolist() == [0, 0]
        else:
            assert r.requests["ttft_s"][0] > 1.3 * alone.requests["ttft_s"][0]
            assert r.requests["preemptions"].tolist() == [0, 1]


def test_a_refused_admission_leaves_the_prefix_caches_lru_order_alone():
    """vLLM touches a request's hit blocks only once its allocation fits; kvsim referenced them first and
    released them on refusal, which made a blocked request's hits the most recent on every retry (so
    other prompts' entries were evicted instead). 300 blocks, budget 2,048, 16-token ids: X (100 entries)
    and Z (50) finish; D fills the pool and grows while it decodes; H asks for X's prompt + 1,600 tokens
    and fits only once D finishes. H's hit must not depend on how long it waited: before, 1,600 tokens
    when it arrived at 2.5 s (retried for 14 s) and 864 at 16.0 s. Both simulators agree."""
    from kvsim.sim.config import SimConfig
    from kvsim.sim.reference import simulate_reference
    from kvsim.traces import Trace

    x, z, d, new = (tuple(range(a, a + n)) for a, n in ((1, 100), (1000, 50), (2000, 125), (3000, 100)))
    dep = kvsim.deployment("a100", "llama-3.1-8b")
    got = []
    for h_arrival in (2.5, 16.0):
        tr = Trace("t", arrival_s=[0.0, 1.0, 2.0, h_arrival], prompt_tokens=[1600, 800, 2000, 3200],
                   output_tokens=[1, 1, 1200, 1], prefix_blocks=(x, z, d, x + new), prefix_block_tokens=16)
        cfg = dict(gpu_memory_utilization=0.20584127039681727, max_num_batched_tokens=2048)
        r = kvsim.simulate("a100", "llama-3.1-8b", "full", tr, **cfg)
        ref = simulate_reference(dep, make_method("full", dep), tr, SimConfig(**cfg))
        assert r.requests["cached_tokens"].tolist() == ref.cached_tokens.tolist()
        got.append(int(r.requests["cached_tokens"][3]))
    assert got[0] == got[1] < 1600


# ---------------------------------------------------------------- estimate vs simulate


def test_estimate_without_chunked_prefill_profiles_the_step_budget():
    """vLLM v0 (and the simulators) profile a step of max(max_num_batched_tokens, longest prompt);
    estimate --no-chunked-prefill profiled --context tokens and ignored the budget: on an RTX 4090
    (Llama-3.1-8B, 4,000-token requests = 250 blocks) it said 11 fit where the simulator's pool holds 10
    (2,659 blocks // 250), and still 11 at a 32,768-token budget where the pool holds 5."""
    for budget, fit in ((8192, 10), (32768, 5)):
        for chunked in (True, False):
            r = kvsim.estimate(hw="rtx4090", context=4000, batch=11, max_num_batched_tokens=budget, chunked_prefill=chunked)
            assert r.max_batch == fit and not r.fits, (budget, chunked)
    # the TTFT still prefills the prompt whole without chunking: 4,000 < 8,192, the same single step
    assert kvsim.estimate(hw="rtx4090", context=4000, chunked_prefill=False).ttft_s == kvsim.estimate(
        hw="rtx4090", context=4000).ttft_s


def test_the_all_prompt_note_fires_both_ways():
    """H2O's budget scales with the prompt, so half of a context generated holds less than the all-prompt
    figure: the note fired only when it held more (SnapKV), and spoke of memory only."""
    notes = kvsim.estimate(hw="h100", method="h2o", context=21499, batch=64).notes
    assert any("counts every token as prompt" in n and "decode reads" in n for n in notes)
    assert not any("counts every token" in n for n in kvsim.estimate(hw="h100", context=21499, batch=64).notes)


def test_plan_api_refuses_what_the_command_refuses():
    """A plan audit: tp_choices=[0] raised ZeroDivisionError; tp=2 or replicas=2 with a target, and
    tp_choices / max_replicas without one, were silently dropped (the CLI refuses them); a NaN target
    said "<= 1000000000"; '100ms' as slo_itl_s named an internal field. `--tp-choices ""` ran 1,2,4,8."""
    for kw, msg in ((dict(target_rate_per_s=1.0, tp_choices=[0]), "tp_choices.0"),
                    (dict(tp=2, target_rate_per_s=1.0), "fix one layout"),
                    (dict(replicas=2, target_rate_per_s=1.0), "fix one layout"),
                    (dict(tp_choices=[1, 2]), "bound the target_rate_per_s search"),
                    (dict(max_replicas=2), "bound the target_rate_per_s search"),
                    (dict(target_rate_per_s=float("nan")), "finite number of requests/s"),
                    (dict(slo_itl_s="100ms"), "slo_itl_s must be a finite number of seconds")):
        with pytest.raises(ConfigError, match=msg):
            kvsim.plan(num_requests=40, **kw)
    labels = [c.label for c in kvsim.plan(num_requests=40, target_rate_per_s=1.0, tp_choices="1,2").configs]
    assert labels == ["a100-80g · full", "a100-80g · full · TP2"]
    code, _, err = _cli("plan", "--hw", "a100", "-n", "40", "--no-cache", "--target-rate", "1", "--tp-choices", "")
    assert code == 1 and "--tp-choices expects whole numbers" in err
