"""Plotly figures and one self-contained HTML report (formatting only; no simulation).

The page embeds plotly.js once, inline (``include_plotlyjs=True`` on the first figure), so it
opens offline with no CDN. Plan report sections: latency vs throughput per configuration
(from the rate-search probes), TTFT and TBT CDFs, GPU and host KV memory over time, batch
size and queue over time (each at the configuration's highest SLO-meeting rate), a Pareto
view (max rate per GPU vs KV bytes per token; cost per million output tokens vs published
accuracy, METHODS.md §4), and the ranked recommendation table.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from kvsim.fileio import atomic_write
from kvsim.plan.digest import digest
from kvsim.plan.schema import CDF_LEVELS, SLO, ConfigResult, PlanResult, PointResult

_HEIGHT = 420
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down")
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.9em} table.rec{border-collapse:collapse;font-size:.88em;width:100%}
table.rec th,table.rec td{border:1px solid #ddd;padding:4px 8px;text-align:right}
table.rec th{background:#f4f4f4} table.rec td.l{text-align:left} tr.top td{background:#eef8ee}
.note{color:#666;font-size:.85em}
"""


# ---------------------------------------------------------------- styling helpers
def _styles(labels_by_method: dict[str, list[str]], hw_of: dict[str, str]) -> dict[str, dict]:
    """Colour per method, symbol and dash per hardware, so curves read as a grid."""
    palette = qualitative.Plotly + qualitative.D3
    hws = sorted(set(hw_of.values()))
    out = {}
    for i, (_, labels) in enumerate(sorted(labels_by_method.items())):
        for label in labels:
            j = hws.index(hw_of[label])
            out[label] = {"color": palette[i % len(palette)], "symbol": _SYMBOLS[j % len(_SYMBOLS)],
                          "dash": _DASHES[j % len(_DASHES)]}
    return out


def _config_styles(configs: list[ConfigResult]) -> dict[str, dict]:
    by_method: dict[str, list[str]] = {}
    for c in configs:
        by_method.setdefault(c.method_label, []).append(c.label)
    return _styles(by_method, {c.label: c.hw_name for c in configs})


def _layout(fig: go.Figure, title: str) -> go.Figure:
    """Common size and style; ``title`` is the figure's accessible name (the page's h2 shows it)."""
    fig.update_layout(height=_HEIGHT, template="plotly_white", margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      legend={"font": {"size": 10}})
    fig.layout.meta = {"title": title}
    return fig


# ---------------------------------------------------------------- figures
def latency_throughput_figure(configs: list[ConfigResult], slo: SLO) -> go.Figure:
    """TTFT and TBT (or TPOT, per ``slo.tbt_metric``) at the SLO percentile vs output throughput,
    one curve per configuration (its rate-search probes), with the SLO as a dotted line."""
    pct, tkey = slo.percentile, ("tpot_s" if slo.tbt_metric == "tpot" else "tbt_s")
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{pct} TTFT", f"{pct} {slo.tbt_metric.upper()}"))
    st = _config_styles(configs)
    ys: dict[int, list[float]] = {1: [slo.ttft_s], 2: [slo.tbt_s]}
    for c in configs:
        pts = sorted(c.probes, key=lambda p: p.rate_per_s)
        if not pts:
            continue
        s = st[c.label]
        x = [p.throughput_output_tok_s for p in pts]
        hover = [f"{c.label}<br>rate {p.rate_per_s:.3g} req/s<br>{p.requests_rejected} rejected" for p in pts]
        for col, key in ((1, "ttft_s"), (2, tkey)):
            y = [getattr(p, key).at(pct) for p in pts]
            ys[col] += [v for v in y if v is not None and v > 0]
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=c.label, legendgroup=c.label,
                                     showlegend=col == 1, hovertext=hover, hoverinfo="text+y",
                                     line={"color": s["color"], "dash": s["dash"]}, marker={"symbol": s["symbol"]}),
                          row=1, col=col)
    for col, bound in ((1, slo.ttft_s), (2, slo.tbt_s)):
        fig.add_hline(y=bound, line={"color": "red", "dash": "dot", "width": 1}, row=1, col=col)
        lo, hi = math.log10(min(ys[col])), math.log10(max(ys[col]))
        fig.update_yaxes(type="log", range=[lo - 0.15, hi + 0.15], title_text="seconds (log)", row=1, col=col)
    fig.update_xaxes(title_text="output throughput (tok/s)")
    return _layout(fig, "Latency vs throughput (rate-search probes)")


def _style(styles: dict[str, dict] | None, label: str, index: int) -> dict:
    """The label's style, or a palette colour by position (same colour in every panel)."""
    if styles and label in styles:
        return styles[label]
    palette = qualitative.Plotly
    return {"color": palette[index % len(palette)], "dash": "solid"}


def _visible(label: str, shown: set[str] | None) -> bool | str:
    return True if shown is None or label in shown else "legendonly"


def cdf_figure(items: list[tuple[str, PointResult]], styles: dict[str, dict] | None = None,
               shown: set[str] | None = None) -> go.Figure:
    """CDFs of TTFT (per request) and TBT (pooled inter-token gaps) from stored quantiles.

    Labels outside ``shown`` start hidden (click the legend to show them)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("TTFT CDF", "TBT CDF"))
    for n, (label, p) in enumerate(items):
        s = _style(styles, label, n)
        for col, q in ((1, p.ttft_quantiles_s), (2, p.tbt_quantiles_s)):
            if q:
                fig.add_trace(go.Scatter(x=q, y=list(CDF_LEVELS[: len(q)]), mode="lines", name=label, legendgroup=label,
                                         showlegend=col == 1, visible=_visible(label, shown),
                                         line={"color": s.get("color"), "dash": s.get("dash")}),
                              row=1, col=col)
    fig.update_xaxes(title_text="seconds", type="log")
    fig.update_yaxes(title_text="fraction of requests", range=[0, 1.02])
    return _layout(fig, "Latency CDFs")


def _timeline_figure(items: list[tuple[str, PointResult]], styles: dict[str, dict] | None,
                     panels: tuple[tuple[str, str, float, str], ...], title: str, shown: set[str] | None) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels])
    for n, (label, p) in enumerate(items):
        tl = p.timeline
        if tl is None or not tl.t_s:
            continue
        s = _style(styles, label, n)
        for col, (field, _, scale, _) in enumerate(panels, start=1):
            ys = getattr(tl, field)
            if not ys:
                continue
            fig.add_trace(go.Scatter(x=tl.t_s, y=[v / scale for v in ys], mode="lines", name=label, legendgroup=label,
                                     showlegend=col == 1, visible=_visible(label, shown),
                                     line={"color": s.get("color"), "dash": s.get("dash"), "shape": "hv", "width": 1.5}),
                          row=1, col=col)
    for col, (_, _, _, unit) in enumerate(panels, start=1):
        fig.update_yaxes(title_text=unit, row=1, col=col)
    fig.update_xaxes(title_text="simulated time (s)")
    return _layout(fig, title)


def memory_figure(items: list[tuple[str, PointResult]], styles: dict[str, dict] | None = None,
                  shown: set[str] | None = None) -> go.Figure:
    """KV bytes in use on the GPU(s) and on the host over simulated time (GB = 1e9 B)."""
    return _timeline_figure(items, styles, (("gpu_kv_bytes", "GPU KV memory", 1e9, "GB"),
                                            ("host_kv_bytes", "host KV memory", 1e9, "GB")), "KV memory over time", shown)


def batch_figure(items: list[tuple[str, PointResult]], styles: dict[str, dict] | None = None,
                 shown: set[str] | None = None) -> go.Figure:
    """Running batch size and waiting queue length over simulated time."""
    return _timeline_figure(items, styles, (("batch_size", "running batch", 1.0, "sequences"),
                                            ("queue_len", "waiting queue", 1.0, "requests")),
                            "Batch and queue over time", shown)


def pareto_figure(configs: list[ConfigResult]) -> go.Figure:
    """Max SLO rate per GPU vs KV bytes/token; cost per M output tokens vs published accuracy."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("max rate per GPU vs KV footprint",
                                                        "cost vs published accuracy (RULER avg)"))
    st = _config_styles(configs)
    have_acc = False
    for c in configs:
        s = st[c.label]
        if c.max_rate_per_s > 0:
            fig.add_trace(go.Scatter(x=[c.kv_bytes_per_token_gpu / 1e3], y=[c.max_rate_per_s / max(c.gpus, 1)],
                                     mode="markers", name=c.label, legendgroup=c.label,
                                     marker={"color": s["color"], "symbol": s["symbol"], "size": 11}), row=1, col=1)
        acc = c.ruler_avg
        if acc is not None and c.cost_usd_per_mtok is not None:
            have_acc = True
            fig.add_trace(go.Scatter(x=[acc], y=[c.cost_usd_per_mtok], mode="markers", name=c.label, legendgroup=c.label,
                                     showlegend=c.max_rate_per_s <= 0,
                                     marker={"color": s["color"], "symbol": s["symbol"], "size": 11}), row=1, col=2)
    if not have_acc:
        fig.add_annotation(text="no published accuracy for these configurations (METHODS.md §4)", showarrow=False,
                           xref="x2 domain", yref="y2 domain", x=0.5, y=0.5)
    fig.update_xaxes(title_text="GPU KV kB per token (mean trace context)", row=1, col=1)
    fig.update_yaxes(title_text="req/s per GPU", row=1, col=1)
    fig.update_xaxes(title_text="RULER average (published)", row=1, col=2)
    fig.update_yaxes(title_text="USD per M output tokens (log)", type="log", row=1, col=2)
    return _layout(fig, "Pareto view")


# ---------------------------------------------------------------- tables and page
def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def recommendation_rows(plan: PlanResult) -> list[dict[str, str]]:
    """Rows of the ranked table (shared by the terminal table and the HTML report)."""
    pct = plan.slo.percentile
    rows = []
    for rank, i in enumerate(plan.ranking, start=1):
        c = plan.configs[i]
        b = c.target.point if c.target is not None and c.target.point is not None else c.best
        gpus = c.target.gpus if c.target is not None and c.target.gpus else c.gpus
        replicas = c.target.replicas if c.target is not None and c.target.replicas else c.config.replicas
        rows.append({
            "rank": str(rank), "hardware": c.hw_name, "method": c.method_label,
            "gpus": f"{gpus} ({replicas}x TP{c.config.tp})",
            "max_rate": _f(c.max_rate_per_s, ".3g") if c.error is None else "-",
            "tok_s": _f(c.target.output_tok_per_s if c.target is not None and c.target.gpus
                        else (b.throughput_output_tok_s if b else None), ",.0f"),
            "ttft": _f(b.ttft_s.at(pct) if b else None, ".3f"),
            "tbt": _f((b.tpot_s if plan.slo.tbt_metric == "tpot" else b.tbt_s).at(pct) if b else None, ".4f"),
            "usd_mtok": _f(c.cost_usd_per_mtok, ".3f"), "accuracy": _f(c.ruler_avg, ".1f"),
            "note": c.error or c.infeasible or _note(c, b),
        })
    return rows


def _note(c: ConfigResult, b: PointResult | None) -> str:
    notes = []
    if c.capped:
        notes.append("rate capped by search limit")
    if c.target is not None and c.target.replicas is None:
        notes.append(f"target not met with <= {max(c.target.tried, default=0)} replicas")
    if b is not None and b.requests_rejected:
        notes.append(f"{b.requests_rejected}/{b.num_requests} rejected")
    if b is not None and b.preemptions:
        notes.append(f"{b.preemptions} preemptions")
    return "; ".join(notes)


_COLUMNS = (("rank", "#"), ("hardware", "hardware"), ("method", "method"), ("gpus", "GPUs"),
            ("max_rate", "max rate{r} (req/s)"), ("tok_s", "output tok/s"), ("ttft", "TTFT {p} (s)"),
            ("tbt", "{m} {p} (s)"), ("usd_mtok", "$ / M out tok"), ("accuracy", "RULER avg"), ("note", "note"))


def column_titles(plan: PlanResult) -> list[str]:
    """Headers of the ranked table; in target mode the max rate is per replica."""
    r = " / replica" if plan.target_rate_per_s else ""
    return [t.format(p=plan.slo.percentile, r=r, m=plan.slo.tbt_metric.upper()) for _, t in _COLUMNS]


def recommendation_html(plan: PlanResult) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for t in column_titles(plan))
    body = []
    for r in recommendation_rows(plan):
        cls = ' class="top"' if r["rank"] == "1" else ""
        cells = "".join(f'<td class="l">{html.escape(r[k])}</td>' if k in ("hardware", "method", "note")
                        else f"<td>{html.escape(r[k])}</td>" for k, _ in _COLUMNS)
        body.append(f"<tr{cls}>{cells}</tr>")
    prices = sorted({(c.gpu_name, c.price.usd_per_hour, c.price.source, c.price.date) for c in plan.configs if c.price})
    notes = "".join(f"<li>{html.escape(g)}: ${p:.2f}/GPU-hour, {html.escape(s)} ({html.escape(d)})</li>"
                    for g, p, s, d in prices)
    return (f'<table class="rec"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f'<p class="note">Prices:</p><ul class="note">{notes or "<li>none in the hardware specs</li>"}</ul>')


def render_page(title: str, meta_html: str, sections: list[tuple[str, go.Figure | str]]) -> str:
    """One HTML page; plotly.js inline once, before the first figure."""
    parts, first = [], True
    for heading, body in sections:
        if isinstance(body, go.Figure):
            div = body.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False, "responsive": True})
            first = False
        else:
            div = body
        parts.append(f"<h2>{html.escape(heading)}</h2>\n{div}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head>\n<body><h1>{html.escape(title)}</h1><div class=\"meta\">{meta_html}</div>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def _shown_labels(plan: PlanResult, top: int = 3) -> set[str]:
    """Configurations drawn at first in the per-run plots: the ``top`` ranked and the best per hardware."""
    ranked = [plan.configs[i] for i in plan.ranking if plan.configs[i].error is None]
    shown = {c.label for c in ranked[:top]}
    seen: set[str] = set()
    for c in ranked:
        if c.hw_name not in seen:
            seen.add(c.hw_name)
            shown.add(c.label)
    return shown


def plan_report_html(plan: PlanResult) -> str:
    """The plan report page (see module docstring)."""
    runnable = [c for c in plan.configs if c.error is None]
    st = _config_styles(runnable)
    best = [(c.label, c.best) for c in runnable if c.best is not None]
    shown = _shown_labels(plan)
    slo = plan.slo
    target = f", target {plan.target_rate_per_s:g} req/s" if plan.target_rate_per_s else ""
    meta = html.escape(
        f"model {plan.model} · trace {plan.trace_name or plan.trace.spec} "
        f"({plan.trace_requests or plan.trace.num_requests} requests, seed "
        f"{plan.trace.seed}, mean prompt {plan.trace_mean_prompt_tokens:.0f} / output "
        f"{plan.trace_mean_output_tokens:.0f} tokens) · SLO {slo.percentile} TTFT ≤ {slo.ttft_s:g} s and "
        f"{slo.tbt_metric.upper()} ≤ "
        f"{slo.tbt_s:g} s{target} · rate search to {plan.search.rel_tol:.0%} · kvsim {plan.kvsim_version}")
    sections: list[tuple[str, go.Figure | str]] = [
        ("Recommendation", recommendation_html(plan)),
        ("Latency vs throughput", latency_throughput_figure(runnable, slo)),
        ("Latency CDFs at each configuration's max SLO rate", cdf_figure(best, st, shown)),
        ("KV memory over time (at max SLO rate)", memory_figure(best, st, shown)),
        ("Batch size over time (at max SLO rate)", batch_figure(best, st, shown)),
        ("Pareto view", pareto_figure(runnable)),
    ]
    return render_page(f"kvsim plan: {plan.model}", meta, sections)


def write_plan_report(plan: PlanResult, path: str | Path) -> Path:
    """Write the plan's HTML report to ``path`` atomically (a failed write leaves the old one)."""
    return atomic_write(path, plan_report_html(plan))


def single_run_html(point: PointResult, title: str, meta: str = "") -> str:
    """Report of one simulation: summary table, CDFs, memory, batch/queue over time."""
    rows = [("requests completed / rejected", f"{point.requests_completed} / {point.requests_rejected}"),
            ("output throughput", f"{point.throughput_output_tok_s:,.1f} tok/s"), ("preemptions", str(point.preemptions)),
            ("peak GPU KV", f"{point.peak_kv_gpu_bytes / 1e9:.2f} GB"),
            ("peak host KV", f"{point.peak_kv_host_bytes / 1e9:.2f} GB")]
    for name, st in (("TTFT", point.ttft_s), ("TBT", point.tbt_s), ("E2E", point.e2e_s)):
        rows.append((f"{name} mean / p50 / p90 / p99 (s)",
                     " / ".join(_f(getattr(st, k), ".4g") for k in ("mean", "p50", "p90", "p99"))))
    table = '<table class="rec">' + "".join(f'<tr><td class="l">{html.escape(k)}</td><td>{html.escape(v)}</td></tr>'
                                            for k, v in rows) + "</table>"
    items = [(title, point)]
    return render_page(title, html.escape(meta), [("Summary", table), ("Latency CDFs", cdf_figure(items)),
                                                  ("KV memory over time", memory_figure(items)),
                                                  ("Batch size and queue over time", batch_figure(items))])


def single_run_report(sim_result, path: str | Path, title: str | None = None) -> Path:
    """Write the HTML report of one ``kvsim.sim.replica.simulate`` result to ``path``."""
    point = digest(sim_result)
    s = sim_result.summary
    label = title or "kvsim simulate"
    meta = " · ".join(f"{k} {s[k]}" for k in ("hw", "model", "method", "trace", "tp", "replicas", "router") if k in s)
    meta += f" · {point.num_requests} requests at {point.rate_per_s:.3g} req/s"
    return atomic_write(path, single_run_html(point, label, meta))
