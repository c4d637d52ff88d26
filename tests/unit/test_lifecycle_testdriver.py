"""Lifecycle service against libvirt's test driver: guard, act, wait by events, journal.

The ``lifecycle`` fixture (tests/conftest.py) is a Lifecycle over the seeded node
(tests/data/node.xml) as host ``t``; one connection is kept, so state persists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from virtlife import errors
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.provision import create
from virtlife.states import Operation, VMState
from virtlife.xml.domain import DomainSpec


def _state(lc: Lifecycle, vm: str) -> str:
    return str(lc.state(vm)[1])


@pytest.mark.parametrize(("op", "vm", "expected"), [
    ("start", "vm-off", "running (booted)"),
    # the test driver boots a seeded managed-save VM afresh; QEMU reports "restored"
    ("start", "vm-saved", "running (booted)"),
    ("suspend", "vm-running", "paused (user)"),
    ("resume", "vm-paused", "running (unpaused)"),
    ("shutdown", "vm-running", "shut off (shutdown)"),
    ("destroy", "vm-running", "shut off (destroyed)"),
    ("destroy", "vm-paused", "shut off (destroyed)"),
    ("destroy", "vm-crashed", "shut off (destroyed)"),
    ("destroy", "vm-pmsusp", "shut off (destroyed)"),
    ("managedsave", "vm-running", "saved (managed save)"),
    ("managedsave", "vm-paused", "saved (managed save)"),
    ("managedsave_remove", "vm-saved", "shut off (unknown)"),
])
def test_operation_reaches_its_state(lifecycle: Lifecycle, op: str, vm: str,
                                     expected: str) -> None:
    result = getattr(lifecycle, op)(vm)
    assert str(result.state) == expected
    assert result.host == "t"
    assert _state(lifecycle, vm) == expected


def test_undefine_removes_the_vm(lifecycle: Lifecycle) -> None:
    assert lifecycle.undefine("vm-off").state.state is VMState.UNDEFINED
    with pytest.raises(errors.VMNotFound):
        lifecycle.state("vm-off")


def test_invalid_transition_is_refused_and_changes_nothing(lifecycle: Lifecycle) -> None:
    before = _state(lifecycle, "vm-running")
    with pytest.raises(errors.InvalidTransition,
                       match="cannot resume vm-running: it is running, not paused"):
        lifecycle.resume("vm-running")
    assert _state(lifecycle, "vm-running") == before


@pytest.mark.parametrize(("op", "vm"), [
    ("start", "vm-running"), ("start", "vm-paused"), ("suspend", "vm-paused"),
    ("suspend", "vm-off"), ("shutdown", "vm-off"), ("shutdown", "vm-paused"),
    ("destroy", "vm-off"), ("managedsave", "vm-off"), ("pmwakeup", "vm-running"),
    ("pmsuspend", "vm-off"), ("undefine", "vm-running"), ("resume", "vm-saved"),
    ("managedsave_remove", "vm-off"),
])
def test_refusals_leave_every_vm_as_it_was(lifecycle: Lifecycle, op: str, vm: str) -> None:
    every = ["vm-running", "vm-paused", "vm-saved", "vm-off", "vm-crashed", "vm-pmsusp"]
    before = {v: _state(lifecycle, v) for v in every}
    with pytest.raises(errors.InvalidTransition):
        getattr(lifecycle, op)(vm)
    assert {v: _state(lifecycle, v) for v in every} == before


def test_save_to_file_then_restore(lifecycle: Lifecycle, tmp_path: Path) -> None:
    path = tmp_path / "r.sav"
    assert str(lifecycle.save("vm-running", path).state) == "saved (saved to file)"
    assert path.exists()
    result = lifecycle.restore(path, host="t")
    assert result.vm == "vm-running"
    assert str(result.state) == "running (restored)"


def test_save_refuses_to_overwrite_a_file(lifecycle: Lifecycle, tmp_path: Path) -> None:
    path = tmp_path / "exists.sav"
    path.write_text("precious")
    with pytest.raises(errors.AlreadyExists, match="the file exists"):
        lifecycle.save("vm-running", path)
    assert path.read_text() == "precious"
    assert _state(lifecycle, "vm-running") == "running (unknown)"


def test_failed_restore_keeps_the_save_file(lifecycle: Lifecycle, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sav"
    bogus.write_bytes(b"not a libvirt save image" * 10)
    with pytest.raises(errors.VirtlifeError):
        lifecycle.restore(bogus, host="t")
    assert bogus.exists()


def test_restore_of_a_vm_that_runs_again_is_refused(lifecycle: Lifecycle,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "twice.sav"
    lifecycle.save("vm-running", path)
    lifecycle.restore(path, host="t")
    with pytest.raises(errors.InvalidTransition, match="cannot restore vm-running"):
        lifecycle.restore(path, host="t")
    assert path.exists()


def test_managedsave_remove_refuses_a_vm_saved_to_a_file(lifecycle: Lifecycle,
                                                         tmp_path: Path) -> None:
    lifecycle.save("vm-running", tmp_path / "f.sav")
    with pytest.raises(errors.InvalidTransition, match="no managed-save image"):
        lifecycle.managedsave_remove("vm-running")


def test_undefine_of_saved_vm_needs_managed_save_flag(lifecycle: Lifecycle) -> None:
    with pytest.raises(errors.InvalidTransition, match="--managed-save"):
        lifecycle.undefine("vm-saved")
    assert _state(lifecycle, "vm-saved") == "saved (managed save)"
    assert lifecycle.undefine("vm-saved", managed_save=True).state.state is VMState.UNDEFINED


def test_bad_xml_never_replaces_an_existing_definition(lifecycle: Lifecycle) -> None:
    before = lifecycle.dumpxml("vm-off", inactive=True)
    with pytest.raises(errors.InvalidDefinition):
        lifecycle.define("<domain type='test'><name>vm-off</name>", host="t")
    with pytest.raises(errors.InvalidDefinition):
        lifecycle.define("<domain type='test'><name>vm-off</name><memory>1</memory>"
                         "<uuid>44444444-4444-4444-4444-444444444444</uuid></domain>", host="t")
    assert lifecycle.dumpxml("vm-off", inactive=True) == before


def test_define_with_a_taken_name_and_other_uuid_is_refused(lifecycle: Lifecycle) -> None:
    xml = ("<domain type='test'><name>vm-off</name><memory>1024</memory>"
           "<uuid>99999999-9999-9999-9999-999999999999</uuid><os><type>hvm</type></os></domain>")
    with pytest.raises(errors.VMAlreadyExists, match="already exists"):
        lifecycle.define(xml, host="t")


def test_define_updates_an_existing_vm_with_the_same_uuid(lifecycle: Lifecycle) -> None:
    xml = lifecycle.dumpxml("vm-off", inactive=True).replace("131072", "262144")
    lifecycle.define(xml, host="t")
    assert lifecycle.info("vm-off").max_memory_mib == 256


def test_create_from_spec_defines_a_shut_off_vm(lifecycle: Lifecycle) -> None:
    result = create(lifecycle, DomainSpec(name="new1", memory_mib=64), host="t")
    assert str(result.state) == "shut off (unknown)"
    assert '<domain type="test"' in lifecycle.dumpxml("new1").replace("'", '"')


def test_create_with_a_taken_name_is_refused(lifecycle: Lifecycle) -> None:
    before = lifecycle.dumpxml("vm-off")
    with pytest.raises(errors.VMAlreadyExists, match="already exists on host t"):
        create(lifecycle, DomainSpec(name="vm-off"), host="t")
    assert lifecycle.dumpxml("vm-off") == before


def test_unknown_vm_is_not_found(lifecycle: Lifecycle) -> None:
    with pytest.raises(errors.VMNotFound, match="no VM named ghost on host t"):
        lifecycle.start("ghost")


def test_pm_calls_the_driver_lacks_are_unsupported(lifecycle: Lifecycle) -> None:
    with pytest.raises(errors.Unsupported):
        lifecycle.pmwakeup("vm-pmsusp")
    with pytest.raises(errors.Unsupported):
        lifecycle.pmsuspend("vm-running")


def test_every_operation_is_journalled_with_its_outcome(lifecycle: Lifecycle) -> None:
    lifecycle.suspend("vm-running")
    with pytest.raises(errors.InvalidTransition):
        lifecycle.suspend("vm-running")
    with pytest.raises(errors.Unsupported):
        lifecycle.pmwakeup("vm-pmsusp")
    assert lifecycle.journal is not None
    entries = lifecycle.journal.list(limit=10)
    assert [(e.vm, e.operation, e.outcome) for e in entries] == [
        ("vm-pmsusp", "pmwakeup", "error"),
        ("vm-running", "suspend", "refused"),
        ("vm-running", "suspend", "ok"),
    ]
    assert entries[2].detail == "paused (user)"
    assert all(e.host == "t" for e in entries)


def test_progress_updates_are_reported(lifecycle: Lifecycle) -> None:
    seen: list[tuple[str, str]] = []
    result = lifecycle.suspend("vm-running", progress=lambda u: seen.append((u.stage, u.op_id)))
    assert seen == [(stage, result.op_id) for stage in ("request", "wait", "done")]


def test_progress_goes_to_each_call_only(lifecycle: Lifecycle) -> None:
    first: list[str] = []
    second: list[str] = []
    lifecycle.suspend("vm-running", progress=lambda u: first.append(u.vm))
    lifecycle.resume("vm-paused", progress=lambda u: second.append(u.vm))
    assert set(first) == {"vm-running"} and set(second) == {"vm-paused"}


def test_no_wait_returns_the_state_at_once(lifecycle: Lifecycle) -> None:
    result = lifecycle.destroy("vm-running", wait=False)
    assert result.operation is Operation.DESTROY
    assert result.state.state is VMState.SHUTOFF


def test_undefine_of_vm_with_snapshots_needs_snapshots_flag(lifecycle: Lifecycle) -> None:
    guest = lifecycle.fleet.resolve("vm-off")
    # virtlife has no snapshot command yet; the test driver's snapshot call makes one
    guest._dom.snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>", 0)
    with pytest.raises(errors.InvalidTransition,
                       match=r"it has 1 snapshot.*--snapshots-metadata"):
        lifecycle.undefine("vm-off")
    assert _state(lifecycle, "vm-off") == "shut off (unknown)"
    assert lifecycle.undefine("vm-off", snapshots=True).state.state is VMState.UNDEFINED


def _redefine_external_snapshot(lc: Lifecycle, vm: str, name: str, created: int,
                                overlay: str, memory_file: str = "") -> None:
    """Give ``vm`` the metadata of an external snapshot (the test driver cannot take
    one, but takes its description back, as after a host move)."""
    import libvirt

    guest = lc.fleet.resolve(vm)
    domain = guest.xml(inactive=True)
    memory = (f"<memory snapshot='external' file='{memory_file}'/>" if memory_file
              else "<memory snapshot='no'/>")
    guest._dom.snapshotCreateXML(
        f"<domainsnapshot><name>{name}</name>"
        f"<state>{'running' if memory_file else 'disk-snapshot'}</state>"
        f"<creationTime>{created}</creationTime>{memory}<disks>"
        f"<disk name='vda' snapshot='external'><source file='{overlay}'/></disk>"
        f"</disks>{domain}</domainsnapshot>", libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)


def test_undefine_dropping_external_snapshots_names_the_files_left(
        lifecycle: Lifecycle) -> None:
    # issue 15: --snapshots-metadata dropped the metadata and said nothing of the
    # overlay files it leaves on disk
    create(lifecycle, DomainSpec(name="vm-disk", memory_mib=64,
                                 disks=(Path("/images/off.qcow2"),)), host="t")
    _redefine_external_snapshot(lifecycle, "vm-disk", "d1", 1_700_000_000, "/images/off.d1")
    _redefine_external_snapshot(lifecycle, "vm-disk", "d2", 1_700_000_100, "/images/off.d2",
                                memory_file="/images/off.d2.mem")
    result = lifecycle.undefine("vm-disk", snapshots=True)
    assert result.state.state is VMState.UNDEFINED
    assert ("their external files stay on disk: /images/off.d1, /images/off.d2, "
            "/images/off.d2.mem") in result.note
    assert "/images/off.d1" in str(result) and "2 snapshot(s)" in str(result)


def test_undefine_dropping_only_internal_snapshots_names_no_file(
        lifecycle: Lifecycle) -> None:
    guest = lifecycle.fleet.resolve("vm-off")
    guest._dom.snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>", 0)
    result = lifecycle.undefine("vm-off", snapshots=True)
    assert "stay on disk" not in result.note
