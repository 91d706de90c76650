"""``kvsim validate papers``: published measurements (METHODS.md section 2) vs kvsim's defaults.

No torch on this path. The table data (conditions, published value, units, source, why a row
may miss) is ``papers.yaml`` in this package; this module evaluates each row with
:func:`kvsim.pricing.estimate.estimate` (or the simulator for whole-batch runs) on the shipped specs
with *default* efficiencies - nothing is tuned to the targets.

Row kinds (``kind``):

* ``estimate``: one estimate; ``metric`` is a field of the result or a derived quantity
  (``tok_s``, ``tbt_ms``, ``prefill_tok_s``, ``gpu_gib``/``gpu_gb`` (with kvsim's prefill activation
  reserve), ``gpu_gib_weights_kv``/``gpu_gb_weights_kv`` (weights + KV + method buffers: what a
  decode-time measurement holds), ``host_gb``, ``max_batch``, ``oom``, ``hash_tables_gb``, ``projector_kb``,
  ``kv_bytes_per_token`` (GPU KV bytes per cached token), ``decode_attn_bytes`` (HBM bytes of the method's
  decode-attention parts for one sequence: the KV it loads, for memory-access ratios)).
* ``ratio``: ``metric`` of ``num`` over ``den`` (two estimates; ``invert`` flips it).
* ``batch_run``: ``batch`` requests arrive together (prompt + output tokens) and are served
  with ``kvsim.sim.replica.simulate`` (whole-prompt prefill); value = generated tokens / makespan.
* ``unexpressible``: kept with the reason.

Error: ``predicted / published - 1``; for a published range, 0 inside it, else the distance to
the nearest end relative to that end. Targets (issue): memory within 5 %, latency/throughput
within 25 %.
"""

from __future__ import annotations

import statistics
import warnings
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kvsim.costmodel.deployment import build_deployment
from kvsim.methods import make_method
from kvsim.pricing.estimate import MAX_BATCH, estimate
from kvsim.sim.replica import SimConfig, simulate
from kvsim.specbase import read_yaml
from kvsim.traces.base import Trace

PAPERS_YAML = Path(__file__).with_name("papers.yaml")
HW_DIR = Path(__file__).with_name("papers_hw")
MODEL_DIR = Path(__file__).with_name("papers_models")  # models some rows need, kept out of the catalog
TARGETS = {"memory": 0.05, "latency": 0.25, "throughput": 0.25, "ratio": 0.25, "count": 0.25}
GIB, GB = 2.0**30, 1e9


class Conditions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hw: str
    model: str
    method: str = "full"
    context: int
    batch: int | Literal["max"] = 1
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    prompt: int | None = None
    output: int | None = None
    #: the engine's memory cap (vLLM's knob, default 0.9); an engine without one (FlexGen allocates
    #: its weights and KV cache directly on the whole GPU) is 1.0
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    row: int
    paper: str
    quantity: str
    kind: Literal["estimate", "ratio", "batch_run", "unexpressible"] = "estimate"
    category: Literal["memory", "latency", "throughput", "ratio", "count"] = "throughput"
    metric: str = "tok_s"
    units: str = ""
    published: float | list[float] | None = None
    conditions: Conditions | None = None
    num: Conditions | None = None
    den: Conditions | None = None
    invert: bool = False
    source: str
    note: str = ""
    reason: str = ""
    in_sample: str = ""  # why a default was informed by this row (then it is no independent check)


class Result(BaseModel):
    id: str
    row: int
    paper: str
    quantity: str
    category: str
    units: str
    published: float | list[float] | None
    predicted: float | None
    error: float | None
    within_target: bool | None
    target: float | None
    note: str
    source: str
    expressible: bool
    in_sample: str = ""


@lru_cache(maxsize=1)
def load_rows() -> tuple[Row, ...]:
    data = read_yaml(PAPERS_YAML)
    return tuple(Row.model_validate(r) for r in data["rows"])


def _hw(name: str) -> str:
    p = HW_DIR / f"{name}.yaml"
    return str(p) if p.is_file() else name


def _model(name: str) -> str:
    p = MODEL_DIR / f"{name}.yaml"
    return str(p) if p.is_file() else name


@cache
def _deployment(hw: str, model: str, weight_dtype: str, kv_dtype: str, gpu_memory_utilization: float = 0.9):
    return build_deployment(_hw(hw), _model(model), weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                            gpu_memory_utilization=gpu_memory_utilization)


def _estimate(c: Conditions):
    dep = _deployment(c.hw, c.model, c.weight_dtype, c.kv_dtype, c.gpu_memory_utilization)
    meth = make_method(c.method, dep)
    # the papers' harnesses (Hugging Face loops, FlexGen) cap a batch by memory only, not by vLLM's max_num_seqs
    return estimate(dep, meth, c.context, c.batch, batch_cap=MAX_BATCH), meth


def metric_of(c: Conditions, metric: str) -> float:
    r, meth = _estimate(c)
    if metric == "tok_s":
        return float(r.throughput_tok_s or 0.0)
    if metric == "tbt_ms":
        return float(r.tpot_s) * 1e3
    if metric == "ttft_ms":
        return float(r.ttft_s) * 1e3
    if metric == "prefill_tok_s":
        return c.context / float(r.ttft_s)
    if metric == "gpu_gib":
        return r.memory_gpu_bytes / GIB
    if metric == "gpu_gb":
        return r.memory_gpu_bytes / GB
    if metric in ("gpu_gib_weights_kv", "gpu_gb_weights_kv"):  # decode-time residency: no prefill activation reserve
        return (r.memory_gpu_bytes - r.activation_reserve_bytes) / (GIB if metric.startswith("gpu_gib") else GB)
    if metric == "host_gb":
        return r.memory_host_bytes / GB
    if metric == "max_batch":
        return float(r.max_batch)
    if metric == "oom":
        return 1.0 if r.max_batch == 0 else 0.0
    if metric == "hash_tables_gb":
        return float(meth.host_breakdown(float(c.context))["hash_tables"]) / GB
    if metric == "projector_kb":
        return meth.projector_bytes() / 1e3
    if metric == "kv_bytes_per_token":
        return float(r.kv_bytes_per_token_gpu)
    if metric == "decode_attn_bytes":  # HBM bytes of the method's decode parts, one sequence at `context`
        return float(meth.decode_cost(np.array([float(c.context)])).total("hbm_bytes"))
    raise ValueError(f"unknown metric {metric}")


def batch_run(c: Conditions) -> tuple[float | None, str]:
    """Generated tokens per second of ``batch`` requests arriving together, simulated; None and
    why when kvsim does not serve them all (e.g. their KV does not fit): no number is made up."""
    dep = _deployment(c.hw, c.model, c.weight_dtype, c.kv_dtype, c.gpu_memory_utilization)
    B = int(c.batch)
    tr = Trace("batch", np.zeros(B), np.full(B, c.prompt, dtype=np.int64), np.full(B, c.output, dtype=np.int64))
    cfg = SimConfig(max_num_seqs=B, max_num_batched_tokens=B * (c.prompt + 1), chunked_prefill=True,
                    enable_prefix_caching=False)
    res = simulate(dep, make_method(c.method, dep), tr, cfg)
    s = res.summary
    if s["requests_completed"] < B:
        why = ", ".join(f"{n} {r}" for r, n in sorted(s.get("rejected_reasons", {}).items())) or "not completed"
        return None, (f"NO PREDICTION: kvsim serves {s['requests_completed']} of {B} requests ({why}; "
                      f"gpu_memory_utilization {c.gpu_memory_utilization:g})")
    return B * c.output / s["makespan_s"], ""


def evaluate(row: Row) -> Result:
    pred: float | None = None
    if row.kind == "estimate":
        pred = metric_of(row.conditions, row.metric)
    elif row.kind == "ratio":
        a, b = metric_of(row.num, row.metric), metric_of(row.den, row.metric)
        pred = (b / a if row.invert else a / b) if (b if not row.invert else a) else float("inf")
    why = ""
    if row.kind == "batch_run":
        pred, why = batch_run(row.conditions)
    err = _error(pred, row.published)
    tgt = TARGETS.get(row.category)
    return Result(id=row.id, row=row.row, paper=row.paper, quantity=row.quantity, category=row.category, units=row.units,
                  published=row.published, predicted=pred, error=err,
                  within_target=None if err is None or tgt is None else abs(err) <= tgt, target=tgt,
                  note=(row.note if row.kind != "unexpressible" else row.reason) + (f"; {why}" if why else ""),
                  source=row.source,
                  expressible=row.kind != "unexpressible", in_sample=row.in_sample)


def _error(pred: float | None, pub: Any) -> float | None:
    if pred is None or pub is None:
        return None
    if isinstance(pub, list):
        lo, hi = min(pub), max(pub)
        if lo <= pred <= hi:
            return 0.0
        end = lo if pred < lo else hi
        return pred / end - 1.0
    if pub == 0:
        return None if pred != 0 else 0.0
    return pred / pub - 1.0


def run_papers() -> list[Result]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in load_rows():
            out.append(evaluate(row))
    return out


def _fmt(x, units: str) -> str:
    if x is None:
        return "-"
    if isinstance(x, list):
        return "-".join(_fmt(v, "") for v in x) + (f" {units}" if units else "")
    s = f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return s + (f" {units}" if units else "")


def render_table(rows: list[Result], markdown: bool = False) -> str:
    """The papers table as fixed-width text (or markdown) with a summary line per category."""
    head = ["id", "row", "paper", "quantity", "published", "kvsim", "error", "ok", "check", "note"]
    lines = []
    for r in rows:
        ok = "-" if r.within_target is None else ("yes" if r.within_target else "NO")
        err = "-" if r.error is None else f"{r.error * 100:+.1f}%"
        note = r.note if (r.within_target is False or not r.expressible) else ""
        if r.in_sample:
            note = f"IN-SAMPLE: {r.in_sample}" + (f"; {note}" if note else "")
        lines.append([r.id, str(r.row), r.paper, r.quantity, _fmt(r.published, r.units), _fmt(r.predicted, r.units), err, ok,
                      "in-sample" if r.in_sample else "held-out", note])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in ln) + " |" for ln in lines]
    else:
        n = len(head) - 1  # columns padded to a width (the note is last)
        w = [max(len(h), *(len(ln[i]) for ln in lines)) if i < n else 0 for i, h in enumerate(head)]
        fmt = lambda cells: "  ".join(c.ljust(w[i]) if i < n else c for i, c in enumerate(cells))
        out = [fmt(head), fmt(["-" * x for x in w[:n]] + ["-" * 4])] + [fmt(ln) for ln in lines]
    out.append("")
    out.append(summary_line(rows))
    return "\n".join(out)


def summary_line(rows: list[Result]) -> str:
    """Per category: rows within target and the median |error| over all rows, and over the held-out
    rows alone where some rows are in-sample (a default was informed by them)."""
    parts = []
    for cat in ("memory", "latency", "throughput", "ratio"):
        sel = [r for r in rows if r.category == cat and r.error is not None]
        if sel:
            ok = sum(1 for r in sel if r.within_target)
            med = statistics.median(abs(r.error) for r in sel)
            text = f"{cat}: {ok}/{len(sel)} within {TARGETS[cat] * 100:.0f}% (median |error| {med * 100:.1f}%"
            held = [r for r in sel if not r.in_sample]
            if len(held) < len(sel):
                text += (f"; held-out rows only: {sum(1 for r in held if r.within_target)}/{len(held)}, median "
                         f"{statistics.median(abs(r.error) for r in held) * 100:.1f}%" if held else "; no held-out row")
            parts.append(text + ")")
    n_un = sum(1 for r in rows if not r.expressible)
    parts.append(f"not expressible: {n_un}")
    n_in = sum(1 for r in rows if r.in_sample)
    if n_in:
        parts.append(f"in-sample rows: {n_in} (labelled; they informed a default)")
    return "; ".join(parts)
