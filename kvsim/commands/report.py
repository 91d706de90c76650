"""``kvsim report RESULTS_DIR``: rebuild the HTML report from a saved plan (``kvsim plan --out``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def report_cmd(
    results_dir: Annotated[Path, typer.Argument(help="directory written by `kvsim plan --out`")],
    out: Annotated[Optional[Path], typer.Option("--out", help="HTML file to write (default RESULTS_DIR/report.html)")] = None,
) -> None:
    """Rebuild the self-contained HTML report (plotly inline, works offline) from saved results."""
    # lazy: CLI start-up
    from kvsim.plan.search import load_plan
    from kvsim.plan.report import write_plan_report

    plan = load_plan(results_dir)
    path = write_plan_report(plan, out or results_dir / "report.html")
    print(f"wrote {path} ({len(plan.configs)} configurations)", file=sys.stderr)
