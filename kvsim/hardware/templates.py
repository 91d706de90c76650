"""Commented starting files for a user's own GPU or system (``kvsim hardware new``).

The text is YAML that loads as is once every ``null`` number is filled in (or, for a dtype the
GPU has no tensor cores for, its line deleted); before that, loading it names each field still
missing. ``like`` copies the numbers of a catalog spec as a starting point.
"""

from __future__ import annotations

import json
from typing import Any

from kvsim.hardware.spec import GPUSpec, HostSpec, SystemSpec

_PEAK_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "fp4")


def _num(v: float | int | None) -> str:
    """A number as YAML reads it back exactly (PyYAML needs a '.' in a float's mantissa)."""
    if v is None:
        return "null"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    text = f"{v:.12g}"
    mantissa, _, exp = text.partition("e")
    return f"{mantissa}.0e{exp}" if exp and "." not in mantissa else text


def _str(v: Any) -> str:
    return "null" if v is None else json.dumps(v)


def _line(key: str, value: str, comment: str, width: int = 30) -> str:
    text = f"{key}: {value}"
    return f"{text:<{width}} # {comment}" if comment else text


def _provenance(like: GPUSpec | HostSpec | None) -> list[str]:
    """A part file's ``source`` and ``notes`` lines (``like``: the catalog entry its numbers came from)."""
    return [_line("source", _str(f"copied from kvsim's {like.name}: {like.source}" if like
                                 else "FILL IN: datasheet and pages the numbers come from"), ""),
            _line("notes", _str(""), "what is estimated and why")]


def gpu_template(name: str, like: GPUSpec | None = None, links: list[str] | None = None) -> str:
    """A GPU file named ``name`` (numbers from ``like``, else ``null`` to fill in)."""
    g = like
    peaks = g.peak_flops_per_s if g else {}
    dtypes = [d for d in _PEAK_DTYPES if d in peaks] if g else list(_PEAK_DTYPES)
    known = ", ".join(links or [])
    lines = [
        "# GPU spec for kvsim: `--hw THIS_FILE` runs one of these GPUs on the default host; a system",
        "# file (`kvsim hardware new system`) names it with a GPU count, host and links.",
        "# Units are SI: bytes, bytes per second, FLOP per second, watts. Peaks are DENSE (halve a",
        "# datasheet's 'with sparsity' figures). Replace every null with a number, give each a source,",
        "# then check it: kvsim list hardware --hw THIS_FILE",
    ]
    if g:
        lines.append(f"# Numbers copied from the catalog GPU {g.name} (kvsim/hardware/gpus): change them to yours.")
    lines += [
        "kind: gpu",
        _line("name", _str(name), "what reports and `--hw` call it"),
        "aliases: []",
        _line("vendor", _str(g.vendor if g else "NVIDIA"), ""),
        _line("memory_bytes", _num(g.memory_bytes if g else None),
              "device memory in bytes: nvidia-smi's MiB x 2**20 (81559 MiB -> 85520809984)"),
        _line("memory_bw_bytes_per_s", _num(g.memory_bw_bytes_per_s if g else None),
              "peak DRAM bandwidth, bytes/s (3.35 TB/s -> 3.35e12)"),
        "peak_flops_per_s:             # dense FLOP/s per math dtype; fp32 is required; delete the line",
        "                              # of a dtype without tensor cores (it then runs at the fp32 rate)",
    ]
    lines += [f"  {d}: {_num(peaks.get(d))}" for d in dtypes]
    lines += [
        _line("l2_bytes", _num(g.l2_bytes if g else None), "last-level on-chip cache, bytes"),
        _line("sm_count", _num(g.sm_count if g else None), "streaming multiprocessors (AMD: compute units)"),
        _line("tdp_w", _num(g.tdp_w if g else None), "board power, W"),
        _line("host_link", _str(g.host_link if g else "pcie5-x16"),
              "link to the host: a link name or a link YAML path relative to this file"),
        _line("peer_link", _str(g.peer_link if g else None),
              "GPU-GPU link (NVLink, ...); null: collectives go over host_link"),
    ]
    if known:
        lines.append(f"# link names in the catalog: {known}")
    lines += [
        _line("compute_capability", _str(g.compute_capability if g else None), "optional, e.g. \"9.0\""),
        _line("torch_memory_bytes", _num(g.torch_memory_bytes if g else None),
              "optional: torch.cuda.mem_get_info()[1]; null = memory_bytes"),
        _line("sm_clock_hz", _num(g.sm_clock_hz if g else None),
              "optional: max SM clock, Hz (nvidia-smi -q -d CLOCK 'Max Clocks SM'); null = 1.98e9"),
    ]
    if g and g.price:
        lines += ["price:", f"  usd_per_hour: {_num(g.price.usd_per_hour)}", f"  source: {_str(g.price.source)}",
                  f"  date: {_str(g.price.date)}"]
    else:
        lines.append("# price: {usd_per_hour: 2.0, source: \"provider, page\", date: \"YYYY-MM-DD\"}   # optional")
    if g and g.efficiency:
        lines.append("efficiency:                    # measured fractions of peak per op class (see the catalog file)")
        for op, fields in g.efficiency.items():
            inner = ", ".join(f"{k}: {_num(v)}" for k, v in fields.items() if v is not None)
            lines.append(f"  {op}: {{{inner}}}")
    else:
        lines.append("# efficiency: {gemm: {compute: 0.8}}   # optional: measured fraction of peak per op class")
    return "\n".join(lines + _provenance(g)) + "\n"


def host_template(name: str, like: HostSpec | None = None, links: list[str] | None = None) -> str:
    """A host CPU file named ``name`` (numbers from ``like``, else ``null`` to fill in)."""
    h = like
    peaks = h.peak_flops_per_s if h else {"fp32": None, "bf16": None}
    lines = [
        "# Host CPU spec for kvsim: a system file names it (`kvsim hardware new system --host THIS_FILE`);",
        "# it prices CPU attention (MagicPIG, InfLLM), host KV pools and offload tiers.",
        "# Units are SI: bytes, bytes per second, FLOP per second. Numbers are PER SOCKET except",
        "# dram_bytes (per node). Replace every null with a number and give a source, then check the",
        "# system that uses it: kvsim list hardware --hw SYSTEM_FILE",
    ]
    if h:
        lines.append(f"# Numbers copied from the catalog host {h.name} (kvsim/hardware/hosts): change them to yours.")
    lines += [
        "kind: host",
        _line("name", _str(name), "what reports call it"),
        "aliases: []",
        _line("vendor", _str(h.vendor if h else None), "e.g. \"AMD\", \"Intel\""),
        _line("cores", _num(h.cores if h else None), "cores per socket"),
        _line("sockets", _num(h.sockets if h else 1), "sockets in the node"),
        _line("dram_bytes", _num(h.dram_bytes if h else None), "installed DRAM of the node, bytes (1 TiB -> 1099511627776)"),
        _line("dram_bw_bytes_per_s", _num(h.dram_bw_bytes_per_s if h else None),
              "peak DRAM bandwidth per socket: channels x MT/s x 8 B (8 x 3200e6 x 8 = 204.8e9)"),
        "peak_flops_per_s:             # per socket, all cores, per math dtype; fp32 is required; delete",
        "                              # a dtype the CPU has no instructions for (it then runs at fp32)",
    ]
    lines += [f"  {d}: {_num(v)}" for d, v in peaks.items()]
    lines += [_line("host_link", _str(h.host_link if h else "pcie5-x16"), "PCIe generation of the root complex (a link name)")]
    if links:
        lines.append(f"# link names in the catalog: {', '.join(links)}")
    return "\n".join(lines + _provenance(h)) + "\n"


def system_template(name: str, like: SystemSpec | None = None, *, gpu: str | None = None,
                    num_gpus: int | None = None, host: str | None = None, hosts: list[str] | None = None) -> str:
    """A system file named ``name`` (from ``like`` and the given parts; else ``null`` to fill in)."""
    s = like
    gpu = gpu if gpu is not None else (s.gpu if s else None)
    num_gpus = num_gpus if num_gpus is not None else (s.num_gpus if s else None)
    host = host if host is not None else (s.host if s else None)
    lines = [
        "# System spec for kvsim: N identical GPUs, a host CPU and the links between them.",
        f"# Use it with `--hw THIS_FILE --tp N`; check it with `kvsim list hardware --hw THIS_FILE`.",
        "# gpu, host and the links take a catalog name (`kvsim list hardware`) or the path of a YAML",
        "# file of that kind, relative to this file (`kvsim hardware new gpu NAME --out my-gpu.yaml`).",
    ]
    if s:
        lines.append(f"# Parts copied from the catalog system {s.name} (kvsim/hardware/systems).")
    lines += [
        "kind: system",
        _line("name", _str(name), ""),
        "aliases: []",
        _line("description", _str(s.description if s else ""), ""),
        _line("gpu", _str(gpu), "a GPU name (H100-SXM, L40S, ...) or a GPU YAML path"),
        _line("num_gpus", _num(num_gpus), "GPUs in the node: --tp and replicas share them"),
        _line("host", _str(host), "host CPU: a host name or a host YAML path"),
    ]
    if hosts:
        lines.append(f"# host names in the catalog: {', '.join(hosts)}")
    lines += [
        _line("host_sockets", _num(s.host_sockets if s else None), "optional: null = the host spec's sockets"),
        _line("host_memory_bytes", _num(s.host_memory_bytes if s else None), "optional: null = the host spec's DRAM"),
        _line("gpu_host_link", _str(s.gpu_host_link if s else None), "optional: null = the GPU's host_link"),
        _line("gpu_gpu_link", _str(s.gpu_gpu_link if s else None),
              "optional: null = the GPU's peer_link, else its host link (a PCIe-only server)"),
        _line("source", _str(f"copied from kvsim's {s.name}: {s.source}" if s else "FILL IN: where the node shape comes from"), ""),
        "# optional: all-reduce measured on this node (a PCIe-only server past 2 GPUs needs it: its NCCL",
        "# bandwidth depends on the PCIe topology): append the block `kvsim hardware allreduce LOG...` prints",
        "# from nccl-tests all_reduce_perf output (one run per GPU count).",
    ]
    return "\n".join(lines) + "\n"
