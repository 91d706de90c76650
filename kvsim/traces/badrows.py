"""Rows a trace reader cannot use: counted by kind and reported, or (strict) an error.

Every reader sends each unusable row here with its kind, its place (``file:line``, or
``file: record 7``) and one sentence saying which field was wrong and what was expected.
Without ``strict`` the row is dropped and counted; the first row of each kind is kept for
the report. With ``strict`` the first one raises :class:`~kvsim.errors.TraceError` with that
``place: problem`` line.

Kinds (:data:`BAD_KINDS`): ``unparseable`` (a line that is not JSON, not an object, or a
CSV row with the wrong number of columns), ``missing_field`` (a mapped field absent or
empty), ``not_a_number`` (text, a list, ``true``... where a number is expected),
``bad_time`` (an arrival that is NaN, infinite, negative, too large or not a date-time),
``bad_token_count`` (a token count that is NaN, negative, fractional or above 2**31 - 1),
``bad_blocks`` (Mooncake ``hash_ids`` that are not a list of int64 or too many),
``bad_conversation`` (a ShareGPT conversation whose messages have no role or text).

Not bad rows: failed requests (0 output tokens; BurstGPT marks failures so) and rows with
0 prompt tokens; :func:`kvsim.traces.pipeline.build_trace` drops and counts those itself.
Whole-file problems (not found, not UTF-8, a missing column, no header) are always errors.
"""

from __future__ import annotations

from collections import Counter

from kvsim.errors import TraceError

BAD_KINDS = ("unparseable", "missing_field", "not_a_number", "bad_time", "bad_token_count", "bad_blocks",
             "bad_conversation")


class BadRow(Exception):
    """Raised inside a reader's row parser; the reader hands it to :meth:`BadRows.add`."""

    def __init__(self, kind: str, problem: str) -> None:
        assert kind in BAD_KINDS, kind
        super().__init__(problem)
        self.kind = kind
        self.problem = problem


class BadRows:
    """Counts of dropped rows by kind, with the first ``place: problem`` of each kind.

    ``strict``: the first bad row raises TraceError instead (the same one-line message).
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.counts: Counter = Counter()
        self.first: dict[str, str] = {}
        self.first_seen: str | None = None  # the first bad row of any kind, in the order they were added

    def add(self, kind: str, place: str, problem: str, count: int = 1) -> None:
        """Record ``count`` bad rows of ``kind``; the first one is at ``place``."""
        assert kind in BAD_KINDS, kind
        message = f"{place}: {problem}"
        if self.strict:
            raise TraceError(message)
        self.counts[kind] += count
        self.first.setdefault(kind, message)
        if self.first_seen is None:
            self.first_seen = message

    def add_row(self, bad: BadRow, place: str) -> None:
        self.add(bad.kind, place, bad.problem)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_kind(self) -> dict[str, int]:
        """``{kind: count}`` in :data:`BAD_KINDS` order, kinds with no row left out."""
        return {k: self.counts[k] for k in BAD_KINDS if self.counts.get(k)}

    def report(self) -> str | None:
        """One line for the user (None when no row was dropped)."""
        if not self.total:
            return None
        kinds = ", ".join(f"{k} {n}" for k, n in self.by_kind().items())
        first = self.first_seen or self.first[next(iter(self.by_kind()))]  # (the file's first bad row, as --strict names it)
        return f"{self.total} bad rows dropped ({kinds}; first: {first}); --strict makes them an error"
