"""Run the microbenchmarks (imports torch): timing and results.

The kernels come from the ``bench_*`` modules, which build them from the shared pieces in
:mod:`kvsim.validate.bench_base` (:class:`Bench`, :class:`Kernel`, rotating buffers).

Timing (gpt-fast / torch.utils.benchmark style): warm-up calls, then ``repeats`` samples of
``inner`` back-to-back calls each (``inner`` chosen so a sample lasts at least
``min_sample_s``); the per-call time of every sample is stored, the median is reported.
CPU: ``time.perf_counter``. CUDA: ``torch.cuda.Event`` pairs around each sample, after a
``synchronize``.
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
import time
from collections.abc import Callable

import torch

from kvsim.errors import SpecError
from kvsim.hardware import get
from kvsim.models import ModelSpec
from kvsim.validate import bench_attention, bench_gemm, bench_memory, bench_quant, bench_sparse, cpuenv, localhw
from kvsim.validate.bench_base import Bench, Kernel, Settings
from kvsim.validate.models import default_model
from kvsim.validate.peaks import measured_gpu_spec
from kvsim.validate.results import KernelResult, Results, part_to_dict

#: other processes' load (cores, beyond the cores this run leaves idle) above which a kernel's
#: timing is repeated, and how often
CONTENDED = 0.3
RETRIES = 2


def time_calls(call: Callable[[], object], cuda: bool, s: Settings) -> tuple[list[float], int]:
    """Per-call seconds of ``s.repeats`` samples, and the calls per sample."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(max(1, s.warmup)):
        call()
    sync()
    one = (time.perf_counter() - t0) / max(1, s.warmup)
    inner = max(1, min(10_000, math.ceil(s.min_sample_s / max(one, 1e-7))))
    times: list[float] = []
    for _ in range(s.repeats):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            sync()
            a.record()
            for _ in range(inner):
                call()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3 / inner)
        else:
            t = time.perf_counter()
            for _ in range(inner):
                call()
            times.append((time.perf_counter() - t) / inner)
    return times, inner


def describe(k: KernelResult, peak_flops: float, peak_bw: float) -> str:
    """One line in gpt-fast's voice: time, FLOP/s and bandwidth achieved beside the peak."""
    t = k.median_s
    fl, by = k.flops, k.bytes
    s = f"{k.name:<44s} {t * 1e3:9.3f} ms"
    if fl:
        s += f"  FLOP/s achieved: {fl / t / 1e9:8.1f} GFLOP/s ({fl / t / peak_flops * 100:5.1f}% of {peak_flops / 1e9:.0f})"
    if by:
        s += f"  Bandwidth achieved: {by / t / 1e9:7.2f} GB/s ({by / t / peak_bw * 100:5.1f}% of {peak_bw / 1e9:.1f})"
    return s


def collect_kernels(b: Bench, groups: list[str] | None = None) -> list[Kernel]:
    ks: list[Kernel] = []
    for mod in (bench_memory, bench_gemm, bench_attention, bench_quant, bench_sparse):
        ks.extend(mod.kernels(b))
    if groups:
        ks = [k for k in ks if k.group in groups or k.fit is False]
    return ks


def run_benchmarks(device: str = "cpu", model: ModelSpec | None = None, *, quick: bool = False,
                   gpu_spec=None, groups: list[str] | None = None, threads: int | None = None,
                   log: Callable[[str], None] = print, command: str = "", dtypes: list[str] | None = None) -> Results:
    """Run every microbenchmark on ``device`` and return the results (with nominal/measured specs)."""
    allocator = cpuenv.tune_allocator()
    load0 = cpuenv.other_load()
    if load0 is not None and load0 > 0.3:
        log(f"warning: other processes keep {load0:.1f} cores busy: CPU timings will be contended")
    if threads:
        torch.set_num_threads(threads)
    nthreads = torch.get_num_threads()
    facts = localhw.cpu_facts()
    host = localhw.local_host_spec(facts, nthreads)
    if device == "cpu":
        name = f"local-{localhw.slug(facts['model_name'])}-{nthreads}t"
        nom = localhw.nominal_cpu(facts, nthreads)
        gpu, host = localhw.cpu_specs(name, facts, nthreads, nom["peak_flops_per_s"], nom["dram_bw_bytes_per_s"], nom["source"])
        device_name = facts["model_name"]
        dtypes = dtypes or ["fp32", "bf16"]
    else:
        device_name = torch.cuda.get_device_name()
        gpu = gpu_spec or localhw.match_gpu(device_name)
        if gpu is None:
            raise SpecError(f"no shipped GPU spec matches '{device_name}': pass --hw NAME or a GPU YAML")
        dtypes = dtypes or ["bf16", "fp16"]
    system = localhw.make_system(gpu, host)
    if model is None:
        model = default_model(device)
    s = Settings.make(quick, device)
    b = Bench(device, model, s, dtypes, system)
    # other processes may use the cores this run leaves idle (a 1-thread run on 2 cores) without contention
    contended = max(CONTENDED, (facts["logical_cpus"] or 1) - nthreads + CONTENDED)
    kernels = collect_kernels(b, groups)
    log(f"kvsim validate run: {len(kernels)} kernels on {device_name} ({device}, {nthreads} threads), "
        f"torch {torch.__version__}, model {model.name}{' (quick)' if quick else ''}")
    out: list[KernelResult] = []
    for k in kernels:
        call = k.make()
        cuda = device == "cuda" and not k.on_host
        for attempt in range(RETRIES + 1):
            snap = cpuenv.snapshot()
            times, inner = time_calls(call, cuda, s)
            busy = cpuenv.other_since(snap)
            if busy is None or busy <= contended or attempt == RETRIES:
                break
            log(f"  ({k.name}: other processes used {busy:.1f} cores while timing; retry {attempt + 1}/{RETRIES})")
        del call
        kr = KernelResult(name=k.name, group=k.group, op=k.op, shape=k.shape, parts=[part_to_dict(p) for p in k.parts],
                          times_s=times, inner=inner, timer="cuda_event" if cuda else "perf_counter", fit=k.fit,
                          note="; ".join(x for x in (k.note, f"contended: other processes used {busy:.1f} cores" if busy and busy > contended else "") if x))
        out.append(kr)
        pf, pb = _peaks_for(kr, gpu, host)
        log(describe(kr, pf, pb))
    load1 = cpuenv.other_load()
    host_info = {**_host_facts(facts), "allocator_tuned": allocator, "other_load_cores_before": load0,
                 "other_load_cores_after": load1}
    res = Results(
        device=device, device_name=device_name, torch_version=torch.__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), threads=nthreads, quick=quick,
        model=model.name, command=command or " ".join(sys.argv), host=host_info,
        nominal_gpu=gpu.model_dump(), nominal_host=host.model_dump(), kernels=out,
    )
    if device == "cpu":
        res.measured_gpu = measured_gpu_spec(res).model_dump()
    return res


def _peaks_for(k: KernelResult, gpu, host) -> tuple[float, float]:
    dt = k.parts[0].get("dtype", "fp32") if k.parts else "fp32"
    on_cpu = any(p.get("device") == "cpu" for p in k.parts)
    if on_cpu:
        pk = host.peak_flops_per_s
        return pk.get(dt, pk["fp32"]) * host.sockets, host.dram_bw_bytes_per_s * host.sockets
    if any(p.get("device") == "pcie" for p in k.parts):
        return 1.0, get("link", gpu.host_link).bw_bytes_per_s
    pk = gpu.peak_flops_per_s
    return pk.get(dt, pk["fp32"]), gpu.memory_bw_bytes_per_s


def _host_facts(facts: dict) -> dict:
    keep = ("model_name", "vendor", "mhz", "max_mhz", "logical_cpus", "mem_bytes", "uname")
    out = {k: facts.get(k) for k in keep}
    isa = [f for f in facts.get("flags", []) if f.startswith(("avx", "amx", "fma", "sse4"))]
    out["isa_flags"] = isa
    return out
