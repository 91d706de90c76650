"""Capacity planning: for every (hardware, method setting), the highest request rate that
meets a latency SLO, its cost per million output tokens, and (with a target rate) the
fewest GPUs (replicas x TP) that sustain the target.

* **Workload.** One trace (``TraceSpec``: spec, number of requests, seed) loaded once per
  configuration; at rate R the *same requests* arrive at times scaled so that
  ``(N - 1) / span = R`` (BurstGPT README's "RPS scaling"; :func:`kvsim.plan.evaluate.at_rate`).
* **Verdict.** A simulation meets the SLO when the chosen percentile of every metric it bounds
  (TTFT, TPOT, ITL; TTFT and TPOT over all requests with the rejected ranked last) is within its
  bound and at most ``1 - q`` of the requests were rejected (:func:`kvsim.slo.judge`, the test
  ``kvsim simulate`` applies; :meth:`PointResult.meets`).
* **Max rate.** :func:`kvsim.plan.ratesearch.search_max_rate`: bracket by doubling from an analytic
  guess rounded to a power of 2, then geometric bisection to ``rel_tol`` (default 5 %).
* **Target rate.** For each TP in ``tp_choices`` (dividing the head count, within the node):
  per-replica max rate bracket ``[r1, r1+)``; start at ``ceil(target / r1+)`` replicas, walk down
  (doubling the step) or up (widening after misses) to bracket the fewest replicas whose cluster
  simulation (router, enough requests for each replica to see the load it was searched with:
  :func:`kvsim.plan.result.target_check_requests`) meets the SLO at the target, then bisect
  (:func:`kvsim.plan.result._replicas_for_target`). GPUs = replicas x TP.
* **Cost.** ``price.usd_per_hour * GPUs / (output tok/s * 3600) * 1e6`` USD per million
  output tokens (price from the GPU YAML, with its source and date), output tok/s being the
  workload's demand at the rate priced: ``rate * mean output tokens`` at the max rate
  (max-rate mode) or at the target (target mode: the same for every configuration, so costs
  differ only by GPUs x price).
* **Ranking.** Target mode: fewest GPUs, then lowest price per hour, then most headroom
  (per-replica max rate x replicas / target). Otherwise: lowest cost per million output
  tokens, then highest rate per GPU. Configurations that cannot run go last with their reason.

Simulations are cached by their inputs (:mod:`kvsim.plan.sweep`) and configurations run in
parallel, one :func:`kvsim.plan.result.run_config` each; the evaluator is injectable for tests.
"""

from __future__ import annotations

import json
import math
import re
import time
from itertools import product
from pathlib import Path

import numpy as np
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kvsim import __version__
from kvsim.errors import ConfigError, KvsimError, SpecError
from kvsim.fileio import write_tree
from kvsim.hardware import load_system
from kvsim.models import load_model
from kvsim.plan.evaluate import build, config_provenance, load_plan_trace
from kvsim.plan.notes import plan_notes
from kvsim.plan.result import ConfigTask, Evaluator, run_config
from kvsim.plan.schema import (
    ROUTERS,
    SLO,
    ConfigResult,
    ConfigSpec,
    PlanResult,
    SearchOptions,
    TraceSpec,
)
from kvsim.plan.sweep import run_tasks
from kvsim.traces.arrivals import MAX_RATE_PER_S
from kvsim.sim.config import SimConfig
from kvsim.specbase import first_problem

TP_CHOICES = (1, 2, 4, 8)


#: the target rates a plan searches for, requests/s (a trace rescaled beyond them underflows)
TARGET_RATE_RANGE = (1e-9, MAX_RATE_PER_S)


class PlanRequest(BaseModel):
    """Everything a plan depends on (the CLI builds it; tests build it directly)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    hws: list[str]
    methods: list[str]  # method specs, sweeps already expanded
    trace: TraceSpec = TraceSpec()
    slo: SLO
    target_rate_per_s: float | None = Field(None, ge=TARGET_RATE_RANGE[0], le=TARGET_RATE_RANGE[1])  # requests/s
    tp: int = Field(1, ge=1)
    replicas: int = Field(1, ge=1)
    tp_choices: list[Annotated[int, Field(ge=1)]] = list(TP_CHOICES)
    max_replicas: int = Field(64, ge=1)
    router: str = "least-outstanding"
    weight_dtype: str = "auto"  # bf16, or fp16 on GPUs without bf16 (V100)
    kv_dtype: str = "auto"  # the activation dtype
    gpu_memory_utilization: float = 0.9
    calibration: str | None = None
    expert_offload: str | None = None  # --expert-offload text (kvsim.costmodel.expert_offload_option)
    search: SearchOptions = SearchOptions()
    sim_options: dict = {}


def whole_numbers(text: str, name: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (a value given twice is tried once: 1,1 gave two equal rows); a
    one-line ConfigError naming ``name`` for anything but whole numbers >= 1."""
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{name} expects a comma list of whole numbers, got '{text}'") from None
    if not out or min(out) < 1:
        raise ConfigError(f"{name} expects whole numbers >= 1, got '{text}'")
    return list(dict.fromkeys(out))


def check_search_mode(target: bool, layout: bool, bounds: bool, names: tuple[str, str, str], prefix: str = "") -> None:
    """Each mode's own options (one given to the other mode was ignored, silently: user audits):
    ``layout`` (TP, replicas) fixes one layout, for max-rate mode; ``bounds`` (TP choices, replica
    cap) bound the ``target`` search. ``names``: how the caller's user writes (layout, target, bounds)."""
    layout_words, target_words, bounds_words = names
    if target and layout:
        raise ConfigError(f"{prefix}{layout_words} fix one layout (max-rate mode); {target_words} searches layouts: give "
                          f"{bounds_words} instead")
    if not target and bounds:
        raise ConfigError(f"{prefix}{bounds_words} bound the {target_words} search; without {target_words} give {layout_words}")


def expand_sweeps(methods: list[str], sweeps: list[str]) -> list[str]:
    """Add the cartesian product of ``--sweep METHOD.PARAM=V1,V2,...`` values per method.

    ``["full"], ["kivi.bits=2,4", "kivi.group=32,64"]`` ->
    ``["full", "kivi:bits=2,group=32", "kivi:bits=2,group=64", "kivi:bits=4,group=32", "kivi:bits=4,group=64"]``.
    """
    grid: dict[str, dict[str, list[str]]] = {}
    for s in sweeps:
        head, eq, values = s.partition("=")
        name, dot, param = head.strip().partition(".")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not (eq and dot and name and param and vals):
            raise ConfigError(f"--sweep expects METHOD.PARAM=V1,V2,... (e.g. kivi.bits=2,4), got '{s}'")
        params = grid.setdefault(name.lower(), {})
        if param in params:  # (the second replaced the first's values: configurations vanished)
            raise ConfigError(f"--sweep {name}.{param} given twice; give all its values in one: "
                              f"{name}.{param}={','.join(params[param] + vals)}")
        params[param] = vals
    out = list(methods)
    for name, params in grid.items():
        keys = list(params)
        for combo in product(*(params[k] for k in keys)):
            spec = f"{name}:" + ",".join(f"{k}={v}" for k, v in zip(keys, combo))
            if spec not in out:
                out.append(spec)
    return out


def rank(configs: list[ConfigResult], target: bool) -> list[int]:
    """Indices best first (see module docstring)."""
    inf = math.inf

    def key(i: int):
        c = configs[i]
        if c.error is not None:
            return (2, inf, inf, inf, 0.0, c.label) if target else (2, inf, inf, c.label)
        if target:  # fewest GPUs, then cheapest per hour, then most headroom over the target
            gpus = c.target.gpus if c.target and c.target.gpus else None
            if not gpus:
                return (1, inf, inf, inf, 0.0, c.label)
            usd_h = gpus * c.price.usd_per_hour if c.price else inf
            headroom = c.max_rate_per_s * (c.target.replicas or 0) / c.target.rate_per_s
            return (0 if c.target.verified else 1, gpus, usd_h, -headroom, c.label)  # (a short check: a lower bound)
        ok = c.max_rate_per_s > 0
        # rows whose max rate stands first: a rate measured on a burst (a short trace, or still feasible at the
        # search's top rate) is high, and its cost low, by the artefact (as layout_order does for --disagg)
        return (0 if ok else 1, c.capped or c.transient, c.cost_usd_per_mtok if c.cost_usd_per_mtok is not None else inf,
                -c.max_rate_per_s / max(c.gpus, 1), c.label)

    return sorted(range(len(configs)), key=key)


def config_specs(req: PlanRequest) -> list[ConfigSpec]:
    """Every configuration to search, without duplicates (``kivi`` and ``kivi:bits=2`` are one).

    Names and params are resolved here so that unknown hardware, models or methods fail fast
    with one line; a method that cannot run a deployment (ConfigError) stays in the plan and
    reports why in its result.
    """
    out: list[ConfigSpec] = []
    seen: set[tuple] = set()
    for hw, method in product(req.hws, req.methods):
        base = ConfigSpec(hw=hw, model=req.model, method=method, tp=req.tp, replicas=req.replicas, router=req.router,
                          weight_dtype=req.weight_dtype, kv_dtype=req.kv_dtype,
                          gpu_memory_utilization=req.gpu_memory_utilization, calibration=req.calibration,
                          expert_offload=req.expert_offload)
        try:
            dep, m = build(base if req.target_rate_per_s is None else base.model_copy(update={"tp": 1}))
            key = (dep.system.name, m.label())
        except SpecError:
            raise
        except ConfigError:
            key = (hw, method)
        if key in seen:
            continue
        seen.add(key)
        if req.target_rate_per_s is None:
            out.append(base)
            continue
        n_gpus, heads = load_system(hw).num_gpus, load_model(req.model).num_heads
        tps = [t for t in req.tp_choices if t <= n_gpus and heads % t == 0]
        if not tps:
            raise ConfigError(f"no TP degree in {req.tp_choices} fits {hw} ({n_gpus} GPUs, {heads} heads)")
        out += [base.model_copy(update={"tp": t, "replicas": 1}) for t in tps]
    return out


def run_plan(req: PlanRequest, *, jobs: int | None = None, executor: str = "process", cache_dir: str | Path | None = None,
             progress: bool = True, evaluator: Evaluator | None = None) -> PlanResult:
    """Search every configuration of ``req`` (in parallel) and rank them."""
    if req.router not in ROUTERS:
        raise ConfigError(f"unknown router '{req.router}'; choices: {', '.join(ROUTERS)}")
    t0 = time.perf_counter()
    trace = load_plan_trace(req.trace)
    specs = config_specs(req)
    tasks = [ConfigTask(config=c, trace=req.trace, slo=req.slo, search=req.search, sim_options=dict(req.sim_options),
                        target_rate_per_s=req.target_rate_per_s, max_replicas=req.max_replicas,
                        cache_dir=None if cache_dir is None else str(cache_dir), evaluator=evaluator) for c in specs]
    results = [ConfigResult.model_validate(r) for r in
               run_tasks(run_config, tasks, jobs=jobs, executor=executor, progress=progress, description="plan")]
    prov = [{"label": c.label, "max_rate_per_s": c.max_rate_per_s, **config_provenance(c.config, trace)}
            for c in results]
    return PlanResult(
        kvsim_version=__version__, model=req.model, trace=req.trace, trace_name=trace.name,
        trace_requests=len(trace), trace_notice=trace.notice,
        trace_mean_prompt_tokens=float(np.mean(trace.prompt_tokens)),
        trace_mean_output_tokens=float(np.mean(trace.output_tokens)), slo=req.slo,
        target_rate_per_s=req.target_rate_per_s, search=req.search, configs=results,
        ranking=rank(results, req.target_rate_per_s is not None), wall_s=time.perf_counter() - t0,
        engine=SimConfig(**req.sim_options).model_dump(mode="json"), provenance=prov,
    )


#: kvsim's namespace in a plan directory: load_plan reads every file matching it
PLAN_GLOBS = ("configs/*.json",)


#: key of a configuration's JSON holding what is derived from its fields (written for readers, dropped on load)
DERIVED = "derived"


def config_json(c: ConfigResult) -> dict:
    """A configuration as JSON, with ``derived``: ``transient`` (its max rate was measured on a burst: likely
    high), ``span_over_e2el`` (request lifetimes the trace lasted at that rate) and ``rate_measured`` (it ran,
    and neither ``capped`` nor transient), so a script sees the caveats the table prints."""
    d = c.model_dump(mode="json")
    d[DERIVED] = {"transient": c.transient, "span_over_e2el": c.span_over_e2el,
                  "rate_measured": c.runs and not c.capped and not c.transient,
                  "host_share": _host_share(c.config)}
    return d


def _host_share(config: ConfigSpec) -> float | None:
    """Share of its node's host (memory, DRAM bandwidth, CPU) each replica was priced with: a full node's
    ``1 / (num_gpus // tp)`` (:func:`kvsim.plan.evaluate.simulate_point`); None for a system kvsim cannot load."""
    try:
        return 1.0 / load_system(config.hw).replicas_per_node(config.tp)
    except KvsimError:
        return None


def plan_json(plan: PlanResult) -> dict:
    """The plan as JSON (``--json``), its configurations with :func:`config_json`'s ``derived`` caveats,
    and ``notes``: the sentences ``kvsim plan`` prints as ``note:`` lines (:func:`kvsim.plan.notes.plan_notes`)."""
    d = plan.model_dump(mode="json")
    d["configs"] = [config_json(c) for c in plan.configs]
    d["notes"] = plan_notes(plan)
    return d


def plan_files(plan: PlanResult) -> dict[str, str]:
    """``plan.json`` (inputs, ranking) and ``configs/NNN-<label>.json`` (one per configuration): name -> text."""
    files = {}
    for i, c in enumerate(plan.configs):
        slug = re.sub(r"[^a-zA-Z0-9.=-]+", "_", c.label).strip("_")[:80]
        files[f"configs/{i:03d}-{slug}.json"] = json.dumps(config_json(c), indent=1, allow_nan=False)
    files["plan.json"] = plan.model_copy(update={"configs": []}).model_dump_json(indent=1)
    return files


def save_plan(plan: PlanResult, out_dir: str | Path, *, extra: dict[str, str] | None = None, force: bool = False,
              inputs=()) -> Path:
    """Write :func:`plan_files` (and ``extra`` files, e.g. report.html) into ``out_dir``, all
    or nothing. Files of an earlier plan there are replaced or removed; a file kvsim did not
    write is never touched: one in the way (a name clash, or any ``configs/*.json``, which
    :func:`load_plan` would read) is an error unless ``force`` (then it is replaced/removed); a
    file of ``inputs`` (what the plan read) is never replaced."""
    write_tree(out_dir, {**plan_files(plan), **(extra or {})}, force=force, owned_globs=PLAN_GLOBS, inputs=inputs)
    return Path(out_dir)


def load_plan(out_dir: str | Path) -> PlanResult:
    """Read a directory written by :func:`save_plan`; the ranking is recomputed."""
    d = Path(out_dir)
    meta = d / "plan.json"
    if not d.exists():
        raise ConfigError(f"{d}: no such directory (expected the --out directory of `kvsim plan`)")
    if not meta.is_file():
        raise ConfigError(f"{d}: no plan.json here (expected the --out directory of `kvsim plan`)")
    where = meta
    try:
        plan = PlanResult.model_validate_json(meta.read_text())
        configs = []
        for where in sorted((d / "configs").glob("*.json")):
            data = json.loads(where.read_text())
            if isinstance(data, dict):
                data.pop(DERIVED, None)  # (recomputed from the fields)
            configs.append(ConfigResult.model_validate(data))
    except ValidationError as err:  # one line: the file, the field and what is wrong with it
        raise ConfigError(f"{where}: unreadable plan result: {first_problem(err, whole='(file)')}") from None
    except ValueError as err:
        raise ConfigError(f"{where}: unreadable plan result ({str(err).splitlines()[0]})") from None
    if not configs:
        raise ConfigError(f"{d}/configs: no configuration results")
    if plan.ranking and len(plan.ranking) != len(configs):  # (a report without the missing one: silently wrong)
        raise ConfigError(f"{d}: plan.json ranks {len(plan.ranking)} configurations but configs/ holds {len(configs)} "
                          "files; a configuration file is missing or was added (run the plan again)")
    return plan.model_copy(update={"configs": configs, "ranking": rank(configs, plan.target_rate_per_s is not None)})
