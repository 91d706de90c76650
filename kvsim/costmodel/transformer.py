"""Work of the transformer layers that every KV method shares (per GPU of a TP replica).

Formulas (SPECS.md F1-F4, F7; FLOPs = 2 per multiply-add):

* weight GEMMs of ``T`` tokens: FLOPs ``2 * P_active * T / tp``; HBM bytes ``P_touched * b_w / tp``
  (weights read once per step, shared by the batch) plus activations in and out.
* LM head: only the last position of each sequence is projected (serving engines sample
  one token per sequence): FLOPs ``2 * h * V * n_seqs / tp``, bytes ``h * V * b_w / tp``.
* MoE: distinct experts touched per layer by ``T`` tokens under uniform top-k routing,
  ``E * (1 - (1 - k/E)^T)`` (SPECS.md F7); FLOPs count only the k routed experts per token.
* Expert offloading (``dep.expert_offload``): experts missing from the GPU cache are fetched over
  PCIe or computed on the CPU (:mod:`kvsim.costmodel.expert_offload`); with ``overlap`` the GPU
  parts here share one overlap group with that work.
* TP all-reduce (Megatron-LM, Shoeybi et al. 2019 §3): 2 per layer of ``T * h`` activations;
  a ring all-reduce sends ``2 (tp-1)/tp`` of the buffer per GPU.
* Hybrid models (``ModelSpec.ssm``): attention projections only on the ``attn_layers``; the SSM
  layers' mixers are GEMMs of their parameters (``2 P_ssm T`` FLOPs, weights read once) plus a
  memory-bound scan that reads and writes each sampling sequence's recurrent state once per step
  (``2 * state bytes``; vLLM's ``selective_state_update`` in decode) and ``scan_flops_per_token``.
"""

from __future__ import annotations

import numpy as np

from kvsim.costmodel.cost import Cost, Num, Part, indicator
from kvsim.costmodel.deployment import Deployment
from kvsim.costmodel.expert_offload import OVERLAP_TAG, missing_layer_share
from kvsim.costmodel.expert_offload_cost import offload_parts

#: activation elements read+written per token per layer by non-GEMM kernels, in units of
#: the hidden size h and the MLP width f: 2 RMSNorms (read h, write h, each) + 2 residual
#: adds (read 2h, write h each) + rotary on q,k (~2h) => ~12h; SiLU*mul reads 2f writes f.
_ELEMENTWISE_H = 12
_ELEMENTWISE_F = 3
#: non-GEMM kernel launches per layer (2 norms, rotary, activation, 2 adds: vLLM fuses some)
_ELEMENTWISE_LAUNCHES = 4


def linear_cost(dep: Deployment, n_tokens: Num, n_seqs: Num) -> Cost:
    """All weight GEMMs, elementwise kernels, LM head and TP collectives of one step.

    Args:
        n_tokens: tokens processed this step (prefill chunk tokens + one per decoding sequence).
        n_seqs: sequences that sample a token this step (LM head rows).
    """
    m, tp = dep.model, dep.tp
    L, h = m.num_layers, m.hidden_size
    wb, ab, dt = dep.wb, dep.ab, dep.gemm_dtype
    T = n_tokens
    has = indicator(T)
    offload = dep.expert_offload if m.moe is not None else None
    # overlap=yes: fetched experts stream in behind every linear GPU kernel (a prefetcher); experts computed on
    # the CPU (miss=cpu) need the layer's attention output and feed the next layer, so they run beside the
    # MoE layer's GPU GEMMs only (the resident and shared experts; user audit: beside every kernel, a
    # hybrid step came out faster than with every expert on the GPU)
    tag_moe = OVERLAP_TAG if offload is not None and offload.overlap else None
    tag = tag_moe if offload is not None and offload.miss == "fetch" else None

    # attention projections: Q, K, V (fused) and O, on the layers that attend
    La = m.attn_layers
    # per GPU: its 1/tp share plus what every GPU holds and computes whole (replicated KV heads when
    # tp > num_kv_heads, MLA's down-projections: ModelSpec.replicated_attn_params_per_gpu)
    p_attn = La * m.attn_params_per_layer
    rep = m.replicated_attn_params_per_gpu(tp)  # (0.0 adds nothing: the same floats as without it)
    q_out = m.num_heads * m.q_head_dim
    attn_act = La * T * (h + q_out + m.kv_elements_per_token_per_layer + m.num_heads * m.head_dim + h) * ab
    parts = [
        Part(
            "attn_proj", "gemm", dtype=dt,
            flops=2.0 * p_attn * T / tp + 2.0 * rep * T,
            hbm_bytes=((p_attn * wb + attn_act) / tp + rep * wb) * has,
            launches=2 * La * has, overlap=tag,
        )
    ]
    if m.ssm is not None:
        parts.extend(ssm_mixer_parts(dep, T, n_seqs, overlap=tag))

    # MLP (dense layers) and MoE layers
    if m.moe is None:
        p_mlp = L * m.dense_mlp_params_per_layer
        f = m.intermediate_size
        mlp_act = L * T * (h + (3 if m.mlp_gated else 2) * f + h) * ab
        parts.append(Part("mlp", "gemm", dtype=dt, flops=2.0 * p_mlp * T / tp,
                          hbm_bytes=(p_mlp * wb + mlp_act) / tp * has, launches=2 * L * has))
        f_elem = f
    else:
        moe = m.moe
        nd, nm = m.num_dense_mlp_layers, m.num_moe_layers
        E, k = moe.num_experts, moe.experts_per_token
        touched = E * (1.0 - (1.0 - k / E) ** np.asarray(T, dtype=np.float64))  # experts per layer
        dense_p = nd * m.dense_mlp_params_per_layer + nm * (m.shared_expert_params_per_layer + m.router_params_per_layer)
        routed_flops = 2.0 * nm * k * m.expert_params * T
        routed_bytes = nm * touched * m.expert_params * wb
        if offload is not None:  # missed experts: over PCIe (GPU work unchanged) or on the CPU (share f off the GPU)
            off_parts, f = offload_parts(dep, T, has)
            parts += off_parts
            routed_flops = routed_flops * (1.0 - f)
            routed_bytes = routed_bytes * (1.0 - f)  # = nm (U - M) P_e b_w: f = M / U
        fe = moe.expert_intermediate_size
        act = L * T * (2 * h + k * 3 * fe) * ab
        mlp_layers = L
        if tag_moe != tag and nd:  # CPU experts overlap the MoE layers only: the dense layers' MLP stays serial
            p_dense = nd * m.dense_mlp_params_per_layer
            parts.append(Part("mlp_dense", "gemm", dtype=dt, flops=2.0 * p_dense * T / tp,
                              hbm_bytes=(p_dense * wb + act * nd / L) / tp * has, launches=4 * nd * has))
            dense_p, act, mlp_layers = dense_p - p_dense, act * nm / L, nm
        flops_mlp = (2.0 * dense_p * T + routed_flops) / tp
        bytes_mlp = (dense_p * wb + routed_bytes + act) / tp * has
        if tag_moe is not None and tag is None:  # miss=cpu: only the layers that miss wait beside the host's experts
            q = missing_layer_share(E, k, offload.cache_experts_per_layer, offload.hit_rate, T)
            parts.append(Part("mlp", "gemm", dtype=dt, flops=flops_mlp * (1.0 - q), hbm_bytes=bytes_mlp * (1.0 - q),
                              launches=4 * mlp_layers * has * (1.0 - q)))
            parts.append(Part("mlp_missing", "gemm", dtype=dt, flops=flops_mlp * q, hbm_bytes=bytes_mlp * q,
                              launches=4 * mlp_layers * has * q, overlap=tag_moe))
        else:
            parts.append(Part("mlp", "gemm", dtype=dt, flops=flops_mlp, hbm_bytes=bytes_mlp,
                              launches=4 * mlp_layers * has, overlap=tag_moe))
        f_elem = k * fe

    # norms, rotary, activation, residual adds (memory bound)
    parts.append(Part("elementwise", "elementwise", dtype=dep.act_dtype,
                      flops=L * T * (10 * h + 4 * f_elem) / tp,
                      hbm_bytes=L * T * (_ELEMENTWISE_H * h + _ELEMENTWISE_F * f_elem) * ab / tp,
                      launches=_ELEMENTWISE_LAUNCHES * L * has, overlap=tag))

    # LM head on the last position of each sequence
    p_head = m.lm_head_params  # (in the model dtype under quantized weights: Deployment.wb_head)
    parts.append(Part("lm_head", "gemm", dtype=dep.head_dtype,
                      flops=2.0 * p_head * n_seqs / tp,
                      hbm_bytes=(p_head * dep.wb_head + n_seqs * (h * ab + m.vocab_size * 4)) / tp * indicator(n_seqs),
                      launches=1 * indicator(n_seqs), overlap=tag))

    if tp > 1:
        per_allreduce = 2.0 * (tp - 1) / tp * T * h * ab
        parts.append(Part("allreduce", "collective", device="link", dtype=dep.act_dtype,
                          link_bytes=2 * L * per_allreduce, launches=2 * L * has, group=tp))
    return Cost.of(*parts)


def ssm_mixer_parts(dep: Deployment, n_tokens: Num, n_seqs: Num, overlap: str | None = None) -> list[Part]:
    """The SSM layers' mixers of a hybrid model (module docstring), per GPU (heads / channels
    split over ``tp`` like attention heads).

    ``ssm_proj`` (gemm): ``2 P_ssm T`` FLOPs; weights ``P_ssm b_w``, activations in ``h``, out of the
    input projection ``in_proj_width``, into and out of the output projection ``d_i + h``.
    ``ssm_scan`` (elementwise): ``scan_flops_per_token * T`` FLOPs; the state of every sampling
    sequence read and written once (``2 * state * b_a``) plus the scan's input/output
    (``conv_channels + d_i`` elements per token)."""
    m, tp, ab = dep.model, dep.tp, dep.ab
    s, h, Ls = m.ssm, m.hidden_size, m.ssm_layers
    T = n_tokens
    has = indicator(T)
    p_ssm = Ls * s.params_per_layer(h)
    act = Ls * T * (h + s.in_proj_width(h) + s.d_inner(h) + h) * ab
    state = Ls * s.state_elements_per_layer(h) * ab
    scan_io = Ls * T * (s.conv_channels(h) + s.d_inner(h)) * ab
    return [
        Part("ssm_proj", "gemm", dtype=dep.gemm_dtype, flops=2.0 * p_ssm * T / tp,
             hbm_bytes=(p_ssm * dep.wb + act) / tp * has, launches=2 * Ls * has, overlap=overlap),
        Part("ssm_scan", "elementwise", dtype=dep.act_dtype, flops=Ls * T * s.scan_flops_per_token(h) / tp,
             hbm_bytes=(2.0 * state * n_seqs + scan_io) / tp, launches=2 * Ls * has, overlap=overlap),
    ]


def gemm_cost(m: Num, n: Num, k: Num, *, weight_bytes: float, act_bytes: float, dtype: str, calls: Num = 1.0) -> Cost:
    """One weight GEMM ``[m, k] x [k, n]`` as :func:`linear_cost` accounts it: ``2 m n k`` FLOPs,
    the ``k n`` weights read once, ``m k`` activations in and ``m n`` out."""
    return Cost.of(Part("gemm", "gemm", dtype=dtype, flops=2.0 * m * n * k * calls,
                        hbm_bytes=(k * n * weight_bytes + (m * k + m * n) * act_bytes) * calls, launches=calls))


def allreduce_cost(tp: int, elements: Num, bytes_per_elem: float, calls: Num = 1.0) -> Cost:
    """``calls`` ring all-reduces of ``elements`` per GPU over ``tp`` GPUs, as :func:`linear_cost`
    accounts them: each GPU sends ``2 (tp-1)/tp`` of the buffer (Megatron-LM; nccl-tests busbw)."""
    ring = 2.0 * (tp - 1) / tp * elements * bytes_per_elem
    return Cost.of(Part("allreduce", "collective", device="link", link_bytes=ring * calls, launches=calls, group=tp))


def step_overhead_cost(n_tokens: Num, n_seqs: Num) -> Cost:
    """Host work of one engine step around the model's kernels: ``a + b * n_seqs + c * n_tokens`` seconds.

    Three parts on the ``host`` device, each ``launches`` times its op class's ``overhead_s``:

    * ``framework`` (op ``step``, 1 per step, ``a``): scheduling, the step's hand-off to the GPU
      (one CUDA-graph replay or the launch sequence), the sampled tokens' copy back;
    * ``framework_seq`` (op ``step_seq``, ``n_seqs``, ``b``): per-sequence input preparation
      (block tables, positions), sampling parameters, output processing (detokenization, stop checks);
    * ``framework_token`` (op ``step_token``, ``n_tokens``, ``c``): per-token input tensors.

    The split follows Vidur's CPU-overhead model (Agrawal et al., MLSys 2024: schedule, prepare
    inputs, sampler and process-outputs times profiled against batch size). Default values and
    their measurements: ``kvsim/hardware/efficiency/default.yaml``.

    Args:
        n_tokens: tokens processed this step (prefill chunk tokens + one per decoding sequence).
        n_seqs: sequences that sample a token this step (the LM head rows of :func:`linear_cost`).
    """
    return Cost.of(Part("framework", "step", device="host", launches=1.0),
                   Part("framework_seq", "step_seq", device="host", launches=n_seqs),
                   Part("framework_token", "step_token", device="host", launches=n_tokens))
