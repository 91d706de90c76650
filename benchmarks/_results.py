"""Shared helpers for benchmarks: machine description and section-wise RESULTS.md updates."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (else platform.processor(), else "unknown CPU")."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> str:
    return (f"Machine: {platform.node() or 'host'} ({platform.system()} {platform.release()}, {platform.machine()}), "
            f"{cpu_model()}, {os.cpu_count()} logical CPUs; date {_dt.date.today().isoformat()}.")


def write_section(title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of RESULTS.md, leaving others untouched."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"## {title}\n\n{body.strip()}\n"
    pat = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pat.search(text):
        text = pat.sub(lambda _: block + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + block
    RESULTS.write_text(text)
