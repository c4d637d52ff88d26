"""Print a table as Rich prints it, without importing Rich when the result is plain text.

Rich costs ~30 ms to import, more than a whole ``virsh list``. When the output is
not a terminal, Rich (as ``cli.app`` configures it: no box, no edge padding, 240
columns) prints plain text that this module reproduces byte for byte for simple
cells; anything Rich could render differently (a terminal, forced colour, a cell with
markup, emoji codes, wide or control characters, a table wider than the console, a
title) is handed to Rich itself. It holds no knowledge of what the rows mean.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

WIDTH = 240  # the console width ``cli.app`` gives Rich when stdout is not a terminal
GAP = "  "  # Rich's padding (0, 1) between two cells, none at the edges
_RICH_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def _plain_cell(text: str) -> bool:
    """True when Rich prints ``text`` unchanged, one character per column."""
    if not (text.isascii() and text.isprintable()) or "[" in text:
        return False
    colon = text.find(":")
    # ":name:" may be an emoji code; leave the rare cell with two colons to Rich
    return colon < 0 or text.find(":", colon + 1) < 0


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str | None:
    """The text Rich would print for this table on a 240-column non-terminal console,
    or None when it could differ from the plain layout."""
    cells = [list(columns), *(list(r) for r in rows)]
    if any(len(r) != len(columns) for r in cells):
        return None
    if not all(_plain_cell(c) for r in cells for c in r):
        return None
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    if sum(widths) + len(GAP) * (len(widths) - 1) > WIDTH:
        return None
    lines = [GAP.join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines = [line or " " for line in lines]  # Rich keeps an empty line as one space
    return "\n".join(lines) + "\n"


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]],
                *, title: str | None = None) -> None:
    """Print ``rows`` under ``columns`` (every cell through ``str``)."""
    texts = [[str(c) for c in row] for row in rows]
    if title is None and not sys.stdout.isatty() and not any(
            os.environ.get(name) for name in _RICH_ENV):
        text = plain_table(columns, texts)
        if text is not None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
    rich_table(columns, texts, title=title)


def rich_table(columns: Sequence[str], rows: Sequence[Sequence[str]],
               *, title: str | None = None) -> None:
    """Print the table through Rich (imported here, on first use)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*row)
    # Wide output when piped, so that tables never wrap inside a cell in logs and tests.
    # cells are data (names, addresses, messages): never markup nor emoji codes
    Console(highlight=False, markup=False, emoji=False,
            width=None if sys.stdout.isatty() else WIDTH).print(table)
