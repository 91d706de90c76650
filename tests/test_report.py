"""The HTML reports: plotly.js once per folder (or inline), pages under 1 MB, labels and SLO and
capacity lines, a readable plan page with many configurations, published-only Pareto, and the
multi-method simulation page."""

import re
import sys

import numpy as np
import pytest

from kvsim.plan.schema import (
    CDF_LEVELS, SLO, ConfigResult, ConfigSpec, PlanResult, PointResult, Price, Stats, TimelineDigest, TraceSpec,
)
from kvsim.fileio import OutputError
from kvsim.plan.figures import pareto_figure, pareto_front
from kvsim.plan.report import (
    PLOTLY_JS, plan_report_html, recommendation_rows, simulation_html, single_run_html, write_page, write_plan_report,
)

N_PLAN_FIGURES = 5  # latency-throughput, CDFs, memory, batch, Pareto


def sample_point(rate: float, with_detail: bool = True, host: bool = True) -> PointResult:
    """A plausible digest: latency grows with rate, KV memory and batch vary over time."""
    rng = np.random.default_rng(int(rate * 1000))
    ttft = np.sort(rng.gamma(2.0, 0.05 * (1 + rate), 500))
    tbt = np.sort(rng.gamma(4.0, 0.004 * (1 + rate / 4), 500))
    tpot = np.sort(rng.gamma(6.0, 0.003 * (1 + rate / 4), 500))
    t = np.linspace(0, 120, 400)  # as many points as a digest keeps (TIMELINE_POINTS)

    def stats(x):
        return Stats(mean=float(x.mean()), p50=float(np.quantile(x, .5)), p90=float(np.quantile(x, .9)),
                     p99=float(np.quantile(x, .99)))

    detail = {}
    if with_detail:
        detail = dict(
            ttft_quantiles_s=np.quantile(ttft, CDF_LEVELS).tolist(), itl_quantiles_s=np.quantile(tbt, CDF_LEVELS).tolist(),
            tpot_quantiles_s=np.quantile(tpot, CDF_LEVELS).tolist(),
            timeline=TimelineDigest(t_s=t.tolist(), gpu_kv_bytes=(2e9 * rate * np.abs(np.sin(t / 15))).tolist(),
                              host_kv_bytes=(1e9 * np.abs(np.cos(t / 20)) * host).tolist(),
                              batch_size=np.round(8 * rate * np.abs(np.sin(t / 9))).tolist(),
                              queue_len=np.round(3 * np.abs(np.sin(t / 4))).tolist()))
    return PointResult(rate_per_s=rate, num_requests=500, ttft_s=stats(ttft), itl_s=stats(tbt), tpot_s=stats(tpot),
                       e2el_s=stats(ttft * 10), throughput_output_tok_s=250.0 * rate, requests_completed=500,
                       requests_rejected=0, peak_kv_host_bytes=1e9 * host, kv_gpu_capacity_bytes=30e9,
                       kv_host_capacity_bytes=100e9 * host, **detail)


METHODS = (("full", 131072, 88.7, 3.0), ("quest", 140000, 82.1, 4.0), ("kivi", 36000, None, 6.0))


def sample_plan(hws=("a100-80g", "l20"), methods=METHODS, host: bool = False) -> PlanResult:
    """2 hardware x 3 methods; kivi has a published score only for another model (it must not be used)."""
    slo = SLO(ttft_s=2.0, itl_s=0.1)
    configs = []
    for hw, price in zip(hws, (1.59, 0.8, 2.5, 1.2)):
        for method, kvb, acc, best in methods:
            scale = 1.0 if hw == "a100-80g" else 0.5
            rates = [r * scale for r in (1, 2, 4, best, best * 1.05)]
            r_best = best * scale
            accuracy = [{"benchmark": "RULER-avg", "model": "Llama-3.1-8B-Instruct" if acc else "MegaBeam-Mistral-7B-512K",
                         "score": acc or 99.0, "source": "test table"}]
            configs.append(ConfigResult(
                config=ConfigSpec(hw=hw, model="llama-3.1-8b", method=method), label=f"{hw} · {method}", hw_name=hw,
                gpu_name=hw.upper(), method_name=method, method_label=method, gpus=1,
                price=Price(usd_per_hour=price, source="test price", date="2026-01-01"), slo=slo,
                max_rate_per_s=r_best, probes=[sample_point(r, False) for r in rates], best=sample_point(r_best, host=host),
                cost_usd_per_mtok=price / (250 * r_best * 3600) * 1e6, kv_bytes_per_token_gpu=kvb, accuracy=accuracy))
    order = sorted(range(len(configs)), key=lambda i: configs[i].cost_usd_per_mtok)
    return PlanResult(kvsim_version="test", model="llama-3.1-8b", trace=TraceSpec(), trace_name="synthetic-burstgpt",
                      slo=slo, configs=configs, ranking=order)




def many_methods(n: int = 16):
    return tuple((f"m{i}", 36000 + 6000 * i, 80.0 + i / 2 if i % 3 == 0 else None, 1.0 + i / 4) for i in range(n))


def _figs(page: str) -> list[dict]:
    """The figures of a page: each ``Plotly.newPlot(id, data, layout, config)`` call, data and layout parsed."""
    import json

    out = []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"', page, re.S):
        out.append({"data": json.loads(m.group(1)), "layout": json.loads(m.group(2))})
    return out


# ---- plotly.js once per folder; page size -------------------------------------------------


def test_plan_page_loads_plotly_from_its_folder_and_is_small():
    """By default the page loads plotly-<version>.min.js beside it (one <script src>), holds no bundle, and is < 1 MB."""
    page = plan_report_html(sample_plan())
    assert re.findall(r'<script[^>]*\ssrc="([^"]+)"', page) == [PLOTLY_JS]
    assert re.fullmatch(r"plotly-\d+\.\d+\.\d+\.min\.js", PLOTLY_JS)
    assert not re.search(r"plotly\.js v\d", page) and not re.search(r"<link[^>]*stylesheet", page)
    assert page.count("Plotly.newPlot(") == N_PLAN_FIGURES
    assert len(page.encode()) < 1_000_000


def test_self_contained_page_inlines_plotly_once():
    """--self-contained: plotly.js inline exactly once, no external script, one newPlot per figure."""
    page = plan_report_html(sample_plan(), self_contained=True)
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert len(re.findall(r"plotly\.js v\d", page)) == 1 and len(page) > 3_000_000
    assert page.count("Plotly.newPlot(") == N_PLAN_FIGURES


def test_sixteen_methods_page_is_small_and_readable():
    """16 methods x 2 GPUs: page < 1 MB; the latency chart draws only the top ranked and best per GPU."""
    plan = sample_plan(methods=many_methods())
    page = plan_report_html(plan)
    assert len(page.encode()) < 1_000_000, len(page)
    lat = _figs(page)[0]["data"]
    curves = [t for t in lat if t.get("mode") == "lines+markers" and t.get("showlegend") is not False]
    assert len(curves) == 32
    drawn = {t["name"] for t in curves if t.get("visible", True) is True}
    ranked = [plan.configs[i].label for i in plan.ranking]
    assert set(ranked[:4]) <= drawn and len(drawn) <= 6  # top 4 + the best of each GPU
    assert {t["visible"] for t in curves if t["name"] not in drawn} == {"legendonly"}
    assert "6 of 32 drawn" in page or f"{len(drawn)} of 32 drawn" in page


def test_write_page_writes_plotly_beside_and_never_overwrites_a_foreign_file(tmp_path):
    """write_page puts plotly.js next to the page once; a different file of that name stops it, untouched."""
    path = write_plan_report(sample_plan(), tmp_path / "a" / "report.html")
    js = path.parent / PLOTLY_JS
    assert js.stat().st_size > 3_000_000 and path.stat().st_size < 1_000_000
    mtime = js.stat().st_mtime_ns
    write_page(path.parent / "other.html", "<html></html>")
    assert js.stat().st_mtime_ns == mtime  # reused, not rewritten
    mine = tmp_path / "b" / PLOTLY_JS
    mine.parent.mkdir()
    mine.write_text("my own script")
    with pytest.raises(OutputError, match="--self-contained"):
        write_page(tmp_path / "b" / "r.html", "<html></html>")
    assert mine.read_text() == "my own script" and not (tmp_path / "b" / "r.html").exists()
    write_page(tmp_path / "b" / "r.html", "<html></html>", self_contained=True)
    assert mine.read_text() == "my own script"


def test_recommendation_table_follows_ranking():
    """Rows come in ranking order with cost and published accuracy; prices cite their source."""
    plan = sample_plan()
    rows = recommendation_rows(plan)
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 7)]
    assert [r["method"] for r in rows] == [plan.configs[i].method_label for i in plan.ranking]
    first = plan.configs[plan.ranking[0]]
    assert rows[0]["usd_mtok"] == f"{first.cost_usd_per_mtok:.3f}"
    page = plan_report_html(plan)
    assert "test price (2026-01-01)" in page and "88.7" in page


# ---- labels, SLO and capacity lines ----------------------------------------------------------


def test_cdf_axes_say_what_they_count_and_show_the_slos():
    """TTFT/TPOT CDFs count requests, the ITL CDF counts token gaps; the TTFT and ITL SLOs are
    vertical lines on their own panels, with the percentile judged as a horizontal line."""
    page = plan_report_html(sample_plan())
    cdf = _figs(page)[1]["layout"]
    titles = [cdf[k]["title"]["text"] for k in ("yaxis", "yaxis2", "yaxis3")]
    assert titles == ["fraction of requests", "fraction of requests", "fraction of token gaps"]
    subplot = [a["text"] for a in cdf["annotations"]]
    assert subplot[0].startswith("TTFT") and subplot[1].startswith("TPOT") and subplot[2].startswith("ITL")
    vlines = {(sh["xref"], sh["x0"]) for sh in cdf["shapes"] if sh["x0"] == sh["x1"]}
    assert vlines == {("x", 2.0), ("x3", 0.1)}  # TTFT 2 s on panel 1, ITL 0.1 s on panel 3 (not TPOT)
    assert {sh["y0"] for sh in cdf["shapes"] if sh["y0"] == sh["y1"]} == {0.99}
    tpot = plan_report_html(sample_plan().model_copy(update={"slo": SLO(ttft_s=2.0, tpot_s=0.1)}))
    vlines = {(sh["xref"], sh["x0"]) for sh in _figs(tpot)[1]["layout"]["shapes"] if sh["x0"] == sh["x1"]}
    assert vlines == {("x", 2.0), ("x2", 0.1)}  # --slo-tpot judges the TPOT panel


def test_latency_chart_has_slo_lines():
    """The latency-vs-throughput chart has one panel per bounded metric (TTFT, ITL by default),
    each SLO a horizontal line; TPOT and ITL both bounded: three panels in that order."""
    lay = _figs(plan_report_html(sample_plan()))[0]["layout"]
    assert sorted((sh["yref"], sh["y0"]) for sh in lay["shapes"]) == [("y", 2.0), ("y2", 0.1)]
    both = sample_plan().model_copy(update={"slo": SLO(ttft_s=2.0, tpot_s=0.05, itl_s=0.2, percentile="p90")})
    lay = _figs(plan_report_html(both))[0]["layout"]
    assert [a["text"] for a in lay["annotations"]] == ["p90 TTFT", "p90 TPOT", "p90 ITL"]
    assert sorted((sh["yref"], sh["y0"]) for sh in lay["shapes"]) == [("y", 2.0), ("y2", 0.05), ("y3", 0.2)]


def test_memory_chart_has_capacity_lines_and_host_panel_only_when_used():
    """Each run's GPU KV capacity is a dotted line at capacity x replicas; the host panel shows only with host KV."""
    page = plan_report_html(sample_plan())  # no host memory used
    mem = _figs(page)[2]
    assert "yaxis2" not in mem["layout"]  # one panel
    caps = [t for t in mem["data"] if t["name"].endswith(" capacity")]
    assert len(caps) == 6 and {tuple(t["y"]) for t in caps} == {(30.0, 30.0)} and caps[0]["line"]["dash"] == "dot"
    host = _figs(plan_report_html(sample_plan(host=True)))[2]
    assert host["layout"]["yaxis2"]["title"]["text"].startswith("GB")
    assert {tuple(t["y"]) for t in host["data"] if t["name"].endswith(" capacity") and t["xaxis"] == "x2"} == {(100.0, 100.0)}


def test_host_panel_draws_only_the_methods_that_use_host_memory():
    """Host KV panel: only runs that hold KV on the host; on the plan page the best such
    configuration is drawn even when it is not among the top ranked."""
    runs = [("gpu-only", sample_point(1.0, host=False)), ("offload", sample_point(2.0, host=True))]
    mem = _figs(simulation_html(runs, "two"))[1]
    assert {t["name"] for t in mem["data"] if t["xaxis"] == "x2"} == {"offload", "offload capacity"}
    plan = sample_plan()
    last = plan.ranking[-1]
    configs = list(plan.configs)
    configs[last] = configs[last].model_copy(update={"best": sample_point(configs[last].max_rate_per_s, host=True)})
    mem = _figs(plan_report_html(plan.model_copy(update={"configs": configs})))[2]
    host = [t for t in mem["data"] if t["xaxis"] == "x2" and t["name"] == configs[last].label]
    assert len(host) == 1 and host[0].get("visible", True) is True
    assert len([t for t in mem["data"] if t["xaxis"] == "x2"]) == 2  # its curve and its capacity line


def test_plan_timelines_line_up_runs_at_different_rates():
    """Plan timelines plot time x rate (requests arrived), so runs at different rates share an axis."""
    plan = sample_plan()
    mem = _figs(plan_report_html(plan))[2]["data"]
    for c in plan.configs:
        trace = next(t for t in mem if t["name"] == c.label)
        assert trace["x"][-1] == pytest.approx(120 * c.best.rate_per_s, rel=1e-3)
        assert trace["x"][1] == pytest.approx(c.best.timeline.t_s[1] * c.best.rate_per_s, rel=1e-3)


# ---- Pareto ------------------------------------------------------------------------------------


def test_pareto_uses_only_accuracy_published_for_the_model():
    """Quality points only where a score was published for this model (another model's is a gap)."""
    fig = pareto_figure(sample_plan().configs, "llama-3.1-8b")
    pts = [t for t in fig.data if t.xaxis == "x2" and t.mode == "markers"]
    gaps = [t for t in fig.data if t.xaxis == "x3"]
    assert len(pts) == 4 and {t.y[0] for t in pts} == {88.7, 82.1}
    assert len(gaps) == 2 and {t.name for t in gaps} == {"a100-80g · kivi", "l20 · kivi"}
    assert all(t.y == ("not published",) for t in gaps)
    assert "99.0" not in plan_report_html(sample_plan())  # the other model's score appears nowhere
    none = pareto_figure(sample_plan().configs, "mistral-7b-v0.1")
    assert not [t for t in none.data if t.xaxis == "x2" and t.mode == "markers"]
    assert any("no published accuracy" in a.text for a in none.layout.annotations)


def test_pareto_front():
    """The front keeps the points no other beats on both throughput and quality."""
    assert pareto_front([(1, 90), (2, 85), (1.5, 80), (3, 70), (2.5, 60)]) == [(1, 90), (2, 85), (3, 70)]


# ---- the simulation page -----------------------------------------------------------------


def test_single_run_page_has_summary_and_three_figures():
    """One run: the summary table (with KV capacity) and CDF, memory and batch figures."""
    page = single_run_html(sample_point(2.0), "one run", meta="a100 · full")
    assert page.count("Plotly.newPlot(") == 3 and "requests completed / rejected" in page
    assert "peak GPU KV / capacity (per GPU)" in page and "/ 30.00 GB" in page


def test_multi_method_page_compares_every_method():
    """Several methods: one table row and one curve each; the SLOs passed are lines on TTFT and TPOT."""
    runs = [(f"m{i}", sample_point(1.0 + i / 10, host=False)) for i in range(9)]
    page = simulation_html(runs, "nine methods", slo_ttft_s=1.5, slo_tpot_s=0.05)
    assert page.count("<tr><td class=\"l\">m") == 9 and len(page.encode()) < 1_000_000
    cdf, mem, _ = _figs(page)
    names = {t["name"] for t in cdf["data"] if t.get("mode") == "lines"}
    assert names == {f"m{i}" for i in range(9)}
    drawn = {t["name"] for t in cdf["data"] if t.get("mode") == "lines" and t.get("visible", True) is True}
    assert len(drawn) == 6 and "m0" in drawn and "m8" in drawn  # the first, then the highest throughput
    assert {(sh["xref"], sh["x0"]) for sh in cdf["layout"]["shapes"]} == {("x", 1.5), ("x2", 0.05)}
    assert "yaxis2" not in mem["layout"]  # no host KV: no host panel


def test_simulate_report_with_several_methods(tmp_path, monkeypatch, capsys):
    """`kvsim simulate --method full,kivi --report`: one page with both methods, plotly.js beside it."""
    from kvsim.cli import main

    rep = tmp_path / "run.html"
    monkeypatch.setattr(sys, "argv", ["kvsim", "simulate", "--trace", "synthetic-poisson", "-n", "20", "--rate", "4",
                                      "--method", "full,kivi", "--slo-ttft", "1", "--report", str(rep)])
    try:
        main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    page = rep.read_text()
    assert (tmp_path / PLOTLY_JS).is_file() and len(page.encode()) < 1_000_000
    assert "<td class=\"l\">full</td>" in page and "<td class=\"l\">kivi</td>" in page
    assert {t["name"] for t in _figs(page)[0]["data"] if t.get("mode") == "lines"} == {"full", "kivi"}
    cap = [t for t in _figs(page)[1]["data"] if t["name"].endswith(" capacity")]
    assert len(cap) == 2 and all(t["y"][0] > 1 for t in cap)  # GB of an A100's KV pool


def _kvsim(capsys, monkeypatch, *args: str) -> int:
    from kvsim.cli import main

    monkeypatch.setattr(sys, "argv", ["kvsim", *args])
    try:
        main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(bool(e.code))
    return 0


def test_plan_out_writes_plotly_once_and_self_contained_removes_it(tmp_path, monkeypatch, capsys):
    """plan --out: report.html (< 1 MB) and plotly.js in the folder; --self-contained: one file,
    the earlier plotly.js (kvsim's) removed; `kvsim report --out F` puts plotly.js beside F."""
    plan = ["plan", "--executor", "serial", "--no-progress", "--num-requests", "12", "--no-cache", "--out", str(tmp_path / "p")]
    assert _kvsim(capsys, monkeypatch, *plan) == 0, capsys.readouterr().err
    d = tmp_path / "p"
    assert (d / PLOTLY_JS).is_file() and (d / "report.html").stat().st_size < 1_000_000
    assert _kvsim(capsys, monkeypatch, *plan, "--self-contained") == 0, capsys.readouterr().err
    assert not (d / PLOTLY_JS).exists() and (d / "report.html").stat().st_size > 3_000_000
    assert _kvsim(capsys, monkeypatch, "report", str(d), "--out", str(tmp_path / "r" / "x.html")) == 0
    assert (tmp_path / "r" / PLOTLY_JS).is_file() and (tmp_path / "r" / "x.html").stat().st_size < 1_000_000
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / PLOTLY_JS).write_text("mine")
    assert _kvsim(capsys, monkeypatch, "report", str(d), "--out", str(tmp_path / "s" / "x.html")) == 1
    assert "--self-contained" in capsys.readouterr().err and (tmp_path / "s" / PLOTLY_JS).read_text() == "mine"


def test_report_refuses_a_hand_edited_nan_or_negative_cost(tmp_path):
    """A saved plan whose config JSON was edited to NaN (or a negative cost) was drawn as 'nan' / '-1.000'
    (audit): reading it back is a one-line error naming the file and field."""
    import json

    from kvsim.errors import ConfigError
    from kvsim.plan.search import load_plan, save_plan

    plan = sample_plan()
    save_plan(plan, tmp_path / "p")
    cfg = sorted((tmp_path / "p" / "configs").glob("*.json"))[0]
    good = cfg.read_text()
    for field, value in (("max_rate_per_s", float("nan")), ("cost_usd_per_mtok", -1.0)):
        d = json.loads(good)
        d[field] = value
        cfg.write_text(json.dumps(d))
        with pytest.raises(ConfigError) as err:
            load_plan(tmp_path / "p")
        assert f"{cfg}: unreadable plan result: {field}:" in str(err.value) and "\n" not in str(err.value)
