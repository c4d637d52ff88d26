"""Operators' habits (issue 16): virsh's spellings of ``migrate`` and ``shutdown``, and a
history whose long details fit the width instead of wrapping into a block."""

from __future__ import annotations

import json

import pytest
from test_cli import (
    EXIT_INVALID_TRANSITION,
    EXIT_USAGE,
    assert_ok,
    assert_one_line_error,
    on_node,
    virtlife,
)

from support import NODE2_URI, NODE_URI


def two_hosts() -> None:
    assert_ok(virtlife("host", "add", "a", NODE_URI))
    assert_ok(virtlife("host", "add", "b", NODE2_URI))


def state_check(run_out: str) -> dict[str, str]:
    report = json.loads(run_out)
    [check] = [c for c in report["checks"] if c["name"] == "VM state"]
    return {"kind": report["kind"], **check}


# -- migrate ----------------------------------------------------------------------------


def test_migrate_live_is_the_default_move_and_refused_for_a_shut_off_vm() -> None:
    two_hosts()
    with_live = virtlife("migrate", "vm-off", "b", "--live", "--check", "--json")
    without = virtlife("migrate", "vm-off", "b", "--check", "--json")
    assert with_live.code == without.code == EXIT_INVALID_TRANSITION, with_live.err
    assert state_check(with_live.out) == state_check(without.out)
    check = state_check(with_live.out)
    assert (check["kind"], check["status"]) == ("live", "fail")
    assert "a live migration moves a VM that runs" in check["reason"]
    assert "--offline" in check["fix"]


@pytest.mark.parametrize(("args", "named"), [
    (["--live", "--offline"], ("--live", "--offline")),
    (["--live", "--suspended"], ("--live", "--suspended")),
    (["--offline", "--suspended"], ("--offline", "--suspended")),
    (["--undefinesource", "--keep-source"], ("--undefinesource", "--keep-source")),
    (["--copy-storage-inc", "--copy-storage", "all"], ("--copy-storage-inc",
                                                       "--copy-storage")),
    (["--timeout-suspend", "--timeout-postcopy"], ("--timeout-suspend",
                                                   "--timeout-postcopy")),
])
def test_migrate_refuses_two_spellings_that_disagree(args: list[str],
                                                     named: tuple[str, ...]) -> None:
    message = assert_one_line_error(on_node("migrate", "vm-running", "b", *args), EXIT_USAGE)
    assert all(name in message for name in named), message
    assert "give one" in message


@pytest.mark.parametrize(("args", "answer"), [
    (["--suspend"], "`virtlife suspend VM`"),
    (["--postcopy"], "--postcopy always (after the first pass"),
    (["--postcopy", "--json"], "--postcopy always (after the first pass"),
    (["--parallel", "--parallel-connections", "4"], "--parallel N"),
    (["--parallel-connections", "4"], "--parallel N"),
    (["--desturi", "qemu+ssh://b/system"], "`virtlife host list`"),
    (["--unsafe"], "see --check"),
    (["--postcopy-bandwidth", "10"], "--bandwidth caps post-copy too"),
])
def test_migrate_answers_a_virsh_spelling_with_virtlifes(args: list[str],
                                                         answer: str) -> None:
    message = assert_one_line_error(on_node("migrate", "vm-running", "b", *args), EXIT_USAGE)
    assert answer in message, message


# -- shutdown and reboot --mode ------------------------------------------------------------


@pytest.mark.parametrize(("command", "mode", "answer"), [
    ("shutdown", "initctl", "for LXC containers"),
    ("shutdown", "signal", "for LXC containers"),
    ("reboot", "paravirt", "for Xen guests"),
    ("shutdown", "acpi,agent", "give one mode"),
])
def test_a_virsh_shutdown_mode_virtlife_lacks_names_its_modes(command: str, mode: str,
                                                              answer: str) -> None:
    message = assert_one_line_error(on_node(command, "vm-running", "--mode", mode),
                                    EXIT_USAGE)
    assert answer in message, message
    assert "--mode agent" in message and "--mode acpi" in message, message


# -- history ------------------------------------------------------------------------------


def refused_migration() -> tuple[str, str]:
    """A migration refused with a detail of several hundred characters: (op id, detail)."""
    two_hosts()
    assert virtlife("migrate", "a/vm-running", "b").code == EXIT_INVALID_TRANSITION
    [entry] = json.loads(virtlife("history", "--json").out)
    assert len(entry["detail"]) > 300
    return entry["op_id"], entry["detail"]


def test_history_cuts_a_long_detail_to_the_width_with_an_ellipsis(
        monkeypatch: pytest.MonkeyPatch) -> None:
    op_id, detail = refused_migration()
    monkeypatch.setenv("COLUMNS", "120")
    run = virtlife("history")
    assert_ok(run)
    lines = run.out.splitlines()
    assert len(lines) == 2, run.out  # the header and one line for the one row
    assert all(len(line) <= 120 for line in lines), run.out
    row = lines[1].rstrip()
    assert op_id in row and row.endswith("…"), row
    assert detail.startswith(row.split("root  ", 1)[1].removesuffix("…")), row
    # the whole text stays in --json and in `operation ID`
    assert json.loads(virtlife("history", "--json").out)[0]["detail"] == detail
    assert json.loads(virtlife("operation", op_id, "--json").out)["detail"] == detail


def test_history_in_a_pipe_keeps_each_row_on_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    refused_migration()
    monkeypatch.delenv("COLUMNS", raising=False)
    run = virtlife("history")
    assert_ok(run)
    lines = run.out.splitlines()
    assert len(lines) == 2, run.out
    assert all(len(line) <= 240 for line in lines), run.out
    assert lines[1].rstrip().endswith("…")

