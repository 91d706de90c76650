"""Calibration files: fitted efficiencies that override a system's defaults.

Written by ``kvsim validate calibrate`` and read by ``--calibration FILE`` in
``estimate``, ``simulate`` and ``plan``. Format (YAML)::

    kind: calibration
    device: "NVIDIA H100 80GB HBM3"      # what the microbenchmarks ran on
    applies_to: h100                     # system/GPU name it was fitted for (informational)
    created: 2026-11-24
    torch_version: 2.13.0
    efficiencies:                        # per op class, any subset of compute/memory/overhead_s
      gemm: {compute: 0.71, memory: 0.83, overhead_s: 6.0e-6}
    residuals:                           # per kernel: measured vs fitted seconds
      - {kernel: gemm_bf16_4096x4096x4096, op: gemm, measured_s: 1.2e-4, predicted_s: 1.1e-4}
    source: "kvsim validate run --device cuda; fit by scipy.optimize.least_squares"

Optional (added by ``kvsim validate``): ``dtype`` - the math dtype whose kernels were fitted
(efficiencies are per op class, so a calibration describes deployments of that dtype);
``hw`` - the hardware spec the efficiencies are fractions of (on CPU, a local YAML with
measured peaks: use it with ``--hw``); per residual ``fitted`` - whether the kernel was in the fit
(its ``predicted_s`` is then in-sample) and ``predicted_cv_s`` - its prediction by a k-fold
cross-validation fit that did not use it; ``validation`` - held-out error summaries
(:mod:`kvsim.validate.crossval`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml
from pydantic import Field

from kvsim.errors import SpecError
from kvsim.fileio import atomic_write
from kvsim.hardware import System
from kvsim.hardware.spec import OP_CLASSES, OpEfficiency
from kvsim.specbase import Bool, Float, Setting, Strict, read_yaml, validate_dict


class Residual(Strict):
    kernel: str
    op: str
    measured_s: Float
    predicted_s: Float
    predicted_default_s: Float | None = None
    fitted: Bool = True
    predicted_cv_s: Float | None = None  # by a cross-validation fit that did not use this kernel


class Calibration(Strict):
    kind: str = Field("calibration", pattern="^calibration$")
    device: str
    applies_to: str = ""
    created: str = ""
    torch_version: str = ""
    host: dict = Field(default_factory=dict, description="optional measured host facts (cores, DRAM bandwidth)")
    efficiencies: dict[str, dict[str, Setting]]
    residuals: list[Residual] = []
    source: str = ""
    dtype: str = ""
    hw: str = ""
    validation: dict = Field(default_factory=dict, description="held-out error of the fit (kvsim validate calibrate)")


def load_calibration(path: str | Path) -> Calibration:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: calibration file not found")
    cal = validate_dict(Calibration, read_yaml(p), str(p))
    for op, fields in cal.efficiencies.items():
        if op not in OP_CLASSES:
            raise SpecError(f"{p}: efficiencies: unknown op class '{op}' (choices: {', '.join(OP_CLASSES)})")
        allowed = list(OpEfficiency.model_fields)
        bad = set(fields) - set(allowed)
        if bad:
            raise SpecError(f"{p}: efficiencies.{op}: unknown field(s) {', '.join(sorted(bad))} (allowed: {', '.join(allowed)})")
        for k, v in fields.items():
            if k not in ("compute", "memory", "overhead_s"):
                continue  # the refinements are checked by OpEfficiency when applied
            ok = v >= 0 if k == "overhead_s" else 0 < v <= 1
            if not ok:
                rule = ">= 0" if k == "overhead_s" else "in (0, 1]"
                raise SpecError(f"{p}: efficiencies.{op}.{k}: must be {rule} (got {v!r})")
    return cal


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def calibration_mismatch(system: System, cal: Calibration, origin: str = "") -> str | None:
    """A note when ``cal`` was fitted on another device than ``system``'s GPU: its ``applies_to``
    (the GPU or system it was fitted for) names neither the system nor its GPU, by name or alias
    (spelling-insensitive). Files for any system (engine profiles: ``applies_to: any system``)
    and files without ``applies_to`` match everything. The efficiencies are fractions of the
    fitted device's peaks, so on another GPU they describe that device, not this one."""
    target = _key(cal.applies_to)
    if not target or cal.applies_to.strip().lower().startswith("any"):
        return None
    names = {system.name, system.gpu.name, *system.spec.aliases, *system.gpu.aliases}
    if target in {_key(n) for n in names}:
        return None
    use = f" (use it with --hw {cal.hw})" if cal.hw else ""
    return (f"--calibration {origin or 'file'} was fitted on {cal.applies_to} ({cal.device}), not on {system.name}'s "
            f"{system.gpu.name}: its efficiencies describe that device{use}")


def apply_calibration(system: System, cal: Calibration, origin: str = "") -> System:
    """``system`` with the calibration's efficiencies in force (validated); a note on the system
    when the calibration was fitted on another device (:func:`calibration_mismatch`)."""
    try:
        eff = system.eff.with_overrides(cal.efficiencies, source=f"calibration {origin or cal.device}")
    except ValueError as err:
        msg = str(err).splitlines()[0]
        raise SpecError(f"{origin or 'calibration'}: efficiencies: {msg}") from None
    out = system.with_efficiencies(eff)
    note = calibration_mismatch(system, cal, origin)
    return replace(out, notes=(*out.notes, note)) if note else out


def save_calibration(cal: Calibration, path: str | Path) -> None:
    """Write ``cal`` as YAML, atomically (a failed write leaves any previous file intact)."""
    atomic_write(path, yaml.safe_dump(cal.model_dump(), sort_keys=False))
