"""Out-of-sample error of the calibration fit (scipy; no torch).

The error of a fit measured on the kernels it was fitted on is in-sample: it says how well the
roofline form can follow those kernels, not how well the fitted numbers predict a kernel they
never saw. Two held-out measures, each kernel predicted by a fit that did not use it:

* **k-fold cross-validation** (default 5 folds): the kernels of each op class are shuffled
  (seeded) and dealt round-robin into ``k`` folds, so every fold holds every class with at least
  ``k`` kernels; each fold is predicted by a fit on the other ``k - 1``.
* **small -> large**: within each op class, the kernels are ordered by size (their roofline time
  at unit efficiency, i.e. work over peak); a fit on the smaller half predicts the larger half
  (extrapolation in shape, what a user does when calibrating on small shapes). Classes with one
  kernel stay in the fit and are not tested.

Errors are ``|predicted / measured - 1|``; summaries are the median and 90th percentile, overall
and per op class.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from kvsim.costmodel.roofline import Roofline
from kvsim.hardware import System
from kvsim.validate.fit import apply_fit, fit_efficiencies, predict_kernels, unit_system
from kvsim.validate.results import KernelResult

KFOLD = 5


def kfold_assignment(kernels: list[KernelResult], k: int = KFOLD, seed: int = 0) -> np.ndarray:
    """Fold index ``[n]`` of each kernel: stratified by op class, shuffled with ``seed``."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(kernels), dtype=int)
    by_op: dict[str, list[int]] = defaultdict(list)
    for i, kr in enumerate(kernels):
        by_op[kr.op].append(i)
    for op in sorted(by_op):
        idx = np.array(by_op[op])[rng.permutation(len(by_op[op]))]
        start = int(rng.integers(k))  # (classes with fewer than k kernels land in different folds)
        fold[idx] = (start + np.arange(len(idx))) % k
    return fold


def kfold_predictions(kernels: list[KernelResult], system: System, k: int = KFOLD, seed: int = 0,
                      starts: int = 6) -> np.ndarray:
    """Seconds ``[n]`` of each kernel predicted by the fit on the other folds."""
    if len(kernels) < k:
        raise ValueError(f"{k}-fold cross-validation needs at least {k} kernels (got {len(kernels)})")
    fold = kfold_assignment(kernels, k, seed)
    out = np.full(len(kernels), np.nan)
    for f in range(k):
        test = np.flatnonzero(fold == f)
        if not len(test):
            continue
        train = [kernels[i] for i in np.flatnonzero(fold != f)]
        fitted = apply_fit(system, fit_efficiencies(train, system, starts=starts), source=f"fold {f}")
        out[test] = predict_kernels([kernels[i] for i in test], fitted)
    return out


def kernel_size_s(kernels: list[KernelResult], system: System) -> np.ndarray:
    """Each kernel's roofline seconds at unit efficiency and no overhead (work over peak)."""
    rf = Roofline(unit_system(system))
    return np.array([float(rf(kr.cost()).total_s) for kr in kernels])


def small_large_split(kernels: list[KernelResult], system: System) -> np.ndarray:
    """``[n]`` bool, True = test: the larger half (by :func:`kernel_size_s`) of each op class with
    at least two kernels (an odd count puts the middle kernel in the test half)."""
    size = kernel_size_s(kernels, system)
    test = np.zeros(len(kernels), dtype=bool)
    by_op: dict[str, list[int]] = defaultdict(list)
    for i, kr in enumerate(kernels):
        by_op[kr.op].append(i)
    for idx in by_op.values():
        if len(idx) < 2:
            continue
        order = sorted(idx, key=lambda i: (size[i], kernels[i].name))
        test[order[len(order) // 2:]] = True
    return test


def small_large_predictions(kernels: list[KernelResult], system: System, starts: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(``[n]`` test mask, ``[n]`` seconds predicted for the test kernels by the fit on the rest; NaN elsewhere)."""
    test = small_large_split(kernels, system)
    out = np.full(len(kernels), np.nan)
    if test.any() and (~test).any():
        train = [kr for kr, t in zip(kernels, test) if not t]
        fitted = apply_fit(system, fit_efficiencies(train, system, starts=starts), source="small shapes")
        out[test] = predict_kernels([kr for kr, t in zip(kernels, test) if t], fitted)
    return test, out


def error_summary(kernels: list[KernelResult], predicted: np.ndarray) -> dict:
    """``{n, median, p90, by_op: {op: {n, median, p90}}}`` of ``|predicted / measured - 1|`` where predicted is finite."""
    meas = np.array([kr.median_s for kr in kernels])
    ok = np.isfinite(predicted)
    err = np.abs(predicted[ok] / meas[ok] - 1.0)
    ops = np.array([kr.op for kr in kernels])[ok]

    def stats(e: np.ndarray) -> dict:
        if not e.size:
            return {"n": 0}
        return {"n": int(e.size), "median": float(np.median(e)), "p90": float(np.quantile(e, 0.9))}

    return {**stats(err), "by_op": {op: stats(err[ops == op]) for op in sorted(set(ops.tolist()))}}


def held_out_validation(kernels: list[KernelResult], system: System, k: int = KFOLD, seed: int = 0) -> tuple[dict, np.ndarray]:
    """The calibration's ``validation`` block and the k-fold prediction of every kernel."""
    cv = kfold_predictions(kernels, system, k, seed)
    test, sl = small_large_predictions(kernels, system)
    return {
        "kfold": {"k": k, "seed": seed, **error_summary(kernels, cv)},
        "small_to_large": {"n_fit": int((~test).sum()), **error_summary(kernels, sl)},
        "note": ("held-out: each kernel predicted by a fit that did not use it (k-fold: stratified by op class; "
                 "small_to_large: fit on the smaller half of each op class by work, test on the larger half)"),
    }, cv
