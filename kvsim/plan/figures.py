"""Plotly figures of plan and simulation digests (formatting only; no simulation).

Every figure takes ``(label, PointResult)`` items or :class:`ConfigResult` rows, a style per
label (colour per method, symbol and dash per hardware) and ``shown``: labels drawn at first;
the others are in the legend, one click away (a page with 16 methods stays readable). Numbers
are rounded to 4 significant digits before they go into the page (a plot needs no more, and
the page stays small).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from kvsim.plan.schema import CDF_LEVELS, SLO, ConfigResult, PointResult
from kvsim.slo import LEVELS

_HEIGHT = 420
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down")
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_PALETTE = qualitative.Plotly + qualitative.D3
_SLO_LINE = {"color": "red", "dash": "dot", "width": 1}


def r4(values) -> list[float | None]:
    """``values`` rounded to 4 significant digits (None and non-finite values stay None)."""
    return [float(f"{v:.4g}") if v is not None and math.isfinite(v) else None for v in values]


# ---------------------------------------------------------------- styling helpers
def config_styles(configs: list[ConfigResult]) -> dict[str, dict]:
    """Colour per method, symbol and dash per hardware, so curves read as a grid."""
    methods = sorted({c.method_label for c in configs})
    hws = sorted({c.hw_name for c in configs})
    out = {}
    for c in configs:
        i, j = methods.index(c.method_label), hws.index(c.hw_name)
        out[c.label] = {"color": _PALETTE[i % len(_PALETTE)], "symbol": _SYMBOLS[j % len(_SYMBOLS)],
                        "dash": _DASHES[j % len(_DASHES)]}
    return out


def _style(styles: dict[str, dict] | None, label: str, index: int) -> dict:
    """The label's style, or a palette colour by position (same colour in every panel)."""
    if styles and label in styles:
        return styles[label]
    return {"color": _PALETTE[index % len(_PALETTE)], "dash": "solid", "symbol": "circle"}


def _visible(label: str, shown: set[str] | None) -> bool | str:
    return True if shown is None or label in shown else "legendonly"


def layout(fig: go.Figure, title: str, height: int = _HEIGHT) -> go.Figure:
    """Common size and style; ``title`` is the figure's accessible name (the page's h2 shows it)."""
    fig.update_layout(height=height, template="plotly_white", margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      legend={"font": {"size": 10}})
    fig.layout.meta = {"title": title}
    return fig


# ---------------------------------------------------------------- latency
def latency_throughput_figure(configs: list[ConfigResult], slo: SLO, shown: set[str] | None = None) -> go.Figure:
    """TTFT and the token metrics the SLO bounds (TPOT and/or ITL; ITL when it bounds neither) at
    the SLO percentile vs output throughput, one curve per configuration (its rate-search
    probes), each bound a dotted red line."""
    pct = slo.percentile
    bounds = slo.bounds()
    panels = [("ttft", "ttft_s")] + [(m, k) for m, k in (("tpot", "tpot_s"), ("itl", "itl_s")) if m in bounds]
    if len(panels) == 1:
        panels.append(("itl", "itl_s"))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"{pct} {m.upper()}" for m, _ in panels])
    st = config_styles(configs)
    ys: dict[int, list[float]] = {col: [bounds[m]] if m in bounds else [] for col, (m, _) in enumerate(panels, start=1)}
    xs: list[float] = []
    for c in configs:
        pts = sorted(c.probes, key=lambda p: p.rate_per_s)
        if not pts:
            continue
        s = st[c.label]
        x = r4(p.throughput_output_tok_s for p in pts)
        xs += [v for v in x if v is not None]
        hover = [f"{c.label}<br>rate {p.rate_per_s:.3g} req/s<br>{p.requests_rejected} rejected" for p in pts]
        for col, (_, key) in enumerate(panels, start=1):
            y = r4(getattr(p, key).at(pct) for p in pts)
            ys[col] += [v for v in y if v is not None and v > 0]
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=c.label, legendgroup=c.label,
                                     showlegend=col == 1, hovertext=hover, hoverinfo="text+y",
                                     visible=_visible(c.label, shown),
                                     line={"color": s["color"], "dash": s["dash"]}, marker={"symbol": s["symbol"]}),
                          row=1, col=col)
    for col, (m, _) in enumerate(panels, start=1):
        bound = bounds.get(m)
        if bound is not None:
            fig.add_hline(y=bound, line=_SLO_LINE, row=1, col=col)
            _slo_label(fig, [min(xs) if xs else 0.0], [bound], f"SLO {bound:g} s", "top right", row=1, col=col)
        if ys[col]:
            lo, hi = math.log10(min(ys[col])), math.log10(max(ys[col]))
            fig.update_yaxes(type="log", range=[lo - 0.15, hi + 0.15], title_text="seconds (log)", row=1, col=col)
    fig.update_xaxes(title_text="output throughput (tok/s)")
    return layout(fig, "Latency vs throughput (rate-search probes)")


def _slo_label(fig: go.Figure, x: list[float], y: list[float], text: str, where: str, row: int, col: int) -> None:
    """A red text mark (a text trace: annotations would need log10 positions on log axes)."""
    fig.add_trace(go.Scatter(x=x, y=y, mode="text", text=[text], textposition=where, showlegend=False,
                             hoverinfo="skip", textfont={"color": "red", "size": 10}), row=row, col=col)


@dataclass(frozen=True)
class SloLines:
    """Where the SLOs go on the CDFs: seconds per panel (``ttft``, ``tpot``, ``itl``) and the
    percentile the SLO judges (a horizontal line at that level), or None."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    itl_s: float | None = None
    level: float | None = None

    @classmethod
    def of_plan(cls, slo: SLO) -> "SloLines":
        return cls(ttft_s=slo.ttft_s, tpot_s=slo.tpot_s, itl_s=slo.itl_s, level=LEVELS[slo.percentile])


#: CDF panels: (PointResult field, title, what the fraction counts, SloLines field)
_CDF_PANELS = (("ttft_quantiles_s", "TTFT CDF (per request; rejected: never)", "fraction of requests", "ttft_s"),
               ("tpot_quantiles_s", "TPOT CDF (per-request mean time per output token)", "fraction of requests", "tpot_s"),
               ("itl_quantiles_s", "ITL CDF (every gap between consecutive tokens)", "fraction of token gaps", "itl_s"))


def _served_share(p: PointResult) -> float:
    """Completed requests over completed + rejected (1 without rejections)."""
    n = p.requests_completed + p.requests_rejected
    return p.requests_completed / n if n and p.requests_rejected else 1.0


def cdf_figure(items: list[tuple[str, PointResult]], styles: dict[str, dict] | None = None,
               shown: set[str] | None = None, slo: SloLines | None = None) -> go.Figure:
    """CDFs of TTFT and TPOT (one value per request) and ITL (pooled gaps between tokens) from
    the stored quantiles, with each SLO as a vertical dotted line on the panel it judges."""
    panels = [p for p in _CDF_PANELS if p[0] != "tpot_quantiles_s" or any(getattr(x, p[0]) for _, x in items)]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels], horizontal_spacing=0.07)
    for n, (label, p) in enumerate(items):
        s = _style(styles, label, n)
        for col, (field, *_) in enumerate(panels, start=1):
            q = getattr(p, field)
            if q:
                # per-request panels: a fraction of ALL requests, the rejected never served (the curve tops out at
                # the served share, as the SLO verdict ranks them: kvsim.slo; user audit: 4/40 rejected, the
                # curve reached 1.0 left of the SLO line of a missed SLO)
                share = _served_share(p) if field != "itl_quantiles_s" else 1.0
                fig.add_trace(go.Scatter(x=r4(q), y=[lv * share for lv in CDF_LEVELS[: len(q)]], mode="lines", name=label, legendgroup=label,
                                         showlegend=col == 1, visible=_visible(label, shown),
                                         line={"color": s.get("color"), "dash": s.get("dash")}),
                              row=1, col=col)
    slo = slo or SloLines()
    for col, (_, _, counts, key) in enumerate(panels, start=1):
        fig.update_yaxes(title_text=counts, range=[0, 1.02], row=1, col=col)
        bound = getattr(slo, key)
        if bound is not None:
            fig.add_vline(x=bound, line=_SLO_LINE, row=1, col=col)  # shapes take data values on log axes
            _slo_label(fig, [bound], [0.04], f"SLO {bound:g} s", "middle right", row=1, col=col)
            if slo.level is not None:
                fig.add_hline(y=slo.level, line={**_SLO_LINE, "color": "#999"}, row=1, col=col)
    fig.update_xaxes(title_text="seconds (log)", type="log")
    return layout(fig, "Latency CDFs")


# ---------------------------------------------------------------- timelines
@dataclass(frozen=True)
class Panel:
    field: str  # TimelineDigest field
    title: str
    scale: float  # divide values by this
    unit: str
    capacity: str | None = None  # PointResult field of the capacity line (per replica; x replicas)
    capacity_sum: str | None = None  # PointResult field of the summed capacity where instances differ (None or 0: not set)
    users_only: bool = False  # draw only runs with a nonzero value here (host KV: the methods that use it)


GPU_KV = Panel("gpu_kv_bytes", "GPU KV memory", 1e9, "GB", "kv_gpu_capacity_bytes", "kv_gpu_capacity_sum_bytes")
HOST_KV = Panel("host_kv_bytes", "host KV memory", 1e9, "GB", "kv_host_capacity_bytes", "kv_host_capacity_sum_bytes",
                users_only=True)
BATCH = Panel("batch_size", "running batch", 1.0, "sequences")
QUEUE = Panel("queue_len", "waiting queue", 1.0, "requests")


def capacity_line(p: PointResult, panel: Panel) -> float:
    """The capacity the panel's summed gauge compares to: the summed pools where the summary gives
    them (a disaggregated run's prefill and decode instances differ), else one replica's x replicas."""
    if not panel.capacity:
        return 0.0
    total = (getattr(p, panel.capacity_sum) or 0.0) if panel.capacity_sum else 0.0
    return total if total > 0 else (getattr(p, panel.capacity) or 0.0) * p.replicas


def uses_host(items: list[tuple[str, PointResult]]) -> bool:
    """Some run held KV on the host (else the host panel would be an empty chart)."""
    return any(p.peak_kv_host_bytes > 0 or (p.timeline is not None and any(p.timeline.host_kv_bytes)) for _, p in items)


def timeline_figure(items: list[tuple[str, PointResult]], panels: list[Panel], title: str,
                    styles: dict[str, dict] | None = None, shown: set[str] | None = None,
                    per_arrival: bool = False) -> go.Figure:
    """Gauges over simulated time, one panel each. ``per_arrival``: x is time x offered rate
    (requests arrived so far, for runs of the same trace at different rates), so runs at
    different rates line up request by request. A dotted line in the run's colour marks each
    panel's capacity (per-replica capacity x replicas: the gauges are summed over replicas).
    A ``users_only`` panel (host KV) draws only the runs that put something there."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p.title for p in panels])
    for n, (label, p) in enumerate(items):
        tl = p.timeline
        if tl is None or not tl.t_s:
            continue
        s = _style(styles, label, n)
        x = r4([t * p.rate_per_s for t in tl.t_s] if per_arrival else tl.t_s)
        for col, panel in enumerate(panels, start=1):
            ys = getattr(tl, panel.field)
            if panel.users_only and not any(ys):
                continue
            if ys:
                fig.add_trace(go.Scatter(x=x, y=r4(v / panel.scale for v in ys), mode="lines", name=label,
                                         legendgroup=label, showlegend=col == 1, visible=_visible(label, shown),
                                         line={"color": s.get("color"), "dash": s.get("dash"), "shape": "hv", "width": 1.5}),
                              row=1, col=col)
            cap = capacity_line(p, panel)
            if cap > 0:
                y = cap / panel.scale
                fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[y, y], mode="lines", name=f"{label} capacity",
                                         legendgroup=label, showlegend=False, visible=_visible(label, shown),
                                         hovertext=f"{label}: {panel.title} capacity {y:.4g} {panel.unit}",
                                         hoverinfo="text", line={"color": s.get("color"), "dash": "dot", "width": 1}),
                              row=1, col=col)
    for col, panel in enumerate(panels, start=1):
        title = f"{panel.unit} (dotted: capacity)" if panel.capacity else panel.unit
        fig.update_yaxes(title_text=title, rangemode="tozero", row=1, col=col)
    fig.update_xaxes(title_text="requests arrived (simulated time x offered rate)" if per_arrival else "simulated time (s)")
    return layout(fig, title)


# ---------------------------------------------------------------- Pareto
def _model_key(name: str) -> str:
    """``Llama-3.1-8B-Instruct`` and ``llama-3.1-8b`` -> ``llama318b``: the same weights' architecture
    (an instruction-tuned variant is the model the papers measured)."""
    return re.sub(r"instruct$", "", re.sub(r"[^a-z0-9]", "", name.lower()))


def published_rows(c: ConfigResult, model: str) -> list[dict]:
    """Published accuracy rows of ``c`` measured on ``model`` (other models' numbers dropped)."""
    return [r for r in c.accuracy if _model_key(str(r.get("model", ""))) == _model_key(model)]


def _benchmark(configs: list[ConfigResult], model: str) -> str | None:
    """The benchmark published for the most configurations (RULER-avg first on a tie)."""
    count: dict[str, int] = {}
    for c in configs:
        for b in {r["benchmark"] for r in published_rows(c, model)}:
            count[b] = count.get(b, 0) + 1
    return max(count, key=lambda b: (count[b], b == "RULER-avg", b)) if count else None


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (higher x and higher y), by increasing x."""
    front, best_y = [], -math.inf
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > best_y:
            front.append((x, y))
            best_y = y
    return front[::-1]


def pareto_figure(configs: list[ConfigResult], model: str) -> go.Figure:
    """Left: max SLO rate per GPU vs GPU KV bytes per token. Right: published quality of
    ``model`` at each configuration vs output tokens/s per GPU at its max SLO rate, with the
    Pareto front; configurations with no published number for this model and configuration
    sit in a strip below as gaps (nothing is borrowed from another model or setting)."""
    bench = _benchmark(configs, model)
    fig = make_subplots(rows=2, cols=2, row_heights=[0.84, 0.16], vertical_spacing=0.04,
                        specs=[[{"rowspan": 2}, {}], [None, {}]],
                        subplot_titles=("max rate per GPU vs KV footprint",
                                        f"published {bench or 'accuracy'} ({model}) vs throughput"))
    st = config_styles(configs)
    pts, gaps = [], []
    for c in configs:
        s = st[c.label]
        marker = {"color": s["color"], "symbol": s["symbol"], "size": 11}
        legend = True
        if c.max_rate_per_s > 0:
            fig.add_trace(go.Scatter(x=r4([c.kv_bytes_per_token_gpu / 1e3]), y=r4([c.max_rate_per_s / max(c.gpus, 1)]),
                                     mode="markers", name=c.label, legendgroup=c.label, marker=marker), row=1, col=1)
            legend = False
        tok = (c.best.throughput_output_tok_s / max(c.gpus, 1)) if c.best is not None and c.max_rate_per_s > 0 else 0.0
        row = next((r for r in published_rows(c, model) if r["benchmark"] == bench), None)
        if row is not None and tok > 0:
            pts.append((tok, float(row["score"])))
            fig.add_trace(go.Scatter(x=r4([tok]), y=[float(row["score"])], mode="markers", name=c.label,
                                     legendgroup=c.label, showlegend=legend, marker=marker,
                                     hovertext=f"{c.label}<br>{row['benchmark']} {row['score']} ({row['model']})"
                                               f"<br>{row.get('source', '')}", hoverinfo="text+x"), row=1, col=2)
        elif tok > 0:
            gaps.append(c.label)
            fig.add_trace(go.Scatter(x=r4([tok]), y=["not published"], mode="markers", name=c.label, legendgroup=c.label,
                                     showlegend=legend, hovertext=f"{c.label}: no published {bench or 'accuracy'} "
                                                                  f"for {model} at this configuration",
                                     hoverinfo="text", marker={**marker, "symbol": "line-ns-open", "size": 14}),
                          row=2, col=2)
    front = pareto_front(pts)
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=r4(x for x, _ in front), y=[y for _, y in front], mode="lines", name="Pareto front",
                                 line={"color": "#888", "dash": "dash", "shape": "vh"}, hoverinfo="skip"), row=1, col=2)
    if not pts:
        fig.add_annotation(text=f"no published accuracy for {model} at these configurations", showarrow=False,
                           xref="x2 domain", yref="y2 domain", x=0.5, y=0.5)
    fig.update_xaxes(title_text="GPU KV kB per token (mean trace context)", row=1, col=1)
    fig.update_yaxes(title_text="req/s per GPU", row=1, col=1)
    fig.update_yaxes(title_text=f"{bench or 'score'} (published)", row=1, col=2)
    fig.update_xaxes(matches="x3", showticklabels=False, row=1, col=2)
    fig.update_xaxes(title_text="output tok/s per GPU at max SLO rate", row=2, col=2)
    fig.update_yaxes(showgrid=False, row=2, col=2)
    return layout(fig, "Pareto view", height=_HEIGHT + 40)
