"""``kvsim validate kernels``: kvsim's GPU cost model against measured GPU kernels."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from kvsim.commands.common import console, print_json
from kvsim.commands.tables import print_rows
from kvsim.errors import ConfigError


class Protocol(str, Enum):
    current = "current"
    held_out = "held-out"
    leave_one_gpu_out = "leave-one-gpu-out"
    datasheet = "datasheet"


#: exit status when a result is beyond a threshold (1 and 2 are bad input, as in `validate replay`)
BEYOND_EXIT = 3


def _note_skipped(asked: list[str], kept: list[str], why: str) -> None:
    """Say which requested systems a protocol leaves out (and why), instead of dropping them silently."""
    from kvsim.validate.kernel_tables import SYSTEM_OF_TABLE  # lazy: CLI start-up

    left = [SYSTEM_OF_TABLE[t] for t in asked if t not in kept]
    if left and kept:
        typer.echo(f"note: this protocol {why}; left out: {', '.join(left)}", err=True)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _table(rows: list[dict], max_median: float, max_p90: float) -> None:
    from kvsim.validate.kernel_report import CHECK_NOTE  # lazy: CLI start-up

    out = []
    for r in rows:
        op = r["op"] if r.get("fitted_op", True) else f"{r['op']} (check)"
        if not r["rows"]:
            out.append((r["system"], op, "0", "-", "-", "-", "-", "-"))
            continue
        l2 = r.get("l2_resident")
        # (None: this protocol does not report them; "-" read as "none": user audit)
        l2s = (f"{l2['rows']}: median {_pct(l2['median_abs'])}" if l2 and l2.get("rows") else
               "not reported" if l2 is None else "-")
        ok = r["median_abs"] <= max_median and r["p90_abs"] <= max_p90
        out.append((r["system"], op, str(r["rows"]), _pct(r["median_abs"]), _pct(r["p90_abs"]),
                    f"{r['bias'] * 100:+.1f}%", l2s, "yes" if ok else "NO"))
    protocols = {r["protocol"] for r in rows if r.get("fitted_op", True)}
    print_rows(console(), next(iter(protocols)) if len(protocols) == 1 else "",
               ("system", "op", "rows", "median |err|", "p90 |err|", "bias", "L2-resident rows (apart)", "ok"), out,
               left=("op",), heading=2)
    if any(not r.get("fitted_op", True) for r in rows):
        typer.echo(f"(check): {CHECK_NOTE} (MLA decode, priced with the attn_decode efficiencies fitted on GQA kernels); "
                   "its rows count toward the exit status like the others", err=True)


def kernels_cmd(
    protocol: Annotated[Protocol, typer.Option("--protocol", case_sensitive=False, help="current: the shipped model (in-sample where profiled); "
                                               "held-out: fit on half the shapes, report the other half; "
                                               "leave-one-gpu-out: fit shared defaults on 3 GPUs, predict the 4th from its datasheet; "
                                               "datasheet: defaults fitted on all 4, predict the GPUs no fit saw (B200, GB200, RTX PRO 6000)")] = Protocol.current,
    hw: Annotated[list[str] | None, typer.Option("--hw", help="systems to check (repeatable; default: all with tables)")] = None,
    max_median: Annotated[float, typer.Option("--max-median", min=0, help="threshold on median |error| per system and op (fraction)")] = 0.10,
    max_p90: Annotated[float, typer.Option("--max-p90", min=0, help="threshold on p90 |error| (fraction)")] = 0.25,
    write_profiles: Annotated[Path | None, typer.Option("--write-profiles", help="held-out only: fit on all rows and write one "
                                                        "profile YAML per system into this directory (maintainers)")] = None,
    write_checks: Annotated[Path | None, typer.Option("--write-checks", help="datasheet only: write the results as the YAML "
                                                      "`kvsim list hardware` shows (maintainers: kvsim/validate/data/datasheet_checks.yaml)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print machine-readable JSON")] = False,
) -> None:
    """GPU cost model vs measured kernels (GEMM, attention, all-reduce; NVIDIA aiconfigurator-core tables).

    Exits 3 when any system and op is beyond --max-median or --max-p90 (1: bad input)."""
    # lazy: CLI start-up (scipy, the tables)
    from kvsim.validate import kernel_report as kr
    from kvsim.validate.kernel_tables import FITTED_TABLES, SYSTEM_OF_TABLE, table_of_system

    tables = list(dict.fromkeys(table_of_system(h) for h in hw)) if hw else list(SYSTEM_OF_TABLE)  # (a system named twice: once)
    if write_profiles is not None and protocol is not Protocol.held_out:
        raise ConfigError("--write-profiles needs --protocol held-out (profiles carry their held-out error)")
    if write_profiles is not None:
        # lazy: only when writing; before the fit, so a bad path or a file it may not replace costs nothing
        from kvsim.validate.kernel_profiles import profile_targets

        profile_targets(write_profiles, [t for t in tables if t in FITTED_TABLES])
    if write_checks is not None:
        if protocol is not Protocol.datasheet:
            raise ConfigError("--write-checks needs --protocol datasheet")
        # lazy: only when writing; before the protocol runs, so a bad path costs nothing
        from kvsim.validate.datasheet_checks import check_target

        check_target(write_checks)
    if protocol is Protocol.current:
        rows = kr.current(tables)
    elif protocol is Protocol.held_out:
        fitted = [t for t in tables if t in FITTED_TABLES]
        _note_skipped(tables, fitted, "fits only the profiled GPUs")
        if not fitted:
            raise ConfigError(f"held-out fits only the profiled GPUs ({', '.join(SYSTEM_OF_TABLE[t] for t in FITTED_TABLES)})")
        rows, full = kr.held_out(fitted)
        if write_profiles is not None:
            # lazy: only when writing
            from kvsim.validate.kernel_profiles import write_profile

            for ts in fitted:
                path = write_profile(write_profiles, ts, *full[ts], [r for r in rows if r["table"] == ts])
                typer.echo(f"wrote {path}", err=True)
    elif protocol is Protocol.leave_one_gpu_out:
        fitted = [t for t in tables if t in FITTED_TABLES]
        _note_skipped(tables, fitted, "predicts only the profiled GPUs")
        if not fitted:
            raise ConfigError(f"leave-one-GPU-out predicts one of {', '.join(SYSTEM_OF_TABLE[t] for t in FITTED_TABLES)}")
        rows = kr.leave_one_gpu_out(fitted)
    else:
        unseen = [t for t in tables if t not in FITTED_TABLES]
        _note_skipped(tables, unseen, "reports the GPUs no fit has seen")
        if not unseen:  # (a fitted GPU was reported under the datasheet-only label: in-sample; user audit)
            raise ConfigError("datasheet reports the GPUs no fit has seen; the ones asked for were fitted on: use "
                              "--protocol held-out or leave-one-gpu-out for them")
        rows = kr.datasheet_only(unseen)
        if write_checks is not None:
            # lazy: only when writing
            from kvsim.validate.datasheet_checks import write_checks as write

            typer.echo(f"wrote {write(rows, write_checks)}", err=True)
    bad = [r for r in rows if r["rows"] and (r["median_abs"] > max_median or r["p90_abs"] > max_p90)]
    if as_json:
        print_json({"protocol": protocol.value, "max_median": max_median, "max_p90": max_p90, "rows": rows,
                    "beyond_threshold": len(bad)})
    else:
        _table(rows, max_median, max_p90)
        if bad:
            typer.echo(f"{len(bad)} of {len(rows)} (system, op) results beyond median {_pct(max_median)} / p90 {_pct(max_p90)}",
                       err=True)
    if bad:
        raise typer.Exit(BEYOND_EXIT)
