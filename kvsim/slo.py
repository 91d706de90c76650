"""Service-level objectives with one meaning in every command (``simulate``, ``plan``, the API).

Metric names are vLLM's (``benchmarks/benchmark_serving.py``):

* ``ttft``: time to first token of a request, seconds.
* ``tpot``: a request's mean time per output token, ``(finish - first token) / (output - 1)``
  for requests with >= 2 output tokens, seconds. A per-request quantity, so an SLO on it
  also decides each request's goodput (vLLM ``--goodput tpot:``, DistServe).
* ``itl``: inter-token latency, every gap between consecutive tokens of all requests pooled,
  seconds. Not a per-request quantity: only its percentile can be judged.

An :class:`SLO` bounds the ``percentile`` of each metric it names: ``p99 TTFT <= ttft_s``,
``p99 TPOT <= tpot_s`` (at least 99% of requests have their mean TPOT within ``tpot_s``),
``p99 ITL <= itl_s``.

A rejected request (it can never fit, or is past the context) misses every bound: the per-request
metrics' percentiles are taken over all requests with the rejected ranked last
(:func:`kvsim.sim.metrics.ranks_with_misses`; the summary's ``slo_ranks_s``), and at most
``floor((1 - q)(N - 1))`` of the N requests may be rejected (ITL pools token gaps, of which a
rejected request has none).
``kvsim simulate`` and ``kvsim plan`` judge a run with the same :func:`judge`.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kvsim.durations import parse_optional_duration_s
from kvsim.errors import ConfigError

Percentile = Literal["p50", "p90", "p99"]
PERCENTILES: tuple[str, ...] = ("p50", "p90", "p99")
#: a plan's token bound when neither a TPOT nor an ITL bound is given: ITL <= 100 ms (kvsim plan, kvsim.plan)
PLAN_DEFAULT_ITL_S = 0.1
#: percentile -> quantile level
LEVELS: dict[str, float] = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
#: metric -> (CLI flag, summary key of its stats); summary keys as in kvsim.sim.metrics.summarize
METRICS: dict[str, tuple[str, str]] = {"ttft": ("--slo-ttft", "ttft_s"), "tpot": ("--slo-tpot", "tpot_s"),
                                       "itl": ("--slo-itl", "itl_s")}


class SLO(BaseModel):
    """Upper bounds, seconds, on the ``percentile`` of TTFT, TPOT and ITL (module docstring);
    None: that metric is not judged. At least one bound."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    tpot_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    itl_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    percentile: Percentile = "p99"

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data):
        """Plans written by earlier kvsim versions named the token bound ``tbt_s`` with ``tbt_metric``
        ``tbt`` (pooled gaps: ITL) or ``tpot``; read them with today's names."""
        if isinstance(data, dict) and "tbt_s" in data:
            data = dict(data)
            metric = data.pop("tbt_metric", "tbt")
            data["tpot_s" if metric == "tpot" else "itl_s"] = data.pop("tbt_s")
        return data

    @model_validator(mode="after")
    def _some_bound(self) -> "SLO":
        if self.ttft_s is None and self.tpot_s is None and self.itl_s is None:
            raise ValueError("an SLO needs at least one of ttft_s, tpot_s, itl_s")
        return self

    def bounds(self) -> dict[str, float]:
        """metric -> bound, seconds, for the metrics judged (ttft, tpot, itl order)."""
        return {m: b for m, b in (("ttft", self.ttft_s), ("tpot", self.tpot_s), ("itl", self.itl_s)) if b is not None}

    def checks(self, values: dict[str, float | None]) -> list[tuple[str, float | None, float, bool]]:
        """``(metric, value, bound, met)`` per judged metric, ``values`` holding each metric's
        value at :attr:`percentile`, seconds. A missing TTFT (no request completed) misses;
        a missing TPOT or ITL (every output one token long) meets its bound."""
        out = []
        for metric, bound in self.bounds().items():
            v = values.get(metric)
            out.append((metric, v, bound, (v is not None and v <= bound) if metric == "ttft" else (v is None or v <= bound)))
        return out

    def describe(self) -> str:
        """``"p99 TTFT <= 2 s, ITL <= 100 ms"``."""
        return f"{self.percentile} " + ", ".join(f"{m.upper()} <= {fmt_duration(b)}" for m, b in self.bounds().items())


def summary_values(slo: SLO, summary: dict) -> dict[str, float | None]:
    """Each metric's value at ``slo.percentile`` from a simulation summary (``kvsim simulate``'s
    summary.json: ``ttft_s``, ``tpot_s``, ``itl_s`` stats; with rejections the per-request metrics'
    ``slo_ranks_s``, a rank among the rejected as ``inf``), seconds."""
    ranks = summary.get("slo_ranks_s") or {}
    return {m: (ranked(ranks[m].get(slo.percentile)) if m in ranks else (summary.get(key) or {}).get(slo.percentile))
            for m, (_, key) in METRICS.items()}


def ranked(v: float | None) -> float:
    """A ``slo_ranks_s`` percentile as a value to judge: None (its rank falls among the rejected) is ``inf``."""
    return math.inf if v is None else v


def rejections_allowed(slo: SLO, total: int) -> int:
    """Rejected requests a run of ``total`` may have and meet the SLO: ``floor((1 - q) (N - 1))``, the most that
    leave the ``q`` rank ``q (N - 1)`` among the served (p99 of 200: 1; p50 of 200: 99)."""
    return round(100.0 * (1.0 - LEVELS[slo.percentile])) * max(total - 1, 0) // 100


def judge(slo: SLO, values: dict[str, float | None], rejected: int, total: int) -> tuple[bool, list]:
    """``(met, checks)``: every bound holds at its percentile (``values``: :func:`summary_values`)
    and at most :func:`rejections_allowed` requests were rejected."""
    checks = slo.checks(values)
    return rejected <= rejections_allowed(slo, total) and all(ok for *_, ok in checks), checks


def verdict(slo: SLO, summary: dict) -> dict:
    """The SLO judged on a simulation summary (:func:`judge`): JSON-able, ``met``, one entry per
    metric (``value_s`` None and ``among_rejected`` when its percentile's rank falls among the
    rejected requests) and the rejected requests against those allowed."""
    total, rejected = int(summary.get("requests_total") or 0), int(summary.get("requests_rejected") or 0)
    met, checks = judge(slo, summary_values(slo, summary), rejected, total)
    allowed = rejections_allowed(slo, total)
    return {"percentile": slo.percentile, "met": met,
            "checks": [{"metric": m, "value_s": None if v == math.inf else v, "bound_s": b, "met": ok,
                        **({"among_rejected": True} if v == math.inf else {})} for m, v, b, ok in checks],
            "rejected": {"requests": rejected, "allowed": allowed, "met": rejected <= allowed}}


def fmt_duration(seconds: float, digits: int = 4) -> str:
    """``0.05`` -> ``"50 ms"``, ``2.0`` -> ``"2 s"``, ``121.0`` -> ``"121 s"`` (``digits``
    significant digits): the units people write SLOs in."""
    return f"{seconds * 1e3:.{digits}g} ms" if seconds < 1 else f"{seconds:.{digits}g} s"


def parse_slo(ttft: str | float | None = None, tpot: str | float | None = None, itl: str | float | None = None,
              percentile: str = "p99") -> SLO | None:
    """SLO from CLI text (durations: ``50ms``, ``2s``; a bare number is seconds); None when no
    bound is given. A bad value is a one-line ConfigError naming the flag."""
    vals = {m: parse_optional_duration_s(None if t is None else str(t), METRICS[m][0])
            for m, t in (("ttft", ttft), ("tpot", tpot), ("itl", itl))}
    p = str(percentile).strip().lower()
    if p not in PERCENTILES:
        raise ConfigError(f"--percentile must be one of {', '.join(PERCENTILES)}, got '{percentile}'")
    if all(v is None for v in vals.values()):
        return None
    return SLO(ttft_s=vals["ttft"], tpot_s=vals["tpot"], itl_s=vals["itl"], percentile=p)  # type: ignore[arg-type]


def legacy_tbt_flag(command: str, tbt: str | None, tbt_metric: str | None) -> tuple[str, str] | None:
    """The hidden ``--slo-tbt`` of earlier versions, mapped to the flag with the meaning it had in
    ``command`` (``simulate``: each request's mean, ``--slo-tpot``; ``plan``: pooled gaps,
    ``--slo-itl``, or ``--slo-tpot`` with ``--tbt-metric tpot``): ``(metric, text)`` or None."""
    if tbt is None:
        if tbt_metric is not None:
            raise ConfigError("--tbt-metric was replaced by --slo-itl (pooled token gaps) and --slo-tpot (each "
                              "request's mean time per output token)")
        return None
    m = (tbt_metric or ("tpot" if command == "simulate" else "tbt")).strip().lower()
    if m not in ("tbt", "tpot"):
        raise ConfigError(f"--tbt-metric must be tbt or tpot, got '{tbt_metric}'")
    return ("tpot" if m == "tpot" else "itl"), tbt
