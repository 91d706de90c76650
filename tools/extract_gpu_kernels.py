"""Extract the measured GPU kernel tables kvsim validates against (a maintainer's tool).

Reads the parquet tables of NVIDIA's ``aiconfigurator-core`` wheel (PyPI, Apache-2.0) and
writes compact gzipped CSVs under ``kvsim/validate/data/gpu_kernels/<system>/``:

* ``gemm.csv.gz``: bf16 GEMMs ``m, n, k, latency_ms`` (vLLM's default linear kernel)
* ``context_attention.csv.gz`` / ``generation_attention.csv.gz``: bf16 Q and KV, head_dim
  128, no sliding window, vLLM's default backend for the GPU: ``batch, isl, heads, kv_heads,
  step, latency_ms`` (generation attends ``isl + step`` tokens)
* ``allreduce.csv.gz``: bf16/fp16 all-reduce, ``algo`` ``custom`` (vLLM's CUDA-graph custom
  all-reduce) or ``nccl``: ``algo, num_gpus, message_elems, latency_ms``
* ``generation_mla.csv.gz``: MLA decode attention (the absorbed "MQA part": every query head
  attends the 512 + 64 latent, bf16 Q and KV), SGLang 0.5.14's default MLA backend for the GPU:
  ``batch, heads, step, latency_ms`` (``heads``: query heads on the GPU; one query token
  attends ``1 + step`` latent tokens). A check only: no fit reads it. Not for A100: its only
  MLA table is TensorRT-LLM 1.0.0's, whose Ampere kernel reads the latent at ~21 % of HBM
  bandwidth (64 sequences x 4,096 tokens: 302 MB in 0.69 ms), a framework's fallback, not the
  kernels vLLM or SGLang run on A100.

``latency`` in the tables is milliseconds per call of one op (one layer). Run (needs pyarrow,
not a kvsim dependency)::

    pip download aiconfigurator-core==0.12.0 --no-deps -d /tmp/aic && unzip /tmp/aic/*.whl -d /tmp/aic/x
    python tools/extract_gpu_kernels.py /tmp/aic/x/aiconfigurator_core/systems/data
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from pathlib import Path

import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent.parent / "kvsim" / "validate" / "data" / "gpu_kernels"
# system dir in the wheel -> (vLLM version of gemm/attention, vLLM version of custom AR, NCCL version,
#                             context backend, generation backend)
SYSTEMS = {
    "a100_sxm": ("0.14.0", "0.14.0", "2.27.3", "vllm_flash_attn", "vllm_flash_attn"),
    "h100_sxm": ("0.24.0", "0.24.0", "2.29.2", "vllm_flash_attn_fa3", "vllm_flash_attn_fa3"),
    "h200_sxm": ("0.24.0", "0.24.0", "2.29.2", "vllm_flash_attn_fa3", "vllm_flash_attn_fa3"),
    "l40s": ("0.24.0", "0.22.0", "2.27.3", "vllm_flash_attn_fa2", "vllm_flash_attn_fa2"),
    "b200_sxm": ("0.24.0", "0.24.0", "2.29.2", "vllm_flashinfer_trtllmprefill", "vllm_flashinfer_trtllmdecode"),
    "rtx_pro_6000_server": ("0.24.0", "0.24.0", "2.29.2", "vllm_flash_attn_fa2", "vllm_flash_attn_fa2"),
    "gb200": ("0.24.0", "0.24.0", "2.29.2", "vllm_flashinfer_trtllmprefill", "vllm_flashinfer_trtllmdecode"),
}

# system dir -> SGLang version and kernel_source of its MLA decode table (the backend SGLang picks
# on that GPU: FlashAttention-3 on Hopper, Triton on Ada/Blackwell workstation parts, TRT-LLM MLA on B200)
MLA_SOURCES = {
    "h100_sxm": ("0.5.14", "flash_attention"),
    "h200_sxm": ("0.5.14", "flash_attention"),
    "l40s": ("0.5.14", "triton"),
    "b200_sxm": ("0.5.14", "trtllm_mla"),
    "rtx_pro_6000_server": ("0.5.14", "triton"),
    "gb200": ("0.5.14", "trtllm_mla"),
}


def _write(path: Path, header: list[str], rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in sorted(rows):
        w.writerow([f"{x:.6g}" if isinstance(x, float) else x for x in r])
    # mtime=0: the same input gives byte-identical files
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue().encode())
    print(f"{path.relative_to(OUT.parent.parent.parent.parent)}: {len(rows)} rows")


def extract(data: Path) -> None:
    for system, (ver, ar_ver, nccl_ver, ctx_src, gen_src) in SYSTEMS.items():
        d = data / system
        t = pq.read_table(d / "gemm" / "vllm" / ver / "gemm_perf.parquet").to_pylist()
        rows = [(r["m"], r["n"], r["k"], r["latency"]) for r in t if r["gemm_dtype"] == "bfloat16"]
        _write(OUT / system / "gemm.csv.gz", ["m", "n", "k", "latency_ms"], rows)
        for op, src in (("context", ctx_src), ("generation", gen_src)):
            t = pq.read_table(d / "attention" / "vllm" / ver / f"{op}_attention_perf.parquet").to_pylist()
            rows = [(r["batch_size"], r["isl"], r["num_heads"], r["num_key_value_heads"], r["step"], r["latency"])
                    for r in t if r["kernel_source"] == src and r["head_dim"] == 128 and r["attn_dtype"] == "bfloat16"
                    and r["kv_cache_dtype"] == "bfloat16" and r.get("window_size", 0) == 0 and r["beam_width"] == 1]
            _write(OUT / system / f"{op}_attention.csv.gz",
                   ["batch", "isl", "heads", "kv_heads", "step", "latency_ms"], rows)
        t = pq.read_table(d / "comm" / "vllm" / ar_ver / "custom_allreduce_perf.parquet").to_pylist()
        rows = [("custom", r["num_gpus"], r["message_size"], r["latency"]) for r in t if r["backend"] == "vllm_graph"]
        t = pq.read_table(d / "comm" / "nccl" / nccl_ver / "nccl_perf.parquet").to_pylist()
        rows += [("nccl", r["num_gpus"], r["message_size"], r["latency"]) for r in t
                 if r["op_name"] == "all_reduce" and r["nccl_dtype"] == "half"]
        _write(OUT / system / "allreduce.csv.gz", ["algo", "num_gpus", "message_elems", "latency_ms"], rows)
        if system in MLA_SOURCES:
            mla_ver, mla_src = MLA_SOURCES[system]
            t = pq.read_table(d / "mla" / "sglang" / mla_ver / "generation_mla_perf.parquet").to_pylist()
            rows = [(r["batch_size"], r["num_heads"], r["step"], r["latency"]) for r in t
                    if r["kernel_source"] == mla_src and r["mla_dtype"] == "bfloat16" and r["kv_cache_dtype"] == "bfloat16"
                    and r["isl"] == 1]
            _write(OUT / system / "generation_mla.csv.gz", ["batch", "heads", "step", "latency_ms"], rows)


if __name__ == "__main__":
    extract(Path(sys.argv[1]))
