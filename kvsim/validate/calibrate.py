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
from kvsim.errors import ConfigError
from kvsim.hardware import System
from kvsim.validate.fit import (
    FitResult,
    apply_fit,
    fit_efficiencies,
    kernel_dtype,
    predict_kernels,
    select_kernels,
)
from kvsim.validate.crossval import KFOLD, held_out_validation
from kvsim.validate.results import Results, system_after_base, system_before


def default_dtype(res: Results) -> str:
    """The dtype a calibration is fitted for by default: fp32 on CPU, bf16 on CUDA."""
    return "fp32" if res.device == "cpu" else "bf16"


def make_calibration(res: Results, dtype: str | None = None, hw_path: str = "", source: str = "",
                     cross_validate: bool = True) -> tuple[Calibration, FitResult, System]:
    """Fit ``dtype``'s kernels (+ copies); with ``cross_validate``, also the held-out error
    (:func:`kvsim.validate.crossval.held_out_validation`: k-fold and small -> large)."""
    dtype = dtype or default_dtype(res)
    base = system_after_base(res)
    chosen = select_kernels(res.kernels, dtype)
    if not any(kernel_dtype(k) == dtype for k in chosen):
        raise ConfigError(f"--dtype {dtype}: no {dtype} kernels to fit in the results (dtypes present: "
                         f"{', '.join(sorted({d for d in map(kernel_dtype, res.kernels) if d})) or 'none'})")
    fit = fit_efficiencies(chosen, base)
    validation, cv = ({}, None)
    if cross_validate and len(chosen) >= KFOLD:
        validation, cv = held_out_validation(chosen, base)
    cv_of = {} if cv is None else {id(k): float(v) for k, v in zip(chosen, cv)}
    after = apply_fit(base, fit, source=f"kvsim validate calibrate ({res.device_name}, {dtype})")
    before = system_before(res)
    kernels = [k for k in res.kernels if k.fit]
    pa = predict_kernels(kernels, after)
    pb = predict_kernels(kernels, before)
    residuals = [
        Residual(kernel=k.name, op=k.op, measured_s=k.median_s, predicted_s=float(a), predicted_default_s=float(b),
                 fitted=kernel_dtype(k) in (None, dtype), predicted_cv_s=cv_of.get(id(k)))
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
        validation=validation,
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
