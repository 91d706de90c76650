"""The results file of ``kvsim validate run`` (JSON), and the systems that price it (no torch).

Each kernel stores its raw per-call timings (every repeat) and its *work* as kvsim
:class:`~kvsim.costmodel.cost.Part` s, so that :mod:`kvsim.validate.fit` can price it with the
:class:`~kvsim.costmodel.roofline.Roofline` of any system.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, fields
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kvsim.costmodel.cost import Cost, Part
from kvsim.errors import SpecError
from kvsim.fileio import atomic_write
from kvsim.hardware import GPUSpec, HostSpec, System
from kvsim.specbase import format_validation_error, read_text
from kvsim.validate.localhw import make_system

RESULTS_KIND = "kvsim-validate-results"
_PART_FIELDS = [f.name for f in fields(Part)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class KernelResult(_M):
    name: str
    group: str = Field(description="benchmark family: gemm, attn_prefill, attn_decode, attn_paged, kivi, sparse, memory, h2d, elementwise")
    op: str = Field(description="main op class (for tables)")
    shape: dict = {}
    parts: list[dict] = Field(description="kvsim Part fields of the kernel's work")
    times_s: list[float] = Field(description="seconds per call, every repeat")
    inner: int = Field(1, description="calls per timed sample")
    timer: str = "perf_counter"
    fit: bool = Field(True, description="False for probes used only to measure peaks")
    note: str = ""

    @property
    def median_s(self) -> float:
        return float(statistics.median(self.times_s))

    @property
    def min_s(self) -> float:
        return float(min(self.times_s))

    def cost(self) -> Cost:
        return Cost.of(*[part_from_dict(p) for p in self.parts])

    def total(self, attr: str) -> float:
        return float(sum(p.get(attr, 0.0) for p in self.parts))

    @property
    def flops(self) -> float:
        return self.total("flops") + self.total("cpu_flops")

    @property
    def bytes(self) -> float:
        return self.total("hbm_bytes") + self.total("dram_bytes") + self.total("pcie_bytes")


class Results(_M):
    kind: str = Field(RESULTS_KIND, pattern=f"^{RESULTS_KIND}$")
    version: int = 1
    device: str = Field(description="cpu or cuda")
    device_name: str
    torch_version: str
    created: str
    threads: int
    quick: bool
    model: str
    command: str = ""
    host: dict = Field(default_factory=dict, description="uname, CPU model, flags, memory")
    nominal_gpu: dict = Field(description="GPUSpec of the device with datasheet/nominal peaks (before calibration)")
    nominal_host: dict = Field(description="HostSpec of the local CPU, nominal peaks")
    measured_gpu: dict | None = Field(None, description="CPU only: GPUSpec with measured best-case peaks (after calibration)")
    kernels: list[KernelResult]

    def kernel(self, name: str) -> KernelResult:
        for k in self.kernels:
            if k.name == name:
                return k
        raise KeyError(name)


def part_to_dict(p: Part) -> dict:
    d = asdict(p)
    return {k: v for k, v in d.items() if not (isinstance(v, (int, float)) and v == 0 and k not in ("launches",))}


def part_from_dict(d: dict) -> Part:
    bad = set(d) - set(_PART_FIELDS)
    if bad:
        raise SpecError(f"results: unknown Part field(s) {', '.join(sorted(bad))}")
    return Part(**d)


def save_results(res: Results, path: str | Path) -> None:
    """Write ``res`` as JSON, atomically (a failed write leaves any previous file intact)."""
    atomic_write(path, json.dumps(res.model_dump(), indent=1) + "\n")


def load_results(path: str | Path) -> Results:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: results file not found (make one with `kvsim validate run --out {p}`)")
    text = read_text(p)  # one-line SpecError for unreadable or non-UTF-8 files
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"{p}:{err.lineno}: invalid JSON: {err.msg}") from None
    except (RecursionError, ValueError):
        raise SpecError(f"{p}: invalid JSON (nested too deeply or a number too long)") from None
    if not isinstance(data, dict):
        raise SpecError(f"{p}: expected a JSON object")
    try:
        return Results.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, str(p))) from None


# ---------------- systems that price a results file ----------------

def system_before(res: Results) -> System:
    """Datasheet / nominal peaks with kvsim's default efficiencies (the *before calibration* model)."""
    return make_system(GPUSpec.model_validate(res.nominal_gpu), HostSpec.model_validate(res.nominal_host))


def system_after_base(res: Results) -> System:
    """The spec a calibration is fitted against (and applied to): on CPU the measured peaks
    (device and host alike), on CUDA the datasheet GPU and the nominal host. Default efficiencies."""
    if res.measured_gpu is None:
        return system_before(res)
    gpu = GPUSpec.model_validate(res.measured_gpu)
    nh = HostSpec.model_validate(res.nominal_host)
    host = nh.model_copy(update={"peak_flops_per_s": dict(gpu.peak_flops_per_s),
                                 "dram_bw_bytes_per_s": gpu.memory_bw_bytes_per_s,
                                 "source": "measured best case (kvsim validate run)"})
    return make_system(gpu, host)
