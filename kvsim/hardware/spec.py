"""Pydantic models of the hardware YAML files (GPUs, hosts, links, systems, efficiencies).

SI units in field names: bytes, bytes per second, FLOP per second, seconds, watts.
Peak FLOP/s are *dense* tensor-core rates (vendor "with sparsity" numbers halved).
Link bandwidths are *per direction*.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationError, field_validator, model_validator

from kvsim.specbase import Setting, Strict, number, short_repr

# Plausible ranges of hardware numbers: wide enough for any real part, narrow enough that a
# typo (1e300, .inf, 0) is an error. Stated in each rejection.
Bytes = number(float, 0, 2**50, lo_open=True, unit="bytes (up to 1 PiB)")
# device and host memories, memory bandwidths and peaks have floors as well: a number written in
# the wrong unit (3.35 for 3.35e12 B/s, 48 for 48 GB, 91.1 for 91.1 TFLOP/s) is far below any real part
MemoryBytes = number(float, 2**27, 2**50, unit="bytes (128 MiB to 1 PiB: write GB as e.g. 48e9)")
DramBytesPerS = number(float, 1e9, 1e15, unit="bytes/s (1 GB/s to 1 PB/s: write TB/s as e.g. 3.35e12)")
PeakFlopsPerS = number(float, 1e10, 1e18, unit="FLOP/s (1e10 to 1e18: write TFLOP/s as e.g. 91.6e12)")
CacheBytes = number(float, 0, 2**40, unit="bytes (up to 1 TiB)")
# (from 1 kB/s: a slower link's transfer times overflow the simulator's clock, 1e-300 B/s gave inf)
BytesPerS = number(float, 1e3, 1e15, unit="bytes/s (1 kB/s to 1 PB/s)")
FlopsPerS = number(float, 0, 1e18, lo_open=True, unit="FLOP/s (up to 1e18)")
Watts = number(float, 0, 1e5, lo_open=True, unit="W")
UsdPerHour = number(float, 0, 1e5, lo_open=True, unit="USD/h")
SpecName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]  # what reports call it
ClockHz = number(float, 1e8, 1e10, unit="Hz (0.1-10 GHz)")
Seconds = number(float, 0, 10, unit="s")
Fraction01 = number(float, 0, 1, lo_open=True)
Units = number(int, 1, 1_000_000)  # SMs, cores
GpuCount = number(int, 1, 65536)
Sockets = number(int, 1, 64)

OpClass = Literal[
    "gemm",  # weight GEMMs (QKV/O projections, MLP, LM head, MoE experts)
    "attn_prefill",  # prefill attention (FlashAttention-style)
    "attn_decode",  # decode attention over the KV cache (memory bound)
    "elementwise",  # norms, rotary, activations, residual adds, (de)quantization passes
    "memcpy",  # device-memory copies (KV block copies, gathers)
    "cpu_attn",  # attention / table lookups run on the host CPU (MagicPIG, InfLLM)
    "cpu_gemm",  # weight GEMMs run on the host CPU (MoE experts offloaded with miss=cpu, Fiddler)
    "pcie",  # host<->device transfers; overhead_s is the cost of one synchronous round trip
    "collective",  # tensor-parallel all-reduce over NVLink / PCIe; overhead_s per collective
    "step",  # per engine iteration framework overhead (scheduler, sampling, launch of graph)
    "step_seq",  # framework overhead per sequence of a step (input preparation, sampling, output processing)
    "step_token",  # framework overhead per token of a step (input tensors built per token)
]
OP_CLASSES: tuple[str, ...] = OpClass.__args__  # type: ignore[attr-defined]

PeakFlops = dict[Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4"], PeakFlopsPerS]


class Price(Strict):
    """Rental price of one GPU (or host) and where it was read; plan results carry it as is."""

    usd_per_hour: UsdPerHour = Field( description="on-demand price of one unit per hour, USD")
    source: str
    date: str

    @property
    def dated_source(self) -> str:
        """``source (date)``, or the source alone when it already states its date."""
        return self.source if self.date in self.source else f"{self.source} ({self.date})"


class GPUSpec(Strict):
    kind: Literal["gpu"] = "gpu"
    name: SpecName
    aliases: list[str] = []
    vendor: str = "NVIDIA"
    memory_bytes: MemoryBytes = Field( description="device memory capacity, bytes")
    torch_memory_bytes: MemoryBytes | None = Field(
        None, description="total device memory as CUDA reports it (torch.cuda.mem_get_info()[1]), below "
        "nvidia-smi's total by what the driver keeps; vLLM sizes its memory from it. None: memory_bytes is used")
    compute_capability: str | None = Field(
        None, pattern=r"^[0-9]{1,2}\.[0-9]$", description="CUDA compute capability, e.g. '8.9' (NVIDIA's CUDA GPU list)")
    memory_bw_bytes_per_s: DramBytesPerS = Field( description="peak DRAM (HBM/GDDR) bandwidth")
    peak_flops_per_s: PeakFlops = Field(description="dense peak per math dtype")
    l2_bytes: CacheBytes
    sm_count: Units
    sm_clock_hz: ClockHz | None = Field(
        None, description="maximum (boost) SM clock, Hz (nvidia-smi 'Max Clocks SM', or the datasheet's boost clock). "
        "Op classes with a reference_clock_hz scale their fixed per-call and per-tile times by reference / this; "
        "None: the GPU is priced as if it ran at the reference clock")
    tdp_w: Watts
    host_link: str = Field(description="name of the link spec to the host (PCIe generation)")
    peer_link: str | None = Field(None, description="name of the GPU-GPU link spec, if any")
    price: Price | None = None
    efficiency: dict[str, dict[str, Setting]] = Field(
        default_factory=dict, description="per-op-class overrides of the default efficiencies"
    )
    source: str
    notes: str = ""

    @model_validator(mode="after")
    def _has_half(self) -> "GPUSpec":
        if "fp32" not in self.peak_flops_per_s:
            raise ValueError("peak_flops_per_s must include fp32")
        if self.torch_memory_bytes is not None and self.torch_memory_bytes > self.memory_bytes:
            raise ValueError(f"torch_memory_bytes ({self.torch_memory_bytes:.0f}) must not exceed "
                             f"memory_bytes ({self.memory_bytes:.0f})")
        return self


class HostSpec(Strict):
    kind: Literal["host"] = "host"
    name: SpecName
    aliases: list[str] = []
    vendor: str
    cores: Units = Field( description="cores per socket")
    sockets: Sockets = 1
    dram_bytes: MemoryBytes = Field( description="installed DRAM per node (typical), bytes")
    dram_bw_bytes_per_s: DramBytesPerS = Field( description="peak DRAM bandwidth per socket")
    peak_flops_per_s: PeakFlops = Field(description="per socket, all cores, per math dtype")
    host_link: str = Field(description="PCIe generation of the root complex")
    price: Price | None = None
    source: str
    notes: str = ""

    @model_validator(mode="after")
    def _has_fp32(self) -> "HostSpec":
        if "fp32" not in self.peak_flops_per_s:  # every other dtype falls back to it
            raise ValueError("peak_flops_per_s must include fp32")
        return self


class StorageSpec(Strict):
    """A local storage device (an NVMe SSD) that holds the lowest KV offload tier
    (:mod:`kvsim.sim.kv_tiers`): sequential read and write bandwidth and the latency of one request."""

    kind: Literal["storage"] = "storage"
    name: SpecName
    aliases: list[str] = []
    read_bw_bytes_per_s: BytesPerS = Field(description="sequential read bandwidth")
    write_bw_bytes_per_s: BytesPerS = Field(description="sequential write bandwidth")
    latency_s: Seconds = Field(description="latency of one small request")
    source: str
    notes: str = ""


class LinkSpec(Strict):
    """A host or GPU-GPU link. ``bw_bytes_per_s`` is what one GPU can send per direction (all its
    links together). In a switched fabric (NVSwitch, a PCIe switch) a collective over any group
    gets it; in a full mesh without a switch (AMD Infinity Fabric on MI300X-class boards) each peer
    pair has its own link, so a group of ``g`` GPUs gets ``min(bw, (g - 1) * peer_bw)``."""

    kind: Literal["link"] = "link"
    name: SpecName
    aliases: list[str] = []
    link_type: Literal["pcie", "nvlink", "xgmi", "network"]
    bw_bytes_per_s: BytesPerS = Field( description="per direction, all of one GPU's links together")
    peer_bw_bytes_per_s: BytesPerS | None = Field(
        None, description="full mesh only: per direction to one peer (None: a switch or shared bus)")
    latency_s: Seconds = Field( description="one-way latency of a small transfer")
    source: str
    notes: str = ""

    def collective_bw_bytes_per_s(self, group: int) -> float:
        """Per-direction bandwidth one GPU drives in a collective over ``group`` GPUs."""
        if self.peer_bw_bytes_per_s is None or group < 2:
            return self.bw_bytes_per_s
        return min(self.bw_bytes_per_s, (group - 1) * self.peer_bw_bytes_per_s)


class OpEfficiency(Strict):
    """Achieved fraction of peak for one op class, plus a fixed cost per kernel/launch.

    compute: fraction of peak FLOP/s reached by large kernels of this class.
    memory: fraction of peak bandwidth (HBM for GPU ops, DRAM for cpu ops, link for pcie/collective).
    overhead_s: fixed seconds per launch (kernel launch, synchronization, round trip).
    blend: how a part's resource times combine: ``None`` takes their maximum (the classic
        roofline); a number ``p >= 1`` takes their p-norm ``(sum t_r^p)^(1/p)``, which is the
        sum at ``p = 1`` and tends to the maximum as ``p`` grows: the slow memory-to-compute
        transition measured GEMMs and attention kernels show near the ridge point.
    tile_s: fixed seconds per work tile (``Part.tiles``): per-tile setup, softmax rescaling
        and output writes that do not scale with FLOPs or bytes.
    wave_tiles_per_sm: the wave floor: a call with ``tiles`` tiles on a GPU of ``S`` SMs runs
        its FLOPs no faster than ``max(1, S * wave_tiles_per_sm / tiles)`` times
        the full-GPU time (too few tiles leave SMs idle). ``None``: no floor.
    tiles_in_body: the tiles' time overlaps the resource times (max or p-norm with them) instead
        of adding to them (see :mod:`kvsim.costmodel.roofline`).
    reference_clock_hz: ``overhead_s`` and ``tile_s`` are given for a GPU whose SM clock is this:
        fixed work per call and per tile (setup, softmax rescaling, output writes, reductions) is
        a count of cycles, so a GPU of SM clock ``f`` takes them x ``reference_clock_hz / f``
        (:meth:`Efficiencies.at_clock`, applied when a system is resolved). ``None``: seconds as given.
    """

    compute: Fraction01
    memory: Fraction01
    overhead_s: Seconds
    blend: number(float, 1, 64) | None = None
    tile_s: Seconds = 0.0
    wave_tiles_per_sm: number(float, 0, 64, lo_open=True) | None = None
    tiles_in_body: bool = False
    reference_clock_hz: ClockHz | None = None


class AllReduceFit(Strict):
    """Measured all-reduce cost of one algorithm at one group size on one system.

    A call on a message of ``M`` bytes per GPU takes ``latency_s + ring_bytes / bus_bw`` with
    ``ring_bytes = 2 (g-1)/g * M`` (NCCL's bus-bandwidth convention, nccl-tests
    doc/PERFORMANCE.md). ``custom``: vLLM's custom all-reduce (one-/two-shot over NVLink
    P2P, used under CUDA graphs for messages up to ``max_message_bytes``); ``nccl``: NCCL."""

    algo: Literal["custom", "nccl"]
    group: GpuCount
    latency_s: Seconds
    bus_bw_bytes_per_s: BytesPerS
    max_message_bytes: Bytes | None = Field(None, description="custom only: largest message it handles")


class Efficiencies(Strict):
    """One :class:`OpEfficiency` per op class (see ``OP_CLASSES``)."""

    gemm: OpEfficiency
    attn_prefill: OpEfficiency
    attn_decode: OpEfficiency
    elementwise: OpEfficiency
    memcpy: OpEfficiency
    cpu_attn: OpEfficiency
    cpu_gemm: OpEfficiency
    pcie: OpEfficiency
    collective: OpEfficiency
    step: OpEfficiency
    step_seq: OpEfficiency
    step_token: OpEfficiency
    source: str = ""

    def of(self, op: str) -> OpEfficiency:
        return getattr(self, op)

    def at_clock(self, sm_clock_hz: float | None) -> "Efficiencies":
        """Per-call and per-tile seconds of the classes given at a reference clock, for a GPU of SM
        clock ``sm_clock_hz``: ``overhead_s`` and ``tile_s`` x ``reference_clock_hz / sm_clock_hz``
        (unchanged when the clock is unknown), after which the classes hold plain seconds."""
        scaled = {}
        for op in OP_CLASSES:
            e = self.of(op)
            if e.reference_clock_hz is None:
                continue
            factor = 1.0 if sm_clock_hz is None else e.reference_clock_hz / sm_clock_hz
            scaled[op] = {"overhead_s": e.overhead_s * factor, "tile_s": e.tile_s * factor, "reference_clock_hz": None}
        return self.with_overrides(scaled) if scaled else self

    def with_overrides(self, overrides: dict[str, dict[str, float]], source: str = "") -> "Efficiencies":
        """Copy with per-class fields replaced (unknown classes/fields raise ValueError)."""
        data = self.model_dump()
        for op, fields in overrides.items():
            if op not in OP_CLASSES:
                raise ValueError(f"unknown op class '{op}' (choices: {', '.join(OP_CLASSES)})")
            data[op] = {**data[op], **fields}
        if source:
            data["source"] = f"{self.source}; {source}" if self.source else source
        try:
            return Efficiencies.model_validate(data)
        except ValidationError as err:  # one line: "gemm.compute: must be in (0, 1] (got 5.0)"
            raise ValueError("; ".join(_override_problem(e) for e in err.errors())) from None


def _override_problem(e: dict) -> str:
    loc = ".".join(str(x) for x in e["loc"])
    if e["type"] == "extra_forbidden":
        return f"{loc}: unknown field (fields: {', '.join(OpEfficiency.model_fields)})"
    return f"{loc}: {e['msg'].removeprefix('Value error, ')} (got {short_repr(e.get('input'))})"


class SystemSpec(Strict):
    """A named node: N identical GPUs, a host, and the links between them."""

    kind: Literal["system"] = "system"
    name: SpecName
    aliases: list[str] = []
    description: str = ""
    gpu: str
    num_gpus: GpuCount = Field(1, description="GPUs in the node (upper bound for TP x replicas)")
    host: str
    host_sockets: Sockets | None = Field(None, description="overrides the host spec's socket count")
    host_memory_bytes: Bytes | None = Field(None, description="overrides the host DRAM capacity")
    gpu_host_link: str | None = Field(None, description="defaults to the GPU's host_link")
    gpu_gpu_link: str | None = Field(None, description="defaults to the GPU's peer_link, else host link")
    allreduce: list[AllReduceFit] = Field(
        [], description="all-reduce measured on this node, per algorithm and group size (nccl-tests "
                        "all_reduce_perf; `kvsim hardware allreduce LOG` fits them): replaces the link's datasheet "
                        "and, per (algo, group), a shipped profile's")
    source: str

    @field_validator("allreduce")
    @classmethod
    def _one_per_algo_group(cls, fits: list[AllReduceFit]) -> list[AllReduceFit]:
        if any(f.group < 2 for f in fits):
            raise ValueError("group must be >= 2 (an all-reduce needs 2 or more GPUs)")
        seen = [(f.algo, f.group) for f in fits]
        dup = sorted({k for k in seen if seen.count(k) > 1})
        if dup:
            raise ValueError("two entries for " + ", ".join(f"{a} at {g} GPUs" for a, g in dup))
        return fits

    @model_validator(mode="after")
    def _groups_fit_the_node(self) -> "SystemSpec":
        big = sorted({f.group for f in self.allreduce if f.group > self.num_gpus})
        if big:
            raise ValueError(f"allreduce: group {big[0]} > num_gpus {self.num_gpus}")
        return self


class MeasuredError(Strict):
    """Error of a profile against measured kernels of one op class (fractions, not %)."""

    rows: number(int, 0, 10**9)
    median_abs: number(float, 0, 100)
    p90_abs: number(float, 0, 100)
    bias: number(float, -100, 100)
    protocol: str = Field(description="'held-out ...' or 'in-sample', and on which rows")


class ProfileSpec(Strict):
    """Efficiencies of one system measured on real kernels: replaces the datasheet defaults.

    ``kvsim validate kernels --fit --write`` writes these from the measured kernel tables."""

    kind: Literal["profile"] = "profile"
    name: SpecName
    aliases: list[str] = []
    system: str = Field(description="the system (node) these measurements are of")
    efficiency: dict[str, dict[str, Setting]] = Field(default_factory=dict)
    allreduce: list[AllReduceFit] = []
    measured_error: dict[str, MeasuredError] = Field(default_factory=dict)
    source: str
    date: str
