"""A deployment: a model served on a system with chosen dtypes and tensor parallelism.

Memory and work are accounted *per GPU* of one tensor-parallel replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from kvsim.costmodel.calibration import apply_calibration, load_calibration
from kvsim.costmodel.dtypes import COMPUTE_DTYPE, all_dtypes, bits, canonical_dtype, nbytes
from kvsim.costmodel.expert_offload import ExpertOffload
from kvsim.errors import ConfigError, close_matches
from kvsim.hardware import System, load_system
from kvsim.models import ModelSpec, load_model


#: storage dtypes of an uncompressed KV cache: the 16-bit types, fp32 (an fp32 model's cache) and the
#: 8-bit ones of vLLM's ``--kv-cache-dtype`` (fp8 e4m3/e5m2; int8 as a byte-per-element cache). Sub-byte
#: KV (int4, int2, fp4) is not a plain dtype: without its group or block scales its size would be
#: understated (int4 at G = 32 with fp16 scale and zero point: 0.625 B, not 0.5 B per element).
KV_CACHE_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")


@dataclass(frozen=True)
class Deployment:
    """Model + system + precision choices.

    Attributes:
        weight_dtype: storage dtype of weights (bf16/fp16/fp8/int8/fp4/int4).
        kv_dtype: storage dtype of the *uncompressed* KV cache (bf16/fp16/fp8/int8).
        act_dtype: activation / attention math dtype (bf16 or fp16).
        tp: tensor-parallel degree (GPUs per replica).
        gpu_memory_utilization: fraction of GPU memory the engine may use (vLLM's knob).
        expert_offload: MoE experts in host memory with a GPU expert cache
            (:mod:`kvsim.costmodel.expert_offload`); None: every expert on the GPU.
    """

    system: System
    model: ModelSpec
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    act_dtype: str = "bf16"
    tp: int = 1
    gpu_memory_utilization: float = 0.9
    expert_offload: ExpertOffload | None = None

    @property
    def replicas_per_node(self) -> int:
        """Replicas of this TP packed on one node of the system: the ones that share its host."""
        return self.system.replicas_per_node(self.tp)

    def __post_init__(self) -> None:
        for d in (self.weight_dtype, self.act_dtype):
            bits(d)  # raises a one-line SpecError for unknown dtypes
        if self.kv_dtype not in KV_CACHE_DTYPES and self.kv_dtype not in all_dtypes():  # (its own choices, not every dtype's)
            close = close_matches(self.kv_dtype, KV_CACHE_DTYPES, n=2)
            raise ConfigError(f"--kv-dtype {self.kv_dtype}: unknown{' (did you mean ' + ' or '.join(close) + '?)' if close else ''}; "
                              f"an uncompressed KV cache is stored as {', '.join(KV_CACHE_DTYPES)} (vLLM's --kv-cache-dtype)")
        if self.kv_dtype not in KV_CACHE_DTYPES:
            sub_byte = (f"; sub-byte KV needs group scales, zero points and a full-precision residual, which a method "
                        f"prices: --method kivi:bits={4 if bits(self.kv_dtype) >= 4 else 2}") if bits(self.kv_dtype) < 8 else ""
            raise ConfigError(f"--kv-dtype {self.kv_dtype}: an uncompressed KV cache is stored as "
                              f"{', '.join(KV_CACHE_DTYPES)} (vLLM's --kv-cache-dtype){sub_byte}")
        if self.tp < 1 or self.tp > self.system.num_gpus:
            hint = "" if self.tp <= self.system.num_gpus or self.system.num_gpus > 1 else (
                " (a GPU alone is one GPU: a system YAML names the GPU with num_gpus, host and links; "
                "`kvsim hardware new system NAME --out FILE` writes one)")
            raise ConfigError(f"--tp {self.tp} must be between 1 and the {self.system.num_gpus} GPUs of "
                              f"{self.system.name}{hint}")
        self.model.check_tensor_parallel(self.tp)
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        off = self.expert_offload
        if off is not None:
            if self.model.moe is None:
                raise ConfigError(f"--expert-offload: {self.model.name} is not a mixture-of-experts model")
            if off.cache_experts_per_layer > self.model.moe.num_experts:
                raise ConfigError(f"--expert-offload cache={off.cache_experts_per_layer} exceeds the "
                                  f"{self.model.moe.num_experts} experts per layer of {self.model.name}")

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

    @property
    def allreduce_note(self) -> str | None:
        """:func:`allreduce_note` of this deployment's system and TP."""
        return allreduce_note(self.system, self.tp)

    @property
    def notes(self) -> list[str]:
        """What a user should read beside this deployment's numbers: the system's notes (a
        calibration fitted on another device), a model file's near-miss keys, a math dtype the
        GPU lists no peak for (priced at its fp32 rate), a quantized checkpoint's weight dtype,
        and :attr:`allreduce_note`."""
        q = self.model.weight_quantization
        quant = []
        if q is not None:
            quant = [f"{self.model.name}: {self.model.quantization_note or f'checkpoint weights: {q}'}; priced as --weight-dtype "
                     f"{self.weight_dtype}" + ("" if self.weight_dtype == q else f" (given; the checkpoint's is {q})")]
        elif self.model.quantization_note:
            quant = [f"{self.model.name}: {self.model.quantization_note}"]
        config = [self.model.config_note] if self.model.config_note else []
        gpu = self.system.gpu
        slow = sorted({d for d in (self.gemm_dtype, self.act_dtype) if d != "fp32" and d not in gpu.peak_flops_per_s})
        rate = ([f"{gpu.name} lists no {' or '.join(slow)} peak: that math is priced at its fp32 rate "
                 f"({gpu.peak_flops_per_s['fp32']:.4g} FLOP/s); add the peak to the GPU file if the GPU has one"]
                if slow else [])
        return [*self.system.notes, *config, *rate, *quant, *([self.allreduce_note] if self.allreduce_note else [])]

    # ----- memory -----
    @property
    def quantized_weights(self) -> bool:
        """Weights stored below 16 bits (fp8, int8, fp4, int4, int2)."""
        return self.wb < 2.0

    @property
    def wb_head(self) -> float:
        """Bytes per element of the token embedding and the LM head: quantized checkpoints keep
        them in the model dtype (vLLM's quantization methods apply to linear and MoE layers;
        ``VocabParallelEmbedding`` / ``ParallelLMHead`` stay unquantized unless a GPTQ config sets
        ``lm_head_quantized``, which kvsim does not model), so below 16 bits they take ``ab``."""
        return self.ab if self.quantized_weights else self.wb

    @property
    def head_dtype(self) -> str:
        """Math dtype of the LM head GEMM: the activation dtype under quantized weights (it is
        not quantized, :attr:`wb_head`), else :attr:`gemm_dtype`."""
        return self.act_dtype if self.quantized_weights else self.gemm_dtype

    @property
    def weight_bytes_per_gpu(self) -> float:
        """All stored weights / tp (bytes), plus the attention weights every GPU holds whole
        (:meth:`ModelSpec.replicated_attn_params_per_gpu`), less the experts offloaded to the host: the
        embedding and the (untied) LM head at :attr:`wb_head`, the rest at :attr:`wb`. Llama-3.1-8B int4:
        (8,030,261,248 - 2 x 525,336,576) x 0.5 + 2 x 525,336,576 x 2 = 5,591,140,352 B."""
        m = self.model
        head = m.embedding_params + (0 if m.tie_word_embeddings else m.lm_head_params)
        replicated = m.replicated_attn_params_per_gpu(self.tp) * self.wb  # (whole KV heads, MLA down-projections)
        return (((m.total_params - head) * self.wb + head * self.wb_head) / self.tp + replicated
                - self.offloaded_expert_bytes_per_gpu)

    @property
    def offloaded_expert_bytes_per_gpu(self) -> float:
        """GPU weight bytes expert offloading saves: ``n_moe (E - C) P_e b_w / tp`` (0 without it;
        :mod:`kvsim.costmodel.expert_offload`). Mixtral bf16, C 4, tp 1: 32 x 4 x 176,160,768 x 2
        = 45,097,156,608 B."""
        off, m = self.expert_offload, self.model
        if off is None or m.moe is None:
            return 0.0
        return m.num_moe_layers * (m.moe.num_experts - off.cache_experts_per_layer) * m.expert_params * self.wb / self.tp

    @property
    def full_kv_bytes_per_token(self) -> float:
        """Uncompressed KV bytes per token per GPU, all layers: ``L * kv_elems * b_kv * shard``.

        Llama-2-7B bf16, tp=1: 32 * (2*32*128) * 2 = 524,288 B (METHODS.md 1.0)."""
        m = self.model
        return m.attn_layers * m.kv_elements_per_token_per_layer * self.kvb * self.kv_shard

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



def allreduce_note(system: System, tp: int) -> str | None:
    """A note when TP > 2 all-reduces over PCIe are priced from the link's datasheet (no
    measured NCCL entry for this group): on the two PCIe-only servers with measured tables that
    form is within 5% at TP 2 but NCCL ran 2.3-3.8x slower at TP 4 and 4.3-13x slower at TP 8
    (RTX PRO 6000 / L40S; ``kvsim validate kernels --protocol datasheet`` and
    ``leave-one-gpu-out``): past two GPUs the bus bandwidth depends on the server's PCIe
    topology (switches, sockets), which no datasheet states."""
    if tp <= 2 or system.nvlink_peers:
        return None
    link = system.gpu_gpu_link
    measured = next((f for f in system.allreduce if f.algo == "nccl" and f.group == tp), None)
    if measured is not None:  # measured: say so when it is far below the link (TP past 2 is then costly)
        if measured.bus_bw_bytes_per_s >= 0.5 * link.bw_bytes_per_s:
            return None
        return (f"all-reduce at TP {tp} on {system.name} is priced from its measured NCCL bus bandwidth, "
                f"{measured.bus_bw_bytes_per_s / 1e9:.1f} GB/s, {measured.bus_bw_bytes_per_s / link.bw_bytes_per_s:.0%} of "
                f"its {link.name} link's {link.bw_bytes_per_s / 1e9:.1f} GB/s (this server's PCIe topology): every "
                f"layer's all-reduce pays it past 2 GPUs; compare TP 1-2 replicas (kvsim plan)")
    over = "PCIe" if link.link_type == "pcie" else f"{link.name}, a {link.link_type} link,"
    return (f"all-reduce at TP {tp} over {over} ({system.name}) is priced from the link's datasheet; on the PCIe-only "
            f"servers measured, NCCL ran 2.3-13x slower than that at TP 4-8 (it depends on the PCIe topology): measure it "
            f"(nccl-tests all_reduce_perf) and add `kvsim hardware allreduce LOG`'s block to the system file")

def build_deployment(hw: str, model: str, *, tp: int = 1, weight_dtype: str = "auto", kv_dtype: str = "auto",
                     gpu_memory_utilization: float = 0.9, calibration: str | None = None,
                     expert_offload: str | ExpertOffload | None = None) -> Deployment:
    """Resolve specs (and an optional calibration) into a Deployment.

    ``expert_offload``: an :class:`ExpertOffload` or the text of ``--expert-offload``
    (:func:`kvsim.costmodel.expert_offload_option.parse_expert_offload`).

    ``auto`` dtypes: activations (and 16-bit weights / KV) are bf16 where the GPU has bf16
    tensor cores, else fp16 (V100), as serving engines pick them."""
    weight_dtype, kv_dtype = canonical_dtype(weight_dtype), canonical_dtype(kv_dtype)
    system = load_system(hw)
    if calibration:
        system = apply_calibration(system, load_calibration(calibration), origin=calibration)
    half = "bf16" if "bf16" in system.gpu.peak_flops_per_s else "fp16"
    spec = load_model(model)
    if weight_dtype == "auto":  # a quantized checkpoint's format (vLLM loads it as it is), else 16-bit
        weight_dtype = spec.weight_quantization or half
    act = "fp16" if weight_dtype == "fp16" else half
    if kv_dtype == "auto":
        kv_dtype = act
    if isinstance(expert_offload, str):
        # lazy: reads the published hit rates / a routing trace only when asked
        from kvsim.costmodel.expert_offload_option import parse_expert_offload

        expert_offload = parse_expert_offload(expert_offload, spec, weight_bytes=nbytes(weight_dtype), tp=tp)
    return Deployment(system=system, model=spec, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                      act_dtype=act, tp=tp, gpu_memory_utilization=gpu_memory_utilization,
                      expert_offload=expert_offload)


def host_shared(dep: Deployment, replicas: int) -> Deployment:
    """``dep`` as one of ``replicas`` replicas packed ``num_gpus // tp`` to a node: each sees
    ``1 / min(replicas, num_gpus // tp)`` of its node's host memory, DRAM bandwidth and CPU compute
    (:meth:`kvsim.hardware.System.sharing_host`), which bounds MagicPIG / InfLLM host KV and SWAP space
    and slows their CPU attention when the replicas run side by side."""
    share = 1.0 / min(max(replicas, 1), dep.replicas_per_node)
    if share == 1.0:
        return dep
    return replace(dep, system=dep.system.sharing_host(share))


def with_max_context(dep: Deployment, tokens: int) -> tuple[Deployment, str | None]:
    """``dep`` serving requests of up to ``tokens`` (prompt + output) tokens: the model's max context
    raised to it when shorter (``--allow-long-context``: an engine started with rope scaling such as
    YaRN and ``--max-model-len`` that long), with a note; the deployment unchanged otherwise."""
    limit = dep.model.max_context_tokens
    if tokens <= limit:
        return dep, None
    wider = dep.model.model_copy(update={"max_context_tokens": int(tokens)})
    return replace(dep, model=wider), (
        f"--allow-long-context: {dep.model.name} serves requests of up to {int(tokens):,} tokens, beyond its "
        f"{limit:,}-token context (as an engine started with rope scaling, e.g. YaRN, and --max-model-len "
        f"{int(tokens):,}); its rotary cache grows with it, and the model's quality there is not checked")
