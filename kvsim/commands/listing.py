"""``kvsim list hardware|models|methods|traces``."""

from __future__ import annotations

import math

from enum import Enum
from typing import Annotated, Optional

import typer

from kvsim.commands.tables import print_rows
from kvsim.commands.common import console, fmt_bytes, print_json
from kvsim.errors import ConfigError


class What(str, Enum):
    hardware = "hardware"
    models = "models"
    methods = "methods"
    traces = "traces"


def list_cmd(
    what: Annotated[What, typer.Argument(case_sensitive=False, help="what to list")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    hw: Annotated[Optional[list[str]], typer.Option("--hw", help="hardware: also show these system/GPU YAML files")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", help="models: also show these models (YAML, config.json, org/name)")] = None,
    quality: Annotated[bool, typer.Option("--quality", help="methods: the published quality per configuration and model (kvsim/methods/quality.yaml)")] = False,
) -> None:
    """List shipped hardware systems, models, KV methods or traces (and your own files: --hw, --model)."""
    if hw and what is not What.hardware or model and what is not What.models:
        raise ConfigError("--hw goes with `kvsim list hardware`, --model with `kvsim list models`")
    if quality and what is not What.methods:
        raise ConfigError("--quality goes with `kvsim list methods`")
    if what is What.hardware:
        rows = _hardware(hw or [])
    elif what is What.models:
        rows = _models(model or [])
    elif quality:
        rows = _quality()
    else:
        rows = {"methods": _methods, "traces": _traces}[what.value]()
    if as_json:
        print_json(rows)
        return
    heads = list(rows[0])
    print_rows(console(), what.value, heads,
               [[", ".join(v) if isinstance(v, list) else str(v) for v in r.values()] for r in rows], left=heads, wrap=True)


def _hardware(files: list[str]) -> list[dict]:
    """One row per shipped system, then one per file given with --hw (loaded as --hw loads it)."""
    # lazy: CLI start-up
    from kvsim.hardware import catalog, load_system, profile_of

    out = []
    for spec in sorted({id(s): s for s in catalog("system").values()}.values(), key=lambda s: s.name):
        out.append(_hardware_row(load_system(spec.name), spec.aliases, profile_of(spec.name)))
    for path in files:
        s = load_system(path)
        out.append(_hardware_row(s, [*s.spec.aliases, f"file {path}"], None, shipped=False))
    return out


def _hardware_row(s, aliases: list[str], profile, shipped: bool = True) -> dict:
    if profile is None and s.calibration.startswith("measured GPU kernels"):
        # lazy: CLI start-up
        from kvsim.hardware import gpu_profile_of

        profile = gpu_profile_of(s.gpu)[0]  # (another node's profile of the same shipped GPU)
    peer = s.gpu_gpu_link.name if s.num_gpus > 1 else "-"
    return {"name": s.name, "aliases": aliases, "gpu": s.gpu.name, "gpus": s.num_gpus,
            "gpu memory": fmt_bytes(s.gpu.memory_bytes), "memory BW": f"{s.gpu.memory_bw_bytes_per_s / 1e9:,.0f} GB/s",
            "SM clock": f"{s.gpu.sm_clock_hz / 1e9:.2f} GHz" if s.gpu.sm_clock_hz else "- (as 1.98 GHz)",
            "host": f"{s.host_sockets}x {s.host.name}", "link": s.gpu_host_link.name, "gpu-gpu": peer,
            "cost model": _calibration(s, profile, shipped)}


def _calibration(system, profile, shipped: bool = True) -> str:
    """'measured kernels (held-out median |error| ...)' or 'datasheet only'."""
    own = "; all-reduce measured (system file)" if system.spec.allreduce else ""
    if system.calibration == "datasheet" or profile is None:
        # lazy: only for this listing
        from kvsim.validate.datasheet_checks import load_checks

        checks = load_checks()
        mine = checks["systems"].get(system.name) if shipped else None  # a user's file is not what was checked
        if mine:
            med = [e["median_abs"] for e in mine.values()]
            return (f"datasheet only; vs measured kernels (never fitted on): median |err| {min(med) * 100:.0f}-"
                    f"{max(med) * 100:.0f}% per op, p90 <= {_up(max(e['p90_abs'] for e in mine.values()))}% "
                    f"({checks.get('date', '')})" + own)
        return "datasheet only" + own
    errs = profile.measured_error
    worst = max((e.median_abs for e in errs.values()), default=0.0)
    whose = "" if profile.system == system.name else (
        f" of {profile.system} (the same GPU{'' if system.allreduce else '; all-reduce from the datasheet'})")
    return f"measured kernels{whose}, held-out median |err| <= {_up(worst)}% per op ({profile.date})" + own


def _up(fraction: float) -> int:
    """A bound in whole percent that holds: rounded up (6.38 % is "<= 7 %", not "<= 6 %")."""
    return math.ceil(round(fraction * 100, 9))


def _models(extra: list[str]) -> list[dict]:
    """One row per shipped model, then one per --model given (loaded as --model loads it)."""
    # lazy: CLI start-up
    from kvsim.models import catalog, load_model

    shipped = sorted({id(m): m for m in catalog().values()}.values(), key=lambda m: m.name)
    rows = [(m, m.aliases) for m in shipped] + [(m, [*m.aliases, f"from {ref}"]) for ref in extra
                                                 for m in [load_model(ref)]]
    out = []
    for m, aliases in rows:
        kvb = m.attn_layers * m.kv_elements_per_token_per_layer * 2  # (a hybrid model: its attention layers only)
        window = "-" if m.sliding_window is None else f"{m.sliding_window:,} on {m.windowed_layers}/{m.num_layers}"
        active = "" if m.moe is None else f" ({m.active_params_per_token / 1e9:.2f}B active)"
        out.append({"name": m.name, "aliases": aliases, "params": f"{m.total_params / 1e9:.2f}B{active}",
                    "layers": m.num_layers if m.attn_layers == m.num_layers else f"{m.num_layers} ({m.attn_layers} attention)", "heads q/kv": f"{m.num_heads}/{m.num_kv_heads}" if not m.mla else f"{m.num_heads}/MLA",
                    "experts": "-" if m.moe is None else f"{m.moe.experts_per_token}/{m.moe.num_experts}",
                    "window": window, "KV B/token (16-bit)": f"{kvb:,}", "max context": f"{m.max_context_tokens:,}"})
    return out


def _methods() -> list[dict]:
    # lazy: CLI start-up
    from kvsim.methods import REGISTRY

    out = []
    for name, cls in REGISTRY.items():
        defaults = ", ".join(f"{k}={f.default}" for k, f in cls.Params.model_fields.items())
        out.append({"name": name, "summary": cls.summary, "compose": cls.role or "-", "defaults": defaults})
    return out


def _quality() -> list[dict]:
    """One row per published (method, configuration, model): the scores of a table, or a claim."""
    # lazy: CLI start-up
    from kvsim.methods._published import _tables, claims, score_rows

    tables = _tables()
    out = []
    for r in score_rows():
        cols = tables[r["table"]]["benchmarks"]
        out.append({"method": r["method"], "configuration": "-" if r["key"] is None else str(r["key"]),
                    "model": r["model"], "benchmark": r["table"],
                    "published": ", ".join(f"{c} {v}" for c, v in zip(cols, r["scores"])),
                    "source": tables[r["table"]]["source"]})
    for c in claims():
        params = c["params"]
        cfg = ", ".join(f"{k}={v}" for k, v in params.items()) if params else "(no kvsim equivalent)"
        out.append({"method": c["method"], "configuration": cfg, "model": c["model"], "benchmark": c["benchmark"],
                    "published": c["claim"], "source": c["source"]})
    return out


def _traces() -> list[dict]:
    # lazy: CLI start-up
    from kvsim.traces import list_traces

    return [{"name": n, "description": d} for n, d in list_traces().items()]
