"""Predicted vs measured per kernel, before and after calibration (no torch).

*Before*: datasheet/nominal peaks with kvsim's default efficiencies. *After*: the spec the
calibration applies to with the calibration's efficiencies - **in-sample** for the kernels the
fit used. *Held-out*: each kernel's prediction by a k-fold cross-validation fit that did not use
it (``predicted_cv_s`` in the calibration file). Error = ``|predicted / measured - 1|``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from kvsim.costmodel.calibration import Calibration, apply_calibration
from kvsim.validate.fit import kernel_dtype, predict_kernels
from kvsim.validate.results import Results, system_after_base, system_before


@dataclass
class Row:
    kernel: str
    op: str
    dtype: str | None
    fitted: bool
    measured_s: float
    before_s: float | None
    after_s: float
    cv_s: float | None = None

    @property
    def err_cv(self) -> float | None:
        return None if self.cv_s is None else abs(self.cv_s / self.measured_s - 1.0)

    @property
    def err_before(self) -> float | None:
        return None if self.before_s is None else abs(self.before_s / self.measured_s - 1.0)

    @property
    def err_after(self) -> float:
        return abs(self.after_s / self.measured_s - 1.0)


def rows_from_results(res: Results, cal: Calibration) -> list[Row]:
    kernels = [k for k in res.kernels if k.fit]
    after = apply_calibration(system_after_base(res), cal, origin="calibration")
    pa = predict_kernels(kernels, after)
    pb = predict_kernels(kernels, system_before(res))
    cv = {r.kernel: r.predicted_cv_s for r in cal.residuals if r.predicted_cv_s is not None and r.measured_s > 0}
    same = {r.kernel: r.measured_s for r in cal.residuals}  # (held-out numbers only for the results the calibration saw)
    return [Row(k.name, k.op, kernel_dtype(k), (not cal.dtype) or kernel_dtype(k) in (None, cal.dtype), k.median_s,
                float(b), float(a), cv.get(k.name) if same.get(k.name) == k.median_s else None)
            for k, a, b in zip(kernels, pa, pb)]


def rows_from_calibration(cal: Calibration) -> list[Row]:
    return [Row(r.kernel, r.op, None, r.fitted, r.measured_s, r.predicted_default_s, r.predicted_s, r.predicted_cv_s)
            for r in cal.residuals]


@dataclass
class Summary:
    subset: str
    n: int
    median_before: float | None
    p90_before: float | None
    median_after: float  # in-sample for the fitted kernels
    p90_after: float
    n_cv: int = 0  # kernels with a held-out (cross-validation) prediction
    median_cv: float | None = None
    p90_cv: float | None = None


def summarize(rows: list[Row], subset: str = "fitted") -> Summary:
    sel = [r for r in rows if r.fitted] if subset == "fitted" else list(rows)
    if not sel:
        return Summary(subset, 0, None, None, float("nan"), float("nan"))
    ea = np.array([r.err_after for r in sel])
    eb = [r.err_before for r in sel if r.err_before is not None]
    ec = [r.err_cv for r in sel if r.err_cv is not None]
    return Summary(subset, len(sel),
                   float(np.median(eb)) if eb else None, float(np.quantile(eb, 0.9)) if eb else None,
                   float(np.median(ea)), float(np.quantile(ea, 0.9)),
                   len(ec), float(np.median(ec)) if ec else None, float(np.quantile(ec, 0.9)) if ec else None)


def by_op(rows: list[Row]) -> dict[str, Summary]:
    ops = sorted({r.op for r in rows if r.fitted})
    return {op: summarize([r for r in rows if r.op == op and r.fitted], "fitted") for op in ops}


def as_dicts(rows: list[Row]) -> list[dict]:
    return [{**asdict(r), "err_before": r.err_before, "err_after": r.err_after, "err_cv": r.err_cv} for r in rows]
