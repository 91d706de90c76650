"""Numbers where they enter (specs, HF configs, method params, calibrations, traces) are
finite, in range, whole when they count, never booleans; each rejection is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kvsim.costmodel.calibration import load_calibration
from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError, KvsimError, SpecError, TraceError
from kvsim.hardware import HW_DIR, load_system
from kvsim.methods import make_method
from kvsim.models import MODELS_DIR, load_model
from kvsim.traces import load_trace

GPU_YAML = HW_DIR / "gpus" / "h100-sxm.yaml"
MODEL_YAML = MODELS_DIR / "llama-3-8b.yaml"


def one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, msg
    return msg


def write_yaml(tmp_path: Path, data: dict, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def gpu_with(tmp_path: Path, **changes) -> str:
    data = yaml.safe_load(GPU_YAML.read_text())
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            data[outer] = {**data[outer], inner: value}
        else:
            data[key] = value
    return write_yaml(tmp_path, data, "gpu.yaml")


def model_with(tmp_path: Path, **changes) -> str:
    return write_yaml(tmp_path, {**yaml.safe_load(MODEL_YAML.read_text()), **changes}, "model.yaml")


@pytest.fixture(scope="module")
def dep() -> Deployment:
    return Deployment(system=load_system("h100"), model=load_model("llama-3-8b"))


# ----- method parameters -----

@pytest.mark.parametrize(
    "spec, field",
    [
        ("llmlingua:compressor_params=inf", "compressor_params"),
        ("llmlingua:ratio=inf", "ratio"),
        ("llmlingua:ratio=nan", "ratio"),
        ("h2o:score_passes=inf", "score_passes"),
        ("kivi:bits=true", "bits"),
        ("quest:token_budget=100000000000000000000", "token_budget"),
    ],
)
def test_method_params_must_be_finite_numbers(dep, spec, field):
    """Infinite, NaN, boolean or past-int64 method parameters are one-line SpecErrors naming the field."""
    with pytest.raises(SpecError) as err:
        make_method(spec, dep)
    one_line(err, f"method {spec.split(':')[0]}: {field}:")


def test_method_param_bool_rejected_in_process(dep):
    """A Python bool is not a count: kivi bits=True is rejected, not read as 1."""
    with pytest.raises(SpecError) as err:
        make_method("kivi", dep, {"bits": True})
    one_line(err, "bits", "not a boolean")


def test_quest_dense_layers_beyond_model(dep):
    """quest dense_layers past the model's layer count is rejected with that count."""
    with pytest.raises(ConfigError) as err:
        make_method("quest:dense_layers=999", dep)
    one_line(err, "dense_layers=999", "32 attention layers", "llama-3-8b")
    assert make_method("quest:dense_layers=32", dep).params.dense_layers == 32  # all dense: allowed


# ----- hardware specs -----

@pytest.mark.parametrize(
    "changes, field",
    [
        ({"memory_bytes": float("inf")}, "memory_bytes"),
        ({"memory_bytes": 1e300}, "memory_bytes"),
        ({"memory_bytes": True}, "memory_bytes"),
        ({"peak_flops_per_s.fp32": 0.0}, "peak_flops_per_s.fp32"),
        ({"peak_flops_per_s.bf16": float("nan")}, "peak_flops_per_s.bf16"),
        ({"peak_flops_per_s.bf16": -1.0}, "peak_flops_per_s.bf16"),
        ({"price.usd_per_hour": float("inf")}, "price.usd_per_hour"),
        ({"tdp_w": float("inf")}, "tdp_w"),
        ({"l2_bytes": float("inf")}, "l2_bytes"),
        ({"sm_count": 1.5}, "sm_count"),
    ],
)
def test_gpu_numbers_rejected(tmp_path, changes, field):
    """Non-finite, zero/negative peaks, booleans and implausible sizes in a GPU YAML are one-line errors."""
    path = gpu_with(tmp_path, **changes)
    with pytest.raises(SpecError) as err:
        load_system(path)
    one_line(err, path, f": {field}:")


def test_gpu_memory_states_plausible_range(tmp_path):
    """memory_bytes: 1e300 is out of a plausible range, and the message states the range."""
    path = gpu_with(tmp_path, memory_bytes=1e300)
    with pytest.raises(SpecError) as err:
        load_system(path)
    one_line(err, "memory_bytes: must be in [1.342e+08, 1.126e+15] bytes (128 MiB to 1 PiB", "1e+300")


@pytest.mark.parametrize("field, typo, unit", [
    ("memory_bw_bytes_per_s", 3.35, "write TB/s as e.g. 3.35e12"),   # TB/s written for bytes/s
    ("memory_bytes", 80, "write GB as e.g. 48e9"),                    # GB written for bytes
    ("peak_flops_per_s", {"fp32": 67.0, "bf16": 989.0e12}, "write TFLOP/s as e.g. 91.6e12"),  # TFLOP/s
])
def test_gpu_numbers_in_the_wrong_unit_are_errors(tmp_path, field, typo, unit):
    """A number written in TB/s, GB or TFLOP/s instead of the SI unit is far below any real part:
    an error naming the unit to write, not a TPOT of 5.7e9 s (audit)."""
    path = gpu_with(tmp_path, **{field: typo})
    with pytest.raises(SpecError) as err:
        load_system(path)
    one_line(err, field, unit)


def test_system_host_memory_inf(tmp_path):
    """A system whose host memory is .inf is rejected."""
    data = yaml.safe_load((HW_DIR / "systems" / "h100.yaml").read_text())
    path = write_yaml(tmp_path, {**data, "host_memory_bytes": float("inf")})
    assert ".inf" in Path(path).read_text()
    with pytest.raises(SpecError) as err:
        load_system(path)
    one_line(err, "host_memory_bytes")


def test_shipped_specs_still_load():
    """Every shipped hardware and model spec passes the stricter checks."""
    from kvsim import hardware, models

    for kind in ("gpu", "host", "link", "system"):
        assert hardware.names(kind)
    for name in hardware.names("system") + hardware.names("gpu"):
        load_system(name)
    for path in sorted((Path(hardware.__file__).parent.parent / "validate" / "papers_hw").glob("*.yaml")):
        load_system(str(path))
    for name in models.names():
        load_model(name)


# ----- model specs and HF configs -----

def test_model_huge_vocab(tmp_path):
    """A 400-digit vocab size is rejected on one short line."""
    path = tmp_path / "model.yaml"
    text = MODEL_YAML.read_text()
    lines = [ln if not ln.startswith("vocab_size:") else "vocab_size: " + "9" * 400 for ln in text.splitlines()]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError) as err:
        load_model(str(path))
    msg = one_line(err, "vocab_size", "2147483647", "(400 digits)")
    assert len(msg) < 300


def test_model_boolean_layer_count(tmp_path):
    """num_layers: true is not a 1-layer model."""
    with pytest.raises(SpecError) as err:
        load_model(model_with(tmp_path, num_layers=True))
    one_line(err, "num_layers", "not a boolean")


def test_model_number_as_boolean(tmp_path):
    """A number where a boolean belongs (tie_word_embeddings: 1) is rejected."""
    with pytest.raises(SpecError) as err:
        load_model(model_with(tmp_path, tie_word_embeddings=1))
    one_line(err, "tie_word_embeddings")


def test_hf_config_boolean_and_huge(tmp_path):
    """HF config numbers: a boolean layer count names the HF key."""
    cfg = {"model_type": "llama", "num_hidden_layers": True, "hidden_size": 4096, "num_attention_heads": 32,
           "intermediate_size": 14336, "vocab_size": 128256, "max_position_embeddings": 8192}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(SpecError) as err:
        load_model(str(path))
    one_line(err, "num_hidden_layers", "not a boolean")


@pytest.mark.parametrize("name", ["spec.yaml", "config.json", "cal.yaml"])
def test_non_utf8_spec_files(tmp_path, name):
    """Non-UTF-8 bytes in a spec YAML, HF config.json or calibration file are a one-line error."""
    path = tmp_path / name
    path.write_bytes(b"kind: gpu\nname: \xff\xfe\x80\n")
    loader = {"spec.yaml": load_system, "config.json": load_model, "cal.yaml": load_calibration}[name]
    with pytest.raises(SpecError) as err:
        loader(str(path))
    one_line(err, str(path), "not UTF-8")


def test_calibration_infinite_efficiency(tmp_path):
    """A calibration efficiency of .nan / .inf is rejected."""
    path = write_yaml(tmp_path, {"kind": "calibration", "device": "x",
                                 "efficiencies": {"gemm": {"overhead_s": float("inf")}}}, "cal.yaml")
    with pytest.raises(SpecError) as err:
        load_calibration(path)
    one_line(err, "efficiencies.gemm.overhead_s")


def test_tensor_parallel_must_divide_heads():
    """--tp 3 on 32 heads (10.67 per GPU) is rejected; tp 8 on 8 KV heads is fine."""
    model = load_model("llama-3-8b")
    with pytest.raises(ConfigError) as err:
        model.check_tensor_parallel(3)
    one_line(err, "--tp 3", "32 attention heads", "10.67")
    for tp in (1, 2, 4, 8, 16, 32):
        model.check_tensor_parallel(tp)  # 16, 32: KV heads replicated (8 divides tp)


# ----- traces -----

AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
BURST = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def write(tmp_path: Path, name: str, data: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


@pytest.mark.parametrize("tokens", ["100000000000000000000", "9223372036854775808", "1e20"])
def test_azure_huge_token_counts(tmp_path, tokens):
    """Token counts of 1e20 or >= 2**63 are bad rows, not wrapped or overflowed."""
    rows = f"2023-11-16 18:17:03.9799600,10,5\n2023-11-16 18:17:04.0319600,{tokens},8\n"
    path = write(tmp_path, "az.csv", AZURE + rows)
    with pytest.raises(TraceError) as err:
        load_trace(path, strict=True)
    one_line(err, f"{path}:3", "ContextTokens", "<= 2147483647")


def test_burstgpt_huge_token_counts(tmp_path):
    """BurstGPT: a 2**63 response token count is a bad row."""
    path = write(tmp_path, "b.csv", BURST + "5,ChatGPT,1,9223372036854775808,3,API log\n")
    with pytest.raises(TraceError) as err:
        load_trace(path)
    one_line(err, f"{path}:2", "Response tokens")


@pytest.mark.parametrize("tokens", [10**20, 2**63, 2**64 + 5])
def test_mooncake_huge_token_counts(tmp_path, tokens):
    """Mooncake: huge input_length is a bad row (no OverflowError)."""
    line = json.dumps({"timestamp": 0, "input_length": tokens, "output_length": 4, "hash_ids": []})
    path = write(tmp_path, "m.jsonl", line + "\n")
    with pytest.raises(TraceError) as err:
        load_trace(path)
    one_line(err, f"{path}:1", "input_length")


def test_jsonl_nested_deeply(tmp_path):
    """A JSONL line nested 100,000 deep is a one-line error, not a RecursionError."""
    path = write(tmp_path, "m.jsonl", '{"timestamp": 0, "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(TraceError) as err:
        load_trace(path)
    one_line(err, f"{path}:1", "nested too deeply")


def test_azure_nul_in_timestamp(tmp_path):
    """A NUL byte inside an Azure timestamp is a bad row, not a shifted arrival."""
    rows = (b"2023-11-16 18:17:03.9799600,10,5\n2023-11-16 18:17:04.0319600,11,8\n"
            b"2023-11-16 18:3\x007:04.0781490,110,27\n")
    path = write(tmp_path, "az.csv", AZURE.encode() + rows)
    with pytest.raises(TraceError) as err:
        load_trace(path, strict=True)
    one_line(err, f"{path}:4", "TIMESTAMP", "control character")


def test_synthetic_cv_range():
    """synthetic-gamma cv beyond 10 (all gaps underflow to 0) is rejected, stating the bound."""
    with pytest.raises(TraceError) as err:
        load_trace("synthetic-gamma:cv=1e9")
    one_line(err, "cv", "less than or equal to 10")
    assert load_trace("synthetic-gamma:cv=10,n=100").duration_s > 0


def test_synthetic_request_cap():
    """synthetic-poisson n=1e9 is capped with a clear message (no MemoryError)."""
    with pytest.raises(TraceError) as err:
        load_trace("synthetic-poisson:n=1000000000")
    one_line(err, "n:", "10000000")
    with pytest.raises(TraceError) as err:
        load_trace("synthetic-poisson", num_requests=10**9)
    one_line(err, "n:")


def test_errors_are_kvsim_errors():
    """Every rejection above is a KvsimError (the CLI prints it as one line, exit 1)."""
    assert issubclass(TraceError, KvsimError) and issubclass(SpecError, KvsimError)


def test_deployment_rejects_tp_that_splits_heads_unevenly():
    """--tp 3 on a 32-head model is refused by the Deployment itself (was accepted: 10.67 heads per GPU)."""
    from kvsim.costmodel.deployment import build_deployment

    with pytest.raises(ConfigError) as e:
        build_deployment("a100", "llama-3.1-8b", tp=3)
    assert "32" in str(e.value) and "\n" not in str(e.value)


def test_a_key_written_twice_is_an_error_not_the_last_one_silently(tmp_path):
    """PyYAML keeps the last of two equal keys; a spec file with `sm_count` twice (the user edits one, kvsim
    reads the other) is now an error at the second key's line. A '<<' merge may still be overridden."""
    text = GPU_YAML.read_text().replace("sm_count: 132", "sm_count: 132\nsm_count: 114")
    path = tmp_path / "gpu.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_system(str(path))
    one_line(err, "invalid YAML: key 'sm_count' given twice (first on line")
    from kvsim.specbase import read_yaml

    merged = tmp_path / "merge.yaml"
    merged.write_text("base: &b\n  x: 1\n  y: 2\nc:\n  <<: *b\n  x: 5\n")
    assert read_yaml(merged)["c"] == {"x": 5, "y": 2}


def test_folders_and_files_of_another_kind_are_named(tmp_path, monkeypatch):
    """One line each (audit): --model / --hw given a folder without a spec ('unknown model' and the
    catalog list before), a GPU file given to --model (22 lines of missing model fields before), an
    absolute missing path (it said 'relative to ...'). A folder named like a shipped model or system
    still means that model or system."""
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(SpecError) as err:
        load_model(str(empty))
    one_line(err, "a folder without a config.json")
    with pytest.raises(SpecError) as err:
        load_system(str(empty))
    one_line(err, "a folder; --hw takes a system or GPU YAML file")
    with pytest.raises(SpecError) as err:
        load_model(str(GPU_YAML))
    one_line(err, "a gpu spec (kind: gpu), not a model spec; pass it with --hw")
    system = write_yaml(tmp_path, {"kind": "system", "name": "n", "gpu": "/nonexistent/g.yaml", "num_gpus": 2,
                                   "host": "epyc-9654", "source": "test"}, "node.yaml")
    with pytest.raises(SpecError) as err:
        load_system(system)
    assert "relative to" not in one_line(err, "gpu: no gpu file /nonexistent/g.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "qwen3-8b").mkdir()
    (tmp_path / "a100").mkdir()
    assert load_model("qwen3-8b").name == "qwen3-8b" and load_system("a100").gpu.name == "A100-SXM4-80GB"


def test_an_empty_name_is_an_error(tmp_path):
    """A spec named "" printed titles like 'on  -' (audit)."""
    with pytest.raises(SpecError) as err:
        load_system(gpu_with(tmp_path, name="  "))
    one_line(err, "name: String should have at least 1 character")


def test_allreduce_note_names_a_non_pcie_link():
    """The TP > 2 datasheet all-reduce note said 'over PCIe' for a node whose GPUs talk over Ethernet."""
    from dataclasses import replace as _replace

    from kvsim.costmodel.deployment import allreduce_note
    from kvsim.hardware import load_link

    node = _replace(load_system("l40s"), allreduce=())  # (its measured NCCL entries removed: datasheet form)
    assert "over PCIe" in allreduce_note(node, 4)
    eth = _replace(node, gpu_gpu_link=load_link("eth-100g"))
    assert "over eth-100g, a network link," in allreduce_note(eth, 4)
