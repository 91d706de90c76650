"""BurstGPT CSV loading: both formats, filters, rescaling, bad rows, `burstgpt` resolution."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from kvsim.errors import TraceError
from kvsim.traces import load_trace
from kvsim.traces.burstgpt import SAMPLE_1, SAMPLE_3

HEADER6 = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
HEADER8 = "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_six_column_sample_counts():
    """The bundled BurstGPT_1 head has 400 rows, 17 failed (0 response tokens) -> 383 requests."""
    tr = load_trace("burstgpt-sample")
    assert len(tr) == 383  # 400 - 17
    assert tr.num_failed_dropped == 17
    assert tr.num_filtered == 0
    assert tr.meta["num_rows_read"] == 400
    assert tr.meta["num_invalid_dropped"] == 0  # failed rows read 0,0,0 but count as failed only
    assert tr.meta["format"] == "burstgpt6"
    assert tr.arrival_s[0] == 0.0
    assert tr.duration_s == 37269.0  # Timestamp 5 .. 37274
    assert (tr.prompt_tokens[:3] == [472, 1087, 417]).all()  # first three CSV rows
    assert (tr.output_tokens[:3] == [18, 230, 276]).all()
    assert tr.prompt_tokens.dtype == np.int64 and tr.arrival_s.dtype == np.float64


def test_eight_column_sample_counts():
    """The BurstGPT_3 slice (Session ID, Elapsed time columns) has 400 rows, 1 failed."""
    tr = load_trace("burstgpt3-sample")
    assert len(tr) == 399  # 400 - 1
    assert tr.num_failed_dropped == 1
    assert tr.meta["format"] == "burstgpt8"
    assert tr.duration_s == 41453.0  # 19481563.0 - 19440110.0
    assert list(tr.arrival_s[:3]) == [0.0, 51.0, 82.0]  # 19440161-19440110, 19440192-19440110
    assert list(tr.prompt_tokens[:3]) == [906, 36, 1779]


def test_model_and_log_type_filters():
    """model/log_type keep matching rows; filtered and failed rows are counted separately."""
    gpt4 = load_trace("burstgpt-sample", model="gpt-4")
    # 80 GPT-4 rows (78 conversation + 2 API), 3 of them failed -> 77; 400 - 80 = 320 filtered
    assert (len(gpt4), gpt4.num_filtered, gpt4.num_failed_dropped) == (77, 320, 3)
    api = load_trace("burstgpt3-sample", log_type="API")
    # 6 API rows (3 ChatGPT + 3 GPT-4), none failed; 394 filtered
    assert (len(api), api.num_filtered, api.num_failed_dropped) == (6, 394, 0)
    both = load_trace("burstgpt3-sample", model="ChatGPT", log_type="api log")
    assert len(both) == 3


def test_unknown_model_lists_choices():
    """An unknown model value names the valid ones."""
    with pytest.raises(TraceError, match=r"unknown BurstGPT model 'gpt5'.*Choices: ChatGPT, GPT-4"):
        load_trace("burstgpt-sample", model="gpt5")


def test_filters_leaving_nothing_say_why():
    """When filters leave no request, the message lists the filters and the counts."""
    with pytest.raises(TraceError) as err:
        load_trace("burstgpt-sample", model="GPT-4", log_type="API", end_s=100)
    msg = str(err.value)
    assert "model=GPT-4, log_type=API, end_s=100" in msg
    assert "400 rows read, 400 filtered out" in msg  # both API rows arrive after t=100
    assert "\n" not in msg


def test_time_window_and_shift():
    """start_s <= Timestamp < end_s on raw seconds; the first kept request moves to t=0."""
    tr = load_trace("burstgpt-sample", start_s=0, end_s=1000)
    # rows at 5, 45, ..., 974 (18 rows before the first failure at 1106)
    assert len(tr) == 18
    assert tr.arrival_s[-1] == 969.0  # 974 - 5
    assert tr.num_filtered == 382  # 400 - 18
    assert tr.meta["raw_start_s"] == 5.0


def test_limit_takes_first_requests():
    """limit keeps the first N requests after drops; the rest count as filtered."""
    tr = load_trace("burstgpt-sample", limit=10)
    assert len(tr) == 10
    assert tr.num_filtered == 373  # 383 - 10
    assert list(tr.prompt_tokens[:2]) == [472, 1087]


def test_rate_rescale_is_exact():
    """rate=R rescales so (N-1)/span == R exactly."""
    tr = load_trace("burstgpt-sample", rate=2.0)
    assert tr.duration_s == pytest.approx(191.0, rel=1e-12)  # (383 - 1) / 2
    assert tr.mean_rate_per_s == pytest.approx(2.0, rel=1e-12)
    assert tr.meta["time_factor"] == pytest.approx(382 / (2.0 * 37269.0))


def test_time_scale_divides_timestamps():
    """time_scale=100 makes the trace 100x faster."""
    tr = load_trace("burstgpt-sample", time_scale=100)
    assert tr.duration_s == pytest.approx(372.69)  # 37269 / 100
    assert tr.arrival_s[1] == pytest.approx(0.4)  # (45 - 5) / 100


def test_rate_and_time_scale_exclusive():
    """rate and time_scale cannot both be given."""
    with pytest.raises(TraceError, match="either --rate or --time-scale"):
        load_trace("burstgpt-sample", rate=1, time_scale=2)


def test_clip_lengths():
    """max_prompt_tokens / max_output_tokens clip lengths and count clipped requests."""
    tr = load_trace("burstgpt-sample", max_prompt_tokens=1023, max_output_tokens=1023)
    assert tr.prompt_tokens.max() == 1023 and tr.output_tokens.max() == 1023
    full = load_trace("burstgpt-sample")
    assert tr.meta["num_prompt_clipped"] == int((full.prompt_tokens > 1023).sum()) > 0


def test_file_path_and_gzip(tmp_path):
    """A path is detected as BurstGPT from its header, also gzip-compressed."""
    gz = tmp_path / "b.csv.gz"
    with open(SAMPLE_1, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert len(load_trace(str(SAMPLE_3))) == 399
    tr = load_trace(str(gz))
    assert len(tr) == 383 and tr.name == "b"


def test_unsorted_within_second_sorted_stably(tmp_path):
    """Rows out of order within the same second are sorted stably, not rejected."""
    rows = "10.7,ChatGPT,5,1,6,API log\n10.2,ChatGPT,6,1,7,API log\n10.2,ChatGPT,7,1,8,API log\n12,GPT-4,8,1,9,API log\n"
    tr = load_trace(str(write(tmp_path, HEADER6 + rows)))
    assert list(tr.prompt_tokens) == [6, 7, 5, 8]  # 10.2, 10.2 (file order kept), 10.7, 12
    assert tr.arrival_s[-1] == pytest.approx(1.8)  # 12 - 10.2


@pytest.mark.parametrize(
    "rows, line, what, kind",
    [
        ("5,ChatGPT,1,2,3,API log\n6,ChatGPT,1,2,API log\n", 3, "expected 6 comma-separated columns, found 5",
         "unparseable"),
        ("5,ChatGPT,1,2,3,API log\n6,ChatGPT,abc,2,3,API log\n", 3, "Request tokens is not a number: 'abc'",
         "not_a_number"),
        ("5,ChatGPT,1,2,3,API log\n\n6,ChatGPT,1,-2,3,API log\n", 4, "Response tokens must be a whole number >= 0",
         "bad_token_count"),
        ("5,ChatGPT,1.5,2,3,API log\n6,ChatGPT,1,2,3,API log\n", 2, "Request tokens must be a whole number >= 0",
         "bad_token_count"),
        ("5,ChatGPT,1,2,3,API log\n7,ChatGPT,1,2,3,API log\n6,GPT-4,1,2,3,API log\n", 4,
         "earlier than a previous row", None),
        ("nan,ChatGPT,1,2,3,API log\n6,ChatGPT,1,2,3,API log\n", 2, "Timestamp must be a finite number >= 0", "bad_time"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, rows, line, what, kind):
    """A malformed row: with strict, one line naming file:line and the problem; without, the row is
    dropped and counted by kind with that same line as the first example (rows out of order: always an error)."""
    path = write(tmp_path, HEADER6 + rows)
    with pytest.raises(TraceError) as err:
        load_trace(str(path), strict=True)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: ")
    assert what in msg
    assert "\n" not in msg
    if kind is None:
        with pytest.raises(TraceError, match=what):
            load_trace(str(path))
        return
    tr = load_trace(str(path))
    assert tr.meta["bad_rows"] == {kind: 1} and len(tr) == 1
    assert tr.meta["bad_rows_first"][kind] == msg
    assert tr.notice.startswith(f"1 bad rows dropped ({kind} 1; first: {path}:{line}: ")


def test_malformed_eight_column_row(tmp_path):
    """The 8-column format checks its column count too."""
    path = write(tmp_path, HEADER8 + "5.0,abc,3,GPT-4,1,2,3,Conversation log\n6.0,,3,GPT-4,1,2,3\n")
    with pytest.raises(TraceError, match=rf"^{path}:3: expected 8 comma-separated columns, found 7$"):
        load_trace(str(path), strict=True)
    assert load_trace(str(path)).meta["bad_rows"] == {"unparseable": 1}


def test_header_only_and_all_failed(tmp_path):
    """An empty trace and a trace of failed rows say why they have no request."""
    empty = write(tmp_path, HEADER6)
    with pytest.raises(TraceError, match=f"trace {re.escape(str(empty))} has no request rows"):  # (the file's path)
        load_trace(str(empty))
    with pytest.raises(TraceError, match=r"no usable request \(2 rows read, 0 filtered out, 2 failed"):
        load_trace(str(write(tmp_path, HEADER6 + "5,ChatGPT,0,0,0,API log\n6,GPT-4,0,0,0,API log\n", "f.csv")))


def test_failed_rows_with_prompt_dropped(tmp_path):
    """A row with request tokens but 0 response tokens is failed: dropped, not kept with 0 output."""
    tr = load_trace(str(write(tmp_path, HEADER6 + "5,ChatGPT,10,0,10,API log\n6,GPT-4,4,3,7,API log\n")))
    assert len(tr) == 1 and tr.num_failed_dropped == 1 and tr.meta["num_invalid_dropped"] == 0
    assert list(tr.prompt_tokens) == [4]


def test_zero_prompt_rows_dropped_and_counted(tmp_path):
    """A row with 0 request tokens but a response is invalid: dropped, counted in meta."""
    tr = load_trace(str(write(tmp_path, HEADER6 + "5,ChatGPT,0,3,3,API log\n6,GPT-4,4,3,7,API log\n")))
    assert len(tr) == 1 and tr.meta["num_invalid_dropped"] == 1 and tr.num_failed_dropped == 0


def test_burstgpt_falls_back_to_sample_with_notice(tmp_path, monkeypatch):
    """Without the full file in the cache, `burstgpt` is the bundled sample plus a notice."""
    monkeypatch.setenv("KVSIM_CACHE_DIR", str(tmp_path))
    tr = load_trace("burstgpt")
    assert len(tr) == 383 and tr.name == "burstgpt"
    assert "bundled 400-row" in tr.notice and "kvsim trace fetch burstgpt" in tr.notice
    assert str(tmp_path / "burstgpt" / "BurstGPT_1.csv") in tr.notice


def test_burstgpt_uses_cached_full_file(tmp_path, monkeypatch):
    """With <cache>/burstgpt/BurstGPT_1.csv present (env or cache_dir), `burstgpt` loads it."""
    (tmp_path / "burstgpt").mkdir()
    shutil.copy(SAMPLE_3, tmp_path / "burstgpt" / "BurstGPT_1.csv")
    tr = load_trace("burstgpt", cache_dir=tmp_path)
    assert len(tr) == 399 and tr.notice is None  # the 8-column slice stands in for the full file
    monkeypatch.setenv("KVSIM_CACHE_DIR", str(tmp_path))
    assert load_trace("burstgpt").source == str(tmp_path / "burstgpt" / "BurstGPT_1.csv")
