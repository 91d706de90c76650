"""Azure and Mooncake traces, format detection, names and bundled data."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from kvsim import traces
from kvsim.errors import TraceError
from kvsim.traces import list_traces, load_trace, summarize

DATA = Path(traces.__file__).parent / "data"


def test_azure_row_counts():
    """Azure 2023: code has 8,819 requests, conversation 19,366; no failed rows."""
    code, conv = load_trace("azure-code"), load_trace("azure-conv")
    assert (len(code), len(conv)) == (8819, 19366)
    assert code.num_failed_dropped == conv.num_failed_dropped == 0


def test_azure_timestamps_with_seven_fraction_digits():
    """TIMESTAMP '... 18:15:50.9951690' - '... 18:15:46.6805900' = 4.314579 s."""
    conv = load_trace("azure-conv")
    assert conv.arrival_s[0] == 0.0
    assert conv.arrival_s[1] == pytest.approx(4.314579, abs=1e-9)
    assert conv.duration_s == pytest.approx(3501.721937, abs=1e-6)  # 19:14:08.4025270 - 18:15:46.6805900
    assert (conv.prompt_tokens[:2] == [374, 396]).all() and (conv.output_tokens[:2] == [44, 109]).all()


def test_azure_bad_timestamp_names_line(tmp_path):
    """A malformed TIMESTAMP raises file:line."""
    path = tmp_path / "a.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:17:03.9799600,4,1\r\nyesterday,3,2\r\n")
    with pytest.raises(TraceError, match=rf"^{path}:3: TIMESTAMP is not a date-time"):
        load_trace(str(path), strict=True)
    tr = load_trace(str(path))  # not strict: the row is dropped and counted
    assert len(tr) == 1 and tr.meta["bad_rows"] == {"bad_time": 1}


def test_azure_unsorted_rejected(tmp_path):
    """Azure rows must be in time order."""
    path = tmp_path / "a.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.5,4,1\n2023-11-16 18:17:03.4,3,2\n"
    )
    with pytest.raises(TraceError, match=rf"^{path}:3: .*earlier than a previous row"):
        load_trace(str(path))


def test_burstgpt_filters_rejected_for_azure():
    """model/log_type filters apply only to BurstGPT."""
    with pytest.raises(TraceError, match="only to BurstGPT"):
        load_trace("azure-code", model="GPT-4")


def test_mooncake_prefix_blocks():
    """Mooncake hash_ids become prefix blocks of 512 tokens, ceil(input/512) per request."""
    for name, n in (("mooncake-conversation", 12031), ("mooncake-synthetic", 3993)):
        tr = load_trace(name)
        assert len(tr) == n and tr.prefix_block_tokens == 512
        lengths = np.array([len(b) for b in tr.prefix_blocks])
        assert (lengths == -(-tr.prompt_tokens // 512)).all()
    conv = load_trace("mooncake-conversation")
    assert conv.prompt_tokens[0] == 6758 and conv.prefix_blocks[0] == tuple(range(14))  # ceil(6758/512) = 14


def test_mooncake_limit_keeps_blocks_aligned():
    """After limit and prompt clipping, blocks still match their requests."""
    tr = load_trace("mooncake-conversation", limit=5, max_prompt_tokens=1024)
    assert len(tr.prefix_blocks) == 5
    assert all(len(b) <= 2 for b in tr.prefix_blocks)  # ceil(1024/512) = 2
    assert tr.prefix_blocks[1] == (0, 14)  # 2nd request starts with shared block 0


def test_mooncake_timestamps_in_ms(tmp_path):
    """timestamp is milliseconds: 1500 ms -> 1.5 s."""
    path = tmp_path / "m.jsonl"
    lines = [
        {"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]},
        {"timestamp": 1500, "input_length": 10, "output_length": 3, "hash_ids": [1]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    tr = load_trace(str(path))
    assert list(tr.arrival_s) == [0.0, 1.5] and tr.prefix_blocks == ((1, 2), (1,))


@pytest.mark.parametrize(
    "bad, what, kind",
    [
        ('{"timestamp": 5, "input_length": 10, "output_length": 3', "not valid JSON", "unparseable"),
        ('{"timestamp": 5, "input_length": -1, "output_length": 3, "hash_ids": []}', "'input_length' must be",
         "bad_token_count"),
        ('{"timestamp": 5, "input_length": 10, "hash_ids": [1]}', "missing key(s) output_length", "missing_field"),
        ('{"timestamp": 5, "input_length": 10, "output_length": 3, "hash_ids": [1, 2]}', "more than ceil",
         "bad_blocks"),
        ('{"timestamp": "5", "input_length": 10, "output_length": 3, "hash_ids": [1]}', "'timestamp' must be a number",
         "not_a_number"),
        ('{"timestamp": 1, "input_length": 10, "output_length": 3, "hash_ids": [1]}', "earlier than a previous", None),
    ],
)
def test_mooncake_malformed_line(tmp_path, bad, what, kind):
    """A malformed JSONL line: strict raises file:line (line 3 here, after a blank line); otherwise it is
    dropped and counted by kind (a line out of time order is always an error)."""
    path = tmp_path / "m.jsonl"
    good = '{"timestamp": 2, "input_length": 10, "output_length": 3, "hash_ids": [7]}'
    path.write_text(f"{good}\n\n{bad}\n")
    with pytest.raises(TraceError) as err:
        load_trace(str(path), strict=True)
    assert str(err.value).startswith(f"{path}:3: ") and what in str(err.value)
    if kind is not None:
        tr = load_trace(str(path))
        assert len(tr) == 1 and tr.meta["bad_rows"] == {kind: 1}
        assert tr.meta["bad_rows_first"][kind] == str(err.value)


def test_unknown_name_suggests_close_matches():
    """An unknown name lists close matches and all choices."""
    with pytest.raises(TraceError) as err:
        load_trace("azure-cod")
    msg = str(err.value)
    assert "Did you mean: azure-code" in msg and "synthetic-gamma" in msg


def test_file_format_errors(tmp_path):
    """Missing files, empty files and unknown headers each get a clear message."""
    with pytest.raises(TraceError, match="trace file not found"):
        load_trace(str(tmp_path / "nope.csv"))
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(TraceError, match="is empty"):
        load_trace(str(tmp_path / "e.csv"))
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match=r"x.csv:1: unknown trace format"):
        load_trace(str(tmp_path / "x.csv"))


def test_list_traces_names():
    """Every registered name loads and has a one-line description."""
    names = list_traces()
    assert set(names) >= {"burstgpt", "burstgpt-sample", "burstgpt3-sample", "azure-code", "azure-conv",
                          "mooncake-conversation", "mooncake-synthetic", "synthetic-poisson",
                          "synthetic-gamma", "synthetic-burstgpt", "synthetic-fixed"}
    assert all(text and "\n" not in text for text in names.values())


def test_summary_statistics():
    """summarize: Azure code mean rate (8819-1)/3435.948 s = 2.5654 req/s, median prompt 1469."""
    s = summarize(load_trace("azure-code"))
    assert s.requests == 8819
    assert s.mean_rate_per_s == pytest.approx(8818 / 3435.948056, rel=1e-6)
    assert s.prompt.p50 == 1469 and s.output.max == 1899


@pytest.mark.parametrize(
    "rel, sha",
    [
        ("burstgpt/BurstGPT_1_head400.csv", "7865fda5dac50938a84dfccb06c405e2f5202969ecfbd671c8399de00f4335f0"),
        ("burstgpt/BurstGPT_3_slice.csv", "5465fc4c38b0815b8f75d126a120c229ae93632d62e3adf1792f5e8401a73559"),
        ("azure/AzureLLMInferenceTrace_code.csv", "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6"),
        ("azure/AzureLLMInferenceTrace_conv.csv", "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8"),
        ("mooncake/conversation_trace.jsonl", "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df"),
        ("mooncake/synthetic_trace.jsonl", "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131"),
    ],
)
def test_bundled_data_matches_provenance(rel, sha):
    """Bundled files are the unmodified upstream bytes recorded in PROVENANCE.md."""
    path = DATA / rel
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert sha in (path.parent / "PROVENANCE.md").read_text()
    assert any(p.name.startswith("LICENSE") for p in path.parent.iterdir())


def test_all_named_traces_sorted_from_zero():
    """Every named trace is sorted, starts at 0 and has lengths >= 1."""
    for name in list_traces():
        tr = load_trace(name)
        assert tr.arrival_s[0] == 0.0 and (np.diff(tr.arrival_s) >= 0).all(), name
        assert tr.prompt_tokens.min() >= 1 and tr.output_tokens.min() >= 1, name
        assert math.isfinite(tr.duration_s), name


def test_messages_name_the_right_line_unit_and_kind(tmp_path):
    """A truncated one-value JSON file names its last line (the decoder pointed past the end: line
    2 of a one-line file); Mooncake times are quoted in the file's milliseconds; a directory is said
    to be one (it was 'unknown trace', or 'file not found' with a slash)."""
    import pytest

    from kvsim.errors import TraceError
    from kvsim.traces import load_trace

    one = tmp_path / "trunc.jsonl"
    one.write_text('{"timestamp": 0, "input_length": 10\n')
    with pytest.raises(TraceError, match=r"trunc.jsonl:1: not valid JSON \(the file ends inside a value"):
        load_trace(str(one))
    mc = tmp_path / "mc.jsonl"
    mc.write_text('{"timestamp": 100, "input_length": 10, "output_length": 5}\n'
                  '{"timestamp": 50, "input_length": 10, "output_length": 5}\n')
    with pytest.raises(TraceError, match=r"mc.jsonl:2: timestamp \(ms\) 50 is earlier than a previous row \(100\)"):
        load_trace(str(mc))
    (tmp_path / "adir").mkdir()
    for spec in (str(tmp_path / "adir"), str(tmp_path / "adir") + "/"):
        with pytest.raises(TraceError, match="is a directory"):
            load_trace(spec)
