"""Hardware specs: YAML files shipped in this package, resolved into a :class:`System`.

Layout (all under this directory):

* ``gpus/*.yaml``     one :class:`GPUSpec` each
* ``hosts/*.yaml``    one :class:`HostSpec` each (CPU socket + DRAM)
* ``links/*.yaml``    one :class:`LinkSpec` each (PCIe generations, NVLink)
* ``systems/*.yaml``  one :class:`SystemSpec` each: what ``--hw NAME`` resolves to
* ``efficiency/default.yaml``  default :class:`Efficiencies` (measured fractions, SPECS.md)
* ``profiles/*.yaml``  one :class:`ProfileSpec` each: efficiencies (and all-reduce costs) of a
  system fitted on measured kernels; a system with a profile uses it instead of the defaults

``--hw`` also accepts a path to a user YAML file of kind ``system`` or ``gpu``. A system file
names its GPU, host and links by catalog name or alias, or by the path of a YAML file of that
kind (relative to the file that names it); a GPU file names its links the same way.
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
    StorageSpec,
    SystemSpec,
)
from kvsim.specbase import name_or_spec, read_yaml, validate_dict

HW_DIR = Path(__file__).parent
_KINDS = {"gpu": (GPUSpec, "gpus"), "host": (HostSpec, "hosts"), "link": (LinkSpec, "links"), "system": (SystemSpec, "systems"),
          "profile": (ProfileSpec, "profiles"),
          "storage": (StorageSpec, "storage")}

__all__ = [
    "System",
    "load_system",
    "catalog",
    "default_efficiencies",
    "gpu_efficiencies",
    "Efficiencies",
    "OpEfficiency",
    "GPUSpec",
    "HostSpec",
    "LinkSpec",
    "StorageSpec",
    "SystemSpec",
    "OP_CLASSES",
    "AllReduceFit",
    "ProfileSpec",
    "profile_of",
    "load_spec_file",
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
    notes: tuple[str, ...] = ()  # what a user should know about this resolution (e.g. a calibration of another device)
    #: share of the host's DRAM bandwidth and compute one replica uses when replicas share the node
    #: (:meth:`sharing_host`; 1: the whole host)
    host_share: float = 1.0

    @property
    def host_dram_bw_bytes_per_s(self) -> float:
        return self.host.dram_bw_bytes_per_s * self.host_sockets * self.host_share

    def host_peak_flops_per_s(self, dtype: str) -> float:
        peaks = self.host.peak_flops_per_s
        return peaks.get(dtype, peaks["fp32"]) * self.host_sockets * self.host_share  # type: ignore[call-overload]

    def replicas_per_node(self, tp: int) -> int:
        """Replicas of ``tp`` GPUs packed on this node (at least 1): the ones that share its host."""
        return max(1, self.num_gpus // tp)

    def sharing_host(self, share: float) -> "System":
        """This node as one of several replicas on it sees it: ``share`` of its host memory, DRAM
        bandwidth and CPU compute (each GPU keeps its own PCIe link)."""
        return replace(self, host_memory_bytes=self.host_memory_bytes * share, host_share=self.host_share * share)

    def gpu_peak_flops_per_s(self, dtype: str) -> float:
        """Dense peak for ``dtype``; a dtype without tensor-core support runs at the fp32 rate."""
        peaks = self.gpu.peak_flops_per_s
        return peaks.get(dtype, peaks["fp32"])  # type: ignore[call-overload]

    def with_efficiencies(self, eff: Efficiencies) -> "System":
        return replace(self, eff=eff)

    @property
    def nvlink_peers(self) -> bool:
        """GPUs talk over a direct GPU fabric (NVLink/NVSwitch, AMD Infinity Fabric), not only PCIe."""
        return self.gpu_gpu_link.link_type in ("nvlink", "xgmi")


def profile_of(system_name: str) -> ProfileSpec | None:
    """The shipped measured profile of a system, if any."""
    for p in {id(v): v for v in catalog("profile").values()}.values():
        if spec_key(p.system) == spec_key(system_name):  # type: ignore[attr-defined]
            return p  # type: ignore[return-value]
    return None


def gpu_profile_of(g: GPUSpec) -> tuple[ProfileSpec, str | None] | None:
    """``(profile, its node's GPU-GPU link name)`` of a shipped system whose GPU is the shipped GPU
    ``g``: its kernel efficiencies measure that GPU, whatever node another system puts it in."""
    for p in {id(v): v for v in catalog("profile").values()}.values():
        node = catalog("system").get(spec_key(p.system))  # type: ignore[attr-defined]
        if node is not None and catalog("gpu").get(spec_key(node.gpu)) is g:  # type: ignore[attr-defined]
            return p, node.gpu_gpu_link or g.peer_link  # type: ignore[return-value, attr-defined]
    return None


#: the link that carries a disaggregated deployment's KV when none is named (InfiniBand NDR, 400 Gbit/s)
DEFAULT_KV_LINK = "ib-ndr"


def load_link(name_or_path: str) -> LinkSpec:
    """A link by catalog name or alias (``ib-ndr``), or a YAML file of kind ``link``."""
    if _is_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise SpecError(f"no link file {path}")
        return load_spec_file("link", path)
    return get("link", name_or_path)  # type: ignore[return-value]


def _is_path(value: str) -> bool:
    """A reference written as a file path rather than a catalog name."""
    return value.endswith((".yaml", ".yml")) or "/" in value or "\\" in value


def load_spec_file(kind: str, path: Path | str):
    """A user YAML file of ``kind`` (gpu, host, link, system), validated; a file of another kind
    (its ``kind:`` field) is a one-line SpecError."""
    path = Path(path)
    data = read_yaml(path)
    if isinstance(data, dict) and data.get("kind", kind) != kind:
        raise SpecError(f"{path}: kind: expected '{kind}' for this file, got {data.get('kind')!r}")
    return validate_dict(_KINDS[kind][0], data, str(path))


@dataclass(frozen=True)
class _Ref:
    """A spec a file names, where it came from (for messages) and the folder its own paths start from."""

    spec: object
    origin: str
    base: Path | None = None


def _ref(kind: str, value: str, owner: _Ref, field: str) -> _Ref:
    """The ``kind`` spec that field ``field`` of ``owner`` names: a catalog name or alias, or a YAML
    path relative to ``owner``'s file."""
    if _is_path(value):
        path = Path(value).expanduser()
        if not path.is_absolute() and owner.base is not None:
            path = owner.base / path
        if not path.is_file():
            if Path(value).expanduser().is_absolute():
                where = ""
            else:
                where = f" (relative to {owner.base})" if owner.base is not None else " (relative to the working directory)"
            raise SpecError(f"{owner.origin}: {field}: no {kind} file {path}{where}")
        return _Ref(load_spec_file(kind, path), str(path), path.parent)
    try:
        spec = get(kind, value)
    except SpecError as err:
        raise SpecError(f"{owner.origin}: {field}: {err}") from None
    return _Ref(spec, f"{kind} spec {spec.name}")  # type: ignore[attr-defined]


def gpu_efficiencies(g: GPUSpec, origin: str) -> Efficiencies:
    """The datasheet efficiencies of GPU ``g`` (before any measured profile): the shipped defaults with
    their per-call times at its SM clock, then the GPU file's own overrides (plain seconds; ``origin``
    names the file in errors)."""
    eff = default_efficiencies().at_clock(g.sm_clock_hz)
    if not g.efficiency:
        return eff
    clocked = [op for op, fields in g.efficiency.items() if "reference_clock_hz" in fields]
    if clocked:
        raise SpecError(f"{origin}: efficiency.{clocked[0]}.reference_clock_hz: a GPU file's efficiencies are this "
                        f"GPU's own (overhead_s and tile_s in plain seconds); its sm_clock_hz scales the shipped defaults")
    try:
        return eff.with_overrides(g.efficiency, source=f"{g.name} overrides")
    except ValueError as err:
        raise SpecError(f"{origin}: efficiency: {err}") from None  # (the file, or "gpu spec NAME")


def _resolve(spec: SystemSpec, owner: _Ref | None = None, gpu: _Ref | None = None) -> System:
    owner = owner or _Ref(spec, f"system spec {spec.name}")
    gpu = gpu or _ref("gpu", spec.gpu, owner, "gpu")
    g: GPUSpec = gpu.spec  # type: ignore[assignment]
    host: HostSpec = _ref("host", spec.host, owner, "host").spec  # type: ignore[assignment]
    if spec.gpu_host_link:
        host_link: LinkSpec = _ref("link", spec.gpu_host_link, owner, "gpu_host_link").spec  # type: ignore[assignment]
    else:
        host_link = _ref("link", g.host_link, gpu, "host_link").spec  # type: ignore[assignment]
    if spec.gpu_gpu_link:
        peer: LinkSpec = _ref("link", spec.gpu_gpu_link, owner, "gpu_gpu_link").spec  # type: ignore[assignment]
    elif g.peer_link:
        peer = _ref("link", g.peer_link, gpu, "peer_link").spec  # type: ignore[assignment]
    else:
        peer = host_link  # PCIe-only GPUs: collectives over the host link
    eff = gpu_efficiencies(g, gpu.origin)
    # a shipped profile measures the shipped GPU: a user's own GPU file gets none
    shipped_gpu = None if _is_path(spec.gpu) else catalog("gpu").get(spec_key(spec.gpu))
    profile = profile_of(spec.name) if shipped_gpu is g else None
    allreduce: tuple[AllReduceFit, ...] = ()
    calibration = "datasheet"
    if profile is not None:
        eff = eff.with_overrides(profile.efficiency, source=f"profile {profile.name}: {profile.source}")
        allreduce, calibration = tuple(profile.allreduce), f"measured: {profile.source} ({profile.date})"
    elif shipped_gpu is g and (borrowed := gpu_profile_of(g)) is not None:
        # Another node with the same shipped GPU (a100-80g-spr, a user's own system file): the GPU's
        # measured kernels apply; its all-reduce fits only over the same NVLink/NVSwitch fabric (over
        # PCIe the server's topology decides: benchmarks/RESULTS.md "RTX PRO 6000 ... datasheet only").
        profile, node_link = borrowed
        eff = eff.with_overrides(profile.efficiency, source=f"profile {profile.name} (GPU kernels of "
                                 f"{profile.system}, the same GPU): {profile.source}")
        same_fabric = peer.link_type == "nvlink" and node_link is not None and spec_key(peer.name) == spec_key(
            get("link", node_link).name)  # type: ignore[attr-defined]
        if same_fabric:
            allreduce = tuple(profile.allreduce)
        calibration = (f"measured GPU kernels of {profile.system} (the same {g.name})"
                       f"{' and its all-reduce (the same fabric)' if same_fabric else '; all-reduce from the datasheet'}: "
                       f"{profile.source} ({profile.date})")
    if spec.allreduce:  # the node's own measurements win over a profile's, per (algo, group)
        mine = {(f.algo, f.group) for f in spec.allreduce}
        allreduce = (*[f for f in allreduce if (f.algo, f.group) not in mine], *spec.allreduce)
    return System(
        name=spec.name,
        spec=spec,
        gpu=g,
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


def load_system(name_or_path: str | Path | System) -> System:
    """Resolve ``--hw``: a system name/alias, a GPU name (single GPU on the default host),
    or a path to a YAML file of kind ``system`` or ``gpu`` (a GPU file alone is one GPU on the
    default host; a system file gives the GPU count, host and links). A :class:`System` is
    returned as it is."""
    name_or_path = name_or_spec(name_or_path, System, "hardware must be a name, a YAML path or a System")
    if isinstance(name_or_path, System):
        return name_or_path
    p = Path(name_or_path)
    if p.is_dir() and spec_key(name_or_path) not in catalog("system") and spec_key(name_or_path) not in catalog("gpu"):
        raise SpecError(f"{p}: a folder; --hw takes a system or GPU YAML file, or a name (`kvsim list hardware`)")
    if name_or_path.endswith((".yaml", ".yml")) or p.is_file():
        data = read_yaml(p)
        kind = data.get("kind", "system") if isinstance(data, dict) else "system"
        if isinstance(data, dict) and "kind" not in data and "model_type" in data:
            raise SpecError(f"{p}: a model config (model_type {data['model_type']!r}), not hardware: pass it with "
                            "--model; --hw takes a system or GPU YAML")
        owner = _Ref(None, str(p), p.parent)
        if kind == "gpu":
            gpu = validate_dict(GPUSpec, data, str(p))
            spec = SystemSpec(name=gpu.name, gpu=gpu.name, host=DEFAULT_HOST, source=f"user GPU file {p}")
            return _resolve(spec, owner, gpu=_Ref(gpu, str(p), p.parent))
        if kind != "system":
            raise SpecError(f"{p}: kind must be 'system' or 'gpu' for --hw (got {kind!r})")
        return _resolve(validate_dict(SystemSpec, data, str(p)), owner)
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
