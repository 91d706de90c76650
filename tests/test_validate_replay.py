"""kvsim validate replay: log readers, bad-row counts, settings, signed errors, exit codes (torch only where marked)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from kvsim.commands.validate import app
from kvsim.errors import ConfigError, TraceError
from kvsim.validate import replay as R
from kvsim.validate import runlog_write as W
from kvsim.validate.replay_settings import merge_settings, read_meta
from kvsim.validate.runlog import Rows, build_log
from kvsim.validate.runlog_bench import synthetic_arrivals

ENGINE = ["--hw", "a100", "--model", "llama-3.1-8b", "--max-num-seqs", "32", "--max-num-batched-tokens", "2048"]
SETTINGS = {"hw": "a100", "model": "llama-3.1-8b", "max_num_seqs": 32, "max_num_batched_tokens": 2048}


def invoke(*args):
    return CliRunner().invoke(app, ["replay", *args])


@pytest.fixture(scope="module")
def sim_log():
    """kvsim's own simulation of 40 synthetic requests (A100, Llama-3.1-8B): arrivals, lengths, token times."""
    from kvsim.traces import load_trace

    tr = load_trace("synthetic-burstgpt:rate=4,n=40", seed=3)
    log = build_log(_rows(tr.arrival_s, tr.prompt_tokens, tr.output_tokens), fmt="trace", source="trace")
    res = R.simulate_log(log, merge_settings(SETTINGS)[0])
    rec = res.records
    assert res.summary["requests_rejected"] == 0
    return rec.arrival_s, rec.prompt_tokens, rec.output_tokens, rec.token_times


def _rows(arrival, prompt, output) -> Rows:
    rows = Rows(read=len(arrival))
    for a, p, o in zip(arrival, prompt, output):
        rows.add(float(a), float(a), float(a), int(p), int(o), None)
    return rows


def _write_all(tmp_path, sim_log, t0_s=5000.0):
    rows = W.stats_rows(*sim_log, t0_s=t0_s)
    (tmp_path / "r.jsonl").write_text(W.to_jsonl(rows))
    (tmp_path / "r.csv").write_text(W.to_csv(rows))
    (tmp_path / "b.json").write_text(json.dumps(W.bench_result(*sim_log, request_rate=4.0)))
    return rows


def test_round_trip_replays_to_zero_error(tmp_path, sim_log):
    """A log written from kvsim's own simulation replays to ~0 error in all three formats (times shifted by 5000 s)."""
    _write_all(tmp_path, sim_log)
    s, origin = merge_settings(SETTINGS)
    for name, fmt in (("r.jsonl", "vllm-stats-jsonl"), ("r.csv", "vllm-stats-csv"), ("b.json", "vllm-bench-json")):
        log = R.read_run_log(tmp_path / name)
        assert log.format == fmt and len(log) == 40 and log.synthetic_arrivals is None
        out = R.replay(log, s, origin)
        for m in R.METRICS:
            assert out["metrics"][m]["n"] > 0
            for k in R.STATS:
                assert abs(out["metrics"][m]["error"][k]) < 1e-8, (name, m, k)
        assert out["check"]["pass"] and len(out["check"]["checked"]) == 8
        json.loads(R.to_json_text(out))  # allow_nan=False: no NaN/Infinity anywhere


def test_ttft_scaled_by_1_2_gives_minus_one_sixth(tmp_path, sim_log):
    """Every measured TTFT x1.2 (token stream delayed by 0.2 TTFT): TTFT error 1/1.2 - 1 = -16.67% at every statistic,
    TPOT and ITL unchanged; --tolerance 0.2 passes (exit 0), 0.15 fails (exit 3)."""
    rows = W.stats_rows(*sim_log, t0_s=5000.0)
    for r in rows:
        d = 0.2 * (r["first_token_ts"] - r["queued_ts"])
        r["first_token_ts"] += d
        r["last_token_ts"] += d
        r["token_ts"] = [t + d for t in r["token_ts"]]
    path = tmp_path / "slow.jsonl"
    path.write_text(W.to_jsonl(rows))
    out = R.replay(R.read_run_log(path), merge_settings(SETTINGS)[0])
    for k in R.STATS:
        assert out["metrics"]["ttft_s"]["error"][k] == pytest.approx(1 / 1.2 - 1, abs=1e-9)  # -0.1667
        assert abs(out["metrics"]["tpot_s"]["error"][k]) < 1e-8
        assert abs(out["metrics"]["itl_s"]["error"][k]) < 1e-8
    # measured E2E_i = E2E_i + 0.2 TTFT_i, so mean E2E error = E / (E + 0.2 T) - 1 with the predicted means E, T
    e, t = out["metrics"]["e2e_s"]["predicted"]["mean"], out["metrics"]["ttft_s"]["predicted"]["mean"]
    assert out["metrics"]["e2e_s"]["error"]["mean"] == pytest.approx(e / (e + 0.2 * t) - 1, abs=1e-9)
    r = invoke(str(path), *ENGINE, "--check", "mean,p50", "--tolerance", "0.2")
    assert r.exit_code == 0, r.output
    assert "-16.7%" in r.output and "PASS" in r.output
    r = invoke(str(path), *ENGINE, "--check", "mean", "--tolerance", "0.15")
    assert r.exit_code == 3 and "FAIL: 1 of 4" in r.output  # TTFT mean only: E2E's error is small
    assert "TTFT mean (-16.7%)" in r.output


def test_hand_computed_metrics():
    """Two requests: TTFT (0.5, 0.2), TPOT of the 3-token one (1.5 - 0.5) / 2 = 0.5, E2E (1.5, 0.2), ITL (0.4, 0.6)."""
    arrival, first, last = np.array([0.0, 1.0]), np.array([0.5, 1.2]), np.array([1.5, 1.2])
    lat = R.latencies(arrival, first, last, np.array([3, 1]), [np.array([0.4, 0.6]), None], np.array([0, 1]))
    assert lat["ttft_s"] == pytest.approx([0.5, 0.2])
    assert lat["tpot_s"] == pytest.approx([0.5])
    assert lat["e2e_s"] == pytest.approx([1.5, 0.2])
    s = R.summary(lat["itl_s"])
    assert s["mean"] == pytest.approx(0.5) and s["p90"] == pytest.approx(0.58)  # 0.4 + 0.9 * (0.6 - 0.4)
    assert R.signed_error(0.9, 0.75) == pytest.approx(0.2)  # 0.9 / 0.75 - 1
    assert R.signed_error(0.9, 0.0) is None and R.signed_error(None, 1.0) is None
    chk = R.check({m: {"error": {"mean": e, "p50": None}} for m, e in zip(R.METRICS, (0.1, -0.3, None, 0.25))},
                  ("mean", "p50"), 0.25)
    assert chk["checked"] == ["ttft.mean", "tpot.mean", "e2e.mean"] and chk["failed"] == ["tpot.mean"]  # |-0.3| > 0.25
    assert not chk["pass"] and "itl.mean" in chk["unchecked"]


GOOD = {"queued_ts": 10.0, "first_token_ts": 10.5, "last_token_ts": 11.0, "num_prompt_tokens": 100,
        "num_generation_tokens": 5}
BAD_ROWS = [
    ("unparseable", "this is not json"),
    ("missing_field", {k: v for k, v in GOOD.items() if k != "last_token_ts"}),
    ("missing_field", {k: v for k, v in GOOD.items() if k != "num_prompt_tokens"}),
    ("not_a_number", {**GOOD, "first_token_ts": "soon"}),
    ("bad_time", {**GOOD, "first_token_ts": float("nan")}),
    ("bad_time", {**GOOD, "queued_ts": -1.0}),
    ("failed_request", {**GOOD, "finish_reason": "abort"}),
    ("bad_token_count", {**GOOD, "num_generation_tokens": 2.5}),
    ("zero_prompt_tokens", {**GOOD, "num_prompt_tokens": 0}),
    ("zero_output_tokens", {**GOOD, "num_generation_tokens": 0}),
    ("first_token_before_arrival", {**GOOD, "first_token_ts": 9.0}),
    ("last_token_before_first_token", {**GOOD, "last_token_ts": 10.2}),
]


def test_each_bad_row_kind_is_counted(tmp_path):
    """Each bad row counts once under its kind; good rows are kept; --strict refuses the log with one line."""
    lines = [json.dumps(GOOD), json.dumps({**GOOD, "queued_ts": 12.0, "first_token_ts": 12.5, "last_token_ts": 13.0})]
    lines += [r if isinstance(r, str) else json.dumps(r) for _, r in BAD_ROWS]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    log = R.read_run_log(path)
    want: dict[str, int] = {}
    for kind, _ in BAD_ROWS:
        want[kind] = want.get(kind, 0) + 1
    assert log.bad == want and log.n_bad == 12 and len(log) == 2 and log.rows_read == 14
    assert log.arrival_s.tolist() == [0.0, 2.0] and log.first_token_s.tolist() == [0.5, 2.5]
    # the first bad row is named by its line (the file's third line: the first of BAD_ROWS)
    assert log.first_bad == f"{path}:3: {BAD_ROWS[0][0].replace('_', ' ')}"
    with pytest.raises(TraceError, match=f"12 bad rows .*first: {path}:3: .*--strict"):
        R.read_run_log(path, strict=True)
    r = invoke(str(path), *ENGINE, "--strict")
    assert r.exit_code == 1
    # a CSV row is named by its line too (header on line 1, a blank line skipped), and so is a bench request
    csv_path = tmp_path / "bad.csv"
    keys = list(GOOD)
    csv_path.write_text(",".join(keys) + "\n" + ",".join(str(GOOD[k]) for k in keys) + "\n\n"
                        + ",".join("" if k == "first_token_ts" else str(GOOD[k]) for k in keys) + "\n")
    assert R.read_run_log(csv_path).first_bad == f"{csv_path}:4: missing field (first_token_ts)"


def test_bench_bad_rows_and_refusals(tmp_path):
    """bench JSON: a failed request (error text) and a zero-output one are counted; files without per-request
    lists, or with max_concurrency and no start_times, are refused."""
    b = W.bench_result([0.0, 0.1, 0.2], [10, 20, 30], [2, 2, 2], [[0.5, 0.6], [0.7, 0.8], [0.9, 1.0]], request_rate=10.0)
    b["errors"][1] = "HTTP 500"
    b["output_lens"][2] = 0
    p = tmp_path / "b.json"
    p.write_text(json.dumps(b))
    log = R.read_run_log(p)
    assert log.bad == {"failed_request": 1, "zero_output_tokens": 1} and len(log) == 1
    assert log.first_bad == f"{p} request 1: failed request"
    assert log.first_token_s.tolist() == [0.5] and log.last_token_s.tolist() == [0.6]
    for drop, needle in (({"input_lens"}, "--save-detailed"), ({"start_times"}, None)):
        d = {k: v for k, v in b.items() if k not in drop}
        d["max_concurrency"] = 4 if needle is None else None
        p.write_text(json.dumps(d))
        with pytest.raises(TraceError, match=needle or "max_concurrency 4"):
            R.read_run_log(p)


def test_synthetic_arrivals():
    """vLLM's get_request rule: constant gaps 1/rate for burstiness inf (rate 2: 0.5, 1.0, 1.5, 2.0); Gamma gaps
    rescaled so the last request goes at n/rate; rate inf: all at 0."""
    assert synthetic_arrivals(4, 2.0, math.inf, 0).tolist() == pytest.approx([0.5, 1.0, 1.5, 2.0])
    t = synthetic_arrivals(100, 5.0, 0.5, seed=7)
    assert t[-1] == pytest.approx(100 / 5.0) and np.all(np.diff(t) >= 0)
    assert not np.array_equal(t, synthetic_arrivals(100, 5.0, 0.5, seed=8))
    assert synthetic_arrivals(3, math.inf, 1.0, 0).tolist() == [0.0, 0.0, 0.0]


def test_bench_without_start_times_says_arrivals_are_synthetic(tmp_path, sim_log):
    """Without start_times the arrivals are regenerated from request_rate with --arrival-seed, and the output says so."""
    b = W.bench_result(*sim_log, request_rate=4.0, start_times=False)
    p = tmp_path / "b.json"
    p.write_text(json.dumps(b))
    log = R.read_run_log(p, seed=5)
    assert log.synthetic_arrivals.startswith("synthetic: regenerated from request_rate 4/s") and "seed 5" in log.synthetic_arrivals
    assert log.arrival_s[-1] == pytest.approx(40 / 4.0 - synthetic_arrivals(40, 4.0, 1.0, 5)[0])  # shifted to 0
    r = invoke(str(p), *ENGINE, "--arrival-seed", "5", "--tolerance", "1")
    assert r.exit_code in (0, 3), r.output  # (pass or fail, the table is printed)
    assert "arrivals synthetic" in r.output


def test_itl_mismatch_and_clock_mismatch(tmp_path):
    """Per-token times that do not match the token count drop that request from ITL (noted); wall-clock arrival_time
    with monotonic first_token_ts is refused with one line."""
    rows = [{**GOOD, "token_ts": [10.5, 10.6, 10.7, 10.9, 11.0]},
            {**GOOD, "queued_ts": 20.0, "first_token_ts": 20.5, "last_token_ts": 21.0, "token_ts": [20.5, 21.0]}]
    p = tmp_path / "itl.jsonl"
    p.write_text(W.to_jsonl(rows))
    log = R.read_run_log(p)
    assert log.itl_s[0].tolist() == pytest.approx([0.1, 0.1, 0.2, 0.1]) and log.itl_s[1] is None
    assert any("ITL: 1 of 2" in n for n in log.notes)
    wall = [{**{k: v for k, v in GOOD.items() if k != "queued_ts"}, "arrival_time": 1.7e9 + i} for i in range(3)]
    p.write_text(W.to_jsonl(wall))
    with pytest.raises(TraceError, match="wall clock"):
        R.read_run_log(p)


def test_a_bad_setting_names_where_it_came_from(tmp_path):
    """gpu_memory_utilization 90 in a meta file gave 'engine settings: ...' without the file (user audit)."""
    with pytest.raises(ConfigError, match=r"gpu_memory_utilization in --meta m\.json: .*\(got 90\)"):
        merge_settings({"hw": "h100", "model": "llama-3.1-8b", "max_num_seqs": 8, "max_num_batched_tokens": 64},
                       {"gpu_memory_utilization": 90}, "m.json")
    with pytest.raises(ConfigError, match=r"gpu_memory_utilization \(--gpu-memory-utilization\): "):
        merge_settings({"hw": "h100", "model": "llama-3.1-8b", "max_num_seqs": 8, "max_num_batched_tokens": 64,
                        "gpu_memory_utilization": 90.0})


def test_settings_merge_and_meta_errors(tmp_path):
    """Flags override meta, meta overrides defaults; vLLM aliases and dtype names map; unknown keys and missing
    required settings are one-line errors; relative paths resolve against the meta file's folder."""
    (tmp_path / "my.yaml").write_text("x: 1\n")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"hw": "my.yaml", "model": "llama-3.1-8b", "tensor_parallel_size": 2, "max_num_seqs": 8,
                                "max_num_batched_tokens": 512, "dtype": "float32"}))
    m = read_meta(meta)
    assert m["hw"] == str(tmp_path / "my.yaml") and m["tp"] == 2
    s, origin = merge_settings({"max_num_seqs": 16, "block_size": None}, m)
    assert s.max_num_seqs == 16 and origin["max_num_seqs"] == "flag" and origin["tp"] == "meta"
    assert origin["block_size"] == "default" and s.block_size == 16
    assert s.kvsim_dtypes() == ("fp32", "fp32", "fp32")  # vLLM dtype is the model dtype; KV auto follows it
    meta.write_text(json.dumps({"hw": "a100", "max_seqs": 8}))
    with pytest.raises(ConfigError, match="unknown key 'max_seqs'"):
        read_meta(meta)
    with pytest.raises(ConfigError, match="missing max_num_seqs, max_num_batched_tokens"):
        merge_settings({"hw": "a100", "model": "llama-3.1-8b"})
    with pytest.raises(ConfigError, match="max_num_seqs"):
        merge_settings({**SETTINGS, "max_num_seqs": 0})


@pytest.mark.parametrize("args, needle", [
    (["--hw", "a100"], "missing model, max_num_seqs"),
    ([*ENGINE, "--check", "p75"], "--check: unknown statistic p75"),
    ([*ENGINE, "--meta", "/nonexistent.json"], "--meta /nonexistent.json: file not found"),
    ([*ENGINE, "--format", "bench"], "not a vllm bench serve result"),
    (["--hw", "a1000", "--model", "llama-3.1-8b", "--max-num-seqs", "4", "--max-num-batched-tokens", "64"], "unknown hardware"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, needle):
    """Bad input: exit 1 with one 'error:' line (the kvsim entry point), no traceback."""
    import subprocess
    import sys

    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(GOOD) + "\n")
    r = subprocess.run([sys.executable, "-m", "kvsim", "validate", "replay", str(p), *args], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_out_never_overwrites_user_files(tmp_path, sim_log):
    """--out writes the JSON result (no NaN); refuses the log itself and a file it did not write (unless --force)."""
    _write_all(tmp_path, sim_log)
    log, out = tmp_path / "r.jsonl", tmp_path / "res.json"
    r = invoke(str(log), *ENGINE, "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert data["kind"] == R.KIND and json.loads(r.output)["metrics"] == data["metrics"]
    assert invoke(str(log), *ENGINE, "--out", str(out)).exit_code == 0  # its own earlier result: replaced
    before = log.read_text()
    r = invoke(str(log), *ENGINE, "--out", str(log), "--force")
    assert r.exit_code == 1 and log.read_text() == before
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "data"}')
    r = invoke(str(log), *ENGINE, "--out", str(mine))
    assert r.exit_code == 1 and mine.read_text() == '{"my": "data"}'
    assert invoke(str(log), *ENGINE, "--out", str(mine), "--force").exit_code == 0


def test_torch_loop_logs_replay(tmp_path):
    """The CPU torch serving loop's requests, written in both formats, read back to the loop's own times and
    replay to the same prediction in all of them (committed CPU calibration, tiny-llama)."""
    pytest.importorskip("torch")
    from kvsim.commands.validate import COMMITTED
    from kvsim.validate.e2e_loop import TinyLlama, serve
    from kvsim.validate.models import TINY, resolve_model

    model = resolve_model("tiny-llama")
    arrival, prompt, output = np.array([0.0, 0.02, 0.05, 0.3]), np.array([24, 40, 16, 32]), np.array([4, 3, 5, 2])
    tm = TinyLlama(model, max_seqs=4, max_len=64, seed=0)
    loop = serve(tm, arrival, prompt, output, max_num_seqs=4)
    cal = str(COMMITTED) + ".calibration.yaml"
    meta = {"hw": str(COMMITTED) + ".hw.yaml", "model": str(TINY), "max_num_seqs": 4, "max_num_batched_tokens": 4 * 65,
            "enable_prefix_caching": False, "dtype": "fp32", "calibration": cal}
    files = W.log_files(loop.arrival_s, loop.prompt_tokens, loop.output_tokens, loop.token_times, meta, t0_s=100.0,
                        request_rate=10.0)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    ttft = [tt[0] - a for tt, a in zip(loop.token_times, arrival)]
    preds = []
    for name in ("requests.jsonl", "requests.csv", "bench.json"):
        r = invoke(str(tmp_path / name), "--meta", str(tmp_path / "meta.json"), "--json", "--tolerance", "1")
        assert r.exit_code in (0, 3), r.output  # (the JSON is printed either way)
        out = json.loads(r.output)
        assert out["log"]["requests"] == 4 and out["log"]["bad_rows"] == {}
        assert out["metrics"]["ttft_s"]["measured"]["mean"] == pytest.approx(np.mean(ttft), rel=1e-9, abs=1e-9)
        assert out["metrics"]["itl_s"]["n"] == int(np.sum(output - 1))  # 3 + 2 + 4 + 1 intervals
        assert out["settings_origin"]["calibration"] == "meta"
        preds.append(out["metrics"])
    for p in preds[1:]:  # the same requests: the same prediction (up to the rounding of shifted arrival times)
        for m in R.METRICS:
            assert p[m]["predicted"] == pytest.approx(preds[0][m]["predicted"], rel=1e-9)
    assert preds[0]["ttft_s"]["predicted"]["mean"] > 0


def test_requests_kvsim_rejects_are_left_out_on_both_sides(tmp_path):
    """A prompt whose KV cannot fit (2M tokens x 128 KiB/token of Llama-3.1-8B >> 80 GB) is rejected by kvsim: it is
    left out of the measured statistics too, and a note says so; with every request rejected nothing is checked."""
    rows = [GOOD, {**GOOD, "queued_ts": 12.0, "first_token_ts": 14.0, "last_token_ts": 15.0, "num_prompt_tokens": 2_000_000}]
    p = tmp_path / "long.jsonl"
    p.write_text(W.to_jsonl(rows))
    out = R.replay(R.read_run_log(p), merge_settings(SETTINGS)[0])
    assert out["sim"]["requests_rejected"] == 1 and any("rejected 1 of 2" in n for n in out["notes"])
    assert out["metrics"]["ttft_s"]["n"] == 1 and out["metrics"]["ttft_s"]["measured"]["mean"] == pytest.approx(0.5)
    p.write_text(W.to_jsonl(rows[1:]))
    r = invoke(str(p), *ENGINE)
    assert r.exit_code == 1 and "kvsim completed none of the 1 requests" in str(r.exception)


# ----- found by a user audit (sixth session): each case below crashed, misread or passed silently before

def test_a_rejected_request_with_token_times_is_left_out(tmp_path):
    """A bench JSON row always has ``itls``; a request kvsim rejects (4M-token prompt > Llama-3.1-8B's context)
    has no predicted token times: it is left out on both sides instead of crashing the ITL comparison."""
    b = W.bench_result([0.0, 0.1], [100, 4_000_000], [3, 3], [[0.5, 0.6, 0.7], [0.9, 1.0, 1.1]], request_rate=10.0)
    p = tmp_path / "b.json"
    p.write_text(json.dumps(b))
    out = R.replay(R.read_run_log(p), merge_settings(SETTINGS)[0])
    assert out["sim"]["requests_rejected"] == 1
    assert out["metrics"]["itl_s"]["n"] == 2  # the admitted request's 3 - 1 intervals
    assert out["metrics"]["ttft_s"]["measured"]["mean"] == pytest.approx(0.5)


def test_a_run_that_did_not_stream_compares_e2e_only(tmp_path):
    """vLLM's non-streaming request functions leave ttft 0.0 and itls empty: TTFT, TPOT and ITL are not measured
    (TPOT would otherwise be E2E / (output - 1), queueing and prefill included); E2E is compared."""
    b = W.bench_result([0.0, 0.1], [100, 120], [3, 4], [[0.5, 0.6, 0.7], [0.9, 1.0, 1.1, 1.2]], request_rate=10.0)
    b["ttfts"] = [0.0, 0.0]
    b["itls"] = [[], []]
    p = tmp_path / "b.json"
    p.write_text(json.dumps(b))
    log = R.read_run_log(p)
    assert not log.streamed and any("did not stream" in n for n in log.notes)
    assert not any("streamed a different number" in n for n in log.notes)  # (not also the opposite: user audit)
    out = R.replay(log, merge_settings(SETTINGS)[0])
    for m in ("ttft_s", "tpot_s", "itl_s"):
        assert out["metrics"][m]["n"] == 0 and out["metrics"][m]["error"]["mean"] is None
    assert out["metrics"]["e2e_s"]["measured"]["mean"] == pytest.approx((0.7 + 1.1) / 2)  # latencies 0.7, 1.2 - 0.1
    assert out["check"]["checked"] == ["e2e.mean", "e2e.p50"]


def test_millisecond_times_are_refused_unless_said(tmp_path):
    """Times in ms read as s make every TPOT ~1000x: --time-unit auto refuses a median TPOT above 2 s;
    --time-unit ms divides every time by 1000 and reads the same log as the one written in seconds."""
    rows_s = [GOOD, {**GOOD, "queued_ts": 12.0, "first_token_ts": 12.4, "last_token_ts": 12.8}]
    rows_ms = [{k: (v * 1000 if k.endswith("_ts") else v) for k, v in r.items()} for r in rows_s]
    (tmp_path / "s.jsonl").write_text(W.to_jsonl(rows_s))
    (tmp_path / "ms.jsonl").write_text(W.to_jsonl(rows_ms))
    # TPOTs read as seconds: (11000 - 10500) / 4 = 125 and (12800 - 12400) / 4 = 100: median 112.5 s
    with pytest.raises(TraceError, match="median time per output token is 112.5 s.*--time-unit ms"):
        R.read_run_log(tmp_path / "ms.jsonl")
    a, b = R.read_run_log(tmp_path / "ms.jsonl", time_unit="ms"), R.read_run_log(tmp_path / "s.jsonl")
    for f in ("arrival_s", "first_token_s", "last_token_s"):
        assert np.allclose(getattr(a, f), getattr(b, f), rtol=1e-12, atol=1e-12)
    assert len(R.read_run_log(tmp_path / "ms.jsonl", time_unit="s")) == 2  # said explicitly: taken as seconds
    r = invoke(str(tmp_path / "ms.jsonl"), *ENGINE, "--time-unit", "minutes")
    assert r.exit_code == 1 and "--time-unit minutes" in str(r.exception)


@pytest.mark.parametrize("tol", ["25", "inf", "1.5"])
def test_a_tolerance_above_one_is_refused(tmp_path, tol):
    """--tolerance is a fraction (0.25 = ±25%): 25 would pass anything (±2500%), inf crashed the JSON writer."""
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(GOOD) + "\n")
    r = invoke(str(p), *ENGINE, "--tolerance", tol)
    assert r.exit_code == 1 and "a fraction of at most 1" in str(r.exception)


def test_latency_columns_beside_queued_ts(tmp_path):
    """vLLM stats rows with queued_ts, arrival_time and the latencies but no *_ts token columns: the latencies count
    from arrival_time (the docs' fallback), instead of every row missing first_token_ts."""
    row = {"queued_ts": 5000.0, "arrival_time": 1.7e9, "first_token_latency": 0.25, "e2e_latency": 1.25,
           "num_prompt_tokens": 100, "num_generation_tokens": 5}
    p = tmp_path / "lat.jsonl"
    p.write_text(W.to_jsonl([row, {**row, "arrival_time": 1.7e9 + 2.0}]))
    log = R.read_run_log(p)
    assert log.first_token_s.tolist() == [0.25, 2.25] and log.last_token_s.tolist() == [1.25, 3.25]


def test_duplicate_request_ids_bom_and_missing_columns(tmp_path):
    """A row repeating an earlier request_id is dropped and counted; a UTF-8 BOM before JSON lines is read as JSON
    lines (it was taken for CSV); rows missing a column name it when nothing is usable."""
    rows = [{**GOOD, "request_id": "a"}, {**GOOD, "request_id": "a"}, {**GOOD, "request_id": "b", "queued_ts": 12.0,
                                                                        "first_token_ts": 12.5, "last_token_ts": 13.0}]
    p = tmp_path / "dup.jsonl"
    p.write_text("\ufeff" + W.to_jsonl(rows), encoding="utf-8")
    log = R.read_run_log(p)
    assert len(log) == 2 and log.bad == {"duplicate_request_id": 1} and log.format == "vllm-stats-jsonl"
    p.write_text(W.to_jsonl([{k: v for k, v in GOOD.items() if k != "last_token_ts"}]))
    with pytest.raises(TraceError, match=r"missing_field: 1 \(missing: last_token_ts; columns found: queued_ts, "):
        R.read_run_log(p)


def test_other_json_files_are_refused_by_name(tmp_path):
    """A --append-result file (several bench results, one per line) and a pretty-printed JSON object that holds no
    request rows (e.g. an earlier replay result) are refused in one line; a one-row JSON lines file still reads."""
    b = W.bench_result([0.0, 0.1], [10, 20], [2, 2], [[0.5, 0.6], [0.7, 0.8]], request_rate=10.0)
    p = tmp_path / "append.json"
    p.write_text(json.dumps(b) + "\n" + json.dumps(b) + "\n")
    with pytest.raises(TraceError, match="holds 2 vllm bench serve results, one per line"):
        R.read_run_log(p)
    p.write_text(json.dumps({"kind": R.KIND, "metrics": {}}, indent=1))
    with pytest.raises(TraceError, match=f"a JSON object \\(kind: {R.KIND}\\) that is neither"):
        R.read_run_log(p)
    p.write_text(json.dumps(GOOD) + "\n")
    assert len(R.read_run_log(p)) == 1
    with pytest.raises(TraceError, match="is a folder"):
        R.read_run_log(tmp_path)


def test_meta_with_both_tp_names_must_agree(tmp_path):
    meta = tmp_path / "m.json"
    meta.write_text(json.dumps({**SETTINGS, "tp": 2, "tensor_parallel_size": 4}))
    with pytest.raises(ConfigError, match="'tensor_parallel_size' and its other name give different values"):
        read_meta(meta)
    meta.write_text(json.dumps({**SETTINGS, "tp": 2, "tensor_parallel_size": 2}))
    assert read_meta(meta)["tp"] == 2


def test_a_misspelled_log_column_is_named(tmp_path):
    """finish_reasn (no o) was ignored: an 'abort' row replayed as a completed request, silently (user audit)."""
    p = tmp_path / "r.csv"
    p.write_text("request_id,queued_ts,first_token_ts,last_token_ts,num_prompt_tokens,num_generation_tokens,finish_reasn\n"
                 "a,0,0.1,0.5,100,10,stop\nb,1,1.1,1.5,100,10,abort\n")
    log = R.read_run_log(p)
    assert "column 'finish_reasn' is not read; did you mean 'finish_reason'?" in log.notes
    p.write_text("request_id,queued_ts,first_token_ts,last_token_ts,num_prompt_tokens,num_generation_tokens,finish_reason,"
                 "my_notes\na,0,0.1,0.5,100,10,stop,x\nb,1,1.1,1.5,100,10,abort,y\n")
    log = R.read_run_log(p)
    assert len(log) == 1 and log.bad == {"failed_request": 1} and not any("is not read" in n for n in log.notes)


def test_one_token_outputs_have_no_interval_to_mismatch(tmp_path):
    """output_lens [1, 1, 1] with empty itls printed '3 of 3 requests streamed a different number of chunks than
    output tokens - 1': 0 chunks is exactly 1 - 1 (user audit)."""
    b = W.bench_result([0.0, 0.1, 0.2], [10, 20, 30], [1, 1, 1], [[0.5], [0.7], [0.9]], request_rate=10.0)
    b["itls"] = [[], [], []]
    b["latencies"] = [x + 0.01 for x in b["latencies"]]  # (the last token time trails the first: HTTP, detokenizing)
    p = tmp_path / "b.json"
    p.write_text(json.dumps(b))
    log = R.read_run_log(p)
    assert not any("streamed a different number" in n for n in log.notes)
    assert all(x is not None and x.size == 0 for x in log.itl_s)
