"""The HTML report: one self-contained file, every figure present, ranked table, Pareto data."""

import re

import numpy as np

from kvsim.plan.schema import (
    CDF_LEVELS, SLO, ConfigResult, ConfigSpec, PlanResult, PointResult, Price, Stats, TimelineDigest, TraceSpec,
)
from kvsim.plan.report import plan_report_html, recommendation_rows, single_run_html

N_PLAN_FIGURES = 5  # latency-throughput, CDFs, memory, batch, Pareto


def sample_point(rate: float, with_detail: bool = True) -> PointResult:
    """A plausible digest: latency grows with rate, KV memory and batch vary over time."""
    rng = np.random.default_rng(int(rate * 1000))
    ttft = np.sort(rng.gamma(2.0, 0.05 * (1 + rate), 500))
    tbt = np.sort(rng.gamma(4.0, 0.004 * (1 + rate / 4), 500))
    t = np.linspace(0, 120, 240)

    def stats(x):
        return Stats(mean=float(x.mean()), p50=float(np.quantile(x, .5)), p90=float(np.quantile(x, .9)),
                     p99=float(np.quantile(x, .99)))

    detail = {}
    if with_detail:
        detail = dict(
            ttft_quantiles_s=np.quantile(ttft, CDF_LEVELS).tolist(), tbt_quantiles_s=np.quantile(tbt, CDF_LEVELS).tolist(),
            timeline=TimelineDigest(t_s=t.tolist(), gpu_kv_bytes=(2e9 * rate * np.abs(np.sin(t / 15))).tolist(),
                              host_kv_bytes=(1e9 * np.abs(np.cos(t / 20))).tolist(),
                              batch_size=np.round(8 * rate * np.abs(np.sin(t / 9))).tolist(),
                              queue_len=np.round(3 * np.abs(np.sin(t / 4))).tolist()))
    return PointResult(rate_per_s=rate, num_requests=500, ttft_s=stats(ttft), tbt_s=stats(tbt), e2e_s=stats(ttft * 10),
                       throughput_output_tok_s=250.0 * rate, requests_completed=500, requests_rejected=0, **detail)


def sample_plan() -> PlanResult:
    slo = SLO(ttft_s=2.0, tbt_s=0.1)
    configs = []
    for hw, price in (("a100-80g", 1.59), ("l20", 0.8)):
        for method, kvb, acc, best in (("full", 131072, 88.7, 3.0), ("quest", 140000, 82.1, 4.0), ("kivi", 36000, None, 6.0)):
            scale = 1.0 if hw == "a100-80g" else 0.5
            rates = [r * scale for r in (1, 2, 4, best, best * 1.05)]
            r_best = best * scale
            accuracy = [{"benchmark": "RULER-avg", "model": "Llama-3.1-8B-Instruct", "score": acc}] if acc else []
            configs.append(ConfigResult(
                config=ConfigSpec(hw=hw, model="llama-3.1-8b", method=method), label=f"{hw} · {method}", hw_name=hw,
                gpu_name=hw.upper(), method_name=method, method_label=method, gpus=1,
                price=Price(usd_per_hour=price, source="test price", date="2026-01-01"), slo=slo,
                max_rate_per_s=r_best, probes=[sample_point(r, False) for r in rates], best=sample_point(r_best),
                cost_usd_per_mtok=price / (250 * r_best * 3600) * 1e6, kv_bytes_per_token_gpu=kvb, accuracy=accuracy))
    order = sorted(range(len(configs)), key=lambda i: configs[i].cost_usd_per_mtok)
    return PlanResult(kvsim_version="test", model="llama-3.1-8b", trace=TraceSpec(), trace_name="synthetic-burstgpt",
                      slo=slo, configs=configs, ranking=order)


def test_plan_report_is_one_offline_file():
    """plotly.js inline exactly once, no external script or stylesheet, one newPlot per figure."""
    html = plan_report_html(sample_plan())
    assert not re.search(r"<script[^>]*\ssrc=", html) and not re.search(r"<link[^>]*stylesheet", html)
    assert html.count("Plotly.newPlot(") == N_PLAN_FIGURES
    assert len(re.findall(r"plotly\.js v\d", html)) == 1  # the bundle's banner
    assert len(html) > 3_000_000  # the bundle itself (~3.5 MB) is inside


def test_recommendation_table_follows_ranking():
    """Rows come in ranking order with cost and published accuracy; prices cite their source."""
    plan = sample_plan()
    rows = recommendation_rows(plan)
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, 7)]
    assert [r["method"] for r in rows] == [plan.configs[i].method_label for i in plan.ranking]
    first = plan.configs[plan.ranking[0]]
    assert rows[0]["usd_mtok"] == f"{first.cost_usd_per_mtok:.3f}"
    html = plan_report_html(plan)
    assert "test price (2026-01-01)" in html and "88.7" in html


def test_pareto_has_accuracy_points_only_where_published():
    """The cost-vs-accuracy panel plots the 4 configurations with a published RULER score."""
    from kvsim.plan.report import pareto_figure

    fig = pareto_figure(sample_plan().configs)
    acc_points = [t for t in fig.data if t.xaxis == "x2"]
    assert len(acc_points) == 4 and {t.x[0] for t in acc_points} == {88.7, 82.1}


def test_single_run_report_has_summary_and_three_figures():
    """The single-run page has the summary table and CDF, memory and batch figures."""
    html = single_run_html(sample_point(2.0), "one run", meta="a100 · full")
    assert html.count("Plotly.newPlot(") == 3 and "requests completed / rejected" in html
