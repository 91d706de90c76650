"""``kvsim report RESULTS_DIR``: rebuild the HTML report from a saved plan (``kvsim plan --out``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def report_cmd(
    results_dir: Annotated[Path, typer.Argument(help="directory written by `kvsim plan --out`")],
    out: Annotated[Optional[str], typer.Option("--out", help="HTML file to write (default RESULTS_DIR/report.html)")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace RESULTS_DIR/report.html even if kvsim did not write it")] = False,
) -> None:
    """Rebuild the self-contained HTML report (plotly inline, works offline) from saved results."""
    # lazy: CLI start-up
    from kvsim.fileio import check_output_file, write_tree
    from kvsim.plan.report import plan_report_html, write_plan_report
    from kvsim.plan.search import load_plan

    if out is not None:
        check_output_file(out, "--out")
    plan = load_plan(results_dir)
    if out is None:  # into the plan directory: kvsim's own file there, or refuse (see kvsim.fileio)
        path = write_tree(results_dir, {"report.html": plan_report_html(plan)}, force=force, prune=False, flag="RESULTS_DIR")[0]
    else:
        path = write_plan_report(plan, out)
    print(f"wrote {path} ({len(plan.configs)} configurations)", file=sys.stderr)
