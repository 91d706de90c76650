"""Package layering: imports point one way (tools/import_graph.py reads every import with ast)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.check(ROOT)


def test_no_import_cycles() -> None:
    """No kvsim module reaches itself through imports, function-local ones included."""
    assert _graph()["cycles"] == []


def test_layers_point_down() -> None:
    """cli -> commands -> plan/validate -> sim -> pricing -> methods -> costmodel -> specs -> base."""
    assert _graph()["layer_violations"] == []


def test_library_does_not_import_the_cli() -> None:
    """Only kvsim.commands and kvsim.cli import kvsim.commands or kvsim.cli."""
    assert _graph()["cli_imports"] == []
