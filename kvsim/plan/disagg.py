"""Disaggregated prefill/decode: ``P`` prefill instances and ``D`` decode instances, each with its
own hardware and TP, the KV of every finished prompt sent over a KV link (DistServe, OSDI'24 §3;
Splitwise, ISCA'24 §IV; vLLM's P/D connectors).

The run is three stages, each built on the existing replica simulator (no new engine):

1. **Prefill.** The trace with every output set to 1 token is served by the ``P`` prefill
   instances behind ``router`` (:func:`kvsim.plan.cluster.simulate_cluster`, prefix caching
   included). A prompt's KV is ready when its prefill step ends (the step that samples a token).
   KV offload tiers (``SimConfig.kv_offload``, :mod:`kvsim.sim.kv_tiers`) belong to the prefill
   instances: prompt entries are written through to host / NVMe there and prefix hits load back;
   the summary's ``kv_offload`` is their tiers merged (:func:`kvsim.sim.kv_tiers.merge_summaries`:
   counters summed, hit rates recomputed from the sums).
2. **Transfer.** Bytes of request ``i``: the method's resident KV of its prompt right after
   prefill as the *decode* instance holds it, summed over the decode instance's GPUs,
   ``kv_bytes_d(P_i).gpu_bytes * tp_d + kv_bytes_d(P_i).host_bytes`` (:func:`kv_transfer_bytes`):
   every decode GPU receives its own shard (vLLM's NixlConnector: each decode TP rank reads its
   heads from a prefill rank; with MLA, each reads the whole replicated latent), so KV the
   prefill side replicates (MLA latents, KV heads fewer than ``tp_p``) is not sent once per
   replica. Compression shortens transfers. A request no decode instance can ever hold (their own
   admission rule, :func:`kvsim.sim.inputs.prepare`) is prefilled but not sent: the decode side
   refuses it, and with a pull connector it is the side that would read the KV; it counts as
   rejected with the decode side's reason.
   One NIC per GPU (DGX/HGX nodes carry one compute-fabric port per GPU): a transfer uses
   ``lanes = min(tp_p, tp_d)`` links in parallel and occupies them ``bytes / (lanes * bw)``
   (:func:`kvsim.costmodel.roofline.link_transfer_seconds`); it arrives ``latency_s`` later.
   An instance of ``tp`` GPUs has ``tp // lanes`` transfer slots of ``lanes`` ports each (a TP2
   prefill instance feeding TP1 decode instances sends two prompts at once, one per NIC);
   transfers take the earliest free slot on both sides, first ready first (FIFO,
   :func:`schedule_transfers`), so no port ever carries more than its bandwidth. The decode instance of each request is chosen round-robin in ready
   order (vLLM's ``examples/online_serving/disaggregated_serving/disagg_proxy_demo.py``:
   ``RoundRobinSchedulingPolicy`` over decode instances); the choice does not
   depend on the decode instances' state, which keeps each decode instance's arrivals known
   before it runs.
3. **Decode.** Each decode instance replays its requests at their transfer-arrival times with
   ``SimConfig.prompt_kv_resident``: the prompt's KV is already resident (all but the last
   prompt token count as computed, no prefill compute), the last prompt token is recomputed in a
   1-token step that samples the first token (vLLM v1's KV-connector convention: a full-prompt
   hit recomputes one token for its logits), then the request decodes as usual. Decode instances
   run without offload tiers (they have no prefix cache to offload).

**TTFT convention.** A request's first token is the one its decode instance samples, so for a
lone request ``TTFT = prefill(P) + bytes / (lanes * bw) + latency + step(1 new, P - 1 cached)``
(:func:`lone_ttft_s`; the prefill instance's sampled token is discarded, as vLLM's proxy does).
TBT and TPOT are measured on the decode instances only; a decode step there carries at most
those 1-token recomputes, never a prompt chunk: that is the point of disaggregation.

Simplifications (stated, not hidden): the prefill instance frees a prompt's KV when its step
ends, not when the transfer completes; decode instances never push back on prefill instances
(a full decode instance queues the request); a decode instance's RECOMPUTE victim keeps its prompt
KV as resident when re-admitted (optimistic: vLLM would recompute the prompt); layer-wise overlap of transfer with prefill
(Splitwise §IV-C) is not modelled (the transfer starts after the whole prompt).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from kvsim.costmodel.deployment import Deployment, host_shared
from kvsim.costmodel.roofline import link_transfer_seconds
from kvsim.errors import ConfigError
from kvsim.hardware.spec import LinkSpec
from kvsim.methods.base import KVMethod
from kvsim.plan.cluster import _sum_timelines, simulate_cluster
from kvsim.pricing.step import StepModel
from kvsim.sim.config import SimConfig
from kvsim.sim.inputs import REJECT_REASONS, effective_prompts, merged_notes, prepare
from kvsim.sim.kv_tiers import merge_summaries
from kvsim.sim.metrics import RequestRecords, stats, summarize
from kvsim.sim.provenance import provenance
from kvsim.sim.replica import simulate
from kvsim.sim.request import RequestStatus
from kvsim.traces.base import Trace


def _capacity_sum(pre, dec_results: list, key: str, per_gpu: bool) -> float:
    """Sum of ``key`` (one instance's pool) over the prefill and decode instances; ``per_gpu``: the
    pool is one GPU's, counted once per GPU of the instance (its TP). The capacity line of the
    timeline, whose gauges are summed over every GPU of every instance."""
    pre_results = list(getattr(pre, "replicas", None) or [pre])
    return float(sum((r.summary.get(key) or 0.0) * (r.summary.get("tp", 1) if per_gpu else 1)
                     for r in pre_results + list(dec_results)))


def parse_ratio(text: str) -> tuple[int, int]:
    """``"P:D"`` (e.g. ``"2:1"``) -> ``(P, D)``, both whole numbers >= 1 (a one-line ConfigError otherwise)."""
    head, sep, tail = str(text).partition(":")
    try:
        p, d = int(head), int(tail)
    except ValueError:
        p = d = 0
    if not sep or p < 1 or d < 1 or p > 4096 or d > 4096:
        raise ConfigError(f"--disagg expects P:D, prefill and decode instances (whole numbers 1..4096), e.g. 1:1, got '{text}'")
    return p, d


def kv_transfer_bytes(decode_method: KVMethod, effective_prompt_tokens) -> np.ndarray:
    """Bytes of prompt KV sent per request, ``[N]``: what the *decode* instance must receive, the
    method's resident bytes right after prefill (``kv_bytes(P)``, every cached token a prompt token)
    on each of its ``tp_d`` GPUs, summed over them, plus what the method keeps on the host (module
    docstring, stage 2). Per-GPU bytes already include replication (MLA latent on every GPU, KV heads
    fewer than ``tp``), so a decode GPU that needs a replica receives one; replicas on the prefill
    side are never sent twice.

    Example (Llama-3.1-8B, bf16, full KV): 2 (K, V) x 32 layers x 8 KV heads x 128 dims x 2 bytes =
    131,072 bytes per token; a 1000-token prompt sends 131,072,000 bytes at any TP <= 8.
    DeepSeek-V2-Lite (MLA, 576 values x 27 layers x 2 B = 31,104 B/token per GPU): decode TP1
    receives 31,104,000 B for 1000 tokens, decode TP2 twice that, whatever the prefill TP."""
    p = np.asarray(effective_prompt_tokens, dtype=np.float64)
    res = decode_method.kv_bytes(p)
    gpu = np.broadcast_to(np.asarray(res.gpu_bytes, dtype=np.float64), p.shape) * decode_method.dep.tp
    host = np.broadcast_to(np.asarray(res.host_bytes, dtype=np.float64), p.shape)
    return gpu + host


def transfer_lanes(tp_prefill: int, tp_decode: int) -> int:
    """Links a transfer uses in parallel: one NIC per GPU, the smaller side limits (``min(tp_p, tp_d)``)."""
    return max(1, min(int(tp_prefill), int(tp_decode)))


def transfer_slots(tp: int, lanes: int) -> int:
    """Transfers one instance of ``tp`` GPUs (one NIC each) runs at once, each on ``lanes`` NICs:
    ``max(1, tp // lanes)`` (prefill TP4 -> decode TP1: 4; equal TP: 1)."""
    return max(1, int(tp) // max(1, int(lanes)))


def schedule_transfers(ready_s: np.ndarray, src: np.ndarray, busy_s: np.ndarray, latency_s: float,
                       num_src: int, num_dst: int, src_slots: int = 1,
                       dst_slots: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FIFO transfers over per-instance transfer slots (module docstring, stage 2).

    ``ready_s[i]``: when request ``i``'s KV is ready on prefill instance ``src[i]``; ``busy_s[i]``:
    seconds the transfer occupies its ports. Each prefill instance has ``src_slots`` slots, each
    decode instance ``dst_slots`` (:func:`transfer_slots`). In ready order (ties by index) the
    ``k``-th request goes to decode instance ``k mod num_dst``; it takes the earliest free slot of its
    prefill and of its decode instance, starts at ``max(ready, both slots free)``, holds both for
    ``busy_s`` and arrives ``latency_s`` after it ends.
    Returns ``(dst, start_s, arrive_s)``, each ``[N]`` (NaN / -1 where ``ready_s`` is NaN: not prefilled).
    """
    n = len(ready_s)
    dst = np.full(n, -1, dtype=np.int64)
    start = np.full(n, np.nan)
    arrive = np.full(n, np.nan)
    src_free = [[0.0] * max(1, src_slots) for _ in range(num_src)]
    dst_free = [[0.0] * max(1, dst_slots) for _ in range(num_dst)]
    ok = np.flatnonzero(np.isfinite(ready_s))
    order = ok[np.lexsort((ok, ready_s[ok]))]
    for k, i in enumerate(order.tolist()):
        s, d = int(src[i]), k % num_dst
        a, b = src_free[s], dst_free[d]
        js, jd = a.index(min(a)), b.index(min(b))
        t0 = max(float(ready_s[i]), a[js], b[jd])
        t1 = t0 + float(busy_s[i])
        a[js] = b[jd] = t1
        dst[i], start[i], arrive[i] = d, t0, t1 + latency_s
    return dst, start, arrive


def lone_ttft_s(prefill_dep: Deployment, prefill_method: KVMethod, decode_dep: Deployment, decode_method: KVMethod,
                prompt_tokens: float, link: LinkSpec, chunk_tokens: int | None = None) -> dict[str, float]:
    """TTFT of a lone request, the estimate path (module docstring, "TTFT convention"), seconds:
    ``{"prefill_s", "transfer_s", "first_step_s", "ttft_s"}``. ``chunk_tokens``: the prefill
    instance's chunk (``max_num_batched_tokens`` with chunked prefill; None: one step)."""
    P = int(effective_prompts(prefill_method, np.array([prompt_tokens]))[0])
    prefill = float(StepModel(prefill_dep, prefill_method).prefill_request_timing(P, chunk_tokens).total_s)
    nbytes = float(kv_transfer_bytes(decode_method, np.array([P]))[0])
    lanes = transfer_lanes(prefill_dep.tp, decode_dep.tp)
    transfer = float(link_transfer_seconds(nbytes, link, lanes)) + link.latency_s
    first = float(StepModel(decode_dep, decode_method).time_s(
        prefill_new=np.array([1.0]), prefill_cached=np.array([float(P - 1)]), n_sampled_prefill=1))
    return {"prefill_s": prefill, "transfer_s": transfer, "first_step_s": first, "ttft_s": prefill + transfer + first}


@dataclass
class DisaggResult:
    """Like :class:`kvsim.plan.cluster.ClusterResult`: merged records in trace order, a summary, timelines
    summed over every instance, the decode instances' pooled TBT; per-request transfer facts."""

    summary: dict
    records: RequestRecords
    timeline: dict[str, np.ndarray]
    tbt_values: np.ndarray
    tbt_weights: np.ndarray
    prefill_of: np.ndarray  # [N] prefill instance (-1: rejected before)
    decode_of: np.ndarray  # [N] decode instance (-1: never reached one)
    kv_ready_s: np.ndarray  # [N] prefill step end
    transfer_bytes: np.ndarray  # [N]
    transfer_start_s: np.ndarray  # [N]
    decode_arrival_s: np.ndarray  # [N]
    parts: dict = field(default_factory=dict, repr=False)  # "prefill": result, "decode": [result per instance]


def simulate_disagg(prefill_dep: Deployment, prefill_method: KVMethod, decode_dep: Deployment,
                    decode_method: KVMethod, trace: Trace, link: LinkSpec, config: SimConfig | None = None,
                    num_prefill: int = 1, num_decode: int = 1, router: str = "least-outstanding",
                    node_replicas: int | None = None) -> DisaggResult:
    """Serve ``trace`` with ``num_prefill`` prefill and ``num_decode`` decode instances (module docstring).

    ``prefill_method`` / ``decode_method``: the same KV method (name and parameters) built for each
    deployment; ``router`` places requests on prefill instances (:mod:`kvsim.plan.cluster`).
    ``node_replicas``: instances sharing each node's host (default: each side's own count, at most a
    node's worth; ``kvsim plan`` passes a full node, as for aggregated replicas)."""
    if prefill_method.name != decode_method.name or prefill_method.params != decode_method.params:
        raise ConfigError(f"prefill and decode instances must run one KV method, got {prefill_method.label()} "
                          f"and {decode_method.label()}")
    if prefill_dep.model.name != decode_dep.model.name:
        raise ConfigError(f"prefill and decode instances must serve one model, got {prefill_dep.model.name} "
                          f"and {decode_dep.model.name}")
    if num_prefill < 1 or num_decode < 1:
        raise ConfigError(f"need >= 1 prefill and >= 1 decode instance, got {num_prefill}:{num_decode}")
    cfg = config or SimConfig()
    t0 = time.perf_counter()
    n = len(trace)
    out = np.asarray(trace.output_tokens, dtype=np.int64)
    dcfg = cfg.model_copy(update={"prompt_kv_resident": True, "progress": None, "kv_offload": None})
    ddep = host_shared(decode_dep, num_decode if node_replicas is None else node_replicas)
    dmeth = type(decode_method)(ddep, decode_method.params) if ddep is not decode_dep else decode_method
    # requests no decode instance can ever hold (the decode instances' own admission rule): they are
    # prefilled (the proxy sends every request to a prefill instance first) but their KV is never
    # sent: a vLLM decode instance refuses them, and with a pull connector (NixlConnector) it is the
    # decode side that reads the KV
    never = prepare(ddep, dmeth, trace, dcfg).reject  # [N] reject code, 0: admissible
    # 1. prefill: every request generates one token there
    pre = simulate_cluster(prefill_dep, prefill_method, replace(trace, output_tokens=np.ones(n, dtype=np.int64)),
                           cfg, num_prefill, router, node_replicas=node_replicas)
    prec = pre.records
    pre_of = np.asarray(getattr(pre, "replica_of", np.zeros(n, dtype=np.int64)), dtype=np.int64).copy()
    done_p = prec.status == RequestStatus.FINISHED
    ready = np.where(done_p & (never == 0), prec.first_token_s, np.nan)  # (KV sent)
    pre_of[~done_p] = -1
    # 2. transfers
    peff = np.asarray(prec.effective_prompt_tokens, dtype=np.int64)
    nbytes = kv_transfer_bytes(decode_method, peff)
    lanes = transfer_lanes(prefill_dep.tp, decode_dep.tp)
    busy = np.asarray(link_transfer_seconds(nbytes, link, lanes), dtype=np.float64)
    slots_p, slots_d = transfer_slots(prefill_dep.tp, lanes), transfer_slots(decode_dep.tp, lanes)
    dst, start, arrive = schedule_transfers(ready, np.maximum(pre_of, 0), busy, link.latency_s, num_prefill, num_decode,
                                            slots_p, slots_d)
    # 3. decode instances, each on its own requests in arrival order
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    tmax = np.full(n, np.nan)
    status = prec.status.copy()
    reasons = dict(prec.reject_reason)
    refused = np.flatnonzero(done_p & (never != 0))  # prefilled, refused by the decode side
    status[refused] = RequestStatus.REJECTED
    reasons.update({int(i): REJECT_REASONS[int(never[i])] for i in refused})
    preempt = np.asarray(prec.preemptions, dtype=np.int64).copy()
    dec_results, vals, wts = [], [], []
    for d in range(num_decode):
        idx = np.flatnonzero(dst == d)
        if not idx.size:
            continue
        idx = idx[np.argsort(arrive[idx], kind="stable")]
        sub = Trace(name=f"{trace.name}@decode{d}", arrival_s=arrive[idx], prompt_tokens=np.asarray(trace.prompt_tokens)[idx],
                    output_tokens=out[idx], source=trace.source)
        res = simulate(ddep, dmeth, sub, dcfg)
        r = res.records
        first[idx], finish[idx], tmax[idx] = r.first_token_s, r.finish_s, r.tbt_max_s
        preempt[idx] += np.asarray(r.preemptions, dtype=np.int64)
        status[idx] = r.status
        for j, why in dict(r.reject_reason).items():
            reasons[int(idx[j])] = why
        vals.append(res.tbt_values)
        wts.append(res.tbt_weights)
        dec_results.append(res)
    rec = RequestRecords(
        arrival_s=np.asarray(trace.arrival_s, dtype=np.float64), scheduled_s=prec.scheduled_s, first_token_s=first,
        finish_s=finish, tbt_max_s=tmax, prompt_tokens=prec.prompt_tokens, effective_prompt_tokens=peff,
        output_tokens=out, cached_tokens=prec.cached_tokens, preemptions=preempt, status=status,
        reject_reason=reasons)
    tbt_v = np.concatenate(vals) if vals else np.zeros(0)
    tbt_w = np.concatenate(wts) if wts else np.zeros(0)
    summ = summarize(rec, tbt_v, tbt_w, slo_ttft_s=cfg.slo_ttft_s, slo_tpot_s=cfg.slo_tpot_s)
    moved = np.isfinite(arrive)
    per_d = [r.summary for r in dec_results]
    pre_s = pre.summary
    timelines = [r.timeline for r in pre.replicas] if hasattr(pre, "replicas") else [pre.timeline]
    timeline = _sum_timelines(timelines + [r.timeline for r in dec_results],
                              [prefill_dep.tp] * len(timelines) + [decode_dep.tp] * len(dec_results))
    gpus = num_prefill * prefill_dep.tp + num_decode * decode_dep.tp
    span = float(np.nanmax(arrive) - np.nanmin(start)) if moved.any() else 0.0
    summ.update({
        "hw": f"{prefill_dep.system.name}->{decode_dep.system.name}" if prefill_dep.system.name != decode_dep.system.name
        else prefill_dep.system.name,
        "model": prefill_dep.model.name, "method": prefill_method.label(), "trace": trace.name,
        "tp": decode_dep.tp, "replicas": num_prefill + num_decode, "gpus": gpus, "router": router,
        "peak_kv_gpu_bytes": max((p["peak_kv_gpu_bytes"] for p in per_d), default=0.0),
        "peak_kv_host_bytes": max((p["peak_kv_host_bytes"] for p in per_d), default=0.0),
        "kv_gpu_capacity_bytes": per_d[0].get("kv_gpu_capacity_bytes") if per_d else None,
        "kv_gpu_capacity_tokens": per_d[0].get("kv_gpu_capacity_tokens") if per_d else None,
        "kv_host_capacity_bytes": per_d[0].get("kv_host_capacity_bytes") if per_d else None,
        # what the summed timeline gauges compare to: every instance's pool (prefill and decode pools differ)
        "kv_gpu_capacity_sum_bytes": _capacity_sum(pre, dec_results, "kv_gpu_capacity_bytes", per_gpu=True),
        "kv_host_capacity_sum_bytes": _capacity_sum(pre, dec_results, "kv_host_capacity_bytes", per_gpu=False),
        "requests_failed_in_trace": int(trace.num_failed_dropped),
        "weight_dtype": decode_dep.weight_dtype, "kv_dtype": decode_dep.kv_dtype,
        "config": cfg.model_dump(mode="json"),
        "provenance": {"prefill": provenance(cfg.deployment_for(prefill_dep), prefill_method, trace),
                       "decode": provenance(cfg.deployment_for(decode_dep), decode_method, trace),
                       "kv_link": link.model_dump(mode="json")},
        "preemptions": int(preempt.sum()),
        # the prefill instances' tiers (decode instances have none), summed over instances
        "kv_offload": merge_summaries([r.summary.get("kv_offload") for r in getattr(pre, "replicas", None) or [pre]]),
        "disagg": {
            "prefill_instances": num_prefill, "decode_instances": num_decode,
            "prefill_hw": prefill_dep.system.name, "decode_hw": decode_dep.system.name,
            "prefill_tp": prefill_dep.tp, "decode_tp": decode_dep.tp, "kv_link": link.name, "kv_link_lanes": lanes,
            "kv_link_bw_bytes_per_s": link.bw_bytes_per_s * lanes, "kv_link_latency_s": link.latency_s,
            "kv_transfer_bytes_total": float(nbytes[moved].sum()),
            "kv_transfer_bytes_mean": float(nbytes[moved].mean()) if moved.any() else None,
            "kv_transfer_s": stats((arrive - start)[moved]),
            "kv_transfer_wait_s": stats((start - ready)[moved]),
            "kv_transfers_at_once_per_prefill": slots_p, "kv_transfers_at_once_per_decode": slots_d,
            # slot-seconds of transfers / (first start to last arrival x the transfers that can run at once)
            "kv_link_busy_fraction": (float(busy[moved].sum()) / (span * min(num_prefill * slots_p, num_decode * slots_d))
                                      if span > 0 else None),
            "prefill_ttft_s": pre_s.get("ttft_s"),
            # the summary's peak_kv_* are the decode instances'; the prefill instances hold whole prompts
            "prefill_peak_kv_gpu_bytes": pre_s.get("peak_kv_gpu_bytes"),
            "prefill_kv_gpu_capacity_bytes": pre_s.get("kv_gpu_capacity_bytes"),
            "requests_per_prefill": np.bincount(pre_of[pre_of >= 0], minlength=num_prefill).tolist(),
            "requests_per_decode": np.bincount(dst[dst >= 0], minlength=num_decode).tolist(),
            "convention": "TTFT = arrival -> first token sampled on the decode instance (prefill + KV transfer "
                          "+ a 1-token recompute step); ITL/TPOT on decode instances only",
        },
        "sim": {"wall_s": time.perf_counter() - t0,
                "steps": pre_s.get("sim", {}).get("steps", 0) + sum(p.get("sim", {}).get("steps", 0) for p in per_d)},
        # (requests a decode instance could never hold are rejected here and reach no instance's notes)
        "notes": merged_notes([pre_s, *per_d], summ["rejected_reasons"], len(rec.status),
                              min(prefill_dep.model.max_context_tokens, decode_dep.model.max_context_tokens),
                              full_prompt=prefill_method.full_prompt_until_prefilled),
    })
    return DisaggResult(summ, rec, timeline, tbt_v, tbt_w, pre_of, dst, ready, nbytes, start, arrive,
                        {"prefill": pre, "decode": dec_results})
