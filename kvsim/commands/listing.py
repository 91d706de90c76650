"""``kvsim list hardware|models|methods|traces``."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from kvsim.commands.common import console, fmt_bytes, print_json


class What(str, Enum):
    hardware = "hardware"
    models = "models"
    methods = "methods"
    traces = "traces"


def list_cmd(
    what: Annotated[What, typer.Argument(help="what to list")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List shipped hardware systems, models, KV methods or traces."""
    rows = {"hardware": _hardware, "models": _models, "methods": _methods, "traces": _traces}[what.value]()
    if as_json:
        print_json(rows)
        return
    # lazy: CLI start-up
    from rich.table import Table

    t = Table(title=what.value)
    for c in rows[0]:
        t.add_column(c)
    for r in rows:
        t.add_row(*[", ".join(v) if isinstance(v, list) else str(v) for v in r.values()])
    console().print(t)


def _hardware() -> list[dict]:
    # lazy: CLI start-up
    from kvsim.hardware import catalog, load_system, profile_of

    out = []
    for spec in sorted({id(s): s for s in catalog("system").values()}.values(), key=lambda s: s.name):
        s = load_system(spec.name)
        out.append({"name": spec.name, "aliases": spec.aliases, "gpu": s.gpu.name, "gpus": s.num_gpus,
                    "gpu memory": fmt_bytes(s.gpu.memory_bytes), "HBM BW": f"{s.gpu.memory_bw_bytes_per_s / 1e9:,.0f} GB/s",
                    "host": f"{s.host_sockets}x {s.host.name}", "link": s.gpu_host_link.name,
                    "cost model": _calibration(s, profile_of(spec.name))})
    return out


def _calibration(system, profile) -> str:
    """'measured kernels (held-out median |error| ...)' or 'datasheet only'."""
    if system.calibration == "datasheet" or profile is None:
        return "datasheet only"
    errs = profile.measured_error
    worst = max((e.median_abs for e in errs.values()), default=0.0)
    return f"measured kernels, held-out median |err| <= {worst * 100:.0f}% per op ({profile.date})"


def _models() -> list[dict]:
    # lazy: CLI start-up
    from kvsim.models import catalog

    out = []
    for m in sorted({id(m): m for m in catalog().values()}.values(), key=lambda m: m.name):
        kvb = m.num_layers * m.kv_elements_per_token_per_layer * 2
        out.append({"name": m.name, "aliases": m.aliases, "params": f"{m.total_params / 1e9:.2f}B",
                    "layers": m.num_layers, "heads q/kv": f"{m.num_heads}/{m.num_kv_heads}" if not m.mla else f"{m.num_heads}/MLA",
                    "KV B/token (16-bit)": f"{kvb:,}", "max context": f"{m.max_context_tokens:,}"})
    return out


def _methods() -> list[dict]:
    # lazy: CLI start-up
    from kvsim.methods import REGISTRY

    out = []
    for name, cls in REGISTRY.items():
        defaults = ", ".join(f"{k}={f.default}" for k, f in cls.Params.model_fields.items())
        out.append({"name": name, "summary": cls.summary, "defaults": defaults})
    return out


def _traces() -> list[dict]:
    # lazy: CLI start-up
    from kvsim.traces import list_traces

    return [{"name": n, "description": d} for n, d in list_traces().items()]
