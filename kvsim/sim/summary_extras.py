"""What a simulation's summary carries beyond the simulator's own metrics, shared by
``kvsim simulate`` and :func:`kvsim.simulate` (so that the Python API's ``summary`` is the
command's JSON): the notes on the run's inputs (a method's own KV format, windowed attention, a
whole-prompt budget, a trace's own seed), the chunk cache of non-prefix reuse, the method's and
trace's provenance, expert offloading and the SLO verdict.
"""

from __future__ import annotations

from kvsim.costmodel.deployment import Deployment
from kvsim.errors import ConfigError
from kvsim.methods import KVMethod
from kvsim.pricing.estimate import whole_host_note
from kvsim.pricing.input_notes import eager_scores_note, kv_dtype_notes, window_note
from kvsim.pricing.memory import memory_budget
from kvsim.sim.chunk_reuse import chunk_cache_summary, unused_chunk_cache_note
from kvsim.sim.config import SimResult
from kvsim.sim.inputs import admissible, profiling_step_tokens, whole_prompt_budget_note
from kvsim.slo import SLO
from kvsim.slo import verdict as slo_verdict
from kvsim.traces import Trace


def inline_seed_note(trace: Trace, seed: int) -> str | None:
    """A synthetic spec's own ``seed=`` draws the trace (it wins over ``--seed``, which still seeds
    the simulator's own choices, e.g. random routing): say so when the two differ (the seed that drew
    it: ``trace.meta["seed"]``, recorded by the synthetic loader)."""
    used = trace.meta.get("seed")
    if used is None or not seed or used == seed:
        return None
    return (f"the trace spec's seed={used} draws the trace; --seed {seed} seeds only the simulator "
            "(the summary's config.seed)")


def budget_below_seqs_note(max_num_seqs: int, max_num_batched_tokens: int) -> str | None:
    """vLLM refuses a step budget below its sequence limit (``SchedulerConfig``: "max_num_batched_tokens
    must be greater than or equal to max_num_seqs"); kvsim runs every decode anyway, beyond the budget."""
    if max_num_batched_tokens >= max_num_seqs:
        return None
    return (f"--max-num-batched-tokens {max_num_batched_tokens:,} is below --max-num-seqs {max_num_seqs:,}: vLLM refuses "
            "to start with that; kvsim decodes every running sequence anyway (steps may exceed the budget)")


def setup_notes(dep: Deployment, trace: Trace, *, chunked_prefill: bool, max_num_batched_tokens: int, seed: int,
                max_num_seqs: int = 0) -> list[str]:
    """Notes on a run's inputs shared by every method, before any simulation (the command prints them
    once; each method's summary carries them)."""
    notes = [window_note(dep.model), whole_prompt_budget_note(trace.prompt_tokens, chunked_prefill, max_num_batched_tokens),
             budget_below_seqs_note(max_num_seqs, max_num_batched_tokens), inline_seed_note(trace, seed)]
    return [n for n in notes if n]


def complete_summary(res: SimResult, method: KVMethod, trace: Trace, dep: Deployment, *, spec: str,
                     slo: SLO | None, disaggregated: bool = False, extra_notes: tuple = (), kv_dtype: str = "auto",
                     trace_spec: dict | None = None, prefill: tuple | None = None) -> list[str]:
    """Add to ``res.summary`` what ``kvsim simulate --json`` prints beyond the simulator's metrics, in
    its order: ``notes`` (``extra_notes``, then this method's: its own KV format against ``kv_dtype``,
    the chunk cache's hit rates, MLA, the host share), ``chunk_cache``, ``method_spec``,
    ``trace_source``, ``trace_notice``, ``trace_spec`` (the command's flags; None: left out),
    ``expert_offload`` and ``slo``. ``prefill``: ``(method, deployment)`` of the instances that prefill
    (disaggregated runs; default: ``method`` and ``dep``). Returns this method's notes (the command prints them on stderr
    when it prints JSON; its tables print the summary's notes)."""
    s = res.summary
    notes = s.setdefault("notes", [])
    own = [*kv_dtype_notes(kv_dtype, [method])]
    cc = chunk_cache_summary(method, trace)
    if cc is not None:
        s["chunk_cache"] = cc
        by_tier = ", ".join(f"{t} {v:.1%}" for t, v in cc["hit_rate_by_tier"].items())
        own.append(f"{method.label()}: chunk cache ({cc['policy']}) hit rate {cc['hit_rate']:.1%} of "
                   f"{cc['lookups']:,} lookups ({by_tier}); KV loads assumed hidden behind the recompute")
    prefilling = prefill if prefill is not None else (method, dep)
    own += [unused_chunk_cache_note(method, trace), method.mla_note(), None if disaggregated else whole_host_note(method),
            _eager_scores(*prefilling, trace, s.get("config") or {})]
    for n in (*extra_notes, *own):
        if n and n not in notes:
            notes.append(n)
    s["method_spec"] = spec
    s["trace_source"] = trace.source
    s["trace_notice"] = trace.notice
    if trace_spec is not None:
        s["trace_spec"] = trace_spec
    if dep.expert_offload is not None:
        s["expert_offload"] = dep.expert_offload.label()
    if slo is not None:
        s["slo"] = slo_verdict(slo, s)
    return [n for n in own if n]


def _eager_scores(method: KVMethod, dep: Deployment, trace: Trace, config: dict) -> str | None:
    """:func:`eager_scores_note` for the longest prompt the run could admit (prompt + output within the
    model's context), with the run's step budget and the activation reserve its engine profiles (a
    method without eager prefill: None, at no cost). ``dep``/``method``: the side that prefills."""
    if not len(trace) or not method.prefill_scores_bytes(1.0, 0.0):
        return None
    peff, _, fits = admissible(dep, method, trace)  # (the simulators' rule: kvsim.sim.inputs.prepare)
    if not fits.any():
        return None
    budget_tokens, chunked = config.get("max_num_batched_tokens") or 8192, config.get("chunked_prefill", True)
    step = profiling_step_tokens(budget_tokens, chunked, peff, fits)
    reserve = memory_budget(dep, method, max_tokens_per_step=step,
                            max_seqs=config.get("max_num_seqs") or 256).reserve.activation_bytes
    return eager_scores_note(method, float(peff[fits].max()), budget_tokens if chunked else None, reserve)


def check_something_ran(summaries: list[dict], allow_flag: str | None) -> None:
    """A ConfigError when every request of every run was rejected (nothing was simulated: a table of
    dashes is no answer), naming why from the rejection note; ``allow_flag``: how the caller spells
    the long-context switch when it is off (``--allow-long-context``, ``allow_long_context=True``)."""
    if not summaries or not all(s["requests_completed"] == 0 and s["requests_rejected"] == s["requests_total"]
                                for s in summaries):
        return
    why = next((n for n in summaries[0].get("notes", []) if "rejected (all of them)" in n), "")
    hint = f"; or pass {allow_flag}" if allow_flag and "max_context" in why else ""
    raise ConfigError(f"every request was rejected{' by every method' if len(summaries) > 1 else ''}: "
                      f"{why or 'see the notes'}{hint}")

