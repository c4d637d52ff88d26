"""``Snapshots`` on libvirt's test driver: create, list, revert and delete as journalled
operations, refused by the VM's state and by bad options, and quiesced snapshots
whose freeze is recorded, bounded and always thawed.

The test driver keeps internal snapshots (with the VM's state) but has no guest agent
and no disk-only snapshots. Quiesce tests therefore give the service a ``FakeAgent``
(it records freezes and thaws) and let ``DomainSnapshots.create`` record what it was
asked (disk-only) before taking the test driver's internal snapshot. What the real
guest sees is checked in tests/integration/test_snapshots_real.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import pytest

from support import NODE_URI
from virtlife import config, errors
from virtlife.hypervisor import Guest
from virtlife.hypervisor.snapshot import DomainSnapshots, Snapshot
from virtlife.services import snapshots as snapshots_module
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.freeze import FreezeGuard
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.progress import Update
from virtlife.services.snapshots import WHY_DISK_ONLY, Snapshots
from virtlife.store import Store, open_store
from virtlife.xml.snapshot import SnapshotDisk, SnapshotDoc

UUID_RUNNING = "11111111-1111-1111-1111-111111111111"


@dataclass
class World:
    store: Store
    lifecycle: Lifecycle
    snapshots: Snapshots

    def journal(self, vm: str) -> list[tuple[str, str]]:
        return [(e.operation, e.outcome) for e in self.store.journal.list(vm=vm)]

    def names(self, vm: str) -> list[str]:
        return [s.name for s in self.snapshots.list(vm)]

    def state(self, vm: str) -> str:
        return str(self.lifecycle.state(vm)[1])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = open_store(tmp_path / "store.db")
    fleet = Fleet([HostRef("t", NODE_URI)], journal=store.journal)
    guard = FreezeGuard(store.journal, store.freezes)
    lifecycle = Lifecycle(fleet, store.journal)
    lifecycle.ops.on_touch = guard.recover
    yield World(store, lifecycle, Snapshots(fleet, lifecycle.ops, guard, config.Settings()))
    fleet.close()
    store.close()


# -- create, list, revert, delete -----------------------------------------------------------

def test_a_snapshot_of_a_running_vm_is_internal_with_memory_and_listed(world: World) -> None:
    result = world.snapshots.create("vm-running", "s1", description="before upgrade")
    assert result.operation.value == "snapshot-create" and result.op_id
    assert "internal snapshot s1 with the VM's memory (running)" in result.note
    [info] = world.snapshots.list("vm-running")
    assert (info.name, info.state, info.location, info.parent, info.current,
            info.description, info.memory, info.files) == (
        "s1", "running", "internal", None, True, "before upgrade", True, ())
    assert info.created is not None
    assert info.as_dict()["created"] == info.created.isoformat()
    assert world.journal("vm-running") == [("snapshot-create", "ok")]


def test_list_is_oldest_first_with_parents_and_the_current_one(world: World) -> None:
    for name in ("a", "b", "c"):
        world.snapshots.create("vm-running", name)
    found = world.snapshots.list("vm-running")
    assert [(s.name, s.parent, s.current) for s in found] == [
        ("a", None, False), ("b", "a", False), ("c", "b", True)]
    assert world.snapshots.list("vm-off") == []


def test_a_snapshot_of_a_shut_off_vm_keeps_its_disks_only(world: World) -> None:
    result = world.snapshots.create("vm-off", "off1")
    assert "internal snapshot off1 of the disks (shutoff)" in result.note
    assert world.snapshots.list("vm-off")[0].memory is False


def test_revert_ends_in_the_snapshots_state_read_not_waited_for(world: World) -> None:
    world.snapshots.create("vm-running", "up")
    world.lifecycle.suspend("vm-running")
    world.snapshots.create("vm-running", "held")
    world.lifecycle.destroy("vm-running")
    world.snapshots.create("vm-running", "down")
    back = world.snapshots.revert("vm-running", "up", sync_time=False)
    assert str(back.state) == "running (from snapshot)"
    assert back.note.startswith("reverted to snapshot up (running, taken ")
    assert str(world.snapshots.revert("vm-running", "held").state) == "paused (from snapshot)"
    assert str(world.snapshots.revert("vm-running", "down").state) == "shut off (from snapshot)"
    assert world.state("vm-running") == "shut off (from snapshot)"
    assert [s.name for s in world.snapshots.list("vm-running") if s.current] == ["down"]
    assert world.journal("vm-running")[:3] == [("snapshot-revert", "ok")] * 3


def test_revert_to_a_running_snapshot_sets_the_clock_right_unless_told_not_to(
        world: World) -> None:
    world.snapshots.create("vm-running", "s1")
    assert "guest clock" in world.snapshots.revert("vm-running", "s1").note
    assert "guest clock" not in world.snapshots.revert("vm-running", "s1",
                                                       sync_time=False).note
    world.snapshots.settings = config.Settings(sync_time=False)
    assert "guest clock" not in world.snapshots.revert("vm-running", "s1").note


def test_delete_without_children_keeps_them_under_its_parent(world: World) -> None:
    for name in ("a", "b", "c", "d"):
        world.snapshots.create("vm-running", name)
    result = world.snapshots.delete("vm-running", "b")
    assert result.note == "deleted snapshot b; its children (c) now hang from a"
    assert [(s.name, s.parent) for s in world.snapshots.list("vm-running")] == [
        ("a", None), ("c", "a"), ("d", "c")]
    root = world.snapshots.delete("vm-running", "a")
    assert root.note == "deleted snapshot a; its children (c) are now roots"


def test_delete_with_children_deletes_the_subtree(world: World) -> None:
    for name in ("a", "b", "c", "d"):
        world.snapshots.create("vm-running", name)
    result = world.snapshots.delete("vm-running", "b", children=True)
    assert result.note.startswith("deleted snapshot b and 2 below it (")
    assert world.names("vm-running") == ["a"]
    assert world.journal("vm-running")[0] == ("snapshot-delete", "ok")


def test_delete_of_metadata_only_asks_libvirt_for_it_and_says_the_data_stays(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, bool]] = []
    monkeypatch.setattr(Snapshot, "delete", lambda _s, **flags: asked.append(flags))
    world.snapshots.create("vm-running", "a")
    result = world.snapshots.delete("vm-running", "a", metadata_only=True)
    assert asked == [{"children": False, "metadata_only": True}]
    assert "metadata only: its data stays inside the disk images" in result.note


def test_a_missing_snapshot_is_not_found_and_journalled(world: World) -> None:
    for act in (lambda: world.snapshots.revert("vm-running", "nope"),
                lambda: world.snapshots.delete("vm-running", "nope")):
        with pytest.raises(errors.NotFound, match="vm-running on t has no snapshot nope"):
            act()
    assert world.journal("vm-running") == [("snapshot-delete", "error"),
                                           ("snapshot-revert", "error")]


def test_an_unknown_vm_is_not_found(world: World) -> None:
    with pytest.raises(errors.VMNotFound):
        world.snapshots.create("no-such-vm")
    with pytest.raises(errors.VMNotFound):
        world.snapshots.list("no-such-vm")


# -- names --------------------------------------------------------------------------------

def test_a_taken_name_is_refused_as_already_existing(world: World) -> None:
    world.snapshots.create("vm-running", "s1")
    with pytest.raises(errors.AlreadyExists, match="already has one of that name"):
        world.snapshots.create("vm-running", "s1")
    assert world.journal("vm-running")[0] == ("snapshot-create", "refused")
    assert world.names("vm-running") == ["s1"]


def test_the_default_name_is_the_time_and_a_second_one_in_that_second_gets_a_suffix(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshots_module, "default_name", lambda: "snap-20250131-142502")
    world.snapshots.create("vm-running")
    world.snapshots.create("vm-running")
    assert world.names("vm-running") == ["snap-20250131-142502", "snap-20250131-142502-2"]


@pytest.mark.parametrize("name", ["a/b", "", "-x", "x y"])
def test_a_bad_name_is_refused_before_the_host_is_asked(world: World, name: str) -> None:
    with pytest.raises(errors.InvalidInput):
        world.snapshots.create("vm-running", name)
    assert world.journal("vm-running") == []


# -- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "vm", "message"), [
    ("create", "vm-saved", "start it to restore its saved RAM"),
    ("create", "vm-pmsusp", "wake it with pmwakeup first"),
    ("create", "vm-crashed", "it is crashed"),
    ("revert", "vm-saved", "start it to restore its saved RAM"),
    ("revert", "vm-pmsusp", "it is pmsuspended"),
    ("delete", "vm-pmsusp", "it is pmsuspended"),
    ("delete", "vm-crashed", "it is crashed"),
])
def test_operations_are_refused_by_the_vms_state_and_journalled(
        world: World, op: str, vm: str, message: str) -> None:
    before = world.state(vm)
    act: dict[str, Callable[[], object]] = {
        "create": lambda: world.snapshots.create(vm, "s1"),
        "revert": lambda: world.snapshots.revert(vm, "s1"),
        "delete": lambda: world.snapshots.delete(vm, "s1"),
    }
    with pytest.raises(errors.InvalidTransition, match=message):
        act[op]()
    assert world.state(vm) == before
    assert world.journal(vm) == [(f"snapshot-{op}", "refused")]


@pytest.mark.parametrize(("options", "message"), [
    ({"quiesce": True, "memory": True}, "^--memory cannot go with --quiesce: a quiesced "
     "snapshot is disk-only, since a memory image of a frozen guest would revert to a frozen "
     "guest$"),
    ({"memory": True, "disk_only": True}, "^--memory and --disk-only contradict each other: "
     "a disk-only snapshot keeps no memory$"),
    ({"no_quiesce_ok": True}, "^--no-quiesce-ok only applies with --quiesce$"),
    ({"freeze_bound_s": 5.0}, "^--freeze-bound only applies with --quiesce$"),
    ({"quiesce": True, "freeze_bound_s": 0.0}, "within 0 and 600 s"),
    ({"quiesce": True, "freeze_bound_s": 601.0}, "within 0 and 600 s"),
])
def test_bad_option_combinations_are_refused_before_anything_is_asked(
        world: World, options: dict[str, Any], message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message):
        world.snapshots.create("vm-running", "s1", **options)
    assert world.journal("vm-running") == []


def test_a_freeze_bound_of_ten_minutes_is_taken(world: World, guestfs: Guestfs,
                                               asked: Asked) -> None:
    result = world.snapshots.create("vm-running", "q1", quiesce=True, freeze_bound_s=600)
    assert "(bound 600 s)" in result.note


def test_a_memory_snapshot_of_a_shut_off_vm_is_refused(world: World) -> None:
    with pytest.raises(errors.InvalidTransition, match="it is shut off and has no memory"):
        world.snapshots.create("vm-off", "m1", memory=True)
    assert world.names("vm-off") == []
    assert world.journal("vm-off") == [("snapshot-create", "refused")]


def test_a_memory_snapshot_of_a_running_vm_asks_for_internal_memory(world: World,
                                                                    asked: Asked) -> None:
    assert "with the VM's memory" in world.snapshots.create("vm-running", "m1",
                                                           memory=True).note
    world.snapshots.create("vm-running", "plain")
    assert ['snapshot="internal"' in xml for xml in asked.xmls] == [True, False]
    assert asked.names == ["m1", "plain"] and asked.disk_only == [False, False]


def test_a_plain_snapshot_has_no_description_and_no_quiesce_note(world: World) -> None:
    result = world.snapshots.create("vm-running", "s1")
    assert WHY_DISK_ONLY not in result.note
    assert world.snapshots.list("vm-running")[0].description == ""


def test_disk_only_is_asked_of_libvirt_and_this_driver_says_it_cannot(world: World) -> None:
    with pytest.raises(errors.Unsupported, match="take snapshot d1 of vm-running on t"):
        world.snapshots.create("vm-running", "d1", disk_only=True)
    assert world.journal("vm-running") == [("snapshot-create", "error")]


# -- quiesced snapshots -----------------------------------------------------------------------

@dataclass
class Guestfs:
    """What the fake agents of one test saw and do: the guest's frozen state, each
    freeze and thaw, and failures to inject."""

    frozen: bool = False
    calls: list[str] = field(default_factory=list)
    status_error: errors.VirtlifeError | None = None
    thawed: threading.Event = field(default_factory=threading.Event)
    thaw_error: errors.VirtlifeError | None = None


@dataclass
class Asked:
    """What ``DomainSnapshots.create`` was asked, and a hook run inside it."""

    disk_only: list[bool] = field(default_factory=list)
    during: Callable[[Guest], object] | None = None
    names: list[str] = field(default_factory=list)
    xmls: list[str] = field(default_factory=list)


@pytest.fixture
def guestfs(monkeypatch: pytest.MonkeyPatch) -> Guestfs:
    fs = Guestfs()

    class FakeAgent:
        def __init__(self, guest: Guest) -> None:
            self.guest = guest
            self.vm = guest.name

        def freeze_status(self, *, timeout_s: float = 5.0) -> str:
            if fs.status_error is not None:
                raise fs.status_error
            return "frozen" if fs.frozen else "thawed"

        def freeze(self, mountpoints: list[str] | None = None, *, timeout_s: float = 5.0,
                   deadline_s: float | None = None) -> int:
            fs.calls.append("freeze")
            fs.frozen = True
            return 2

        def thaw(self, mountpoints: list[str] | None = None, *, timeout_s: float = 5.0,
                 deadline_s: float | None = None) -> int:
            fs.calls.append("thaw")
            if fs.thaw_error is not None:
                raise fs.thaw_error
            fs.frozen = False
            fs.thawed.set()
            return 2

    monkeypatch.setattr(snapshots_module, "Agent", FakeAgent)
    return fs


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> Asked:
    record = Asked()
    real = DomainSnapshots.create

    def create(self: DomainSnapshots, xml: str, name: str, *,
               disk_only: bool = False) -> Snapshot:
        record.disk_only.append(disk_only)
        record.names.append(name)
        record.xmls.append(xml)
        if record.during is not None:
            record.during(self.guest)
        return real(self, xml, name)  # this driver has internal snapshots only

    monkeypatch.setattr(DomainSnapshots, "create", create)
    return record


def test_a_quiesced_snapshot_is_disk_only_taken_frozen_and_thawed(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    seen: list[object] = []

    def during(guest: Guest) -> None:  # the freeze is recorded while the guest is frozen
        seen.append((guestfs.frozen, world.store.freezes.get(guest.uuid())))

    asked.during = during
    result = world.snapshots.create("vm-running", "q1", quiesce=True)
    assert asked.disk_only == [True] and asked.names == ["q1"]
    assert guestfs.calls == ["freeze", "thaw"] and not guestfs.frozen
    [(frozen, mark)] = seen
    assert frozen is True and mark is not None
    assert (mark.op_id, mark.kind.value, mark.bound_s) == (result.op_id, "bounded", 10.0)
    assert world.store.freezes.get(UUID_RUNNING) is None  # removed once thawed
    assert "quiesced: 2 file system(s) frozen for " in result.note
    assert "(bound 10 s)" in result.note and WHY_DISK_ONLY in result.note
    assert world.journal("vm-running") == [("snapshot-create", "ok")]


def test_the_freeze_bound_comes_from_the_call_or_the_settings(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    bounds: list[float | None] = []
    asked.during = lambda g: bounds.append(
        world.store.freezes.get(g.uuid()).bound_s)  # type: ignore[union-attr]
    world.snapshots.create("vm-running", "q1", quiesce=True, freeze_bound_s=3.5)
    world.snapshots.settings = config.Settings(freeze_bound_s=42.0)
    world.snapshots.create("vm-running", "q2", quiesce=True)
    assert bounds == [3.5, 42.0]


def test_a_freeze_broken_by_the_watchdog_deletes_the_snapshot_and_fails(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    # the snapshot call outlasts a tiny bound: it returns only once the watchdog thawed
    asked.during = lambda _g: guestfs.thawed.wait(30)
    with pytest.raises(errors.OperationTimeout,
                       match=r"thawed by the 0.05 s freeze bound before snapshot q1 was "
                             r"taken, so it is not consistent; it was deleted"):
        world.snapshots.create("vm-running", "q1", quiesce=True, freeze_bound_s=0.05)
    assert guestfs.thawed.is_set() and not guestfs.frozen
    assert world.names("vm-running") == []
    assert world.store.freezes.get(UUID_RUNNING) is None
    assert world.journal("vm-running") == [("snapshot-create", "error")]


def test_an_error_while_frozen_still_thaws_and_leaves_no_snapshot(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    def fail(_guest: Guest) -> None:
        assert guestfs.frozen
        raise errors.OperationFailed("injected: the disk is full")

    asked.during = fail
    with pytest.raises(errors.OperationFailed, match="injected"):
        world.snapshots.create("vm-running", "q1", quiesce=True)
    assert guestfs.calls == ["freeze", "thaw"] and not guestfs.frozen
    assert world.store.freezes.get(UUID_RUNNING) is None
    assert world.names("vm-running") == []
    assert world.journal("vm-running") == [("snapshot-create", "error")]


def test_ctrl_c_while_frozen_thaws_and_is_journalled_interrupted(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    def interrupt(_guest: Guest) -> None:
        raise KeyboardInterrupt

    asked.during = interrupt
    with pytest.raises(KeyboardInterrupt):
        world.snapshots.create("vm-running", "q1", quiesce=True)
    assert guestfs.calls == ["freeze", "thaw"]
    assert world.store.freezes.get(UUID_RUNNING) is None
    assert world.journal("vm-running") == [("snapshot-create", "interrupted")]


def test_without_an_agent_quiesce_fails_with_the_agent_error_naming_the_way_out(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    guestfs.status_error = errors.AgentNotConnected(
        "cannot run agent command guest-fsfreeze-status in vm-running on t: no agent "
        "listens in the guest (or it has not started yet); install it")
    with pytest.raises(errors.AgentNotConnected,
                       match=r"no agent listens .* pass --no-quiesce-ok"):
        world.snapshots.create("vm-running", "q1", quiesce=True)
    assert asked.disk_only == [] and guestfs.calls == []
    assert world.names("vm-running") == []
    assert world.journal("vm-running") == [("snapshot-create", "error")]


def test_no_quiesce_ok_takes_it_unquiesced_and_says_why(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    guestfs.status_error = errors.AgentTimeout(
        "cannot run agent command guest-fsfreeze-status in vm-running on t: the guest agent "
        "did not answer in time; it may be hung")
    result = world.snapshots.create("vm-running", "q1", quiesce=True, no_quiesce_ok=True)
    assert asked.disk_only == [True] and asked.names == ["q1"] and guestfs.calls == []
    assert ("not quiesced (--no-quiesce-ok): the guest agent cannot freeze: the guest agent "
            "did not answer in time") in result.note
    assert "it may be hung" not in result.note  # the reason, without the fix
    assert world.names("vm-running") == ["q1"]


def test_quiesce_of_a_paused_vm_is_refused_unless_no_quiesce_ok(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    with pytest.raises(errors.InvalidTransition,
                       match=r"only a running guest's agent can freeze .* resume it first, "
                             r"or pass --no-quiesce-ok"):
        world.snapshots.create("vm-paused", "q1", quiesce=True)
    result = world.snapshots.create("vm-paused", "q1", quiesce=True, no_quiesce_ok=True)
    assert "not quiesced (--no-quiesce-ok): it is paused" in result.note
    assert asked.disk_only == [True] and guestfs.calls == []


def test_quiesce_of_a_guest_already_frozen_by_the_operator_is_refused(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    guestfs.frozen = True
    with pytest.raises(errors.InvalidTransition, match="they are already frozen"):
        world.snapshots.create("vm-running", "q1", quiesce=True, no_quiesce_ok=True)
    assert guestfs.frozen and guestfs.calls == [] and asked.disk_only == []


def test_a_freeze_left_by_a_dead_operation_is_thawed_by_the_next_snapshot_command(
        world: World, guestfs: Guestfs, asked: Asked, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from virtlife.services import freeze
    from virtlife.store.freezes import FreezeKind, FreezeMark

    monkeypatch.setattr(freeze, "Agent", snapshots_module.Agent)  # the guard's agent: fake
    guestfs.frozen = True  # a process froze it, recorded it, and died
    world.store.freezes.put(FreezeMark(UUID_RUNNING, "t", "vm-running", "deadbeef0000",
                                       FreezeKind.BOUNDED, datetime.now(UTC), 10.0))
    result = world.snapshots.create("vm-running", "s1")
    assert any("ended without thawing them" in w for w in result.warnings)
    assert not guestfs.frozen and world.store.freezes.get(UUID_RUNNING) is None


def test_quiesce_of_a_shut_off_vm_is_refused_saying_both_ways_out(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    with pytest.raises(errors.InvalidTransition,
                       match=r"^cannot take a quiesced snapshot of vm-off: it is shut off[^:]*: "
                             r"only a running guest's agent can freeze its file systems; "
                             r"start it first, or pass --no-quiesce-ok to take it "
                             r"unquiesced$"):
        world.snapshots.create("vm-off", "q1", quiesce=True)


def test_the_agents_refusal_to_freeze_ends_with_the_way_out(
        world: World, guestfs: Guestfs, asked: Asked) -> None:
    guestfs.status_error = errors.AgentNotConnected("cannot ask: no agent listens")
    with pytest.raises(errors.AgentNotConnected) as err:
        world.snapshots.create("vm-running", "q1", quiesce=True)
    assert str(err.value).startswith(
        "cannot ask: no agent listens (or pass --no-quiesce-ok to take the snapshot "
        "unquiesced)")


class StillClock:
    """The freeze module's clock, moved on by hand; its retries do not wait."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, _seconds: float) -> None:
        pass


def test_a_failed_thaw_after_the_snapshot_fails_and_takes_no_second_one(
        world: World, guestfs: Guestfs, asked: Asked, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.services import freeze

    monkeypatch.setattr(freeze, "time", StillClock())
    guestfs.thaw_error = errors.AgentTimeout("cannot thaw: the agent did not answer in time")
    with pytest.raises(errors.AgentUnavailable) as err:
        world.snapshots.create("vm-running", "q1", quiesce=True, no_quiesce_ok=True)
    assert "may still be frozen: the guest agent did not confirm the thaw" in str(err.value)
    assert "--no-quiesce-ok" not in str(err.value)  # the freeze worked: no other way helps
    assert asked.disk_only == [True]  # the quiesced one only, not an unquiesced one after it


def test_a_freeze_that_could_not_be_recorded_is_a_warning_of_the_result(
        world: World, guestfs: Guestfs, asked: Asked, monkeypatch: pytest.MonkeyPatch) -> None:
    def locked(_mark: object) -> None:
        raise errors.StoreUnavailable("database is locked")

    monkeypatch.setattr(world.store.freezes, "put", locked)
    result = world.snapshots.create("vm-running", "q1", quiesce=True)
    assert [w for w in result.warnings if w.startswith("the freeze could not be recorded")]
    assert guestfs.calls == ["freeze", "thaw"]


@pytest.mark.parametrize(("frozen_s", "says"), [(1.5, "frozen for 1.50 s"),
                                                (0.0, "frozen for 0.00 s")])
def test_the_note_says_how_long_the_guest_was_frozen(
        world: World, guestfs: Guestfs, asked: Asked, monkeypatch: pytest.MonkeyPatch,
        frozen_s: float, says: str) -> None:
    from virtlife.services import freeze

    clock = StillClock()
    monkeypatch.setattr(freeze, "time", clock)

    def take(_guest: Guest) -> None:
        clock.now += frozen_s

    asked.during = take
    result = world.snapshots.create("vm-running", "q1", quiesce=True)
    assert f"quiesced: 2 file system(s) {says} (bound 10 s)" in result.note


def test_progress_says_each_step(world: World, guestfs: Guestfs, asked: Asked) -> None:
    seen: list[tuple[str, str]] = []

    def progress(update: Update) -> None:
        seen.append((update.stage, update.message))

    world.snapshots.create("vm-running", "s1", progress=progress)
    world.snapshots.create("vm-running", "q1", quiesce=True, progress=progress)
    world.snapshots.create("vm-paused", "q2", quiesce=True, no_quiesce_ok=True,
                           progress=progress)
    world.snapshots.delete("vm-running", "s1", progress=progress)
    assert [s for s in seen if s[0] in ("snapshot", "delete")] == [
        ("snapshot", "taking snapshot s1 of vm-running"),
        ("snapshot", "2 file system(s) of vm-running frozen; taking snapshot q1"),
        ("snapshot", "taking snapshot q2 of vm-paused unquiesced"),
        ("delete", "deleting snapshot s1 of vm-running")]


def test_progress_of_a_revert_and_its_clock_sync(world: World) -> None:
    seen: list[tuple[str, str]] = []
    world.snapshots.create("vm-running", "s1")
    world.snapshots.revert("vm-running", "s1",
                           progress=lambda u: seen.append((u.stage, u.message)))
    assert [s for s in seen if s[0] in ("revert", "clock")] == [
        ("revert", "reverting vm-running to snapshot s1"),
        ("clock", "syncing the clock of vm-running")]


def test_the_settings_given_are_the_ones_used(world: World) -> None:
    snapshots = Snapshots(world.snapshots.fleet, world.snapshots.ops, world.snapshots.guard,
                          config.Settings(sync_time=False))
    snapshots.create("vm-running", "s1")
    assert "guest clock" not in snapshots.revert("vm-running", "s1").note


def test_list_skips_a_snapshot_deleted_while_it_looked(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a", "b", "c"):
        world.snapshots.create("vm-running", name)
    real = Snapshot.xml

    def xml(snap: Snapshot) -> str:
        if snap.name == "b":
            raise errors.NotFound("vm-running on t has no snapshot b")
        return real(snap)

    monkeypatch.setattr(Snapshot, "xml", xml)
    found = world.snapshots.list("vm-running")
    assert [(s.vm, s.name) for s in found] == [("vm-running", "a"), ("vm-running", "c")]


def test_list_orders_by_time_then_name_and_undated_ones_last(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses
    from datetime import UTC, datetime

    for name in ("a", "b", "c", "d"):
        world.snapshots.create("vm-running", name)
    when = {"a": datetime(2025, 3, 1, tzinfo=UTC), "b": None,
            "c": datetime(2025, 1, 1, tzinfo=UTC), "d": datetime(2025, 2, 1, tzinfo=UTC)}
    real = snapshots_module.parse_snapshot

    def parse(xml: str) -> Any:
        doc = real(xml)
        return dataclasses.replace(doc, created=when[doc.name])

    monkeypatch.setattr(snapshots_module, "parse_snapshot", parse)
    assert world.names("vm-running") == ["c", "d", "a", "b"]
    back = world.snapshots.revert("vm-running", "b", sync_time=False)
    assert back.note == "reverted to snapshot b (running)"  # no time to say


@pytest.mark.parametrize(("act", "operation"), [
    (lambda s: s.create("down/vm", "s1"), "snapshot-create"),
    (lambda s: s.revert("down/vm", "s1"), "snapshot-revert"),
    (lambda s: s.delete("down/vm", "s1"), "snapshot-delete"),
])
def test_an_unreachable_host_is_journalled_as_the_snapshot_operations_failure(
        world: World, act: Any, operation: str) -> None:
    from support import UNREACHABLE_URI

    with Fleet([HostRef("down", UNREACHABLE_URI)], journal=world.store.journal,
               connect_timeout_s=5) as fleet:
        snapshots = Snapshots(fleet, world.lifecycle.ops, world.snapshots.guard)
        with pytest.raises(errors.HostUnreachable):
            act(snapshots)
    [row] = world.store.journal.list(vm="vm")
    assert (row.operation, row.host) == (operation, "down")


def test_the_subtree_deleted_is_named(world: World) -> None:
    for name in ("a", "b", "c"):
        world.snapshots.create("vm-running", name)
    world.lifecycle.suspend("vm-running")
    world.snapshots.revert("vm-running", "a", sync_time=False)
    world.snapshots.create("vm-running", "d")  # a second child of a
    result = world.snapshots.delete("vm-running", "a", children=True)
    assert result.note.startswith("deleted snapshot a and 3 below it (")
    assert sorted(result.note.split("(")[1].rstrip(")").split(", ")) == ["b", "c", "d"]


# -- what the notes say of external snapshots (this driver takes internal ones only) ------------

def _doc(**kw: Any) -> SnapshotDoc:
    base: dict[str, Any] = {"name": "s1", "description": "", "state": "disk-snapshot",
                            "created": None, "parent": None, "memory": "no", "disks": ()}
    return SnapshotDoc(**(base | kw))


def test_the_note_of_a_new_external_snapshot_names_its_overlays() -> None:
    doc = _doc(disks=(SnapshotDisk("vda", "external", "/vm/web1.s1"),
                      SnapshotDisk("vdb", "external", "/vm/data.s1"),
                      SnapshotDisk("vdc", "no", ""), SnapshotDisk("vdd", "internal", "x")))
    assert snapshots_module._describe_new(doc, "") == (
        "external (disk-only) snapshot s1: vda now writes to the overlay /vm/web1.s1, vdb now "
        "writes to the overlay /vm/data.s1")
    assert snapshots_module._describe_new(_doc(memory="external"), "quiesced") == (
        "external (disk-only) snapshot s1; quiesced")


def test_the_note_of_a_deleted_external_snapshot_says_where_its_data_went() -> None:
    doc = _doc(parent="s0", disks=(SnapshotDisk("vda", "external", "/vm/web1.s1"),
                                   SnapshotDisk("vdb", "external", "/vm/data.s1")))
    assert snapshots_module._describe_deleted(doc, [], children=False,
                                              metadata_only=False) == (
        "deleted snapshot s1 (its overlay was merged into the disk chain and removed)")
    assert snapshots_module._describe_deleted(doc, ["s2"], children=False,
                                              metadata_only=True) == (
        "deleted snapshot s1; its children (s2) now hang from s0 (metadata only: its overlay "
        "file(s) stay on the host: /vm/web1.s1, /vm/data.s1)")


# -- libvirt's refusals of external snapshots, as libvirt 9.0 words them -----------------------

class _Refusing:
    """A libvirt domain whose snapshot calls fail as libvirt 9.0's qemu driver does."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message

    def _fail(self, *_args: object) -> None:
        err = libvirt.libvirtError(self.message)
        err.err = (self.code, libvirt.VIR_FROM_QEMU, self.message, 2, None, None, None, 0, 0)
        raise err

    revertToSnapshot = snapshotCreateXML = snapshotLookupByName = _fail
    delete = _fail


class _StubGuest:
    def __init__(self, dom: object) -> None:
        self._dom = dom
        self.name = "web1"
        self.host = type("H", (), {"name": "hv1"})()


def _stub_snapshot(dom: _Refusing, name: str) -> Snapshot:
    snap = Snapshot.__new__(Snapshot)
    snap.guest, snap._snap, snap.name = _StubGuest(dom), dom, name  # type: ignore[assignment]
    return snap


@pytest.mark.parametrize(("call", "code", "message", "expected"), [
    ("revert", libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
     "unsupported configuration: revert to external snapshot not supported yet",
     (errors.InvalidTransition, "cannot revert web1 to snapshot s2: it is an external (disk-only) "
      "snapshot, and libvirt on hv1 cannot revert to those yet; revert to an internal")),
    ("delete", libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
     "Operation not supported: deleting external snapshot that has internal snapshot as "
     "parent not supported",
     (errors.Unsupported, "drop only its metadata with --metadata-only")),
    ("delete", libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
     "unsupported configuration: deletion of external children disk snapshots not supported",
     (errors.Unsupported, "delete those first, newest first, then s2")),
    ("delete", libvirt.VIR_ERR_INVALID_ARG,
     "invalid argument: could not find base disk source in disk source chain",
     (errors.Unsupported, "overlay file the VM no longer uses")),
    ("delete", libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
     "Operation not supported: disk image 'vda' for internal snapshot 's2' is not the same "
     "as disk image currently used by VM",
     (errors.Unsupported, "revert to s2 first, or drop only its metadata")),
    ("lookup", libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
     "Domain snapshot not found: no domain snapshot with matching name 's2'",
     (errors.NotFound, "web1 on hv1 has no snapshot s2; `virtlife snapshot web1 list`")),
    ("create", libvirt.VIR_ERR_OPERATION_FAILED,
     "operation failed: domain moment s2 already exists",
     (errors.AlreadyExists, "web1 already has a snapshot s2")),
    ("create", libvirt.VIR_ERR_OPERATION_INVALID, "Requested operation is not valid: x",
     (errors.InvalidTransition, "cannot take snapshot s2 of web1 on hv1: Requested")),
])
def test_libvirts_refusals_become_one_line_errors_saying_what_works(
        call: str, code: int, message: str, expected: tuple[type[Exception], str]) -> None:
    dom = _Refusing(code, message)
    snaps = DomainSnapshots(_StubGuest(dom))  # type: ignore[arg-type]
    act: dict[str, Callable[[], object]] = {
        "revert": lambda: snaps.revert(_stub_snapshot(dom, "s2")),
        "delete": lambda: _stub_snapshot(dom, "s2").delete(),
        "lookup": lambda: snaps.lookup("s2"),
        "create": lambda: snaps.create("<domainsnapshot/>", "s2"),
    }
    kind, text = expected
    with pytest.raises(kind) as caught:
        act[call]()
    assert text in str(caught.value) and "\n" not in str(caught.value)


def test_a_revert_to_an_external_snapshot_is_refused_with_exit_3() -> None:
    dom = _Refusing(libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
                    "unsupported configuration: revert to external snapshot not supported yet")
    snaps = DomainSnapshots(_StubGuest(dom))  # type: ignore[arg-type]
    with pytest.raises(errors.VirtlifeError) as caught:
        snaps.revert(_stub_snapshot(dom, "s2"))
    assert caught.value.exit_code == 3, caught.value
