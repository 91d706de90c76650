"""Trace formats: Vidur, generic CSV/JSONL/JSON with --columns, vllm bench JSON, ShareGPT, sessions,
synthetic arrivals, bad rows by kind (tests/data/traces/PROVENANCE.md says where the rows come from)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from kvsim import traces
from kvsim.errors import TraceError
from kvsim.traces import load_trace, summarize
from kvsim.traces.arrivals import parse_arrivals, resolution
from kvsim.traces.sessions import session_blocks

DATA = Path(__file__).parent / "data" / "traces"
VIDUR = DATA / "vidur" / "splitwise_conv_head200.csv"
ARXIV = DATA / "vidur" / "arxiv_summarization_stats_head100.csv"
SHAREGPT = DATA / "sharegpt" / "ShareGPT_V3_head6.json"
BENCH = DATA / "vllm_bench" / "bench_azure_conv_40.json"
PKG = Path(traces.__file__).parent / "data"
AZURE_CONV = PKG / "azure" / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = PKG / "mooncake" / "conversation_trace.jsonl"
BURST3 = PKG / "burstgpt" / "BurstGPT_3_slice.csv"


def one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, msg
    return msg


# ----- Vidur -----

def test_vidur_rows_are_the_azure_rows():
    """Vidur's splitwise_conv.csv is Azure conv in seconds: same lengths, arrivals within 1 us (read as format vidur)."""
    v = load_trace(str(VIDUR))
    a = load_trace("azure-conv", limit=200)
    assert v.meta["format"] == "vidur" and len(v) == 200 and v.notice is None
    assert (v.prompt_tokens == a.prompt_tokens).all() and (v.output_tokens == a.output_tokens).all()
    assert np.abs(v.arrival_s - a.arrival_s).max() < 1e-6
    assert v.prompt_tokens[:3].tolist() == [374, 396, 879] and v.arrival_s[1] == pytest.approx(4.314579)


def test_vidur_rounded_timestamps_are_reported(tmp_path):
    """arrived_at rounded to whole seconds: 0, 4.31, 4.54, 4.71, 5.89, 6.31, 7.75, 8.25, 8.34, 8.46, 8.70 ->
    0,4,5,5,6,6,8,8,8,8,9: 5 of 11 requests share the previous one's time; the notice says so."""
    lines = VIDUR.read_text().splitlines()[:12]
    rows = [f"{round(float(r.split(',')[0]))},{r.split(',', 1)[1]}" for r in lines[1:]]
    path = tmp_path / "rounded.csv"
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    tr = load_trace(str(path))
    assert tr.meta["arrival_resolution_s"] == 1.0 and tr.meta["arrival_ties"] == 5
    assert "arrived_at' (s) looks rounded to 1 s: 5 of 11 requests" in tr.notice
    assert load_trace(str(VIDUR)).meta["arrival_resolution_s"] == 1e-6  # 5.8926549999999995 is float's 5.892655


def test_vidur_lengths_only_needs_arrivals():
    """Vidur's request-length file has no arrived_at: an error naming --arrivals; constant:rate=4 -> 0, 0.25, 0.5 s."""
    with pytest.raises(TraceError) as err:
        load_trace(str(ARXIV))
    one_line(err, str(ARXIV), "no arrival times", "--arrivals poisson:rate=R")
    tr = load_trace(str(ARXIV), arrivals="constant:rate=4")
    assert tr.meta["format"] == "vidur-lengths" and len(tr) == 100
    assert tr.arrival_s[:3].tolist() == [0.0, 0.25, 0.5] and tr.prompt_tokens[:2].tolist() == [3772, 2015]
    assert tr.output_tokens[:2].tolist() == [54, 156]
    assert "arrivals are synthetic (constant:rate=4,seed=0): the file has none" in tr.notice


BAD_VIDUR_ROWS = [  # (row, kind, what the strict error says)
    ("9.5,abc,3", "not_a_number", "prompt column 'num_prefill_tokens' is not a number: 'abc'"),
    ("9.5,,3", "missing_field", "prompt column 'num_prefill_tokens' is missing or empty"),
    ("9.5,12,-3", "bad_token_count", "output column 'num_decode_tokens' must be a whole number of tokens >= 0"),
    ("9.5,12.5,3", "bad_token_count", "got '12.5'"),
    ("9.5,1e20,3", "bad_token_count", "<= 2147483647, got '1e20'"),
    ("9.5,nan,3", "bad_token_count", "got 'nan'"),
    ("nan,12,3", "bad_time", "arrival column 'arrived_at' must be a finite time >= 0"),
    ("-1,12,3", "bad_time", "got '-1'"),
    ("1e300,12,3", "bad_time", "<= 1e+12 s"),
    ("9.5,12", "unparseable", "expected 3 comma-separated columns, found 2"),
]


@pytest.mark.parametrize("row, kind, what", BAD_VIDUR_ROWS)
def test_vidur_bad_rows_by_kind(tmp_path, row, kind, what):
    """A bad row is dropped and counted by kind (first example kept); --strict makes it one line naming file:line."""
    path = tmp_path / "v.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,2\n" + row + "\n10.0,11,3\n")
    tr = load_trace(str(path))
    assert len(tr) == 2 and tr.meta["bad_rows"] == {kind: 1}
    assert tr.meta["num_rows_read"] == 3 and summarize(tr).bad_rows == {kind: 1}
    assert tr.notice.startswith(f"1 bad rows dropped ({kind} 1; first: {path}:3: ")
    with pytest.raises(TraceError) as err:
        load_trace(str(path), strict=True)
    assert one_line(err, what).startswith(f"{path}:3: ")


def test_all_rows_bad_is_an_error(tmp_path):
    """No good row: one line with the counts by kind and the first example."""
    path = tmp_path / "v.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n1,x,2\n2,3,-1\n")
    with pytest.raises(TraceError) as err:
        load_trace(str(path))
    one_line(err, "no usable request", "2 bad: not_a_number 1, bad_token_count 1", f"first: {path}:2:")


# ----- generic CSV / JSONL / JSON with --columns -----

def test_generic_csv_reads_azure_like_the_azure_reader():
    """--columns on the Azure CSV with --time-unit iso gives the Azure reader's requests."""
    g = load_trace(str(AZURE_CONV), columns="arrival=TIMESTAMP,prompt=ContextTokens,output=GeneratedTokens",
                   time_unit="iso")
    a = load_trace("azure-conv")
    assert g.meta["format"] == "csv" and len(g) == len(a) == 19366
    assert (g.prompt_tokens == a.prompt_tokens).all() and (g.output_tokens == a.output_tokens).all()
    assert np.abs(g.arrival_s - a.arrival_s).max() < 1e-6


def test_iso_times_need_a_full_extended_date(tmp_path):
    """--time-unit iso: '20240101' / '2024' / '1000' would parse as years (a day apart read as 365 days,
    a user audit): refused as bad times; '2024-01-01 00:00:00' and '2024-01-02T00:00:00' are 86,400 s apart."""
    cols = "arrival=ts,prompt=p,output=o"
    for a, b in (("20240101", "20240102"), ("2024", "2025"), ("1000", "1500")):
        path = tmp_path / f"{a}.csv"
        path.write_text(f"ts,p,o\n{a},100,10\n{b},50,5\n")
        with pytest.raises(TraceError) as err:
            load_trace(str(path), columns=cols, time_unit="iso")
        one_line(err, "no usable request", "bad_time 2", "full date")
    path = tmp_path / "ok.csv"
    path.write_text("ts,p,o\n2024-01-01 00:00:00,100,10\n2024-01-02T00:00:00,50,5\n")
    assert load_trace(str(path), columns=cols, time_unit="iso").duration_s == 86_400.0


def test_zero_prompt_rows_are_counted_and_noticed(tmp_path):
    """A row of 0 prompt tokens is dropped, counted (trace info: '0-prompt dropped') and named in the
    notice that simulate prints (a user audit found it dropped without a word)."""
    path = tmp_path / "zp.csv"
    path.write_text("ts,p,o\n0,100,10\n1,0,20\n2,50,5\n")
    t = load_trace(str(path), columns="arrival=ts,prompt=p,output=o")
    assert len(t) == 2 and "1 row with 0 prompt tokens dropped" in t.notice
    assert summarize(t).num_zero_prompt_dropped == 1


def test_generic_jsonl_reads_mooncake_like_the_mooncake_reader():
    """--columns on Mooncake JSON lines in ms gives the Mooncake reader's arrivals and lengths (no hash_ids);
    its timestamps, quantized upstream, are reported as sharing times."""
    g = load_trace(str(MOONCAKE), columns="arrival=timestamp,prompt=input_length,output=output_length", time_unit="ms")
    m = load_trace("mooncake-conversation")
    assert g.meta["format"] == "jsonl" and g.prefix_blocks is None
    assert np.array_equal(g.arrival_s, m.arrival_s) and (g.prompt_tokens == m.prompt_tokens).all()
    assert "looks rounded to 0.001 s" in g.notice and g.meta["arrival_ties"] > 10000


def test_generic_csv_session_column_matches_burstgpt_sessions():
    """--columns session='Session ID' on the BurstGPT_3 slice gives the BurstGPT reader's prefix blocks."""
    cols = "arrival=Timestamp,prompt=Request tokens,output=Response tokens,session=Session ID"
    g = load_trace(str(BURST3), columns=cols)
    b = load_trace("burstgpt3-sample")
    assert g.prefix_blocks == b.prefix_blocks and g.prefix_block_tokens == b.prefix_block_tokens == 16
    assert g.meta["sessions"] == b.meta["sessions"]


@pytest.mark.parametrize("unit, value, seconds", [("s", "2.5", 2.5), ("ms", "1500", 1.5), ("us", "250000", 0.25),
                                                  ("ns", "3000000000", 3.0)])
def test_time_units(tmp_path, unit, value, seconds):
    """--time-unit converts the arrival column: 1500 ms = 1.5 s, 250000 us = 0.25 s, 3e9 ns = 3 s."""
    path = tmp_path / "t.csv"
    path.write_text(f"ts,in,out\n0,5,2\n{value},6,3\n")
    tr = load_trace(str(path), columns="arrival=ts,prompt=in,output=out", time_unit=unit)
    assert tr.arrival_s.tolist() == [0.0, pytest.approx(seconds)]


def test_generic_json_types_and_nested_keys(tmp_path):
    """JSON lines: nested keys via a.b; "12" (a string), true and null are bad rows of their kinds; a JSON array works too."""
    rows = [{"t": 0, "usage": {"in": 10, "out": 2}}, {"t": 1, "usage": {"in": "12", "out": 2}},
            {"t": 2, "usage": {"in": True, "out": 2}}, {"t": 3, "usage": {"in": 5, "out": None}},
            {"t": 4, "usage": {"in": 7}}, [1, 2], {"t": 5, "usage": {"in": 8, "out": 3}}]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    cols = "arrival=t,prompt=usage.in,output=usage.out"
    tr = load_trace(str(path), columns=cols)
    assert tr.prompt_tokens.tolist() == [10, 8]
    assert tr.meta["bad_rows"] == {"unparseable": 2, "missing_field": 2, "not_a_number": 2}
    assert "must be a JSON number, got '12'" in tr.meta["bad_rows_first"]["not_a_number"]
    arr = tmp_path / "r.json"
    arr.write_text(json.dumps([rows[0], rows[6]]))
    tr = load_trace(str(arr), columns=cols)
    assert tr.meta["format"] == "json" and tr.prompt_tokens.tolist() == [10, 8]
    arr.write_text(json.dumps([rows[0], rows[1]]))
    with pytest.raises(TraceError) as err:
        load_trace(str(arr), columns=cols, strict=True)
    one_line(err, f"{arr}: record 2: prompt column 'usage.in' must be a JSON number")


@pytest.mark.parametrize("columns, unit, what", [
    ("arrival=ts,prompt=in", None, "--columns: missing output=COLUMN"),
    ("arrival=ts,prompt=in,output=out,tokens=x", None, "--columns: unknown field 'tokens'"),
    ("prompt=in,prompt=x,output=out", None, "field 'prompt' given twice"),
    ("arrival=time,prompt=in,output=out", None, "no column 'time' for arrival (columns: ts, in, out)"),
    ("arrival=ts,prompt=in,output=out", "hours", "--time-unit: unknown unit 'hours'"),
])
def test_column_mapping_errors(tmp_path, columns, unit, what):
    """A wrong --columns or --time-unit is one line saying what was expected."""
    path = tmp_path / "t.csv"
    path.write_text("ts,in,out\n0,5,2\n")
    with pytest.raises(TraceError) as err:
        load_trace(str(path), columns=columns, time_unit=unit)
    one_line(err, what)


def test_generic_needs_columns_and_options_fit_the_format(tmp_path):
    """An unknown header asks for --columns; --columns on a named trace and --tokenizer on a CSV are refused."""
    path = tmp_path / "t.csv"
    path.write_text("ts,in,out\n0,5,2\n")
    with pytest.raises(TraceError) as err:
        load_trace(str(path))
    one_line(err, f"{path}:1: unknown trace format", "--columns")
    with pytest.raises(TraceError) as err:
        load_trace(str(path), format="csv")
    one_line(err, "needs --columns")
    with pytest.raises(TraceError) as err:
        load_trace("azure-conv", columns="prompt=a,output=b")
    one_line(err, "--columns applies to trace files")
    with pytest.raises(TraceError) as err:
        load_trace(str(VIDUR), tokenizer=str(path))
    one_line(err, "--tokenizer applies to sharegpt traces")
    with pytest.raises(TraceError) as err:
        load_trace(str(VIDUR), format="vidr")
    one_line(err, "unknown trace format 'vidr'", "Did you mean: vidur")
    with pytest.raises(TraceError) as err:
        load_trace(str(VIDUR), format="mooncake")
    one_line(err, f"{VIDUR}:1: not valid JSON")


# ----- synthetic arrivals -----

def test_gamma_and_poisson_arrival_formulas():
    """gamma:rate=4,cv=2 draws Gamma(shape 1/2^2 = 0.25, scale 2^2/4 = 1.0) gaps: mean 0.25 s, CV 2;
    poisson:rate=4: exponential gaps of mean 1/4 s; same seed, same arrivals."""
    tr = load_trace(str(ARXIV), arrivals="gamma:rate=4,cv=2", seed=7)
    expect = np.concatenate([[0.0], np.cumsum(np.random.default_rng(7).gamma(0.25, 1.0, 99))])
    assert np.allclose(tr.arrival_s, expect - expect[0])
    from kvsim.traces.arrivals import draw

    gaps = np.diff(draw(parse_arrivals("gamma:rate=4,cv=2"), 200_001, seed=1))
    assert gaps.mean() == pytest.approx(0.25, rel=0.02) and gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.03)
    gaps = np.diff(draw(parse_arrivals("poisson:rate=4"), 200_001, seed=1))
    assert gaps.mean() == pytest.approx(0.25, rel=0.01) and gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.02)
    a = load_trace(str(ARXIV), arrivals="poisson:rate=4,seed=3", seed=9).arrival_s
    assert np.array_equal(a, load_trace(str(ARXIV), arrivals="poisson:rate=4", seed=3).arrival_s)


def test_arrivals_replace_a_files_own_and_say_so():
    """--arrivals on a file with arrivals replaces them (noted); on a synthetic spec it is refused."""
    tr = load_trace(str(VIDUR), arrivals="constant:rate=2")
    assert tr.arrival_s[:3].tolist() == [0.0, 0.5, 1.0] and "replacing the file's own" in tr.notice
    tr = load_trace("azure-code", arrivals="constant:rate=inf", limit=5)
    assert tr.arrival_s.tolist() == [0.0] * 5
    with pytest.raises(TraceError) as err:
        load_trace("synthetic-poisson", arrivals="poisson:rate=4")
    one_line(err, "--arrivals applies to trace files")


@pytest.mark.parametrize("spec, what", [
    ("weibull:rate=4", "unknown kind 'weibull'"), ("poisson", "needs rate=R"), ("poisson:rate=0", "rate must be"),
    ("poisson:rate=inf", "inf only for constant"), ("gamma:rate=4,cv=20", "cv must be in [0.001, 10]"),
    ("gamma:rate=4,shape=2", "unknown option 'shape'"), ("poisson:rate=x", "rate must be a number"),
    ("poisson:rate=4,seed=-1", "seed must be a whole number"),
])
def test_arrival_spec_errors(spec, what):
    with pytest.raises(TraceError) as err:
        parse_arrivals(spec)
    one_line(err, "--arrivals", what)


def test_resolution_steps():
    """Coarsest grid every time sits on: 1 s for 5,6,6,7; 0.1 s for 1.5,1.2; 1 ms for 1500/1000 ms; None below 1 us."""
    assert resolution(np.array([5.0, 6.0, 6.0, 7.0])) == 1.0
    assert resolution(np.array([1.5, 1.2, 3.0])) == 0.1
    assert resolution(np.array([0, 1500, 1501]) / 1000.0) == 0.001
    assert resolution(np.array([0.1234567, 1.0])) is None


# ----- vllm bench serve JSON -----

def test_vllm_bench_start_times_and_failed_request():
    """start_times (a perf_counter clock) are the arrivals; the request with an error is dropped as failed."""
    tr = load_trace(str(BENCH))
    a = load_trace("azure-conv", limit=40)
    keep = np.arange(40) != 7
    assert tr.meta["format"] == "vllm-bench" and tr.meta["arrivals"] == "start_times"
    assert len(tr) == 39 and tr.num_failed_dropped == 1 and tr.meta["num_error_requests"] == 1
    assert (tr.prompt_tokens == a.prompt_tokens[keep]).all()
    assert np.abs(tr.arrival_s - a.arrival_s[keep]).max() < 1e-6


def test_vllm_bench_without_start_times_is_synthetic_and_says_so(tmp_path):
    """Without start_times: vLLM's rule, Gamma gaps rescaled so the 40th request goes at 40/1.6 = 25 s, with the
    seed stated; max_concurrency without start_times, a result without --save-detailed and uneven lists are errors."""
    data = json.loads(BENCH.read_text())
    del data["start_times"]
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    tr = load_trace(str(path), seed=5)
    from kvsim.traces.vllm_bench import synthetic_arrivals

    t = synthetic_arrivals(40, 1.6, 1.0, 5)
    assert t[-1] == pytest.approx(25.0) and tr.arrival_s[-1] == pytest.approx(25.0 - t[0])
    assert "regenerated from request_rate 1.6/s" in tr.notice and "numpy seed 5" in tr.notice
    for change, what in (({"max_concurrency": 4}, "max_concurrency 4"), ({"output_lens": None}, "--save-detailed"),
                         ({"errors": [""]}, "per-request lists differ in length")):
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(TraceError) as err:
            load_trace(str(path))
        one_line(err, str(path), what)
    path.write_text(json.dumps({**data, "input_lens": ["x"] + data["input_lens"][1:]}))
    assert load_trace(str(path)).meta["bad_rows"] == {"not_a_number": 1}


def test_validate_replay_uses_the_same_bench_rules():
    """kvsim validate replay's bench reader takes its arrival rules from the trace reader (one implementation)."""
    from kvsim.traces import vllm_bench
    from kvsim.validate import runlog_bench

    assert runlog_bench.synthetic_arrivals is vllm_bench.synthetic_arrivals
    assert runlog_bench.is_bench_result is vllm_bench.is_bench_result


# ----- ShareGPT -----

def test_sharegpt_turns_sessions_and_approximate_counts():
    """6 entries, 4 conversations (hRPPgZT_0/_11/_17 joined): 6 + 1 + 1 + (6 + 4 + 3) = 21 replies with a message
    before them. Turn 1 of QWJhYvA: prompt ceil(190/4) = 48, output ceil(1298/4) = 325; turn 2's prompt is
    48 + 325 + ceil(188/4) = 420 and starts with turn 1's prefix blocks; the notice flags the approximation."""
    tr = load_trace(str(SHAREGPT), arrivals="poisson:rate=2")
    assert tr.meta["format"] == "sharegpt" and len(tr) == 21 and tr.meta["conversations"] == 4
    assert tr.prompt_tokens[:2].tolist() == [48, 420] and tr.output_tokens[0] == 325
    # ids name prompt + reply: turn 1 ceil((48 + 325) / 16) = 24 blocks; turn 2 (420 >= 373: the reply was resent)
    # shares all 24 and names ceil((420 + output) / 16) in all
    assert tr.prefix_block_tokens == 16 and len(tr.prefix_blocks[0]) == 24
    assert len(tr.prefix_blocks[1]) == math.ceil((420 + int(tr.output_tokens[1])) / 16)
    assert tr.prefix_blocks[1][:24] == tr.prefix_blocks[0]
    assert "token counts are approximate (ceil(characters / 4))" in tr.notice
    assert summarize(tr).token_counts == "approximate: ceil(characters / 4)"
    assert tr.meta["sessions"]["sessions"] == 4 and tr.meta["sessions"]["continued"] == 17


def test_sharegpt_with_a_local_tokenizer(tmp_path):
    """A tokenizers JSON (a word-level tokenizer splitting on whitespace, made here) counts 29 tokens in
    QWJhYvA's first message (29 whitespace-separated words) and 202 in the reply."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    tr = load_trace(str(SHAREGPT), arrivals="poisson:rate=2", tokenizer=str(path))
    assert tr.prompt_tokens[0] == 29 and tr.output_tokens[0] == 202
    assert tr.meta["token_counts"] == "exact: tokenizer tokenizer.json" and "approximate" not in (tr.notice or "")


def test_sharegpt_tokenizer_errors(tmp_path, monkeypatch):
    """--tokenizer without the optional package, a missing file or a bad file: one line each."""
    bad = tmp_path / "tok.json"
    bad.write_text("{}")
    with pytest.raises(TraceError) as err:
        load_trace(str(SHAREGPT), arrivals="poisson:rate=2", tokenizer=str(tmp_path / "nope.json"))
    one_line(err, "file not found")
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        pass
    else:
        with pytest.raises(TraceError) as err:
            load_trace(str(SHAREGPT), arrivals="poisson:rate=2", tokenizer=str(bad))
        one_line(err, "not a tokenizers JSON file")
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails as if not installed
    with pytest.raises(TraceError) as err:
        load_trace(str(SHAREGPT), arrivals="poisson:rate=2", tokenizer=str(bad))
    one_line(err, "needs the optional package 'tokenizers'")


def test_sharegpt_bad_conversations_and_no_arrivals(tmp_path):
    """A message without text is a bad_conversation (strict: names the conversation); no --arrivals is an error."""
    data = json.loads(SHAREGPT.read_text())[:2]
    data[1]["conversations"][1] = {"from": "gpt"}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    tr = load_trace(str(path), arrivals="constant:rate=1")
    assert len(tr) == 6 and tr.meta["bad_rows"] == {"bad_conversation": 1}
    with pytest.raises(TraceError) as err:
        load_trace(str(path), arrivals="constant:rate=1", strict=True)
    one_line(err, f"{path}: conversation 2: message 1: 'value' must be text")
    with pytest.raises(TraceError) as err:
        load_trace(str(SHAREGPT))
    one_line(err, "no arrival times", "--arrivals")
    jl = tmp_path / "s.jsonl"
    jl.write_text("\n".join(json.dumps(d) for d in json.loads(SHAREGPT.read_text())) + "\n")
    assert len(load_trace(str(jl), arrivals="constant:rate=1")) == 21  # JSON lines too


# ----- sessions -----

def test_session_blocks_hand_example():
    """16-token blocks: A(40 tok) -> ids 0,1,2; B(10) -> 3; A(50) continues -> 0,1,2 + new 4; A(50) again (a
    regenerated reply: same prompt) -> the same 0,1,2,4; A(20) is shorter, so the history was cut: a new
    stream 5,6. Rows outside sessions get no blocks."""
    blocks, stats = session_blocks(["A", "B", "A", "A", "A", None], np.array([40, 10, 50, 50, 20, 30]),
                                   np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]))
    assert blocks == [(0, 1, 2), (3,), (0, 1, 2, 4), (0, 1, 2, 4), (5, 6), ()]
    assert stats == {"sessions": 2, "turns": 5, "continued": 2, "restarted": 1, "block_tokens": 16, "too_long": 0}


def test_session_blocks_name_replies_with_output():
    """With outputs, 16-token blocks name prompt + reply. A(40 + 20 = 60 tokens) -> 4 blocks 0,1,2,3 (block 2
    holds prompt 32-39 and reply 40-47); B(10 + 5) -> 4; A(70 >= 60: the reply was resent) + 10 -> 0,1,2,3 + new 5;
    A(75: continues, but 75 < 70 + 10, the reply was not resent whole) + 5: keep 70 // 16 = 4 full prompt blocks
    0,1,2,3, then ceil(80 / 16) = 5 -> new 6; A(30 < 75) + 2: restart, ceil(32 / 16) = 2 -> 7, 8."""
    blocks, stats = session_blocks(["A", "B", "A", "A", "A"], np.array([40, 10, 70, 75, 30]),
                                   np.arange(5.0), output=np.array([20, 5, 10, 5, 2]))
    assert blocks == [(0, 1, 2, 3), (4,), (0, 1, 2, 3, 5), (0, 1, 2, 3, 6), (7, 8)]
    assert (stats["continued"], stats["restarted"]) == (2, 1)


def test_session_reply_blocks_reused_by_the_next_turn_in_both_engines():
    """Turn 1: prompt 100, output 60 (ids name 160 tokens = 10 blocks); turn 2 arrives after turn 1 finished with
    prompt 200 >= 160 (history + reply resent). Turn 1 caches its prompt's 100 // 16 = 6 full blocks at prefill
    and, finishing, its generated ones up to (100 + 60 - 1) // 16 = 9 blocks: turn 2 finds 9 x 16 = 144 cached
    tokens (6 x 16 = 96 if replies were not named). Both engines agree."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.sim.reference import simulate_reference
    from kvsim.sim.replica import SimConfig, simulate
    from kvsim.traces.base import Trace

    blocks, _ = session_blocks(["s", "s"], np.array([100, 200]), np.array([0.0, 100.0]), output=np.array([60, 8]))
    assert len(blocks[0]) == 10 and blocks[1][:10] == blocks[0]
    tr = Trace(name="s", arrival_s=np.array([0.0, 100.0]), prompt_tokens=np.array([100, 200]),
               output_tokens=np.array([60, 8]), prefix_blocks=tuple(blocks), prefix_block_tokens=16)
    dep = build_deployment("a100", "llama-3.1-8b")
    m = make_method("full", dep)
    fast = simulate(dep, m, tr, SimConfig()).records.cached_tokens.tolist()
    ref = simulate_reference(dep, m, tr, SimConfig()).cached_tokens.tolist()
    assert fast == ref == [0, 144]


def test_session_prompt_above_the_stream_cap_gets_no_blocks():
    """A turn of 2**31 - 2 tokens would need ceil((2**31 - 2) / 16) = 134,217,728 block ids (~5 GB of
    Python ints; found by benchmarks/fuzz.py as a MemoryError). Above MAX_STREAM_TOKENS = 2**24 a turn
    neither continues nor cuts its stream: A(40) -> 0,1,2; the huge turn -> (); A(50) continues -> 0,1,2,3."""
    from kvsim.traces.sessions import MAX_STREAM_TOKENS, describe

    blocks, stats = session_blocks(["A", "A", "A"], np.array([40, 2**31 - 2, 50]), np.array([0.0, 1.0, 2.0]))
    assert blocks == [(0, 1, 2), (), (0, 1, 2, 3)]
    assert (stats["turns"], stats["continued"], stats["too_long"]) == (2, 1, 1)
    assert f"1 turns above {MAX_STREAM_TOKENS:,} prompt tokens" in describe(stats)
    # a reply of 2**31 - 2 tokens is not named: the turn's ids name its 40-token prompt only (3 blocks)
    blocks, _ = session_blocks(["A"], np.array([40]), np.array([0.0]), output=np.array([2**31 - 2]))
    assert blocks == [(0, 1, 2)]
    # exactly at the cap still gets its 2**24 / 16 = 1,048,576 blocks
    blocks, stats = session_blocks(["A"], np.array([MAX_STREAM_TOKENS]), np.array([0.0]))
    assert len(blocks[0]) == 1_048_576 and stats["too_long"] == 0


def test_burstgpt3_sessions_reuse_earlier_turns_in_the_simulator(tmp_path):
    """Two turns of BurstGPT_3 session 313b905a (69 request + 62 response tokens, then 249 >= 131 request tokens):
    turn 1's ids name ceil(131/16) = 9 blocks; it caches floor(69/16) = 4 prompt blocks at prefill and, finishing,
    its generated blocks up to (69 + 62 - 1) // 16 = 8: the second turn reuses 8 x 16 = 128 tokens (64 when
    replies were not named); with prefix caching off, none."""
    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.sim.replica import SimConfig, simulate

    lines = BURST3.read_text().splitlines()
    path = tmp_path / "s.csv"
    path.write_text("\n".join([lines[0], lines[54], lines[58]]) + "\n")  # file lines 55 and 59
    tr = load_trace(str(path))
    assert tr.prompt_tokens.tolist() == [69, 249] and len(tr.prefix_blocks[0]) == 9
    assert tr.prefix_blocks[1][:9] == tr.prefix_blocks[0]
    dep = build_deployment("a100", "llama-3.1-8b")
    on = simulate(dep, make_method("full", dep), tr, SimConfig())
    off = simulate(dep, make_method("full", dep), tr, SimConfig(enable_prefix_caching=False))
    assert on.summary["cached_prompt_tokens"] == 128 and off.summary["cached_prompt_tokens"] == 0


def test_burstgpt3_sample_sessions():
    """The bundled BurstGPT_3 slice: 393 conversation turns (399 kept rows less 6 API rows) in 134 sessions."""
    tr = load_trace("burstgpt3-sample")
    s = tr.meta["sessions"]
    assert (s["turns"], s["sessions"]) == (393, 134) and s["continued"] + s["restarted"] == 393 - 134
    assert sum(len(b) == 0 for b in tr.prefix_blocks) == 6  # API log rows: no session


# ----- every format: non-UTF-8 and detection -----

@pytest.mark.parametrize("header, row, kwargs", [
    ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type", "5,ChatGPT,1,2,3,API log", {}),
    ("TIMESTAMP,ContextTokens,GeneratedTokens", "2023-11-16 18:17:03.9799600,4,1", {}),
    ("arrived_at,num_prefill_tokens,num_decode_tokens", "0.5,4,1", {}),
    ("ts,in,out", "0.5,4,1", {"columns": "arrival=ts,prompt=in,output=out"}),
    ('{"timestamp": 0, "input_length": 4, "output_length": 1}', '{"timestamp": 1, "input_length": 4, "output_length": 1}', {}),
    ('{"t": 0, "in": 4, "out": 1}', '{"t": 1, "in": 4, "out": 1}', {"columns": "arrival=t,prompt=in,output=out"}),
])
def test_non_utf8_names_file_and_line(tmp_path, header, row, kwargs):
    """A byte that is not UTF-8 on line 3: one line naming file:3 and the byte, for every format."""
    path = tmp_path / "bad.txt"
    path.write_bytes(f"{header}\n{row}\n".encode() + row.encode().replace(b"1", b"\xff", 1) + b"\n")
    with pytest.raises(TraceError) as err:
        load_trace(str(path), **kwargs)
    one_line(err, f"{path}:3: not UTF-8 text (byte 0xff")


@pytest.mark.parametrize("text", [
    '[{"id": "a", "conversations": [\n{"from": "human", "value": "hi"},\n{"from": "gpt", "value": "X"}]}]',  # ShareGPT
    '{"input_lens": [4],\n"output_lens": [1],\n"errors": ["X"], "start_times": [0]}',  # vllm bench
])
def test_non_utf8_in_json_documents(tmp_path, text):
    """ShareGPT and vllm bench JSON: a non-UTF-8 byte on line 3 is one line naming file:3."""
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode().replace(b"X", b"\xfe"))
    with pytest.raises(TraceError) as err:
        load_trace(str(path), arrivals="constant:rate=1")
    one_line(err, f"{path}:3: not UTF-8 text (byte 0xfe")


def test_rows_out_of_order_are_sorted_and_noted(tmp_path):
    """A generic file's rows need not be in time order: sorted stably, and the note counts 1 row earlier than a
    row before it (2.0 after 3.0)."""
    path = tmp_path / "t.csv"
    path.write_text("ts,in,out\n1.0,5,1\n3.0,6,1\n2.0,7,1\n")
    tr = load_trace(str(path), columns="arrival=ts,prompt=in,output=out")
    assert tr.prompt_tokens.tolist() == [5, 7, 6] and tr.arrival_s.tolist() == [0.0, 1.0, 2.0]
    assert "1 rows are earlier than a row before them: sorted by arrival" in tr.notice


@pytest.mark.parametrize("path, fmt", [(VIDUR, "vidur"), (ARXIV, "vidur-lengths"), (BENCH, "vllm-bench"),
                                       (SHAREGPT, "sharegpt"), (BURST3, "burstgpt8"), (AZURE_CONV, "azure")])
def test_format_detected_and_forced(path, fmt):
    """Each sample is detected from its header or content; forcing its format gives the same trace."""
    kw = {"arrivals": "constant:rate=1"} if fmt in ("vidur-lengths", "sharegpt") else {}
    auto = load_trace(str(path), **kw)
    forced = load_trace(str(path), format=fmt.replace("8", "").replace("-lengths", ""), **kw)
    assert auto.meta["format"] == forced.meta["format"] == fmt
    assert np.array_equal(auto.arrival_s, forced.arrival_s) and np.array_equal(auto.prompt_tokens, forced.prompt_tokens)


# ----- CLI -----

def test_cli_trace_info_and_simulate_read_new_formats(tmp_path):
    """`trace info` prints format, bad rows and sessions; `simulate` reads a Vidur file; --strict makes a bad row
    exit 1 with one 'error:' line and no traceback."""
    import subprocess

    def run(*args):
        return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, timeout=300)

    path = tmp_path / "v.csv"
    path.write_text(VIDUR.read_text().splitlines()[0] + "\n0.0,10,2\n1.0,abc,3\n2.0,11,3\n")
    r = run("trace", "info", str(path))
    assert r.returncode == 0, r.stderr
    assert "format vidur" in r.stdout and "not_a_number 1 (dropped)" in r.stdout and "1 bad rows dropped" in r.stdout
    r = run("trace", "info", str(path), "--strict")
    assert r.returncode == 1 and r.stderr.strip() == f"error: {path}:3: prompt column 'num_prefill_tokens' is not a number: 'abc'"
    r = run("trace", "info", str(SHAREGPT), "--arrivals", "poisson:rate=2", "--json")
    info = json.loads(r.stdout)
    assert info["format"] == "sharegpt" and info["requests"] == 21 and info["sessions"].startswith("4 sessions")
    r = run("simulate", "--trace", str(VIDUR), "-n", "20", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["requests_completed"] == 20
    r = run("simulate", "--trace", str(ARXIV), "-n", "5", "--trace-format", "vidur", "--arrivals", "gamma:rate=1,cv=2",
            "--json")
    assert r.returncode == 0, r.stderr
    assert "arrivals are synthetic (gamma:rate=1,cv=2,seed=0)" in r.stderr


def test_simulate_summary_records_how_a_file_trace_was_read(tmp_path):
    """summary.json's trace_spec carries --columns, --time-unit, --format, --arrivals, --strict: a rerun from it
    reads the same requests (without time_unit a ms file would be read as seconds, 1000x too slow; a user audit)."""
    import subprocess
    import sys

    path = tmp_path / "ms.csv"
    path.write_text("ts,p,o\n0,100,10\n1500,50,5\n3000,60,7\n")
    r = subprocess.run([sys.executable, "-m", "kvsim", "simulate", "--hw", "a100", "--trace", str(path), "--columns",
                        "arrival=ts,prompt=p,output=o", "--time-unit", "ms", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    spec = (out[0] if isinstance(out, list) else out)["trace_spec"]
    assert (spec["columns"], spec["time_unit"], spec["strict"], spec["format"]) == ("arrival=ts,prompt=p,output=o", "ms", False, None)
    again = load_trace(spec["trace"], columns=spec["columns"], time_unit=spec["time_unit"])
    assert again.duration_s == 3.0  # 3,000 ms


def test_bad_row_notice_names_the_files_first_bad_row(tmp_path):
    """The notice's 'first:' is the first bad row in the file, as --strict reports it (it named the first
    row of the first kind listed: line 4 here, while line 2 is bad too; a user audit)."""
    path = tmp_path / "b.csv"
    path.write_text("ts,p,o\n0,10.5,1\n1,100,10\nabc,5,5\n2,50,5\n")
    t = load_trace(str(path), columns="arrival=ts,prompt=p,output=o")
    assert f"first: {path}:2:" in t.notice
    with pytest.raises(TraceError, match=f"{path}:2:"):
        load_trace(str(path), columns="arrival=ts,prompt=p,output=o", strict=True)


def test_arrivals_with_rate_or_time_scale_is_an_error(tmp_path):
    """--arrivals constant:rate=4 --rate 2 gave 2 req/s while the notice said rate=4 (user audit): the
    arrival process and its rate are given in one place."""
    p = tmp_path / "t.csv"
    p.write_text("ts,in,out\n0,100,10\n1,100,10\n2,100,10\n")
    cols = "arrival=ts,prompt=in,output=out"
    for extra in ({"rate": 2.0}, {"time_scale": 2.0}):
        with pytest.raises(TraceError, match="--arrivals sets the arrival process and its rate"):
            load_trace(str(p), columns=cols, arrivals="constant:rate=4", **extra)
    t = load_trace(str(p), columns=cols, arrivals="constant:rate=4")
    assert t.arrival_s.tolist() == [0.0, 0.25, 0.5]  # 1 / 4 s apart


def test_iso_times_mixing_utc_offsets_and_none_are_refused(tmp_path):
    """'10:00:00' (taken as UTC) beside '10:00:02+05:00' (05:00:02 UTC) gave a span of 17,998 s, silently
    (user audit); all with offsets, or none, are read as before."""
    p = tmp_path / "t.csv"
    cols = "arrival=ts,prompt=in,output=out"
    p.write_text("ts,in,out\n2024-05-01T10:00:00,100,10\n2024-05-01T10:00:02+05:00,100,10\n")
    with pytest.raises(TraceError, match="mixes date-times with a UTC offset .* and without one"):
        load_trace(str(p), columns=cols, time_unit="iso")
    p.write_text("ts,in,out\n2024-05-01T10:00:00+05:00,100,10\n2024-05-01T10:00:02+05:00,100,10\n")
    assert load_trace(str(p), columns=cols, time_unit="iso").arrival_s.tolist() == [0.0, 2.0]
    p.write_text("ts,in,out\n2024-05-01 10:00:00,100,10\n2024-05-01 10:00:02.5,100,10\n")
    assert load_trace(str(p), columns=cols, time_unit="iso").arrival_s.tolist() == [0.0, 2.5]


def test_an_arrival_column_named_in_ms_read_as_seconds_says_so(tmp_path):
    """arrival_ms read as seconds made a 1000x longer trace whose only hint was 'mostly idle' (user audit)."""
    p = tmp_path / "t.csv"
    p.write_text("arrival_ms,in,out\n0,100,10\n500,100,10\n1000,100,10\n")
    cols = "arrival=arrival_ms,prompt=in,output=out"
    t = load_trace(str(p), columns=cols)
    assert t.arrival_s.tolist() == [0.0, 500.0, 1000.0] and "its name says ms: give --time-unit ms" in t.notice
    for unit in ("ms", "s"):  # said: no note
        assert "its name says" not in (load_trace(str(p), columns=cols, time_unit=unit).notice or "")
    p.write_text("t_us,in,out\n0,100,10\n5,100,10\n")
    assert "its name says us" in load_trace(str(p), columns="arrival=t_us,prompt=in,output=out").notice
    p.write_text("items,in,out\n0,100,10\n5,100,10\n")  # (a name merely ending in s: no note)
    assert "its name says" not in (load_trace(str(p), columns="arrival=items,prompt=in,output=out").notice or "")
