"""Measured best-case peaks of a CPU run (no torch): the local spec the calibration applies to.

* FLOP/s per dtype: the best (fastest repeat) FLOP/s of the GEMM kernels of that dtype;
  dtypes without a GEMM benchmark keep the nominal value scaled by the fp32 measured/nominal ratio.
* Bandwidth: the best bytes/s of the bandwidth kernels (stream read probe, copies) and of
  the memory-bound GEMMs (decode shapes), all on rotating buffers larger than the caches.

Efficiencies fitted against these peaks are fractions of the best case seen on this machine.
"""

from __future__ import annotations

from kvsim.hardware import GPUSpec
from kvsim.validate.results import Results

_BW_GROUPS = ("memory", "gemm")


def measured_peaks(res: Results) -> tuple[dict[str, float], float]:
    flops: dict[str, float] = {}
    bw = 0.0
    for k in res.kernels:
        if not k.parts or any(p.get("device", "gpu") != "gpu" for p in k.parts):
            continue
        t = k.min_s
        if k.group == "gemm":
            dt = k.parts[0].get("dtype", "fp32")
            flops[dt] = max(flops.get(dt, 0.0), k.total("flops") / t)
        if k.group in _BW_GROUPS and k.total("flops") / max(k.total("hbm_bytes"), 1.0) < 8.0:
            bw = max(bw, k.total("hbm_bytes") / t)
    return flops, bw


def measured_gpu_spec(res: Results) -> GPUSpec:
    nominal = GPUSpec.model_validate(res.nominal_gpu)
    flops, bw = measured_peaks(res)
    npk = dict(nominal.peak_flops_per_s)
    ratio = flops.get("fp32", npk["fp32"]) / npk["fp32"]
    peaks = {dt: flops.get(dt, v * ratio) for dt, v in npk.items()}
    src = ("measured best case on this machine (kvsim validate run): per dtype the fastest GEMM, "
           "bandwidth the fastest stream/copy/decode-GEMM kernel on rotating buffers; "
           f"nominal was: {nominal.source}")
    notes = ("On CPU the peaks are MEASURED, not datasheet: "
             + ", ".join(f"{dt} {v / 1e9:.0f} GFLOP/s" + ("" if dt in flops else " (nominal x fp32 ratio)") for dt, v in peaks.items())
             + f"; memory {bw / 1e9:.1f} GB/s (nominal {nominal.memory_bw_bytes_per_s / 1e9:.1f}).")
    return nominal.model_copy(update={"peak_flops_per_s": peaks, "memory_bw_bytes_per_s": bw or nominal.memory_bw_bytes_per_s,
                                      "source": src, "notes": notes})
