"""Inputs a user audit found accepted silently or overwritten (sixth session): a JSON key given twice in a
Hugging Face config, a CSV header naming a mapped column twice, and --report/--force pointed at a file the
same run reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvsim.errors import SpecError, TraceError
from kvsim.models.hf_import import load_hf_config

LLAMA = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
         "num_key_value_heads": 8, "vocab_size": 128256, "intermediate_size": 14336, "max_position_embeddings": 131072}


def test_a_config_key_given_twice_is_an_error(tmp_path):
    """json keeps the last of two hidden_size values (8192: a 17B model instead of an 8B one) without a word."""
    text = json.dumps(LLAMA)[:-1] + ', "hidden_size": 8192}'
    p = tmp_path / "config.json"
    p.write_text(text)
    with pytest.raises(SpecError, match="key 'hidden_size' given twice"):
        load_hf_config(p)
    p.write_text(json.dumps(LLAMA))
    assert load_hf_config(p).hidden_size == 4096


def test_a_csv_header_naming_a_mapped_column_twice_is_an_error(tmp_path):
    from kvsim.traces import load_trace

    p = tmp_path / "t.csv"
    p.write_text("ts,in,out,in\n0,100,10,200\n1,100,10,200\n")
    with pytest.raises(TraceError, match="column 'in' \\(prompt\\) appears 2 times in the header"):
        load_trace(str(p), columns="arrival=ts,prompt=in,output=out")
    p.write_text("ts,in,out,other\n0,100,10,200\n1,100,10,200\n")
    assert load_trace(str(p), columns="arrival=ts,prompt=in,output=out").prompt_tokens.tolist() == [100, 100]


def test_report_never_replaces_an_input_of_the_run_even_with_force(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("ts,in,out\n0,100,10\n1,100,10\n")
    before = trace.read_bytes()
    r = subprocess.run([sys.executable, "-m", "kvsim", "simulate", "--trace", str(trace), "--columns",
                        "arrival=ts,prompt=in,output=out", "--report", str(trace), "--force"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "is an input of this run" in r.stderr and "Traceback" not in r.stderr
    assert trace.read_bytes() == before


def test_one_burst_is_called_a_burst_not_rounding():
    """50 requests all at t=0 are what the file says, not a converter's rounding; the overload hint does not send
    the user to --rate, which refuses a trace whose arrivals are all equal."""
    import numpy as np

    from kvsim.traces.arrivals import rounding_note

    note, meta = rounding_note(np.zeros(50), "column 'ts' (s)")
    assert note == "column 'ts' (s): all 50 requests arrive at the same time (one burst)" and meta["arrival_ties"] == 49
    note, _ = rounding_note(np.array([0.0, 0.0, 1.0, 1.0]), "column 'ts' (s)")
    assert "looks rounded to 1 s: 2 of 4 requests" in note
    import kvsim
    from kvsim.traces.base import Trace

    tr = Trace("burst", np.zeros(40), np.full(40, 8000, dtype=np.int64), np.full(40, 50, dtype=np.int64))
    r = kvsim.simulate(hw="a100", model="llama-3.1-8b", method="full", trace=tr)
    hint = r.summary["load"]["hint"]
    assert hint.startswith("one burst: all 40 requests arrive at once") and "lower --rate" not in hint


def test_estimate_max_batch_counts_whole_blocks():
    """A100-80GB, Llama-3.1-8B, 1,000-token context: the KV pool holds floor(kv_gpu_bytes / (16 x 131,072)) whole
    blocks and a request ceil(1000 / 16) = 63 of them; max batch = blocks // 63 (453 when bytes were divided as a
    continuum; 449 on the audit's machine state, the simulator's own count)."""
    import math

    import kvsim
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.pricing.memory import memory_budget

    e = kvsim.estimate(hw="a100", model="llama-3.1-8b", method="full", context=1000, batch="max")
    dep = build_deployment("a100", "llama-3.1-8b")
    b = memory_budget(dep, make_method("full", dep), max_tokens_per_step=8192, max_seqs=256)
    blocks = int(b.kv_gpu_bytes // (16 * 131_072))
    assert e.max_batch == blocks // math.ceil(1000 / 16) == 449


def test_out_force_never_replaces_or_prunes_an_input_of_the_run(tmp_path):
    """A run's output tree, even with force, neither overwrites a file the run reads (a trace copied to
    full/requests.csv) nor removes one listed as kvsim's by an earlier run's manifest (seventh-session
    audit: `simulate --trace o/full/requests.csv --out o --force` replaced the trace)."""
    from kvsim.fileio import OutputError, write_tree

    out = tmp_path / "o"
    write_tree(out, {"full/requests.csv": "kvsim\n", "full/old.csv": "kvsim\n"})
    mine = out / "full" / "requests.csv"
    mine.write_text("user trace\n")
    with pytest.raises(OutputError, match="is an input of this run"):
        write_tree(out, {"full/requests.csv": "new\n"}, force=True, inputs=(str(mine),))
    assert mine.read_text() == "user trace\n"
    old = out / "full" / "old.csv"  # listed in the manifest: pruned by the next run, unless it is read
    with pytest.raises(OutputError, match="is an input of this run"):
        write_tree(out, {"full/other.csv": "new\n"}, force=True, inputs=(str(old),))
    assert old.exists() and not (out / "full" / "other.csv").exists()  # (all or nothing)
    write_tree(out, {"full/other.csv": "new\n"}, force=True, inputs=("no-such-file", None))
    assert not old.exists() and (out / "full" / "other.csv").read_text() == "new\n"


def test_simulate_out_force_keeps_the_trace_it_reads(tmp_path):
    trace = tmp_path / "o" / "full" / "requests.csv"
    trace.parent.mkdir(parents=True)
    trace.write_text("ts,in,out\n0,100,10\n1,100,10\n")
    before = trace.read_bytes()
    r = subprocess.run([sys.executable, "-m", "kvsim", "simulate", "--trace", str(trace), "--columns",
                        "arrival=ts,prompt=in,output=out", "--out", str(tmp_path / "o"), "--force"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "is an input of this run" in r.stderr and "Traceback" not in r.stderr
    assert trace.read_bytes() == before


def test_hardware_new_system_never_writes_over_its_own_gpu_file(tmp_path):
    """--gpu x1.yaml is read relative to the --out file's folder: --out hn/x1.yaml --force named the GPU
    file itself, which was replaced by a system that points at itself."""
    (tmp_path / "hn").mkdir()
    run = lambda *a: subprocess.run([sys.executable, "-m", "kvsim", "hardware", "new", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=300, cwd=tmp_path)
    assert run("gpu", "MyGPU", "--like", "a100", "--out", "hn/x1.yaml").returncode == 0
    before = (tmp_path / "hn" / "x1.yaml").read_bytes()
    r = run("system", "S", "--gpu", "x1.yaml", "--num-gpus", "2", "--host", "epyc-9654", "--out", "hn/x1.yaml", "--force")
    assert r.returncode == 1 and "is an input of this run" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "hn" / "x1.yaml").read_bytes() == before


def test_a_truncated_or_corrupt_gzip_trace_names_the_file(tmp_path):
    """A .gz cut short printed `error: aborted` (gzip's EOFError became click's Abort), and trailing bytes
    printed `file system: not a gzipped file` without the file's name."""
    import gzip

    from kvsim.traces import load_trace

    whole = gzip.compress(("ts,in,out\n" + "".join(f"{i},100,10\n" for i in range(5000))).encode())
    good, cut, tail = tmp_path / "good.csv.gz", tmp_path / "cut.csv.gz", tmp_path / "tail.csv.gz"
    good.write_bytes(whole)
    cut.write_bytes(whole[: len(whole) // 2])
    tail.write_bytes(whole + b"garbage")
    cols = "arrival=ts,prompt=in,output=out"
    assert len(load_trace(str(good), columns=cols).prompt_tokens) == 5000
    with pytest.raises(TraceError, match=r"cut\.csv\.gz: the gzip data ends early"):
        load_trace(str(cut), columns=cols)
    with pytest.raises(TraceError, match=r"tail\.csv\.gz: not valid gzip data"):
        load_trace(str(tail), columns=cols)
    r = subprocess.run([sys.executable, "-m", "kvsim", "trace", "info", str(cut), "--columns", cols],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "ends early" in r.stderr and "aborted" not in r.stderr and "Traceback" not in r.stderr
