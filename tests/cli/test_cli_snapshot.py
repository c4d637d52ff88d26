"""``virtlife snapshot VM ...`` run as the real command against the test driver's seeded
node: output, JSON, journal rows and exit codes, and bad options refused as usage errors
before any host is asked. Each process sees the node afresh (the test driver keeps no
state across processes), so one change is checked per process; the services' own
behaviour is in tests/unit/test_snapshots_testdriver.py, the real QEMU in
tests/integration/test_snapshots_real.py."""

from __future__ import annotations

import json

import pytest
from test_cli import (
    EXIT_INVALID_TRANSITION,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    assert_ok,
    assert_one_line_error,
    on_node,
)

from virtlife import config
from virtlife.store import open_store

EXIT_FAILED = 1


def _journal(vm: str) -> list[tuple[str, str]]:
    with open_store(config.store_path()) as store:
        return [(e.operation, e.outcome) for e in store.journal.list(vm=vm)]


def test_create_prints_the_state_and_what_was_taken() -> None:
    run = on_node("snapshot", "vm-running", "create", "s1", "--description", "first")
    assert_ok(run)
    assert run.out.strip() == ("vm-running: running (unknown); internal snapshot s1 with "
                               "the VM's memory (running)")
    assert _journal("vm-running") == [("snapshot-create", "ok")]


def test_create_json_names_the_operation_and_its_id() -> None:
    run = on_node("snapshot", "vm-off", "create", "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert data["operation"] == "snapshot-create" and len(data["op_id"]) == 12
    assert data["note"].startswith("internal snapshot snap-") and data["state"] == "shutoff"


def test_list_of_a_vm_without_snapshots_says_so_and_its_json_is_empty() -> None:
    run = on_node("snapshot", "vm-off", "list")
    assert_ok(run)
    assert run.out.strip() == "vm-off has no snapshots"
    run = on_node("snapshot", "vm-off", "list", "--json")
    assert_ok(run)
    assert json.loads(run.out) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--quiesce", "--memory"], "--memory cannot go with --quiesce"),
    (["--memory", "--disk-only"], "contradict each other"),
    (["--no-quiesce-ok"], "--no-quiesce-ok only applies with --quiesce"),
    (["--freeze-bound", "5"], "--freeze-bound only applies with --quiesce"),
])
def test_bad_option_combinations_are_one_line_usage_errors(args: list[str],
                                                           message: str) -> None:
    line = assert_one_line_error(on_node("snapshot", "vm-running", "create", "s1", *args),
                                 EXIT_USAGE)
    assert message in line
    assert _journal("vm-running") == []


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_a_bad_freeze_bound_is_a_usage_error(value: str) -> None:
    run = on_node("snapshot", "vm-running", "create", "--quiesce", "--freeze-bound", value)
    assert "--freeze-bound" in assert_one_line_error(run, EXIT_USAGE)


def test_a_bad_name_is_a_usage_error() -> None:
    line = assert_one_line_error(on_node("snapshot", "vm-running", "create", "a/b"),
                                 EXIT_USAGE)
    assert "cannot name a snapshot" in line


def test_a_memory_snapshot_of_a_shut_off_vm_is_refused_by_its_state() -> None:
    line = assert_one_line_error(on_node("snapshot", "vm-off", "create", "--memory"),
                                 EXIT_INVALID_TRANSITION)
    assert "it is shut off and has no memory to keep" in line
    assert _journal("vm-off") == [("snapshot-create", "refused")]


@pytest.mark.parametrize("args", [["create", "s1"], ["revert", "s1"], ["delete", "s1"]])
def test_a_saved_vm_refuses_snapshot_operations_saying_how_to_bring_it_back(
        args: list[str]) -> None:
    line = assert_one_line_error(on_node("snapshot", "vm-saved", *args),
                                 EXIT_INVALID_TRANSITION
                                 if args[0] != "delete" else EXIT_NOT_FOUND)
    if args[0] == "delete":  # a saved VM may drop snapshots: there is none of that name
        assert "vm-saved on " in line and "has no snapshot s1" in line
    else:
        assert "start it to restore its saved RAM" in line


def test_revert_and_delete_of_a_missing_snapshot_are_not_found() -> None:
    for verb in ("revert", "delete"):
        line = assert_one_line_error(on_node("snapshot", "vm-running", verb, "nope"),
                                     EXIT_NOT_FOUND)
        assert "has no snapshot nope; `virtlife snapshot vm-running list` lists them" in line


def test_disk_only_on_a_driver_without_it_fails_in_one_line() -> None:
    line = assert_one_line_error(
        on_node("snapshot", "vm-running", "create", "d1", "--disk-only"), EXIT_FAILED)
    assert line.startswith("cannot take snapshot d1 of vm-running on ")


def test_an_unknown_vm_is_not_found() -> None:
    assert_one_line_error(on_node("snapshot", "no-such-vm", "list"), EXIT_NOT_FOUND)


def test_the_snapshot_commands_are_registered() -> None:
    run = on_node("snapshot", "--help")
    assert_ok(run)
    for verb in ("create", "list", "revert", "delete"):
        assert f"  {verb} " in run.out
