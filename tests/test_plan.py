"""Capacity planning: rate search, GPU-count search, cost, caching and CLI errors (fake evaluator)."""

import math
import re

import numpy as np
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kvsim.errors import ConfigError, KvsimError, SpecError
from kvsim.plan.search import PlanRequest, expand_sweeps, load_plan, run_plan, save_plan
from kvsim.traces import load_trace
from kvsim.plan.schema import SLO, PointResult, Price, SearchOptions, Stats, TraceSpec, cost_usd_per_mtok, parse_slo
from kvsim.plan.ratesearch import search_max_rate

SLO_2_01 = SLO(ttft_s=2.0, itl_s=0.1)
SMALL_TRACE = TraceSpec(spec="synthetic-burstgpt", num_requests=40, seed=1)


def _point(rate, ok: bool, replicas=1, tok_s=None, num_requests=40) -> PointResult:
    lat = Stats(mean=0.5, p50=0.5, p90=0.8, p99=1.0) if ok else Stats(mean=5, p50=5, p90=8, p99=10)
    tbt = Stats(mean=0.02, p50=0.02, p90=0.03, p99=0.05)
    return PointResult(rate_per_s=rate, replicas=replicas, num_requests=num_requests, ttft_s=lat, itl_s=tbt, e2el_s=lat,
                       throughput_output_tok_s=tok_s if tok_s is not None else 100.0 * rate,
                       requests_completed=num_requests, requests_rejected=0)


class StepEvaluator:
    """Meets the SLO iff rate <= 5 * replicas * sqrt(tp) (kivi: x2); counts its calls."""

    def __init__(self):
        self.calls = 0

    def threshold(self, config) -> float:
        return 5.0 * config.replicas * math.sqrt(config.tp) * (2.0 if config.method.startswith("kivi") else 1.0)

    def __call__(self, config, trace, rate, sim_options):
        self.calls += 1
        return _point(rate, rate <= self.threshold(config) + 1e-12, config.replicas, num_requests=len(trace.arrival_s))


def _request(**kw) -> PlanRequest:
    base = dict(model="llama-3.1-8b", hws=["a100"], methods=["full", "kivi"], trace=SMALL_TRACE, slo=SLO_2_01,
                search=SearchOptions(rel_tol=0.02, start_rate_per_s=1.0))
    base.update(kw)
    return PlanRequest(**base)


def test_search_finds_step_threshold():
    """A step function of rate at 7.3 req/s is found from below within the relative tolerance."""
    res = search_max_rate(lambda r: (r <= 7.3, None), start_rate_per_s=1.0, rel_tol=0.02)
    assert 7.3 / 1.02 <= res.max_rate_per_s <= 7.3
    assert res.upper_rate_per_s > 7.3 and res.upper_rate_per_s / res.max_rate_per_s <= 1.02
    # bracket 1, 2, 4, 8 then log2(log 2 / log 1.02) ~ 5.1 -> 6 bisections
    assert len(res.probes) <= 4 + 6


def test_search_brackets_down_and_reports_zero():
    """Infeasible at every rate -> 0; a threshold below the start is bracketed downwards."""
    assert search_max_rate(lambda r: (False, None), start_rate_per_s=4.0).max_rate_per_s == 0.0
    res = search_max_rate(lambda r: (r <= 0.3, None), start_rate_per_s=4.0, rel_tol=0.05)
    assert 0.3 / 1.05 <= res.max_rate_per_s <= 0.3


def test_search_capped_at_max_rate():
    """Always feasible: stops at max_rate with capped=True."""
    res = search_max_rate(lambda r: (True, None), start_rate_per_s=1.0, max_rate_per_s=100.0)
    assert res.capped and res.max_rate_per_s == 64.0


@settings(max_examples=60, deadline=None)
@given(t1=st.floats(0.01, 500), factor=st.floats(1.0, 10.0), k1=st.integers(-3, 3), k2=st.integers(-3, 3))
def test_search_answer_is_monotone_in_threshold(t1, factor, k1, k2):
    """A higher true threshold never gets a lower answer (starts on the power-of-2 grid)."""
    t2 = t1 * factor
    a1 = search_max_rate(lambda r: (r <= t1, None), start_rate_per_s=2.0**k1).max_rate_per_s
    a2 = search_max_rate(lambda r: (r <= t2, None), start_rate_per_s=2.0**k2).max_rate_per_s
    assert a1 <= a2 * (1 + 1e-9)


def test_plan_finds_known_threshold_with_fake_evaluator():
    """run_plan reports each configuration's step threshold (full 5, kivi 10 req/s) within 2 %."""
    plan = run_plan(_request(), executor="serial", progress=False, evaluator=StepEvaluator())
    rates = {c.method_name: c.max_rate_per_s for c in plan.configs}
    assert 5.0 / 1.02 <= rates["full"] <= 5.0 and 10.0 / 1.02 <= rates["kivi"] <= 10.0
    # same price and 100 tok/s per req/s: kivi is cheaper, but its rate stands on a short trace (40 requests at
    # 10 req/s, E2E 0.5 s: 39 / 10 / 0.5 = 7.8 lifetimes < 10) where full's does (15.6): full ranks first
    by = {c.method_name: c for c in plan.configs}
    assert by["kivi"].transient and not by["full"].transient
    assert by["kivi"].cost_usd_per_mtok < by["full"].cost_usd_per_mtok
    assert plan.configs[plan.ranking[0]].method_name == "full"
    for c in plan.configs:
        assert c.best is not None and c.best.rate_per_s == c.max_rate_per_s
        # cost at the max rate: the workload's token rate there (max rate x the trace's mean output tokens), as a
        # target's cost is; not the run's measured tok/s, which includes its ramp and drain (audit)
        out = float(np.mean(load_trace(SMALL_TRACE.spec, num_requests=SMALL_TRACE.num_requests, seed=SMALL_TRACE.seed).output_tokens))
        assert c.cost_usd_per_mtok == pytest.approx(cost_usd_per_mtok(c.price, 1, out * c.max_rate_per_s))


def test_cache_hits_skip_work(tmp_path):
    """A rerun with the same cache dir calls the evaluator zero times and gives the same plan."""
    ev = StepEvaluator()
    first = run_plan(_request(), executor="serial", progress=False, evaluator=ev, cache_dir=tmp_path)
    calls = ev.calls
    assert calls == sum(c.evaluations for c in first.configs) > 0
    second = run_plan(_request(), executor="serial", progress=False, evaluator=ev, cache_dir=tmp_path)
    assert ev.calls == calls  # no new evaluation
    assert sum(c.cache_hits for c in second.configs) == calls
    assert [c.max_rate_per_s for c in second.configs] == [c.max_rate_per_s for c in first.configs]
    # a changed input (SLO percentile changes no simulation; the trace seed does) misses the cache
    run_plan(_request(trace=SMALL_TRACE.model_copy(update={"seed": 2})), executor="serial", progress=False,
             evaluator=ev, cache_dir=tmp_path)
    assert ev.calls > calls


def test_no_cache_recomputes():
    """Without a cache dir every run evaluates again."""
    ev = StepEvaluator()
    run_plan(_request(methods=["full"]), executor="serial", progress=False, evaluator=ev)
    n = ev.calls
    run_plan(_request(methods=["full"]), executor="serial", progress=False, evaluator=ev)
    assert ev.calls == 2 * n


def test_target_rate_finds_fewest_gpus():
    """Target 20 req/s: TP1 needs 4 replicas (5 req/s each) = 4 GPUs; TP2 needs 3 x 2 = 6; TP4 2 x 4 = 8."""
    plan = run_plan(_request(methods=["full"], target_rate_per_s=20.0, tp_choices=[1, 2, 4]), executor="serial",
                    progress=False, evaluator=StepEvaluator())
    by_tp = {c.config.tp: c.target for c in plan.configs}
    # 5*sqrt(2) = 7.07 per TP2 replica -> ceil(20/7.07) = 3; 5*2 = 10 per TP4 replica -> 2
    assert {tp: (t.replicas, t.gpus) for tp, t in by_tp.items()} == {1: (4, 4), 2: (3, 6), 4: (2, 8)}
    best = plan.configs[plan.ranking[0]]
    assert best.config.tp == 1 and best.target.gpus == 4


def test_duplicate_settings_run_once_and_inapplicable_methods_report_why():
    """`kivi` and `kivi:bits=2` (its default) are one configuration; `mla` on a GQA model is a row with
    its reason, ranked last, not an abort."""
    plan = run_plan(_request(methods=["kivi", "kivi:bits=2", "mla"]), executor="serial", progress=False,
                    evaluator=StepEvaluator())
    assert [c.method_label for c in plan.configs] == ["kivi", "mla"]
    mla = plan.configs[1]
    assert mla.error is not None and "no MLA latent" in mla.error and plan.ranking[-1] == 1


def test_cost_per_million_tokens():
    """$1.59/h x 2 GPUs at 1,000 tok/s: 3.18 / 3.6e6 * 1e6 = 0.8833 $/M tokens."""
    price = Price(usd_per_hour=1.59, source="s", date="d")
    assert cost_usd_per_mtok(price, 2, 1000.0) == pytest.approx(3.18 / 3.6)
    assert cost_usd_per_mtok(None, 2, 1000.0) is None and cost_usd_per_mtok(price, 1, 0.0) is None


def test_expand_sweeps_is_a_grid():
    """--sweep kivi.bits=2,4 --sweep kivi.group=32,64 adds 4 kivi settings."""
    out = expand_sweeps(["full"], ["kivi.bits=2,4", "kivi.group=32,64"])
    assert out == ["full", "kivi:bits=2,group=32", "kivi:bits=2,group=64", "kivi:bits=4,group=32", "kivi:bits=4,group=64"]
    with pytest.raises(ConfigError, match="METHOD.PARAM"):
        expand_sweeps([], ["kivi=2"])


@pytest.mark.parametrize("ttft, itl", [("-1", "0.1"), ("0", "0.1"), ("fast", "0.1"), ("2", "nan"), ("2", "-0.5"),
                                       ("2", "5 parsecs"), ("2ms", "inf")])
def test_parse_slo_rejects_bad_values(ttft, itl):
    """Negative, zero, infinite or non-numeric SLOs, or unknown units, are one-line ConfigErrors."""
    with pytest.raises(ConfigError) as e:
        parse_slo(ttft=ttft, itl=itl)
    assert "\n" not in str(e.value) and "must be a duration > 0 such as 50ms, 2s or 1.5min" in str(e.value)


def _cli() -> typer.Typer:
    from kvsim.commands.plan import plan_cmd
    from kvsim.commands.report import report_cmd

    app = typer.Typer()
    app.command("plan")(plan_cmd)
    app.command("report")(report_cmd)
    return app


@pytest.mark.parametrize(
    "args, exc, needle",
    [
        (["--slo-ttft", "-2"], ConfigError, "--slo-ttft must be a duration > 0 such as 50ms, 2s or 1.5min (a bare number is seconds), got '-2'"),
        (["--slo-itl", "0"], ConfigError, "--slo-itl must be a duration > 0 such as 50ms, 2s or 1.5min (a bare number is seconds), got '0'"),
        (["--slo-tpot", "0ms"], ConfigError, "--slo-tpot must be a duration > 0 such as 50ms, 2s or 1.5min (a bare number is seconds), got '0ms'"),
        (["--slo-ttft", "soon"], ConfigError, "--slo-ttft must be a duration > 0 such as 50ms, 2s or 1.5min (a bare number is seconds), got 'soon'"),
        (["--slo-tbt", "0.1", "--slo-itl", "0.2"], ConfigError, "--slo-tbt and --slo-itl give the same bound"),
        (["--percentile", "p95"], ConfigError, "--percentile must be one of p50, p90, p99"),
        (["--hw", "a100,a1000"], SpecError, "unknown hardware 'a1000'"),
        (["--target-rate", "-3"], ConfigError, "--target-rate must be a number > 0"),
    ],
)
def test_plan_cli_bad_input_is_one_line_error(args, exc, needle, tmp_path):
    """Bad SLO or unknown hardware: a one-line kvsim error (the root CLI prints `error: ...`, exit 1)."""
    r = CliRunner().invoke(_cli(), ["plan", "--no-cache", "--no-progress", "--num-requests", "20", *args])
    assert isinstance(r.exception, exc), r.output
    assert isinstance(r.exception, KvsimError) and r.exception.exit_code == 1
    assert needle in str(r.exception) and "\n" not in str(r.exception)


def test_saved_plan_reloads_and_rebuilds_report(tmp_path):
    """--out results reload with the same ranking; `kvsim report DIR` rewrites report.html."""
    plan = run_plan(_request(), executor="serial", progress=False, evaluator=StepEvaluator())
    save_plan(plan, tmp_path / "res")
    again = load_plan(tmp_path / "res")
    assert again.ranking == plan.ranking and [c.label for c in again.configs] == [c.label for c in plan.configs]
    r = CliRunner().invoke(_cli(), ["report", str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "res" / "report.html").read_text()
    from kvsim.plan.report import PLOTLY_JS

    # plotly.js from the plan folder (no CDN): works offline
    assert "Plotly.newPlot" in html and re.findall(r'<script[^>]*\ssrc="([^"]+)"', html) == [PLOTLY_JS]
    assert (tmp_path / "res" / PLOTLY_JS).is_file()
    with pytest.raises(ConfigError, match="no plan.json"):
        load_plan(tmp_path)
    # a configuration file gone: the report would leave that row out (it was ranked first in the audit), silently
    sorted((tmp_path / "res" / "configs").glob("*.json"))[0].unlink()
    with pytest.raises(ConfigError, match=f"plan.json ranks {len(plan.configs)} configurations but configs/ holds "
                                          f"{len(plan.configs) - 1} files"):
        load_plan(tmp_path / "res")


def _kvsim(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args, needle", [
    (["--slo-ttft", "0"], "error: --slo-ttft must be a duration > 0 such as 50ms, 2s or 1.5min (a bare number is seconds), got '0'"),
    (["--slo-itl", "-1"], "error: --slo-itl must be a duration > 0 such as 50ms, 2s or 1.5min (a bare number is seconds), got '-1'"),
    (["--slo-tpot", "fast"], "error: --slo-tpot must be a duration > 0 such as 50ms, 2s or 1.5min (a bare number is seconds), got 'fast'"),
    (["--hw", "a100,h900"], "error: unknown hardware 'h900'"),
])
def test_kvsim_plan_bad_input_exits_1_with_one_line(args, needle, tmp_path):
    """`python -m kvsim plan` with a bad SLO or unknown hardware: exit 1, one `error:` line, no traceback."""
    r = _kvsim("plan", "--no-cache", *args, cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith(needle)


def test_kvsim_plan_json_and_out_dir(tmp_path):
    """A small real plan through the CLI: --json has the ranked configs; --out has plan.json, configs and report."""
    import json

    r = _kvsim("plan", "--hw", "a100", "--method", "full,kivi:bits=4", "--num-requests", "40", "--rel-tol", "0.2",
               "--cache-dir", str(tmp_path / "cache"), "--json", "--out", str(tmp_path / "res"), "--jobs", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [c["method_label"] for c in plan["configs"]] == ["full", "kivi(bits=4)"]
    assert sorted(plan["ranking"]) == [0, 1] and all(c["max_rate_per_s"] > 0 for c in plan["configs"])
    assert (tmp_path / "res" / "plan.json").is_file() and (tmp_path / "res" / "report.html").is_file()
    assert len(list((tmp_path / "res" / "configs").glob("*.json"))) == 2


def test_plan_json_carries_provenance_like_simulate(tmp_path):
    """plan.json holds what summary.json holds: every engine setting (defaults filled), and per
    configuration the method with every parameter, the deployment and the sha256 of each spec
    as loaded, identical to `kvsim simulate`'s provenance of the same configuration."""
    import json

    from kvsim.costmodel.deployment import build_deployment
    from kvsim.methods import make_method
    from kvsim.sim.provenance import provenance
    from kvsim.traces import load_trace

    req = _request(sim_options={"max_num_seqs": 64})
    plan = run_plan(req, executor="serial", progress=False, evaluator=StepEvaluator())
    save_plan(plan, tmp_path / "res")
    saved = json.loads((tmp_path / "res" / "plan.json").read_text())
    assert saved["engine"]["max_num_seqs"] == 64  # given
    assert saved["engine"]["max_num_batched_tokens"] == 8192 and saved["engine"]["chunked_prefill"] is True  # defaults
    assert [p["label"] for p in saved["provenance"]] == [c.label for c in plan.configs]
    kivi = next(p for p in saved["provenance"] if p["method"]["name"] == "kivi")
    assert kivi["method"]["params"]["bits"] == 2 and kivi["method"]["params"]["group"] == 32  # KIVI-2 defaults
    dep = build_deployment("a100", "llama-3.1-8b")
    sim = provenance(dep, make_method("kivi", dep), load_trace(SMALL_TRACE.spec, num_requests=SMALL_TRACE.num_requests,
                                                                seed=SMALL_TRACE.seed))
    assert kivi["spec_sha256"] == sim["spec_sha256"] and kivi["deployment"] == sim["deployment"]
    assert kivi["kvsim_version"] == saved["kvsim_version"] and kivi["calibration_sha256"] is None
    assert kivi["max_rate_per_s"] == next(c.max_rate_per_s for c in plan.configs if c.method_name == "kivi") > 0
    assert saved["trace"]["seed"] == SMALL_TRACE.seed
    assert load_plan(tmp_path / "res").provenance == plan.provenance  # reads back


def test_unmet_target_has_no_gpus_or_cost_in_its_row():
    """Target 1000 req/s at 5 req/s per TP1 replica needs 200 replicas, beyond the cap: the row says
    "not met", with no GPU count, demand or cost (the cost of one replica at its own max rate is not
    the cost at the target); a met target keeps its numbers."""
    from kvsim.plan.report import recommendation_rows

    plan = run_plan(_request(methods=["full"], target_rate_per_s=1000.0, tp_choices=[1]), executor="serial", progress=False,
                    evaluator=StepEvaluator())
    (c,) = plan.configs
    assert c.target.replicas is None and c.cost_usd_per_mtok is None
    (row,) = recommendation_rows(plan)
    assert row["gpus"].startswith("not met (> ") and row["usd_mtok"] == "-" and row["tok_s"] == "-"
    assert "target not met" in row["note"]
    # the row shows the check at the most replicas tried and what it missed (its latencies passed the SLO: they were
    # the single replica's at its own max rate; user audit). StepEvaluator's miss: p99 TTFT 10 s > 2 s
    assert c.target.point is not None and c.target.point.replicas == max(c.target.tried)
    assert f"with <= {max(c.target.tried)} replicas: p99 TTFT 10 s > 2 s there" in row["note"] and row["ttft"] == "10.000"
    met = run_plan(_request(methods=["full"], target_rate_per_s=20.0, tp_choices=[1]), executor="serial", progress=False,
                   evaluator=StepEvaluator())
    (row,) = recommendation_rows(met)
    assert row["gpus"] == "4 (4x TP1)" and row["usd_mtok"] != "-"


def test_plan_cli_exits_1_when_no_configuration_meets_the_target(capsys, monkeypatch):
    """`kvsim plan --target-rate` that no configuration sustains is exit 1 with one error line
    after the table (docs/plan.md), like an SLO met at no rate; a capped search says the trace is
    too short."""
    import sys

    from kvsim.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["kvsim", "plan", "--executor", "serial", "--no-progress", "--no-cache",
                                          "-n", "12", *args])
        with pytest.raises(SystemExit) as e:
            main()
        return e.value.code, capsys.readouterr().err

    code, err = run("--target-rate", "1e6", "--slo-ttft", "0.5s", "--tp-choices", "1", "--max-replicas", "2")
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: no configuration sustains the target")
    code, err = run("--tp", "1")
    assert code in (0, None) and "no sustained rate was measured" in err and "raise --num-requests" in err


def test_short_trace_is_flagged_transient():
    """At 5 req/s (StepEvaluator, TP1) a 40-request trace arrives within (40 - 1) / 5 = 7.8 s; its
    requests' mean E2E latency is 0.5 s (_point): 7.8 / 0.5 = 15.6 lifetimes >= 10, not transient.
    With a mean E2E of 5 s (a slower evaluator) it lasts 1.56 lifetimes: transient, and the row's
    note says so."""
    from kvsim.plan.report import recommendation_rows
    from kvsim.plan.schema import STEADY_SPAN_OVER_E2EL

    plan = run_plan(_request(methods=["full"], tp_choices=[1]), executor="serial", progress=False,
                    evaluator=StepEvaluator())
    (c,) = plan.configs
    assert c.max_rate_per_s == pytest.approx(5.0, rel=0.02)
    assert c.arrival_span_s == pytest.approx(39 / c.max_rate_per_s)
    assert c.span_over_e2el == pytest.approx(39 / c.max_rate_per_s / 0.5) and not c.transient

    class SlowE2E(StepEvaluator):
        def __call__(self, config, trace, rate, sim_options):
            p = super().__call__(config, trace, rate, sim_options)
            return p.model_copy(update={"e2el_s": Stats(mean=5.0, p50=5.0, p90=8.0, p99=10.0)})

    slow = run_plan(_request(methods=["full"], tp_choices=[1]), executor="serial", progress=False, evaluator=SlowE2E())
    (c,) = slow.configs
    assert c.span_over_e2el == pytest.approx(39 / c.max_rate_per_s / 5.0)
    assert c.span_over_e2el < STEADY_SPAN_OVER_E2EL and c.transient
    (row,) = recommendation_rows(slow)
    assert row["note"].startswith("short trace (1.")


def test_target_check_requests_hand_example():
    """500 per replica, 9 replicas, 400 req/s, E2EL 4 s: max(4,500, ceil(1.25 x 10 x 4 x 400) + 1) = 20,001;
    capped at MAX_TARGET_CHECK_REQUESTS; never fewer than the search's requests per replica x replicas."""
    from kvsim.plan.result import MAX_TARGET_CHECK_REQUESTS, target_check_requests

    assert target_check_requests(500, 9, 400.0, 4.0) == 20_001
    assert target_check_requests(500, 9, 4.0, 4.0) == 4_500
    assert target_check_requests(500, 9, 1e9, 4.0) == MAX_TARGET_CHECK_REQUESTS
    assert target_check_requests(500, 2, 10.0, None) == 1_000


def test_target_met_only_by_a_burst_is_a_lower_bound_with_no_cost(capsys, monkeypatch):
    """A target check shorter than STEADY_SPAN_OVER_E2EL request lifetimes (here E2EL 1,000 s: even the
    capped 50,000 requests arrive within 2.5 lifetimes at 20 req/s) shows '>= N GPUs', no cost, a note,
    and the CLI exits 1 (the audit's `--target-rate 1e9 -n 100` printed 4 GPUs and exited 0)."""
    from kvsim.plan.report import recommendation_rows

    class SlowEvaluator(StepEvaluator):
        def __call__(self, config, trace, rate, sim_options):
            p = super().__call__(config, trace, rate, sim_options)
            return p.model_copy(update={"e2el_s": Stats(mean=1000.0, p50=1000.0, p90=1000.0, p99=1000.0)})

    plan = run_plan(_request(methods=["full"], target_rate_per_s=20.0, tp_choices=[1]), executor="serial", progress=False,
                    evaluator=SlowEvaluator())
    (c,) = plan.configs
    assert c.target.replicas == 4 and c.target.transient and not c.target.verified
    assert c.target.span_over_e2el == pytest.approx((50_000 - 1) / 20.0 / 1000.0)
    assert c.cost_usd_per_mtok is None
    (row,) = recommendation_rows(plan)
    assert row["gpus"] == ">= 4 (4x TP1)" and row["usd_mtok"] == "-" and "a burst, GPUs a lower bound" in row["note"]


class CappedKivi(StepEvaluator):
    """full meets the SLO up to 2 req/s (40 requests, E2E 0.5 s: 39 / 2 / 0.5 = 39 lifetimes, a rate that stands);
    kivi meets it at every rate (the search stops at its top rate: one burst, no rate measured)."""

    def threshold(self, config) -> float:
        return 1e12 if config.method.startswith("kivi") else 2.0


def test_a_capped_row_has_no_cost_ranks_last_and_json_says_why(tmp_path):
    """A user audit: a row still feasible at the search's top rate (8,192 req/s: 40 requests land in 5 ms) got a cost
    from that rate ($0.001/M, 135x too low) and ranked first. Now: no cost, ranked after the rows whose rate
    stands, and the JSON carries the caveats (``derived``) that the table prints; they survive save/load."""
    plan = run_plan(_request(), executor="serial", progress=False, evaluator=CappedKivi())
    by = {c.method_name: c for c in plan.configs}
    assert by["kivi"].capped and by["kivi"].cost_usd_per_mtok is None
    assert not by["full"].transient and by["full"].cost_usd_per_mtok is not None
    assert [plan.configs[i].method_name for i in plan.ranking] == ["full", "kivi"]
    from kvsim.plan.search import plan_json

    d = {c["method_name"]: c["derived"] for c in plan_json(plan)["configs"]}
    # host_share: the a100 node's 8 GPUs at TP 1 -> each replica is priced with 1/8 of the host
    assert d["full"] == {"transient": False, "span_over_e2el": pytest.approx(39.0), "rate_measured": True,
                         "host_share": 0.125}
    assert d["kivi"]["rate_measured"] is False and d["kivi"]["transient"]
    save_plan(plan, tmp_path / "p")
    back = load_plan(tmp_path / "p")
    assert [back.configs[i].method_name for i in back.ranking] == ["full", "kivi"]


@pytest.mark.parametrize("args, needle", [
    (["--target-rate", "5", "--tp", "2"], "--tp and --replicas fix one layout"),
    (["--target-rate", "5", "--replicas", "3"], "--tp and --replicas fix one layout"),
    (["--tp-choices", "2,4"], "--tp-choices and --max-replicas bound the --target-rate search"),
    (["--max-replicas", "3"], "--tp-choices and --max-replicas bound the --target-rate search"),
])
def test_plan_options_of_the_other_mode_are_errors(args, needle):
    """Each was ignored, silently, in the mode it does not belong to (user audit)."""
    r = CliRunner().invoke(_cli(), ["plan", "--no-cache", "--no-progress", "--num-requests", "20", *args])
    assert isinstance(r.exception, ConfigError) and needle in str(r.exception)


def test_tp_choices_given_twice_are_tried_once():
    from kvsim.plan.search import whole_numbers  # (the CLI's and kvsim.plan's parser of --tp-choices)

    assert whole_numbers("1,1,2", "--tp-choices") == [1, 2]  # ('1,1' printed two identical rows and notes)
