"""One VM, one host (issue 15 B), against libvirt's test driver: two hosts opened from
the same node file hold the same VMs (same UUIDs), as a VM defined on both after a
``migrate --keep-source`` does. The lab test (tests/integration/test_oneplace_lab.py)
counts real QEMU processes; here: every operation that makes a VM run asks the other
hosts, an unreachable host counts only where the VM was seen, and the pure verdict.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from support import NODE_URI
from virtlife import config, errors
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.freeze import FreezeGuard
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.oneplace import Sightings, verdict
from virtlife.services.snapshots import Snapshots
from virtlife.states import StateInfo, VMState
from virtlife.store import open_store
from virtlife.store.db import Store
from virtlife.store.journal import Actor

OFF = "44444444-4444-4444-4444-444444444444"  # vm-off in tests/data/node.xml
DOWN_URI = "qemu+tcp://127.0.0.1:1/system"  # nothing listens there: refused at once


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.db") as s:
        yield s


def _lifecycle(store: Store, *hosts: tuple[str, str]) -> Lifecycle:
    fleet = Fleet([HostRef(n, u) for n, u in hosts], journal=store.journal,
                  connect_timeout_s=2.0)
    return Lifecycle(fleet, store.journal)


@pytest.fixture
def two(store: Store) -> Iterator[Lifecycle]:
    lc = _lifecycle(store, ("a", NODE_URI), ("b", NODE_URI))
    yield lc
    lc.fleet.close()


@pytest.mark.parametrize("op", ["start", "resume", "define", "restore"])
def test_every_way_to_run_a_vm_is_refused_while_it_runs_elsewhere(
        two: Lifecycle, op: str, tmp_path: Path) -> None:
    two.start("b/vm-off")
    before = two.state("a/vm-off")[1]
    with pytest.raises(errors.InvalidTransition) as refused:
        if op == "start":
            two.start("a/vm-off")
        elif op == "resume":  # vm-paused is paused on both hosts (one node file)
            before = two.state("a/vm-paused")[1]
            two.resume("a/vm-paused")
        elif op == "define":
            two.define(two.dumpxml("a/vm-off", inactive=True), host="a")
        else:
            path = tmp_path / "off.sav"
            two.destroy("b/vm-off")
            two.start("a/vm-off")
            two.save("a/vm-off", path)
            two.start("b/vm-off", discard_saved=True)  # the image knows no host
            before = two.state("a/vm-off")[1]
            two.restore(path, host="a")
    text = str(refused.value)
    assert "same VM (same UUID) is active on b" in text, text
    assert refused.value.exit_code == 3
    assert two.state("a/vm-paused" if op == "resume" else "a/vm-off")[1] == before


def test_an_unreachable_host_that_held_the_vm_makes_it_unknown(store: Store) -> None:
    lc = _lifecycle(store, ("a", NODE_URI), ("c", DOWN_URI))
    try:
        store.journal.record(host="c", vm="vm-off", uuid=OFF, operation="start",
                             outcome="ok", detail="running (booted)", duration_s=1.0,
                             actor=Actor("t"))
        with pytest.raises(errors.InvalidTransition) as refused:
            lc.start("a/vm-off")
        text = str(refused.value)
        assert "whether it runs on c is unknown" in text and "--ignore-unreachable" in text
        assert lc.state("a/vm-off")[1].state is VMState.SHUTOFF
        started = lc.start("a/vm-off", ignore_unreachable=True)
        assert started.state.state is VMState.RUNNING
        assert any("not checked on c" in w for w in started.warnings)
    finally:
        lc.fleet.close()


def test_an_unreachable_host_that_never_held_the_vm_does_not_block(store: Store) -> None:
    lc = _lifecycle(store, ("a", NODE_URI), ("c", DOWN_URI))
    try:
        # c held it once, but the VM migrated away from c since
        store.journal.record(host="c", vm="vm-off", uuid=OFF, operation="migrate",
                             outcome="ok", detail="moved", duration_s=1.0, actor=Actor("t"))
        started = lc.start("a/vm-off")
        assert started.state.state is VMState.RUNNING and started.warnings == ()
    finally:
        lc.fleet.close()


def test_the_copy_a_migration_left_behind_does_not_start(two: Lifecycle) -> None:
    two.oneplace.moved(OFF, "vm-off", source="a", dest="b", op_id="mig000000001",
                       kept_source=True)
    with pytest.raises(errors.InvalidTransition) as refused:
        two.start("a/vm-off")  # b has it shut off: only the mark refuses
    text = str(refused.value)
    assert "copy a migration left behind" in text and "lives on b" in text
    assert "mig000000001" in text
    # b is the VM: it starts; once defined anew at a, a's definition is the VM again
    two.start("b/vm-off")
    two.destroy("b/vm-off")
    two.define(two.dumpxml("a/vm-off", inactive=True), host="a")
    assert two.start("a/vm-off").state.state is VMState.RUNNING


def test_a_destination_that_went_unreachable_still_counts(store: Store) -> None:
    lc = _lifecycle(store, ("a", NODE_URI), ("c", DOWN_URI))
    try:
        lc.oneplace.moved(OFF, "vm-off", source="a", dest="c", op_id="mig000000002",
                          kept_source=False)
        with pytest.raises(errors.InvalidTransition, match="whether it runs on c"):
            lc.start("a/vm-off")
    finally:
        lc.fleet.close()


# -- the pure verdict ------------------------------------------------------------------

def _seen(states: dict[str, VMState], unreachable: tuple[str, ...] = (),
          held: tuple[str, ...] = ()) -> Sightings:
    return Sightings({h: StateInfo(s, "x") for h, s in states.items()},
                     {h: "down" for h in unreachable}, set(held))


@pytest.mark.parametrize(("state", "refused"), [
    (VMState.RUNNING, True), (VMState.PAUSED, True), (VMState.PMSUSPENDED, True),
    (VMState.SHUTDOWN, True), (VMState.CRASHED, True), (VMState.IDLE, True),
    (VMState.SHUTOFF, False), (VMState.SAVED, False),
])
def test_verdict_refuses_every_state_with_a_qemu(state: VMState, refused: bool) -> None:
    assert (verdict("v", "a", _seen({"b": state}), ignore_unreachable=False)
            is not None) is refused


def test_verdict_unknown_only_where_held_and_not_ignored() -> None:
    assert verdict("v", "a", _seen({}, ("c",)), ignore_unreachable=False) is None
    assert verdict("v", "a", _seen({}, ("c",), ("c",)), ignore_unreachable=False)
    assert verdict("v", "a", _seen({}, ("c",), ("c",)), ignore_unreachable=True) is None
    # a VM active elsewhere is refused even with --ignore-unreachable
    assert verdict("v", "a", _seen({"b": VMState.RUNNING}, ("c",), ("c",)),
                   ignore_unreachable=True)
    # its own host never counts
    assert verdict("v", "a", _seen({"a": VMState.RUNNING}), ignore_unreachable=False) is None


def test_held_before_follows_the_newest_row_per_host(two: Lifecycle, store: Store) -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    for host, op in (("x", "start"), ("y", "undefine"), ("z", "migrate")):
        store.journal.record(host=host, vm="v", uuid="u1", operation=op, outcome="ok",
                             detail="", duration_s=0.0, actor=Actor("t"), started_at=t)
    store.journal.record(host="z", vm="v", uuid="u1", operation="start", outcome="refused",
                         detail="", duration_s=0.0, actor=Actor("t"),
                         started_at=datetime(2026, 1, 2, tzinfo=UTC))
    assert two.oneplace.held_before("u1") == {"x", "z"}


def _snapshots(lc: Lifecycle, store: Store) -> Snapshots:
    return Snapshots(lc.fleet, lc.ops, FreezeGuard(store.journal, store.freezes),
                     config.Settings(sync_time=False), oneplace=lc.oneplace)


def test_a_revert_that_would_run_the_vm_is_refused_while_it_runs_elsewhere(
        two: Lifecycle, store: Store) -> None:
    snapshots = _snapshots(two, store)
    snapshots.create("a/vm-off", "off")  # taken shut off: a revert runs nothing
    two.start("a/vm-off")
    snapshots.create("a/vm-off", "up")  # taken running: a revert starts a QEMU
    two.destroy("a/vm-off")
    two.start("b/vm-off")
    with pytest.raises(errors.InvalidTransition) as refused:
        snapshots.revert("a/vm-off", "up")
    text = str(refused.value)
    assert "cannot revert to snapshot up (it runs) vm-off on a" in text, text
    assert "same VM (same UUID) is active on b" in text, text
    assert two.state("a/vm-off")[1].state is VMState.SHUTOFF
    # a snapshot of the VM shut off brings nothing up: no check, no refusal
    assert snapshots.revert("a/vm-off", "off").state.state is VMState.SHUTOFF
    two.destroy("b/vm-off")
    assert snapshots.revert("a/vm-off", "up").state.state is VMState.RUNNING

