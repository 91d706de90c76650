"""``kvsim validate e2e``: the torch serving loop vs ``kvsim.sim.replica.simulate`` on one trace.

1. Calibrate (or load a calibration for) this machine's kernels: the hw spec + op-class
   efficiencies the simulator prices with.
2. Load a real trace (bundled Azure conversation rows), cap lengths (prompt <= 256, output <=
   32), keep the first N requests, rescale arrivals to a rate at which kvsim predicts the engine
   is busy ~70 % of the time (loaded but stable).
3. Replay it through :func:`kvsim.validate.e2e_loop.serve` (wall clock), recording every step.
4. Fit the per-step framework overhead (op class ``step``) on the steps of the first half of
   the run only: ``overhead`` = the median of ``measured - predicted_without_overhead`` with each
   step weighted by the tokens it emits (its decodes and completed prompts), so the fit follows
   the token-time distribution that TBT and TTFT are made of.
5. Simulate the same trace with ``kvsim.sim.replica.simulate`` (Full KV, whole-prompt prefill:
   ``chunked_prefill`` with a token budget no step can exhaust, so no prompt is ever split, and
   the same ``max_num_seqs``); compare TTFT and TBT distributions on the held-out requests (the
   second half by arrival) and on all of them.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from kvsim.costmodel.calibration import Calibration, apply_calibration
from kvsim.costmodel.deployment import Deployment
from kvsim.hardware import GPUSpec, System
from kvsim.methods import make_method
from kvsim.pricing.step import StepModel
from kvsim.sim.replica import SimConfig, simulate
from kvsim.specbase import load_yaml_as
from kvsim.traces import load_trace
from kvsim.validate import localhw
from kvsim.validate.cpuenv import other_load, other_since, snapshot, tune_allocator

TARGET_UTIL = 0.7
PCTS = (50, 90, 99)


@dataclass
class E2EConfig:
    num_requests: int = 64
    max_prompt: int = 256
    max_output: int = 32
    max_num_seqs: int = 8
    trace: str = "azure-conv"
    rate: float | None = None
    dtype: str = "fp32"
    seed: int = 0

    @staticmethod
    def make(quick: bool) -> E2EConfig:
        return E2EConfig(num_requests=24) if quick else E2EConfig()


def deployment(system: System, model, dtype: str):
    return Deployment(system=system, model=model, weight_dtype=dtype, kv_dtype=dtype, act_dtype=dtype)


def sim_config(cfg: E2EConfig, record: bool = True):
    budget = cfg.max_num_seqs * (cfg.max_prompt + 1)
    return SimConfig(max_num_seqs=cfg.max_num_seqs, max_num_batched_tokens=budget, chunked_prefill=True,
                     enable_prefix_caching=False, record_token_times=record)


def with_step_overhead(system: System, overhead_s: float) -> System:
    return system.with_efficiencies(system.eff.with_overrides({"step": {"overhead_s": float(overhead_s)}},
                                                              source="e2e step fit"))


def load_trace_for(cfg: E2EConfig, rate: float | None):
    return load_trace(cfg.trace, limit=cfg.num_requests, max_prompt_tokens=cfg.max_prompt,
                      max_output_tokens=cfg.max_output, rate=rate)


def choose_rate(dep, cfg: E2EConfig, target: float = TARGET_UTIL) -> float:
    """Mean arrival rate (req/s) at which the simulated engine is busy ``target`` of the time."""
    meth = make_method("full", dep)

    def util(rate: float) -> float:
        tr = load_trace_for(cfg, rate)
        res = simulate(dep, meth, tr, sim_config(cfg, record=True))
        rec = res.records
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
    """kvsim's time of each measured step, without the per-step framework overhead."""
    sm = StepModel(replace(dep, system=with_step_overhead(dep.system, 0.0)), make_method("full", dep))
    out = []
    for s in steps:
        pn = np.asarray(s.prefill, dtype=float)
        out.append(float(sm.time_s(decode_ctx=np.asarray(s.decode_ctx, dtype=float), prefill_new=pn,
                                   prefill_cached=np.zeros_like(pn))))
    return np.array(out)


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """Median of ``x`` where each value counts ``w`` times."""
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


def latency_stats(arrival: np.ndarray, token_times: list, idx) -> dict:
    ttft = np.array([token_times[i][0] - arrival[i] for i in idx])
    tbt = np.concatenate([np.diff(np.asarray(token_times[i])) for i in idx] or [np.zeros(0)])
    def st(x):
        if not x.size:
            return {"n": 0}
        return {"n": int(x.size), "mean": float(x.mean()), **{f"p{p}": float(np.percentile(x, p)) for p in PCTS}}
    return {"ttft_s": st(ttft), "tbt_s": st(tbt)}


def rel_errors(sim: dict, real: dict) -> dict:
    out = {}
    for metric in ("ttft_s", "tbt_s"):
        out[metric] = {k: (sim[metric][k] / real[metric][k] - 1.0) for k in ("mean", *(f"p{p}" for p in PCTS))
                       if real[metric].get(k)}
    return out


def run_e2e(model, system: System, cfg: E2EConfig, *, log=print, calibration_origin: str = "") -> dict:
    """Run the loop and the simulation; return the results dict (see module docstring)."""
    # lazy: torch (optional extra [validate]); `kvsim validate compare/papers` import this module without it
    import torch

    from kvsim.validate.bench_base import DTYPES
    from kvsim.validate.e2e_loop import TinyLlama, serve, warm_up

    tune_allocator()
    dep0 = deployment(system, model, cfg.dtype)
    if system.eff.step.overhead_s == 0:
        dep0 = replace(dep0, system=with_step_overhead(system, 1e-3))
    rate = cfg.rate or choose_rate(dep0, cfg)
    trace = load_trace_for(cfg, rate)
    log(f"e2e: {len(trace)} requests of {cfg.trace} (prompt <= {cfg.max_prompt}, output <= {cfg.max_output}), "
        f"rate {rate:.2f} req/s, max_num_seqs {cfg.max_num_seqs}, {model.name} {cfg.dtype}")
    max_len = int(trace.prompt_tokens.max() + trace.output_tokens.max() + 1)
    tm = TinyLlama(model, dtype=DTYPES[cfg.dtype], max_seqs=cfg.max_num_seqs, max_len=max_len, seed=cfg.seed)
    warm_up(tm)
    load0 = other_load(0.3)
    snap = snapshot()
    loop = serve(tm, trace.arrival_s, trace.prompt_tokens, trace.output_tokens, max_num_seqs=cfg.max_num_seqs,
                 seed=cfg.seed, log=log)
    load_loop = other_since(snap)
    if load_loop is not None and load_loop > 0.3:
        log(f"warning: other processes used {load_loop:.1f} cores during the loop: its timings are contended")
    load1 = other_load(0.3)
    steps = loop.steps
    meas = np.array([s.end_s - s.start_s for s in steps])
    pred0 = predict_steps(dep0, steps)
    half_t = 0.5 * (steps[0].start_s + steps[-1].end_s)
    fit_mask = np.array([s.end_s <= half_t for s in steps])
    tokens = np.array([len(s.decode_ctx) + len(s.prefill) for s in steps], dtype=float)
    overhead = float(max(0.0, weighted_median((meas - pred0)[fit_mask], tokens[fit_mask]))) if fit_mask.any() else 0.0
    sys_fit = with_step_overhead(system, overhead)
    dep = deployment(sys_fit, model, cfg.dtype)
    pred = pred0 + overhead
    step_err = np.abs(pred / meas - 1.0)
    sim = simulate(dep, make_method("full", dep), trace, sim_config(cfg))
    sim_tt = [list(t) if t is not None else [] for t in sim.records.token_times]
    N = len(trace)
    held = list(range(N // 2, N))
    everyone = list(range(N))
    real_h, sim_h = latency_stats(loop.arrival_s, loop.token_times, held), latency_stats(trace.arrival_s, sim_tt, held)
    real_a, sim_a = latency_stats(loop.arrival_s, loop.token_times, everyone), latency_stats(trace.arrival_s, sim_tt, everyone)
    out = {
        "kind": "kvsim-validate-e2e",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "uname": " ".join(platform.uname()),
        "other_load_cores": {"before": load0, "during_loop": load_loop, "after": load1},
        "model": model.name,
        "config": cfg.__dict__,
        "rate_req_s": rate,
        "calibration": calibration_origin,
        "system": system.gpu.name,
        "step_overhead_fit_s": overhead,
        "steps": {"n": len(steps), "n_fit": int(fit_mask.sum()),
                  "heldout_median_abs_err": float(np.median(step_err[~fit_mask])) if (~fit_mask).any() else None,
                  "heldout_p90_abs_err": float(np.quantile(step_err[~fit_mask], 0.9)) if (~fit_mask).any() else None,
                  "fit_median_abs_err": float(np.median(step_err[fit_mask])) if fit_mask.any() else None},
        "heldout": {"real": real_h, "sim": sim_h, "rel_err": rel_errors(sim_h, real_h)},
        "all": {"real": real_a, "sim": sim_a, "rel_err": rel_errors(sim_a, real_a)},
        "loop_wall_s": loop.wall_s,
        "requests": {"arrival_s": trace.arrival_s.tolist(), "prompt_tokens": trace.prompt_tokens.tolist(),
                     "output_tokens": trace.output_tokens.tolist(), "real_token_times": loop.token_times,
                     "sim_token_times": sim_tt},
        "step_records": [{"start_s": s.start_s, "end_s": s.end_s, "decode_ctx": s.decode_ctx, "prefill": s.prefill,
                          "predicted_s": float(p), "fit": bool(f)} for s, p, f in zip(steps, pred, fit_mask)],
    }
    return out


def calibration_with_step(cal: Calibration, overhead_s: float, note: str) -> Calibration:
    eff = {**cal.efficiencies, "step": {"overhead_s": float(overhead_s)}}
    return cal.model_copy(update={"efficiencies": eff, "source": f"{cal.source}; step.overhead_s from {note}"})


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
