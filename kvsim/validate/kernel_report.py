"""The protocols behind ``kvsim validate kernels``: what each reports, and on which rows.

* :func:`current`: the shipped model (a system's measured profile, else its datasheet) on every
  measured row: **in-sample** for a profiled system (its profile was fitted on these tables),
  a true check for a datasheet-only one (B200, GB200, RTX PRO 6000).
* :func:`held_out`: per system, fit on half the shapes (:func:`kvsim.validate.kernels.holdout_mask`)
  and report on the other half.
* :func:`leave_one_gpu_out`: fit the shared defaults on three of the four profiled GPUs and
  predict the fourth from its datasheet alone; :func:`datasheet_only` fits them on all four and
  predicts the GPUs no fit has seen (B200, GB200, RTX PRO 6000 Server).

Every report keeps L2-resident rows (measured warm) apart; all-reduce rows are those of the
algorithm vLLM runs for each message (:func:`kvsim.validate.kernel_fit.engine_rows`).
"""

from __future__ import annotations

import numpy as np

from kvsim.hardware import Efficiencies, System, default_efficiencies, load_system
from kvsim.validate.kernel_fit import (
    FitData,
    PARAMS,
    apply_fit,
    datasheet_system,
    engine_rows,
    fit_data,
    fit_op,
    fit_system,
)
from kvsim.validate.kernel_tables import (
    CHECK_OP_FILES,
    FITTED_TABLES,
    OP_FILES,
    ROOFLINE_OP,
    SYSTEM_OF_TABLE,
    has_table,
    load_table,
)
from kvsim.validate.kernels import error_stats, holdout_mask, price_table, table_work

OPS = tuple(OP_FILES)  # gemm, attn_prefill, attn_decode, allreduce
#: op classes every protocol reports but no fit reads (MLA decode: priced with the attn_decode
#: efficiencies fitted on GQA kernels, so each of its rows is out of sample in every protocol)
CHECKS = tuple(CHECK_OP_FILES)
CHECK_NOTE = "check only, no fit reads these rows"


def _reported(ts: str) -> list[str]:
    """Op classes reported for table system ``ts``: the fitted ones, then the checks it has tables for."""
    return list(OPS) + [op for op in CHECKS if has_table(ts, op)]


def _protocol(op: str, protocol: str) -> str:
    """The protocol label of an op's row: a check-only op says so (every protocol's rows go through :func:`_row`)."""
    return f"{protocol} [{CHECK_NOTE}]" if op in CHECKS else protocol


def _usable(op: str, table_system: str, system: System) -> tuple[np.ndarray, np.ndarray]:
    """(rows a fit or report may use, L2-resident rows set apart)."""
    table = load_table(table_system, op)
    work = table_work(table, system)
    l2 = work.working_set_bytes <= system.gpu.l2_bytes
    rows = engine_rows(table, system) if op == "allreduce" else np.ones(len(table), dtype=bool)
    return rows & ~l2, rows & l2


def _row(table_system: str, system: System, op: str, protocol: str, rows: np.ndarray, l2_rows: np.ndarray | None) -> dict:
    table = load_table(table_system, op)
    err = price_table(table, system).error
    stats = error_stats(err[rows])
    l2 = error_stats(err[l2_rows]) if l2_rows is not None else None
    return {"system": system.name, "table": table_system, "op": op, "protocol": _protocol(op, protocol),
            "calibration": "measured" if system.calibration != "datasheet" else "datasheet",
            "fitted_op": op in OPS,
            **({"rows": 0} if stats is None else stats.as_dict()),
            # (None: the protocol does not report them; rows 0: none in the table)
            "l2_resident": None if l2_rows is None else {"rows": 0} if l2 is None else l2.as_dict()}


def current(table_systems: list[str]) -> list[dict]:
    out = []
    for ts in table_systems:
        system = load_system(SYSTEM_OF_TABLE[ts])
        protocol = "in-sample (the profile was fitted on these rows)" if system.calibration != "datasheet" else \
            "datasheet only (nothing fitted on this GPU)"
        for op in _reported(ts):
            rows, l2 = _usable(op, ts, system)
            mine = protocol if op in OPS else (
                "the shipped profile (fitted on this GPU's other tables)" if system.calibration != "datasheet"
                else "datasheet only (nothing fitted on this GPU)")
            out.append(_row(ts, system, op, mine, rows, l2))
    return out


def _datasheet(ts: str, base: Efficiencies | None = None) -> System:
    return datasheet_system(load_system(SYSTEM_OF_TABLE[ts]), base or default_efficiencies())


def held_out(table_systems: list[str]) -> tuple[list[dict], dict[str, System]]:
    """Per system: fit on half the shapes, report on the other half. Also returns the systems
    fitted on *all* usable rows (what ``--write`` ships)."""
    out, full = [], {}
    for ts in table_systems:
        base = _datasheet(ts)
        usable = {op: _usable(op, ts, base)[0] for op in OPS}
        test = {op: holdout_mask(load_table(ts, op)) for op in OPS}
        train = {op: usable[op] & ~test[op] for op in OPS}
        eff, ar = fit_system(ts, base, train)
        fitted = apply_fit(base, eff, ar, "held-out fit")
        for op in OPS:
            out.append(_row(ts, fitted, op, "held-out: fit on half the shapes, reported on the other half",
                            usable[op] & test[op], None))
        for op in _reported(ts)[len(OPS):]:  # every row: the fit never read any
            out.append(_row(ts, fitted, op, "held-out: the half-shape fit, reported on every row not L2-resident",
                            _usable(op, ts, fitted)[0], None))
        eff_all, ar_all = fit_system(ts, base, usable)
        full[ts] = (eff_all, ar_all)
    return out, full


def _collective_tables(train_tables: list[str]) -> list[str]:
    """The tables the datasheet all-reduce form is fitted on: GPUs whose peers talk over NVLink
    (NVSwitch or mesh). A PCIe-only server's NCCL bus bandwidth falls with TP far below its link's
    datasheet (L40S: 20 / 5 / 1.5 GB/s at TP 2/4/8 over PCIe4 x16), a regime one link efficiency
    cannot share with NVLink; such servers are priced from their measured profile, and from the
    datasheet form only as a fallback (``kvsim validate kernels --protocol leave-one-gpu-out``
    reports how far off that is). All tables when none is NVLink."""
    nvlink = [ts for ts in train_tables if load_system(SYSTEM_OF_TABLE[ts]).gpu_gpu_link.link_type == "nvlink"]
    return nvlink or list(train_tables)


def shared_defaults(train_tables: list[str]) -> Efficiencies:
    """The datasheet defaults with every op class's fields fitted jointly on ``train_tables``
    (the all-reduce form on the NVLink ones: :func:`_collective_tables`)."""
    base = default_efficiencies()
    overrides = {}
    for op in OPS:
        data = []
        for ts in (_collective_tables(train_tables) if op == "allreduce" else train_tables):
            system = _datasheet(ts, base)
            rows = np.flatnonzero(_usable(op, ts, system)[0])
            data.append(fit_data(load_table(ts, op), system, rows))
        overrides[ROOFLINE_OP[op]] = fit_op(ROOFLINE_OP[op], data, shared=True)
    return base.with_overrides(overrides, source=f"shared defaults fitted on {', '.join(train_tables)}")


def leave_one_gpu_out(targets: list[str]) -> list[dict]:
    out = []
    for ts in targets:
        others = [t for t in FITTED_TABLES if t != ts]
        base = shared_defaults(others)
        system = _datasheet(ts, base)
        for op in _reported(ts):
            rows, _ = _usable(op, ts, system)
            out.append(_row(ts, system, op, f"leave-one-GPU-out: defaults fitted on {', '.join(others)}; "
                                              f"this GPU from its datasheet", rows, None))
    return out


def datasheet_only(targets: list[str]) -> list[dict]:
    base = shared_defaults(list(FITTED_TABLES))
    out = []
    for ts in targets:
        system = _datasheet(ts, base)
        for op in _reported(ts):
            rows, l2 = _usable(op, ts, system)
            out.append(_row(ts, system, op, f"datasheet only: defaults fitted on {', '.join(FITTED_TABLES)}", rows, l2))
    return out


__all__ = ["current", "held_out", "leave_one_gpu_out", "datasheet_only", "shared_defaults", "OPS", "CHECKS", "PARAMS",
           "FitData"]
