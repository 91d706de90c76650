"""User-facing errors.

Everything a user can get wrong (unknown names, broken YAML, bad trace rows, bad
options) raises a :class:`KvsimError` subclass whose message is complete on its own.
The CLI prints each line of the message prefixed with ``error:`` and exits with
``exit_code``; no traceback is shown.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KvsimError(Exception):
    """An error caused by user input; ``str(err)`` is the message shown to the user."""

    exit_code = 1


class SpecError(KvsimError):
    """A hardware, model, method or calibration spec is unknown or invalid."""


class TraceError(KvsimError):
    """A trace file is missing, malformed or has no usable request."""


class ConfigError(KvsimError):
    """Options that do not fit together (e.g. a batch that cannot fit in memory)."""


#: the ``kvsim list`` command that shows each kind of name
LIST_COMMAND = {"hardware": "kvsim list hardware", "system": "kvsim list hardware", "gpu": "kvsim list hardware",
                "model": "kvsim list models", "method": "kvsim list methods", "trace": "kvsim list traces"}


#: how close a name a file gives must be to one kvsim reads to be called a likely misspelling of it
MISSPELLING_CUTOFF = 0.85


def misspelling_of(name: str, read: Iterable[str]) -> str | None:
    """The name of ``read`` that ``name`` (given in a file, not read) is most likely a misspelling of,
    or None (``num_key_value_head`` -> ``num_key_value_heads``; a merely unknown name gives None)."""
    close = difflib.get_close_matches(name, list(read), n=1, cutoff=MISSPELLING_CUTOFF)
    return close[0] if close else None


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``choices`` (lower case) close to ``name``, any case: what a "did you mean" offers."""
    return difflib.get_close_matches(name.lower(), [c.lower() for c in choices], n=n, cutoff=0.5)


def unknown_name(kind: str, name: str, choices: Iterable[str], shown: Iterable[str] | None = None) -> SpecError:
    """Error for an unknown name: close matches among every accepted spelling
    (``choices``, aliases included) and the list of valid choices (``shown``, default
    ``choices``; pass canonical names so the line stays readable)."""
    choices = sorted(set(choices))
    close = close_matches(name, choices)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    listed = sorted(set(shown)) if shown is not None else choices
    more = ""
    if shown is not None:
        listing = LIST_COMMAND.get(kind)
        more = f" (aliases accepted; see `{listing}`)" if listing else " (aliases accepted)"
    return SpecError(f"unknown {kind} '{name}'.{hint} Choices: {', '.join(listed)}{more}")
