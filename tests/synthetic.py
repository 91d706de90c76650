"""A synthetic system with round numbers, for hand-computed tests of the cost model.

GPU: 100 TFLOP/s bf16, 10 TFLOP/s fp32, 1 TB/s HBM, 80 GB. Host: 1 TFLOP/s, 100 GB/s DRAM,
1 TB DRAM. PCIe: 10 GB/s per direction, 5 us latency. NVLink: 100 GB/s. All efficiencies
0.5, overhead 10 us per launch (step: 1 ms, nothing per sequence or token).
"""

from __future__ import annotations

from kvsim.hardware import Efficiencies, GPUSpec, HostSpec, LinkSpec, OpEfficiency, System, SystemSpec


def synthetic_system(num_gpus: int = 8) -> System:
    op = OpEfficiency(compute=0.5, memory=0.5, overhead_s=10e-6)
    eff = Efficiencies(
        gemm=op, attn_prefill=op, attn_decode=op, elementwise=op, memcpy=op, cpu_attn=op, cpu_gemm=op, pcie=op,
        collective=op, step=OpEfficiency(compute=1, memory=1, overhead_s=1e-3),
        step_seq=OpEfficiency(compute=1, memory=1, overhead_s=0.0), step_token=OpEfficiency(compute=1, memory=1, overhead_s=0.0),
        source="synthetic",
    )
    gpu = GPUSpec(name="SynthGPU", memory_bytes=80e9, memory_bw_bytes_per_s=1e12,
                  peak_flops_per_s={"fp32": 10e12, "bf16": 100e12, "fp16": 100e12, "fp8": 200e12, "int8": 200e12},
                  l2_bytes=40e6, sm_count=100, tdp_w=400, host_link="synth-pcie", peer_link="synth-nvlink",
                  source="synthetic")
    host = HostSpec(name="SynthCPU", vendor="none", cores=32, dram_bytes=1e12, dram_bw_bytes_per_s=100e9,
                    peak_flops_per_s={"fp32": 1e12, "bf16": 1e12}, host_link="synth-pcie", source="synthetic")
    pcie = LinkSpec(name="synth-pcie", link_type="pcie", bw_bytes_per_s=10e9, latency_s=5e-6, source="synthetic")
    nvl = LinkSpec(name="synth-nvlink", link_type="nvlink", bw_bytes_per_s=100e9, latency_s=1e-6, source="synthetic")
    spec = SystemSpec(name="synth", gpu="SynthGPU", num_gpus=num_gpus, host="SynthCPU", source="synthetic")
    return System(name="synth", spec=spec, gpu=gpu, host=host, num_gpus=num_gpus, host_sockets=1,
                  host_memory_bytes=1e12, gpu_host_link=pcie, gpu_gpu_link=nvl, eff=eff)


def llama2_7b():
    """Llama-2-7B dims (SPECS.md Table M1), built in-test so the test does not depend on YAMLs."""
    from kvsim.models import ModelSpec

    return ModelSpec(name="llama-2-7b-test", architecture="llama", num_layers=32, hidden_size=4096, num_heads=32,
                     num_kv_heads=32, head_dim=128, intermediate_size=11008, vocab_size=32000,
                     max_context_tokens=4096, source="SPECS.md M1")


def llama31_8b():
    from kvsim.models import ModelSpec

    return ModelSpec(name="llama-3.1-8b-test", architecture="llama", num_layers=32, hidden_size=4096, num_heads=32,
                     num_kv_heads=8, head_dim=128, intermediate_size=14336, vocab_size=128256,
                     max_context_tokens=131072, source="SPECS.md M1")
