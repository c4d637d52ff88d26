"""``services.maintenance`` over test-driver hosts with a fake migration service: the
test driver migrates nothing and its placement finds no room, so the plan's placements
are given (``plan``/``place`` replaced) and the moves faked; what is checked is the
service's own part: each move carries the evacuation's id, a VM known to be at its
source is retried elsewhere and an unconfirmed one is not, a cancel asked through the
store (as from another shell) aborts the running move and starts nothing more, the host
stays in maintenance, and the parent row is journalled."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import NODE2_URI, NODE_URI
from virtlife import errors
from virtlife.services import maintenance as mt
from virtlife.services.context import Services, open_services
from virtlife.services.evacuation import Phase
from virtlife.services.migration.checks import Report
from virtlife.services.migration.ending import UNCONFIRMED
from virtlife.services.placement import Placement, Plan, VMToPlace
from virtlife.services.progress import Update
from virtlife.store import open_store

WAIT_S = 30.0


class FakeMigrations:
    """``Migrations.migrate`` and ``abort_running`` as the evacuation calls them: each
    call is recorded; ``fail`` says which (vm, destination) raise what; ``hold`` makes
    a VM's move wait until ``abort_running``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []  # ref, dest, kind, parent
        self.fail: dict[tuple[str, str], errors.VirtlifeError] = {}
        self.hold: set[str] = set()
        self.holding = threading.Event()
        self.aborted = threading.Event()

    def migrate(self, ref: str, dest: str, **kwargs: Any) -> None:
        vm = ref.split("/", 1)[1]
        self.calls.append((ref, dest, kwargs["options"].kind.value, kwargs["parent_id"]))
        if vm in self.hold:
            self.holding.set()
            assert self.aborted.wait(WAIT_S), "never aborted"
            raise errors.OperationFailed(f"{vm} did not move to {dest}: migration aborted; "
                                         f"{vm} is running on lab-a")
        failure = self.fail.get((vm, dest))
        if failure is not None:
            raise failure

    def abort_running(self) -> int:
        self.aborted.set()
        return 1


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    path = tmp_path / "store.db"
    with open_store(path) as store:
        store.hosts.add("lab-a", NODE_URI)
        store.hosts.add("lab-b", NODE2_URI)
        store.hosts.add("lab-c", "test:///default")
    with open_services(store_path=path) as s:
        yield s


@pytest.fixture
def fake(services: Services, monkeypatch: pytest.MonkeyPatch) -> FakeMigrations:
    """The maintenance service with the fake migrations, its plan sending vm-running and
    vm-paused (live) to lab-b, and any replacement going to lab-c."""
    migrations = FakeMigrations()
    services.maintenance.migrations = migrations  # type: ignore[assignment]

    def placed(vm: VMToPlace, dest: str) -> Placement:
        report = Report(vm.name, vm.source, dest, vm.options.kind, ())
        return Placement(vm.name, vm.source, dest, 1024, report)

    def plan(vms: list[VMToPlace], *_: Any, **__: Any) -> Plan:
        ours = [v for v in vms if v.name in ("vm-running", "vm-paused")]
        return Plan(tuple(placed(v, "lab-b") for v in ours), (), ())

    monkeypatch.setattr(mt, "plan", plan)
    monkeypatch.setattr(mt, "place", lambda vm, hosts, *_, **__: placed(vm, "lab-c")
                        if "lab-c" in {h.name for h in hosts} else None)
    return migrations


def test_a_vm_still_at_its_source_is_retried_on_another_host_as_a_child_of_the_evacuation(
        services: Services, fake: FakeMigrations) -> None:
    fake.fail[("vm-running", "lab-b")] = errors.OperationFailed(
        "vm-running did not move to lab-b: it broke; vm-running is running on lab-a")
    updates: list[Update] = []
    result = services.maintenance.evacuate("lab-a", stopped=mt.Stopped.LEAVE, concurrency=1,
                                           progress=updates.append)
    overall = [u for u in updates if u.stage == "overall"]
    assert overall[-1].detail is not None and overall[-1].detail["moved"] == 2
    assert overall[-1].fraction == 1.0 and "0 s to go" in overall[-1].message
    assert {u.op_id for u in updates} == {result.op_id}  # the fake reports no progress
    steps = {s.vm: s for s in result.steps}
    assert (steps["vm-running"].phase, steps["vm-running"].destination,
            steps["vm-running"].tried) == (Phase.MOVED, "lab-c", ["lab-b"])
    assert steps["vm-paused"].phase is Phase.MOVED
    assert sorted(fake.calls) == sorted([
        ("lab-a/vm-paused", "lab-b", "live", result.op_id),
        ("lab-a/vm-running", "lab-b", "live", result.op_id),
        ("lab-a/vm-running", "lab-c", "live", result.op_id)])
    assert services.need_store().hosts.get("lab-a").maintenance
    row = services.need_store().journal.get(result.op_id)
    assert row is not None and row.operation == mt.OPERATION
    # the crashed, pmsuspended and saved VMs cannot move: they stay, so the row says error
    assert row.outcome == "error" and {"vm-crashed", "vm-pmsusp"} <= {s.vm for s in
                                                                      result.stays}


def test_a_move_whose_end_is_unconfirmed_is_not_retried(services: Services,
                                                        fake: FakeMigrations) -> None:
    fake.fail[("vm-running", "lab-b")] = errors.HostUnreachable(
        f"lab-b stopped answering mid-move {UNCONFIRMED}")
    result = services.maintenance.evacuate("lab-a", stopped=mt.Stopped.LEAVE)
    step = next(s for s in result.steps if s.vm == "vm-running")
    assert step.phase is Phase.FAILED and step.tried == ["lab-b"]
    assert [c for c in fake.calls if c[0] == "lab-a/vm-running"] == [
        ("lab-a/vm-running", "lab-b", "live", result.op_id)]


def test_a_cancel_asked_through_the_store_aborts_the_move_and_starts_no_other(
        services: Services, fake: FakeMigrations, tmp_path: Path) -> None:
    fake.hold.add("vm-paused")  # the plan's first (larger, then by name): it waits
    out: list[mt.EvacuationResult] = []
    thread = threading.Thread(target=lambda: out.append(services.maintenance.evacuate(
        "lab-a", concurrency=1, stopped=mt.Stopped.LEAVE)), daemon=True)
    thread.start()
    assert fake.holding.wait(WAIT_S)
    with open_store(tmp_path / "store.db") as other:  # another shell's store
        holder = other.journal.holder(mt.lock_key("lab-a"))
        assert holder is not None and other.journal.ask_cancel(holder.op_id)
    thread.join(WAIT_S)
    assert not thread.is_alive() and out
    result = out[0]
    assert "cancelled" in result.cancelled and fake.aborted.is_set()
    assert [c[0] for c in fake.calls] == ["lab-a/vm-paused"]  # nothing started after
    steps = {s.vm: s for s in result.steps}
    assert steps["vm-paused"].phase is Phase.LEFT and "aborted" in steps["vm-paused"].reason
    assert steps["vm-running"].phase is Phase.LEFT
    assert services.need_store().hosts.get("lab-a").maintenance  # it stays so
    row = services.need_store().journal.get(result.op_id)
    assert row is not None and row.outcome == "interrupted"


def test_a_second_evacuation_of_the_host_is_refused_while_one_runs(
        services: Services, fake: FakeMigrations) -> None:
    fake.hold.add("vm-paused")
    thread = threading.Thread(target=lambda: services.maintenance.evacuate(
        "lab-a", concurrency=1), daemon=True)
    thread.start()
    assert fake.holding.wait(WAIT_S)
    with pytest.raises(errors.OperationBusy, match="evacuates it already"):
        services.maintenance.evacuate("lab-a")
    with pytest.raises(errors.OperationBusy, match="evacuates it; stop it first"):
        services.maintenance.activate("lab-a")
    services.maintenance.cancel_running()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def test_ctrl_c_cancels_the_evacuation_and_marks_its_row_interrupted(
        services: Services, fake: FakeMigrations) -> None:
    fake.hold.add("vm-paused")
    out: list[mt.EvacuationResult] = []
    thread = threading.Thread(target=lambda: out.append(services.maintenance.evacuate(
        "lab-a", concurrency=1, stopped=mt.Stopped.LEAVE)), daemon=True)
    thread.start()
    assert fake.holding.wait(WAIT_S)
    holder = services.need_store().journal.holder(mt.lock_key("lab-a"))
    assert holder is not None
    services.interrupted()  # what Ctrl-C calls (cli.app.on_interrupt)
    thread.join(WAIT_S)
    assert not thread.is_alive() and out and fake.aborted.is_set()
    assert out[0].cancelled == "interrupted (Ctrl-C)"
    assert [c[0] for c in fake.calls] == ["lab-a/vm-paused"]
    row = services.need_store().journal.get(holder.op_id)
    assert row is not None and row.outcome == "interrupted"
