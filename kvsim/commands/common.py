"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from kvsim.errors import ConfigError
from kvsim.jsonutil import dumps_strict

HwOpt = Annotated[str, typer.Option("--hw", help="system name/alias (a100, h100, b200, mi300x, l4, ...; `kvsim list hardware`) or a system/GPU YAML file")]
ModelOpt = Annotated[str, typer.Option("--model", help="model name/alias, a kvsim model YAML, a Hugging Face config.json (or its folder), or org/name from the local Hugging Face cache")]
MethodOpt = Annotated[
    list[str],
    typer.Option("--method", help="KV method(s): name, name:key=value,..., a comma list, or 'all'"),
]
TpOpt = Annotated[int, typer.Option("--tp", min=1, help="tensor-parallel GPUs per replica")]
WeightDtypeOpt = Annotated[str, typer.Option("--weight-dtype", help="auto (bf16, or fp16 on GPUs without bf16 such as V100), bf16, fp16, fp8, int8, fp4, int4, int2, fp32, tf32 (fp8/int8/fp4 use tensor cores of that type where the GPU has them, else dequantize); vLLM spellings too (bfloat16, float16, fp8_e4m3)")]
KvDtypeOpt = Annotated[str, typer.Option("--kv-dtype", help="dtype of uncompressed KV: auto (= activation dtype), bf16, fp16, fp8, int8 (also fp32; vLLM spellings too: bfloat16, fp8_e4m3); 2/4-bit KV is --method kivi")]
GpuUtilOpt = Annotated[float, typer.Option("--gpu-memory-utilization", min=0.01, max=1.0, help="fraction of GPU memory the engine may use (vLLM default 0.9)")]
ReserveFullPromptOpt = Annotated[bool, typer.Option(
    "--reserve-full-prompt", help="admit a waiting request only when the KV blocks of its whole prompt fit, not just "
    "its first chunk's (vLLM's scheduler_reserve_full_isl, on by default since vLLM PR #37307, 2026-03)")]
WatermarkOpt = Annotated[Optional[float], typer.Option("--watermark", help="vLLM v0 free-block watermark: admissions and swap-ins keep this fraction of GPU KV blocks free (default 0.01 with --no-chunked-prefill, 0 with chunked prefill)")]
KvOffloadOpt = Annotated[Optional[str], typer.Option("--kv-offload", help="KV tiers below the GPU prefix cache (vLLM v1 CPU offloading), per replica: host=64GiB[,nvme=1TiB][,drive=pm9a3][,load=async|sync: loads beside the steps (vLLM v1, default) or in the admitting step]; off by default (docs/kv-tiers.md)")]
ExpertOffloadOpt = Annotated[Optional[str], typer.Option("--expert-offload", help="MoE: routed experts in host memory with a GPU expert cache, KEY=VALUE,...: cache=N (experts per layer; default 2 x top-k) or cache-bytes=B, miss=fetch|cpu, overlap=no|yes, and hit-rate=H | routing=FILE (LRU over a routing trace) | sch=4|16|64|256 (published, default 16); docs/expert-offload.md")]
CalibrationOpt = Annotated[Optional[str], typer.Option("--calibration", help="calibration YAML from `kvsim validate calibrate`")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON to stdout")]


def split_methods(values: list[str]) -> list[str]:
    """``--method`` values as method specs (:func:`kvsim.methods.split_methods`)."""
    from kvsim.methods import split_methods as split  # lazy: CLI start-up

    return split(values)


def print_json(obj) -> None:
    """Strict JSON on stdout: never NaN or Infinity."""
    sys.stdout.write(dumps_strict(obj, indent=2) + "\n")




def fmt_bytes(b: float | None) -> str:
    """Decimal units (GB = 1e9 B), as vendors and the papers print them."""
    if b is None:
        return "-"
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(b) >= k:
            return f"{b / k:.2f} {unit}"
    return f"{b:.0f} B"


def fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:,.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


#: summary key -> vLLM benchmark metric name (tbt_s holds the pooled token gaps: ITL)
METRIC_NAMES = {"ttft_s": "TTFT", "tpot_s": "TPOT", "tbt_s": "ITL", "itl_s": "ITL", "e2e_s": "E2EL", "e2el_s": "E2EL"}


def metric_name(key: str) -> str:
    """``"tbt_s"`` -> ``"ITL"``, ``"e2e_s"`` -> ``"E2EL"``: vLLM's names in every table."""
    return METRIC_NAMES.get(key, key.removesuffix("_s").upper())


def fmt_num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def console(stderr: bool = False):
    """A rich console as wide as the terminal (or ``COLUMNS``); when output is not a terminal
    (pipes, files, CI) and ``COLUMNS`` is unset, 160 columns so that comparison tables stay
    tables (:mod:`kvsim.commands.tables` prints them vertically when they do not fit)."""
    # lazy: CLI start-up
    from rich.console import Console

    con = Console(stderr=stderr)
    if not con.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        con = Console(stderr=stderr, width=160)
    return con


def check_watermark(value: float | None) -> float | None:
    """``--watermark`` as given, or a one-line ConfigError unless ``0 <= value < 1`` (NaN included)."""
    if value is not None and not 0 <= value < 1:  # NaN fails both comparisons
        raise ConfigError(f"--watermark must be a fraction in [0, 1), got {value}")
    return value



# ----- trace files (kvsim.traces; formats and examples in docs/traces.md) -----
TraceOpt = Annotated[str, typer.Option("--trace", help="trace name (`kvsim trace list`), synthetic spec NAME:key=value,..., or file")]
RateOpt = Annotated[Optional[float], typer.Option("--rate", help="mean arrival rate, requests/s (default: the trace's own): a file's arrivals are rescaled to exactly this rate over its span; a synthetic trace draws its arrivals at this rate, so the rate of the drawn requests differs by chance; the test-time-scaling generators (best-of-n, tree, cot) take it as tasks/s")]
TimeScaleOpt = Annotated[Optional[float], typer.Option("--time-scale", help="divide arrival times by this factor (100 = 100x faster)")]
NumRequestsOpt = Annotated[Optional[int], typer.Option("--num-requests", "-n", min=1, help="first N requests (synthetic: how many)")]
TraceModelOpt = Annotated[Optional[str], typer.Option("--trace-model", help="BurstGPT rows of this model only: ChatGPT or GPT-4")]
LogTypeOpt = Annotated[Optional[str], typer.Option("--log-type", help="BurstGPT rows of this log type only: conversation or API")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="seed of synthetic traces")]
MaxPromptOpt = Annotated[Optional[int], typer.Option("--max-prompt-tokens", min=1, help="clip prompts to this length")]
MaxOutputOpt = Annotated[Optional[int], typer.Option("--max-output-tokens", min=1, help="clip outputs to this length")]
TraceFormatOpt = Annotated[Optional[str], typer.Option("--trace-format", help="trace file format: auto (default: from the header or content), burstgpt, azure, mooncake, vidur, vllm-bench, sharegpt, csv, jsonl, json (`kvsim trace formats`)")]
ColumnsOpt = Annotated[Optional[str], typer.Option("--columns", help="generic CSV/JSONL/JSON: which column holds what, e.g. arrival=ts,prompt=input_len,output=output_len[,session=conv_id]")]
TimeUnitOpt = Annotated[Optional[str], typer.Option("--time-unit", help="generic formats: unit of the arrival column: s (default), ms, us, ns, or iso (date-times)")]
ArrivalsOpt = Annotated[Optional[str], typer.Option("--arrivals", help="synthetic arrivals for a file's rows (lengths-only files need them): poisson:rate=4, gamma:rate=4,cv=2, constant:rate=4 (seed: --seed or seed=)")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="a bad trace row is an error (default: dropped, counted by kind and reported)")]
TokenizerOpt = Annotated[Optional[str], typer.Option("--tokenizer", help="ShareGPT: a local tokenizer.json for exact token counts (optional package tokenizers); default: ceil(characters / 4), flagged")]


# ----- SLOs (kvsim.slo): one meaning in every command; durations via kvsim.durations -----
DURATION_HELP = "50ms, 2s, 1.5min; a bare number is seconds"
SloTtftOpt = Annotated[Optional[str], typer.Option("--slo-ttft", metavar="DURATION", help=f"SLO: each request's time to first token, judged at --percentile; simulate: also goodput ({DURATION_HELP})")]
SloTpotOpt = Annotated[Optional[str], typer.Option("--slo-tpot", metavar="DURATION", help="SLO: each request's mean time per output token (vLLM TPOT), judged at --percentile; simulate: also goodput")]
SloItlOpt = Annotated[Optional[str], typer.Option("--slo-itl", metavar="DURATION", help="SLO: inter-token latency, every gap between tokens of all requests pooled (vLLM ITL), judged at --percentile")]
PercentileOpt = Annotated[str, typer.Option("--percentile", help="percentile the SLOs judge: p50, p90, p99")]
SloTbtOpt = Annotated[Optional[str], typer.Option("--slo-tbt", hidden=True, help="deprecated: --slo-tpot in simulate, --slo-itl in plan")]
TbtMetricOpt = Annotated[Optional[str], typer.Option("--tbt-metric", hidden=True, help="deprecated: with --slo-tbt, tbt (= --slo-itl) or tpot")]


def resolve_slo(command: str, ttft: str | None, tpot: str | None, itl: str | None, percentile: str,
                tbt: str | None = None, tbt_metric: str | None = None):
    """The :class:`kvsim.slo.SLO` of the SLO flags (None: none given). The hidden ``--slo-tbt`` of
    earlier versions keeps the meaning it had in ``command`` (``simulate``: each request's mean,
    now ``--slo-tpot``; ``plan``: pooled token gaps, now ``--slo-itl``, or ``--slo-tpot`` with
    ``--tbt-metric tpot``) so that scripts give the same numbers, with a warning naming the new flag."""
    # lazy: CLI start-up
    from kvsim.slo import legacy_tbt_flag, parse_slo

    legacy = legacy_tbt_flag(command, tbt, tbt_metric)
    if legacy is not None:
        metric, text = legacy
        new = f"--slo-{metric}"
        if (tpot if metric == "tpot" else itl) is not None:
            raise ConfigError(f"--slo-tbt and {new} give the same bound; drop --slo-tbt")
        print(f"warning: --slo-tbt is deprecated; in `kvsim {command}` it means {new} {text} (use that). "
              "--slo-tpot bounds each request's mean time per output token, --slo-itl the pooled token gaps",
              file=sys.stderr)
        tpot, itl = (text, itl) if metric == "tpot" else (tpot, text)
    slo = parse_slo(ttft, tpot, itl, percentile)
    for note in bare_seconds_notes(ttft=ttft, tpot=tpot, itl=itl):
        print(f"note: {note}", file=sys.stderr)
    return slo


#: a bare SLO number at or above this many seconds is more likely milliseconds written without the unit
_BARE_SECONDS_SUSPECT = {"ttft": 120.0, "tpot": 5.0, "itl": 5.0}


def bare_seconds_notes(**bounds) -> list[str]:
    """Notes for SLO bounds written as bare numbers (seconds) that look like milliseconds: ``--slo-itl
    100`` is 100 s, a bound no token gap comes near, where ``100ms`` was likely meant."""
    notes = []
    for metric, text in bounds.items():
        if text is None:
            continue
        try:
            value = float(str(text).strip())
        except ValueError:  # (it has a unit)
            continue
        if value >= _BARE_SECONDS_SUSPECT[metric]:
            notes.append(f"--slo-{metric} {text}: a bare number is seconds ({value:g} s); write {text}ms for milliseconds")
    return notes
