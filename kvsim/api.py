"""kvsim's Python API: the answers of ``kvsim estimate``, ``simulate`` and ``plan`` as objects.

Everything takes names (as on the command line) or spec objects::

    import kvsim
    r = kvsim.simulate(hw="h100", model="llama-3.1-8b", method="snapkv", trace="azure-conv",
                       rate=4.0, num_requests=200)
    r.summary["ttft_s"]["p50"], r.requests["ttft_s"][:5], r.to_pandas()

The functions build the same deployment, method and trace objects as the CLI (the library
never imports the CLI) and return typed results; ``to_pandas()`` needs the optional pandas
(``pip install pandas``), the rest does not. docs/api.md has a runnable example.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from kvsim.costmodel.deployment import Deployment, build_deployment, with_max_context
from kvsim.errors import ConfigError, TraceError
from kvsim.methods import KVMethod, make_method, split_methods
from kvsim.pricing.estimate import EstimateResult, answered, batch_engine_note, check_context, default_context
from kvsim.pricing.estimate import estimate as _estimate
from kvsim.pricing.input_notes import kv_dtype_notes, window_note
from kvsim.pricing.tts import TaskCost, TTSTask, off_gpu_note, task_cost, task_notes
from kvsim.pricing.tts_spec import parse_task
from kvsim.sim.config import SimConfig, SimResult
from kvsim.sim.replica import simulate as _simulate
from kvsim.sim.summary_extras import complete_summary, setup_notes
from kvsim.slo import PLAN_DEFAULT_ITL_S, SLO
from kvsim.specbase import first_problem
from kvsim.traces import Trace
from kvsim.traces import load_trace as _load_trace
from kvsim.traces.pipeline import LoadOptions, rescale_factor, shortfall_note

__all__ = ["deployment", "load_trace", "estimate", "tts_cost", "simulate", "plan", "Simulation"]


def _pandas():
    try:
        import pandas  # lazy: optional extra, only for to_pandas()
    except ImportError:
        raise ConfigError("to_pandas() needs pandas: pip install pandas") from None
    return pandas


#: the model when none is given (``kvsim``'s ``--model`` default)
DEFAULT_MODEL = "llama-3.1-8b"


def deployment(hw: str | Deployment = "a100", model: str | None = None, *, tp: int | None = None,
               weight_dtype: str = "auto", kv_dtype: str = "auto", gpu_memory_utilization: float = 0.9,
               calibration: str | None = None, expert_offload: str | None = None) -> Deployment:
    """A model (default ``llama-3.1-8b``) on a system (``hw``: a name from ``kvsim list hardware``,
    a YAML path or a :class:`kvsim.hardware.System`; ``model`` likewise, or a ModelSpec), TP 1
    unless ``tp``. A :class:`Deployment` passed as ``hw`` is returned unchanged: giving it another
    model, TP, dtype, memory fraction, calibration or expert offload is an error (they would be
    ignored). ``expert_offload``: the text of ``--expert-offload`` (docs/expert-offload.md)."""
    if isinstance(hw, Deployment):
        changed = [name for name, given, default in (
            ("model", model is not None and model is not hw.model and model not in (hw.model.name, *hw.model.aliases),
             False),
            ("tp", tp is not None and tp != hw.tp, False), ("weight_dtype", weight_dtype, "auto"),
            ("kv_dtype", kv_dtype, "auto"), ("gpu_memory_utilization", gpu_memory_utilization, 0.9),
            ("calibration", calibration, None), ("expert_offload", expert_offload, None)) if given != default]
        if changed:
            raise ConfigError(f"hw is a Deployment ({hw.model.name} on {hw.system.name}, TP {hw.tp}): "
                              f"{', '.join(changed)} cannot change it; pass names to build another")
        return hw
    if isinstance(tp, bool) or not isinstance(tp, (int, np.integer, type(None))):
        raise ConfigError(f"tp must be a whole number (got {tp!r})")
    for name, value in (("weight_dtype", weight_dtype), ("kv_dtype", kv_dtype)):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a dtype name such as 'bf16', 'fp8' or 'auto' (got {value!r})")
    if isinstance(gpu_memory_utilization, bool) or not isinstance(gpu_memory_utilization, (int, float, np.integer, np.floating)):
        raise ConfigError(f"gpu_memory_utilization must be a number in (0, 1] (got {gpu_memory_utilization!r})")
    if not isinstance(calibration, (str, Path, type(None))):
        raise ConfigError(f"calibration must be a name or a path (got {type(calibration).__name__})")
    if not isinstance(expert_offload, (str, type(None))):
        raise ConfigError(f"expert_offload must be the text of --expert-offload, e.g. 'miss=fetch' "
                          f"(got {type(expert_offload).__name__})")
    if isinstance(calibration, Path):
        calibration = str(calibration)
    return build_deployment(hw, DEFAULT_MODEL if model is None else model, tp=1 if tp is None else int(tp),
                            weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                            gpu_memory_utilization=gpu_memory_utilization, calibration=calibration,
                            expert_offload=expert_offload)


def load_trace(trace: str | Trace = "burstgpt", *, rate: float | None = None, num_requests: int | None = None,
               seed: int = 0, **options: Any) -> Trace:
    """A request trace by name (``kvsim trace list``), synthetic spec or file. ``rate`` rescales
    arrivals to that mean rate (requests/s); ``num_requests`` keeps the first N. A :class:`Trace`
    passed in gets the same two (first N, then the rate), and nothing else: the loading
    ``options`` apply to names and files only (an error, not ignored)."""
    num_requests = _whole("num_requests", num_requests, 1, allow_none=True)
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating))):
        raise ConfigError(f"rate must be a number of requests per second (got {rate!r})")
    if isinstance(trace, Path):
        trace = str(trace)
    if not isinstance(trace, (str, Trace)):
        raise ConfigError(f"trace must be a name (`kvsim list traces`), a file path or a Trace (got {type(trace).__name__}; "
                          "build a Trace from arrays with kvsim.traces.Trace(name, arrival_s, prompt_tokens, output_tokens))")
    if isinstance(trace, Trace):
        if options:
            raise ConfigError(f"{', '.join(sorted(options))}: loading options apply to a trace name or file, not to a "
                              "Trace object (pass the name, or load_trace(name, ...) first)")
        if num_requests is not None:
            trace = trace.head(num_requests)
        if rate is not None:
            opts = LoadOptions(rate=rate).validate()
            start = trace.arrival_s - trace.arrival_s[0] if len(trace) else trace.arrival_s
            trace = trace.with_arrivals(start * rescale_factor(start, opts, trace.name))
        return trace
    unknown = sorted(set(options) - _LOADING_OPTIONS)
    if unknown:
        raise ConfigError(f"load_trace: unknown argument(s) {', '.join(unknown)} (loading options: "
                          f"{', '.join(sorted(_LOADING_OPTIONS))})")
    return _load_trace(trace, rate=rate, num_requests=num_requests, seed=seed, **options)


#: keyword arguments of :func:`kvsim.traces.load_trace` that load_trace() passes on (read from its signature)
_LOADING_OPTIONS = frozenset(inspect.signature(_load_trace).parameters) - {"spec", "rate", "num_requests", "seed"}

#: keyword arguments of :func:`deployment` that estimate() and tts_cost() pass on (read from its signature)
_DEPLOYMENT_OPTIONS = frozenset(inspect.signature(deployment).parameters) - {"hw", "model", "tp"}


def _deployment_differences(a: Deployment, b: Deployment) -> list[str]:
    """What prices a method differently between two deployments (system, model, TP, dtypes, expert
    offload; the memory fraction sizes pools, not a method's bytes or costs): ``["kv_dtype fp8 vs bf16", ...]``."""
    if a is b:
        return []
    model_a = a.model.name if a.model == b.model or a.model.name != b.model.name else f"{a.model.name} (another spec)"
    pairs = (("system", a.system.name, b.system.name), ("model", model_a, b.model.name), ("tp", a.tp, b.tp),
             ("weight_dtype", a.weight_dtype, b.weight_dtype), ("kv_dtype", a.kv_dtype, b.kv_dtype),
             ("act_dtype", a.act_dtype, b.act_dtype),
             ("expert_offload", a.expert_offload and a.expert_offload.label(), b.expert_offload and b.expert_offload.label()))
    return [f"{name} {x} vs {y}" for name, x, y in pairs if x != y]


def _known_deployment_options(caller: str, options: dict) -> None:
    unknown = sorted(set(options) - _DEPLOYMENT_OPTIONS)
    if unknown:
        raise ConfigError(f"{caller}: unknown argument(s) {', '.join(unknown)} (deployment options: "
                          f"{', '.join(sorted(_DEPLOYMENT_OPTIONS))})")


def _method(method: str | KVMethod, dep: Deployment) -> KVMethod:
    if isinstance(method, KVMethod):
        diff = _deployment_differences(method.dep, dep)
        if diff:  # (its KV bytes and costs are the other deployment's)
            raise ConfigError(f"method {method.label()} was built for another deployment ({'; '.join(diff)}; the method's "
                              f"first): pass its name, or kvsim.methods.make_method(spec, kvsim.deployment(...)) for this one")
        return method
    if not isinstance(method, str):
        raise ConfigError(f"method must be a name (`kvsim list methods`) or a KVMethod (got {type(method).__name__})")
    return make_method(method, dep)


def _whole(name: str, value, low: int, allow_none: bool = False):
    """``value`` as an int >= ``low`` (a numpy integer too), or a one-line ConfigError."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be a whole number >= {low} (got {value!r})")
    return int(value)


def estimate(hw: str | Deployment = "a100", model: str | None = None, method: str | KVMethod = "full", *,
             context: int | None = None, batch: int | str = 1, tp: int | None = None,
             max_num_batched_tokens: int | None = 8192, max_num_seqs: int = 256, allow_long_context: bool = False,
             chunked_prefill: bool = True, **deployment_options: Any) -> EstimateResult:
    """Closed-form TTFT, TBT, throughput and memory of one configuration (``kvsim estimate``);
    ``batch="max"`` uses the largest batch that fits. ``context`` defaults to 4,096 tokens, or the
    model's max context if smaller; beyond the model's maximum it is a ConfigError unless
    ``allow_long_context`` (as ``--allow-long-context``). As ``kvsim estimate --json``: a batch that
    does not fit has no latencies (None; ``reason`` says why), and ``notes`` holds what the
    command prints as ``note:`` lines. ``chunked_prefill=False`` (``--no-chunked-prefill``): prompts
    prefill whole and the engine profiles a step of ``max(max_num_batched_tokens, context)`` tokens
    (``max_num_batched_tokens=None`` alone: the prompt)."""
    _known_deployment_options("estimate", deployment_options)
    if not isinstance(chunked_prefill, bool):
        raise ConfigError(f"chunked_prefill must be True or False (got {chunked_prefill!r})")
    max_num_batched_tokens = _whole("max_num_batched_tokens", max_num_batched_tokens, 1, allow_none=True)
    max_num_seqs = _whole("max_num_seqs", max_num_seqs, 1)
    dep = deployment(hw, model, tp=tp, **deployment_options)
    notes = list(dep.notes)
    if context is None:
        context, note = default_context(dep.model)
        notes.append(note)
    context = _whole("context", context, 1)
    notes.append(check_context(context, dep.model, allow_long_context))
    if allow_long_context is True and not isinstance(method, KVMethod):  # (as the CLI: the engine's context widened)
        dep = with_max_context(dep, context)[0]
    m = _method(method, dep)
    notes += [*kv_dtype_notes(deployment_options.get("kv_dtype", "auto"), [m]), window_note(dep.model)]
    r = _estimate(dep, m, context, batch, max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
                  chunked_prefill=chunked_prefill)
    notes.append(batch_engine_note(r.batch, max_num_seqs))
    return answered(r).model_copy(update={"notes": [n for n in notes if n] + list(r.notes)})


def tts_cost(hw: str | Deployment = "b200", model: str | None = None, method: str | KVMethod = "full",
             tts: str | TTSTask = "best-of-n=8,gen=16k", *, tp: int | None = None, batch: int | None = None,
             intensity: float | None = None, **deployment_options: Any) -> TaskCost:
    """Cost of one test-time-scaling task in Kinetics' eFLOPs (``kvsim estimate --tts``; a ``tts``
    string takes the same keys, whose ``batch``/``intensity`` win over the arguments'); the model
    is ``qwen3-8b`` unless given)."""
    _known_deployment_options("tts_cost", deployment_options)
    dep = deployment(hw, "qwen3-8b" if model is None and not isinstance(hw, Deployment) else model, tp=tp,
                     **deployment_options)
    batch = _whole("batch", batch, 1, allow_none=True)
    if intensity is not None and (isinstance(intensity, bool) or not isinstance(intensity, (int, float, np.integer, np.floating))):
        raise ConfigError(f"intensity must be a number of FLOPs per byte (got {intensity!r})")
    if isinstance(tts, str):
        opts = parse_task(tts)
        if opts.budget_eflops is not None:
            raise ConfigError("tts_cost prices a given task; budget= is for `kvsim estimate --tts`")
        tts, batch = opts.task, opts.batch if opts.batch is not None else batch
        intensity = opts.intensity if opts.intensity is not None else intensity
    elif not isinstance(tts, TTSTask):
        raise ConfigError(f"tts must be a task text such as 'best-of-n=8,gen=16k' or a TTSTask (got {type(tts).__name__})")
    m = _method(method, dep)
    cost = task_cost(dep, m, tts, batch=batch, intensity=intensity)
    # the notes `kvsim estimate --tts` prints, in its order
    notes = [*dep.notes, *kv_dtype_notes(deployment_options.get("kv_dtype", "auto"), [m]), window_note(dep.model),
             *task_notes(dep, tts), off_gpu_note(m.label()) if cost.off_gpu else None, *cost.notes]
    return replace(cost, notes=tuple(n for n in notes if n))


@dataclass
class Simulation:
    """One simulated run: ``summary`` (the JSON of ``kvsim simulate``), ``requests`` (per-request
    columns, trace order; times in seconds, NaN where not reached), ``timeline`` (gauges per
    time bucket) and the objects it ran on."""

    summary: dict
    requests: dict[str, np.ndarray]
    timeline: dict[str, np.ndarray]
    deployment: Deployment = field(repr=False)
    method: KVMethod = field(repr=False)
    trace: Trace = field(repr=False)
    raw: SimResult = field(repr=False)

    def to_pandas(self):
        """``requests`` as a pandas DataFrame (one row per request); ``.attrs['summary']`` holds
        the summary and ``.attrs['timeline']`` a DataFrame of the timeline."""
        pd = _pandas()
        df = pd.DataFrame(self.requests)
        df.attrs["summary"] = self.summary
        df.attrs["timeline"] = pd.DataFrame(self.timeline)
        return df


def _request_columns(res: SimResult) -> dict[str, np.ndarray]:
    rec = res.records
    cols = {
        "arrival_s": rec.arrival_s, "scheduled_s": rec.scheduled_s, "first_token_s": rec.first_token_s,
        "finish_s": rec.finish_s, "prompt_tokens": rec.prompt_tokens, "effective_prompt_tokens": rec.effective_prompt_tokens,
        "output_tokens": rec.output_tokens, "cached_tokens": rec.cached_tokens, "preemptions": rec.preemptions,
        "status": rec.status, "req_id": np.arange(len(rec.status)), "itl_max_s": rec.tbt_max_s,
    }
    # why each rejected request was (as requests.csv's reject_reason; "" for the others)
    reasons = np.full(len(rec.status), "", dtype=object)
    for i, why in (rec.reject_reason.items() if isinstance(rec.reject_reason, dict) else ()):
        reasons[int(i)] = why
    cols["reject_reason"] = reasons
    out = rec.output_tokens.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["ttft_s"] = rec.first_token_s - rec.arrival_s
        cols["e2el_s"] = rec.finish_s - rec.arrival_s
        cols["queue_s"] = rec.scheduled_s - rec.arrival_s
        # vLLM's TPOT: (last token - first token) / (output tokens - 1), for 2+ tokens
        cols["tpot_s"] = np.where(out >= 2, (rec.finish_s - rec.first_token_s) / np.maximum(out - 1, 1), np.nan)
    return {k: np.array(v) for k, v in cols.items()}  # (copies: the records share the trace's arrays)


def simulate(hw: str | Deployment = "a100", model: str | None = None, method: str | KVMethod = "full",
             trace: str | Trace = "burstgpt", *, rate: float | None = None, num_requests: int | None = None,
             seed: int = 0, tp: int | None = None, config: SimConfig | dict | None = None,
             slo_itl_s: float | None = None, percentile: str = "p99", allow_long_context: bool = False,
             **engine: Any) -> Simulation:
    """Replay ``trace`` through the serving simulator (``kvsim simulate``). Engine settings go in
    ``config`` (a :class:`SimConfig` or a dict) or as keywords with vLLM's names
    (``max_num_seqs=128, chunked_prefill=False, watermark=0.01``); the deployment options of
    :func:`deployment` (``weight_dtype="fp8"``, ``kv_dtype``, ...) are taken too. A trace file's
    loading options (``columns=``, ``time_unit=``...) go to :func:`load_trace` first. SLO bounds
    (``slo_ttft_s``, ``slo_tpot_s`` as engine settings, ``slo_itl_s``) are judged at ``percentile``
    as ``--slo-*`` are: the summary's ``slo``. ``summary`` is what ``kvsim simulate --json`` prints
    (its ``trace_spec``, the command's flags, aside). ``allow_long_context`` (as ``--allow-long-context``):
    requests beyond the model's max context are served (the context becomes the trace's longest
    request) instead of rejected; the method must then be given by name."""
    loading = sorted(set(engine) & set(LoadOptions.__dataclass_fields__))
    if loading:
        raise ConfigError(f"{', '.join(loading)}: trace loading options: load it first, "
                          f"kvsim.load_trace(path, {loading[0]}=...), and pass the Trace as trace=")
    # (gpu_memory_utilization is an engine setting too: it stays one, and sizes the KV pool)
    dep_options = {k: engine.pop(k) for k in sorted(set(engine) & _DEPLOYMENT_OPTIONS - set(SimConfig.model_fields))}
    dep = deployment(hw, model, tp=tp, **dep_options)
    tr = load_trace(trace, rate=rate, num_requests=num_requests, seed=seed)
    if not len(tr):
        raise TraceError(f"trace {tr.name!r} has no requests")
    wide = None
    if allow_long_context is not False:
        if allow_long_context is not True:
            raise ConfigError(f"allow_long_context must be True or False (got {allow_long_context!r})")
        if isinstance(method, KVMethod):
            raise ConfigError("allow_long_context: give the method by name (a KVMethod was built for the model's own context)")
        dep, wide = with_max_context(dep, tr.longest_request_tokens)
    m = _method(method, dep)
    if not isinstance(config, (SimConfig, dict, type(None))):
        raise ConfigError(f"config must be a SimConfig or a dict of engine settings (got {type(config).__name__})")
    if isinstance(config, SimConfig) and not engine:
        cfg = config
    else:  # (keywords over a SimConfig are validated as the dict's are: model_copy(update=) would not check them)
        base = config.model_dump() if isinstance(config, SimConfig) else {"seed": seed, **(config or {})}
        try:
            cfg = SimConfig(**{**base, **engine})
        except ValidationError as err:  # pydantic: one line naming the setting
            raise ConfigError(f"engine setting {first_problem(err)}") from None
    if cfg.gpu_memory_utilization is None:  # (the deployment's, recorded as the command records it)
        cfg = cfg.model_copy(update={"gpu_memory_utilization": dep.gpu_memory_utilization})
    try:
        slo = (None if cfg.slo_ttft_s is None and cfg.slo_tpot_s is None and slo_itl_s is None else
               SLO(ttft_s=cfg.slo_ttft_s, tpot_s=cfg.slo_tpot_s, itl_s=slo_itl_s, percentile=percentile))
    except ValidationError as err:
        raise ConfigError(f"SLO {first_problem(err)}") from None
    notes = setup_notes(dep, tr, chunked_prefill=cfg.chunked_prefill, max_num_batched_tokens=cfg.max_num_batched_tokens,
                        seed=seed, max_num_seqs=cfg.max_num_seqs)
    res = _simulate(dep, m, tr, cfg)
    short = shortfall_note(num_requests, len(tr), "num_requests")  # (as the command line says it)
    if short:
        notes.append(short)
    if wide:
        notes.insert(0, wide)
    complete_summary(res, m, tr, dep, spec=method if isinstance(method, str) else m.label(), slo=slo, extra_notes=tuple(notes),
                     kv_dtype=dep_options.get("kv_dtype", "auto"))
    return Simulation(res.summary, _request_columns(res), {k: np.asarray(v) for k, v in res.timeline.items()},
                      dep, m, tr, res)


def plan(model: str = "llama-3.1-8b", hws: list[str] | str = "a100", methods: list[str] | str = "full", *,
         slo_ttft_s: float | None = 2.0, slo_tpot_s: float | None = None, slo_itl_s: float | str | None = "default",
         percentile: str = "p99", trace: str = "synthetic-burstgpt",
         num_requests: int = 500, seed: int = 0, target_rate_per_s: float | None = None, tp: int = 1,
         jobs: int | None = None, executor: str = "serial", **request: Any):
    """Capacity plan (``kvsim plan``): for each hardware x method, the highest request rate that
    meets the SLO (or, with ``target_rate_per_s``, the fewest replicas). The SLO bounds the
    ``percentile`` of TTFT, of each request's TPOT and of the pooled ITL, seconds (None: not
    judged; :mod:`kvsim.slo`); ``slo_itl_s`` left at ``"default"`` is 0.1 s unless ``slo_tpot_s`` is
    given, as ``kvsim plan``'s ``--slo-itl``. ``hws`` and ``methods`` take lists or comma-separated text (``"a100,h100"``);
    ``hws`` and ``model`` also take YAML paths. Returns the
    :class:`kvsim.plan.schema.PlanResult` (``.configs``, ``.ranking``, ``.model_dump()``); a
    ConfigError when no configuration can run at all (as ``kvsim plan``)."""
    from kvsim.plan.schema import SLO, TraceSpec  # lazy: plan pulls in the process pool machinery
    from kvsim.plan.search import PlanRequest, check_search_mode, run_plan, whole_numbers  # lazy: as above

    hw_list = _names("hws", hws, lambda v: [h.strip() for h in v.split(",") if h.strip()])
    method_list = _names("methods", methods, lambda v: split_methods([v]))
    if isinstance(model, Path):
        model = str(model)
    if isinstance(slo_itl_s, str) and slo_itl_s == "default":  # as `kvsim plan`: 100 ms unless a TPOT bound is given
        slo_itl_s = PLAN_DEFAULT_ITL_S if slo_tpot_s is None else None
    for name, value in (("slo_ttft_s", slo_ttft_s), ("slo_tpot_s", slo_tpot_s), ("slo_itl_s", slo_itl_s),
                        ("target_rate_per_s", target_rate_per_s)):
        if value is not None and (isinstance(value, (bool, str)) or not isinstance(value, (int, float, np.integer, np.floating))
                                  or not 0 < float(value) < float("inf")):
            unit = "requests/s" if name.startswith("target") else "seconds"
            raise ConfigError(f"plan: {name} must be a finite number of {unit} > 0, or None (got {value!r})")
    check_search_mode(target_rate_per_s is not None, tp != 1 or request.get("replicas", 1) != 1,
                      "tp_choices" in request or "max_replicas" in request,
                      ("tp and replicas", "target_rate_per_s", "tp_choices and max_replicas"), prefix="plan: ")
    if isinstance(request.get("tp_choices"), str):  # (the CLI's comma text)
        request["tp_choices"] = whole_numbers(request["tp_choices"], "plan: tp_choices")
    # engine settings with vLLM's names (max_num_seqs=...), as simulate() takes them: into sim_options
    # (PlanRequest's own fields, e.g. gpu_memory_utilization, the deployment's, stay its own)
    engine = {k: request.pop(k) for k in sorted(set(request) & (set(SimConfig.model_fields) - set(PlanRequest.model_fields)))}
    if engine or "sim_options" in request:
        options = request.get("sim_options")
        if not isinstance(options, (dict, type(None))):
            raise ConfigError(f"sim_options must be a dict of engine settings (got {type(options).__name__})")
        request["sim_options"] = {**(options or {}), **engine}
        try:
            SimConfig(**request["sim_options"])  # (checked now: one line naming the setting)
        except ValidationError as err:
            raise ConfigError(f"engine setting {first_problem(err)}") from None
    try:
        req = PlanRequest(model=model, hws=hw_list, methods=method_list,
                          trace=TraceSpec(spec=trace, num_requests=num_requests, seed=seed),
                          slo=SLO(ttft_s=slo_ttft_s, tpot_s=slo_tpot_s, itl_s=slo_itl_s, percentile=percentile),
                          target_rate_per_s=target_rate_per_s, tp=tp, **request)
    except ValidationError as err:  # pydantic: one line naming the setting, as simulate() gives
        raise ConfigError(f"plan setting {first_problem(err, whole='plan')}") from None
    except TypeError as err:  # (an unknown keyword)
        raise ConfigError(f"plan: {err}") from None
    result = run_plan(req, jobs=jobs, executor=executor, progress=False)
    why = result.nothing_runs()
    if why is not None:
        raise ConfigError(why)
    return result


def _names(what: str, value, split) -> list[str]:
    """A list of names (or YAML paths) from a list, a comma-separated text or one Path."""
    items = [value] if isinstance(value, (str, Path)) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"plan: {what} must be a name, a comma-separated text or a list of them (got {type(value).__name__})")
    out: list[str] = []
    for v in items:
        if isinstance(v, Path):
            out.append(str(v))
        elif isinstance(v, str):
            out.extend(split(v))
        else:
            raise ConfigError(f"plan: {what} takes names or YAML paths, not {type(v).__name__} objects "
                              f"(kvsim plan runs each configuration by name, possibly in other processes)")
    if not out:
        raise ConfigError(f"plan: {what} is empty: give at least one")
    return out
