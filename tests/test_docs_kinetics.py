"""docs/examples/kinetics.md shows what docs/examples/kinetics.py prints today."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kinetics_doc_tables_match_the_script():
    """The four tables in the doc are the script's output, line for line."""
    doc = (ROOT / "docs" / "examples" / "kinetics.md").read_text()
    start = doc.index("1. attention share")
    shown = doc[start:doc.index("```", start)].rstrip("\n")
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "kinetics.py")], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") == shown
