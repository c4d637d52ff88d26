"""Terminal queries in a console's output, removed where no terminal reads it.

A guest's shell or getty asks its terminal where the cursor is (Device Status Report,
``ESC[6n``; DEC's ``ESC[?6n``) and a terminal answers by typing the position back. When
the console's output goes to a file or a pipe nothing answers, and the raw bytes show
as ``^[[6n`` in the text. ``QueryStripper`` removes them from a byte stream read in
chunks (a query split across two chunks too) and answers nothing. Output that goes to
a real terminal is left as it is: the terminal answers. Pure bytes in, bytes out.
"""

from __future__ import annotations

from typing import Final

QUERIES: Final = (b"\x1b[6n", b"\x1b[?6n")


def _held_back(data: bytes) -> int:
    """How many bytes at the end of ``data`` may begin a query (kept for the next
    chunk); 0 when none can."""
    for size in range(min(len(data), max(map(len, QUERIES)) - 1), 0, -1):
        tail = data[-size:]
        if any(q.startswith(tail) for q in QUERIES):
            return size
    return 0


class QueryStripper:
    """Remove ``QUERIES`` from a byte stream fed chunk by chunk: ``feed`` returns what
    can be written now, ``flush`` what was kept back at the end of the stream."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        data = self._held + data
        while True:  # a removal may join the pieces of another query
            stripped = data
            for query in QUERIES:
                stripped = stripped.replace(query, b"")
            if stripped == data:
                break
            data = stripped
        keep = _held_back(data)
        self._held = data[len(data) - keep:] if keep else b""
        return data[:len(data) - keep]

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held
