"""Measured GPU kernel tables, the roofline refinements they need, fits and profiles."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import subprocess
import sys

from kvsim.costmodel.attention import decode_attention, decode_tiles, prefill_attention, prefill_tiles
from kvsim.costmodel.cost import Cost, Part
from kvsim.costmodel.roofline import Roofline
from kvsim.costmodel.transformer import allreduce_cost, gemm_cost, linear_cost
from kvsim.costmodel.deployment import build_deployment
from kvsim.hardware import AllReduceFit, default_efficiencies, load_system
from kvsim.validate.kernel_fit import CUSTOM_ALLREDUCE_MAX_BYTES, engine_rows, fit_data, fit_op
from kvsim.validate.kernel_tables import load_table
from kvsim.validate.kernels import error_stats, holdout_mask, price_table


# ---------------------------------------------------------------- tables
def test_table_rows_and_a_known_value():
    g = load_table("a100_sxm", "gemm")
    assert len(g) == 9240  # every bf16 row of aiconfigurator-core 0.12.0 a100_sxm/gemm/vllm/0.14.0
    i = np.flatnonzero((g.columns["m"] == 8192) & (g.columns["n"] == 65536) & (g.columns["k"] == 4096))
    assert len(i) == 1 and g.latency_s[i[0]] == pytest.approx(15.2875e-3, rel=1e-5)  # 15.28754 ms in the parquet
    ar = load_table("l40s", "allreduce")
    assert set(ar.columns["algo"]) == {"custom", "nccl"} and set(ar.columns["num_gpus"]) == {2.0, 4.0, 8.0}


def test_holdout_split_is_by_shape():
    g = load_table("h100_sxm", "gemm")
    test = holdout_mask(g)
    seen = {(n, k) for n, k in zip(g.columns["n"][~test], g.columns["k"][~test])}
    held = {(n, k) for n, k in zip(g.columns["n"][test], g.columns["k"][test])}
    assert seen and held and not (seen & held)  # no held-out weight shape was fitted on
    a = load_table("h100_sxm", "attn_decode")
    t = holdout_mask(a)
    assert not ({(h, k) for h, k in zip(a.columns["heads"][t], a.columns["kv_heads"][t])}
                & {(h, k) for h, k in zip(a.columns["heads"][~t], a.columns["kv_heads"][~t])})


def test_error_stats_hand_computed():
    s = error_stats(np.array([-0.1, 0.2, 0.05, -0.3]))
    # |e| sorted 0.05 0.1 0.2 0.3: median 0.15; p90 (linear) = 0.2 + 0.7 * 0.1 = 0.27; signed median (-0.1 + 0.05) / 2
    assert (s.rows, s.median_abs, s.p90_abs, s.bias) == (4, pytest.approx(0.15), pytest.approx(0.27), pytest.approx(-0.025))


# ---------------------------------------------------------------- kvsim's own cost path
def test_gemm_row_priced_by_hand_on_the_datasheet():
    system = replace(load_system("a100-40g"), eff=default_efficiencies())
    # [1, 4096] x [4096, 4096] bf16: FLOPs 2*4096*4096 = 33,554,432; bytes 4096*4096*2 + (4096 + 4096)*2 = 33,570,816
    cost = gemm_cost(1, 4096, 4096, weight_bytes=2, act_bytes=2, dtype="bf16")
    e = default_efficiencies().gemm
    tc = 33_554_432 / (312e12 * e.compute)
    tm = 33_570_816 / (1.555e12 * e.memory)
    p = e.blend
    expected = max(tc, tm) * (1 + (min(tc, tm) / max(tc, tm)) ** p) ** (1 / p) + e.overhead_s
    assert system.gpu.memory_bw_bytes_per_s == 1.555e12 and system.gpu.peak_flops_per_s["bf16"] == 312e12
    assert Roofline(system).seconds(cost) == pytest.approx(expected, rel=1e-12)


def test_linear_cost_charges_gemms_and_allreduce_as_the_single_op_costs():
    dep = build_deployment("h100", "llama-3.1-8b", tp=4)
    T = 64
    ar = linear_cost(dep, T, 8).by_name("allreduce")
    one = allreduce_cost(4, T * dep.model.hidden_size, dep.ab).parts[0]
    # 2 all-reduces per layer of T*h activations: 2 * 32 calls of ring bytes 2*(3/4)*64*4096*2 = 786,432
    assert one.link_bytes == pytest.approx(786_432)
    assert ar.link_bytes == pytest.approx(64 * one.link_bytes) and ar.launches == 64 and ar.group == 4 == one.group


def test_attention_tiles_hand_computed():
    dep = build_deployment("h100", "llama-3.1-8b")  # 32 query heads, 8 KV heads, 32 layers
    # prefill chunks of 100 and 300 new tokens: 32 * (ceil(100/128) + ceil(300/128)) = 32 * (1 + 3) = 128 per layer
    assert prefill_tiles(dep, np.array([100.0, 300.0])) == 128
    assert prefill_attention(dep, np.array([100.0, 300.0]), np.zeros(2)).parts[0].tiles == 32 * 128
    # decode: one tile per (sequence, KV head): 3 sequences * 8 = 24 per layer; an empty row adds none
    assert decode_tiles(dep, np.array([5.0, 4000.0, 0.0, 17.0])) == 24
    assert decode_attention(dep, np.array([5.0, 4000.0, 17.0])).parts[0].tiles == 32 * 24


# ---------------------------------------------------------------- roofline refinements
def _system_with(**gemm):
    s = load_system("a100-40g")
    return s.with_efficiencies(s.eff.with_overrides({"gemm": {"compute": 0.5, "memory": 0.5, "overhead_s": 0.0,
                                                              "blend": None, "tile_s": 0.0, "wave_tiles_per_sm": None, **gemm}}))


def test_blend_is_the_p_norm_of_resource_times():
    s = _system_with(blend=2.0)
    # 3 us of compute (312e12 * 0.5 * 3e-6 FLOPs) and 4 us of memory (1.555e12 * 0.5 * 4e-6 bytes): sqrt(3^2 + 4^2) = 5 us
    part = Part("g", "gemm", flops=312e12 * 0.5 * 3e-6, hbm_bytes=1.555e12 * 0.5 * 4e-6, launches=1)
    assert Roofline(s).seconds(Cost((part,))) == pytest.approx(5e-6)
    assert Roofline(_system_with()).seconds(Cost((part,))) == pytest.approx(4e-6)  # no blend: the max


def test_tiles_and_wave_floor():
    s = _system_with(tile_s=1e-8, wave_tiles_per_sm=1.0)
    # 10 tiles in 1 call on 108 SMs: compute runs at 10/108 of the GPU -> 2 us * 108/10 = 21.6 us, plus 10 * 10 ns
    part = Part("g", "gemm", flops=312e12 * 0.5 * 2e-6, launches=1, tiles=10)
    assert load_system("a100-40g").gpu.sm_count == 108
    assert Roofline(s).seconds(Cost((part,))) == pytest.approx(21.6e-6 + 1e-7)
    # 1000 tiles per call fill the GPU: no floor, 2 us + 1000 * 10 ns = 12 us
    assert Roofline(s).seconds(Cost((replace(part, tiles=1000),))) == pytest.approx(12e-6)
    # vectorized amounts give the same seconds as one by one
    many = Part("g", "gemm", flops=np.full(2, 312e12 * 0.5 * 2e-6), launches=np.ones(2), tiles=np.array([10.0, 1000.0]))
    assert Roofline(s).seconds(Cost((many,))) == pytest.approx([21.7e-6, 12e-6])


def test_measured_allreduce_picks_the_algorithm_vllm_runs():
    s = replace(load_system("h100"), allreduce=(
        AllReduceFit(algo="custom", group=4, latency_s=5e-6, bus_bw_bytes_per_s=100e9, max_message_bytes=8 * 2**20),
        AllReduceFit(algo="nccl", group=4, latency_s=40e-6, bus_bw_bytes_per_s=200e9)))
    roof = Roofline(s)
    # 1 MiB message: ring bytes 2 * 3/4 * 2^20 = 1,572,864 -> custom: 5 us + 1,572,864 / 100e9 = 20.73 us
    small = allreduce_cost(4, 2**19, 2.0)
    assert roof.seconds(small) == pytest.approx(5e-6 + 1_572_864 / 100e9)
    # 64 MiB: beyond custom's 8 MiB -> NCCL: 40 us + 100,663,296 / 200e9 = 543.3 us
    big = allreduce_cost(4, 2**25, 2.0)
    assert roof.seconds(big) == pytest.approx(40e-6 + 100_663_296 / 200e9)
    # two calls of 1 MiB: twice one call (the choice is per call, not per summed bytes)
    assert roof.seconds(allreduce_cost(4, 2**19, 2.0, calls=2)) == pytest.approx(2 * roof.seconds(small))
    # PCIe-only GPUs: vLLM disables custom all-reduce beyond two GPUs -> NCCL even for 1 MiB
    pcie = replace(s, gpu_gpu_link=s.gpu_host_link)
    assert Roofline(pcie).seconds(small) == pytest.approx(40e-6 + 1_572_864 / 200e9)
    # a group size without a measurement falls back to the link's datasheet
    datasheet = replace(load_system("h100"), allreduce=())
    assert Roofline(s).seconds(allreduce_cost(2, 2**19, 2.0)) == pytest.approx(Roofline(datasheet).seconds(allreduce_cost(2, 2**19, 2.0)))


def test_engine_rows_follow_vllms_choice():
    t = load_table("l40s", "allreduce")
    rows = engine_rows(t, load_system("l40s"))  # PCIe-only: custom only at 2 GPUs and <= 8 MiB
    c = t.columns
    small2 = (c["num_gpus"] == 2) & (c["message_elems"] * 2 <= CUSTOM_ALLREDUCE_MAX_BYTES)
    assert (c["algo"][rows & small2] == "custom").all() and (c["algo"][rows & ~small2] == "nccl").all()
    pairs = np.stack([c["num_gpus"][rows], c["message_elems"][rows]], 1)
    assert len(np.unique(pairs, axis=0)) == rows.sum()  # at most one algorithm per message


# ---------------------------------------------------------------- fits
def test_fit_recovers_known_efficiencies():
    """Measurements made by kvsim itself with known efficiencies: the fit finds them again."""
    table = load_table("h100_sxm", "gemm")
    truth = {"compute": 0.7, "memory": 0.75, "overhead_s": 3e-6, "blend": 3.0}
    base = replace(load_system("h100"), eff=default_efficiencies())
    true_sys = base.with_efficiencies(base.eff.with_overrides({"gemm": truth}))
    rows = np.arange(0, len(table), 7)
    data = fit_data(table, base, rows)
    measured = data.seconds(true_sys)
    fitted = fit_op("gemm", [replace(data, measured_s=measured)])
    for k, v in truth.items():
        assert fitted[k] == pytest.approx(v, rel=0.02), k


def test_profiles_ship_for_the_four_measured_gpus():
    for name in ("a100-80g", "h100", "h200", "l40s"):
        s = load_system(name)
        assert s.calibration.startswith("measured") and {a.group for a in s.allreduce} == {2, 4, 8}
        assert s.eff.attn_decode.tile_s > 0 and s.eff.gemm.blend is not None
    assert load_system("b200").calibration == "datasheet" and load_system("b200").allreduce == ()
    # a user's own GPU file never picks up a shipped profile
    assert load_system("a100-40g").calibration == "datasheet"


def test_profiled_prediction_matches_the_table_in_sample():
    """The shipped H100 profile prices its own measured decode-attention rows within 10% median
    (in-sample: the profile was fitted on them; the held-out figure is in benchmarks/RESULTS.md)."""
    system = load_system("h100")
    t = load_table("h100_sxm", "attn_decode")
    pr = price_table(t, system)
    assert error_stats(pr.error[~pr.l2_resident]).median_abs < 0.10


# ---------------------------------------------------------------- CLI
def kvsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, timeout=300)


def test_cli_kernels_json_and_thresholds():
    r = kvsim("validate", "kernels", "--hw", "h200", "--json", "--max-median", "1", "--max-p90", "100")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {row["op"] for row in out["rows"]} == {"gemm", "attn_prefill", "attn_decode", "allreduce", "attn_decode_mla"}
    assert out["beyond_threshold"] == 0 and all(row["system"] == "h200" for row in out["rows"])
    assert [row["fitted_op"] for row in out["rows"]] == [True, True, True, True, False]
    r = kvsim("validate", "kernels", "--hw", "h200", "--json", "--max-median", "0.0001")
    assert r.returncode == 3 and json.loads(r.stdout)["beyond_threshold"] == 5  # (1 and 2: bad input)


def test_cli_kernels_text_marks_checks_and_says_what_it_leaves_out():
    """The text table marks the MLA rows as a check and says so under it; a system named twice is
    reported once; a system a protocol does not cover is named in a note, not dropped silently."""
    r = kvsim("validate", "kernels", "--hw", "h200", "--hw", "h200", "--max-median", "1", "--max-p90", "100")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("attn_decode_mla (check)") == 1
    assert "(check): check only, no fit reads these rows" in r.stderr
    r = kvsim("validate", "kernels", "--hw", "h200", "--hw", "h200", "--json", "--max-median", "1", "--max-p90", "100")
    assert len(json.loads(r.stdout)["rows"]) == 5
    r = kvsim("validate", "kernels", "--protocol", "datasheet", "--hw", "a100", "--hw", "b200", "--json",
              "--max-median", "1", "--max-p90", "100")
    assert r.returncode == 0 and "left out: a100-80g" in r.stderr
    assert {row["system"] for row in json.loads(r.stdout)["rows"]} == {"b200"}


def test_cli_kernels_bad_input_is_one_line():
    # L2-resident rows: a protocol that does not report them says "not reported" (JSON null), not "-" (read as
    # "none"); a table without any says 0 rows (user audit)
    r = kvsim("validate", "kernels", "--protocol", "held-out", "--hw", "l40s", "--json", "--max-median", "1", "--max-p90", "100")
    assert all(row["l2_resident"] is None for row in json.loads(r.stdout)["rows"])
    r = kvsim("validate", "kernels", "--protocol", "held-out", "--hw", "l40s", "--max-median", "1", "--max-p90", "100")
    assert "not reported" in r.stdout
    r = kvsim("validate", "kernels", "--protocol", "datasheet", "--hw", "b200", "--json", "--max-median", "1", "--max-p90", "100")
    assert {"rows": 0} in [row["l2_resident"] for row in json.loads(r.stdout)["rows"]]
    # only fitted GPUs under the datasheet protocol: they were reported as "datasheet only" (in-sample; user audit)
    r = kvsim("validate", "kernels", "--protocol", "datasheet", "--hw", "h100")
    assert r.returncode == 1 and "datasheet reports the GPUs no fit has seen" in r.stderr and not r.stdout.strip()
    r = kvsim("validate", "kernels", "--hw", "v100")
    assert r.returncode != 0 and "no measured kernel table" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = kvsim("validate", "kernels", "--protocol", "current", "--write-profiles", "/tmp/x")
    assert r.returncode != 0 and "--write-profiles needs --protocol held-out" in r.stderr


def test_shipped_defaults_are_the_joint_fit_on_the_four_gpus():
    """efficiency/default.yaml's gemm, attention and collective entries are what
    ``shared_defaults`` fits on A100/H100/H200/L40S (an edit by hand, or a change of the cost
    path without refitting, fails here)."""
    from kvsim.validate.kernel_report import shared_defaults
    from kvsim.validate.kernel_tables import FITTED_TABLES

    fitted, shipped = shared_defaults(list(FITTED_TABLES)), default_efficiencies()
    for op in ("gemm", "attn_prefill", "attn_decode", "collective"):
        f, s = fitted.of(op), shipped.of(op)
        for k in ("compute", "memory", "blend"):
            a, b = getattr(f, k), getattr(s, k)
            assert (a is None and b is None) or a == pytest.approx(b, rel=0.03), (op, k, a, b)
        for k in ("overhead_s", "tile_s"):
            assert getattr(f, k) == pytest.approx(getattr(s, k), rel=0.05, abs=2e-7), (op, k)


def test_shipped_datasheet_checks_are_the_datasheet_protocol():
    """kvsim/validate/data/datasheet_checks.yaml (shown by `kvsim list hardware`) is what
    ``--protocol datasheet`` computes now on B200 and RTX PRO 6000 (a change of the cost path or
    of the defaults without rewriting it fails here)."""
    from kvsim.validate.datasheet_checks import load_checks
    from kvsim.validate.kernel_report import datasheet_only

    shipped = load_checks()["systems"]
    rows = [r for r in datasheet_only(["b200_sxm", "rtx_pro_6000_server", "gb200"]) if r["rows"]]
    assert {r["system"] for r in rows} == set(shipped) == {"b200", "rtx-pro-6000", "gb200"}
    for r in rows:
        s = shipped[r["system"]][r["op"]]
        assert s["rows"] == r["rows"]
        for k in ("median_abs", "p90_abs", "bias"):
            assert s[k] == pytest.approx(r[k], rel=1e-3, abs=1e-6), (r["system"], r["op"], k)


def test_list_hardware_shows_the_datasheet_check(tmp_path):
    import kvsim.hardware as hwpkg
    from pathlib import Path

    own = Path(hwpkg.__file__).parent / "systems" / "rtx-pro-6000.yaml"
    r = kvsim("list", "hardware", "--json", "--hw", str(own))
    rows = json.loads(r.stdout)
    shipped = next(x for x in rows if x["name"] == "rtx-pro-6000" and not any(a.startswith("file ") for a in x["aliases"]))
    mine = next(x for x in rows if any(a.startswith("file ") for a in x["aliases"]))
    assert "vs measured kernels (never fitted on)" in shipped["cost model"]
    assert mine["cost model"] == "datasheet only"  # a user's file is not the GPU that was checked
    r = kvsim("validate", "kernels", "--protocol", "held-out", "--write-checks", str(tmp_path / "x.yaml"))
    assert r.returncode != 0 and "--write-checks needs --protocol datasheet" in r.stderr
    mine = tmp_path / "mine.yaml"
    mine.write_text("my notes\n")
    r = kvsim("validate", "kernels", "--protocol", "datasheet", "--hw", "gb200", "--write-checks", str(mine))
    assert r.returncode == 1 and "is not a datasheet checks file (not replaced)" in r.stderr
    assert mine.read_text() == "my notes\n" and len(r.stderr.strip().splitlines()) == 1


def test_write_profiles_never_replaces_a_users_file(tmp_path):
    """--write-profiles DIR writes DIR/<system>.yaml: a file of that name that this command did not
    write (a user's own profile) is refused before the fit, and left as it was; an earlier profile
    is replaced by the same bytes the shipped one has (same fit, same tables); ``--hw`` takes the
    catalog's aliases (a100 -> a100-80g) as every other command does."""
    from pathlib import Path

    import kvsim.hardware as hwpkg

    mine = tmp_path / "a100-80g.yaml"
    mine.write_text("name: my-a100\n")
    r = kvsim("validate", "kernels", "--protocol", "held-out", "--hw", "a100", "--write-profiles", str(tmp_path))
    assert r.returncode == 1 and "was not written by --write-profiles (not replaced)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and mine.read_text() == "name: my-a100\n"
    mine.unlink()
    for _ in range(2):  # absent, then an earlier profile: both written
        r = kvsim("validate", "kernels", "--protocol", "held-out", "--hw", "a100", "--write-profiles", str(tmp_path))
        assert r.returncode == 0, r.stderr
    shipped = Path(hwpkg.__file__).parent / "profiles" / "a100-80g.yaml"
    strip = lambda t: [x for x in t.splitlines() if not x.startswith("date:")]  # noqa: E731
    assert strip(mine.read_text()) == strip(shipped.read_text())
    r = kvsim("validate", "kernels", "--protocol", "held-out", "--hw", "a100", "--write-profiles", str(mine / "x"))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_l40s_l2_size_is_what_its_measured_kernels_show():
    """l40s.yaml's 96 MB L2 (a listing says 48 MB, SPECS.md N8): in NVIDIA's L40S decode-attention
    table most calls with a 64-80 MB working set beat the 864 GB/s DRAM peak (they ran from L2), and
    no call above 96 MB does."""
    from kvsim.hardware import load_system
    from kvsim.validate.kernel_tables import load_table
    from kvsim.validate.kernels import table_work

    system = load_system("l40s")
    table = load_table("l40s", "attn_decode")
    ws = table_work(table, system).working_set_bytes
    bw = ws / table.latency_s
    peak = system.gpu.memory_bw_bytes_per_s
    mid = (ws >= 64e6) & (ws < 80e6)
    assert mid.sum() > 100 and (bw[mid] > peak).mean() > 0.8
    assert not (bw[ws > 96 * 2**20] > peak).any()
    assert system.gpu.l2_bytes == 96 * 2**20


# ---------------------------------------------------------------- MLA decode (checked, never fitted)
def test_mla_decode_row_work_by_hand():
    """One H100 MLA row (SGLang 0.5.14 FlashAttention-3 backend): 64 sequences attending 1 + 4,095
    latent tokens with 16 query heads. kvsim's work (attention.py, DeepSeek-V3 dims d_c 512, d_r 64):
    FLOPs 64 * 4,096 * (2*16*576 + 2*16*512) = 64 * 4,096 * 34,816 = 9,126,805,504;
    HBM 64 * 4,096 * 1,152 (latent read) + 64 * 1,152 (written) + 64 * 16 * (576 + 512) * 2 (Q, O)
    = 301,989,888 + 73,728 + 2,228,224 = 304,291,840 B; one tile per sequence, one launch."""
    from kvsim.validate.kernels import table_work

    t = load_table("h100_sxm", "attn_decode_mla")
    c = t.columns
    row = np.flatnonzero((c["batch"] == 64) & (c["heads"] == 16) & (c["step"] == 4095))[0]
    assert c["latency_ms"][row] == pytest.approx(0.1206, rel=2e-3)  # 0.1206 ms measured (two runs: 0.1211, 0.1206)
    work = table_work(t, load_system("h100"))
    got = {}
    for part, columns, amounts, idx in work.templates:
        if row in idx:
            got = {f: amounts[list(idx).index(row), j] for j, (_, f) in enumerate(columns)}
    assert got["flops"] == 9_126_805_504 and got["hbm_bytes"] == 304_291_840
    assert got["tiles"] == 64 and got["launches"] == 1
    assert work.working_set_bytes[row] == 304_291_840  # > 50 MB of L2: not L2-resident


def test_mla_rows_are_never_fitted_and_a100_has_none():
    """The MLA decode table is reported by every protocol but read by no fit: the shared defaults and
    the profiles come from the four fitted op classes only; A100's only MLA table (TensorRT-LLM 1.0.0)
    is not shipped, and asking for it is a one-line error."""
    from kvsim.errors import ConfigError
    from kvsim.validate import kernel_report as kr
    from kvsim.validate.kernel_tables import has_table

    assert kr.CHECKS == ("attn_decode_mla",) and "attn_decode_mla" not in kr.OPS
    assert not has_table("a100_sxm", "attn_decode_mla") and has_table("h100_sxm", "attn_decode_mla")
    with pytest.raises(ConfigError, match="no measured attn_decode_mla table for 'a100_sxm'"):
        load_table("a100_sxm", "attn_decode_mla")
    rows = kr.current(["a100_sxm", "h200_sxm"])
    assert [r["op"] for r in rows if r["table"] == "a100_sxm"] == list(kr.OPS)
    mla = [r for r in rows if r["op"] == "attn_decode_mla"]
    assert len(mla) == 1 and "no fit reads these rows" in mla[0]["protocol"] and "in-sample" not in mla[0]["protocol"]
