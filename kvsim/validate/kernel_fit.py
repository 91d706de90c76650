"""Fit the roofline's per-op-class efficiencies to measured GPU kernels, and the honest protocols.

What is fitted (bounded least squares on ``log(predicted / measured)`` with a soft-L1 loss, so
that a few odd rows do not steer the fit; :func:`scipy.optimize.least_squares`):

* per op class (:data:`PARAMS`): the fractions of peak, the fixed time per call and the
  refinements of :mod:`kvsim.costmodel.roofline` (``blend``, ``tile_s``, ``wave_tiles_per_sm``;
  decode attention with ``tiles_in_body`` set, :data:`FIXED`),
  evaluated through the roofline itself on the work kvsim charges for each row;
* per all-reduce algorithm and group size: ``latency_s`` and ``bus_bw_bytes_per_s``.

L2-resident rows (measured warm) are never fitted on. Protocols (:func:`held_out`,
:func:`leave_one_gpu_out`) report only on rows their fit did not see.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import least_squares

from kvsim.costmodel.roofline import Roofline
from kvsim.hardware import AllReduceFit, Efficiencies, System
from kvsim.validate.kernel_tables import KernelTable, load_table
from kvsim.validate.kernels import BF16_BYTES, KernelWork, table_work

#: fitted fields per op class (all-reduce: see :func:`fit_allreduce`)
PARAMS = {
    "gemm": ("compute", "memory", "overhead_s", "blend"),
    "attn_prefill": ("compute", "memory", "overhead_s", "blend", "tile_s", "wave_tiles_per_sm"),
    "attn_decode": ("compute", "memory", "overhead_s", "blend", "tile_s", "wave_tiles_per_sm"),
    "collective": ("memory", "overhead_s"),  # the datasheet form (leave-one-GPU-out only)
}
#: structural choices set with the fitted fields (not fitted): decode's per-tile work overlaps the KV
#: stream (held-out decode p90 A100 35.8% -> 20.5%, H100 14.0% -> 9.9%; for prefill it changed nothing)
FIXED = {"attn_decode": {"tiles_in_body": True}}
#: op classes whose shared (datasheet) defaults give per-call and per-tile times in cycles, as seconds at
#: :data:`REFERENCE_CLOCK_HZ`: each GPU takes them x reference / its SM clock (``Efficiencies.at_clock``).
#: Leave-one-GPU-out decode attention, A100 left out: 16.9% -> 11.0% median (the A100's 1.41 GHz SMs
#: take ~1.4x the H100's time for the same per-call work); GEMM's launch-scale overhead is not scaled
#: (scaling it moved L40S GEMM 14.6% -> 15.2%). benchmarks/RESULTS.md, "Per-call times in cycles".
CLOCK_SCALED = ("attn_prefill", "attn_decode")
REFERENCE_CLOCK_HZ = 1.98e9  # H100-SXM / H200 maximum SM clock: a GPU file without sm_clock_hz is priced at it
#: (low, high, start, unit) of each field; the optimizer works in ``value / unit``
FIELD_RANGE = {
    "compute": (0.05, 1.0, 0.7, 1.0),
    "memory": (0.05, 1.0, 0.8, 1.0),
    "overhead_s": (0.0, 1e-4, 5e-6, 1e-6),
    "blend": (1.0, 64.0, 2.0, 1.0),
    "tile_s": (0.0, 2e-6, 1e-8, 1e-9),
    "wave_tiles_per_sm": (0.05, 16.0, 2.0, 1.0),
}
#: vLLM's custom all-reduce handles messages below 8 MiB (``CustomAllreduce(max_size=8192 * 1024)``,
#: vllm/distributed/device_communicators/custom_all_reduce.py); larger ones go to NCCL
CUSTOM_ALLREDUCE_MAX_BYTES = 8192 * 1024
F_SCALE = 0.05  # soft-L1 scale of log residuals: rows off by more than ~5% weigh less and less


@dataclass(frozen=True)
class FitData:
    """Rows of one table on one system that a fit (or a report) uses."""

    system: System
    work: KernelWork
    measured_s: np.ndarray
    rows: np.ndarray  # indices into the table

    def seconds(self, system: System) -> np.ndarray:
        return self.work.seconds(Roofline(system))[self.rows]


def fit_data(table: KernelTable, system: System, rows: np.ndarray) -> FitData:
    return FitData(system, table_work(table, system), table.latency_s[rows], rows)


def _with(system: System, op: str, values: dict[str, float]) -> System:
    eff = system.eff.with_overrides({op: values})
    if values.get("reference_clock_hz") is not None:  # shared defaults: this GPU's per-call times
        eff = eff.at_clock(system.gpu.sm_clock_hz)
    return system.with_efficiencies(eff)


def fit_op(op: str, data: list[FitData], shared: bool = False) -> dict[str, float]:
    """Efficiencies of op class ``op`` shared by every dataset (each priced on its own system).
    ``shared``: datasheet defaults for several GPUs; the classes of :data:`CLOCK_SCALED` then give
    ``overhead_s`` and ``tile_s`` at :data:`REFERENCE_CLOCK_HZ` (each GPU scaled by its clock)."""
    names = PARAMS[op]
    fixed = {**FIXED.get(op, {}), **({"reference_clock_hz": REFERENCE_CLOCK_HZ} if shared and op in CLOCK_SCALED else {})}
    lo = np.array([FIELD_RANGE[n][0] / FIELD_RANGE[n][3] for n in names])
    hi = np.array([FIELD_RANGE[n][1] / FIELD_RANGE[n][3] for n in names])
    x0 = np.array([FIELD_RANGE[n][2] / FIELD_RANGE[n][3] for n in names])

    def values(x: np.ndarray) -> dict[str, float]:
        return {**{n: float(v * FIELD_RANGE[n][3]) for n, v in zip(names, x)}, **fixed}

    def residual(x: np.ndarray) -> np.ndarray:
        v = values(x)
        return np.concatenate([np.log(d.seconds(_with(d.system, op, v)) / d.measured_s) for d in data])

    result = least_squares(residual, x0, bounds=(lo, hi), loss="soft_l1", f_scale=F_SCALE, x_scale="jac")
    return values(result.x)


def engine_rows(table: KernelTable, system: System) -> np.ndarray:
    """All-reduce rows of the algorithm vLLM runs for each message: its custom all-reduce up to
    8 MiB where it is enabled (NVLink peers, or two GPUs), NCCL otherwise."""
    c = table.columns
    nbytes = c["message_elems"] * BF16_BYTES
    custom_ok = (system.gpu_gpu_link.link_type == "nvlink") | (c["num_gpus"] == 2)
    use_custom = custom_ok & (nbytes <= CUSTOM_ALLREDUCE_MAX_BYTES)
    return np.where(use_custom, c["algo"] == "custom", c["algo"] == "nccl")


def fit_allreduce(table: KernelTable, rows: np.ndarray) -> list[AllReduceFit]:
    """``latency_s`` and ``bus_bw`` per algorithm and group size, on ``rows`` of the table (custom:
    only messages up to vLLM's 8 MiB limit)."""
    c = table.columns
    out = []
    for algo in ("custom", "nccl"):
        for group in np.unique(c["num_gpus"]):
            sel = rows & (c["algo"] == algo) & (c["num_gpus"] == group)
            if algo == "custom":
                sel &= c["message_elems"] * BF16_BYTES <= CUSTOM_ALLREDUCE_MAX_BYTES
            if sel.sum() < 2:
                continue
            g = int(group)
            ring = 2.0 * (g - 1) / g * c["message_elems"][sel] * BF16_BYTES
            t = table.latency_s[sel]

            def residual(x: np.ndarray) -> np.ndarray:
                return np.log((x[0] * 1e-6 + ring / (x[1] * 1e9)) / t)

            r = least_squares(residual, [5.0, 100.0], bounds=([0.0, 0.1], [1e4, 1e5]), loss="soft_l1", f_scale=0.05)
            out.append(AllReduceFit(algo=algo, group=g, latency_s=float(r.x[0] * 1e-6), bus_bw_bytes_per_s=float(r.x[1] * 1e9),
                                    max_message_bytes=float(CUSTOM_ALLREDUCE_MAX_BYTES) if algo == "custom" else None))
    return out


def fit_system(table_system: str, system: System, train: dict[str, np.ndarray]) -> tuple[dict[str, dict[str, float]], list[AllReduceFit]]:
    """Efficiency overrides and all-reduce fits of one system from its ``train`` rows per op."""
    eff: dict[str, dict[str, float]] = {}
    for op in ("gemm", "attn_prefill", "attn_decode"):
        table = load_table(table_system, op)
        eff[op] = fit_op(op, [fit_data(table, system, np.flatnonzero(train[op]))])
    return eff, fit_allreduce(load_table(table_system, "allreduce"), train["allreduce"])


def apply_fit(system: System, eff: dict[str, dict[str, float]], allreduce: list[AllReduceFit], source: str) -> System:
    return replace(system, eff=system.eff.with_overrides(eff, source=source), allreduce=tuple(allreduce),
                    calibration=f"measured: {source}")


def datasheet_system(system: System, base: Efficiencies) -> System:
    """``system`` with the shared defaults ``base`` (per-call times at its SM clock) and no measured
    all-reduce (datasheet only)."""
    return replace(system, eff=base.at_clock(system.gpu.sm_clock_hz), allreduce=(), calibration="datasheet")
