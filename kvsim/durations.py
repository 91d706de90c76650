"""Durations written by people: ``50ms``, ``2s``, ``1.5min``; the one parser every duration
option of the CLI uses (SLOs, timeouts, waits).

A bare number keeps the meaning the option always had: seconds. Units (case-insensitive,
optional space before the unit): ``ns``, ``us`` (also ``µs``), ``ms``, ``s`` (``sec``),
``min`` (``m``), ``h``. vLLM's benchmark tools speak milliseconds (``--goodput ttft:500``),
so an SLO copied from there needs ``ms``: ``--slo-ttft 500ms``.
"""

from __future__ import annotations

import math
import re

from kvsim.errors import ConfigError

#: seconds per unit
SECONDS_PER_UNIT: dict[str, float] = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0,
    "m": 60.0, "min": 60.0, "h": 3600.0,
}
_DURATION = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([a-zµ]*)\s*$", re.IGNORECASE)
EXAMPLES = "such as 50ms, 2s or 1.5min (a bare number is seconds)"


def parse_duration_s(text: str | float | int, flag: str, *, allow_zero: bool = False) -> float:
    """Seconds in ``text``: ``"50ms"`` -> 0.05, ``"1.5min"`` -> 90.0, ``"2"`` -> 2.0 (a bare
    number is seconds); a number is taken as seconds. Anything else, a negative, infinite or
    NaN duration, or zero unless ``allow_zero``, is a one-line :class:`ConfigError` naming
    ``flag``."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, shown = float(text), repr(text)
    else:
        shown = str(text)
        m = _DURATION.match(shown)
        unit = m.group(2).lower() if m else ""
        if m is None or unit not in SECONDS_PER_UNIT and unit != "":
            raise ConfigError(f"{flag} must be a duration {bound} {EXAMPLES}, got '{shown}'")
        value = float(m.group(1)) * SECONDS_PER_UNIT.get(unit, 1.0)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{flag} must be a duration {bound} {EXAMPLES}, got '{shown}'")
    return value


def parse_optional_duration_s(text: str | None, flag: str, *, allow_zero: bool = False) -> float | None:
    """:func:`parse_duration_s`, or None when the option was not given."""
    return None if text is None else parse_duration_s(text, flag, allow_zero=allow_zero)
