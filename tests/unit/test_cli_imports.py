"""The CLI loads only what a command needs: no libvirt for help, no Rich for plain
tables, no click for the hot forms of ``list`` and ``state``; and what makes that
possible (the command index, the plain table, the hot-form parser) says the same as
what it stands in for."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virtlife.cli import quick, served
from virtlife.cli.table import plain_table

PROBE = """
import sys
from virtlife.cli.main import main
code = main(sys.argv[1:])
loaded = [m for m in ("libvirt", "rich", "click", "virtlife.services.context",
                      "prometheus_client") if m in sys.modules]
sys.stderr.write("LOADED " + " ".join(loaded) + "\\n")
sys.exit(code)
"""


def _loaded(*args: str) -> tuple[int, set[str], str]:
    run = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                         text=True, timeout=60)
    line = [x for x in run.stderr.splitlines() if x.startswith("LOADED")][-1]
    return run.returncode, set(line.split()[1:]), run.stdout


@pytest.mark.parametrize("args", [
    ["--help"], ["list", "--help"], ["state", "--help"], ["start", "--help"],
    ["migrate", "--help"], ["demo", "--help"], ["attach-iso", "--help"],
    ["agent", "--help"], ["snapshot", "--help"], ["lab", "--help"], ["serve", "--help"],
    ["--version"],
])
def test_help_never_loads_libvirt_or_the_services(args: list[str]) -> None:
    code, loaded, out = _loaded(*args)
    assert code == 0
    assert "Usage: virtlife" in out or "version" in out
    assert "libvirt" not in loaded
    assert "virtlife.services.context" not in loaded
    assert "rich" not in loaded
    assert "prometheus_client" not in loaded  # the server's, loaded with it


def test_a_piped_listing_needs_neither_click_nor_rich(node_uri: str) -> None:
    code, loaded, out = _loaded("-c", node_uri, "list", "--all")
    assert code == 0
    assert out.splitlines()[0].split() == list(quick.LIST_COLUMNS)
    assert "vm-running" in out
    assert loaded == {"libvirt", "virtlife.services.context"}


def test_the_index_lists_every_command_with_its_own_help() -> None:
    from virtlife.cli import root

    loaded = {name: root.cli.commands[name] for name in root.INDEX}
    for name, command in loaded.items():
        module, attribute, text = root.INDEX[name]
        assert command.name == name
        assert getattr(sys.modules[f"virtlife.cli.{module}"], attribute) is command
        stub = click.Command(name, help=text)
        for limit in range(20, 120, 7):
            assert stub.get_short_help_str(limit) == command.get_short_help_str(limit), (
                f"INDEX[{name!r}] says {text!r}; the command's first sentence differs")
    modules = {root.INDEX[n][0] for n in root.INDEX}
    for module in modules:  # nothing registered in a module is missing from the index
        for command in getattr(sys.modules[f"virtlife.cli.{module}"], "COMMANDS", []):
            assert command.name in root.INDEX, f"{command.name} is not in cli.root.INDEX"


def test_the_media_bus_choices_are_the_services() -> None:
    from virtlife.cli.media import BUSES
    from virtlife.services.media import CdromBus

    assert BUSES == tuple(b.value for b in CdromBus)


@pytest.mark.parametrize("env", [{"VIRTLIFE_HOME": "/somewhere/else"}, {}])
def test_the_client_finds_the_store_directory_as_config_does(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife import config

    monkeypatch.delenv("VIRTLIFE_HOME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Path(served.socket_path()) == config.home() / served.SOCKET_NAME


# -- the plain table is Rich's ------------------------------------------------------------

CELL = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6).flatmap(lambda n: st.tuples(
    st.lists(CELL, min_size=n, max_size=n),
    st.lists(st.lists(CELL, min_size=n, max_size=n), max_size=5))))
def test_the_plain_table_is_what_rich_prints(table: tuple[list[str], list[list[str]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    columns, rows = table
    mine = plain_table(columns, rows)
    if mine is None:  # left to Rich: nothing to compare
        return
    theirs = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        theirs.add_row(*row)
    out = io.StringIO()
    Console(file=out, highlight=False, width=240).print(theirs)
    assert mine == out.getvalue()


def test_cells_rich_would_change_go_to_rich() -> None:
    assert plain_table(["A"], [["[bold]x[/bold]"]]) is None
    assert plain_table(["A"], [[":smile:"]]) is None
    assert plain_table(["A"], [["naïve"]]) is None
    assert plain_table(["A"], [["x" * 300]]) is None
    assert plain_table(["A"], [["qemu+tcp://h/system"]]) == "A                  \n" \
        "qemu+tcp://h/system\n"


def test_rich_prints_cells_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    """A MAC address holding ":ab:" is no emoji code, a name with brackets no markup (the
    agent's ifaddr table showed a MAC as "52:54:00🆎23:53")."""
    from virtlife.cli.table import rich_table

    rich_table(["MAC", "NAME"], [["52:54:00:ab:23:53", "vm[bold]x[/bold]"]], title="t")
    out = capsys.readouterr().out
    assert "52:54:00:ab:23:53  vm[bold]x[/bold]" in out


# -- the hot forms ----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["list"], quick.Request("list")),
    (["list", "--all", "--json"], quick.Request("list", as_json=True, show_all=True)),
    (["list", "--host", "h1", "--all"], quick.Request("list", show_all=True, host="h1")),
    (["-c", "test:///default", "list"], quick.Request("list", connect_uri="test:///default")),
    (["--connect=test:///default", "state", "a"],
     quick.Request("state", connect_uri="test:///default", vm="a")),
    (["state", "h/web1", "--json"], quick.Request("state", as_json=True, vm="h/web1")),
    (["state", "--json", "web1"], quick.Request("state", as_json=True, vm="web1")),
])
def test_the_hot_forms_are_recognised(args: list[str], expected: quick.Request) -> None:
    assert quick.parse(args) == expected


@pytest.mark.parametrize("args", [
    [], ["--help"], ["list", "--help"], ["-v", "list"], ["list", "--all", "--all"],
    ["list", "--host"], ["list", "--host", "--all"], ["list", "--host=h1"], ["list", "x"],
    ["state"], ["state", "a", "b"], ["state", "-h"], ["state", "--", "a"], ["-c"],
    ["-c", "", "list"], ["--connect=", "list"], ["start", "a"], ["list", "--queue"],
])
def test_anything_else_is_left_to_click(args: list[str]) -> None:
    assert quick.parse(args) is None


def test_a_hot_form_prints_what_the_click_command_prints(node_uri: str) -> None:
    from click.testing import CliRunner

    from virtlife.cli.root import cli

    for args in (["list", "--all"], ["list", "--json"], ["state", "vm-paused"],
                 ["state", "vm-saved", "--json"], ["state", "nope"]):
        hot = subprocess.run([sys.executable, "-m", "virtlife.cli.main", "-c", node_uri,
                              *args], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "COLUMNS": "240"})
        clicked = CliRunner().invoke(cli, ["-c", node_uri, *args])
        assert hot.stdout == clicked.stdout, args
        if clicked.exception is not None and not isinstance(clicked.exception, SystemExit):
            from virtlife.errors import VirtlifeError

            assert isinstance(clicked.exception, VirtlifeError)
            assert hot.returncode == clicked.exception.exit_code
            assert hot.stderr == f"virtlife: {clicked.exception}\n"
