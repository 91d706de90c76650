"""HTML reports: the plan page (``kvsim plan --out``, ``kvsim report``) and the simulation
page (``kvsim simulate --report``, one method or several compared). Formatting only; the
figures are in :mod:`kvsim.plan.figures`.

plotly.js (about 4.8 MB) is not repeated in every page: a page loads ``plotly-<version>.min.js``
from its own folder, written there once from the installed plotly package, so the page opens
offline and stays well under 1 MB. ``self_contained=True`` (``--self-contained``) inlines
plotly.js instead: one file that can be sent on its own.

Plan page: ranked table; latency vs throughput per configuration (rate-search probes) with
the SLO lines; TTFT, TPOT and ITL CDFs; KV memory (with capacity lines; the host panel only
when some configuration keeps KV on the host) and batch/queue over time at each
configuration's max SLO rate, on one axis of requests arrived (time x rate) so runs at
different rates line up; a Pareto view (max rate per GPU vs KV bytes per token; published
quality of this model and configuration vs throughput, gaps shown as gaps). The top ranked
configurations are drawn, the others one legend click away.
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from kvsim.fileio import OutputError, atomic_write, check_output_file, refuse_inputs
from kvsim.plan.digest import digest
from kvsim.plan.figures import (  # latency_throughput_figure, pareto_figure: also this module's API
    BATCH,
    GPU_KV,
    HOST_KV,
    QUEUE,
    SloLines,
    cdf_figure,
    config_styles,
    latency_throughput_figure,
    pareto_figure,
    published_rows,
    timeline_figure,
    uses_host,
)
from kvsim.plan.notes import plan_notes
from kvsim.plan.schema import ConfigResult, PlanResult, PointResult, fmt_lifetimes
from kvsim.sim.kv_tiers import reuse_note as tier_note  # (also this module's API)
from kvsim.slo import LEVELS, fmt_duration

#: plotly.js written next to pages that are not self-contained
PLOTLY_JS = f"plotly-{get_plotlyjs_version()}.min.js"
#: runs drawn at first on a simulation page (the others are in the legend)
SHOWN_RUNS = 6
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.9em} table.rec{border-collapse:collapse;font-size:.88em;width:100%}
table.rec th,table.rec td{border:1px solid #ddd;padding:4px 8px;text-align:right}
table.rec th{background:#f4f4f4} table.rec td.l{text-align:left} tr.top td{background:#eef8ee}
.note{color:#666;font-size:.85em} .warn{background:#fee;border:1px solid #c00;padding:8px}
"""


# ---------------------------------------------------------------- tables and page
#: every page kvsim writes carries this tag: a file without it is never replaced (unless forced)
GENERATOR_META = '<meta name="generator" content="kvsim">'


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
        unmet = c.target is not None and c.target.replicas is None
        rows.append({
            "rank": str(rank), "hardware": c.hw_name, "method": c.method_label,
            "gpus": (f"not met (> {max(c.target.tried, default=0)}x TP{c.config.tp})" if unmet
                     else f">= {gpus} ({replicas}x TP{c.config.tp})" if c.target is not None and c.target.transient
                     else f"{gpus} ({replicas}x TP{c.config.tp})"),
            "max_rate": ("-" if c.error is not None else
                         (">= " if c.capped else "") + _f(c.max_rate_per_s, ".3g")),
            "tok_s": _f(c.target.output_tok_per_s if c.target is not None and c.target.gpus
                        else (None if unmet else b.throughput_output_tok_s if b else None), ",.0f"),
            "ttft": _f(b.ttft_s.at(pct) if b else None, ".3f"),
            "tpot": _f(b.tpot_s.at(pct) if b else None, ".4f"), "itl": _f(b.itl_s.at(pct) if b else None, ".4f"),
            "usd_mtok": _f(c.cost_usd_per_mtok, ".3f"), "accuracy": _f(c.ruler_avg, ".1f"),
            "note": c.error or c.infeasible or _note(c, b),
        })
    return rows


def _note(c: ConfigResult, b: PointResult | None) -> str:
    notes = []
    if c.capped:
        notes.append("rate capped by search limit")
    elif c.transient:
        notes.append(f"short trace ({fmt_lifetimes(c.span_over_e2el)}x E2E): rate likely high")
    if c.target is not None and c.target.replicas is None:
        at = max(c.target.tried, default=0)
        miss = f": {c.target.point.misses(c.slo)} there" if c.target.point is not None else ""
        notes.append(f"target not met with <= {at} replicas{miss}")
    elif c.target is not None and c.target.transient:
        notes.append(f"target check {fmt_lifetimes(c.target.span_over_e2el)}x E2E: a burst, GPUs a lower bound")
    if b is not None and b.requests_rejected:
        notes.append(f"{b.requests_rejected}/{b.num_requests} rejected")
    if b is not None and b.preemptions:
        notes.append(f"{b.preemptions} preemptions")
    if b is not None and b.kv_offload:
        notes.append(tier_note(b.kv_offload))
    limit = _limit(c)
    if limit:
        notes.append(limit)
    return "; ".join(notes)


def _limit(c: ConfigResult) -> str | None:
    """What the SLO missed at the lowest rate that failed (the search's upper bracket): which bound
    sets the max rate, e.g. ``"limit: p99 ITL 567 ms > 300 ms at 0.0447 req/s"`` (long-context audit:
    the table showed values well inside the SLO at the max rate and never named the bound)."""
    if c.target is not None or c.upper_rate_per_s is None or c.error is not None:
        return None
    above = next((p for p in c.probes if p.rate_per_s == c.upper_rate_per_s), None)
    if above is None or above.meets(c.slo):
        return None
    return f"limit: {above.misses(c.slo)} at {above.rate_per_s:.3g} req/s"


_COLUMNS = (("rank", "#"), ("hardware", "hardware"), ("method", "method"), ("gpus", "GPUs"),
            ("max_rate", "max rate{r} (req/s)"), ("tok_s", "output tok/s"), ("ttft", "TTFT {p} (s)"),
            ("tpot", "TPOT {p} (s)"), ("itl", "ITL {p} (s)"), ("usd_mtok", "$ / M out tok"), ("accuracy", "RULER avg"),
            ("note", "note"))


def plan_columns(plan: PlanResult) -> list[tuple[str, str]]:
    """``(row key, header)`` of the ranked table: TPOT and ITL where the SLO bounds them (ITL
    when it bounds neither); in target mode the max rate is per replica."""
    r = " / replica" if plan.target_rate_per_s else ""
    bounded = plan.slo.bounds()
    token = [m for m in ("tpot", "itl") if m in bounded] or ["itl"]
    return [(k, t.format(p=plan.slo.percentile, r=r)) for k, t in _COLUMNS if k not in ("tpot", "itl") or k in token]


def column_titles(plan: PlanResult) -> list[str]:
    """Headers of the ranked table (:func:`plan_columns`)."""
    return [t for _, t in plan_columns(plan)]


def recommendation_html(plan: PlanResult) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for t in column_titles(plan))
    body = []
    for r in recommendation_rows(plan):
        cls = ' class="top"' if r["rank"] == "1" else ""
        cells = "".join(f'<td class="l">{html.escape(r[k])}</td>' if k in ("hardware", "method", "note")
                        else f"<td>{html.escape(r[k])}</td>" for k, _ in plan_columns(plan))
        body.append(f"<tr{cls}>{cells}</tr>")
    prices = sorted({(c.gpu_name, c.price.usd_per_hour, c.price.dated_source) for c in plan.configs if c.price})
    notes = "".join(f"<li>{html.escape(g)}: ${p:.2f}/GPU-hour, {html.escape(s)}</li>" for g, p, s in prices)
    return (f'<table class="rec"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            f'<p class="note">Prices:</p><ul class="note">{notes or "<li>none in the hardware specs</li>"}</ul>')


# ---------------------------------------------------------------- pages and files
Body = go.Figure | str | list  # a figure, HTML, or a list of those


def _body(body: Body, fig_config: dict, inline_js: list[bool]) -> str:
    if isinstance(body, list):
        return "\n".join(_body(b, fig_config, inline_js) for b in body)
    if isinstance(body, go.Figure):
        div = body.to_html(full_html=False, include_plotlyjs=inline_js[0], config=fig_config)
        inline_js[0] = False
        return div
    return body


def render_page(title: str, meta_html: str, sections: list[tuple[str, Body]], *, self_contained: bool = False) -> str:
    """One HTML page. plotly.js is loaded once: from :data:`PLOTLY_JS` next to the page, or
    (``self_contained``) inline before the first figure. A page whose plotly.js is missing
    says so at the top instead of showing empty boxes."""
    inline_js = [self_contained]
    parts = [f"<h2>{html.escape(h)}</h2>\n{_body(b, {'displaylogo': False, 'responsive': True}, inline_js)}"
             for h, b in sections]
    script = "" if self_contained else f'<script src="{PLOTLY_JS}" charset="utf-8"></script>'
    missing = ("" if self_contained else
               '<script>if (typeof Plotly === "undefined") { document.body.insertAdjacentHTML("afterbegin", '
               f'"<p class=\\"warn\\">{PLOTLY_JS} was not found next to this page: keep it in the same folder, '
               'or rebuild the page with --self-contained.</p>"); }</script>\n')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{GENERATOR_META}<title>{html.escape(title)}</title>'
            f"{script}<style>{_CSS}</style></head>\n<body><h1>{html.escape(title)}</h1><div class=\"meta\">{meta_html}</div>\n"
            + "\n".join(parts) + f"\n{missing}</body></html>\n")


def plotly_js() -> str:
    """The installed plotly package's plotly.min.js (written as :data:`PLOTLY_JS`)."""
    return get_plotlyjs()


def page_files(name: str, page: str, self_contained: bool = False) -> dict[str, str]:
    """``{name: page}`` and, unless ``self_contained``, ``{PLOTLY_JS: plotly.js}`` (first: it is
    renamed into place before the page that loads it) for :func:`kvsim.fileio.write_tree`."""
    return {name: page} if self_contained else {PLOTLY_JS: plotly_js(), name: page}


def _is_kvsim_page(p: Path) -> bool:
    """Does file ``p`` start like a page kvsim wrote (its generator tag in the first 512 bytes)?"""
    try:
        with p.open("rb") as f:
            return GENERATOR_META.encode("utf-8") in f.read(512)
    except OSError:
        return False


def check_page(path: str | Path, self_contained: bool = False, flag: str = "", force: bool = False,
               inputs=()) -> Path:
    """Before the work: ``path`` can be written, is none of the run's ``inputs`` (files it reads), and is
    absent or a page kvsim wrote (anything else is replaced only with ``force``), and a file named
    :data:`PLOTLY_JS` beside it is absent or is that plotly.js (anything else there is not overwritten)."""
    p = check_output_file(path, flag)
    refuse_inputs(p, inputs, flag)
    where = f"{flag} " if flag else ""
    if p.name == PLOTLY_JS:  # (the page would replace the script it loads)
        raise OutputError(f"{where}{p}: is the plotly.js that kvsim's pages load; name the page another file")
    if p.exists() and not force and not _is_kvsim_page(p):
        raise OutputError(f"{where}{p}: exists and is not a page kvsim wrote; move it away or pass --force to replace it")
    js = p.parent / PLOTLY_JS
    if not self_contained and (js.is_dir() or (js.exists() and js.read_bytes() != plotly_js().encode("utf-8"))):
        raise OutputError(f"{where}{js}: exists and is not plotly.js {get_plotlyjs_version()}; "
                          "move it away or pass --self-contained")
    return p


def write_page(path: str | Path, page: str, *, self_contained: bool = False, flag: str = "", force: bool = False) -> Path:
    """Write ``page`` atomically; unless ``self_contained``, first :data:`PLOTLY_JS` beside it
    when it is not there yet (see :func:`check_page`)."""
    p = check_page(path, self_contained, flag, force)
    if not self_contained and not (p.parent / PLOTLY_JS).exists():
        atomic_write(p.parent / PLOTLY_JS, plotly_js())
    return atomic_write(p, page)


# ---------------------------------------------------------------- the plan page
def _shown_labels(plan: PlanResult, top: int = 4) -> set[str]:
    """Configurations drawn at first: the ``top`` ranked and the best per hardware."""
    ranked = [plan.configs[i] for i in plan.ranking if plan.configs[i].error is None]
    shown = {c.label for c in ranked[:top]}
    seen: set[str] = set()
    for c in ranked:
        if c.hw_name not in seen:
            seen.add(c.hw_name)
            shown.add(c.label)
    return shown


def _legend_note(shown: int, total: int, which: str = "the top ranked and the best per hardware") -> str:
    if shown >= total:
        return ""
    return f'<p class="note">{shown} of {total} drawn ({which}); click a legend entry to show the others.</p>'



def plan_report_html(plan: PlanResult, *, self_contained: bool = False) -> str:
    """The plan report page (see module docstring)."""
    plan = plan.model_copy(update={"configs": [c.model_copy(update={"accuracy": published_rows(c, plan.model)})
                                               for c in plan.configs]})  # only numbers measured on this model
    runnable = [c for c in plan.configs if c.error is None]
    st = config_styles(runnable)
    best = [(c.label, c.best) for c in runnable if c.best is not None]
    shown = _shown_labels(plan)
    host = [c.label for i in plan.ranking for c in [plan.configs[i]]
            if c.error is None and (c.kv_bytes_per_token_host > 0 or uses_host([(c.label, c.best)] if c.best else []))]
    memory = [GPU_KV, HOST_KV] if host else [GPU_KV]
    shown |= set(host[:1])  # the host panel shows the best configuration that uses host memory
    slo = plan.slo
    target = f", target {plan.target_rate_per_s:g} req/s" if plan.target_rate_per_s else ""
    meta = html.escape(
        f"model {plan.model} · trace {plan.trace_name or plan.trace.spec} "
        f"({plan.trace_requests or plan.trace.num_requests} requests, seed "
        f"{plan.trace.seed}, mean prompt {plan.trace_mean_prompt_tokens:.0f} / output "
        f"{plan.trace_mean_output_tokens:.0f} tokens) · SLO {slo.describe().replace('<=', '≤')}"
        f"{target} · rate search to {plan.search.rel_tol:.0%} · kvsim {plan.kvsim_version}")
    note = _legend_note(len(shown & {c.label for c in runnable}), len(runnable))
    aligned = ('<p class="note">Each configuration runs at its own max SLO rate; the x axis is requests arrived '
               "(simulated time x rate), so the runs line up request by request.</p>")
    sections: list[tuple[str, Body]] = [("Recommendation", recommendation_html(plan))]
    notes = plan_notes(plan)
    if notes:  # (the notes `kvsim plan` printed: how rows were priced, which rates are likely high)
        sections.append(("Notes", '<ul class="note">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"))
    sections += [
        ("Latency vs throughput", [note, latency_throughput_figure(runnable, slo, shown)]),
        ("Latency CDFs at each configuration's max SLO rate", [note, cdf_figure(best, st, shown, SloLines.of_plan(slo))]),
        ("KV memory at each configuration's max SLO rate",
         [aligned, timeline_figure(best, memory, "KV memory over the run", st, shown, per_arrival=True)]),
        ("Batch size and queue at each configuration's max SLO rate",
         timeline_figure(best, [BATCH, QUEUE], "Batch and queue over the run", st, shown, per_arrival=True)),
        ("Pareto view", pareto_figure(runnable, plan.model)),
    ]
    return render_page(f"kvsim plan: {plan.model}", meta, sections, self_contained=self_contained)


def write_plan_report(plan: PlanResult, path: str | Path, *, self_contained: bool = False) -> Path:
    """Write the plan's page to ``path`` atomically (a failed write leaves the old one), with
    plotly.js beside it unless ``self_contained``."""
    return write_page(path, plan_report_html(plan, self_contained=self_contained), self_contained=self_contained)


# ---------------------------------------------------------------- the simulation page
def _shown_runs(runs: list[tuple[str, PointResult]], n: int = SHOWN_RUNS) -> set[str]:
    """All runs when there are at most ``n``; else the first (the baseline) and the highest throughput."""
    if len(runs) <= n:
        return {label for label, _ in runs}
    rest = sorted(runs[1:], key=lambda r: -r[1].throughput_output_tok_s)
    return {runs[0][0]} | {label for label, _ in rest[: n - 1]}


def _cell(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _one_run_table(p: PointResult) -> str:
    rows = [("requests completed / rejected", f"{p.requests_completed} / {p.requests_rejected}"),
            ("output throughput", f"{p.throughput_output_tok_s:,.1f} tok/s"), ("preemptions", str(p.preemptions)),
            ("peak GPU KV / capacity (per GPU)", f"{p.peak_kv_gpu_bytes / 1e9:.2f} / {p.kv_gpu_capacity_bytes / 1e9:.2f} GB"),
            ("peak host KV / capacity", f"{p.peak_kv_host_bytes / 1e9:.2f} / {p.kv_host_capacity_bytes / 1e9:.2f} GB")]
    for name, st in (("TTFT", p.ttft_s), ("TPOT", p.tpot_s), ("ITL (token gaps)", p.itl_s), ("E2EL", p.e2el_s)):
        rows.append((f"{name} mean / p50 / p90 / p99 (s)", " / ".join(_cell(getattr(st, k), ".4g")
                                                                       for k in ("mean", "p50", "p90", "p99"))))
    return '<table class="rec">' + "".join(f'<tr><td class="l">{html.escape(k)}</td><td>{html.escape(v)}</td></tr>'
                                           for k, v in rows) + "</table>"


_RUN_COLUMNS = ("method", "completed / rejected", "output tok/s", "TTFT p50 (s)", "TTFT p99 (s)", "TPOT p50 (s)",
                "TPOT p99 (s)", "ITL p99 (s)", "E2EL p50 (s)", "peak GPU KV / capacity (GB)", "peak host KV (GB)",
                "preemptions")


def _runs_table(runs: list[tuple[str, PointResult]]) -> str:
    """One row per method, in the order given."""
    body = []
    for label, p in runs:
        cells = [label, f"{p.requests_completed} / {p.requests_rejected}", f"{p.throughput_output_tok_s:,.1f}",
                 _cell(p.ttft_s.p50, ".4g"), _cell(p.ttft_s.p99, ".4g"), _cell(p.tpot_s.p50, ".4g"),
                 _cell(p.tpot_s.p99, ".4g"), _cell(p.itl_s.p99, ".4g"), _cell(p.e2el_s.p50, ".4g"),
                 f"{p.peak_kv_gpu_bytes / 1e9:.2f} / {p.kv_gpu_capacity_bytes / 1e9:.2f}",
                 f"{p.peak_kv_host_bytes / 1e9:.2f}", str(p.preemptions)]
        body.append("<tr>" + "".join(f'<td class="l">{html.escape(c)}</td>' if i == 0 else f"<td>{html.escape(c)}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _RUN_COLUMNS)
    return f'<table class="rec"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def simulation_html(runs: list[tuple[str, PointResult]], title: str, meta: str = "", *, slo_ttft_s: float | None = None,
                    slo_tpot_s: float | None = None, slo_itl_s: float | None = None, slo_level: float | None = None,
                    self_contained: bool = False) -> str:
    """Page of one simulation, or of several methods on the same trace (one table row and one
    curve per method): summary, TTFT/TPOT/ITL CDFs with the SLO lines, KV memory with capacity
    lines (host panel only when a method keeps KV on the host), batch and queue over time."""
    shown = _shown_runs(runs)
    note = _legend_note(len(shown), len(runs), "the first and the highest output throughput")
    memory = [GPU_KV, HOST_KV] if uses_host(runs) else [GPU_KV]
    slo = SloLines(ttft_s=slo_ttft_s, tpot_s=slo_tpot_s, itl_s=slo_itl_s, level=slo_level)
    table = _one_run_table(runs[0][1]) if len(runs) == 1 else _runs_table(runs)
    return render_page(title, html.escape(meta), [
        ("Summary", table), ("Latency CDFs", [note, cdf_figure(runs, None, shown, slo)]),
        ("KV memory over time", timeline_figure(runs, memory, "KV memory over time", None, shown)),
        ("Batch size and queue over time", timeline_figure(runs, [BATCH, QUEUE], "Batch and queue over time", None, shown)),
    ], self_contained=self_contained)


def single_run_html(point: PointResult, title: str, meta: str = "", **kw) -> str:
    """:func:`simulation_html` of one run."""
    return simulation_html([(title, point)], title, meta, **kw)


def simulation_report(results: list, path: str | Path, *, title: str | None = None,
                      self_contained: bool = False, force: bool = False) -> Path:
    """Write the page of ``kvsim.sim.replica.simulate`` results (one per method, same trace) to ``path``."""
    s = results[0].summary
    runs = [(r.summary.get("method", f"run {i}"), digest(r)) for i, r in enumerate(results, start=1)]
    if title is None:
        what = s.get("method") if len(results) == 1 else f"{len(results)} methods"
        title = f"{s.get('model')} on {s.get('hw')} - {what}"
    dis = s.get("disagg")
    keys = ("hw", "model", "trace", "tp") if dis else ("hw", "model", "trace", "tp", "replicas", "router")
    meta = " · ".join(f"{k} {s[k]}" for k in keys if k in s)
    if dis:  # (a disaggregated run: its layout, not replicas behind a router)
        meta += (f" · disaggregated {dis['prefill_instances']}:{dis['decode_instances']} (prefill {dis['prefill_hw']} "
                 f"TP{dis['prefill_tp']}, decode {dis['decode_hw']} TP{dis['decode_tp']}), KV link {dis['kv_link']}")
    rate = runs[0][1].rate_per_s
    meta += (f" · {runs[0][1].num_requests} requests at {rate:.3g} req/s" if 0 < rate < float("inf")
             else f" · {runs[0][1].num_requests} requests arriving together")
    slo = s.get("slo") or {}  # kvsim.slo.verdict; without it (API runs), the goodput SLOs
    bounds = ({c["metric"]: c["bound_s"] for c in slo["checks"]} if slo.get("checks") else
              {m: s[k] for m, k in (("ttft", "slo_ttft_s"), ("tpot", "slo_tpot_s")) if s.get(k) is not None})
    slos = [f"{m.upper()} ≤ {fmt_duration(b)}" for m, b in bounds.items()]
    meta += (" · SLO " + " ".join(filter(None, [slo.get("percentile"), ", ".join(slos)]))) if slos else ""
    page = simulation_html(runs, title, meta, slo_ttft_s=bounds.get("ttft"), slo_tpot_s=bounds.get("tpot"),
                           slo_itl_s=bounds.get("itl"), slo_level=LEVELS.get(slo.get("percentile", "")),
                           self_contained=self_contained)
    return write_page(path, page, self_contained=self_contained, force=force)


def single_run_report(sim_result, path: str | Path, title: str | None = None, *, self_contained: bool = False) -> Path:
    """:func:`simulation_report` of one result."""
    return simulation_report([sim_result], path, title=title, self_contained=self_contained)
