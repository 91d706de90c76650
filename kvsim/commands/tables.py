"""Terminal tables that fit the terminal: a table when it fits, else one block per row.

Every table kvsim prints goes through :func:`print_rows` (many columns, one row per thing) or
:func:`print_pairs` (quantity / value). Nothing is cut: cells fold instead of ending in
``…``, and a table wider than the console (``COLUMNS=80`` included) is printed vertically,
each row as ``header  value`` lines under its first cell.
"""

from __future__ import annotations

from collections.abc import Sequence


def _fits(con, table, wrap: bool) -> bool:
    """The table's natural width (``wrap``: its narrowest, text wrapped at spaces) fits ``con``."""
    # lazy: CLI start-up
    from rich.measure import Measurement

    m = Measurement.get(con, con.options.update(max_width=1 << 16), table)
    return (m.minimum if wrap else m.maximum) <= con.width


def print_rows(con, title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], *,
               left: Sequence[str] = (), wrap: bool = False, heading: int = 1) -> None:
    """``rows`` under ``headers`` as a table on ``con`` when it fits its width (``wrap``: when it
    fits with its text wrapped, for tables of prose); else each row as a block headed by its
    first ``heading`` cells (``headers[heading:]`` and values, one per line). ``left``: headers
    of left-aligned columns (others are numbers, right-aligned)."""
    # lazy: CLI start-up
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for h in headers:
        table.add_column(h, justify="left" if h in left or h == headers[0] else "right", overflow="fold")
    for r in rows:
        table.add_row(*r)
    if _fits(con, table, wrap):
        con.print(table)
        return
    con.print(Text(title), overflow="fold")
    for r in rows:
        block = Table.grid(padding=(0, 2, 0, 0))
        block.add_column(style="dim", overflow="fold")
        block.add_column(overflow="fold")
        for h, v in zip(headers[heading:], r[heading:]):
            if v != "":
                block.add_row(h, v)
        con.print(Text(" · ".join(c for c in r[:heading] if c), style="bold"), overflow="fold")
        con.print(Padding(block, (0, 0, 0, 2)))


def print_pairs(con, title: str, pairs: Sequence[tuple[str, str]]) -> None:
    """A quantity / value table; at any width the cells fold (wrap) rather than being cut."""
    # lazy: CLI start-up
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("quantity", overflow="fold")
    t.add_column("value", justify="right", overflow="fold")
    for k, v in pairs:
        t.add_row(k, v)
    con.print(t)


def print_grid(con, pairs: Sequence[tuple[str, str]]) -> None:
    """``label  value`` lines without borders (name lists, trace facts); a value longer than the
    console wraps under itself, never past the width."""
    # lazy: CLI start-up
    from rich.table import Table

    grid = Table.grid(padding=(0, 2, 0, 0))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for k, v in pairs:
        grid.add_row(k, v)
    con.print(grid, highlight=False, markup=False)
