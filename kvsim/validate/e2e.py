"""``kvsim validate e2e``: the torch serving loop vs ``kvsim.sim.replica.simulate``, fitted on one
run and reported on another.

1. Calibrate (or load a calibration for) this machine's kernels: the hw spec + op-class
   efficiencies the simulator prices with.
2. Two traces from the same source (bundled Azure conversation rows), lengths capped (prompt <=
   256, output <= 32): the **report** trace = the first N requests at a rate where kvsim predicts
   the engine busy ~70 % of the time; the **fit** trace = the *next* N requests at
   ``fit_rate_factor`` (0.7) times that rate. Different requests and a different load.
3. Replay both through :func:`kvsim.validate.e2e_loop.serve` (wall clock), fit run first; a fixed
   kernel is timed before and after both loops, and other processes' CPU use and hypervisor
   steal time are read over them (:func:`kvsim.validate.cpuenv.contention_reasons`).
4. Fit the engine's per-step host overhead ``a + b * seqs + c * tokens`` (op classes ``step``,
   ``step_seq``, ``step_token``; :func:`kvsim.costmodel.transformer.step_overhead_cost`) on the
   **fit run's** steps only: ``scipy.optimize.least_squares`` of the relative step-time residual
   ``(kernels + overhead) / measured - 1`` (soft-L1 loss, coefficients >= 0).
5. Simulate the report trace with ``kvsim.sim.replica.simulate`` (Full KV, whole-prompt prefill:
   ``chunked_prefill`` with a token budget no step can exhaust, the same ``max_num_seqs``) and
   compare every report request's TTFT and ITL, the gaps between tokens (p50/p90/p99/mean) and every report step's time:
   all held out. ``checks``: |error| of TTFT and ITL (pooled token gaps) p50 and mean against ``tolerance``.

The command refuses to report (``contention.reasons`` non-empty) when the timings were contended;
a machine already busy when the fixed kernel is first timed is refused before the loops run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kvsim.costmodel.calibration import Calibration, apply_calibration
from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.hardware import GPUSpec, System
from kvsim.methods import make_method
from kvsim.pricing.step import StepModel
from kvsim.sim.replica import SimConfig, simulate
from kvsim.specbase import load_yaml_as
from kvsim.traces import load_trace
from kvsim.traces.base import Trace
from kvsim.validate import cpuenv, localhw

TARGET_UTIL = 0.7
PCTS = (50, 90, 99)
STEP_CLASSES = ("step", "step_seq", "step_token")
CHECKED = (("ttft_s", "p50"), ("ttft_s", "mean"), ("itl_s", "p50"), ("itl_s", "mean"))


@dataclass
class E2EConfig:
    num_requests: int = 64
    max_prompt: int = 256
    max_output: int = 32
    max_num_seqs: int = 8
    trace: str = "azure-conv"
    rate: float | None = None
    fit_rate_factor: float = 0.7
    dtype: str = "fp32"
    seed: int = 0
    tolerance: float = 0.25

    @staticmethod
    def make(quick: bool) -> E2EConfig:
        return E2EConfig(num_requests=24) if quick else E2EConfig()


def deployment(system: System, model, dtype: str):
    return Deployment(system=system, model=model, weight_dtype=dtype, kv_dtype=dtype, act_dtype=dtype)


def sim_config(cfg: E2EConfig, record: bool = True):
    budget = cfg.max_num_seqs * (cfg.max_prompt + 1)
    return SimConfig(max_num_seqs=cfg.max_num_seqs, max_num_batched_tokens=budget, chunked_prefill=True,
                     enable_prefix_caching=False, record_token_times=record)


def with_step_overhead(system: System, coef: dict[str, float]) -> System:
    """``system`` with the per-step host overhead ``coef`` (seconds per step / sequence / token)."""
    over = {op: {"overhead_s": float(coef.get(op, 0.0))} for op in STEP_CLASSES}
    return system.with_efficiencies(system.eff.with_overrides(over, source="e2e step fit"))


def load_traces(cfg: E2EConfig, rate: float | None) -> tuple[Trace, Trace]:
    """(report trace: requests [0, N) at ``rate``; fit trace: requests [N, 2N) at ``fit_rate_factor * rate``)."""
    n = cfg.num_requests
    both = load_trace(cfg.trace, limit=2 * n, max_prompt_tokens=cfg.max_prompt, max_output_tokens=cfg.max_output)
    if len(both) < 2 * n:
        raise ConfigError(f"--trace {cfg.trace} has {len(both)} requests; e2e needs {2 * n} (a fit run and a report run "
                         f"of {n} each)")
    report = _part(both, 0, n, rate)
    fit = _part(both, n, 2 * n, None if rate is None else rate * cfg.fit_rate_factor)
    return report, fit


def _part(tr: Trace, lo: int, hi: int, rate: float | None) -> Trace:
    """Requests ``[lo, hi)``, arrivals from 0, rescaled to ``rate`` requests/s ((N-1)/span) if given."""
    a = tr.arrival_s[lo:hi] - tr.arrival_s[lo]
    if rate is not None and hi - lo > 1 and a[-1] > 0:
        a = a * ((hi - lo - 1) / rate / a[-1])
    blocks = None if tr.prefix_blocks is None else tr.prefix_blocks[lo:hi]
    return replace(tr, arrival_s=a, prompt_tokens=tr.prompt_tokens[lo:hi], output_tokens=tr.output_tokens[lo:hi],
                   prefix_blocks=blocks)


def choose_rate(dep, cfg: E2EConfig, target: float = TARGET_UTIL) -> float:
    """Mean arrival rate (req/s) at which the simulated engine is busy ``target`` of the time."""
    meth = make_method("full", dep)
    base, _ = load_traces(cfg, None)

    def util(rate: float) -> float:
        tr = _part(base, 0, len(base), rate)
        rec = simulate(dep, meth, tr, sim_config(cfg, record=True)).records
        busy = _busy_time(rec.token_times, rec.arrival_s)
        span = float(np.nanmax(rec.finish_s) - rec.arrival_s.min())
        return busy / span if span > 0 else 1.0

    lo, hi = 0.01, 1.0
    while util(hi) < target and hi < 1e4:
        lo, hi = hi, hi * 2
    for _ in range(12):
        mid = (lo * hi) ** 0.5
        if util(mid) < target:
            lo = mid
        else:
            hi = mid
    return float((lo * hi) ** 0.5)


def _busy_time(token_times, arrival) -> float:
    """Union of [arrival, last token] intervals: time with work in the engine."""
    iv = sorted((float(a), float(t[-1])) for a, t in zip(arrival, token_times) if t is not None and len(t))
    total, cur_s, cur_e = 0.0, None, None
    for s, e in iv:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def predict_steps(dep, steps) -> np.ndarray:
    """kvsim's time of each measured step on ``dep`` (its per-step overhead included)."""
    sm = StepModel(dep, make_method("full", dep))
    out = []
    for s in steps:
        pn = np.asarray(s.prefill, dtype=float)
        out.append(float(sm.time_s(decode_ctx=np.asarray(s.decode_ctx, dtype=float), prefill_new=pn,
                                   prefill_cached=np.zeros_like(pn))))
    return np.array(out)


def step_counts(steps) -> tuple[np.ndarray, np.ndarray]:
    """([n] sequences that sample a token, [n] tokens) of each loop step (every prefill completes)."""
    seqs = np.array([len(s.decode_ctx) + len(s.prefill) for s in steps], dtype=float)
    tokens = np.array([len(s.decode_ctx) + sum(s.prefill) for s in steps], dtype=float)
    return seqs, tokens


def fit_step_overhead(kernels_s: np.ndarray, measured_s: np.ndarray, seqs: np.ndarray, tokens: np.ndarray) -> dict[str, float]:
    """``{step: a, step_seq: b, step_token: c}`` (seconds, >= 0) minimizing the soft-L1 loss of
    ``(kernels_s + a + b * seqs + c * tokens) / measured_s - 1`` over the steps given."""
    from scipy.optimize import least_squares  # lazy: scipy stays out of the core's imports

    scale = np.array([1e-3, 1e-5, 1e-6])  # s per step, per sequence, per token: the unknowns' sizes
    X = np.column_stack([np.ones_like(seqs), seqs, tokens]) * scale  # [n, 3]

    def resid(u: np.ndarray) -> np.ndarray:
        return (kernels_s + X @ u) / measured_s - 1.0

    u0 = np.array([max(0.0, float(np.median(measured_s - kernels_s))) / scale[0], 0.0, 0.0])
    r = least_squares(resid, u0, bounds=(0.0, np.inf), loss="soft_l1", f_scale=0.05, xtol=1e-12, ftol=1e-12)
    a, b, c = (r.x * scale).tolist()
    return {"step": a, "step_seq": b, "step_token": c}


def latency_stats(arrival: np.ndarray, token_times: list, idx) -> dict:
    ttft = np.array([token_times[i][0] - arrival[i] for i in idx])
    tbt = np.concatenate([np.diff(np.asarray(token_times[i])) for i in idx] or [np.zeros(0)])

    def st(x):
        if not x.size:
            return {"n": 0}
        return {"n": int(x.size), "mean": float(x.mean()), **{f"p{p}": float(np.percentile(x, p)) for p in PCTS}}

    return {"ttft_s": st(ttft), "itl_s": st(tbt)}


def rel_errors(sim: dict, real: dict) -> dict:
    out = {}
    for metric in ("ttft_s", "itl_s"):
        out[metric] = {k: (sim[metric][k] / real[metric][k] - 1.0) for k in ("mean", *(f"p{p}" for p in PCTS))
                       if real[metric].get(k)}
    return out


def step_errors(pred: np.ndarray, steps) -> dict:
    """Per-step |error| of the report run: all steps, single-sequence decode steps, the rest."""
    meas = np.array([s.end_s - s.start_s for s in steps])
    err = np.abs(pred / meas - 1.0)
    single = np.array([len(s.decode_ctx) == 1 and not s.prefill for s in steps])

    def st(e):
        return {"n": int(e.size)} if not e.size else {"n": int(e.size), "median": float(np.median(e)),
                                                      "p90": float(np.quantile(e, 0.9))}

    return {"all": st(err), "single_sequence_decode": st(err[single]), "other": st(err[~single])}


def checks(rel: dict, tolerance: float) -> list[dict]:
    """|error| of TTFT and ITL (pooled token gaps) p50 and mean against ``tolerance``."""
    out = []
    for metric, stat in CHECKED:
        e = rel.get(metric, {}).get(stat)
        if e is not None:
            out.append({"metric": metric, "stat": stat, "error": e, "limit": tolerance, "ok": abs(e) <= tolerance})
    return out


def run_e2e(model, system: System, cfg: E2EConfig, *, log=print, calibration_origin: str = "") -> dict:
    """Run the fit and report loops and the simulation; the results dict (see module docstring).
    With ``contention`` non-empty the numbers are recorded but must not be reported."""
    # lazy: torch (optional extra [validate]); `kvsim validate compare/papers` import this module without it
    import torch

    from kvsim.validate.bench_base import DTYPES
    from kvsim.validate.e2e_loop import TinyLlama, serve, warm_up

    cpuenv.tune_allocator()
    dep0 = deployment(system, model, cfg.dtype)
    rate = cfg.rate or choose_rate(dep0, cfg)
    report_tr, fit_tr = load_traces(cfg, rate)
    fit_rate = rate * cfg.fit_rate_factor
    log(f"e2e: fit run = requests {cfg.num_requests}-{2 * cfg.num_requests - 1} of {cfg.trace} at {fit_rate:.2f} req/s; "
        f"report run = requests 0-{cfg.num_requests - 1} at {rate:.2f} req/s (prompt <= {cfg.max_prompt}, output <= "
        f"{cfg.max_output}), max_num_seqs {cfg.max_num_seqs}, {model.name} {cfg.dtype}")
    max_len = int(max(report_tr.prompt_tokens.max() + report_tr.output_tokens.max(),
                      fit_tr.prompt_tokens.max() + fit_tr.output_tokens.max()) + 1)
    tm = TinyLlama(model, dtype=DTYPES[cfg.dtype], max_seqs=cfg.max_num_seqs, max_len=max_len, seed=cfg.seed)
    warm_up(tm)
    x = torch.randn(32, model.hidden_size, dtype=DTYPES[cfg.dtype])
    w = torch.randn(model.hidden_size, model.hidden_size, dtype=DTYPES[cfg.dtype])
    kernel = lambda: x @ w  # noqa: E731  (the fixed kernel timed before and after)
    threads = torch.get_num_threads()
    idle = max(0.0, float(os.cpu_count() or threads) - threads)
    snap, jif, load0 = cpuenv.snapshot(), cpuenv.cpu_jiffies(), cpuenv.load_average()
    before = cpuenv.probe(kernel)
    early = cpuenv.contention_reasons(cpuenv.other_load(0.5), None, before, None, idle_cores=idle)
    if early:  # busy already: the loops would be contended too, do not spend minutes on them
        return {"kind": "kvsim-validate-e2e", "version": 2, "contention": {"reasons": early, "stage": "before the loops"}}
    fit_loop = serve(tm, fit_tr.arrival_s, fit_tr.prompt_tokens, fit_tr.output_tokens, max_num_seqs=cfg.max_num_seqs,
                     seed=cfg.seed, log=log)
    loop = serve(tm, report_tr.arrival_s, report_tr.prompt_tokens, report_tr.output_tokens,
                 max_num_seqs=cfg.max_num_seqs, seed=cfg.seed + 1, log=log)
    after = cpuenv.probe(kernel)
    other, steal, load1 = cpuenv.other_since(snap), cpuenv.steal_since(jif), cpuenv.load_average()
    reasons = cpuenv.contention_reasons(other, steal, before, after, idle_cores=idle)

    bare = deployment(with_step_overhead(system, {}), model, cfg.dtype)
    f_meas = np.array([s.end_s - s.start_s for s in fit_loop.steps])
    f_seqs, f_tokens = step_counts(fit_loop.steps)
    coef = fit_step_overhead(predict_steps(bare, fit_loop.steps), f_meas, f_seqs, f_tokens)
    dep = deployment(with_step_overhead(system, coef), model, cfg.dtype)
    pred = predict_steps(dep, loop.steps)
    sim = simulate(dep, make_method("full", dep), report_tr, sim_config(cfg))
    sim_tt = [list(t) if t is not None else [] for t in sim.records.token_times]
    every = list(range(len(report_tr)))
    real_h, sim_h = latency_stats(loop.arrival_s, loop.token_times, every), latency_stats(report_tr.arrival_s, sim_tt, every)
    rel = rel_errors(sim_h, real_h)
    chk = checks(rel, cfg.tolerance)
    return {
        "kind": "kvsim-validate-e2e",
        "version": 2,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "threads": threads,
        "uname": " ".join(platform.uname()),
        "model": model.name,
        "config": cfg.__dict__,
        "rate_req_s": rate,
        "fit_rate_req_s": fit_rate,
        "calibration": calibration_origin,
        "system": system.gpu.name,
        "contention": {"reasons": reasons, "other_cores": other, "idle_cores": idle, "steal_fraction": steal,
                       "load_average": {"before": load0, "after": load1},
                       "probe_before": {"median_s": before.median_s, "spread": before.spread},
                       "probe_after": {"median_s": after.median_s, "spread": after.spread}},
        "step_overhead_fit": coef,
        "fit_run": {"requests": [cfg.num_requests, 2 * cfg.num_requests], "steps": len(fit_loop.steps),
                    "wall_s": fit_loop.wall_s},
        "steps": {"n": len(loop.steps), **step_errors(pred, loop.steps)},
        "heldout": {"real": real_h, "sim": sim_h, "rel_err": rel},
        "checks": chk,
        "passed": bool(chk) and all(c["ok"] for c in chk),
        "loop_wall_s": loop.wall_s,
        "requests": {"arrival_s": report_tr.arrival_s.tolist(), "prompt_tokens": report_tr.prompt_tokens.tolist(),
                     "output_tokens": report_tr.output_tokens.tolist(), "real_token_times": loop.token_times,
                     "sim_token_times": sim_tt},
        "step_records": [{"start_s": s.start_s, "end_s": s.end_s, "decode_ctx": s.decode_ctx, "prefill": s.prefill,
                          "predicted_s": float(p)} for s, p in zip(loop.steps, pred)],
    }


def step_overhead_of(data: dict) -> dict[str, float]:
    """The fitted per-step overhead of an e2e results dict (KeyError/TypeError/ValueError if absent)."""
    coef = data["step_overhead_fit"]
    return {op: float(coef[op]) for op in STEP_CLASSES}


def calibration_with_step(cal: Calibration, coef: dict[str, float], note: str) -> Calibration:
    eff = {**cal.efficiencies, **{op: {"overhead_s": float(coef[op])} for op in STEP_CLASSES}}
    return cal.model_copy(update={"efficiencies": eff, "source": f"{cal.source}; step overhead (step, step_seq, "
                                                                 f"step_token) from {note}"})


def save_json(obj: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def system_from_calibration(cal: Calibration, hw_path: str | Path, origin: str) -> System:
    """The local system a calibration applies to: its hw YAML (kind gpu) on the local CPU as host."""
    gpu = load_yaml_as(GPUSpec, Path(hw_path))
    facts = localhw.cpu_facts()
    threads = int(cal.host.get("threads") or gpu.sm_count)
    _, host = localhw.cpu_specs(gpu.name, facts, threads, gpu.peak_flops_per_s, gpu.memory_bw_bytes_per_s, gpu.source)
    return apply_calibration(localhw.make_system(gpu, host), cal, origin=origin)
