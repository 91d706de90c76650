"""The ``kvsim`` command line (typer). Thin: every command parses options, loads specs,
calls one library function and renders the result.

User errors (:class:`kvsim.errors.KvsimError`) print as ``error: ...`` lines on stderr
with exit code 1 and no traceback.
"""

from __future__ import annotations

import signal
import sys

import typer

from kvsim import __version__
from kvsim.commands import hardware as _hardware
from kvsim.commands import plan as _plan
from kvsim.commands import report as _report
from kvsim.commands import simulate as _sim
from kvsim.commands import trace as _trace
from kvsim.commands import validate as _validate
from kvsim.commands.estimate import estimate_cmd
from kvsim.commands.listing import list_cmd
from kvsim.errors import KvsimError
from kvsim.fileio import Terminated, describe, sigterm_raises

app = typer.Typer(
    name="kvsim",
    help="Analytical performance simulator and roofline cost model for LLM inference under KV-cache compression.",
    no_args_is_help=True,
    add_completion=True,  # kvsim --install-completion [bash|zsh|fish|powershell]
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: wraps at the terminal width, option names never cut
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
    app.add_typer(_hardware.app, name="hardware", help="starting files for your own GPU or multi-GPU system")


_register_optional()


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="print the version and exit")) -> None:
    if version:
        typer.echo(f"kvsim {__version__}")
        raise typer.Exit()


# click's exception classes, found from typer's public BadParameter (typer >= 0.23 vendors click as
# typer._click, older typer uses the click package: the class names are the same in both)
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _one_line(message: str) -> str:
    """A click/pydantic message on one line, without pydantic's ``Value error, `` prefix."""
    text = " ".join(message.split())
    return text.replace("Value error, ", "")


def main() -> None:
    """Run the app: user errors, file-system errors, Ctrl-C (exit 130) and SIGTERM (exit 143)
    each end with one ``error:`` line on stderr and no traceback. Typer turns Ctrl-C into a
    silent exit 130, so a SIGINT handler notes that it fired."""
    interrupted = []

    def _on_sigint(signum, frame):  # noqa: ARG001
        interrupted.append(True)
        raise KeyboardInterrupt

    try:
        # a background job (`kvsim ... &`, nohup) inherits SIGINT ignored: keep it so
        previous = None if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread
        previous = None
    try:
        with sigterm_raises():
            # standalone_mode=False: click's usage errors come here (one line below) instead of
            # its Usage/Try/Error block; typer.Exit(code) and Ctrl-C (130) come back as the code
            code = app(standalone_mode=False, prog_name="kvsim")
        # as click's standalone mode ends: always SystemExit (Ctrl-C's 130 is reported below)
        sys.exit(code if code.__class__ is int else 0)
    except _USAGE_ERROR as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `kvsim` or `kvsim trace` alone: the help, as click shows it
            print(err.format_message(), file=sys.stderr)
            sys.exit(err.exit_code)
        where = err.ctx.command_path if err.ctx is not None else "kvsim"
        print(f"error: {_one_line(err.format_message())} (see `{where} --help`)", file=sys.stderr)
        sys.exit(err.exit_code)
    except _CLICK_EXCEPTION as err:
        print(f"error: {_one_line(err.format_message())}", file=sys.stderr)
        sys.exit(err.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except KvsimError as err:
        for line in str(err).splitlines() or ["(no message)"]:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except Terminated as err:
        print("error: terminated", file=sys.stderr)
        sys.exit(err.exit_code)
    except OSError as err:  # a file-system error no command turned into a KvsimError
        text = describe(err)
        print(f"error: {text}" if err.filename and str(err.filename) in text
              else f"error: {err.filename or 'file system'}: {text}", file=sys.stderr)
        sys.exit(1)
    except SystemExit as exc:
        if interrupted and exc.code == 130:
            _interrupted()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _interrupted() -> None:
    print("error: interrupted", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
    main()
