"""CLI tests: run the real ``virtlife`` command and check its stdout, stderr and exit code.

Every behaviour test starts a fresh ``virtlife`` process. libvirt's test driver keeps
state per connection only, so each process sees the node files in ``tests/data`` in
their seeded state: one state change is tested per process. The store (inventory and
journal) lives in the test's own ``VIRTLIFE_HOME`` (the autouse ``isolated_home``
fixture), so it persists across the processes of one test and nowhere else.

Only the documented-command checks use click in-process: they read help texts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from support import NODE2_URI, NODE_URI, UNREACHABLE_URI

_SCRIPT = Path(sys.executable).with_name("virtlife")
VIRTLIFE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "virtlife.cli.main"]

# Exit codes of the error tree (virtlife.errors).
EXIT_NOT_FOUND = 2
EXIT_INVALID_TRANSITION = 3
EXIT_USAGE = 64  # bad usage or input, click's usage errors included

SEEDED = {  # name -> (state label, reason) as `list --all` shows them on node.xml
    "vm-running": ("running", "unknown"),
    "vm-paused": ("paused", "unknown"),
    "vm-saved": ("saved", "managed save"),
    "vm-off": ("shut off", "unknown"),
    "vm-crashed": ("crashed", "unknown"),
    "vm-pmsusp": ("pmsuspended", "unknown"),
}

NEW_DOMAIN = """<domain type='test'>
  <name>vm-new</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type>hvm</type></os>
</domain>
"""


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def virtlife(*args: str, timeout: float = 60) -> Run:
    """Run ``virtlife ARGS`` as a subprocess with this test's environment."""
    proc = subprocess.run(
        [*VIRTLIFE, *args], capture_output=True, text=True, env=os.environ.copy(),
        timeout=timeout, check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def on_node(*args: str) -> Run:
    return virtlife("-c", NODE_URI, *args)


def assert_ok(run: Run) -> None:
    assert run.code == 0, f"exit {run.code}\nstdout:\n{run.out}\nstderr:\n{run.err}"
    assert "Traceback" not in run.err


def assert_one_line_error(run: Run, code: int | None = None) -> str:
    """The command failed cleanly: non-zero exit, one ``virtlife: ...`` line, no traceback.

    Returns that line without the ``virtlife: `` prefix.
    """
    context = f"exit {run.code}\nstdout:\n{run.out}\nstderr:\n{run.err}"
    assert "Traceback" not in run.out + run.err, context
    assert run.code != 0, context
    if code is not None:
        assert run.code == code, context
    assert len(run.err_lines) == 1, context
    assert run.err_lines[0].startswith("virtlife: "), context
    return run.err_lines[0].removeprefix("virtlife: ")


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a Rich table printed with ``box=None``: cells split on 2+ spaces.

    (No cell here contains two spaces in a row; ``shut off`` has one.)
    """
    lines = [line for line in text.splitlines() if line.strip()]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


def rows_by_name(text: str) -> dict[str, list[str]]:
    return {row[1]: row for row in table_rows(text)}


# -- list on one libvirt URI ----------------------------------------------------------


def test_list_all_shows_every_seeded_vm_with_its_state_and_reason() -> None:
    run = on_node("list", "--all")
    assert_ok(run)
    header = run.out.splitlines()[0].split()
    assert header == ["HOST", "NAME", "STATE", "REASON", "VCPUS", "MEMORY"]
    rows = rows_by_name(run.out)
    assert set(rows) == set(SEEDED)
    for name, (label, reason) in SEEDED.items():
        assert rows[name][2:4] == [label, reason], rows[name]
    assert rows["vm-saved"][4:] == ["2", "256 MiB"]


def test_list_without_all_hides_shut_off_and_saved_vms() -> None:
    run = on_node("list")
    assert_ok(run)
    assert set(rows_by_name(run.out)) == {"vm-running", "vm-paused", "vm-crashed", "vm-pmsusp"}


def test_list_json_has_host_name_state_reason_vcpus_and_memory() -> None:
    run = on_node("list", "--all", "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert data["unreachable"] == []
    vms = {vm["name"]: vm for vm in data["vms"]}
    assert set(vms) == set(SEEDED)
    for vm in vms.values():
        assert {"host", "name", "state", "reason", "vcpus", "memory_mib"} <= set(vm)
        assert vm["host"] == NODE_URI
    assert vms["vm-saved"]["state"] == "saved"
    assert vms["vm-saved"]["reason"] == "managed save"
    assert (vms["vm-saved"]["vcpus"], vms["vm-saved"]["memory_mib"]) == (2, 256)
    assert vms["vm-off"]["state"] == "shutoff"
    assert vms["vm-pmsusp"]["state"] == "pmsuspended"


# -- the fleet: several hosts from the inventory ----------------------------------------


@pytest.fixture
def fleet() -> None:
    """An inventory of hosts a (node.xml), b (node2.xml) and down (unreachable)."""
    assert_ok(virtlife("host", "add", "a", NODE_URI))
    assert_ok(virtlife("host", "add", "b", NODE2_URI))
    down = virtlife("host", "add", "down", UNREACHABLE_URI)
    assert down.code == 0  # recorded even though it is down, with a warning
    assert "added host down" in down.out
    assert "warning" in down.err and "down" in down.err


@pytest.mark.usefixtures("fleet")
def test_fleet_list_shows_every_host_and_marks_the_unreachable_one() -> None:
    run = virtlife("list", "--all")
    assert_ok(run)
    rows = table_rows(run.out)
    hosts = {row[0] for row in rows}
    assert hosts == {"a", "b", "down"}
    assert {row[1] for row in rows if row[0] == "a"} == set(SEEDED)
    assert {row[1] for row in rows if row[0] == "b"} == {"vm-running", "db1"}
    (down,) = [row for row in rows if row[0] == "down"]
    assert down[2] == "unreachable"


@pytest.mark.usefixtures("fleet")
def test_fleet_list_host_option_shows_only_that_host() -> None:
    run = virtlife("list", "--all", "--host", "b")
    assert_ok(run)
    rows = table_rows(run.out)
    assert {row[0] for row in rows} == {"b"}
    assert {row[1] for row in rows} == {"vm-running", "db1"}


@pytest.mark.usefixtures("fleet")
def test_fleet_list_json_reports_the_unreachable_host() -> None:
    run = virtlife("list", "--all", "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert {vm["host"] for vm in data["vms"]} == {"a", "b"}
    assert [u["host"] for u in data["unreachable"]] == ["down"]
    assert data["unreachable"][0]["uri"] == UNREACHABLE_URI
    assert data["unreachable"][0]["error"]


@pytest.mark.usefixtures("fleet")
def test_list_of_an_unknown_host_fails_with_one_line() -> None:
    message = assert_one_line_error(virtlife("list", "--host", "nosuch"), EXIT_NOT_FOUND)
    assert "nosuch" in message


@pytest.mark.usefixtures("fleet")
def test_ambiguous_name_fails_and_lists_the_candidates() -> None:
    message = assert_one_line_error(virtlife("state", "vm-running"), EXIT_USAGE)
    assert "ambiguous" in message and message.endswith("a/vm-running or b/vm-running")
    assert "a/vm-running" in message
    assert "b/vm-running" in message


@pytest.mark.usefixtures("fleet")
def test_host_qualified_name_resolves_an_ambiguous_one() -> None:
    run = virtlife("state", "b/vm-running", "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert (data["host"], data["state"]) == ("b", "running")


@pytest.mark.usefixtures("fleet")
def test_unique_name_is_found_on_its_host_while_another_host_is_down() -> None:
    run = virtlife("state", "db1", "--json")
    assert_ok(run)
    assert json.loads(run.out)["host"] == "b"


@pytest.mark.usefixtures("fleet")
def test_operation_on_a_host_qualified_name_changes_that_host() -> None:
    run = virtlife("suspend", "b/vm-running", "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert (data["host"], data["vm"], data["state"]) == ("b", "vm-running", "paused")


# -- valid transitions, one per process --------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("start", "vm-off"), "vm-off: running (booted)"),
        (("suspend", "vm-running"), "vm-running: paused (user)"),
        (("resume", "vm-paused"), "vm-paused: running (unpaused)"),
        (("destroy", "vm-running"), "vm-running: shut off (destroyed)"),
        (("destroy", "vm-paused"), "vm-paused: shut off (destroyed)"),
        (("destroy", "vm-crashed"), "vm-crashed: shut off (destroyed)"),
        (("managedsave", "vm-running"), "vm-running: saved (managed save)"),
        (("managedsave", "vm-paused"), "vm-paused: saved (managed save)"),
        (("managedsave-remove", "vm-saved"), "vm-saved: shut off (unknown)"),
        (("shutdown", "vm-running"), "vm-running: shut off (shutdown)"),
        (("undefine", "vm-off"), "vm-off: undefined"),
        (("undefine", "vm-saved", "--managed-save"), "vm-saved: undefined"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_valid_transition_prints_the_new_state_and_reason(
    args: tuple[str, ...], expected: str
) -> None:
    run = on_node(*args)
    assert_ok(run)
    state, _, note = run.out.strip().partition("; ")
    assert state == expected
    if args[0] == "resume":  # the test driver keeps the clock it was set to, and it does
        # not tick: read back a moment later it is behind by that moment, under a second
        assert re.fullmatch(r"guest clock .+, now (in step|0\.\d{3} s behind) "
                            r"\(set from this machine's clock\)", note), note
    elif args[0] == "shutdown":  # no agent, no ACPI button there: libvirt's own way
        assert note.startswith("powered off by the method libvirt chose after ")
    else:
        assert note == ""
    assert run.err == ""


def test_resume_without_time_sync_says_only_the_state() -> None:
    run = on_node("resume", "vm-paused", "--no-sync-time")
    assert_ok(run)
    assert run.out.strip() == "vm-paused: running (unpaused)"


def test_start_of_a_managed_saved_vm_runs_it() -> None:
    # The test driver reports "booted" here; real QEMU reports "restored" (integration).
    run = on_node("start", "vm-saved", "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert (data["operation"], data["state"]) == ("start", "running")


@pytest.mark.parametrize("op", [("reboot", "--mode", "default"), ("reset",)])
def test_reboot_and_reset_leave_a_running_vm_running(op: tuple[str, ...]) -> None:
    # the test driver sends no reset event: the ladder (the default) waits for one
    run = on_node(op[0], "vm-running", *op[1:])
    assert_ok(run)
    assert run.out.startswith("vm-running: running")


def test_transition_json_names_host_vm_operation_and_new_state() -> None:
    run = on_node("suspend", "vm-running", "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert data["host"] == NODE_URI
    assert data["vm"] == "vm-running"
    assert data["operation"] == "suspend"
    assert (data["state"], data["reason"]) == ("paused", "user")
    assert data["duration_s"] >= 0


def test_save_writes_the_file_and_leaves_the_vm_saved(tmp_path: Path) -> None:
    image = tmp_path / "vm-running.sav"
    run = on_node("save", "vm-running", str(image))
    assert_ok(run)
    assert run.out.strip() == "vm-running: saved (saved to file)"
    assert image.is_file() and image.stat().st_size > 0


def test_save_refuses_to_overwrite_an_existing_file(tmp_path: Path) -> None:
    image = tmp_path / "taken.sav"
    image.write_text("precious")
    message = assert_one_line_error(on_node("save", "vm-running", str(image)))
    assert "exists" in message
    assert image.read_text() == "precious"


def test_restore_in_a_fresh_process_brings_the_saved_vm_back(tmp_path: Path) -> None:
    image = tmp_path / "vm-running.sav"
    assert_ok(on_node("save", "vm-running", str(image)))
    # test:///default has no vm-running, so the image restores as a new running domain.
    run = virtlife("-c", "test:///default", "restore", str(image), "--no-sync-time")
    assert_ok(run)
    assert run.out.strip() == "vm-running: running (restored)"


def test_restore_of_a_missing_file_fails_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sav"
    message = assert_one_line_error(on_node("restore", str(missing)), EXIT_NOT_FOUND)
    assert str(missing) in message


def test_failed_restore_of_a_bad_image_keeps_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sav"
    junk.write_text("not a save image\n")
    assert_one_line_error(virtlife("-c", "test:///default", "restore", str(junk)))
    assert junk.read_text() == "not a save image\n"


def test_refused_restore_over_a_running_vm_keeps_the_file(tmp_path: Path) -> None:
    image = tmp_path / "vm-running.sav"
    assert_ok(on_node("save", "vm-running", str(image)))
    size = image.stat().st_size
    # A fresh process sees vm-running running again: restoring over it is refused.
    message = assert_one_line_error(on_node("restore", str(image)), EXIT_INVALID_TRANSITION)
    assert message.startswith("cannot restore vm-running: it is running")
    assert image.stat().st_size == size


# -- define, create, dumpxml, state, info ------------------------------------------------


def test_define_of_a_new_domain_defines_it_shut_off(tmp_path: Path) -> None:
    xml = tmp_path / "vm-new.xml"
    xml.write_text(NEW_DOMAIN)
    run = on_node("define", str(xml), "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert (data["vm"], data["operation"], data["state"]) == ("vm-new", "define", "shutoff")


def test_define_of_an_existing_vm_with_its_uuid_updates_it(tmp_path: Path) -> None:
    xml = tmp_path / "vm-off.xml"
    xml.write_text(NEW_DOMAIN.replace("vm-new", "vm-off").replace(
        "<memory", "<uuid>44444444-4444-4444-4444-444444444444</uuid><memory"))
    run = on_node("define", str(xml))
    assert_ok(run)
    assert run.out.startswith("vm-off: shut off")


def test_define_of_malformed_xml_fails_with_one_line(tmp_path: Path) -> None:
    xml = tmp_path / "broken.xml"
    xml.write_text("<domain type='test'><name>broken</name>")
    message = assert_one_line_error(on_node("define", str(xml)))
    assert "not well-formed" in message


def test_define_of_xml_that_is_not_a_domain_fails_with_one_line(tmp_path: Path) -> None:
    xml = tmp_path / "net.xml"
    xml.write_text("<network><name>n</name></network>")
    message = assert_one_line_error(on_node("define", str(xml)))
    assert "<network>" in message and "<domain>" in message


def test_define_of_a_taken_name_with_another_uuid_says_already_exists(tmp_path: Path) -> None:
    xml = tmp_path / "clash.xml"
    xml.write_text(NEW_DOMAIN.replace("vm-new", "vm-off").replace(
        "<memory", "<uuid>99999999-9999-9999-9999-999999999999</uuid><memory"))
    message = assert_one_line_error(on_node("define", str(xml)))
    assert "already exists" in message
    assert "vm-off" in message


def test_define_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    run = on_node("define", str(tmp_path / "nope.xml"))
    assert run.code == EXIT_USAGE
    assert "Traceback" not in run.err
    assert "does not exist" in run.err


def test_create_of_a_new_vm_defines_it() -> None:
    run = on_node("create", "vm-new", "--memory", "64", "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert (data["vm"], data["operation"], data["state"]) == ("vm-new", "define", "shutoff")


def test_create_start_whose_agent_wait_fails_says_the_vm_stays_defined_and_runs() -> None:
    # the test driver has no guest agent: the start boots the VM, the wait for the
    # agent fails; the error said only the agent's words (issue 15)
    run = on_node("create", "vm-new", "--memory", "64", "--start", "--wait-agent")
    assert run.code != 0 and "Traceback" not in run.err
    message = run.err.strip()
    assert "guest-ping" in message  # the failure itself, first
    assert "vm-new was defined on host" in message and "stays defined" in message
    assert "it is running now" in message
    assert "`virtlife undefine vm-new`" in message


def test_create_with_a_taken_name_says_already_exists() -> None:
    message = assert_one_line_error(on_node("create", "vm-off"))
    assert "already exists" in message
    assert "vm-off" in message


def test_dumpxml_prints_the_domain_xml() -> None:
    run = on_node("dumpxml", "vm-off")
    assert_ok(run)
    assert "<name>vm-off</name>" in run.out
    root = ET.fromstring(run.out)
    assert root.tag == "domain"
    assert root.findtext("uuid") == "44444444-4444-4444-4444-444444444444"


@pytest.mark.parametrize(("vm", "expected"), [
    ("vm-paused", "paused (unknown)"),
    ("vm-saved", "saved (managed save)"),
    ("vm-crashed", "crashed (unknown)"),
])
def test_state_prints_state_and_reason(vm: str, expected: str) -> None:
    run = on_node("state", vm)
    assert_ok(run)
    assert run.out.strip() == expected


def test_state_json_has_host_vm_state_label_and_reason() -> None:
    run = on_node("state", "vm-off", "--json")
    assert_ok(run)
    assert json.loads(run.out) == {"host": NODE_URI, "vm": "vm-off", "state": "shutoff",
                                   "label": "shut off", "reason": "unknown"}


def test_info_json_describes_the_vm() -> None:
    run = on_node("info", "vm-saved", "--json")
    assert_ok(run)
    data = json.loads(run.out)
    assert data["name"] == "vm-saved"
    assert data["uuid"] == "33333333-3333-3333-3333-333333333333"
    assert (data["vcpus"], data["managed_save"]) == (2, True)


# -- refused and failed operations: one line, the right exit code, no traceback ----------


def test_resume_of_a_running_vm_is_refused_in_one_line() -> None:
    run = on_node("resume", "vm-running")
    assert run.err == "virtlife: cannot resume vm-running: it is running, not paused\n", run.err
    assert run.code == EXIT_INVALID_TRANSITION
    assert run.out == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("start", "vm-paused"),
         "cannot start vm-paused: it is paused, not shut off or saved; resume it instead"),
        (("undefine", "vm-running"),
         "cannot undefine vm-running: it is running, not shut off or saved; "
         "shut it down or destroy it first"),
        (("shutdown", "vm-crashed"), "cannot shutdown vm-crashed: it is crashed"),
        (("suspend", "vm-off"), "cannot suspend vm-off: it is shut off"),
        (("resume", "vm-pmsusp"), "cannot resume vm-pmsusp: it is pmsuspended"),
        (("managedsave-remove", "vm-off"), "cannot managedsave-remove vm-off: it is shut off"),
        (("undefine", "vm-saved"), "cannot undefine vm-saved: it has a managed-save image"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else None,
)
def test_invalid_transition_is_refused_with_exit_code_3(
    args: tuple[str, ...], expected: str
) -> None:
    message = assert_one_line_error(on_node(*args), EXIT_INVALID_TRANSITION)
    assert message.startswith(expected)


@pytest.mark.parametrize("op", ["state", "start", "dumpxml", "info"])
def test_unknown_vm_fails_with_exit_code_2_naming_it(op: str) -> None:
    message = assert_one_line_error(on_node(op, "no-such-vm"), EXIT_NOT_FOUND)
    assert "no-such-vm" in message


@pytest.mark.parametrize(("op", "vm"), [("pmsuspend", "vm-running"),
                                        ("pmwakeup", "vm-pmsusp")])
def test_power_management_on_the_test_driver_fails_cleanly(op: str, vm: str) -> None:
    message = assert_one_line_error(on_node(op, vm))
    assert "not supported" in message


def test_unknown_option_is_a_usage_error_without_traceback() -> None:
    run = on_node("list", "--bogus")
    assert run.code == EXIT_USAGE
    assert "No such option" in run.err
    assert "Traceback" not in run.err


# -- the host inventory ------------------------------------------------------------------


def test_host_list_shows_the_implicit_local_host_while_the_inventory_is_empty() -> None:
    run = virtlife("host", "list")
    assert_ok(run)
    assert [row[:2] for row in table_rows(run.out)] == [["local", "qemu:///system"]]


def test_host_add_then_list_shows_the_added_host_instead_of_local() -> None:
    added = virtlife("host", "add", "a", NODE_URI)
    assert_ok(added)
    assert added.out.startswith(f"added host a ({NODE_URI})")
    run = virtlife("host", "list", "--json")
    assert_ok(run)
    (host,) = json.loads(run.out)
    assert (host["name"], host["uri"]) == ("a", NODE_URI)
    assert host["load"]["memory_pct"] is not None  # the test node's committed memory


def test_host_add_of_a_taken_name_fails_and_keeps_the_first() -> None:
    assert_ok(virtlife("host", "add", "a", NODE_URI))
    message = assert_one_line_error(virtlife("host", "add", "a", NODE2_URI))
    assert "already exists" in message
    assert [(h["name"], h["uri"]) for h in json.loads(
        virtlife("host", "list", "--json").out)] == [("a", NODE_URI)]


def test_host_add_of_an_invalid_name_fails_with_one_line() -> None:
    message = assert_one_line_error(virtlife("host", "add", "a/b", NODE_URI))
    assert "invalid host name" in message


def test_host_remove_of_an_unknown_host_fails_with_exit_code_2() -> None:
    message = assert_one_line_error(virtlife("host", "remove", "nosuch"), EXIT_NOT_FOUND)
    assert "nosuch" in message


def test_host_remove_forgets_the_host() -> None:
    assert_ok(virtlife("host", "add", "a", NODE_URI))
    run = virtlife("host", "remove", "a")
    assert_ok(run)
    assert run.out.strip() == f"removed host a ({NODE_URI})"
    assert [row[:2] for row in table_rows(virtlife("host", "list").out)] == [
        ["local", "qemu:///system"]]


# -- the journal ---------------------------------------------------------------------------


def test_history_lists_an_operation_done_by_an_earlier_process() -> None:
    assert_ok(on_node("suspend", "vm-running"))
    run = virtlife("history", "vm-running", "--json")
    assert_ok(run)
    entries = json.loads(run.out)
    assert len(entries) == 1
    entry = entries[0]
    assert (entry["host"], entry["vm"], entry["operation"], entry["outcome"]) == (
        NODE_URI, "vm-running", "suspend", "ok")
    assert entry["detail"] == "paused (user)"


def test_history_journals_a_refused_operation_as_refused() -> None:
    assert on_node("resume", "vm-running").code == EXIT_INVALID_TRANSITION
    run = virtlife("history", "vm-running", "--json")
    assert_ok(run)
    entries = json.loads(run.out)
    assert [(e["operation"], e["outcome"]) for e in entries] == [("resume", "refused")]
    assert "it is running, not paused" in entries[0]["detail"]


def test_history_journals_a_failed_operation_as_error() -> None:
    assert on_node("pmsuspend", "vm-running").code != 0
    entries = json.loads(virtlife("history", "--json").out)
    assert [(e["vm"], e["operation"], e["outcome"]) for e in entries] == [
        ("vm-running", "pmsuspend", "error")]


def test_history_of_a_vm_shows_a_refusal_of_its_name_recorded_without_a_uuid() -> None:
    # the refused create is journalled before any VM is looked up (no UUID); history
    # VM, which reads by UUID, left it out (issue 15)
    assert_ok(on_node("start", "vm-off"))
    assert on_node("create", "vm-off").code != 0
    assert on_node("create", "vm-running").code != 0  # another VM's name: not shown
    entries = json.loads(on_node("history", "vm-off", "--json").out)
    assert [(e["operation"], e["outcome"], bool(e["uuid"])) for e in entries] == [
        ("define", "refused", False), ("start", "ok", True)]
    assert "already exists" in entries[0]["detail"]


def test_history_shows_newest_first_and_filters_by_vm() -> None:
    assert_ok(on_node("suspend", "vm-running"))
    assert_ok(on_node("start", "vm-off"))
    everything = json.loads(virtlife("history", "--json").out)
    assert [e["vm"] for e in everything] == ["vm-off", "vm-running"]
    only_off = json.loads(virtlife("history", "vm-off", "--json").out)
    assert [e["operation"] for e in only_off] == ["start"]


# -- events ------------------------------------------------------------------------------


def test_events_streams_json_lines_until_the_timeout() -> None:
    run = on_node("events", "--json", "--timeout", "0.3")
    assert_ok(run)
    events = [json.loads(line) for line in run.out.splitlines()]
    assert events and events[0]["kind"] == "host"


# -- documentation and the top-level command ---------------------------------------------


def _leaf_commands() -> list[tuple[str, click.Command]]:
    from virtlife.cli.main import cli

    found: list[tuple[str, click.Command]] = []

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        for name, command in sorted(group.commands.items()):
            path = (*prefix, name)
            if isinstance(command, click.Group):
                walk(command, path)
            else:
                found.append((" ".join(path), command))

    walk(cli, ())
    return found


LEAF_COMMANDS = _leaf_commands()


def test_every_documented_command_is_found() -> None:
    names = {name for name, _ in LEAF_COMMANDS}
    assert {"list", "start", "resume", "host add", "history", "lab guest build"} <= names


@pytest.mark.parametrize(("path", "command"), LEAF_COMMANDS, ids=[p for p, _ in LEAF_COMMANDS])
def test_every_command_has_help_with_an_example(path: str, command: click.Command) -> None:
    from virtlife.cli.main import cli

    assert command.help and command.help.strip(), f"virtlife {path} has no help text"
    assert "Example:" in command.help, f"virtlife {path} has no Example: in its help"
    result = CliRunner().invoke(cli, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output


def test_top_level_help_lists_the_commands() -> None:
    run = virtlife("--help")
    assert_ok(run)
    assert run.out.startswith("Usage: virtlife")
    for name in ("list", "start", "resume", "host", "history", "events"):
        assert f"  {name} " in run.out


def test_version_prints_the_package_version() -> None:
    from virtlife import __version__

    run = virtlife("--version")
    assert_ok(run)
    assert run.out.strip() == f"virtlife, version {__version__}"


def test_demo_on_the_test_driver_walks_the_whole_life() -> None:
    run = virtlife("demo", "--test-driver")
    assert_ok(run)
    assert "running the same walkthrough on libvirt's test driver" in run.out
    for line in ("virtlife-demo: paused (user)", "virtlife-demo: running (unpaused)",
                 "virtlife-demo: saved (saved to file)", "virtlife-demo: running (restored)",
                 "virtlife-demo: saved (managed save)", "virtlife-demo: shut off (shutdown)",
                 "refused as expected: cannot resume virtlife-demo: it is running, not paused",
                 "refused as expected: cannot start virtlife-demo: it was saved to ",
                 "virtlife-demo: undefined", "demo finished"):
        assert line in run.out
    assert "Traceback" not in run.out + run.err
