"""Random scenarios replayed through the fast simulator and the reference (no tests here).

Used by ``tests/test_sim_reference.py`` (hypothesis draws a seed) and
``benchmarks/sim_equivalence.py`` (seeds 0..N-1). A scenario is a pure function of its seed,
so a mismatch is reproduced with :func:`scenario` and :func:`compare`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from kvsim.errors import ConfigError
from kvsim.traces.base import Trace

MODELS = ("llama-3.1-8b", "mixtral-8x7b", "deepseek-v2-lite")  # GQA dense, MoE, MLA
SYSTEMS = {"llama-3.1-8b": "a100", "mixtral-8x7b": "h200", "deepseek-v2-lite": "a100"}
# Mixtral on two GPUs: its steps carry all-reduces priced by the H200's measured profile
# (vLLM's custom all-reduce for small messages, NCCL for large ones)
TP = {"mixtral-8x7b": 2}
METHODS = ("full", "kivi", "quest", "h2o", "snapkv", "streamingllm", "magicpig", "infllm", "duoattention",
           "llmlingua", "prefix", "mla", "mikv", "cake", "oracle", "headmerge", "xecomla", "nsa", "moba", "locret", "elastic", "ems", "a2ats", "kvcrush",
           "kivi+quest", "snapkv+kivi", "h2o+kivi")
ROUTERS = ("round-robin", "least-outstanding", "prefix-aware")
REL_TOL = 1e-9


@lru_cache(maxsize=None)
def deployment(model: str):
    from kvsim.costmodel.deployment import Deployment
    from kvsim.hardware import load_system
    from kvsim.models import load_model

    system = load_system(SYSTEMS[model])
    # engine overhead that depends on the batch (per sampled sequence and per token), so that the
    # fast pricer's cached linear + overhead rows are checked against it
    eff = system.eff.with_overrides({"step_seq": {"overhead_s": 1.3e-5}, "step_token": {"overhead_s": 2e-7}})
    return Deployment(system.with_efficiencies(eff), load_model(model), tp=TP.get(model, 1))


@lru_cache(maxsize=None)
def method_for(model: str, name: str):
    """The method, or None where it does not support the model."""
    from kvsim.methods import make_method

    try:
        return make_method(name, deployment(model))
    except ConfigError:
        return None


@lru_cache(maxsize=1)
def mooncake() -> Trace:
    from kvsim.traces import load_trace

    return load_trace("mooncake-conversation")


@dataclass
class Scenario:
    seed: int
    model: str
    method: str
    trace: Trace
    config: dict
    blocks: int  # target KV pool size (GPU blocks)
    replicas: int
    router: str
    offload: tuple | None = None  # KV offload tiers: (host, NVMe) capacity in KV blocks, load mode


    def describe(self) -> str:
        t = self.trace
        rows = list(zip(t.arrival_s.tolist(), t.prompt_tokens.tolist(), t.output_tokens.tolist(),
                        t.prefix_blocks if t.prefix_blocks is not None else [None] * len(t)))
        return (f"seed={self.seed} model={self.model} method={self.method} blocks={self.blocks} "
                f"replicas={self.replicas} router={self.router} config={self.config} offload={self.offload} "
                f"pb={t.prefix_block_tokens} "
                f"rows(arrival, prompt, output, prefix)={rows}")


def scenario(seed: int, small: bool = False) -> Scenario:
    """The scenario of ``seed``; ``small``: fewer, shorter requests (CI)."""
    rng = random.Random(seed)
    out_max = 40 if small else 150
    model = rng.choice(MODELS)
    method = rng.choice(METHODS)
    cfg = dict(
        max_num_seqs=rng.choice([1, 2, 3, 4, 6, 8, 256]),
        max_num_batched_tokens=rng.choice([64, 256, 512, 2048, 8192]),
        chunked_prefill=rng.random() < 0.65,
        preemption_mode=rng.choice(["recompute", "swap"]),
        enable_prefix_caching=rng.random() < 0.9,
        record_token_times=True,
    )
    # the watermark comes from its own generator so that the other draws of a seed stay as they were
    wm = random.Random(f"watermark-{seed}").choice([None, None, None, 0.0, 0.01, 0.05, 0.2])
    if wm is not None:
        cfg["watermark"] = wm
    if random.Random(f"reserve-{seed}").random() < 0.3:  # (its own generator too) vLLM's full-prompt admission gate
        cfg["reserve_full_prompt"] = True
    kind = rng.random()
    if kind < 0.15:  # a window of Mooncake (real prefix ids, 512-token blocks), outputs capped
        mc = mooncake()
        n = rng.randint(5, 12 if small else 25)
        start = rng.randrange(0, len(mc) - n)
        sel = slice(start, start + n)
        prompt = np.minimum(mc.prompt_tokens[sel], 8192)
        output = np.minimum(mc.output_tokens[sel], rng.choice([20, 60, out_max]))
        arrival = mc.arrival_s[sel] - mc.arrival_s[start]
        arrival = arrival * rng.choice([0.01, 0.1, 1.0])
        prefix = tuple(tuple(h[: -(-int(p) // 512)]) for h, p in zip(mc.prefix_blocks[sel], prompt))
        trace = Trace("mooncake-window", np.asarray(arrival, dtype=np.float64), np.asarray(prompt, dtype=np.int64),
                      np.maximum(np.asarray(output, dtype=np.int64), 1), prefix_blocks=prefix, prefix_block_tokens=512)
        blocks = rng.randint(600, 4000)
    else:
        n = rng.randint(5, 20) if small else rng.randint(5, 40 if rng.random() < 0.8 else 60)
        gaps = [rng.choice([0.0, 0.001, 0.01, 0.05, 0.3, 2.0]) for _ in range(n)]
        long = rng.random() < 0.3
        prompt = [rng.randint(1, 6000 if long else 2500) for _ in range(n)]
        output = [rng.randint(1, out_max) for _ in range(n)]
        prefix = None
        pb = 0
        if kind < 0.6:  # prompts open with one of a few shared chains of 64-token blocks
            pb = 64
            roots = [rng.randint(0, 3) for _ in range(n)]
            prefix = tuple(tuple(1000 * r + j for j in range(p // 64 + 1)) for r, p in zip(roots, prompt))
        trace = Trace("random", np.cumsum(gaps), np.asarray(prompt, dtype=np.int64), np.asarray(output, dtype=np.int64),
                      prefix_blocks=prefix, prefix_block_tokens=pb)
        blocks = rng.randint(30, 800)
    sr = random.Random(f"streams-{seed}")  # its own generator: the other draws of a seed stay as they were
    if kind >= 0.15 and prefix is not None and sr.random() < 0.35:
        trace = streams(trace, random.Random(f"streams-draw-{seed}"))
        if sr.random() < 0.5:  # a method that shares prefix blocks, prefix caching on: generated entries cached
            method = sr.choice(("full", "kivi", "quest", "mla"))
            cfg["enable_prefix_caching"] = True
    replicas = 1 if rng.random() < 0.55 else rng.randint(2, 3)
    # offload tiers from their own generator (the other draws of a seed stay as they were): half
    # the scenarios, host tiers from a few blocks (evicting, spilling) to more than the GPU pool
    tr = random.Random(f"tiers-{seed}")
    offload = None
    if tr.random() < 0.5:
        host = tr.choice([4, 16, 64, 256, 4000])
        offload = (host, tr.choice([0, 0, 8, 64, 1000]))
        if trace.prefix_blocks is not None and tr.random() < 0.6:
            # tier-focused: a method that shares prefix blocks and a GPU pool that evicts them
            method = tr.choice(("full", "kivi", "quest", "mla"))
            blocks = tr.randint(30, 300) if trace.prefix_block_tokens == 64 else tr.randint(600, 1500)
            cfg["enable_prefix_caching"] = True
        offload += (tr.choice(("async", "async", "sync")),)  # (drawn last: the draws above stay as they were)
    return Scenario(seed, model, method, trace, cfg, blocks, replicas, rng.choice(ROUTERS), offload)


def pressure_scenario(seed: int) -> Scenario:
    """A scenario under memory pressure where RECOMPUTE victims park their KV (reference rule 12)
    and come back for it: a small pool, long outputs, bursts, prefix caching on, methods whose
    blocks are the tokens as written; half with shared prefix ids (victims then park after their
    prefix entries), some with offload tiers or the v0 watermark."""
    rng = random.Random(f"pressure-{seed}")
    model = rng.choice(MODELS)
    method = rng.choice(("mla",) if model == "deepseek-v2-lite" else ("full", "kivi", "quest"))
    n = rng.randint(6, 18)
    gaps = [rng.choice([0.0, 0.0, 0.005, 0.05, 0.5]) for _ in range(n)]
    prompt = [rng.randint(20, 1200) for _ in range(n)]
    output = [rng.randint(30, 220) for _ in range(n)]
    prefix, pb = None, 0
    if rng.random() < 0.5:
        pb = 64
        roots = [rng.randint(0, 2) for _ in range(n)]
        prefix = tuple(tuple(1000 * r + j for j in range(p // 64 + 1)) for r, p in zip(roots, prompt))
    trace = Trace("pressure", np.cumsum(gaps), np.asarray(prompt, dtype=np.int64), np.asarray(output, dtype=np.int64),
                  prefix_blocks=prefix, prefix_block_tokens=pb)
    cfg = dict(max_num_seqs=rng.choice([2, 4, 8, 256]), max_num_batched_tokens=rng.choice([64, 256, 2048]),
               chunked_prefill=rng.random() < 0.75, preemption_mode="recompute", enable_prefix_caching=True,
               record_token_times=True)
    if rng.random() < 0.2:
        cfg["watermark"] = rng.choice([0.01, 0.05])
    if random.Random(f"reserve-{seed}").random() < 0.3:  # (its own generator: the other draws stay as they were)
        cfg["reserve_full_prompt"] = True
    offload = None
    if pb and rng.random() < 0.3:
        offload = (rng.choice([8, 64, 400]), rng.choice([0, 64]), rng.choice(("async", "sync")))
    blocks = rng.randint(max(90, max(p + o for p, o in zip(prompt, output)) // 16 + 4), 160)
    replicas = 1 if rng.random() < 0.7 else 2
    return Scenario(seed, model, method, trace, cfg, blocks, replicas, rng.choice(ROUTERS), offload)


def streams(trace: Trace, rng: random.Random, max_prompt: int = 8000) -> Trace:
    """``trace`` rebuilt so that prefix ids name token streams (prompt, then generated tokens), as
    tree search and multi-turn traces do: request ``i`` either opens a stream (a shared chain of
    64-token blocks for its prompt's full blocks, then ids of its own up to ``ceil((prompt + output) /
    64)``, sometimes one id more), or continues an earlier request ``j``'s stream: its prompt is ``j``'s
    prompt + output + a few new tokens, its first ``(prompt_j + output_j) // 64`` ids are ``j``'s (the
    full blocks of ``j``'s stream), the rest its own. Finishing requests then cache their generated
    entries (the generated-tokens rule) and later prompts can hit them. Arrivals and outputs are kept."""
    pb = 64
    prompts = trace.prompt_tokens.tolist()
    outputs = trace.output_tokens.tolist()
    ids: list[tuple[int, ...]] = []
    fresh = 10**6
    for i, (p, o) in enumerate(zip(prompts, outputs)):
        j = rng.randrange(i) if i and rng.random() < 0.6 else -1
        if j >= 0 and prompts[j] + outputs[j] + 200 <= max_prompt:
            p = prompts[i] = prompts[j] + outputs[j] + rng.choice([0, 1, 17, 64, 200])
            shared = ids[j][: (prompts[j] + outputs[j]) // pb]
        else:
            root = rng.randint(0, 3)
            shared = tuple(1000 * root + k for k in range(p // pb))
        n = -(-(p + o) // pb) + (1 if rng.random() < 0.2 else 0)
        own = tuple(range(fresh, fresh + max(n - len(shared), 0)))
        fresh += len(own)
        ids.append(shared + own)
    return replace(trace, name="streams", prompt_tokens=np.asarray(prompts, dtype=np.int64), prefix_blocks=tuple(ids),
                   prefix_block_tokens=pb)


def sim_config(sc: Scenario, m):
    """SimConfig with ``gpu_memory_utilization`` that leaves ``sc.blocks`` KV blocks (or None: impossible)."""
    from kvsim.pricing.memory import memory_budget
    from kvsim.sim.config import SimConfig
    from kvsim.sim.inputs import effective_prompts

    cfg = SimConfig(**sc.config)
    dep = m.dep
    peff = effective_prompts(m, np.asarray(sc.trace.prompt_tokens))
    step = cfg.max_num_batched_tokens if cfg.chunked_prefill else max(cfg.max_num_batched_tokens, int(peff.max()))
    b = memory_budget(replace(dep, gpu_memory_utilization=1.0), m, max_tokens_per_step=step, max_seqs=cfg.max_num_seqs)
    bb = cfg.block_size_tokens * dep.full_kv_bytes_per_token
    fixed = b.non_kv_gpu_bytes
    util = (fixed + (sc.blocks + 0.5) * bb) / b.gpu_total_bytes
    if not 0 < util <= 1:
        return None
    update = {"gpu_memory_utilization": util}
    if sc.offload is not None:
        from kvsim.sim.kv_tiers import KVOffload

        update["kv_offload"] = KVOffload(host_bytes=sc.offload[0] * bb, nvme_bytes=sc.offload[1] * bb, load=sc.offload[2])
    return cfg.model_copy(update=update)


def single_replicas(seeds, keep=lambda sc: True):
    """``(scenario, ReplicaSim not yet run)`` for each seed whose scenario ``keep`` accepts, one replica
    each; draws whose method, pool or engine settings are impossible are skipped (as :func:`run_both`)."""
    from kvsim.sim.replica import ReplicaSim

    for seed in seeds:
        sc = scenario(seed)
        if not keep(sc):
            continue
        m = method_for(sc.model, sc.method)
        cfg = sim_config(sc, m) if m is not None else None
        if cfg is None:
            continue
        try:
            sim = ReplicaSim(deployment(sc.model), m, sc.trace, cfg)
        except ConfigError:
            continue
        yield sc, sim


def run_both(sc: Scenario):
    """(fast records dict, reference result) or None when the draw does not apply."""
    from kvsim.plan.cluster import simulate_cluster
    from kvsim.sim.reference import simulate_reference
    from kvsim.sim.reference_cluster import simulate_cluster_reference
    from kvsim.sim.replica import simulate

    m = method_for(sc.model, sc.method)
    if m is None:
        return None
    cfg = sim_config(sc, m)
    if cfg is None:
        return None
    dep = deployment(sc.model)
    try:
        if sc.replicas == 1:
            fast = simulate(dep, m, sc.trace, cfg)
            ref = simulate_reference(dep, m, sc.trace, cfg)
        else:
            fast = simulate_cluster(dep, m, sc.trace, cfg, sc.replicas, sc.router)
            ref = simulate_cluster_reference(dep, m, sc.trace, cfg, sc.replicas, sc.router)
    except ConfigError:
        return None
    return fast, ref


def _close(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    return both_nan | (np.abs(a - b) <= REL_TOL * np.maximum(np.abs(b), 1e-300))


def compare(fast, ref) -> list[str]:
    """Differences between a fast result and a reference result (empty: equal)."""
    rec = fast.records
    out = []
    st = np.asarray(rec.status)
    if not np.array_equal(st, ref.status):
        out.append(f"status differs at {np.flatnonzero(st != ref.status).tolist()}: fast {st.tolist()} "
                   f"ref {ref.status.tolist()}")
        return out
    done = st == 1
    if dict(rec.reject_reason) != ref.reject_reason:
        out.append(f"reject reasons: fast {dict(rec.reject_reason)} ref {ref.reject_reason}")
    if getattr(fast, "replica_of", None) is not None and ref.replica_of is not None:
        if not np.array_equal(fast.replica_of, ref.replica_of):
            out.append(f"replica_of: fast {fast.replica_of.tolist()} ref {ref.replica_of.tolist()}")
    pre = np.asarray(rec.preemptions)
    if not np.array_equal(pre[done], ref.preemptions[done]):
        out.append(f"preemptions: fast {pre.tolist()} ref {ref.preemptions.tolist()}")
    if not np.array_equal(np.asarray(rec.cached_tokens)[done], ref.cached_tokens[done]):
        out.append(f"cached_tokens: fast {np.asarray(rec.cached_tokens).tolist()} ref {ref.cached_tokens.tolist()}")
    lf = getattr(rec, "preempted_kv_tokens", None)
    if lf is not None and ref.preempted_kv_tokens is not None and not np.array_equal(lf[done], ref.preempted_kv_tokens[done]):
        out.append(f"preempted_kv_tokens [lost, found]: fast {lf[done].tolist()} ref {ref.preempted_kv_tokens[done].tolist()}")
    for f in ("scheduled_s", "first_token_s", "finish_s", "tbt_max_s"):
        a, b = np.asarray(getattr(rec, f)), getattr(ref, f)
        ok = _close(a, b)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            out.append(f"{f} differs at {np.flatnonzero(~ok).tolist()}: first request {i}: fast {a[i]!r} ref {b[i]!r}")
    if rec.token_times is not None:
        bad = [i for i in np.flatnonzero(done)
               if len(rec.token_times[i]) != len(ref.token_times[i]) or not _close(rec.token_times[i],
                                                                                    ref.token_times[i]).all()]
        if bad:
            out.append(f"token times differ for requests {bad}")
    s = fast.summary
    steps = s.get("sim", {}).get("steps")
    if steps is not None and steps != ref.steps:
        out.append(f"steps: fast {steps} ref {ref.steps}")
    bb = s.get("kv_block_bytes") or (s["kv_gpu_capacity_bytes"] / max(ref.num_gpu_blocks, 1))
    for key, val in (("peak_kv_gpu_bytes", ref.peak_gpu_blocks), ("peak_kv_host_bytes", ref.peak_host_blocks)):
        if not np.isclose(s[key], val * bb, rtol=1e-12, atol=0):
            out.append(f"{key}: fast {s[key] / bb:.0f} blocks ref {val}")
    return out
