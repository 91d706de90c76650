"""The kvsim command line: outputs, JSON schema, and one-line errors (run as a subprocess)."""

import json
import subprocess
import sys

import pytest


def kvsim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_estimate_json_has_required_fields(tmp_path):
    """--json prints one object per configuration with the documented keys."""
    r = kvsim("estimate", "--hw", "a100-40g", "--model", "codellama-7b", "--method", "full,kivi", "--context", "16384",
              "--batch", "8", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["method"] for x in rows] == ["full", "kivi"]
    for key in ("hw", "model", "method", "context", "batch", "kv_bytes_per_token_gpu", "kv_bytes_per_token_host",
                "max_batch", "ttft_s", "tpot_s", "throughput_tok_s", "memory_gpu_bytes", "memory_host_bytes", "breakdown"):
        assert key in rows[0], key
    # CodeLlama-7B is MHA: 2 * 32 layers * 32 heads * 128 * 2 B = 524,288 B/token
    assert rows[0]["kv_bytes_per_token_gpu"] == 524_288
    assert rows[1]["kv_bytes_per_token_gpu"] < rows[0]["kv_bytes_per_token_gpu"] / 4


def test_estimate_method_all_table(tmp_path):
    """--method all prints a side-by-side table with every registered method."""
    from kvsim.methods import method_names

    r = kvsim("estimate", "--hw", "a100", "--model", "llama-3.1-8b", "--method", "all", "--context", "8192", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in method_names():
        # methods that do not apply (mla on a non-MLA model) are skipped with a note
        assert name in r.stdout or f"skipping {name}:" in r.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["estimate", "--hw", "a1000"], "unknown hardware 'a1000'"),
        (["estimate", "--model", "llama-9"], "unknown model 'llama-9'"),
        (["estimate", "--method", "kivvi"], "unknown method 'kivvi'"),
        (["estimate", "--method", "kivi:bits=3"], "method kivi: bits must divide 32"),
        (["estimate", "--method", "kivi:bitz=2"], "method kivi: bitz: Extra inputs are not permitted: unknown field (did you mean bits?)"),
        (["estimate", "--batch", "lots"], "--batch must be a whole number in [1, 1,000,000] or 'max'"),
        (["estimate", "--calibration", "/nonexistent.yaml"], "calibration file not found"),
    ],
)
def test_bad_input_is_one_line_error(args, needle, tmp_path):
    """Bad input: exit code 1, an 'error:' line naming the problem, no traceback."""
    r = kvsim(*args, cwd=tmp_path)
    assert r.returncode == 1
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert all(line.startswith("error: ") for line in r.stderr.strip().splitlines())


def test_broken_hw_yaml_names_file_and_field(tmp_path):
    """A user GPU YAML with a wrong type names the file and the field."""
    f = tmp_path / "my_gpu.yaml"
    f.write_text("kind: gpu\nname: X\nmemory_bytes: lots\nmemory_bw_bytes_per_s: 1e12\n"
                 "peak_flops_per_s: {fp32: 1e13}\nl2_bytes: 0\nsm_count: 1\ntdp_w: 1\nhost_link: pcie4-x16\nsource: me\n")
    r = kvsim("estimate", "--hw", str(f), cwd=tmp_path)
    assert r.returncode == 1
    assert f"{f}: memory_bytes:" in r.stderr


def test_list_commands(tmp_path):
    """list hardware/models/methods shows shipped names."""
    for what, needle in (("hardware", "a100"), ("models", "llama-3.1-8b"), ("methods", "magicpig")):
        r = kvsim("list", what, "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert needle in r.stdout


@pytest.mark.parametrize("cmd", ["simulate", "plan"])
@pytest.mark.parametrize("bad", ["-0.1", "1", "nan"])
def test_watermark_bad_values_one_line_error(tmp_path, cmd, bad):
    """--watermark outside [0, 1) or NaN: one line on stderr, exit 1, no traceback."""
    r = kvsim(cmd, "--hw", "a100", f"--watermark={bad}", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "--watermark" in r.stderr and "Traceback" not in r.stderr


def test_simulate_watermark_flag_reaches_the_scheduler(tmp_path):
    """--watermark 0.5 keeps half the 4090's KV pool free at admission: a burst of long prompts
    waits longer for its first token than with --watermark 0 (mean TTFT strictly larger)."""
    args = ["simulate", "--hw", "rtx4090", "--trace", "synthetic-fixed:n=40,prompt=4000,output=200", "--json"]
    ttft = {}
    for w in ("0", "0.5"):
        r = kvsim(*args, f"--watermark={w}", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        ttft[w] = json.loads(r.stdout)["ttft_s"]["mean"]
    assert ttft["0.5"] > ttft["0"]



def test_shell_completion_is_installable():
    """`kvsim --show-completion bash` prints a completion script (typer's, for `kvsim --install-completion`)."""
    import os

    # typer detects the shell from the parent process (none when pytest runs detached); its test switch
    # makes `--show-completion` take the shell name instead
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    r = subprocess.run([sys.executable, "-m", "kvsim", "--show-completion", "bash"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0 and "complete" in r.stdout and "COMP_WORDS" in r.stdout, r.stderr


def test_simulate_out_folders_are_distinct_per_run(tmp_path):
    """--out: one folder per run with a clean name (kivi(bits=4) -> kivi_bits=4, it was 'kivi_bits=4_'); two
    methods with one label (kivi:bits=2 and kivi:group=32 are both the default kivi) used to share one
    folder, the second run's files replacing the first's (audit)."""
    import json

    r = kvsim("simulate", "--trace", "synthetic-poisson", "-n", "20", "--method", "kivi:bits=4,kivi:bits=2,kivi+quest,kivi:group=32",
              "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    dirs = [x["dir"] for x in json.loads((tmp_path / "o" / "manifest.json").read_text())["runs"]]
    assert dirs == ["kivi_bits=4", "kivi", "kivi_quest", "kivi-2"]
    assert all((tmp_path / "o" / d / "summary.json").is_file() for d in dirs)


def test_notes_for_a_bare_slo_number_and_a_short_file_trace(tmp_path):
    """`--slo-itl 100` is 100 s (a bare number is seconds): a note suggests 100ms; `-n 1000` on a 4-row file
    replays 4 requests: a note says so (both were silent; audit). With units, or a long enough trace: no note."""
    f = tmp_path / "four.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,100,10\n1,100,10\n2,100,10\n3,100,10\n")
    r = kvsim("simulate", "--trace", str(f), "-n", "1000", "--slo-itl", "100")
    assert r.returncode == 0, r.stderr
    assert "note: --slo-itl 100: a bare number is seconds (100 s); write 100ms for milliseconds" in r.stderr
    assert "note: --num-requests 1,000: the trace has 4 requests; all are replayed" in r.stderr
    r = kvsim("simulate", "--trace", str(f), "-n", "4", "--slo-itl", "100ms", "--slo-ttft", "2")
    assert r.returncode == 0 and "note: --slo" not in r.stderr and "note: --num-requests" not in r.stderr


def test_tts_generation_past_the_context_is_noted():
    """--tts gen beyond the model's context (Qwen3-8B: 40,960) was priced without a word (audit)."""
    r = kvsim("estimate", "--hw", "b200", "--model", "qwen3-8b", "--tts", "best-of-n=8,gen=100k")
    assert r.returncode == 0 and "past qwen3-8b's context of 40,960 tokens" in r.stderr
    r = kvsim("estimate", "--hw", "b200", "--model", "qwen3-8b", "--tts", "best-of-n=8,gen=16k")
    assert r.returncode == 0 and "past qwen3-8b's context" not in r.stderr


def test_epoch_millisecond_arrivals_get_a_hint(tmp_path):
    """Arrivals in epoch milliseconds read as seconds are past the 1e12 s limit: the error now says what
    they probably are and where the unit option is (audit)."""
    f = tmp_path / "ms.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n1733000000000,100,10\n1733000001000,100,10\n")
    r = kvsim("simulate", "--trace", str(f))
    assert r.returncode == 1 and "(epoch milliseconds? arrivals are read as seconds: --time-unit and --columns" in r.stderr


def test_one_session_is_singular():
    from kvsim.traces.sessions import describe

    assert describe({"sessions": 1, "turns": 3, "continued": 2, "restarted": 0, "block_tokens": 16}).startswith("1 session, 3 turns")
    assert describe({"sessions": 2, "turns": 3, "continued": 1, "restarted": 0, "block_tokens": 16}).startswith("2 sessions")


def test_a_method_comparison_keeps_each_methods_notes():
    """With several methods the per-method notes used to vanish: KIVI's 'prefix caching off' on a trace with prefix
    ids is printed, named by method; a note every method has is printed once, unnamed."""
    r = kvsim("simulate", "--trace", "mooncake-conversation", "-n", "30", "--method", "full,kivi")
    assert r.returncode == 0, r.stderr
    assert "note (kivi): prefix caching off: method kivi" in r.stderr
    assert "note (full): prefix caching off" not in r.stderr


def test_kv_dtype_note_for_methods_with_their_own_format(tmp_path):
    """--kv-dtype fp8 halves full's KV (CodeLlama-7B: 524,288 -> 262,144 B/token) and changes none of
    KIVI's (its 2-bit codes and 16-bit residual): a note says so for KIVI, none for full."""
    rows = []
    for kv_dtype in ("auto", "fp8"):
        r = kvsim("estimate", "--hw", "a100-40g", "--model", "codellama-7b", "--method", "full,kivi",
                  "--kv-dtype", kv_dtype, "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        rows.append(json.loads(r.stdout))
        notes = [line for line in r.stderr.splitlines() if "own format" in line]
        assert notes == ([] if kv_dtype == "auto" else
                         ["note: kivi stores its KV in its own format: --kv-dtype fp8 does not change its KV bytes"])
    assert [x["kv_bytes_per_token_gpu"] for x in rows[1]] == [262_144, rows[0][1]["kv_bytes_per_token_gpu"]]
