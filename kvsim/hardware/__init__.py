"""Hardware specs: YAML files shipped in this package, resolved into a :class:`System`.

Layout (all under this directory):

* ``gpus/*.yaml``     one :class:`GPUSpec` each
* ``hosts/*.yaml``    one :class:`HostSpec` each (CPU socket + DRAM)
* ``links/*.yaml``    one :class:`LinkSpec` each (PCIe generations, NVLink)
* ``systems/*.yaml``  one :class:`SystemSpec` each: what ``--hw NAME`` resolves to
* ``efficiency/default.yaml``  default :class:`Efficiencies` (measured fractions, SPECS.md)
* ``profiles/*.yaml``  one :class:`ProfileSpec` each: efficiencies (and all-reduce costs) of a
  system fitted on measured kernels; a system with a profile uses it instead of the defaults

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
    AllReduceFit,
    Efficiencies,
    GPUSpec,
    HostSpec,
    LinkSpec,
    OpEfficiency,
    ProfileSpec,
    SystemSpec,
)
from kvsim.specbase import read_yaml, validate_dict

HW_DIR = Path(__file__).parent
_KINDS = {"gpu": (GPUSpec, "gpus"), "host": (HostSpec, "hosts"), "link": (LinkSpec, "links"), "system": (SystemSpec, "systems"),
          "profile": (ProfileSpec, "profiles")}

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
    "AllReduceFit",
    "ProfileSpec",
    "profile_of",
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
    allreduce: tuple[AllReduceFit, ...] = ()  # measured all-reduce costs (empty: the link's datasheet)
    calibration: str = "datasheet"  # "datasheet", or "measured: <profile source>"

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

    @property
    def nvlink_peers(self) -> bool:
        """GPUs talk over NVLink/NVSwitch (not only PCIe)."""
        return self.gpu_gpu_link.link_type == "nvlink"


def profile_of(system_name: str) -> ProfileSpec | None:
    """The shipped measured profile of a system, if any."""
    for p in {id(v): v for v in catalog("profile").values()}.values():
        if spec_key(p.system) == spec_key(system_name):  # type: ignore[attr-defined]
            return p  # type: ignore[return-value]
    return None


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
    # a shipped profile measures the shipped GPU: a user's own GPU file gets none
    shipped_gpu = catalog("gpu").get(spec_key(spec.gpu))
    profile = profile_of(spec.name) if shipped_gpu is gpu else None
    allreduce: tuple[AllReduceFit, ...] = ()
    calibration = "datasheet"
    if profile is not None:
        eff = eff.with_overrides(profile.efficiency, source=f"profile {profile.name}: {profile.source}")
        allreduce, calibration = tuple(profile.allreduce), f"measured: {profile.source} ({profile.date})"
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
        allreduce=allreduce,
        calibration=calibration,
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
