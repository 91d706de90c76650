"""``kvsim validate memory``: vLLM start-up logs vs kvsim's engine memory (thin).

Exit codes: 0 every log's KV cache size within ``--tolerance``; 1 bad input (one ``error:``
line); 3 some log beyond ``--tolerance``.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from kvsim.commands.common import console
from kvsim.commands.tables import print_rows
from kvsim.errors import ConfigError

EXIT_BEYOND_TOLERANCE = 3


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if unit == "tokens" else f"{value:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def memory_cmd(
    logs: Annotated[list[str], typer.Argument(help="vLLM server start-up log(s), one engine each (INFO lines; DEBUG lines add the profiling terms)")],
    hw: Annotated[str, typer.Option("--hw", help="system name/alias or YAML the logs ran on")] = ...,
    model: Annotated[Optional[str], typer.Option("--model", help="model name/alias, YAML or HF config.json (default: the log's model, by catalog alias)")] = None,
    weight_dtype: Annotated[Optional[str], typer.Option("--weight-dtype", help="weight dtype when the log's quantization method does not say it (W8A8: int8, W4A16: int4)")] = None,
    max_num_seqs: Annotated[Optional[int], typer.Option("--max-num-seqs", min=1, max=1_000_000, help="vLLM max_num_seqs (replaces the log's, with a note; needed when the log does not state it)")] = None,
    max_num_batched_tokens: Annotated[Optional[int], typer.Option("--max-num-batched-tokens", min=1, max=2**31 - 1, help="vLLM max_num_batched_tokens (replaces the log's, with a note; needed when the log does not state it)")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, max=1.0, help="largest |kvsim / vLLM - 1| of the KV cache size in tokens, a fraction (0.05 = 5 %)")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """A vLLM start-up log's memory (weights, activation peak, non-torch, KV cache) vs kvsim's for the same settings."""
    # lazy: CLI start-up
    from kvsim.validate.memory_check import check_memory
    from kvsim.validate.vllm_log import parse_vllm_log

    results = []
    for path in logs:
        r = check_memory(parse_vllm_log(path), hw, model=model, weight_dtype=weight_dtype,
                         max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
        kv = r["terms"][-1]
        if kv.vllm is None:
            raise ConfigError(f"{path}: no 'GPU KV cache size: N tokens' line: the engine did not finish its start-up in this log")
        r["within_tolerance"] = abs(kv.error) <= tolerance
        results.append(r)
    if as_json:
        out = [{"log": r["log"], "settings": r["settings"], "notes": r["notes"], "within_tolerance": r["within_tolerance"],
                "terms": [{"name": t.name, "unit": t.unit, "vllm": t.vllm, "kvsim": t.kvsim, "error": t.error} for t in r["terms"]]}
               for r in results]
        sys.stdout.write(json.dumps({"tolerance": tolerance, "logs": out}, indent=2) + "\n")
    else:
        con = console()
        for r in results:
            s = r["settings"]
            title = (f"{r['log']}: {s['model']} on {s['hw']}, TP {s['tp']}, weights {s['weight_dtype']}, KV {s['kv_dtype']}, "
                     f"util {s['gpu_memory_utilization']}, {s['max_num_batched_tokens']} tokens / {s['max_num_seqs']} seqs "
                     f"(vLLM {s['vllm_version']})")
            rows = [[t.name, t.unit, _fmt(t.vllm, t.unit), _fmt(t.kvsim, t.unit), _pct(t.error)] for t in r["terms"]]
            print_rows(con, title, ["term", "unit", "vLLM", "kvsim", "error"], rows, left=["term", "unit"])
            for n in r["notes"]:
                con.print(f"note: {n}", highlight=False, soft_wrap=True)
        bad = [r for r in results if not r["within_tolerance"]]
        con.print(f"{len(results) - len(bad)} of {len(results)} log(s): KV cache size within {tolerance:.1%} of vLLM's",
                      highlight=False)
    if any(not r["within_tolerance"] for r in results):
        raise typer.Exit(EXIT_BEYOND_TOLERANCE)
