"""Ctrl-C acts on what one ``Services`` started, never on another's in the same process.

``Services.interrupted`` (the CLI's interrupt hook) thaws the guests its operations
froze, latches "take no more snapshots", says which snapshots libvirt made anyway, and
aborts its migrations. A server and a test, or two tests on one worker, each have their
own ``Services``: interrupting one must leave the other's freezes, snapshots and
migrations alone. Each test runs two of them over private test-driver nodes and stores;
the guest agent and the migration job are fakes (the test driver has neither).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import NODE2_URI, NODE_URI
from virtlife import errors
from virtlife.hypervisor import Guest
from virtlife.hypervisor.snapshot import DomainSnapshots, Snapshot
from virtlife.services import snapshots as snapshots_module
from virtlife.services.context import Services, open_services
from virtlife.services.migration import service as migration_service

WAIT_S = 30.0  # a deadline, never waited out when the code is right


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Services, Services]]:
    """Two Services in this process, each with its own store and fleet (hosts a, b)."""
    opened: list[Services] = []
    try:
        for name in ("one", "other"):
            s = open_services(store_path=tmp_path / f"{name}.db")
            opened.append(s)
            s.need_store().hosts.add("a", NODE_URI)
            s.need_store().hosts.add("b", NODE2_URI)
        yield opened[0], opened[1]
    finally:
        for s in opened:
            s.close()


def names(s: Services) -> list[str]:
    return [snap.name for snap in s.snapshots.list("a/vm-running")]


def test_interrupting_one_services_leaves_another_taking_snapshots(
        two: tuple[Services, Services]) -> None:
    one, other = two
    assert names(other) == []  # its snapshots service is built, and used
    one.interrupted()
    with pytest.raises(KeyboardInterrupt):  # built after the interrupt: latched all the same
        one.snapshots.create("a/vm-running", "late")
    assert names(one) == []
    try:
        result = other.snapshots.create("a/vm-running", "s1")
    except KeyboardInterrupt:  # not let through: it would end the whole test run
        pytest.fail("the other Services took no snapshot: this one's Ctrl-C latched it too")
    assert result.vm == "vm-running" and names(other) == ["s1"]


class FakeAgent:
    """A guest agent whose file systems freeze and thaw (the test driver has none)."""

    def __init__(self) -> None:
        self.vm = "vm-running"
        self.frozen = False
        self.calls: list[str] = []
        self.thawed = threading.Event()

    def freeze_status(self, *, timeout_s: float = 5.0) -> str:
        return "frozen" if self.frozen else "thawed"

    def freeze(self, mountpoints: list[str] | None = None, *, timeout_s: float = 5.0,
               deadline_s: float | None = None) -> int:
        self.calls.append("freeze")
        self.frozen = True
        return 1

    def thaw(self, mountpoints: list[str] | None = None, *, timeout_s: float = 5.0,
             deadline_s: float | None = None) -> int:
        self.calls.append("thaw")
        self.frozen = False
        self.thawed.set()
        return 1


def test_interrupting_one_services_neither_thaws_nor_reports_anothers_snapshot(
        two: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    one, other = two
    agent = FakeAgent()
    monkeypatch.setattr(snapshots_module, "Agent", lambda guest: agent)
    real = DomainSnapshots.create
    taking = threading.Event()
    release = threading.Event()

    def create(self: DomainSnapshots, xml: str, name: str, *,
               disk_only: bool = False) -> Snapshot:
        taking.set()
        release.wait(WAIT_S)  # libvirt "takes" it until the test is done
        return real(self, xml, name)  # this driver has internal snapshots only

    monkeypatch.setattr(DomainSnapshots, "create", create)
    done: list[object] = []

    def snapshot() -> None:
        try:
            done.append(other.snapshots.create("a/vm-running", "q1", quiesce=True,
                                               freeze_bound_s=WAIT_S))
        except BaseException as err:  # said by the test below, not by the thread
            done.append(err)
            taking.set()

    worker = threading.Thread(target=snapshot)
    worker.start()
    try:
        assert taking.wait(WAIT_S) and done == []
        assert one.snapshots is not None and one.guard is not None  # built: it could act
        with caplog.at_level(logging.WARNING, logger="virtlife.services.context"):
            one.interrupted()
        assert agent.frozen and agent.calls == ["freeze"]  # the other's freeze holds
        assert caplog.messages == []  # and its snapshot is not the interrupted one's
        with caplog.at_level(logging.WARNING, logger="virtlife.services.context"):
            other.interrupted()  # its own Ctrl-C thaws it, and says what libvirt takes
        assert not agent.frozen
        assert caplog.messages[0] == "thawed 1 guest(s) frozen by an interrupted operation"
        assert caplog.messages[1].startswith("snapshot q1 of vm-running was being taken "
                                             "when interrupted")
    finally:
        release.set()
        worker.join(WAIT_S)
    [result] = done
    assert not isinstance(result, BaseException), result
    assert names(other) == ["q1"]


class FakeMigration:
    """A migration job that runs until it is aborted (the test driver cannot migrate)."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.started = threading.Event()
        self.aborted = threading.Event()

    def start(self, dest_uri: str, req: Any, *, dest: str = "") -> None:
        self.started.set()
        if self.aborted.wait(WAIT_S):
            raise errors.OperationFailed("operation aborted: migration out job: canceled "
                                         "by client")

    def job_stats(self) -> dict[str, Any]:
        return {}

    def abort(self) -> None:
        self.aborted.set()


class Made:
    """``Migration`` in the service: each job it makes, and an event once it made one."""

    def __init__(self) -> None:
        self.jobs: list[FakeMigration] = []
        self.created = threading.Event()

    def __call__(self, guest: Guest) -> FakeMigration:
        job = FakeMigration(guest)
        self.jobs.append(job)
        self.created.set()
        return job


def test_interrupting_one_services_does_not_abort_anothers_migration(
        two: tuple[Services, Services], monkeypatch: pytest.MonkeyPatch) -> None:
    one, other = two
    made = Made()
    monkeypatch.setattr(migration_service, "Migration", made)
    # the test driver's two nodes fail the checks (same name and UUID on both): moved on
    monkeypatch.setattr(migration_service, "_refuse_failed", lambda *a: None)
    failed: list[BaseException] = []

    def move() -> None:
        try:
            other.migrations.migrate("a/vm-running", "b")
        except errors.VirtlifeError as err:
            failed.append(err)

    worker = threading.Thread(target=move)
    worker.start()
    try:
        assert made.created.wait(WAIT_S)
        [job] = made.jobs
        assert job.started.wait(WAIT_S)
        assert one.migrations is not None  # built: it could abort what it ran
        one.interrupted()
        assert not job.aborted.is_set()  # the other's migration runs on
        other.interrupted()
        assert job.aborted.is_set()  # its own Ctrl-C aborts it
    finally:
        for each in made.jobs:
            each.aborted.set()
        worker.join(WAIT_S)
    assert not worker.is_alive()
    assert len(failed) == 1 and "canceled by client" in str(failed[0])


def test_interrupting_one_services_marks_only_its_own_running_journal_rows(
        tmp_path: Path) -> None:
    """Two Services of one process over one store: each one's Ctrl-C marks its own
    running operation interrupted (freeing its VM) and leaves the other's running."""
    from virtlife.states import Operation

    store_path = tmp_path / "shared.db"
    one = open_services(store_path=store_path)
    other = open_services(store_path=store_path)
    try:
        one.need_store().hosts.add("a", NODE_URI)
        journal = one.need_store().journal
        mine = one.fleet.resolve("a/vm-running")
        theirs = other.fleet.resolve("a/vm-paused")
        with one.operations.run(Operation.SUSPEND, mine.host, mine.name, mine,
                                op_id="one000000001"), \
                other.operations.run(Operation.RESUME, theirs.host, theirs.name, theirs,
                                     op_id="other0000001"):
            assert {e.op_id for e in journal.running()} == {"one000000001", "other0000001"}
            assert one.interrupted() == 1
            assert [e.op_id for e in journal.running()] == ["other0000001"]
            entry = journal.get("one000000001")
            assert entry is not None and entry.outcome == "interrupted"
            assert journal.holder(mine.uuid()) is None  # its VM is free again
            assert other.interrupted() == 1
            assert journal.running() == []
        assert one.operations.running_rows() == other.operations.running_rows() == []
    finally:
        one.close()
        other.close()
