"""The ``kvsim`` command line (typer). Thin: every command parses options, loads specs,
calls one library function and renders the result.

User errors (:class:`kvsim.errors.KvsimError`) print as ``error: ...`` lines on stderr
with exit code 1 and no traceback.
"""

from __future__ import annotations

import sys

import typer

from kvsim import __version__
from kvsim.commands import plan as _plan
from kvsim.commands import report as _report
from kvsim.commands import simulate as _sim
from kvsim.commands import trace as _trace
from kvsim.commands import validate as _validate
from kvsim.commands.estimate import estimate_cmd
from kvsim.commands.listing import list_cmd
from kvsim.errors import KvsimError

app = typer.Typer(
    name="kvsim",
    help="Analytical performance simulator and roofline cost model for LLM inference under KV-cache compression.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("estimate")(estimate_cmd)
app.command("list")(list_cmd)


def _register_optional() -> None:
    """Commands whose modules import their heavy deps lazily (torch, plotly, scipy)."""
    app.command("simulate")(_sim.simulate_cmd)
    app.command("plan")(_plan.plan_cmd)
    app.command("report")(_report.report_cmd)
    app.add_typer(_trace.app, name="trace", help="inspect and fetch request traces")
    app.add_typer(_validate.app, name="validate", help="microbenchmarks, calibration and accuracy of the cost model")


_register_optional()


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="print the version and exit")) -> None:
    if version:
        typer.echo(f"kvsim {__version__}")
        raise typer.Exit()


def main() -> None:
    try:
        app()
    except KvsimError as err:
        for line in str(err).splitlines() or ["(no message)"]:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
