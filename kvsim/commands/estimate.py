"""``kvsim estimate``: one configuration (or a side-by-side table of methods)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from kvsim.costmodel.deployment import build_deployment
from kvsim.commands.common import (
    CalibrationOpt, GpuUtilOpt, HwOpt, JsonOpt, KvDtypeOpt, MethodOpt, ModelOpt, TpOpt, WeightDtypeOpt,
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
    (up to MAX_CONTEXT_TOKENS); a one-line ConfigError otherwise."""
    # lazy: CLI start-up
    from kvsim.pricing.estimate import MAX_CONTEXT_TOKENS

    if context > MAX_CONTEXT_TOKENS:
        raise ConfigError(f"--context must be at most {MAX_CONTEXT_TOKENS:.0e} tokens, got {context}")
    if context > model.max_context_tokens:
        if not allow_long:
            raise ConfigError(f"--context {context} exceeds {model.name}'s max context of {model.max_context_tokens:,} "
                              "tokens; add --allow-long-context to price it anyway")
        print(f"note: --context {context} exceeds {model.name}'s max context {model.max_context_tokens:,} "
              "(--allow-long-context)", file=sys.stderr)


def estimate_cmd(
    hw: HwOpt = "a100",
    model: ModelOpt = "llama-3.1-8b",
    method: MethodOpt = ["full"],  # noqa: B006 (typer needs a literal default)
    context: Annotated[int, typer.Option("--context", min=1, help="tokens in each request's KV cache")] = 4096,
    allow_long_context: Annotated[bool, typer.Option("--allow-long-context", help="allow --context beyond the model's max context")] = False,
    batch: Annotated[str, typer.Option("--batch", help="concurrent requests, or 'max' for the best-throughput batch")] = "1",
    tp: TpOpt = 1,
    weight_dtype: WeightDtypeOpt = "auto",
    kv_dtype: KvDtypeOpt = "auto",
    gpu_memory_utilization: GpuUtilOpt = 0.9,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens", min=1, max=2**31 - 1, help="prefill chunk / step token budget (vLLM)")] = 8192,
    chunked_prefill: Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill", help="prefill in chunks of --max-num-batched-tokens (vLLM v1 default)")] = True,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs", min=1, max=1_000_000, help="engine's max concurrent sequences (sizes the logits reserve)")] = 256,
    calibration: CalibrationOpt = None,
    breakdown: Annotated[bool, typer.Option("--breakdown/--no-breakdown", help="per-component table (single method)")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Closed-form estimate: KV bytes/token, max batch, TTFT, TPOT (= ITL), throughput and a breakdown."""
    # lazy: CLI start-up
    from kvsim.pricing.estimate import estimate
    from kvsim.methods import make_method

    b = _parse_batch(batch)
    dep = build_deployment(hw, model, tp=tp, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                           gpu_memory_utilization=gpu_memory_utilization, calibration=calibration)
    _check_context(context, dep.model, allow_long_context)
    chunk = max_num_batched_tokens if chunked_prefill else None
    specs = split_methods(method)
    methods = []
    for spec in specs:  # every method is checked before any is priced
        try:
            methods.append(make_method(spec, dep))
        except ConfigError as err:
            if len(specs) == 1:
                raise
            print(f"note: skipping {spec}: {err}", file=sys.stderr)  # e.g. mla on a non-MLA model under --method all
    results = [estimate(dep, m, context, b, max_num_batched_tokens=chunk, max_num_seqs=max_num_seqs) for m in methods]
    if as_json:
        print_json([_answer(r) for r in results])
        return
    if len(results) == 1:
        _print_one(results[0], breakdown)
    else:
        _print_table(results)


def _answer(r) -> dict:
    """The JSON of one estimate: latencies of a batch that does not fit are not answers (null;
    ``reason`` says why), a request that does not fit alone has no TTFT either."""
    d = r.model_dump()
    if not r.fits:
        d.update(tpot_s=None, throughput_tok_s=None, breakdown=[])
        if r.max_batch == 0:
            d["ttft_s"] = None
    return d


def _limit(n: int | None) -> str:
    return "not limited by memory" if n is None else str(n)


def _print_one(r, breakdown: bool) -> None:
    con = console()
    no_fit = "does not fit in memory"
    rows = [
        ("KV bytes/token (GPU, per GPU)", fmt_num(r.kv_bytes_per_token_gpu, 0)),
        ("KV bytes/token (host)", fmt_num(r.kv_bytes_per_token_host, 0)),
        ("max batch (GPU / host)", f"{_limit(r.max_batch)} ({_limit(r.max_batch_gpu)} / {_limit(r.max_batch_host)})"),
        ("TTFT (one request)", no_fit if r.max_batch == 0 else fmt_s(r.ttft_s)),
        ("TPOT = ITL at batch", fmt_s(r.tpot_s) if r.fits else no_fit),
        ("throughput (decode tok/s)", fmt_num(r.throughput_tok_s) if r.fits else no_fit),
        ("GPU memory per GPU", f"{fmt_bytes(r.memory_gpu_bytes)} of {fmt_bytes(r.gpu_requested_bytes)} requested "
         f"(weights {fmt_bytes(r.weights_bytes_per_gpu)}, KV {fmt_bytes(r.kv_gpu_bytes)}, "
         f"engine reserve {fmt_bytes(r.activation_reserve_bytes)})"),
        ("host memory", fmt_bytes(r.memory_host_bytes)),
    ]
    if not r.fits:
        rows.append(("does not fit", r.reason or ""))
    print_pairs(con, f"{r.model} on {r.hw} - {r.method}, context {r.context:,}, batch {r.batch}", rows)
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
