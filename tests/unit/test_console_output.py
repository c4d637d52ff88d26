"""The serial console's output path: a guest's cursor-position query (``ESC[6n``) is
removed where stdout is a file or pipe (it showed raw there, issue 15) and passed
through to a real terminal, which answers it. The query split over reads, the DEC
form, and bytes that only look like the start of one are checked on the pure filter
(``services.termquery``); ``cli.console._copy_output`` with a session that replays
chunks, as QEMU's pty gives them."""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator

import pytest

from virtlife.cli import console
from virtlife.services.termquery import QueryStripper

DSR = b"\x1b[6n"


def _through(chunks: list[bytes]) -> bytes:
    strip = QueryStripper()
    return b"".join(strip.feed(c) for c in chunks) + strip.flush()


def test_the_cursor_position_query_is_removed_and_the_rest_kept() -> None:
    assert _through([b"login: " + DSR + b"\x1b[1mbold\x1b[0m\r\n"]) == (
        b"login: \x1b[1mbold\x1b[0m\r\n")
    assert _through([DSR + DSR + b"x" + b"\x1b[?6n"]) == b"x"


@pytest.mark.parametrize("cut", range(1, len(DSR)))
def test_a_query_split_over_two_reads_is_removed(cut: int) -> None:
    data = b"abc" + DSR + b"def"
    assert _through([data[:3 + cut], data[3 + cut:]]) == b"abcdef"


def test_what_only_begins_like_a_query_is_written_unchanged() -> None:
    strip = QueryStripper()
    assert strip.feed(b"a\x1b[") == b"a"  # kept back: it may be a query
    assert strip.feed(b"5n\x1b[6") == b"\x1b[5n"
    assert strip.feed(b"x") == b"\x1b[6x"
    assert strip.feed(b"end\x1b") == b"end"
    assert strip.flush() == b"\x1b"  # the stream's end writes what was kept back
    assert _through([b"\x1b[\x1b[6n6n"]) == b""  # what a removal joins is removed too


class _Replay:
    """A ``SerialSession`` stand-in whose output is ``chunks``, then its end."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)

    def read(self, timeout_s: float | None = None) -> bytes:
        return next(self._chunks, b"")


class _Stdout(io.TextIOWrapper):
    def __init__(self, tty: bool) -> None:
        super().__init__(io.BytesIO())
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _printed(monkeypatch: pytest.MonkeyPatch, chunks: list[bytes], *, tty: bool) -> bytes:
    out = _Stdout(tty)
    monkeypatch.setattr(sys, "stdout", out)
    console._copy_output(_Replay(chunks), threading.Event())  # type: ignore[arg-type]
    raw = out.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue()


def test_console_output_to_a_pipe_or_file_has_no_cursor_query(
        monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [b"Debian GNU/Linux 12 vm ttyS0\r\n\x1b[", b"6nvm login: "]
    assert _printed(monkeypatch, chunks, tty=False) == (
        b"Debian GNU/Linux 12 vm ttyS0\r\nvm login: ")


def test_console_output_to_a_terminal_passes_the_query_through(
        monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [b"vm login: \x1b[", b"6n"]
    assert _printed(monkeypatch, chunks, tty=True) == b"vm login: " + DSR
