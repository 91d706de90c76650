"""Results file -> fitted calibration file (scipy; no torch).

``make_calibration(results, dtype)`` fits the op-class efficiencies on the kernels of one math
dtype (plus the dtype-agnostic copies) against the spec the calibration applies to
(:func:`~kvsim.validate.results.system_after_base`), and records every kernel's measured time
with its predictions before (datasheet/nominal peaks, default efficiencies) and after.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from kvsim.costmodel.calibration import Calibration, Residual
from kvsim.hardware import System
from kvsim.validate.fit import (
    FitResult,
    apply_fit,
    fit_efficiencies,
    kernel_dtype,
    predict_kernels,
    select_kernels,
)
from kvsim.validate.results import Results, system_after_base, system_before


def default_dtype(res: Results) -> str:
    """The dtype a calibration is fitted for by default: fp32 on CPU, bf16 on CUDA."""
    return "fp32" if res.device == "cpu" else "bf16"


def make_calibration(res: Results, dtype: str | None = None, hw_path: str = "", source: str = "") -> tuple[Calibration, FitResult, System]:
    dtype = dtype or default_dtype(res)
    base = system_after_base(res)
    fit = fit_efficiencies(select_kernels(res.kernels, dtype), base)
    after = apply_fit(base, fit, source=f"kvsim validate calibrate ({res.device_name}, {dtype})")
    before = system_before(res)
    kernels = [k for k in res.kernels if k.fit]
    pa = predict_kernels(kernels, after)
    pb = predict_kernels(kernels, before)
    residuals = [
        Residual(kernel=k.name, op=k.op, measured_s=k.median_s, predicted_s=float(a), predicted_default_s=float(b),
                 fitted=kernel_dtype(k) in (None, dtype))
        for k, a, b in zip(kernels, pa, pb)
    ]
    cal = Calibration(
        device=res.device_name,
        applies_to=base.gpu.name,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        torch_version=res.torch_version,
        host={**{k: v for k, v in res.host.items() if k in ("model_name", "logical_cpus", "mem_bytes", "uname")},
              "threads": res.threads, "results_created": res.created, "quick": res.quick, "model": res.model},
        efficiencies=fit.overrides(),
        residuals=residuals,
        source=source or (f"kvsim validate calibrate: {len(select_kernels(res.kernels, dtype))} {res.device} kernels "
                          f"({dtype} + copies) of {res.model}, scipy.optimize.least_squares on log-time residuals, "
                          f"{fit.starts} starts; results {res.created}"),
        dtype=dtype,
        hw=hw_path,
    )
    return cal, fit, after


def sibling(path: str | Path, suffix: str) -> Path:
    """``calib.yaml`` + ``.hw.yaml`` -> ``calib.hw.yaml`` (strips a known suffix first)."""
    p = Path(path)
    name = p.name
    for s in (".calibration.yaml", ".results.json", ".yaml", ".yml", ".json"):
        if name.endswith(s):
            name = name[: -len(s)]
            break
    return p.with_name(name + suffix)
