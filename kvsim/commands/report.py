"""``kvsim report RESULTS_DIR``: rebuild the HTML report from a saved plan (``kvsim plan --out``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def report_cmd(
    results_dir: Annotated[Path, typer.Argument(help="directory written by `kvsim plan --out`")],
    out: Annotated[Optional[str], typer.Option("--out", help="HTML file to write (default RESULTS_DIR/report.html)")] = None,
    self_contained: Annotated[bool, typer.Option("--self-contained", help="plotly.js inside the page (~5 MB) instead of beside it")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace RESULTS_DIR/report.html (or the --out file) even if kvsim did not write it")] = False,
) -> None:
    """Rebuild the HTML report from saved results (plotly.js beside it, or inside with --self-contained; works offline)."""
    # lazy: CLI start-up
    from kvsim.fileio import write_tree
    from kvsim.plan.report import check_page, page_files, plan_report_html, write_page
    from kvsim.plan.search import load_plan

    if out is not None:
        # (what the report reads: plan.json and every configs/*.json, never replaced, even with --force)
        reads = (Path(results_dir) / "plan.json", *sorted((Path(results_dir) / "configs").glob("*.json")))
        check_page(out, self_contained, "--out", force, inputs=reads)
    plan = load_plan(results_dir)
    page = plan_report_html(plan, self_contained=self_contained)
    if out is None:  # into the plan directory: kvsim's own files there, or refuse (see kvsim.fileio)
        write_tree(results_dir, page_files("report.html", page, self_contained), force=force, prune=False,
                   flag="RESULTS_DIR")
        path = results_dir / "report.html"
    else:
        path = write_page(out, page, self_contained=self_contained, flag="--out", force=force)
    n = len(plan.configs)
    print(f"wrote {path} ({n} configuration{'' if n == 1 else 's'})", file=sys.stderr)
