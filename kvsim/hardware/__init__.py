"""Hardware specs: YAML files shipped in this package, resolved into a :class:`System`.

Layout (all under this directory):

* ``gpus/*.yaml``     one :class:`GPUSpec` each
* ``hosts/*.yaml``    one :class:`HostSpec` each (CPU socket + DRAM)
* ``links/*.yaml``    one :class:`LinkSpec` each (PCIe generations, NVLink)
* ``systems/*.yaml``  one :class:`SystemSpec` each: what ``--hw NAME`` resolves to
* ``efficiency/default.yaml``  default :class:`Efficiencies` (measured fractions, SPECS.md)

``--hw`` also accepts a path to a user YAML file of kind ``system`` or ``gpu``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from kvsim.catalog import canonical_names, load_catalog, lookup, spec_key
from kvsim.errors import SpecError, unknown_name
from kvsim.hardware.spec import (
    OP_CLASSES,
    Efficiencies,
    GPUSpec,
    HostSpec,
    LinkSpec,
    OpEfficiency,
    SystemSpec,
)
from kvsim.specbase import read_yaml, validate_dict

HW_DIR = Path(__file__).parent
_KINDS = {"gpu": (GPUSpec, "gpus"), "host": (HostSpec, "hosts"), "link": (LinkSpec, "links"), "system": (SystemSpec, "systems")}

__all__ = [
    "System",
    "load_system",
    "catalog",
    "default_efficiencies",
    "Efficiencies",
    "OpEfficiency",
    "GPUSpec",
    "HostSpec",
    "LinkSpec",
    "SystemSpec",
    "OP_CLASSES",
]


def catalog(kind: str) -> dict[str, object]:
    """All shipped specs of ``kind``, keyed by lower-case name and every alias."""
    cls, sub = _KINDS[kind]
    return load_catalog(HW_DIR / sub, cls, f"{kind} spec")


def names(kind: str) -> list[str]:
    """Canonical names of the shipped specs of ``kind``."""
    return canonical_names(catalog(kind))


def all_names(kind: str) -> list[str]:
    """Every accepted spelling (names and aliases, as lookup keys) of the shipped specs of ``kind``."""
    return sorted(catalog(kind))


def get(kind: str, name: str):
    """The shipped spec of ``kind`` named ``name`` (any alias)."""
    return lookup(catalog(kind), name, kind)


@lru_cache(maxsize=1)
def default_efficiencies() -> Efficiencies:
    path = HW_DIR / "efficiency" / "default.yaml"
    return validate_dict(Efficiencies, read_yaml(path), str(path))


@dataclass(frozen=True)
class System:
    """A resolved node: specs of its parts and the efficiencies in force."""

    name: str
    spec: SystemSpec
    gpu: GPUSpec
    host: HostSpec
    num_gpus: int
    host_sockets: int
    host_memory_bytes: float
    gpu_host_link: LinkSpec
    gpu_gpu_link: LinkSpec
    eff: Efficiencies

    @property
    def host_dram_bw_bytes_per_s(self) -> float:
        return self.host.dram_bw_bytes_per_s * self.host_sockets

    def host_peak_flops_per_s(self, dtype: str) -> float:
        peaks = self.host.peak_flops_per_s
        return peaks.get(dtype, peaks["fp32"]) * self.host_sockets  # type: ignore[call-overload]

    def gpu_peak_flops_per_s(self, dtype: str) -> float:
        """Dense peak for ``dtype``; a dtype without tensor-core support runs at the fp32 rate."""
        peaks = self.gpu.peak_flops_per_s
        return peaks.get(dtype, peaks["fp32"])  # type: ignore[call-overload]

    def with_efficiencies(self, eff: Efficiencies) -> "System":
        return replace(self, eff=eff)


def _resolve(spec: SystemSpec, gpu: GPUSpec | None = None) -> System:
    gpu = gpu or get("gpu", spec.gpu)
    host: HostSpec = get("host", spec.host)
    host_link: LinkSpec = get("link", spec.gpu_host_link or gpu.host_link)
    peer_name = spec.gpu_gpu_link or gpu.peer_link
    peer: LinkSpec = get("link", peer_name) if peer_name else host_link
    eff = default_efficiencies()
    if gpu.efficiency:
        try:
            eff = eff.with_overrides(gpu.efficiency, source=f"{gpu.name} overrides")
        except ValueError as err:
            raise SpecError(f"GPU spec {gpu.name}: efficiency: {err}") from None
    return System(
        name=spec.name,
        spec=spec,
        gpu=gpu,
        host=host,
        num_gpus=spec.num_gpus,
        host_sockets=spec.host_sockets or host.sockets,
        host_memory_bytes=spec.host_memory_bytes or host.dram_bytes,
        gpu_host_link=host_link,
        gpu_gpu_link=peer,
        eff=eff,
    )


DEFAULT_HOST = "xeon-8480p"


def load_system(name_or_path: str) -> System:
    """Resolve ``--hw``: a system name/alias, a GPU name (single GPU on the default host),
    or a path to a YAML file of kind ``system`` or ``gpu``."""
    p = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or p.is_file():
        data = read_yaml(p)
        kind = data.get("kind", "system") if isinstance(data, dict) else "system"
        if kind == "gpu":
            gpu = validate_dict(GPUSpec, data, str(p))
            spec = SystemSpec(name=gpu.name, gpu=gpu.name, host=DEFAULT_HOST, source=f"user GPU file {p}")
            return _resolve(spec, gpu=gpu)
        if kind != "system":
            raise SpecError(f"{p}: kind must be 'system' or 'gpu' for --hw (got {kind!r})")
        return _resolve(validate_dict(SystemSpec, data, str(p)))
    key = spec_key(name_or_path)
    if key in catalog("system"):
        return _resolve(catalog("system")[key])  # type: ignore[arg-type]
    if key in catalog("gpu"):
        gpu = catalog("gpu")[key]
        spec = SystemSpec(name=gpu.name, gpu=gpu.name, host=DEFAULT_HOST, source="GPU alone on the default host")  # type: ignore[attr-defined]
        return _resolve(spec)
    # canonical system names plus the short aliases the README documents (a100, v100, 4090)
    shown = sorted({a for s in catalog("system").values() for a in [s.name, *s.aliases]  # type: ignore[attr-defined]
                    if a == s.name or "-" not in a})  # type: ignore[attr-defined]
    raise unknown_name("hardware", name_or_path, all_names("system") + all_names("gpu"), shown=shown)
