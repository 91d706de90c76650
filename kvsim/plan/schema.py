"""Data of a capacity plan: what is asked (SLO, configurations, trace) and what is found
(per-rate simulation digests, per-configuration search results, the ranked plan).

Everything here is plain JSON-able pydantic so results can be cached, saved per
configuration (``--out DIR``) and read back by ``kvsim report DIR``.
Units are in field names: ``_s`` seconds, ``_per_s`` per second, ``_bytes`` bytes.
"""

from __future__ import annotations

import math

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from kvsim.hardware.spec import Price  # the GPU spec's price, carried as is into results
from kvsim.slo import (  # noqa: F401 (re-exported: plan's SLO is kvsim.slo's)
    LEVELS,
    PERCENTILES,
    SLO,
    Percentile,
    fmt_duration,
    judge,
    parse_slo,
    ranked,
)

ROUTERS: tuple[str, ...] = ("round-robin", "least-outstanding", "prefix-aware")
#: quantile levels stored for the CDF plots (0, 1, ..., 100 %)
CDF_LEVELS = tuple(i / 100 for i in range(101))


class _Frozen(BaseModel):
    # (allow_inf_nan=False: a saved plan with NaN or inf, e.g. hand-edited, is refused when read back, not drawn as "nan")
    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class Stats(_Frozen):
    """Mean and percentiles of one latency, seconds (None when no request completed)."""

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def at(self, percentile: str) -> float | None:
        return getattr(self, percentile)


class TimelineDigest(_Frozen):
    """Engine state over simulated time, downsampled for plots (max per group, so peaks survive),
    summed over replicas. The serialized digest of :class:`kvsim.sim.metrics.Timeline`, the
    gauge sampler a simulation fills (see :func:`kvsim.plan.digest.digest`)."""

    t_s: list[float] = []
    gpu_kv_bytes: list[float] = []
    host_kv_bytes: list[float] = []
    batch_size: list[float] = []
    queue_len: list[float] = []


#: a plan's trace should last this many mean end-to-end latencies at the max rate found. Measured
#: (docs/plan.md): Llama-3.1-8B on one H100, synthetic-burstgpt, p99 TTFT <= 2 s and ITL <= 0.2 s:
#: 500 / 1,000 / 2,000 / 4,000 requests last 1.5 / 4.4 / 9.1 / 20 lifetimes and find 53.8 / 32.0 /
#: 28.1 / 26.9 req/s: within ~5 % of the longest run from about 10 on. A threshold for a note, not a
#: correction: kvsim does not extrapolate the rate.
STEADY_SPAN_OVER_E2EL = 10.0


def fmt_lifetimes(x: float) -> str:
    """Request lifetimes a trace lasted, to 0.1, never rounded up to STEADY_SPAN_OVER_E2EL: a burst is below it, so
    9.96 reads 9.9, not 10.0 (or ``1e+01``; user audit); 0.19975 reads 0.2."""
    text = f"{x:.1f}"
    if x < STEADY_SPAN_OVER_E2EL <= float(text):
        text = f"{math.floor(x * 10) / 10:.1f}"
    return text


def short_of_steady(lifetimes: float | None) -> bool:
    """A run spanning fewer than :data:`STEADY_SPAN_OVER_E2EL` request lifetimes served a burst (its
    first requests' ramp and its last ones' drain), not a sustained rate."""
    return lifetimes is not None and lifetimes < STEADY_SPAN_OVER_E2EL


class PointResult(_Frozen):
    """Digest of one simulation: one configuration at one offered rate."""

    rate_per_s: float
    replicas: int = 1
    num_requests: int
    ttft_s: Stats
    itl_s: Stats = Field(validation_alias=AliasChoices("itl_s", "tbt_s"))  # tbt_s: plans of earlier versions
    tpot_s: Stats = Stats()
    e2el_s: Stats = Field(validation_alias=AliasChoices("e2el_s", "e2e_s"))
    throughput_output_tok_s: float
    requests_completed: int
    requests_rejected: int
    rejected_reasons: dict[str, int] = {}  # reject reason (kvsim.sim.inputs.REJECT_REASONS) -> requests
    preemptions: int = 0
    peak_kv_gpu_bytes: float = 0.0
    peak_kv_host_bytes: float = 0.0
    duration_s: float = 0.0
    sim_wall_s: float = 0.0
    ttft_quantiles_s: list[float] = []  # at CDF_LEVELS, completed requests
    itl_quantiles_s: list[float] = Field([], validation_alias=AliasChoices("itl_quantiles_s", "tbt_quantiles_s"))
    tpot_quantiles_s: list[float] = []  # per-request mean time per output token (requests with >= 2 tokens)
    timeline: TimelineDigest | None = None
    kv_gpu_capacity_bytes: float = 0.0  # KV pool of one replica, per GPU (0: not recorded)
    kv_host_capacity_bytes: float = 0.0
    # the timeline's capacity lines where instances differ (disaggregated: prefill + decode pools summed);
    # None: the instances are alike, so it is the per-replica capacity x replicas
    kv_gpu_capacity_sum_bytes: float | None = None
    kv_host_capacity_sum_bytes: float | None = None
    kv_offload: dict | None = None  # KV offload tiers, all replicas (kvsim.sim.kv_tiers.merge_summaries); None: off
    # with rejections: TTFT and TPOT percentiles over all requests, the rejected ranked last (the summary's
    # slo_ranks_s; a None percentile: its rank falls among the rejected); empty without rejections
    slo_ranks_s: dict[str, Stats] = {}

    @property
    def lifetimes(self) -> float | None:
        """How many mean end-to-end latencies the run's arrivals span: ``(N - 1) / rate / E2EL mean``
        (the trace is rescaled so that ``(N - 1) / span = rate``); None without two requests, a rate or
        a completed request."""
        if self.num_requests < 2 or not self.rate_per_s > 0 or not self.e2el_s.mean:
            return None
        return (self.num_requests - 1) / self.rate_per_s / self.e2el_s.mean

    def meets(self, slo: SLO) -> bool:
        """True if every bound of the SLO holds at its percentile, the rejected requests ranked as misses,
        and at most ``1 - q`` of the requests were rejected (:func:`kvsim.slo.judge`, as ``kvsim simulate``)."""
        return self.num_requests > 0 and judge(slo, self.slo_values(slo.percentile), self.requests_rejected,
                                               self.num_requests)[0]

    def misses(self, slo: SLO) -> str:
        """What this point missed of the SLO, e.g. ``"p99 TTFT 37.0 s > 2 s"`` (and ...)."""
        pct = slo.percentile
        missed = [("no request completed" if v is None else
                   f"{pct} {metric.upper()} among the rejected requests" if v == math.inf else
                   f"{pct} {metric.upper()} {fmt_duration(v)} > {fmt_duration(bound)}")
                  for metric, v, bound, ok in slo.checks(self.slo_values(pct)) if not ok]
        if self.requests_rejected:
            missed.append(f"{self.requests_rejected}/{self.num_requests} requests rejected")
        return " and ".join(missed) or "SLO missed"

    def values_at(self, percentile: str) -> dict[str, float | None]:
        """TTFT, TPOT and ITL at ``percentile`` over the completed requests, seconds (what tables show)."""
        return {"ttft": self.ttft_s.at(percentile), "tpot": self.tpot_s.at(percentile),
                "itl": self.itl_s.at(percentile)}

    def slo_values(self, percentile: str) -> dict[str, float | None]:
        """:meth:`values_at` with TTFT and TPOT over all requests, the rejected ranked last (``inf``: the
        rank falls among them): the ``values`` the SLO is judged on (:func:`kvsim.slo.summary_values`)."""
        v = self.values_at(percentile)
        v.update({metric: ranked(stats.at(percentile)) for metric, stats in self.slo_ranks_s.items()})
        return v

    def light(self) -> "PointResult":
        """The same digest without CDF quantiles and timeline (for search curves)."""
        return self.model_copy(update={"ttft_quantiles_s": [], "itl_quantiles_s": [], "tpot_quantiles_s": [],
                                       "timeline": None})


class ConfigSpec(_Frozen):
    """One serving configuration: rebuilt from names in each worker."""

    hw: str
    model: str
    method: str  # "name" or "name:key=value,..."
    tp: int = 1
    replicas: int = 1
    router: str = "least-outstanding"
    weight_dtype: str = "auto"  # bf16, or fp16 on GPUs without bf16 (V100)
    kv_dtype: str = "auto"  # the activation dtype
    gpu_memory_utilization: float = 0.9
    calibration: str | None = None
    expert_offload: str | None = None  # the text of --expert-offload (MoE experts in host memory), re-parsed per TP

    @property
    def gpus(self) -> int:
        return self.tp * self.replicas


class TraceSpec(_Frozen):
    """Which requests: a trace name/path/synthetic spec, how many, which seed."""

    spec: str = "synthetic-burstgpt"
    num_requests: int = Field(500, ge=1)
    seed: int = Field(0, ge=0)
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    # trace files (kvsim.traces.load_trace): format, column mapping, arrivals, strictness
    format: str | None = None
    columns: str | None = None
    time_unit: str | None = None
    arrivals: str | None = None
    strict: bool = False
    tokenizer: str | None = None


class SearchOptions(_Frozen):
    """Rate search knobs (see :mod:`kvsim.plan.ratesearch`)."""

    rel_tol: float = Field(0.05, gt=0, lt=1)
    growth: float = Field(2.0, gt=1)
    min_rate_per_s: float = Field(1e-3, gt=0)
    max_rate_per_s: float = Field(1e4, gt=0)
    start_rate_per_s: float | None = None  # None: analytic guess rounded to a power of growth


class TargetResult(_Frozen):
    """Fewest replicas of this (hardware, method, TP) that meet the SLO at the target rate."""

    rate_per_s: float
    replicas: int | None  # None: not found within the replica cap
    gpus: int | None
    point: PointResult | None = None
    tried: list[int] = []  # replica counts simulated at the target rate
    output_tok_per_s: float = 0.0  # the workload's demand: target rate x mean output tokens of the trace

    @property
    def span_over_e2el(self) -> float | None:
        """How many mean end-to-end latencies the check at the target lasted (:attr:`point`'s
        :attr:`PointResult.lifetimes`; None without a point)."""
        return None if self.point is None else self.point.lifetimes

    @property
    def transient(self) -> bool:
        """The check was a burst (:func:`short_of_steady`): the count is a lower bound (a longer trace
        needs as many replicas or more)."""
        return short_of_steady(self.span_over_e2el)

    @property
    def verified(self) -> bool:
        """A replica count was found and its check was long enough to stand by."""
        return self.replicas is not None and not self.transient


class ConfigResult(_Frozen):
    """Search outcome for one configuration."""

    config: ConfigSpec
    label: str
    hw_name: str
    gpu_name: str
    method_name: str
    method_label: str
    gpus: int
    price: Price | None = None
    slo: SLO
    max_rate_per_s: float = 0.0
    upper_rate_per_s: float | None = None
    capped: bool = False
    probes: list[PointResult] = []  # light digests, in probe order
    best: PointResult | None = None  # full digest at max_rate_per_s
    cost_usd_per_mtok: float | None = Field(None, ge=0)
    kv_bytes_per_token_gpu: float = 0.0
    kv_bytes_per_token_host: float = 0.0
    accuracy: list[dict] = []  # published (METHODS.md §4) rows: benchmark, model, config, score, ...
    target: TargetResult | None = None
    error: str | None = None  # why the configuration cannot run (e.g. weights do not fit)
    infeasible: str | None = None  # why no rate met the SLO (max_rate_per_s == 0)
    evaluations: int = 0  # simulations actually run (cache misses)
    cache_hits: int = 0

    @property
    def runs(self) -> bool:
        """The configuration has an answer: it met the SLO at some rate."""
        return self.error is None and self.max_rate_per_s > 0

    @property
    def arrival_span_s(self) -> float | None:
        """Seconds over which the trace's requests arrive at the max rate: ``(N - 1) / rate``
        (the rate search rescales the trace to that mean rate); None without an answer."""
        b = self.best
        if not self.runs or b is None or b.num_requests < 2:
            return None
        return (b.num_requests - 1) / b.rate_per_s

    @property
    def span_over_e2el(self) -> float | None:
        """How many request lifetimes the trace lasts at the max rate (:attr:`best`'s
        :attr:`PointResult.lifetimes`; None without an answer)."""
        return self.best.lifetimes if self.runs and self.best is not None else None

    @property
    def transient(self) -> bool:
        """At its max rate the trace was a burst (:func:`short_of_steady`): its max rate overstates
        what the configuration sustains (a longer trace gives a lower one)."""
        return short_of_steady(self.span_over_e2el)

    @property
    def ruler_avg(self) -> float | None:
        """Published RULER average of this model and configuration, or None."""
        for row in self.accuracy:
            if row.get("benchmark") == "RULER-avg":
                return float(row["score"])
        return None


class PlanResult(_Frozen):
    """A whole plan: inputs, per-configuration results, and the ranking (indices, best first)."""

    kvsim_version: str
    model: str
    trace: TraceSpec
    trace_name: str = ""
    trace_requests: int = 0  # requests actually in the trace (a file may hold fewer than asked)
    trace_notice: str | None = None
    trace_mean_prompt_tokens: float = 0.0
    trace_mean_output_tokens: float = 0.0
    slo: SLO
    target_rate_per_s: float | None = None
    search: SearchOptions = SearchOptions()
    configs: list[ConfigResult] = []
    ranking: list[int] = []
    wall_s: float = 0.0
    # provenance, as in `kvsim simulate`'s summary.json: every engine setting (SimConfig, defaults
    # filled) and, per configuration in ``configs`` order, its label, max SLO rate and
    # kvsim.plan.evaluate.config_provenance (method params, deployment, spec sha256s)
    engine: dict = {}
    provenance: list[dict] = []

    def nothing_runs(self) -> str | None:
        """Why no configuration could even be built (every row an error), or None: ``kvsim plan``
        exits with it and :func:`kvsim.plan` raises it."""
        if not self.configs or any(c.error is None for c in self.configs):
            return None
        first = self.configs[0]
        return (f"no configuration can run: {first.label}: {first.error}"
                + (f" (and {len(self.configs) - 1} more; the note of each row says why)" if len(self.configs) > 1 else ""))


def cost_usd_per_mtok(price: Price | None, gpus: int, output_tok_per_s: float) -> float | None:
    """``usd_per_hour * gpus / (tokens/s * 3600) * 1e6``: dollars per million output tokens."""
    if price is None or output_tok_per_s <= 0:
        return None
    return price.usd_per_hour * gpus / (output_tok_per_s * 3600.0) * 1e6
