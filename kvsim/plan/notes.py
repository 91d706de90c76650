"""What a plan's reader must know beside its numbers, one sentence each: ``kvsim plan`` prints them
as ``note:`` lines, its report page lists them, ``--json`` carries them under ``notes``.

Everything is derived from the :class:`kvsim.plan.schema.PlanResult` alone, so ``kvsim report`` of a
saved plan shows the same notes as the run that wrote it:

* :func:`setup_notes`: the trace's notice, PCIe all-reduce priced past its reach, a calibration fitted
  on other hardware, replicas priced with their share of the node's host, KV offload tiers never used;
* :func:`rate_notes`: rows whose max rate was measured on a burst (likely high) or that still met the
  SLO at the search's top rate (no sustained rate measured).
"""

from __future__ import annotations

import math

from kvsim.errors import KvsimError
from kvsim.plan.schema import STEADY_SPAN_OVER_E2EL, PlanResult, fmt_lifetimes


def plan_notes(plan: PlanResult) -> list[str]:
    """:func:`setup_notes` then :func:`rate_notes`."""
    return setup_notes(plan) + rate_notes(plan)


def setup_notes(plan: PlanResult) -> list[str]:
    """Notes on how the configurations were priced (the order ``kvsim plan`` prints them in)."""
    runnable = [c for c in plan.configs if c.error is None]
    kv_offload = bool(plan.engine.get("kv_offload"))
    notes = [plan.trace_notice] if plan.trace_notice else []
    notes += _allreduce_notes(runnable) + _calibration_notes(plan.configs) + _host_share_notes(runnable, kv_offload)
    points = [c.best for c in plan.configs if c.best is not None]
    if kv_offload and points and not any(p.kv_offload for p in points):
        from kvsim.sim.kv_tiers import UNUSED_NOTE  # lazy: the simulator is not needed to read a plan

        notes.append(UNUSED_NOTE)
    return list(dict.fromkeys(notes))


def rate_notes(plan: PlanResult) -> list[str]:
    """Per configuration: its max rate was measured on a burst, or it never failed the SLO."""
    notes = []
    for c in plan.configs:
        if c.transient and not c.capped:
            need = math.ceil(STEADY_SPAN_OVER_E2EL * c.best.e2el_s.mean * c.max_rate_per_s) + 1
            notes.append(f"{c.label}: at {c.max_rate_per_s:.3g} req/s the {c.best.num_requests:,} requests arrive within "
                         f"{c.arrival_span_s:.3g} s, {fmt_lifetimes(c.span_over_e2el)}x their mean E2E latency: its max rate is likely "
                         f"high; --num-requests {need:,} lasts {STEADY_SPAN_OVER_E2EL:g}x (docs/plan.md)")
        if c.capped and c.error is None:
            # (target mode prices the target rate on the GPUs found, which stands; max-rate mode has no rate to price)
            cost = ("its cost is that of the target rate on the GPUs found" if c.cost_usd_per_mtok is not None
                    else "no cost is stated")
            rank = ("it is ranked after the rows whose rate stands" if plan.target_rate_per_s is None
                    else "the target mode ranks it by its own target check")
            notes.append(f"{c.label}: still meets the SLO at the search's top rate ({c.max_rate_per_s:.4g} req/s): the "
                         f"trace's {c.best.num_requests if c.best else 0:,} requests arrive as one burst that it drains, so "
                         f"no sustained rate was measured (a longer trace gives a far lower one) and {cost}; {rank}; "
                         "raise --num-requests")
    return notes


def host_share_note(dep, method, kv_offload: bool) -> list[str]:
    """The plan gives each replica its share of a full node's host (kvsim.plan.evaluate.simulate_point,
    kvsim.plan.disagg_search.simulate_layout): said when the run uses the host (a method keeping KV or
    attention there, CPU experts, or a --kv-offload host tier)."""
    off = dep.expert_offload
    what = [w for w, used in ((method.label(), method.uses_host), ("CPU experts", off is not None and off.miss == "cpu"),
                              ("the --kv-offload host tier", kv_offload)) if used]
    per_node = dep.replicas_per_node
    if not what or per_node <= 1:
        return []
    tp = f" · TP{dep.tp}" if dep.tp > 1 else ""  # (as the rows' labels: the share depends on the TP)
    return [f"{dep.system.name} · {', '.join(what)}{tp}: each replica is priced with 1/{per_node} of its node's host (memory, DRAM "
            f"bandwidth, CPU): the {per_node} replicas of a full node share it; `kvsim simulate` prices one replica "
            "with the whole host"]


def _allreduce_notes(configs) -> list[str]:
    """One note per (hardware, TP) searched whose PCIe all-reduce is priced past its reach."""
    from kvsim.costmodel.deployment import allreduce_note  # lazy: CLI start-up
    from kvsim.hardware import load_system

    notes = []
    for hw, tp in dict.fromkeys((c.config.hw, c.config.tp) for c in configs):
        try:
            notes.append(allreduce_note(load_system(hw), tp))
        except KvsimError:  # (a saved plan's hardware file since moved: nothing to say about it)
            continue
    return [n for n in notes if n]


def _calibration_notes(configs) -> list[str]:
    """One note per (hardware, calibration file) searched that the file was not fitted on."""
    from kvsim.costmodel.calibration import calibration_mismatch, load_calibration  # lazy: CLI start-up
    from kvsim.hardware import load_system

    notes = []
    for hw, path in dict.fromkeys((c.config.hw, c.config.calibration) for c in configs if c.config.calibration):
        try:
            notes.append(calibration_mismatch(load_system(hw), load_calibration(path), path))
        except KvsimError:  # (a saved plan's files since moved)
            continue
    return [n for n in notes if n]


def _host_share_notes(configs, kv_offload: bool) -> list[str]:
    """One note per (hardware, TP, method) searched whose runs use the host (:func:`host_share_note`)."""
    from kvsim.plan.evaluate import build  # lazy: CLI start-up

    notes = []
    for c in configs:
        try:
            dep, method = build(c.config)
        except KvsimError:
            continue
        notes.extend(host_share_note(dep, method, kv_offload))
    return notes
