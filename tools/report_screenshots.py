"""Regenerate the report screenshots in docs/img from the commands the docs show.

Runs, in a temporary folder, the plan command of docs/plan.md and a multi-method
``kvsim simulate --report``, checks each page in headless Chromium (every plot drawn, no
JavaScript error) and saves full-page screenshots:

* ``docs/img/report.png``: ``kvsim plan`` (PLAN_ARGS below)
* ``docs/img/simulate-report.png``: ``kvsim simulate --report`` (SIMULATE_ARGS below)

Usage: ``python tools/report_screenshots.py [--out-dir docs/img] [--keep DIR] [--quick]``
(``--quick``: fewer requests, for a fast check that the pipeline works; the committed
images come from the full commands). Needs chromium (or google-chrome) on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAN_ARGS = ["plan", "--model", "llama-3.1-8b", "--hw", "a100,l20,4090", "--method", "full,kivi,magicpig,quest",
             "--trace", "synthetic-burstgpt:prompt_min=8000,prompt_max=32000,prompt_a=0.5", "--num-requests", "300",
             "--slo-ttft", "10s", "--slo-tpot", "200ms", "--percentile", "p90", "--no-progress"]
SIMULATE_ARGS = ["simulate", "--hw", "a100", "--model", "llama-3.1-8b", "--method", "full,kivi,quest,magicpig",
                 "--trace", "synthetic-burstgpt:prompt_min=8000,prompt_max=32000,prompt_a=0.5", "-n", "300",
                 "--rate", "0.1", "--slo-ttft", "10s", "--slo-tpot", "200ms"]
#: what window each screenshot covers (width, height) in CSS pixels
WINDOWS = {"report.png": (1400, 3300), "simulate-report.png": (1400, 1900)}

_COLLECTOR = """<script>
(function () {
  var errs = [];
  window.addEventListener('error', function (e) { errs.push('error: ' + (e.message || e.type)); });
  var ce = console.error;
  console.error = function () { errs.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); };
  window.addEventListener('load', function () { setTimeout(function () {
    var plots = []; document.querySelectorAll('.plotly-graph-div').forEach(function (p) {
      plots.push({svgs: p.querySelectorAll('svg.main-svg').length, traces: (p.data || []).length}); });
    var a = document.createElement('pre'); a.id = 'kvsim-check';
    a.textContent = JSON.stringify({errors: errs, plots: plots}); document.body.appendChild(a);
  }, 1000); });
})();
</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    sys.exit("error: chromium not found on PATH")


def chrome(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-dev-shm-usage",
           "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=30000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def check(exe: str, page: Path, profile: Path) -> None:
    """Every plot drew an SVG with traces and no JavaScript error was raised, or exit 1."""
    probe = page.with_name("check-" + page.name)
    probe.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + _COLLECTOR, 1), encoding="utf-8")
    r = chrome(exe, profile, "--dump-dom", probe.as_uri())
    probe.unlink()
    m = re.search(r'<pre id="kvsim-check">(.*?)</pre>', r.stdout, re.S)
    if m is None:
        sys.exit(f"error: {page}: the check did not run in chromium")
    found = json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    bad = [p for p in found["plots"] if p["svgs"] < 1 or p["traces"] < 1]
    if found["errors"] or bad or not found["plots"]:
        sys.exit(f"error: {page}: {found['errors'] or 'empty plots'} {bad}")
    print(f"{page.name}: {len(found['plots'])} plots drawn, no JavaScript error, {page.stat().st_size / 1e3:.0f} kB")


def kvsim(*args: str, cwd: Path) -> None:
    print("$ kvsim " + " ".join(f"'{a}'" if any(c in a for c in " :,=") else a for a in args), flush=True)
    r = subprocess.run([sys.executable, "-m", "kvsim", *args], cwd=cwd, env=_env())
    if r.returncode != 0:
        sys.exit(f"error: kvsim {args[0]} exited {r.returncode}")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--keep", type=Path, help="write the pages here (default: a temporary folder)")
    ap.add_argument("--quick", action="store_true", help="60 requests instead of 300")
    a = ap.parse_args()
    exe = chromium()
    plan_args, sim_args = list(PLAN_ARGS), list(SIMULATE_ARGS)
    if a.quick:
        plan_args[plan_args.index("--num-requests") + 1] = "60"
        sim_args[sim_args.index("-n") + 1] = "60"
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep.resolve() if a.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        kvsim(*plan_args, "--out", str(work / "plan"), "--cache-dir", str(Path(tmp) / "cache"), cwd=work)
        kvsim(*sim_args, "--report", str(work / "simulate" / "report.html"), cwd=work)
        a.out_dir.mkdir(parents=True, exist_ok=True)
        for page, name in ((work / "plan" / "report.html", "report.png"),
                           (work / "simulate" / "report.html", "simulate-report.png")):
            check(exe, page, Path(tmp) / "profile")
            w, h = WINDOWS[name]
            shot = a.out_dir / name
            r = chrome(exe, Path(tmp) / "profile", f"--window-size={w},{h}", f"--screenshot={shot}", page.as_uri())
            if r.returncode != 0 or not shot.is_file():
                sys.exit(f"error: screenshot of {page} failed: {r.stderr[-500:]}")
            print(f"wrote {shot}")


if __name__ == "__main__":
    main()
