"""``kvsim estimate``: one configuration (or a side-by-side table of methods)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from kvsim.costmodel.deployment import build_deployment, with_max_context
from kvsim.commands.common import (
    CalibrationOpt, ExpertOffloadOpt, GpuUtilOpt, HwOpt, JsonOpt, KvDtypeOpt, MethodOpt, ModelOpt, TpOpt, WeightDtypeOpt,
    console, fmt_bytes, fmt_num, fmt_s, print_json, split_methods,
)
from kvsim.commands.tables import print_pairs, print_rows
from kvsim.errors import ConfigError

def _parse_batch(batch: str) -> int | str:
    # lazy: CLI start-up
    from kvsim.pricing.estimate import MAX_BATCH

    if batch.strip().lower() == "max":
        return "max"
    try:
        b = int(batch)
    except ValueError:
        raise ConfigError(f"--batch must be a whole number in [1, {MAX_BATCH:,}] or 'max', got '{batch}'") from None
    if not 1 <= b <= MAX_BATCH:
        raise ConfigError(f"--batch must be a whole number in [1, {MAX_BATCH:,}] or 'max', got {batch.strip()}")
    return b


def _check_context(context: int, model, allow_long: bool) -> None:
    """``--context`` within the model's maximum, or beyond it with ``--allow-long-context``
    (:func:`kvsim.pricing.estimate.check_context`)."""
    # lazy: CLI start-up
    from kvsim.pricing.estimate import check_context

    note = check_context(context, model, allow_long, flag="--context", allow="--allow-long-context")
    if note:
        print(f"note: {note}", file=sys.stderr)


def estimate_cmd(
    hw: HwOpt = "a100",
    model: ModelOpt = "llama-3.1-8b",
    method: MethodOpt = ["full"],  # noqa: B006 (typer needs a literal default)
    context: Annotated[Optional[int], typer.Option("--context", min=1, help="tokens in each request's KV cache [default: 4096, or the model's max context if smaller]")] = None,
    allow_long_context: Annotated[bool, typer.Option("--allow-long-context", help="allow --context beyond the model's max context")] = False,
    batch: Annotated[str, typer.Option("--batch", help="concurrent requests, or 'max' for the best-throughput batch that fits in memory and --max-num-seqs")] = "1",
    tp: TpOpt = 1,
    weight_dtype: WeightDtypeOpt = "auto",
    kv_dtype: KvDtypeOpt = "auto",
    gpu_memory_utilization: GpuUtilOpt = 0.9,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens", min=1, max=2**31 - 1, help="prefill chunk / step token budget (vLLM)")] = 8192,
    chunked_prefill: Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill", help="prefill in chunks of --max-num-batched-tokens (vLLM v1 default)")] = True,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", min=1, max=1_000_000, help="engine's max concurrent sequences (sizes the logits reserve)")] = 256,
    calibration: CalibrationOpt = None,
    expert_offload: ExpertOffloadOpt = None,
    reuse: Annotated[str | None, typer.Option("--reuse", help="also price one request with reused or streamed KV: "
                     "cacheblend:chunks=6,chunk_tokens=512,question_tokens=64,recompute_fraction=0.15,tier=host|gpu|ssd or "
                     "cachegen:context_tokens=9400,question_tokens=64,link_gbps=3,level=raw|q8|cachegen|cachegen-max "
                     "(docs/reuse.md)")] = None,
    breakdown: Annotated[bool, typer.Option("--breakdown/--no-breakdown", help="per-component table (single method)")] = True,
    tts: Annotated[str | None, typer.Option("--tts", help="cost per test-time-scaling task in Kinetics eFLOPs instead: "
                                            "'best-of-n=8,prompt=512,gen=16k[,shared=false][,batch=B][,intensity=I]'; "
                                            "budget=C instead of gen= finds the longest generation within C eFLOPs "
                                            "(k = x1024; docs/examples/kinetics.md)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Closed-form estimate: KV bytes/token, max batch, TTFT, TPOT (= ITL), throughput and a breakdown."""
    # lazy: CLI start-up
    from kvsim.pricing.estimate import batch_engine_note, default_context, estimate
    from kvsim.pricing.input_notes import kv_dtype_notes, window_note
    from kvsim.pricing.reuse.answer import reuse_answer
    from kvsim.methods import make_method

    b = _parse_batch(batch)
    dep = build_deployment(hw, model, tp=tp, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                           gpu_memory_utilization=gpu_memory_utilization, calibration=calibration,
                           expert_offload=expert_offload)
    given_context = context is not None
    if context is None:  # (a model of a shorter context, e.g. OPT's 2,048, is priced at its own maximum)
        context, note = default_context(dep.model, flag="--context")
        if note and tts is None:  # (--tts takes its lengths inside)
            print(f"note: {note}", file=sys.stderr)
    _check_context(context, dep.model, allow_long_context)
    if allow_long_context:  # an engine started with that context: its rotary cache, as `simulate` widens it
        dep = with_max_context(dep, context)[0]
    for note in dep.notes:
        print(f"note: {note}", file=sys.stderr)
    specs = split_methods(method)
    methods = []
    for spec in specs:  # every method is checked before any is priced
        try:
            methods.append(make_method(spec, dep))
        except ConfigError as err:
            if len(specs) == 1:
                raise
            print(f"note: skipping {spec}: {err}", file=sys.stderr)  # e.g. mla on a non-MLA model under --method all
    for note in [*kv_dtype_notes(kv_dtype, methods), window_note(dep.model)]:
        if note:
            print(f"note: {note}", file=sys.stderr)
    if tts is not None:
        if reuse is not None:
            raise ConfigError("--tts and --reuse are separate answers: give one of them")
        if given_context or batch.strip() != "1":
            raise ConfigError("--context and --batch do not apply with --tts: give prompt=, gen= and batch= "
                              "inside --tts (e.g. --tts best-of-n=8,prompt=512,gen=16k)")
        _tts(dep, methods, tts, as_json)
        return
    reused = reuse_answer(dep, reuse, allow_long_context) if reuse is not None else None  # a bad spec fails before any pricing
    if reused is not None and reused["note"]:
        print(f"note: {reused['note']}", file=sys.stderr)
    results = [estimate(dep, m, context, b, max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
                        chunked_prefill=chunked_prefill) for m in methods]
    engine_note = batch_engine_note(b, max_num_seqs, ("--batch", "--max-num-seqs"))
    if engine_note:  # (in each answer's notes, so --json carries it too)
        for r in results:
            r.notes.append(engine_note)
    for r in results:
        for note in r.notes:
            print(f"note: {r.method}: {note}", file=sys.stderr)
    if as_json:
        print_json([_answer(r) | ({"reuse": reused} if reused is not None else {}) for r in results])
        return
    if len(results) == 1:
        _print_one(results[0], breakdown)
    else:
        _print_table(results)
    if reused is not None:
        _print_reuse(reused)


def _print_reuse(a: dict) -> None:
    """The ``--reuse`` answer: TTFT of one request and its baselines (priced with full attention)."""
    # lazy: CLI start-up
    from rich.table import Table

    con = console()
    p = a["params"]
    if a["kind"] == "cacheblend":
        t = Table(title=f"CacheBlend: {p['chunks']} chunks x {p['chunk_tokens']} tokens from {p['tier']}, "
                        f"question {p['question_tokens']}, r = {p['recompute_fraction']:g}", show_header=False)
        t.add_column("quantity")
        t.add_column("value", justify="right")
        for k, v in (("load per layer", fmt_s(a["load_s_per_layer"])),
                     (f"first {a['full_layers']} layer(s): all tokens", fmt_s(a["full_layer_s"]) + " each"),
                     ("recompute per layer", fmt_s(a["compute_s_per_layer"]) + ("" if a["load_hidden"] else " (load-bound)")),
                     ("TTFT CacheBlend", fmt_s(a["ttft_s"])),
                     ("TTFT full recompute", f"{fmt_s(a['full_recompute_s'])} ({a['speedup_vs_recompute']:.2f}x)"),
                     ("TTFT prefix caching", f"{fmt_s(a['prefix_caching_s'])} ({a['speedup_vs_prefix']:.2f}x)")):
            t.add_row(k, v)
        con.print(t)
        return
    t = Table(title=f"CacheGen: {p['context_tokens']:,} context tokens + {p['question_tokens']} new, level {p['level']} "
                    f"({a['bits_per_element']:.2f} bits/element, {fmt_bytes(a['encoded_bytes'])}) at {p['link_gbps']:g} Gbit/s: "
                    f"TTFT {fmt_s(a['ttft_s'])} ({a['choice']}; recompute {fmt_s(a['recompute_s'])})")
    sweep = a["ttft_vs_bandwidth"]
    t.add_column("Gbit/s", justify="right")
    for lv in sweep["ttft_s_by_level"]:
        t.add_column(f"TTFT {lv}", justify="right")
    for i, g in enumerate(sweep["link_gbps"]):
        t.add_row(f"{g:g}", *(fmt_s(v[i]) for v in sweep["ttft_s_by_level"].values()))
    con.print(t)


def _answer(r) -> dict:
    """The JSON of one estimate (:func:`kvsim.pricing.estimate.answered`)."""
    from kvsim.pricing.estimate import answered  # lazy: CLI start-up

    return answered(r).model_dump()


def _limit(n: int | None) -> str:
    return "not limited by memory" if n is None else f"{n:,}"


def _print_one(r, breakdown: bool) -> None:
    con = console()
    no_fit = "does not fit in memory"
    rows = [
        ("KV bytes/token (GPU, per GPU)", fmt_num(r.kv_bytes_per_token_gpu, 0)),
        ("KV bytes/token (host)", fmt_num(r.kv_bytes_per_token_host, 0)),
        ("max batch per replica (GPU / host)", f"{_limit(r.max_batch)} ({_limit(r.max_batch_gpu)} / {_limit(r.max_batch_host)})"),
        ("TTFT (one request)", no_fit if r.max_batch == 0 else fmt_s(r.ttft_s)),
        ("TPOT = ITL at batch", fmt_s(r.tpot_s) if r.fits else no_fit),
        ("throughput per replica (decode tok/s)", fmt_num(r.throughput_tok_s) if r.fits else no_fit),
        ("GPU memory per GPU", f"{fmt_bytes(r.memory_gpu_bytes)} of {fmt_bytes(r.gpu_requested_bytes)} requested "
         f"(weights {fmt_bytes(r.weights_bytes_per_gpu)}, KV {fmt_bytes(r.kv_gpu_bytes)}, "
         f"engine reserve {fmt_bytes(r.activation_reserve_bytes)})"),
        ("host memory", fmt_bytes(r.memory_host_bytes)
         + (f" (experts {fmt_bytes(r.expert_host_bytes)})" if r.expert_host_bytes else "")),
    ]
    if r.expert_offload:
        rows.append(("expert offload", r.expert_offload))
    if not r.fits:
        rows.append(("does not fit", r.reason or ""))
    print_pairs(con, f"{r.model} on {r.hw} - {r.method}, context {r.context:,}, batch {r.batch:,}", rows)
    if breakdown and r.breakdown and r.fits:
        print_rows(con, "breakdown", ("phase", "component", "device", "time", "share", "bound by"),
                   [(row.phase, row.component, row.device, fmt_s(row.seconds), f"{row.share * 100:.1f}%", row.bound)
                    for row in r.breakdown], left=("phase", "component", "device", "bound by"))


#: column headers of the method comparison (vLLM metric names: TTFT, TPOT = ITL in steady decode)
TABLE_HEADERS = ("method", "KV B/tok GPU", "KV B/tok host", "max batch", "batch", "TTFT", "TPOT", "tok/s", "GPU mem",
                 "host mem", "note")


def _print_table(results) -> None:
    r0 = results[0]
    rows = []
    for r in results:
        ok = r.fits
        rows.append((r.method, fmt_num(r.kv_bytes_per_token_gpu, 0), fmt_num(r.kv_bytes_per_token_host, 0),
                     "-" if r.max_batch is None else str(r.max_batch), str(r.batch),
                     "-" if r.max_batch == 0 else fmt_s(r.ttft_s), fmt_s(r.tpot_s) if ok else "-",
                     fmt_num(r.throughput_tok_s) if ok else "-", fmt_bytes(r.memory_gpu_bytes),
                     fmt_bytes(r.memory_host_bytes), "" if ok else f"does not fit: {r.reason}"))
    print_rows(console(), f"{r0.model} on {r0.hw}, context {r0.context:,}", TABLE_HEADERS, rows, left=("note",))


def _tts(dep, methods, spec: str, as_json: bool) -> None:
    """``--tts``: one row per method of :func:`kvsim.pricing.tts.task_cost`."""
    # lazy: CLI start-up
    from kvsim.pricing.tts import affordable_gen_tokens, intensity_flops_per_byte, off_gpu_note, task_cost, task_notes
    from kvsim.pricing.tts_spec import parse_task

    task, batch, intensity, budget = parse_task(spec)
    limit = dep.model.max_context_tokens
    for note in task_notes(dep, task if budget is None else None):
        print(f"note: {note}", file=sys.stderr)
    rows = []
    for m in methods:
        t = task
        if budget is not None:  # the longest generation within the budget replaces gen
            g = affordable_gen_tokens(dep, m, task, budget, batch=batch, intensity=intensity)
            if g == 0:
                why = (f"the prompt ({task.prompt_tokens:,} tokens) leaves no room in {dep.model.name}'s context of {limit:,}"
                       if task.prompt_tokens >= limit else
                       f"{budget:.3g} eFLOPs does not buy one generated token per sample after the prompt's prefill")
                print(f"note: {m.label()}: gen tokens 0: {why}", file=sys.stderr)
                rows.append({"hw": dep.system.name, "model": dep.model.name, "method": m.label(), **task.model_dump(),
                             "gen_tokens": 0, "budget_eflops": budget, "batch": batch})
                continue
            t = task.model_copy(update={"gen_tokens": g})
            if g == dep.model.max_context_tokens - task.prompt_tokens:
                print(f"note: {m.label()}: the budget affords more than {dep.model.name}'s context of "
                      f"{dep.model.max_context_tokens:,} tokens; gen capped at {g:,}", file=sys.stderr)
        c = task_cost(dep, m, t, batch=batch, intensity=intensity)
        if c.off_gpu:
            print(f"note: {off_gpu_note(m.label())}", file=sys.stderr)
        rows.append({"hw": dep.system.name, "model": dep.model.name, "method": m.label(), **t.model_dump(),
                     "budget_eflops": budget, "batch": batch, **c.numbers()})
    if as_json:
        print_json(rows)
        return
    gen = f"the longest generation within {budget:.3g} eFLOPs" if budget is not None else f"{task.gen_tokens:,} tokens"
    title = (f"{dep.model.name} on {dep.system.name}: {task.samples} sample(s) x {gen} after "
             f"{task.prompt_tokens:,} (I = {intensity_flops_per_byte(dep) if intensity is None else intensity:g} FLOPs/B, "
             f"{'weights amortized' if batch is None else f'batch {batch}'})")
    headers = ("method", "gen tokens", "prefill eFLOPs", "linear eFLOPs", "attention eFLOPs", "total eFLOPs",
               "attention share", "attn / linear", "roofline s")
    table = []
    for r in rows:
        if r["gen_tokens"] == 0:
            table.append((r["method"], "0", *["-"] * 7))
            continue
        table.append((r["method"], f"{r['gen_tokens']:,}", f"{r['prefill_eflops']:.3e}", f"{r['linear_eflops']:.3e}",
                      f"{r['attention_eflops']:.3e}", f"{r['total_eflops']:.3e}", f"{r['attention_share'] * 100:.1f}%",
                      f"{r['attention_to_linear']:.2f}", fmt_s(r["roofline_s"])))
    print_rows(console(), title, headers, table, left=("method",))
