"""The shipped error of the datasheet model on GPUs no fit has seen (B200, GB200, RTX PRO 6000 Server).

``kvsim validate kernels --protocol datasheet --write-checks FILE`` writes it (maintainers:
``kvsim/validate/data/datasheet_checks.yaml``); ``kvsim list hardware`` shows it next to
"datasheet only", so that a user sees how far the datasheet model was off on the GPUs where it
could be checked. Every number there is out of sample: the shared defaults were fitted on
A100 / H100 / H200 / L40S only.
"""

from __future__ import annotations

import datetime as _dt
from functools import lru_cache
from pathlib import Path

import yaml

from kvsim.fileio import atomic_write, check_replaceable
from kvsim.specbase import read_yaml

CHECKS_PATH = Path(__file__).parent / "data" / "datasheet_checks.yaml"
_FIELDS = ("rows", "median_abs", "p90_abs", "bias")


def checks_text(rows: list[dict]) -> str:
    """YAML of ``kernel_report.datasheet_only`` rows: system -> op -> rows, median / p90 |error|, bias."""
    systems: dict[str, dict] = {}
    for r in rows:
        if r["rows"]:
            systems.setdefault(r["system"], {})[r["op"]] = {k: (r[k] if k == "rows" else float(f"{r[k]:.4g}")) for k in _FIELDS}
    data = {"protocol": rows[0]["protocol"] if rows else "", "date": _dt.date.today().isoformat(), "systems": systems}
    header = (_HEADER + ", written by `kvsim validate kernels --protocol datasheet\n"
              "# --write-checks`. Do not edit by hand: rerun the command. Fractions, not %.\n")
    return header + yaml.safe_dump(data, sort_keys=False)


_HEADER = "# Datasheet-only check of GPUs no fit has seen"


def check_target(path: Path | str) -> Path:
    """``path`` may be written: absent, or an earlier checks file (anything else is never replaced)."""
    return check_replaceable(path, _HEADER, "--write-checks", "is not a datasheet checks file")


def write_checks(rows: list[dict], path: Path | str) -> Path:
    """Write :func:`checks_text` atomically to ``path`` (:func:`check_target`)."""
    return atomic_write(check_target(path), checks_text(rows))


@lru_cache(maxsize=1)
def load_checks() -> dict:
    """``{"date": ..., "systems": {system: {op: {rows, median_abs, p90_abs, bias}}}}`` (empty if none shipped)."""
    if not CHECKS_PATH.is_file():
        return {"systems": {}}
    return read_yaml(CHECKS_PATH) or {"systems": {}}


__all__ = ["CHECKS_PATH", "check_target", "checks_text", "write_checks", "load_checks"]
