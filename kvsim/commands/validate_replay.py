"""``kvsim validate replay``: a real run's per-request log vs kvsim's simulation of it (thin).

Exit codes: 0 every checked statistic within ``--tolerance``; 1 bad input (one ``error:``
line); 3 some checked statistic beyond ``--tolerance``.
"""

from __future__ import annotations

import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from kvsim.commands.common import console, fmt_s, metric_name
from kvsim.commands.tables import print_rows
from kvsim.errors import ConfigError

EXIT_BEYOND_TOLERANCE = 3
#: Above this a --tolerance is almost surely a percentage typed as a number (25 for 0.25).
MAX_TOLERANCE = 1.0


class LogFormat(str, Enum):
    auto = "auto"
    jsonl = "jsonl"
    csv = "csv"
    bench = "bench"


def _check_out(out: str, inputs: list[str | None], force: bool) -> None:
    """Before the replay: --out is writable, is none of the inputs, and replaces only an earlier replay result."""
    # lazy: CLI start-up
    from kvsim.fileio import OutputError, check_output_file
    from kvsim.validate.replay import KIND

    p = check_output_file(out, "--out")
    for i in inputs:
        if i and Path(i).exists() and p.exists() and p.resolve() == Path(i).resolve():
            raise OutputError(f"--out {p}: is an input of this command; choose another file")
    if p.exists() and not force:
        try:
            ours = json.loads(p.read_text(encoding="utf-8")).get("kind") == KIND
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise OutputError(f"--out {p}: exists and is not a `kvsim validate replay` result; move it away or pass --force")


def _stats(check: str) -> tuple[str, ...]:
    # lazy: CLI start-up
    from kvsim.validate.replay import STATS

    items = tuple(dict.fromkeys(x.strip() for x in check.split(",") if x.strip()))  # (repeats once)
    bad = [x for x in items if x not in STATS]
    if bad or not items:
        raise ConfigError(f"--check: unknown statistic {', '.join(bad) or '(none)'} (choices: {', '.join(STATS)})")
    return items


def replay_cmd(
    log: Annotated[str, typer.Argument(help="per-request log: vLLM stats JSONL/JSON/CSV, or `vllm bench serve --save-detailed` JSON")],
    meta: Annotated[Optional[str], typer.Option("--meta", help="JSON of engine settings (keys as the flags, vLLM names); flags win")] = None,
    hw: Annotated[Optional[str], typer.Option("--hw", help="system name/alias or YAML the run used")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="model name/alias, YAML or HF config.json")] = None,
    tp: Annotated[Optional[int], typer.Option("--tp", help="tensor-parallel GPUs (vLLM tensor_parallel_size)")] = None,
    max_num_seqs: Annotated[Optional[int], typer.Option("--max-num-seqs", min=1, max=1_000_000, help="vLLM max_num_seqs of the run")] = None,
    max_num_batched_tokens: Annotated[Optional[int], typer.Option("--max-num-batched-tokens", min=1, max=2**31 - 1, help="vLLM max_num_batched_tokens of the run")] = None,
    block_size: Annotated[Optional[int], typer.Option("--block-size", help="KV block size, tokens (default 16)")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option("--gpu-memory-utilization", help="default 0.9")] = None,
    prefix_caching: Annotated[Optional[bool], typer.Option("--prefix-caching/--no-prefix-caching", help="default on")] = None,
    chunked_prefill: Annotated[Optional[bool], typer.Option("--chunked-prefill/--no-chunked-prefill", help="default on")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="weight dtype (default auto)")] = None,
    kv_cache_dtype: Annotated[Optional[str], typer.Option("--kv-cache-dtype", help="KV dtype (default auto)")] = None,
    calibration: Annotated[Optional[str], typer.Option("--calibration", help="calibration YAML")] = None,
    fmt: Annotated[LogFormat, typer.Option("--format", case_sensitive=False, help="log format (auto: detected from the content)")] = LogFormat.auto,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="largest |predicted/measured - 1| of a checked statistic, a fraction (0.25: ±25%)")] = 0.25,
    time_unit: Annotated[str, typer.Option("--time-unit", help="unit of the log's times: s, ms, or auto (seconds; refuses a log whose times look like ms)")] = "auto",
    check: Annotated[str, typer.Option("--check", help="statistics checked against --tolerance, of mean,p50,p90,p99 (each metric)")] = "mean,p50",
    arrival_seed: Annotated[int, typer.Option("--arrival-seed", min=0, help="seed of synthetic arrivals (bench JSON without start_times)")] = 0,
    strict: Annotated[bool, typer.Option("--strict", help="refuse a log with any bad row (default: drop and count them)")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help="write the result JSON here")] = None,
    force: Annotated[bool, typer.Option("--force", help="--out: replace a file that is not a replay result")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Replay a real serving run's requests through kvsim; TTFT/TPOT/ITL/E2E measured vs predicted, signed errors."""
    # lazy: CLI start-up
    from kvsim.validate.replay import TIME_UNITS, read_run_log, replay, to_json_text
    from kvsim.validate.replay_settings import merge_settings, read_meta

    stats = _stats(check)
    if not math.isfinite(tolerance) or tolerance > MAX_TOLERANCE:
        raise ConfigError(f"--tolerance {tolerance:g}: a fraction of at most {MAX_TOLERANCE:g} (0.25 means ±25%)")
    if time_unit not in TIME_UNITS:
        raise ConfigError(f"--time-unit {time_unit}: choose one of {', '.join(TIME_UNITS)}")
    if out is not None:
        _check_out(out, [log, meta], force)
    flags = {"hw": hw, "model": model, "tp": tp, "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
             "block_size": block_size, "gpu_memory_utilization": gpu_memory_utilization,
             "enable_prefix_caching": prefix_caching, "enable_chunked_prefill": chunked_prefill, "dtype": dtype,
             "kv_cache_dtype": kv_cache_dtype, "calibration": calibration}
    settings, origin = merge_settings(flags, read_meta(meta) if meta else None, meta)
    if out is not None:  # the specs the settings name (flags or meta) are inputs too: a system YAML, a model
        # config.json (or the one in a model folder), a calibration
        specs = [settings.hw, settings.model, str(Path(settings.model) / "config.json"), settings.calibration]
        _check_out(out, [log, meta, *specs], force)
    run = read_run_log(log, fmt.value, seed=arrival_seed, strict=strict, time_unit=time_unit)
    result = replay(run, settings, origin, check_stats=stats, tolerance=tolerance)
    if not result["sim"]["requests_completed"]:
        raise ConfigError(f"{log}: kvsim completed none of the {len(run)} requests: {(result['notes'] or ['none admitted'])[0]}")
    result["command"] = "kvsim validate " + " ".join(sys.argv[sys.argv.index("validate") + 1:] if "validate" in sys.argv else ["replay"])
    chk = result["check"]
    if not chk["checked"]:
        raise ConfigError(f"{log}: none of the checked statistics can be computed ({', '.join(chk['unchecked'])}); nothing to compare")
    text = to_json_text(result)
    if out is not None:
        # lazy: CLI start-up
        from kvsim.fileio import atomic_write

        atomic_write(out, text)
    if as_json:
        sys.stdout.write(text)
    else:
        _render(result)
        if out is not None:
            typer.echo(f"wrote {out}")
    if not chk["pass"]:
        raise typer.Exit(EXIT_BEYOND_TOLERANCE)


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def _render(r: dict) -> None:
    lg, chk, s = r["log"], r["check"], r["settings"]
    con = console()
    bad = ", ".join(f"{k} {v}" for k, v in lg["bad_rows"].items())
    con.print(f"log {lg['source']} ({lg['format']}): {lg['requests']} request{'' if lg['requests'] == 1 else 's'} replayed of {lg['rows_read']} row{'' if lg['rows_read'] == 1 else 's'}"
              + (f"; bad rows dropped: {bad} (first: {lg['first_bad_row']})" if bad else "") + f"; arrivals {lg['arrivals']}",
              highlight=False)
    shown = ("hw", "model", "tp", "max_num_seqs", "max_num_batched_tokens", "block_size", "gpu_memory_utilization",
             "enable_prefix_caching", "enable_chunked_prefill", "dtype", "kv_cache_dtype", "calibration")
    con.print("settings: " + ", ".join(f"{k}={s[k]}" + ("" if r["settings_origin"].get(k) != "default" else " (default)")
                                       for k in shown if s.get(k) is not None), highlight=False)
    sim = r["sim"]
    con.print(f"kvsim: {sim['requests_completed']} completed, {sim['requests_rejected']} rejected, "
              f"{sim['preemptions']} preemptions", highlight=False)
    rows = []
    for m, blk in r["metrics"].items():
        for k in ("mean", "p50", "p90", "p99"):
            name = f"{m[:-2]}.{k}"
            verdict = ("BEYOND" if name in chk["failed"] else "ok") if name in chk["checked"] else ""
            rows.append((metric_name(m), k, str(blk["n"]), fmt_s(blk["measured"][k]), fmt_s(blk["predicted"][k]),
                         _pct(blk["error"][k]), verdict))
    print_rows(con, f"measured vs kvsim (error = kvsim / measured - 1; checked: {', '.join(chk['stats'])}, "
                    f"tolerance ±{chk['tolerance'] * 100:g}%)", ("metric", "stat", "n", "measured", "kvsim", "error", "check"),
               rows, left=("stat", "check"))
    for n in r["notes"]:
        con.print(f"note: {n}", highlight=False)
    if chk["unchecked"]:
        con.print(f"not checked (no measured value): {', '.join(chk['unchecked'])}", highlight=False)
    tol = f"±{chk['tolerance'] * 100:g}%"
    if chk["pass"]:
        con.print(f"PASS: all {len(chk['checked'])} checked statistics within {tol}", highlight=False)
    else:
        # (the table's names: "e2e.mean" -> "E2EL mean")
        worst = ", ".join(f"{metric_name(n.split('.')[0] + '_s')} {n.split('.')[1]} "
                          f"({_pct(r['metrics'][n.split('.')[0] + '_s']['error'][n.split('.')[1]])})" for n in chk["failed"])
        con.print(f"FAIL: {len(chk['failed'])} of {len(chk['checked'])} checked statistics beyond {tol}: {worst}", highlight=False)


LOOP_LOG_FILES = ("requests.jsonl", "requests.csv", "bench.json", "meta.json", "calibration.yaml", "calibration.hw.yaml")


def write_loop_logs(directory: str, r: dict, cfg, cal, hw_file: Path | None, hw_text: str | None) -> list[Path]:
    """``kvsim validate e2e --write-logs DIR``: the torch loop's requests in both log formats, the
    engine settings as ``meta.json``, and the calibration (with the e2e step overhead) it was priced with."""
    # lazy: CLI start-up
    import yaml

    from kvsim.fileio import write_tree
    from kvsim.validate.e2e import sim_config
    from kvsim.validate.models import TINY
    from kvsim.validate.runlog_write import log_files

    hw = str(Path(hw_file).resolve()) if hw_file is not None else "calibration.hw.yaml"
    sc = sim_config(cfg)
    req = r["requests"]
    meta = {"hw": hw, "model": str(TINY), "max_num_seqs": sc.max_num_seqs, "max_num_batched_tokens": sc.max_num_batched_tokens,
            "enable_chunked_prefill": True, "enable_prefix_caching": False, "dtype": cfg.dtype, "kv_cache_dtype": cfg.dtype,
            "calibration": "calibration.yaml",
            "source": (f"kvsim validate e2e: CPU torch loop, {r['model']}, {len(req['arrival_s'])} requests of {cfg.trace} "
                       f"at {r['rate_req_s']:.3g} req/s (the report run); calibration.yaml's step overheads were fitted on "
                       "e2e's separate fit run (held out from this log)")}
    files = log_files(req["arrival_s"], req["prompt_tokens"], req["output_tokens"], req["real_token_times"], meta,
                      request_rate=r["rate_req_s"], model_id=r["model"], label="kvsim-e2e-loop")
    files["calibration.yaml"] = yaml.safe_dump(cal.model_copy(update={"hw": hw}).model_dump(), sort_keys=False)
    if hw_text is not None:
        files["calibration.hw.yaml"] = hw_text
    return write_tree(directory, files, flag="--write-logs")
