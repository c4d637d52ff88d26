"""``virtlife --help`` printed by ``cli.roothelp`` (no click) is click's page for the
root group, byte for byte, at every width, and at the width click would pick."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

import click
import pytest
from click.formatting import HelpFormatter

from virtlife.cli import roothelp
from virtlife.cli.main import main
from virtlife.cli.root import cli, run_click

CLICK_HELP = ("import sys\nfrom virtlife.cli.root import run_click\n"
              "sys.exit(run_click(sys.argv[1:]))")


def _clicks_page(width: int) -> str:
    ctx = click.Context(cli, info_name="virtlife", terminal_width=width, **cli.context_settings)
    return cli.get_help(ctx)


@pytest.mark.parametrize("width", range(1, 161))
def test_the_page_is_clicks_at_every_width(width: int) -> None:
    assert roothelp.render(width) == _clicks_page(width)


def test_a_longer_first_sentence_is_shortened_as_click_shortens_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    long = ("A first sentence with a hyphenated-word, e.g. this one, and then far too "
            "many words to fit in any column at all. A second sentence.")
    for text in (long, "\b\nRaw first paragraph.", "Trailing vs. lowercase words.", "x" * 90):
        stub = click.Command("x", help=text)
        for limit in range(0, 100, 3):
            assert roothelp.short_help(text, limit) == stub.get_short_help_str(limit), (
                text, limit)


@pytest.mark.parametrize("columns", [None, "", "0", "-3", "abc", "10", "51", "52", "70",
                                     "79", "80", "81", "300"])
def test_the_width_is_the_one_click_picks(columns: str | None,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert roothelp.help_width() == HelpFormatter().width


@pytest.mark.parametrize(("args", "code", "stream"), [
    (["--help"], 0, "out"), (["-h"], 0, "out"), ([], 64, "err"),
])
def test_main_prints_what_click_prints(args: list[str], code: int, stream: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == code
    fast = capsys.readouterr()
    assert run_click(args) == code
    clicked = capsys.readouterr()
    assert (fast.out, fast.err) == (clicked.out, clicked.err)
    assert getattr(fast, stream).startswith("Usage: virtlife [OPTIONS] COMMAND [ARGS]...")


def _on_terminal(code: list[str], columns: int) -> bytes:
    """What ``python CODE...`` writes to a terminal ``columns`` wide (no $COLUMNS)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        run = subprocess.run([sys.executable, *code], stdout=slave, stderr=subprocess.PIPE,
                             env=env, timeout=60)
    finally:
        os.close(slave)
    reader.join(10)
    os.close(master)
    assert run.returncode == 0, run.stderr
    return b"".join(chunks)


@pytest.mark.parametrize("columns", [40, 66, 120])
def test_on_a_terminal_the_page_fits_it_as_clicks_does(columns: int) -> None:
    fast = _on_terminal(["-m", "virtlife.cli.main", "--help"], columns)
    clicked = _on_terminal(["-c", CLICK_HELP, "--help"], columns)
    assert fast == clicked
    page = roothelp.render(roothelp.help_width(columns)) + "\n"
    assert fast.decode() == page.replace("\n", "\r\n")  # the terminal's own width
