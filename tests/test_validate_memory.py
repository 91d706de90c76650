"""``kvsim validate memory``: a vLLM start-up log's memory terms vs kvsim's (kvsim/validate/vllm_log.py,
kvsim/validate/memory_check.py). Logs: kvsim/validate/data/vllm_memory_logs (vLLM 0.19.0, H100-80GB,
llm-d-planner, Apache-2.0; PROVENANCE.md)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvsim.errors import ConfigError
from kvsim.validate.memory_check import check_memory
from kvsim.validate.vllm_log import parse_vllm_log

DATA = Path(__file__).resolve().parents[1] / "kvsim" / "validate" / "data" / "vllm_memory_logs"
LLAMA_TP1 = DATA / "meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log"
SCOUT = DATA / "meta-llama-llama-4-scout--h100-80gb--tp4pp1dp1--8192.log"


def kvsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, timeout=120)


def test_parse_reads_the_settings_and_terms_as_logged():
    """The Llama-3.1-8B TP 1 log's lines: engine config (model, bfloat16, TP 1, no quantization, KV auto),
    'Defaulting max_num_seqs to 1024', 'max_num_batched_tokens=8192', util 0.95 (non-default args),
    'total_memory=79.19GiB', 'torch peak memory increase: 1.89GiB; non-torch forward increase memory:
    0.25GiB; weights memory: 14.99GiB', 'Available KV cache memory: 58.11 GiB', '476,016 tokens'."""
    log = parse_vllm_log(LLAMA_TP1)
    assert (log.model, log.version, log.dtype, log.quantization, log.kv_cache_dtype) == \
        ("meta-llama/Llama-3.1-8B-Instruct", "0.19.0", "bfloat16", None, "auto")
    assert (log.tp, log.pp, log.max_num_seqs, log.max_num_batched_tokens, log.gpu_memory_utilization) == (1, 1, 1024, 8192, 0.95)
    assert (log.total_memory_gib, log.weights_gib, log.activation_gib, log.non_torch_gib) == (79.19, 14.99, 1.89, 0.25)
    assert (log.kv_cache_gib, log.kv_cache_tokens) == (58.11, 476_016)


def test_check_memory_hand_computed_llama_tp1():
    """kvsim's KV for that run (tests/test_engine_memory.py, hand-computed): 29,750 blocks x 16 = 476,000
    tokens vs vLLM's 476,016 (-0.003%); 62,391,350,887 B = 58.107 GiB vs 58.11."""
    r = check_memory(parse_vllm_log(LLAMA_TP1), "h100")
    terms = {t.name: t for t in r["terms"]}
    assert terms["KV cache size"].kvsim == 476_000
    assert terms["KV cache size"].error == pytest.approx(476_000 / 476_016 - 1)
    assert terms["KV cache memory"].kvsim == pytest.approx(62_391_350_887 / 2**30, rel=1e-9)
    assert terms["non-torch increase"].kvsim == 0.25
    assert r["settings"]["model"] == "llama-3.1-8b" and r["settings"]["max_num_seqs"] == 1024


def test_weight_dtype_from_the_quantization_method_or_the_flag():
    qfp8 = parse_vllm_log(DATA / "meta-llama-llama-3---h100-80gb--tp1pp1dp1--8192-qfp8.log")
    assert qfp8.quantization == "fp8"
    assert check_memory(qfp8, "h100")["settings"]["weight_dtype"] == "fp8"
    w8a8 = parse_vllm_log(DATA / "w8a8-redhatai-qwen2-5-7b--h100-80gb--tp1pp1dp1--8192.log")
    with pytest.raises(ConfigError, match="give --weight-dtype"):
        check_memory(w8a8, "h100", model="qwen2.5-7b")
    with pytest.raises(ConfigError, match="not a kvsim catalog name or alias"):
        check_memory(w8a8, "h100", weight_dtype="int8")
    r = check_memory(w8a8, "h100", model="qwen2.5-7b", weight_dtype="int8")
    assert abs(r["terms"][-1].error) < 0.01



def test_bitsandbytes_log_needs_the_weight_dtype(tmp_path):
    """vLLM's quantization=bitsandbytes is 4- or 8-bit by the checkpoint, which the log does not state:
    --weight-dtype is asked for (it was guessed as int4)."""
    log = tmp_path / "bnb.log"
    log.write_text(LLAMA_TP1.read_text().replace("quantization=None", "quantization=bitsandbytes"))
    with pytest.raises(ConfigError, match="give --weight-dtype"):
        check_memory(parse_vllm_log(log), "h100")
    assert check_memory(parse_vllm_log(log), "h100", weight_dtype="int8")["settings"]["weight_dtype"] == "int8"


def test_fp32_run_keeps_an_fp32_kv_cache():
    """--dtype float32 with kv_cache_dtype auto: vLLM's KV is fp32 (175,296 tokens, half of what a
    16-bit cache of 42.8 GiB holds); kvsim prices weights and KV in fp32 (within 1%)."""
    r = check_memory(parse_vllm_log(DATA / "meta-llama-llama-3--h100-80gb--tp1pp1dp1--8192-dtf32.log"), "h100")
    assert r["settings"]["kv_dtype"] == "fp32" and abs(r["terms"][-1].error) < 0.01


def _info_only(tmp_path: Path) -> Path:
    """The Llama log as a default (INFO-level) server prints it: no DEBUG lines."""
    p = tmp_path / "info.log"
    p.write_text("\n".join(line for line in LLAMA_TP1.read_text().splitlines() if " DEBUG " not in line) + "\n")
    return p


def test_info_level_log_needs_max_num_seqs(tmp_path):
    log = parse_vllm_log(_info_only(tmp_path))
    assert log.max_num_seqs is None and log.activation_gib is None and log.weights_gib == 14.99  # 'Model loading took'
    with pytest.raises(ConfigError, match="give --max-num-seqs"):
        check_memory(log, "h100")
    r = check_memory(log, "h100", max_num_seqs=1024)
    assert r["terms"][-1].kvsim == 476_000 and r["terms"][1].vllm is None and r["terms"][1].error is None


def test_bad_logs_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a vLLM v1 start-up log"):
        parse_vllm_log(Path(__file__))
    with pytest.raises(ConfigError, match="is a directory"):
        parse_vllm_log(tmp_path)
    two = tmp_path / "two.log"
    text = LLAMA_TP1.read_text()
    two.write_text(text + text.replace("tensor_parallel_size=1", "tensor_parallel_size=2"))
    with pytest.raises(ConfigError, match="2 engine start-ups"):
        parse_vllm_log(two)
    pp = tmp_path / "pp.log"
    pp.write_text(text.replace("pipeline_parallel_size=1", "pipeline_parallel_size=2"))
    with pytest.raises(ConfigError, match="pipeline parallelism"):
        check_memory(parse_vllm_log(pp), "h100")


def test_cli_exit_codes_and_json(tmp_path):
    ok = kvsim("validate", "memory", str(LLAMA_TP1), "--hw", "h100")
    assert ok.returncode == 0, ok.stderr
    assert "1 of 1 log(s): KV cache size within 5.0% of vLLM's" in ok.stdout
    beyond = kvsim("validate", "memory", str(SCOUT), "--hw", "h100")  # +18.9%: its vision encoder is not modelled
    assert beyond.returncode == 3 and "0 of 1 log(s)" in beyond.stdout
    js = kvsim("validate", "memory", str(LLAMA_TP1), str(SCOUT), "--hw", "h100", "--json")
    assert js.returncode == 3
    data = json.loads(js.stdout)
    assert [x["within_tolerance"] for x in data["logs"]] == [True, False]
    assert data["logs"][0]["terms"][-1] == {"name": "KV cache size", "unit": "tokens", "vllm": 476016.0,
                                            "kvsim": 476000.0, "error": pytest.approx(-16 / 476016)}
    bad = kvsim("validate", "memory", str(tmp_path), "--hw", "h100")
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
    info = kvsim("validate", "memory", str(_info_only(tmp_path)), "--hw", "h100")
    assert info.returncode == 1 and "--max-num-seqs" in info.stderr and "Traceback" not in info.stderr


def test_flags_that_replace_the_logs_values_and_in_sample_logs_are_said():
    """--max-num-seqs 4 replaced the log's 1024 and --model llama-3.1-8b a Qwen3-8B log without a word, and the
    logs kvsim's constants were read from were not marked in-sample (user audit)."""
    from pathlib import Path

    from kvsim.validate.memory_check import check_memory
    from kvsim.validate.vllm_log import parse_vllm_log

    logs = Path(__file__).parents[1] / "kvsim" / "validate" / "data" / "vllm_memory_logs"
    llama = parse_vllm_log(logs / "meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log")
    notes = check_memory(llama, "h100", max_num_seqs=4)["notes"]
    assert "--max-num-seqs 4 replaces the log's 1024" in notes
    assert any(n.startswith("IN-SAMPLE: the 0.25 GiB non-torch constant at TP 1") for n in notes)
    qwen = parse_vllm_log(logs / "qwen-qwen3-8b--h100-80gb--tp1pp1dp1--8192.log")
    notes = check_memory(qwen, "h100", model="llama-3.1-8b")["notes"]
    assert "--model llama-3.1-8b (llama-3.1-8b) replaces the log's Qwen/Qwen3-8B" in notes
    notes = check_memory(qwen, "h100", model="qwen3-8b")["notes"]  # the log's own model: nothing replaced
    assert not any("replaces" in n or n.startswith("IN-SAMPLE") for n in notes)


def test_a_tolerance_above_one_is_refused():
    """--tolerance 5 (meant as 5 %) was taken as 500 % and passed every log (user audit), as replay refuses."""
    r = subprocess.run([sys.executable, "-m", "kvsim", "validate", "memory",
                        str(DATA / "qwen-qwen3-8b--h100-80gb--tp1pp1dp1--8192.log"), "--hw", "h100", "--tolerance", "5"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--tolerance" in r.stderr and "Traceback" not in r.stderr
