"""A deployment: a model served on a system with chosen dtypes and tensor parallelism.

Memory and work are accounted *per GPU* of one tensor-parallel replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvsim.costmodel.calibration import apply_calibration, load_calibration
from kvsim.costmodel.dtypes import COMPUTE_DTYPE, bits, nbytes
from kvsim.errors import ConfigError
from kvsim.hardware import System, load_system
from kvsim.models import ModelSpec, load_model


@dataclass(frozen=True)
class Deployment:
    """Model + system + precision choices.

    Attributes:
        weight_dtype: storage dtype of weights (bf16/fp16/fp8/int8/fp4/int4).
        kv_dtype: storage dtype of the *uncompressed* KV cache (bf16/fp16/fp8/int8).
        act_dtype: activation / attention math dtype (bf16 or fp16).
        tp: tensor-parallel degree (GPUs per replica).
        gpu_memory_utilization: fraction of GPU memory the engine may use (vLLM's knob).
    """

    system: System
    model: ModelSpec
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    act_dtype: str = "bf16"
    tp: int = 1
    gpu_memory_utilization: float = 0.9

    def __post_init__(self) -> None:
        for d in (self.weight_dtype, self.kv_dtype, self.act_dtype):
            bits(d)  # raises a one-line SpecError for unknown dtypes
        if self.tp < 1 or self.tp > self.system.num_gpus:
            hint = "" if self.tp <= self.system.num_gpus or self.system.num_gpus > 1 else (
                " (a GPU alone is one GPU: a system YAML names the GPU with num_gpus, host and links; "
                "`kvsim hardware new system NAME --out FILE` writes one)")
            raise ConfigError(f"--tp {self.tp} must be between 1 and the {self.system.num_gpus} GPUs of "
                              f"{self.system.name}{hint}")
        self.model.check_tensor_parallel(self.tp)
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")

    # ----- bytes per element -----
    @property
    def wb(self) -> float:
        """Bytes per weight element."""
        return nbytes(self.weight_dtype)

    @property
    def ab(self) -> float:
        """Bytes per activation element."""
        return nbytes(self.act_dtype)

    @property
    def kvb(self) -> float:
        """Bytes per uncompressed KV element."""
        return nbytes(self.kv_dtype)

    @property
    def gemm_dtype(self) -> str:
        """Math dtype of weight GEMMs. fp8 / int8 / fp4 weights run W8A8 / W4A4 tensor-core GEMMs
        on a GPU whose spec lists a peak for that dtype (fp8: Ada, Hopper, Blackwell, CDNA3; fp4:
        Blackwell); elsewhere they are dequantized to the activation dtype as weight-only kernels do
        (vLLM's Marlin fp8 / fp4 on Ampere). int4 / int2 always dequantize (W4A16)."""
        w = self.weight_dtype
        if w in ("fp8", "int8", "fp4"):
            return COMPUTE_DTYPE[w] if w in self.system.gpu.peak_flops_per_s else self.act_dtype
        return self.act_dtype if w in ("int4", "int2") else COMPUTE_DTYPE[w]

    # ----- sharding -----
    @property
    def kv_heads_per_gpu(self) -> int:
        """KV heads stored on each GPU: heads are split over TP, replicated when tp > n_kv."""
        return math.ceil(self.model.num_kv_heads / self.tp)

    @property
    def kv_shard(self) -> float:
        """Fraction of a request's KV elements stored on each GPU (MLA latent is replicated)."""
        if self.model.mla is not None:
            return 1.0
        return self.kv_heads_per_gpu / self.model.num_kv_heads

    @property
    def q_heads_per_gpu(self) -> float:
        return self.model.num_heads / self.tp

    # ----- memory -----
    @property
    def weight_bytes_per_gpu(self) -> float:
        """All stored weights / tp (bytes)."""
        return self.model.total_params * self.wb / self.tp

    @property
    def full_kv_bytes_per_token(self) -> float:
        """Uncompressed KV bytes per token per GPU, all layers: ``L * kv_elems * b_kv * shard``.

        Llama-2-7B bf16, tp=1: 32 * (2*32*128) * 2 = 524,288 B (METHODS.md 1.0)."""
        m = self.model
        return m.num_layers * m.kv_elements_per_token_per_layer * self.kvb * self.kv_shard

    @property
    def gpu_torch_memory_bytes(self) -> float:
        """Total memory per GPU as CUDA reports it (``torch.cuda.mem_get_info()[1]``, the
        GPU YAML's ``torch_memory_bytes``); nvidia-smi's ``memory_bytes`` when not known."""
        g = self.system.gpu
        return g.torch_memory_bytes if g.torch_memory_bytes is not None else g.memory_bytes

    @property
    def gpu_memory_budget_bytes(self) -> float:
        """vLLM's requested memory per GPU: ``ceil(torch total * gpu_memory_utilization)``
        (``request_memory``, vllm/v1/worker/utils.py, 0.19)."""
        return float(math.ceil(self.gpu_torch_memory_bytes * self.gpu_memory_utilization))


def build_deployment(hw: str, model: str, *, tp: int = 1, weight_dtype: str = "auto", kv_dtype: str = "auto",
                     gpu_memory_utilization: float = 0.9, calibration: str | None = None) -> Deployment:
    """Resolve specs (and an optional calibration) into a Deployment.

    ``auto`` dtypes: activations (and 16-bit weights / KV) are bf16 where the GPU has bf16
    tensor cores, else fp16 (V100), as serving engines pick them."""
    system = load_system(hw)
    if calibration:
        system = apply_calibration(system, load_calibration(calibration), origin=calibration)
    half = "bf16" if "bf16" in system.gpu.peak_flops_per_s else "fp16"
    if weight_dtype == "auto":
        weight_dtype = half
    act = "fp16" if weight_dtype == "fp16" else half
    if kv_dtype == "auto":
        kv_dtype = act
    return Deployment(system=system, model=load_model(model), weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                      act_dtype=act, tp=tp, gpu_memory_utilization=gpu_memory_utilization)
