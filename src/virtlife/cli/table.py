"""Print a table as Rich prints it, without importing Rich when the result is plain text.

Rich costs ~30 ms to import, more than a whole ``virsh list``. When the output is
not a terminal, Rich (as ``cli.app`` configures it: no box, no edge padding, 240
columns) prints plain text that this module reproduces byte for byte for simple
cells; anything Rich could render differently (a terminal, forced colour, a cell with
markup, emoji codes, wide or control characters, a table wider than the console, a
title) is handed to Rich itself. One column may be cut with "…" so that each row fits
on one line of the output (``fit``: a journal's long detail), the whole text being left
to the command's ``--json``. It holds no knowledge of what the rows mean.
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
    or None when it could differ from the plain layout. Linear, and in few passes over
    the cells (a fleet's listing has tens of thousands): the cells are checked joined
    into one text, the widths taken per column."""
    cells = [tuple(columns), *(tuple(r) for r in rows)]
    if any(len(r) != len(columns) for r in cells):
        return None
    every = " ".join(" ".join(r) for r in cells)  # " " is plain: the text is as plain
    if not (every.isascii() and every.isprintable()) or "[" in every:  # as each cell
        return None
    if ":" in every and not all(_plain_cell(c) for r in cells for c in r if ":" in c):
        return None
    widths = [max(map(len, column)) for column in zip(*cells, strict=True)]
    if sum(widths) + len(GAP) * (len(widths) - 1) > WIDTH:
        return None
    line = GAP.join(f"{{:<{w}}}" for w in widths)  # each cell left-justified to its width
    text = "\n".join(line.format(*r) for r in cells) + "\n"
    if widths == [0]:  # every line empty: Rich keeps an empty line as one space
        text = text.replace("\n", " \n")
    return text


def output_width() -> int:
    """The width a table is printed at: a terminal's own (COLUMNS first, as Rich reads
    it); off a terminal, COLUMNS when it is set (at most ``WIDTH``), else ``WIDTH``."""
    import shutil

    if sys.stdout.isatty():
        return shutil.get_terminal_size((WIDTH, 24)).columns
    columns = os.environ.get("COLUMNS", "")
    return min(int(columns), WIDTH) if columns.isdigit() and int(columns) > 0 else WIDTH


def _cells(text: str) -> int:
    """How many columns ``text`` takes (Rich's count; Rich is imported for non-ASCII)."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def cut(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` columns with "…" when it is longer."""
    line = " ".join(text.split())
    if _cells(line) <= width:
        return line
    if line.isascii():
        return line[:width - 1].rstrip() + "…"
    from rich.cells import set_cell_size

    return set_cell_size(line, width - 1).rstrip() + "…"


def fit_column(columns: Sequence[str], rows: Sequence[Sequence[str]], index: int,
               width: int) -> list[list[str]]:
    """``rows`` with column ``index`` cut so that each row fits in ``width`` columns
    beside the others as laid out, but never narrower than its header (on an output
    too narrow for the other columns, Rich then wraps them)."""
    others = sum(max(_cells(r[i]) for r in [columns, *rows])
                 for i in range(len(columns)) if i != index)
    room = max(width - others - len(GAP) * (len(columns) - 1), _cells(columns[index]))
    return [[cut(c, room) if i == index else c for i, c in enumerate(r)] for r in rows]


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]],
                *, title: str | None = None, fit: str | None = None) -> None:
    """Print ``rows`` under ``columns`` (every cell through ``str``); the column named
    ``fit`` is cut with "…" so that each row fits the output's width."""
    texts = [list(map(str, row)) for row in rows]
    if fit is not None and texts:
        texts = fit_column(columns, texts, list(columns).index(fit), output_width())
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
