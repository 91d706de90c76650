"""80-column terminals: every --help and every main table fits, nothing is cut."""

import json

import pytest
import typer
from typer.testing import CliRunner

from kvsim.cli import app

WIDTH = 80


def _options(cmd):
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option"]


def _commands(cmd, path: tuple[str, ...] = ()):
    yield path, cmd
    if getattr(cmd, "commands", None):  # a group (typer vendors its own click: no isinstance)
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))


ALL = list(_commands(typer.main.get_command(app)))


def _run(*args: str):
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    return r


def _assert_fits(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert wide == [], f"{len(wide)} lines over {WIDTH} columns, first: {wide[:1]}"
    assert "…" not in text  # nothing ellipsized


def test_every_command_is_covered():
    """The walk finds the commands people use (so the help test below cannot pass vacuously)."""
    names = {" ".join(p) for p, _ in ALL}
    assert {"estimate", "simulate", "plan", "list", "report", "trace fetch", "validate run", "hardware"} <= names
    assert len(ALL) >= 15


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=lambda p: " ".join(p) or "kvsim")
def test_help_fits_80_columns_with_option_names_whole(path):
    """`kvsim ... --help` at 80 columns: no line wider, every visible option name printed whole."""
    cmd = dict(ALL)[path]
    r = _run(*path, "--help")
    assert r.exit_code == 0, r.output
    _assert_fits(r.output)
    for p in _options(cmd):
        if not p.hidden:
            for name in (*p.opts, *p.secondary_opts):
                assert name in r.output.split() or f"{name}," in r.output.split() or f"{name}/" in r.output, name
    hidden = [n for p in _options(cmd) if p.hidden for n in p.opts]
    assert all(n not in r.output for n in hidden)  # --slo-tbt, --tbt-metric stay out of the help


@pytest.mark.parametrize("args", [
    ("estimate",),
    ("estimate", "--method", "full,kivi,magicpig,quest"),
    ("estimate", "--model", "codellama-34b", "--method", "all", "--batch", "max"),
    ("list", "hardware"), ("list", "models"), ("list", "methods"), ("list", "traces"),
    ("trace", "list"), ("trace", "formats"), ("trace", "info", "burstgpt-sample"),
    ("simulate", "--trace", "synthetic-burstgpt", "-n", "20", "--rate", "2", "--slo-ttft", "2s", "--slo-itl", "50ms"),
    ("simulate", "--trace", "synthetic-burstgpt", "-n", "20", "--rate", "2", "--method", "full,kivi,quest",
     "--slo-tpot", "40ms"),
], ids=lambda a: " ".join(a[:4]))
def test_tables_fit_80_columns(args):
    """The tables of estimate, list, trace and simulate at 80 columns: no line wider, nothing cut."""
    r = _run(*args)
    assert r.exit_code == 0, r.output
    _assert_fits(r.stdout)


def test_wide_table_turns_vertical_and_keeps_every_value():
    """A comparison too wide for 80 columns prints one block per row with every header and value:
    simulate of three methods at 80 columns shows each method once, each with its ITL p99 and
    output tok/s exactly as the JSON has them; at 200 columns the same is one table."""
    from kvsim.commands.common import fmt_num, fmt_s

    base = ("simulate", "--trace", "synthetic-burstgpt", "-n", "20", "--rate", "2", "--method", "full,kivi,quest")
    narrow = _run(*base).stdout
    runs = json.loads(_run(*base, "--json").stdout)
    lines = narrow.splitlines()
    assert sorted(line.strip() for line in lines if line.strip() in {s["method"] for s in runs}) == sorted(
        s["method"] for s in runs)  # one block heading per method
    itl = [" ".join(line.split()[2:]) for line in lines if line.strip().startswith("ITL p99")]
    tok = [" ".join(line.split()[2:]) for line in lines if line.strip().startswith("out tok/s")]
    assert sorted(itl) == sorted(fmt_s(s["itl_s"]["p99"]) for s in runs)
    assert sorted(tok) == sorted(fmt_num(s["throughput_output_tok_s"]) for s in runs)
    wide = CliRunner().invoke(app, list(base), env={"COLUMNS": "200"}).stdout
    assert sum("ITL p99" in line for line in wide.splitlines()) == 1 and "┃" in wide  # one header row


def test_plan_table_fits_80_columns():
    """kvsim plan's ranked table at 80 columns: no line wider, nothing cut, SLO in the title."""
    r = _run("plan", "--hw", "a100,l4", "--method", "full,kivi", "--num-requests", "12", "--max-output-tokens", "16",
             "--rel-tol", "0.5", "--executor", "serial", "--no-cache", "--no-progress", "--slo-itl", "200ms")
    assert r.exit_code == 0, r.output
    _assert_fits(r.stdout)
    assert "SLO p99 TTFT <= 2 s, ITL <= 200 ms" in " ".join(r.stdout.split())
    assert "1 · " in r.stdout  # vertical: each block headed by rank, hardware and method


def _render(width, **kw):
    import io

    from rich.console import Console

    from kvsim.commands.tables import print_rows

    buf = io.StringIO()
    print_rows(Console(file=buf, width=width, color_system=None), "t", ("system", "op", "median |err|", "note"),
               [("a100-80g", "gemm", "6.2%", "x" * 40), ("h100", "attn_decode", "7.5%", "")], left=("op", "note"), **kw)
    return buf.getvalue()


def test_print_rows_is_a_table_when_it_fits_else_blocks():
    """Natural width here: 4 columns, widest cells 8 + 11 + 12 + 40 = 71, plus 3 per column and 1
    border = 84: a table at 100 columns, blocks at 80 (headed by system and op with heading=2,
    empty cells left out); at 80 nothing is wider and every value is printed whole."""
    wide = _render(100)
    assert "┃ system" in wide and max(map(len, wide.splitlines())) == 84
    narrow = _render(80, heading=2)
    assert "┃" not in narrow and max(map(len, narrow.splitlines())) <= 80
    lines = [line.rstrip() for line in narrow.splitlines()]
    assert lines[1:] == ["a100-80g · gemm", "  median |err|  6.2%", "  note          " + "x" * 40,
                         "h100 · attn_decode", "  median |err|  7.5%"]
