"""Fit per-op-class efficiencies and per-launch overheads to measured kernel times (scipy).

Model (kvsim's :class:`~kvsim.costmodel.roofline.Roofline`, per part): ``t = max_r(w_r / (peak_r * eff_r))
+ launches * overhead_s``, summed over a kernel's parts, where the resource ``r`` is compute
(GPU or host FLOP/s), memory (HBM or DRAM) or the PCIe link; ``eff_r`` is ``compute`` or
``memory`` of the part's op class (the PCIe link uses ``pcie.memory``).

The unit-efficiency resource times ``w_r / peak_r`` come from the Roofline itself (on the
system with every efficiency 1 and no overhead), so the fit prices exactly what kvsim prices.

Fit: ``scipy.optimize.least_squares`` on log-time residuals ``log(t_pred / t_meas)`` of the
median times with a Huber loss (quadratic below ``HUBER`` = 0.1, i.e. ~10 % error, linear
above: kernels that an effect outside the roofline slows, such as MKL's GEMV fast path or a
page-faulting temporary, pull the fit less than squared error would), over ``log(eff)`` (bounded to ``[log 1e-4, 0]``: ``0 < eff <= 1``) and
``overhead_s`` (``>= 0``), from several starting points (the max() makes the loss piecewise
smooth), with the exact Jacobian (:meth:`Fitter.jacobian`; with scipy's finite differences the fit
never met its tolerances and stopped at ``max_nfev``). A weak prior (weight ``PRIOR``) pulls each parameter towards kvsim's default so
that a parameter no kernel constrains (a resource that never binds) keeps its default
instead of drifting; with ``PRIOR = 1e-3`` it moves a well-constrained parameter by far
less than 1 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from kvsim.costmodel.cost import Part
from kvsim.hardware import Efficiencies, OpEfficiency, System
from kvsim.costmodel.roofline import Roofline
from kvsim.validate.results import KernelResult, part_from_dict

PRIOR = 1e-3
HUBER = 0.1
EFF_MIN = 1e-4
#: classes whose efficiencies the microbenchmarks can constrain (step comes from the e2e loop)
FIT_CLASSES = ("gemm", "attn_prefill", "attn_decode", "elementwise", "memcpy", "cpu_attn", "pcie")
_COMPUTE = ("gpu_compute", "cpu_compute")
_MEMORY = ("hbm", "dram")


@dataclass
class Term:
    """One part of one kernel, as unit-efficiency resource seconds."""

    kernel: int
    op: str
    compute_s: float
    memory_s: float
    pcie_s: float
    launches: float
    round_trips: float


def unit_system(system: System) -> System:
    """``system`` with every efficiency 1 and every overhead 0 (pure peaks)."""
    one = OpEfficiency(compute=1.0, memory=1.0, overhead_s=0.0)
    data = {op: one for op in Efficiencies.model_fields if op != "source"}
    return replace(system, eff=Efficiencies(**data, source="unit"),
                   gpu_host_link=system.gpu_host_link.model_copy(update={"latency_s": 0.0}))


def terms_of(kernels: list[KernelResult], system: System) -> list[Term]:
    rf = Roofline(unit_system(system))
    out: list[Term] = []
    for i, k in enumerate(kernels):
        for d in k.parts:
            p: Part = part_from_dict(d)
            rt = rf.part_resource_times(p)
            out.append(Term(
                kernel=i, op=p.op,
                compute_s=float(sum(rt.get(r, 0.0) for r in _COMPUTE)),
                memory_s=float(sum(rt.get(r, 0.0) for r in _MEMORY)),
                pcie_s=float(rt.get("pcie", 0.0)),
                launches=float(p.launches),
                round_trips=float(p.pcie_round_trips),
            ))
    return out


class Fitter:
    """Vectorized prediction of every kernel's time from a parameter vector."""

    def __init__(self, kernels: list[KernelResult], system: System, classes: list[str] | None = None):
        self.kernels = kernels
        self.system = system
        self.terms = terms_of(kernels, system)
        present = [t.op for t in self.terms]
        self.classes = [c for c in (classes or FIT_CLASSES) if c in present]
        if "pcie" not in self.classes and any(t.pcie_s > 0 for t in self.terms):
            self.classes.append("pcie")
        self.idx = {c: j for j, c in enumerate(self.classes)}
        T = self.terms
        self.k = np.array([t.kernel for t in T])
        self.c = np.array([self.idx.get(t.op, -1) for t in T])
        self.cs = np.array([t.compute_s for t in T])
        self.ms = np.array([t.memory_s for t in T])
        self.ps = np.array([t.pcie_s for t in T])
        self.la = np.array([t.launches for t in T])
        self.rt = np.array([t.round_trips for t in T])
        self.lat2 = 2.0 * system.gpu_host_link.latency_s
        self.meas = np.array([k.median_s for k in kernels])
        base = system.eff
        self.fixed = {op: base.of(op) for op in Efficiencies.model_fields if op != "source"}
        self.default = np.concatenate([self._vec(base.of(c)) for c in self.classes]) if self.classes else np.zeros(0)
        # per-term (compute, memory, overhead_s) of the classes not fitted; built once, copied per call
        self._fixed_terms = np.array([[self.fixed[t.op].compute, self.fixed[t.op].memory, self.fixed[t.op].overhead_s]
                                      for t in self.terms], dtype=float).reshape(-1, 3)
        # overhead in units of 10 us so its prior is comparable to a log-efficiency's
        self._prior_scale = np.tile(np.array([1.0, 1.0, 1e5]), len(self.classes))

    @staticmethod
    def _vec(e: OpEfficiency) -> np.ndarray:
        return np.array([math.log(e.compute), math.log(e.memory), e.overhead_s])

    def unpack(self, x: np.ndarray) -> dict[str, OpEfficiency]:
        out = dict(self.fixed)
        for c, j in self.idx.items():
            lc, lm, oh = x[3 * j:3 * j + 3]
            out[c] = OpEfficiency(compute=float(min(1.0, math.exp(lc))), memory=float(min(1.0, math.exp(lm))),
                                  overhead_s=float(max(0.0, oh)))
        return out

    def predict(self, x: np.ndarray) -> np.ndarray:
        n = len(self.kernels)
        fixed = self._fixed_terms.copy()
        if self.classes:
            xc = np.asarray(x).reshape(-1, 3)
            par = np.column_stack([np.exp(xc[:, 0]), np.exp(xc[:, 1]), xc[:, 2]])
            fitted = self.c >= 0
            fixed[fitted] = par[self.c[fitted]]
        ec, em, oh = fixed[:, 0], fixed[:, 1], fixed[:, 2]
        if "pcie" in self.idx:
            j = self.idx["pcie"]
            pc_eff, pc_oh = math.exp(x[3 * j + 1]), x[3 * j + 2]
        else:
            pc_eff, pc_oh = self.fixed["pcie"].memory, self.fixed["pcie"].overhead_s
        body = np.maximum.reduce([self.cs / ec, self.ms / em, self.ps / pc_eff])
        part_t = body + self.la * oh + self.rt * (self.lat2 + pc_oh)
        return np.bincount(self.k, weights=part_t, minlength=n)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        """d residuals / d x, exact: each part's body is the max of its resource times, so only the
        binding resource's efficiency moves it (d(w / e^l) / dl = -w / e^l; ties take the first of
        compute, memory, PCIe, as ``np.argmax`` does); overheads add ``launches`` (and PCIe round trips)
        seconds per second; a log residual divides by the prediction. The prior is diagonal."""
        n, m = len(self.kernels), len(x)
        fixed = self._fixed_terms.copy()
        fitted = np.nonzero(self.c >= 0)[0]
        xc = np.asarray(x).reshape(-1, 3)
        if self.classes:
            fixed[fitted] = np.column_stack([np.exp(xc[:, 0]), np.exp(xc[:, 1]), xc[:, 2]])[self.c[fitted]]
        if "pcie" in self.idx:
            jp = self.idx["pcie"]
            pc_eff, pc_oh = math.exp(x[3 * jp + 1]), x[3 * jp + 2]
        else:
            jp, pc_eff, pc_oh = -1, self.fixed["pcie"].memory, self.fixed["pcie"].overhead_s
        times = np.stack([self.cs / fixed[:, 0], self.ms / fixed[:, 1], self.ps / pc_eff])
        binding = np.argmax(times, axis=0)
        pred = np.bincount(self.k, weights=times.max(axis=0) + self.la * fixed[:, 2] + self.rt * (self.lat2 + pc_oh),
                           minlength=n)
        d_terms = np.zeros((len(self.terms), m))
        cls = self.c[fitted]
        for r in (0, 1):
            sel = binding[fitted] == r
            d_terms[fitted[sel], 3 * cls[sel] + r] = -times[r, fitted[sel]]
        d_terms[fitted, 3 * cls + 2] += self.la[fitted]
        if jp >= 0:
            d_terms[:, 3 * jp + 1] -= np.where(binding == 2, times[2], 0.0)
            d_terms[:, 3 * jp + 2] += self.rt
        d_pred = np.zeros((n, m))
        np.add.at(d_pred, self.k, d_terms)
        live = pred > 1e-12  # below it the residual's floor is constant
        d_res = np.where(live[:, None], d_pred / np.where(live, pred, 1.0)[:, None], 0.0)
        return np.vstack([d_res, np.diag(PRIOR * self._prior_scale)])

    def residuals(self, x: np.ndarray) -> np.ndarray:
        pred = np.maximum(self.predict(x), 1e-12)
        r = np.log(pred / self.meas)
        prior = PRIOR * (x - self.default) * self._prior_scale
        return np.concatenate([r, prior])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.tile([math.log(EFF_MIN), math.log(EFF_MIN), 0.0], len(self.classes))
        hi = np.tile([0.0, 0.0, 1.0], len(self.classes))
        return lo, hi


@dataclass
class FitResult:
    efficiencies: dict[str, OpEfficiency]
    fitted_classes: list[str]
    cost: float
    predicted_s: np.ndarray
    measured_s: np.ndarray
    starts: int

    def overrides(self) -> dict[str, dict[str, float]]:
        return {c: self.efficiencies[c].model_dump() for c in self.fitted_classes}


#: share of fitted kernels whose timing still overlapped other processes' load after the runner's
#: retries, above which ``calibrate`` refuses to fit (the timings describe the contention, not the machine)
CONTENDED_SHARE_MAX = 0.10


def contended_kernels(kernels: list[KernelResult]) -> list[KernelResult]:
    """Kernels the runner could not time without other processes' load (their note says so)."""
    return [k for k in kernels if "contended:" in (k.note or "")]


def kernel_dtype(k: KernelResult) -> str | None:
    """Math dtype of a kernel (None for dtype-agnostic ones: copies, PCIe)."""
    if k.group in ("memory", "h2d"):
        return None
    return k.shape.get("dtype") or (k.parts[0].get("dtype") if k.parts else None)


def select_kernels(kernels: list[KernelResult], dtype: str | None) -> list[KernelResult]:
    """Kernels a calibration for ``dtype`` is fitted on: that dtype's kernels plus the
    dtype-agnostic ones (``None``: every fittable kernel). Probes are excluded.

    Efficiencies are per op class, not per dtype, in kvsim; on a CPU the same class can reach
    very different fractions per dtype (oneDNN repacks bf16 weights on every GEMV call), so a
    calibration is fitted for one dtype and records it."""
    return [k for k in kernels if k.fit and (dtype is None or kernel_dtype(k) in (None, dtype))]


def fit_efficiencies(kernels: list[KernelResult], system: System, classes: list[str] | None = None,
                     starts: int = 6, seed: int = 0) -> FitResult:
    """Least-squares fit of ``compute``, ``memory`` and ``overhead_s`` per op class."""
    kernels = [k for k in kernels if k.fit]
    f = Fitter(kernels, system, classes)
    lo, hi = f.bounds()
    if not f.classes:
        return FitResult(dict(f.fixed), [], 0.0, f.predict(np.zeros(0)), f.meas, 0)
    rng = np.random.default_rng(seed)
    x0s = [np.clip(f.default, lo, hi)]
    x0s.append(np.clip(_data_start(f), lo, hi))
    for _ in range(max(0, starts - 2)):
        x = f.default.copy()
        x[0::3] = np.log(rng.uniform(0.05, 1.0, len(f.classes)))
        x[1::3] = np.log(rng.uniform(0.05, 1.0, len(f.classes)))
        x[2::3] = rng.uniform(0.0, 2.0, len(f.classes)) * np.median(f.meas[f.meas < np.quantile(f.meas, 0.3)] if len(f.meas) > 3 else f.meas)
        x0s.append(np.clip(x, lo, hi))
    best = None
    for x0 in x0s:
        r = _descend(f, x0, lo, hi)
        if best is None or r.cost < best.cost:
            best = r
    x = best.x
    return FitResult(f.unpack(x), list(f.classes), float(best.cost), f.predict(x), f.meas, len(x0s))


#: restarts of the local solver from its own result, at most (each restart resets its trust region)
RESTARTS_MAX = 50


def _descend(f: Fitter, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """``least_squares`` from ``x0``, restarted from its result while that lowers the cost: at a kink
    of the max() the trust region shrinks until the step tolerance stops the solver short of the
    minimum (on the shipped CPU kernels one restart lowers the cost by ~10 %)."""
    from scipy.optimize import least_squares  # lazy: scipy stays out of the core's imports

    best = None
    for _ in range(RESTARTS_MAX):
        r = least_squares(f.residuals, x0 if best is None else best.x, jac=f.jacobian, bounds=(lo, hi), method="trf",
                          loss="huber", f_scale=HUBER, x_scale=np.tile([1.0, 1.0, 1e-5], len(f.classes)),
                          xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=4000)
        if best is not None and r.cost >= best.cost * (1 - 1e-9):
            break
        best = r
    return best


def _data_start(f: Fitter) -> np.ndarray:
    """A start from the data: per class, the best achieved fraction of each resource, and the
    fastest kernel time as the overhead."""
    x = f.default.copy()
    for j in f.idx.values():
        sel = f.c == j
        kk = f.k[sel]
        if not len(kk):
            continue
        meas = f.meas[kk]
        cf = (f.cs[sel] / meas).max()
        mf = (f.ms[sel] / meas).max()
        if cf > 0:
            x[3 * j] = math.log(min(1.0, max(EFF_MIN, cf)))
        if mf > 0:
            x[3 * j + 1] = math.log(min(1.0, max(EFF_MIN, mf)))
        x[3 * j + 2] = float(meas.min() / max(1.0, f.la[sel].max())) * 0.5
    return x


def apply_fit(system: System, fit: FitResult, source: str = "kvsim validate fit") -> System:
    eff = system.eff.with_overrides(fit.overrides(), source=source)
    return system.with_efficiencies(eff)


def predict_kernels(kernels: list[KernelResult], system: System) -> np.ndarray:
    """Each kernel's seconds on ``system`` by kvsim's Roofline (the reference implementation)."""
    rf = Roofline(system)
    out = []
    for k in kernels:
        out.append(float(rf(k.cost()).total_s))
    return np.array(out)
