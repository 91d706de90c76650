"""GPU memory that vLLM v1 keeps out of its KV cache, as its start-up profiling measures it.

Reference: vLLM 0.19.0 (the ``vllm-0.19.0`` wheel; paths under ``vllm/``). Per GPU:

* ``v1/worker/gpu_worker.py`` ``Worker.init_device``: once CUDA and the distributed
  environment (NCCL communicators) exist, ``init_snapshot = MemorySnapshot()`` and
  ``requested_memory = ceil(total_memory * gpu_memory_utilization)`` (``request_memory`` in
  ``v1/worker/utils.py``; :attr:`Deployment.gpu_memory_budget_bytes`). ``total_memory`` is
  ``torch.cuda.mem_get_info()[1]``, below nvidia-smi's total (GPU YAML ``torch_memory_bytes``). The CUDA context and communicators
  made before the snapshot are not taken from ``requested_memory``: they must fit beside it.
* ``Worker.determine_available_memory``: inside ``memory_profiling``
  (``utils/mem_utils.py``) it runs ``GPUModelRunner.profile_run``; KV bytes =
  ``requested_memory - (weights_memory + torch_peak_increase + non_torch_increase)``.

  - ``weights_memory`` (``model_memory_usage``): torch bytes allocated by ``load_model``: the
    parameters and the rotary cos/sin cache (:func:`rope_cache_bytes`).
  - ``torch_peak_increase``: peak torch allocation during ``profile_run`` above what was
    allocated before it: the larger of the forward of ``max_num_batched_tokens`` tokens
    (:func:`forward_peak_bytes`) and the dummy sampler run on ``min(max_num_seqs,
    max_num_batched_tokens)`` rows (:func:`sampler_peak_bytes`), plus PyTorch's cuBLAS
    workspace, allocated through the caching allocator by the first GEMM, plus, for MoE
    models, the fused-MoE workspace (:func:`moe_workspace_bytes`), which vLLM's workspace
    manager keeps from the forward through the sampler phase.
  - ``non_torch_increase``: growth of CUDA memory not held by torch's allocator from the
    snapshot to the end of profiling (lazily loaded kernels, NCCL buffers of the first
    collectives). No code states its size: :data:`NON_TORCH_INCREASE_BYTES_BY_TP` is measured.

* CUDA graphs, version by version: the v0 engine (``worker/worker.py``) and v1 up to 0.20
  capture graphs after the KV cache is allocated, so their pool comes out of the
  ``1 - gpu_memory_utilization`` slack, not out of the KV cache. vLLM PR #30515 added
  ``profile_cudagraph_memory`` (run inside the profiling in 0.19) but subtracts its
  estimate only with ``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1`` (``envs.py``: default 0
  in 0.19); from v0.21.0 it is on by default (vLLM's log "CUDA graph memory profiling is
  enabled (default since v0.21.0)"). kvsim follows 0.19: graphs take nothing from the KV.
  Older v1 (``gpu_worker.py`` before ``memory_profiling``, about 0.8) subtracted every
  non-torch byte in use, CUDA context included.
* Blocks: ``v1/core/kv_cache_utils.get_num_blocks`` = ``available // page_size // num_layers``
  (``available // block_bytes`` in kvsim).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.dtypes import nbytes

GIB = 2**30

#: ``non-torch forward increase memory`` logged by vLLM 0.19.0 on H100-80GB (NVSwitch), by TP:
#: Llama-3.1-8B-Instruct 0.25 / 2.07 / 2.13 GiB at TP 1 / 2 / 4 (Qwen2.5-7B-Instruct 0.24 /
#: 2.06 / 2.13; 0.13 GiB at TP 1 up to vLLM 0.17). Source: llm-d-incubation/llm-d-planner,
#: accuracy/results/v0.19.0/accuracy_report.md and its logs. An estimate for other GPUs and
#: links: a TP between measured ones uses the largest measured TP below it.
NON_TORCH_INCREASE_BYTES_BY_TP: dict[int, float] = {1: 0.25 * GIB, 2: 2.07 * GIB, 4: 2.13 * GIB}

#: PyTorch's default cuBLAS workspace per handle (``parseChosenWorkspaceSize`` in
#: aten/src/ATen/cuda/CublasHandlePool.cpp): ``4096 * 8 * 1024`` on compute capability 9.x,
#: 10.x and 12.x, else ``4096 * 1024 * 2 + 16 * 1024 * 8`` (the ``:4096:2:16:8`` default).
CUBLAS_WORKSPACE_BYTES_LARGE = 4096 * 8 * 1024
CUBLAS_WORKSPACE_BYTES_DEFAULT = 4096 * 1024 * 2 + 16 * 1024 * 8
_LARGE_WORKSPACE_MAJORS = (9, 10, 12)

#: architectures with learned absolute positions: no rotary cache (vLLM ``OPTForCausalLM``)
_NO_ROPE_ARCHITECTURES = ("opt",)


@dataclass(frozen=True)
class EngineReserve:
    """Bytes per GPU that vLLM keeps out of the KV cache besides the parameters.

    Attributes:
        activation_bytes: ``torch_peak_increase`` of the profiling run.
        non_torch_bytes: ``non_torch_increase`` (an estimate, see the module docstring).
        buffers_bytes: model buffers counted in ``weights_memory`` (the rotary cache).
        cudagraph_bytes: CUDA graph memory taken from the KV budget (0 in vLLM 0.19).
        ssm_state_bytes: hybrid models: one recurrent-state slot per schedulable sequence
            (:func:`ssm_state_bytes`).
    """

    activation_bytes: float
    non_torch_bytes: float
    buffers_bytes: float
    cudagraph_bytes: float = 0.0
    ssm_state_bytes: float = 0.0

    @property
    def total_bytes(self) -> float:
        return (self.activation_bytes + self.non_torch_bytes + self.buffers_bytes + self.cudagraph_bytes
                + self.ssm_state_bytes)


def ssm_state_bytes(dep: Deployment, max_seqs: float) -> float:
    """Recurrent state of a hybrid model held for ``max_seqs`` sequences, per GPU:
    ``max_seqs * ssm_layers * state_elements * b_a / tp``.

    vLLM's ``MambaCacheManager`` (V0 and the hybrid models of early V1) preallocates one state
    slot per ``max_num_seqs``; V1's hybrid KV cache manager allocates them from the KV pool per
    running request instead, so this is the most the states take. The state is kept in the model
    dtype (``mamba_ssm_cache_dtype`` "auto"). Jamba-v0.1, 256 seqs, bf16, tp 1:
    256 x 28 x 155,648 x 2 B = 2,231,369,728 B."""
    m = dep.model
    return float(max_seqs) * m.ssm_state_elements_per_seq * dep.ab / dep.tp


def rope_cache_bytes(dep: Deployment) -> float:
    """Rotary cos/sin cache: ``max_position * rotary_dim`` elements in the model dtype, one
    buffer shared by all layers (``RotaryEmbedding._compute_cos_sin_cache``, ``get_rope``'s
    cache). Llama-3.1-8B: 131072 * 128 * 2 B = 33,554,432 B."""
    m = dep.model
    if m.architecture in _NO_ROPE_ARCHITECTURES:
        return 0.0
    rotary_dim = m.mla.qk_rope_head_dim if m.mla is not None else m.head_dim
    return m.max_context_tokens * rotary_dim * dep.ab


#: ``VLLM_FUSED_MOE_CHUNK_SIZE`` default (vLLM ``envs.py``: ``16 * 1024``): the fused-MoE kernels
#: size their workspaces for at most this many tokens and loop over chunks of a longer step
FUSED_MOE_CHUNK_TOKENS = 16 * 1024


def _dense_mlp_elements(dep: Deployment) -> float:
    """Per token and GPU, the largest dense MLP's live elements in a forward: the gate/up output
    ``[2f / tp]`` and the activation output ``[f / tp]`` (``[f / tp]`` each ungated): a dense model's
    MLP, a MoE model's dense layers, and its shared experts (one dense MLP of their summed width).
    A MoE layer's routed experts run in :func:`moe_workspace_bytes` instead."""
    m = dep.model
    widths = [m.intermediate_size] if m.moe is None else [
        m.moe.num_shared_experts * m.moe.shared_intermediate_size,
        m.moe.dense_intermediate_size if (m.moe.first_dense_layers or m.moe.moe_layers) else 0]
    return (3 if m.mlp_gated else 2) * max(widths) / dep.tp


def forward_peak_bytes(dep: Deployment, num_tokens: float) -> float:
    """Live activations of a forward of ``num_tokens`` tokens at its widest point, the MLP of a
    layer: the residual and normed input ``[T, h]``, the attention output ``[T, n_q d / tp]``
    (an input of vLLM's piecewise-compiled graph, held by its caller) and the MLP's
    (:func:`_dense_mlp_elements`). Bytes in the activation dtype. An estimate of Inductor's buffer
    plan (vLLM 0.19 H100 logs: CodeLlama-7B at 8192 tokens 0.72 GiB here + workspace vs 0.77 GiB
    logged). A MoE layer's routed experts: :func:`moe_workspace_bytes`."""
    m = dep.model
    attn_out = m.num_heads * (m.mla.v_head_dim if m.mla is not None else m.head_dim) / dep.tp
    return num_tokens * (2 * m.hidden_size + attn_out + _dense_mlp_elements(dep)) * dep.ab


def moe_workspace_bytes(dep: Deployment, num_tokens: float) -> float:
    """Fused-MoE workspace of a forward of ``num_tokens`` tokens per GPU, in the activation dtype
    (0 for a dense model). vLLM 0.19's ``TritonExperts.workspace_shapes`` (layers/fused_moe):
    ``workspace13 = (M, top_k, max(a, K))``, ``workspace2 = (M, top_k, max(N, K))``, ``output =
    (M_full, K)`` with ``N = 2 f / tp`` (w1's gate and up rows of one rank; ``f / tp`` ungated),
    ``a`` = the activation's output (``N / 2`` gated), ``K = h`` and ``M = min(T, CHUNK)``
    (:data:`FUSED_MOE_CHUNK_TOKENS`). ``FusedMoEModularKernel._allocate_buffers`` takes them from
    ``current_workspace_manager().get_simultaneous``, a buffer the worker keeps (it never
    shrinks), so it is still allocated at the sampler's peak; with one chunk the output aliases
    workspace13 (``max(prod(workspace13), prod(output))``), with several it is separate.

    Mixtral-8x7B at TP 2, 8192 tokens: N = 2 x 14336 / 2 = 14336, a = 7168, K = 4096, top-2:
    8192 x 2 x (7168 + 14336) x 2 B = 704,643,072 B (0.656 GiB)."""
    m = dep.model
    if m.moe is None:
        return 0.0
    e = m.moe
    n = (2 if m.mlp_gated else 1) * e.expert_intermediate_size / dep.tp
    act_out = n / 2 if m.mlp_gated else n
    k = m.hidden_size
    chunk = min(num_tokens, FUSED_MOE_CHUNK_TOKENS)
    elements = chunk * e.experts_per_token * (max(act_out, k) + max(n, k))
    if num_tokens > chunk:
        elements += num_tokens * k
    return elements * dep.ab


def sampler_rows(max_tokens_per_step: float, max_seqs: float) -> float:
    """Rows of the dummy sampler run: ``min(max_num_seqs, max_num_batched_tokens)`` (``_dummy_run``
    makes that many requests, ``profile_run`` samples the last token of each)."""
    return min(max_seqs, max_tokens_per_step)


def triton_topk_rows(sm_count: int, rows: float) -> int:
    """Rows of the per-device buffer of vLLM's Triton top-k/top-p kernel
    (``apply_top_k_top_p_triton``, v1/sample/ops/topk_topp_triton.py): ``NUM_PROGRAMS =
    min(num_sm, batch)``, buffer ``min(next_power_of_2(NUM_PROGRAMS), num_sm)`` rows."""
    programs = int(min(sm_count, rows))
    return min(1 << max(programs - 1, 0).bit_length(), sm_count) if programs > 0 else 0


def sampler_peak_bytes(dep: Deployment, num_tokens: float, rows: float) -> float:
    """Torch bytes live at the peak of ``profile_run``'s sampler phase (vLLM 0.19,
    ``_dummy_sampler_run`` -> ``Sampler.forward`` -> ``TopKTopPSampler.forward_native``):

    the forward's ``hidden_states [T, h]``, ``last_hidden_states`` and ``rand_like`` of them
    ``[R, h]`` each (activation dtype); ``compute_logits`` ``[R, V]`` in the model dtype (the
    full vocabulary on every TP rank: logits are all-gathered); its fp32 copy; the Triton
    top-k/top-p buffer ``[rows, V]`` fp32; ``probs = softmax`` and ``q = empty_like(probs)``
    in ``random_sample``, ``[R, V]`` fp32 each. From vLLM 0.17 (before it top-k/top-p sorted
    the logits, which needs more)."""
    m = dep.model
    fp32 = nbytes("fp32")
    hidden = (num_tokens + 2 * rows) * m.hidden_size * dep.ab
    logits = rows * m.vocab_size * (dep.ab + 3 * fp32)
    topk = triton_topk_rows(dep.system.gpu.sm_count, rows) * m.vocab_size * fp32
    return hidden + logits + topk


def cublas_workspace_bytes(dep: Deployment) -> int:
    """PyTorch's cuBLAS workspace for the GPU's compute capability (see the constants)."""
    cc = dep.system.gpu.compute_capability
    major = int(cc.split(".")[0]) if cc else 0
    return CUBLAS_WORKSPACE_BYTES_LARGE if major in _LARGE_WORKSPACE_MAJORS else CUBLAS_WORKSPACE_BYTES_DEFAULT


def non_torch_increase_bytes(tp: int) -> float:
    """:data:`NON_TORCH_INCREASE_BYTES_BY_TP` at the largest measured TP not above ``tp``."""
    return NON_TORCH_INCREASE_BYTES_BY_TP[max(k for k in NON_TORCH_INCREASE_BYTES_BY_TP if k <= tp)]


def engine_reserve(dep: Deployment, max_tokens_per_step: float, max_seqs: float) -> EngineReserve:
    """What vLLM 0.19 keeps out of the KV cache per GPU for a profiling step of
    ``max_tokens_per_step`` tokens and ``max_seqs`` sequences (module docstring)."""
    rows = sampler_rows(max_tokens_per_step, max_seqs)
    peak = max(forward_peak_bytes(dep, max_tokens_per_step), sampler_peak_bytes(dep, max_tokens_per_step, rows))
    return EngineReserve(
        activation_bytes=peak + moe_workspace_bytes(dep, max_tokens_per_step) + cublas_workspace_bytes(dep),
        non_torch_bytes=non_torch_increase_bytes(dep.tp),
        buffers_bytes=rope_cache_bytes(dep),
        ssm_state_bytes=ssm_state_bytes(dep, max_seqs),
    )
