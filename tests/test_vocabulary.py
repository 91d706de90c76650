"""One vocabulary: durations with units, SLO flags with one meaning in every command."""

import json
import math

import pytest
from typer.testing import CliRunner

from kvsim.durations import parse_duration_s
from kvsim.errors import ConfigError
from kvsim.slo import SLO, fmt_duration, parse_slo, verdict


@pytest.mark.parametrize("text, seconds", [
    ("50ms", 0.05),  # 50 x 1e-3
    ("50 ms", 0.05),
    ("2s", 2.0),
    ("1.5min", 90.0),  # 1.5 x 60
    ("2m", 120.0),
    ("0.5h", 1800.0),  # 0.5 x 3600
    ("250us", 2.5e-4),  # 250 x 1e-6
    ("1e3ns", 1e-6),  # 1000 x 1e-9
    ("0.1", 0.1),  # bare number: seconds, as before
    ("3", 3.0),
    ("2MS", 0.002),  # case-insensitive
])
def test_durations_accept_units(text, seconds):
    """Durations take ns, us, ms, s, min, h; a bare number is seconds."""
    assert math.isclose(parse_duration_s(text, "--x"), seconds, rel_tol=1e-12)


@pytest.mark.parametrize("text", ["", "fast", "5 parsecs", "-1", "0", "0ms", "inf", "nan", "1e400", "ms", "2 s s"])
def test_durations_reject_bad_text(text):
    """Unknown units, negative, zero, infinite or non-numeric durations: one line naming the flag."""
    with pytest.raises(ConfigError) as err:
        parse_duration_s(text, "--slo-ttft")
    msg = str(err.value)
    assert msg.startswith("--slo-ttft must be a duration > 0 such as 50ms, 2s or 1.5min") and "\n" not in msg
    assert msg.endswith(f"got '{text}'")


def test_duration_zero_only_where_allowed():
    """A wait of 0 is valid where the option allows it (``allow_zero``), never below 0."""
    assert parse_duration_s("0s", "--wait-quiet", allow_zero=True) == 0.0
    with pytest.raises(ConfigError, match=r"--wait-quiet must be a duration >= 0"):
        parse_duration_s("-1s", "--wait-quiet", allow_zero=True)


def test_fmt_duration_uses_people_units():
    """Bounds print as people write them: 0.05 -> 50 ms, 2 -> 2 s, 121.0 -> 121 s."""
    assert [fmt_duration(x) for x in (0.05, 0.1, 2.0, 121.0)] == ["50 ms", "100 ms", "2 s", "121 s"]


def test_slo_checks_each_metric_at_its_percentile():
    """p99 TTFT 1.5 s <= 2 s met; p99 TPOT 60 ms > 50 ms missed; ITL not judged (no bound);
    a missing TPOT (every output one token) meets, a missing TTFT (nothing completed) misses."""
    slo = parse_slo(ttft="2s", tpot="50ms")
    assert slo == SLO(ttft_s=2.0, tpot_s=0.05)
    assert slo.checks({"ttft": 1.5, "tpot": 0.06, "itl": 9.0}) == [("ttft", 1.5, 2.0, True), ("tpot", 0.06, 0.05, False)]
    assert slo.checks({"ttft": None, "tpot": None}) == [("ttft", None, 2.0, False), ("tpot", None, 0.05, True)]
    assert slo.describe() == "p99 TTFT <= 2 s, TPOT <= 50 ms"
    assert parse_slo() is None  # no flag given: no SLO


def test_verdict_reads_the_summary_keys():
    """The verdict of a summary judges TTFT on ttft_s, TPOT on tpot_s and ITL on the pooled gaps
    (itl_s) at the SLO percentile: p90 ITL 30 ms <= 40 ms met, p90 TTFT 3 s > 2 s missed."""
    summary = {"ttft_s": {"p90": 3.0, "p99": 9.0}, "tpot_s": {"p90": 0.5}, "itl_s": {"p90": 0.03, "p99": 0.9}}
    v = verdict(parse_slo(ttft="2", itl="40ms", percentile="p90"), summary)
    assert v == {"percentile": "p90", "met": False, "checks": [
        {"metric": "ttft", "value_s": 3.0, "bound_s": 2.0, "met": False},
        {"metric": "itl", "value_s": 0.03, "bound_s": 0.04, "met": True}],
        "rejected": {"requests": 0, "allowed": 0.0, "met": True}}


def test_old_plan_slo_reads_with_new_names():
    """plan.json files of earlier versions (tbt_s + tbt_metric) read back with today's names."""
    assert SLO.model_validate({"ttft_s": 2, "tbt_s": 0.1, "percentile": "p99"}) == SLO(ttft_s=2, itl_s=0.1)
    assert SLO.model_validate({"ttft_s": 2, "tbt_s": 0.1, "tbt_metric": "tpot"}) == SLO(ttft_s=2, tpot_s=0.1)
    with pytest.raises(ValueError):
        SLO()  # no bound at all


def _app():
    import typer

    from kvsim.commands.plan import plan_cmd
    from kvsim.commands.simulate import simulate_cmd

    app = typer.Typer()
    app.command("simulate")(simulate_cmd)
    app.command("plan")(plan_cmd)
    return app


def _simulate(*args):
    r = CliRunner().invoke(_app(), ["simulate", "--trace", "synthetic-burstgpt", "-n", "30", "--rate", "2", "--json",
                                    *args])
    return r


def test_simulate_slo_flags_judge_the_summary():
    """simulate --slo-ttft 10min --slo-tpot 1h --slo-itl 1ms: goodput counts requests within the
    TTFT and TPOT bounds (all of them here), the SLO verdict judges p99 of each; ITL of a few
    ms cannot be <= 1 ms on an A100 (one decode step of Llama-8B is ~12 ms), so it is missed."""
    r = _simulate("--slo-ttft", "10min", "--slo-tpot", "1h", "--slo-itl", "1ms")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["slo_ttft_s"] == 600.0 and s["slo_tpot_s"] == 3600.0  # 10 x 60, 1 x 3600
    assert s["goodput_fraction"] == s["requests_completed"] / s["requests_total"]
    checks = {c["metric"]: c for c in s["slo"]["checks"]}
    assert checks["ttft"]["met"] and checks["tpot"]["met"] and not checks["itl"]["met"] and not s["slo"]["met"]
    assert checks["itl"]["value_s"] == s["itl_s"]["p99"] and checks["itl"]["bound_s"] == 0.001


def test_simulate_legacy_slo_tbt_keeps_its_meaning_with_a_warning():
    """simulate --slo-tbt X meant each request's mean (TPOT): same result as --slo-tpot X, plus a
    warning naming the new flag."""
    old = _simulate("--slo-tbt", "0.05")
    new = _simulate("--slo-tpot", "50ms")
    assert old.exit_code == 0 and new.exit_code == 0
    a, b = json.loads(old.stdout), json.loads(new.stdout)
    assert a["slo_tpot_s"] == b["slo_tpot_s"] == 0.05 and a["goodput_fraction"] == b["goodput_fraction"]
    assert "warning: --slo-tbt is deprecated; in `kvsim simulate` it means --slo-tpot 0.05" in old.stderr


def test_plan_legacy_slo_tbt_means_itl():
    """plan --slo-tbt X meant the pooled token gaps (ITL); with --tbt-metric tpot, TPOT."""
    from kvsim.commands.common import resolve_slo

    assert resolve_slo("plan", "2", None, None, "p99", "0.1") == SLO(ttft_s=2.0, itl_s=0.1)
    assert resolve_slo("plan", "2", None, None, "p99", "0.1", "tpot") == SLO(ttft_s=2.0, tpot_s=0.1)
    with pytest.raises(ConfigError, match="--tbt-metric was replaced by --slo-itl"):
        resolve_slo("plan", "2", None, "0.1", "p99", None, "tpot")


def test_slo_row_says_met_or_missed():
    """The SLO row of `kvsim simulate`: each bound with <= (met) or > (missed), bounds in the
    units people write (164.29 ms <= 500 ms met; 54.06 ms > 30 ms missed, so the SLO is missed)."""
    from kvsim.commands.simulate_render import slo_cell as _slo_cell

    v = {"met": False, "checks": [{"metric": "ttft", "value_s": 0.16429, "bound_s": 0.5, "met": True},
                                  {"metric": "itl", "value_s": 0.05406, "bound_s": 0.03, "met": False}]}
    assert _slo_cell(v) == "missed: TTFT 164.29 ms <= 500 ms, ITL 54.06 ms > 30 ms"
