"""The machine the benchmarks run on, as kvsim hardware specs (no torch here).

On ``--device cpu`` the CPU *is* the device: it becomes a :class:`GPUSpec`-shaped spec (peak
FLOP/s per dtype, DRAM bandwidth as "memory bandwidth") and also the host of the local
:class:`System`, so GPU-stream parts and host (``cpu_attn``) parts price on the same CPU.

Two versions of that spec exist:

* **nominal** ("datasheet defaults", used for the *before calibration* numbers):
  FLOP/s = threads x FLOP/cycle/core x clock (SPECS.md N10: 2 x 512-bit FMA = 64 fp32
  FLOP/cycle/core with AVX-512, 32 with AVX2+FMA; AMX 1024 bf16 / 2048 int8; AVX512-BF16 2x
  fp32; clock = ``CPU max MHz`` from lscpu, else ``cpu MHz`` of /proc/cpuinfo).
  DRAM bandwidth = this machine's fair share of its platform's socket peak (N11):
  ``socket_peak * threads / socket_cores`` of the shipped host spec matching the ISA.
* **measured** (written to the local YAML, used with the calibration): per dtype, the best
  FLOP/s achieved by the GEMM benchmarks, and the best bytes/s of the bandwidth benchmarks.
  On CPU the peaks are therefore *measured, not datasheet*: efficiencies fitted against them
  are fractions of best-case, and a kernel can reach 1.0.

On ``--device cuda`` the GPU spec comes from the catalog (matched by device name, or
``--hw``) and the host is the local CPU's nominal spec; datasheet peaks serve both before
and after calibration.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from kvsim.hardware import (
    GPUSpec,
    HostSpec,
    LinkSpec,
    System,
    SystemSpec,
    catalog,
    get,
    gpu_efficiencies,
)

#: shipped host spec whose per-core DRAM share stands in for an unknown VM/desktop CPU
_PLATFORM_HOSTS = (
    ("amx_tile", "GenuineIntel", "xeon-8480p"),
    ("avx512f", "GenuineIntel", "xeon-8380"),
    ("avx512f", "AuthenticAMD", "epyc-9654"),
    ("avx2", "AuthenticAMD", "epyc-7763"),
    ("avx2", "GenuineIntel", "xeon-8380"),
)
LOCAL_HOST_LINK = "pcie4-x16"


def cpu_facts() -> dict:
    """Facts about the local CPU from /proc/cpuinfo, /proc/meminfo and ``os`` (Linux; degrades elsewhere)."""
    info: dict = {"model_name": platform.processor() or platform.machine(), "vendor": "", "flags": [], "mhz": 0.0,
                  "max_mhz": 0.0, "logical_cpus": os.cpu_count() or 1, "mem_bytes": 0.0,
                  "uname": " ".join(platform.uname())}
    try:
        text = Path("/proc/cpuinfo").read_text()
        first = text.split("\n\n", 1)[0]
        for line in first.splitlines():
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "model name":
                info["model_name"] = v
            elif k == "vendor_id":
                info["vendor"] = v
            elif k == "flags":
                info["flags"] = v.split()
            elif k == "cpu MHz":
                info["mhz"] = float(v)
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_bytes"] = float(line.split()[1]) * 1024
    except OSError:
        pass
    info["max_mhz"] = _lscpu_max_mhz()
    if not info["mem_bytes"]:
        info["mem_bytes"] = 16e9
    return info


def _lscpu_max_mhz() -> float:
    if not shutil.which("lscpu"):
        return 0.0
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0.0
    m = re.search(r"CPU max MHz:\s*([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def flops_per_cycle(flags: list[str]) -> dict[str, float]:
    """Nominal FLOP/cycle/core per dtype from the ISA flags (SPECS.md N10) [E]."""
    f = set(flags)
    if "avx512f" in f:
        fp32 = 64.0  # 2 x 512-bit FMA units x 16 lanes x 2 FLOP
    elif "avx2" in f and "fma" in f:
        fp32 = 32.0
    else:
        fp32 = 8.0
    out = {"fp32": fp32}
    if "amx_bf16" in f:
        out["bf16"] = 1024.0  # AMX-wiki
    elif "avx512_bf16" in f:
        out["bf16"] = 2 * fp32
    if "amx_fp16" in f:
        out["fp16"] = 1024.0
    elif "avx512_fp16" in f:
        out["fp16"] = 2 * fp32
    if "amx_int8" in f:
        out["int8"] = 2048.0
    elif "avx512_vnni" in f or "avx_vnni" in f:
        out["int8"] = 4 * fp32
    return out


def nominal_cpu(facts: dict, threads: int) -> dict:
    """Datasheet-like peaks of ``threads`` cores: ``{"peak_flops_per_s", "dram_bw_bytes_per_s", "source"}``."""
    mhz = facts.get("max_mhz") or facts.get("mhz") or 2000.0
    fpc = flops_per_cycle(facts.get("flags", []))
    peaks = {k: threads * v * mhz * 1e6 for k, v in fpc.items()}
    host_name = _platform_host(facts)
    host: HostSpec = get("host", host_name)
    per_core = host.dram_bw_bytes_per_s / host.cores
    bw = per_core * threads
    src = (f"nominal [E]: {threads} cores x FLOP/cycle {fpc} x {mhz:.0f} MHz "
           f"({'lscpu max' if facts.get('max_mhz') else '/proc/cpuinfo'}); DRAM = fair share of a {host.name} socket "
           f"({host.dram_bw_bytes_per_s / 1e9:.1f} GB/s / {host.cores} cores x {threads})")
    return {"peak_flops_per_s": peaks, "dram_bw_bytes_per_s": bw, "source": src, "platform_host": host.name}


def _platform_host(facts: dict) -> str:
    flags = set(facts.get("flags", []))
    vendor = facts.get("vendor", "")
    for flag, ven, host in _PLATFORM_HOSTS:
        if flag in flags and (not vendor or vendor == ven):
            return host
    return "xeon-8380"


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return re.sub(r"-+", "-", s)[:40] or "cpu"


def cpu_specs(name: str, facts: dict, threads: int, peak_flops: dict[str, float], bw: float,
              source: str, notes: str = "") -> tuple[GPUSpec, HostSpec]:
    """The local CPU as a GPU-shaped device spec and as a host spec (same numbers)."""
    peaks = {k: float(v) for k, v in peak_flops.items()}
    gpu = GPUSpec(
        name=name, vendor=facts.get("vendor") or "cpu", memory_bytes=facts["mem_bytes"], memory_bw_bytes_per_s=bw,
        peak_flops_per_s=peaks, l2_bytes=0.0, sm_count=max(1, threads), tdp_w=1.0, host_link=LOCAL_HOST_LINK,
        source=source, notes=notes or f"{facts.get('model_name', '')}: the CPU itself is the device (kvsim validate --device cpu); tdp_w unknown",
    )
    host = HostSpec(
        name=name, vendor=facts.get("vendor") or "cpu", cores=max(1, threads), sockets=1, dram_bytes=facts["mem_bytes"],
        dram_bw_bytes_per_s=bw, peak_flops_per_s=peaks, host_link=LOCAL_HOST_LINK, source=source,
    )
    return gpu, host


def local_host_spec(facts: dict, threads: int) -> HostSpec:
    """Nominal spec of the local CPU as the host of a GPU system."""
    nom = nominal_cpu(facts, threads)
    _, host = cpu_specs(f"local-{slug(facts.get('model_name', 'cpu'))}", facts, threads, nom["peak_flops_per_s"],
                        nom["dram_bw_bytes_per_s"], nom["source"])
    return host


def make_system(gpu: GPUSpec, host: HostSpec, name: str | None = None) -> System:
    """A one-device system of ``gpu`` on ``host`` with kvsim's default efficiencies (and the GPU's overrides)."""
    link: LinkSpec = get("link", gpu.host_link)
    spec = SystemSpec(name=name or gpu.name, gpu=gpu.name, host=host.name, num_gpus=1, source="kvsim validate local system")
    eff = gpu_efficiencies(gpu, f"gpu spec {gpu.name}")
    return System(name=spec.name, spec=spec, gpu=gpu, host=host, num_gpus=1, host_sockets=host.sockets,
                  host_memory_bytes=host.dram_bytes, gpu_host_link=link, gpu_gpu_link=link, eff=eff)


def match_gpu(device_name: str) -> GPUSpec | None:
    """The catalog GPU whose name best matches ``torch.cuda.get_device_name`` (None if unsure)."""
    n = device_name.lower().replace("nvidia", "").replace("geforce", "").replace("tesla", "").strip()
    mem = re.search(r"(\d+)\s*gb", n)
    rules = [
        ("h200", "h200"), ("h100", "h100-sxm"), ("l40s", "l40s"), ("l20", "l20"), ("4090", "rtx-4090"),
        ("a100", "a100-sxm4-80gb" if mem and mem.group(1) == "80" else "a100-sxm4-40gb"),
        ("v100", "v100-sxm2-32gb" if mem and mem.group(1) == "32" else "v100-sxm2-16gb"),
    ]
    if "pcie" in n or "nvl" in n:  # PCIe/NVL variants differ from the shipped SXM specs: ask for --hw
        return None
    gpus = catalog("gpu")
    for key, name in rules:
        if key in n and name in gpus:
            return gpus[name]  # type: ignore[return-value]
    return None


def gpu_spec_dict(gpu: GPUSpec) -> dict:
    return gpu.model_dump(exclude_defaults=False)


def write_spec_yaml(gpu: GPUSpec, path: str | Path, header: str = "") -> None:
    """Write ``gpu`` as a ``kind: gpu`` YAML usable with ``--hw PATH``."""
    data = gpu.model_dump()
    data = {k: v for k, v in data.items() if v not in (None, [], {}) or k in ("kind", "name")}
    text = yaml.safe_dump(data, sort_keys=False)
    Path(path).write_text((header + "\n" if header else "") + text, encoding="utf-8")
