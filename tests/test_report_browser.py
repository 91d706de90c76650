"""The HTML reports in a real browser: headless Chromium renders every plot of every kind of
page (plan, plan self-contained, plan with 16 methods, one simulation, several methods) with
no JavaScript error.

Method: a copy of the report gets a collector script as the first thing in ``<head>``
(``error`` and ``unhandledrejection`` events, ``console.error``); after ``load`` it writes the
errors and, per ``.plotly-graph-div``, the number of ``svg.main-svg`` elements and traces into
``<pre>`` elements. ``chromium --headless --dump-dom --virtual-time-budget`` prints the DOM
after the scripts ran, which the test parses. A screenshot of the unmodified report is saved
under ``$KVSIM_TEST_ARTIFACTS`` (default ``test-artifacts/``). Skipped when no Chromium is found.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

_COLLECTOR = """<script>
(function () {
  var errs = [];
  window.addEventListener('error', function (e) { errs.push('error: ' + (e.message || e.type)); });
  window.addEventListener('unhandledrejection', function (e) { errs.push('unhandled rejection: ' + e.reason); });
  var ce = console.error;
  console.error = function () { errs.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); };
  window.addEventListener('load', function () {
    setTimeout(function () {
      var status = [];
      document.querySelectorAll('.plotly-graph-div').forEach(function (p) {
        status.push({id: p.id, svgs: p.querySelectorAll('svg.main-svg').length, traces: (p.data || []).length});
      });
      var a = document.createElement('pre'); a.id = 'kvsim-js-errors'; a.textContent = JSON.stringify(errs);
      var b = document.createElement('pre'); b.id = 'kvsim-plot-status'; b.textContent = JSON.stringify(status);
      document.body.appendChild(a); document.body.appendChild(b);
    }, 1000);
  });
})();
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _artifacts() -> Path:
    d = Path(os.environ.get("KVSIM_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _chrome(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp / 'chrome-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _render(exe: str, html_path: Path, tmp: Path) -> tuple[list, list]:
    """``(js_errors, plot_status)`` of a page after its scripts ran."""
    page = html_path.read_text(encoding="utf-8")
    probe = tmp / ("probe-" + html_path.name)
    probe.write_text(page.replace("<head>", "<head>" + _COLLECTOR, 1), encoding="utf-8")
    r = _chrome(exe, tmp, "--virtual-time-budget=30000", "--dump-dom", probe.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    found = {m.group(1): json.loads(_unescape(m.group(2)))
             for m in re.finditer(r'<pre id="(kvsim-js-errors|kvsim-plot-status)">(.*?)</pre>', r.stdout, re.S)}
    assert set(found) == {"kvsim-js-errors", "kvsim-plot-status"}, "collector did not run: " + r.stdout[-500:]
    return found["kvsim-js-errors"], found["kvsim-plot-status"]


def _unescape(text: str) -> str:
    return text.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    return exe


def test_collector_catches_a_javascript_error(chromium, tmp_path):
    """The error collector is not vacuous: a page that throws reports the error."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head></head><body><script>undefinedFunction();</script></body></html>")
    errors, plots = _render(chromium, page, tmp_path)
    assert plots == [] and any("undefinedFunction" in e for e in errors)


def _pages(tmp: Path) -> dict[str, tuple[Path, int]]:
    """Every kind of page, written as the commands write them: name -> (path, number of plots)."""
    from test_report import N_PLAN_FIGURES, many_methods, sample_plan, sample_point

    from kvsim.plan.report import simulation_html, write_page, write_plan_report

    runs = [(f"method {i}", sample_point(1.0 + i / 4, host=i % 2 == 0)) for i in range(8)]
    return {
        "plan-report": (write_plan_report(sample_plan(host=True), tmp / "report.html"), N_PLAN_FIGURES),
        "plan-report-self-contained": (write_plan_report(sample_plan(), tmp / "sc" / "report.html", self_contained=True),
                                       N_PLAN_FIGURES),
        "plan-report-16-methods": (write_plan_report(sample_plan(methods=many_methods()), tmp / "many.html"), N_PLAN_FIGURES),
        "single-run-report": (write_page(tmp / "single.html", simulation_html([("full", sample_point(4.0))], "single run",
                                                                              slo_ttft_s=2.0, slo_tpot_s=0.05)), 3),
        "multi-method-report": (write_page(tmp / "multi.html", simulation_html(runs, "eight methods", slo_ttft_s=1.0)), 3),
    }


@pytest.mark.parametrize("name", ["plan-report", "plan-report-self-contained", "plan-report-16-methods",
                                  "single-run-report", "multi-method-report"])
def test_every_page_renders_without_js_errors(chromium, tmp_path, name):
    """Each page (plotly.js beside it or inline) draws every plot with traces and no JS error; screenshot saved."""
    path, n = _pages(tmp_path)[name]
    errors, plots = _render(chromium, path, tmp_path)
    assert errors == []
    assert len(plots) == n
    assert all(p["svgs"] >= 1 and p["traces"] >= 1 for p in plots), plots
    shot = _artifacts() / f"{name}.png"
    shot.unlink(missing_ok=True)
    r = _chrome(chromium, tmp_path, "--hide-scrollbars", "--window-size=1400,3400", "--virtual-time-budget=30000",
                f"--screenshot={shot}", path.as_uri())
    assert r.returncode == 0 and shot.stat().st_size > 10_000, r.stderr[-2000:]


def test_page_without_its_plotly_says_so(chromium, tmp_path):
    """A page whose plotly.js was not kept beside it shows a warning naming the file (and the check sees the errors)."""
    from test_report import sample_point

    from kvsim.plan.report import PLOTLY_JS, single_run_html

    path = tmp_path / "alone.html"
    path.write_text(single_run_html(sample_point(1.0), "alone"), encoding="utf-8")
    errors, plots = _render(chromium, path, tmp_path)
    assert errors and all(p["svgs"] == 0 for p in plots)
    r = _chrome(chromium, tmp_path, "--virtual-time-budget=10000", "--dump-dom", path.as_uri())
    assert f"{PLOTLY_JS} was not found next to this page" in r.stdout


def test_report_of_a_real_plan_renders(chromium, tmp_path):
    """A real (small) plan: 2 hardware x 2 methods, simulated; its report renders with no JS error."""
    from kvsim.plan.search import PlanRequest, run_plan
    from kvsim.plan.schema import SLO, SearchOptions, TraceSpec
    from kvsim.plan.report import write_plan_report

    req = PlanRequest(model="llama-3.1-8b", hws=["a100", "4090"], methods=["full", "kivi"],
                      trace=TraceSpec(num_requests=60, seed=1), slo=SLO(ttft_s=2.0, itl_s=0.1),
                      search=SearchOptions(rel_tol=0.2))
    plan = run_plan(req, executor="serial", progress=False)
    assert all(c.max_rate_per_s > 0 for c in plan.configs)
    path = write_plan_report(plan, tmp_path / "real.html")
    errors, plots = _render(chromium, path, tmp_path)
    assert errors == [] and len(plots) == 5 and all(p["svgs"] >= 1 and p["traces"] >= 1 for p in plots), plots
    assert path.stat().st_size < 1_000_000
