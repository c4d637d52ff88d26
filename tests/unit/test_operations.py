"""The operation context: ids, per-VM exclusion (threads and processes), the running
journal row, interruption, a journal that cannot be written, job guards, background jobs.

Against libvirt's test driver (tests/data/node.xml as host ``t``) and a real SQLite store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.operations import (
    Jobs,
    OperationRun,
    Operations,
    job_conflict,
    outcome_of,
)
from virtlife.services.progress import Update
from virtlife.states import Operation, VMState
from virtlife.store import Store, open_store
from virtlife.store.journal import Actor

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "store.db")


@pytest.fixture
def life(store: Store) -> Lifecycle:
    fleet = Fleet([HostRef("t", NODE_URI)], journal=store.journal)
    return Lifecycle(fleet, store.journal, operations=Operations(store.journal,
                                                                 Actor("alice", "test")))


def test_an_operation_gets_an_id_and_one_journal_row_completed_at_the_end(
        life: Lifecycle, store: Store) -> None:
    result = life.suspend("vm-running")
    entry = store.journal.get(result.op_id)
    assert entry is not None and len(result.op_id) == 12
    assert (entry.operation, entry.outcome, entry.detail) == ("suspend", "ok", "paused (user)")
    assert entry.uuid == life.fleet.resolve("vm-running").uuid() and entry.uuid
    assert (entry.actor.user, entry.actor.process) == ("alice", "test")
    assert entry.process.pid == os.getpid()
    assert entry.finished_at is not None and entry.finished_at >= entry.started_at
    assert store.journal.running() == []


def test_the_running_row_records_the_domain_id_and_nothing_yet_of_the_outcome(
        life: Lifecycle, store: Store) -> None:
    guest = life.fleet.resolve("vm-running")
    with life.ops.run(Operation.SUSPEND, guest.host, guest.name, guest, op_id="rowcheck0001"):
        row = store.journal.get("rowcheck0001")
    assert row is not None and row.running
    assert (row.domid, row.detail, row.duration_s, row.finished_at) == (
        guest.domain_id(), "", 0.0, None)
    assert row.uuid == guest.uuid()


def test_a_bug_inside_an_operation_is_journalled_as_such_and_frees_the_vm(
        life: Lifecycle, store: Store) -> None:
    guest = life.fleet.resolve("vm-running")
    with pytest.raises(RuntimeError), life.ops.run(
            Operation.SUSPEND, guest.host, guest.name, guest, op_id="bugcheck0001"):
        raise RuntimeError("boom")
    entry = store.journal.get("bugcheck0001")
    assert entry is not None
    assert (entry.outcome, entry.detail) == ("interrupted", "bug: RuntimeError: boom")
    assert life.suspend("vm-running").state.state is VMState.PAUSED


def test_the_row_is_running_while_the_operation_runs(life: Lifecycle, store: Store) -> None:
    seen: list[str] = []

    def progress(update: object) -> None:
        running = store.journal.running()
        seen.extend(e.outcome for e in running)

    life.suspend("vm-running", progress=progress)  # type: ignore[arg-type]
    assert seen and set(seen) == {"running"}


@contextmanager
def held(life: Lifecycle, op: Operation, vm: str, op_id: str | None = None) -> Iterator[None]:
    """``op`` holds ``vm`` on another thread until the block ends."""
    guest = life.fleet.resolve(vm)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with life.ops.run(op, guest.host, guest.name, guest, op_id=op_id):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(10)
    try:
        yield
    finally:
        release.set()
        t.join(10)


def test_a_second_operation_on_the_vm_in_another_thread_is_refused_naming_the_first(
        life: Lifecycle) -> None:
    with held(life, Operation.SUSPEND, "vm-running", "holder000001"), \
            pytest.raises(errors.OperationBusy) as err:
        life.resume("vm-running")
    assert "holder000001" in str(err.value) and "suspend" in str(err.value)
    assert err.value.exit_code == 6


def test_queue_waits_for_the_running_operation_then_runs(life: Lifecycle) -> None:
    guest = life.fleet.resolve("vm-running")
    inside = threading.Event()

    def hold() -> None:
        with life.ops.run(Operation.SUSPEND, guest.host, guest.name, guest) as run:
            inside.set()
            time.sleep(0.5)
            guest.suspend()
            run.wait()

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(10)
    t0 = time.monotonic()
    result = life.resume("vm-running", queue_s=10)
    t.join(10)
    assert time.monotonic() - t0 >= 0.3
    assert result.state.state is VMState.RUNNING


def test_destroy_is_never_refused_for_a_running_operation(life: Lifecycle) -> None:
    with held(life, Operation.SHUTDOWN, "vm-running"):
        assert life.destroy("vm-running").state.state is VMState.SHUTOFF


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from virtlife.services.fleet import Fleet, HostRef
    from virtlife.services.operations import Operations
    from virtlife.states import Operation
    from virtlife.store import open_store
    from virtlife.store.journal import Actor
    store = open_store(Path(sys.argv[1]))
    fleet = Fleet([HostRef("t", sys.argv[2])])
    guest = fleet.resolve("vm-running")
    ops = Operations(store.journal, Actor("bob", "server"))
    with ops.run(Operation.SAVE, guest.host, guest.name, guest, op_id="otherprocess"):
        print("holding", flush=True)
        deadline = time.monotonic() + 30
        while not Path(sys.argv[3]).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
""")


def _holder(tmp_path: Path, store: Store) -> tuple[subprocess.Popen[str], Path]:
    release = tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.path), NODE_URI,
                             str(release)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc, release


def test_an_operation_held_by_another_process_is_refused_naming_it(
        life: Lifecycle, store: Store, tmp_path: Path) -> None:
    proc, release = _holder(tmp_path, store)
    try:
        with pytest.raises(errors.OperationBusy) as err:
            life.suspend("vm-running")
    finally:
        release.touch()
        proc.wait(20)
    text = str(err.value)
    assert "otherprocess" in text and "save" in text and "by bob via server" in text
    refused = [e for e in store.journal.list() if e.outcome == "refused"]
    assert [(e.operation, e.vm) for e in refused] == [("suspend", "vm-running")]
    # once the other process is done, the VM is free again
    assert life.suspend("vm-running").state.state is VMState.PAUSED


def test_a_running_row_left_by_a_killed_process_is_marked_interrupted_and_frees_the_vm(
        life: Lifecycle, store: Store, tmp_path: Path) -> None:
    proc, _release = _holder(tmp_path, store)
    proc.kill()
    proc.wait(10)
    [left] = store.journal.running()
    assert left.op_id == "otherprocess"
    assert life.suspend("vm-running").state.state is VMState.PAUSED
    entry = store.journal.get("otherprocess")
    assert entry is not None and entry.outcome == "interrupted"
    assert "process ended" in entry.detail


def test_sweep_marks_dead_processes_rows_interrupted(store: Store, tmp_path: Path) -> None:
    proc, _release = _holder(tmp_path, store)
    assert store.journal.sweep() == []  # alive: left alone
    proc.kill()
    proc.wait(10)
    assert [e.op_id for e in store.journal.sweep()] == ["otherprocess"]
    assert store.journal.running() == []


def test_ctrl_c_inside_an_operation_journals_it_interrupted(life: Lifecycle,
                                                          store: Store) -> None:
    guest = life.fleet.resolve("vm-running")
    with pytest.raises(KeyboardInterrupt):
        with life.ops.run(Operation.SUSPEND, guest.host, guest.name, guest, op_id="ctrlc0000001"):
            raise KeyboardInterrupt
    entry = store.journal.get("ctrlc0000001")
    assert entry is not None and entry.outcome == "interrupted"
    assert entry.detail == "interrupted (KeyboardInterrupt)"
    assert life.suspend("vm-running").state.state is VMState.PAUSED  # the VM is free


def test_interrupt_mine_marks_only_this_process_rows(store: Store, tmp_path: Path) -> None:
    proc, release = _holder(tmp_path, store)
    try:
        store.journal.begin(op_id="mine00000001", host="t", vm="x", operation="save",
                            actor=Actor("me"), lock_key="t/x")
        assert store.journal.interrupt_mine() == 1
        assert {e.op_id for e in store.journal.running()} == {"otherprocess"}
    finally:
        release.touch()
        proc.wait(20)


def test_a_read_only_journal_never_turns_a_success_into_a_failure(
        life: Lifecycle, store: Store) -> None:
    os.chmod(store.path, 0o444)
    for extra in ("-wal", "-shm"):
        side = Path(str(store.path) + extra)
        if side.exists():
            os.chmod(side, 0o444)
    reopened = open_store(store.path)
    if os.geteuid() == 0:  # root writes through file modes: make the connection read-only
        reopened._db._connection.execute("PRAGMA query_only = ON")
    fleet = Fleet([HostRef("t", NODE_URI)])
    ro = Lifecycle(fleet, reopened.journal, operations=Operations(reopened.journal))
    result = ro.suspend("vm-running")
    assert result.state.state is VMState.PAUSED
    assert result.warnings and "journal could not" in result.warnings[0]


def test_refusal_and_failure_outcomes() -> None:
    assert outcome_of(errors.InvalidTransition("x")) == "refused"
    assert outcome_of(errors.OperationBusy("x")) == "refused"
    assert outcome_of(errors.AlreadyExists("x")) == "refused"
    assert outcome_of(errors.InvalidInput("x")) == "refused"
    assert outcome_of(errors.OperationFailed("x")) == "error"
    assert outcome_of(errors.HostUnreachable("x")) == "error"
    assert outcome_of(KeyboardInterrupt()) == "interrupted"


def test_a_libvirt_job_refuses_every_operation_but_destroy() -> None:
    text = job_conflict(Operation.SUSPEND, "web1", "migration")
    assert text == ("cannot suspend web1: a libvirt migration job is running on it; "
                    "wait for it to end, or destroy the VM")
    assert job_conflict(Operation.DESTROY, "web1", "migration") is None
    assert job_conflict(Operation.SUSPEND, "web1", None) is None


def test_a_post_copy_resume_runs_over_the_failed_migrations_own_job_only() -> None:
    assert job_conflict(Operation.MIGRATE_RESUME, "web1", "migration") is None
    assert job_conflict(Operation.MIGRATE_RESUME, "web1", "save") is not None
    assert job_conflict(Operation.MIGRATE, "web1", "migration") is not None


def test_an_unreachable_host_is_journalled_as_the_operations_failure(store: Store) -> None:
    from support import UNREACHABLE_URI

    fleet = Fleet([HostRef("down", UNREACHABLE_URI)], connect_timeout_s=5)
    life = Lifecycle(fleet, store.journal)
    with pytest.raises(errors.HostUnreachable):
        life.suspend("down/web1")
    with pytest.raises(errors.HostUnreachable):
        life.resume("web1")  # the one configured host, named by the journal
    assert [(e.host, e.vm, e.operation, e.outcome) for e in store.journal.list()] == [
        ("down", "web1", "resume", "error"), ("down", "web1", "suspend", "error")]


def test_a_failed_restore_of_a_bad_file_is_journalled(life: Lifecycle, store: Store,
                                                      tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sav"
    bogus.write_bytes(b"not a save image")
    with pytest.raises(errors.VirtlifeError):
        life.restore(bogus, host="t")
    with pytest.raises(errors.NotFound):
        life.restore(tmp_path / "missing.sav", host="t")
    outcomes = [(e.operation, e.outcome) for e in store.journal.list()]
    assert outcomes == [("restore", "error"), ("restore", "refused")]
    assert bogus.exists()


def test_background_job_returns_its_id_at_once_and_reports_progress(
        life: Lifecycle, store: Store) -> None:
    jobs = Jobs(store.journal)
    gate = threading.Event()

    def start(op_id: str, progress: object) -> object:
        gate.wait(10)
        return life.suspend("vm-running", op_id=op_id, progress=progress)  # type: ignore[arg-type]

    op_id = jobs.submit(start, "suspend vm-running")  # type: ignore[arg-type]
    assert jobs.get(op_id).status == "running"
    gate.set()
    stages = [u.stage for u in jobs.follow(op_id, 10)]
    job = jobs.wait(op_id, 10)
    assert stages == ["request", "wait", "done"]
    assert job.status == "ok" and job.result is not None and job.result.op_id == op_id
    entry = store.journal.get(op_id)
    assert entry is not None and entry.outcome == "ok"
    assert job.as_dict()["progress"] == {"stage": "done", "message": "vm-running: paused (user)",
                                         "fraction": 1.0}


def test_a_background_job_that_is_refused_says_why(life: Lifecycle, store: Store) -> None:
    jobs = Jobs(store.journal)
    op_id = jobs.submit(lambda op_id, p: life.resume("vm-running", op_id=op_id, progress=p),
                        "resume vm-running")
    job = jobs.wait(op_id, 10)
    assert (job.status, job.exit_code) == ("refused", 3)
    assert "not paused" in job.error
    # another process reads it from the journal
    assert Jobs(store.journal).get(op_id).status == "refused"


def test_an_unknown_operation_id_is_not_found(store: Store) -> None:
    with pytest.raises(errors.NotFound, match="no operation nope"):
        Jobs(store.journal).get("nope")


def test_a_refused_create_is_journalled_as_a_refused_define(life: Lifecycle,
                                                           store: Store) -> None:
    from virtlife.services.provision import create
    from virtlife.xml.domain import DomainSpec

    with pytest.raises(errors.VMAlreadyExists):
        create(life, DomainSpec(name="vm-off"), host="t")
    with pytest.raises(errors.InvalidInput):
        create(life, DomainSpec(name="../x"), host="t")
    entries = store.journal.list()
    rows = [(e.vm, e.operation, e.outcome) for e in entries]
    assert rows == [("../x", "define", "refused"), ("vm-off", "define", "refused")]
    assert {(e.actor.user, e.actor.process, e.duration_s) for e in entries} == {
        ("alice", "test", 0.0)}


def test_history_of_a_vm_follows_its_uuid_not_its_name(life: Lifecycle, store: Store) -> None:
    life.start("vm-off")
    life.destroy("vm-off")
    life.undefine("vm-off")
    assert [e.operation for e in life.history("vm-off")] == ["undefine", "destroy", "start"]
    xml = ("<domain type='test'><name>vm-off</name><memory>1024</memory>"
           "<uuid>99999999-9999-9999-9999-999999999999</uuid><os><type>hvm</type></os></domain>")
    life.define(xml, host="t")
    assert [e.operation for e in life.history("vm-off")] == ["define"]
    assert [e.operation for e in life.history("t/vm-off")] == ["define"]
    assert len(life.history()) == 4


def test_a_job_from_another_process_is_read_from_the_journal(life: Lifecycle,
                                                            store: Store) -> None:
    with pytest.raises(errors.InvalidTransition):
        life.resume("vm-running")
    [entry] = store.journal.list()
    job = Jobs(store.journal).get(entry.op_id)
    assert (job.op_id, job.description, job.status) == (
        entry.op_id, "resume t/vm-running", "refused")
    assert job.error == "cannot resume vm-running: it is running, not paused"
    ok = life.suspend("vm-running")
    assert Jobs(store.journal).get(ok.op_id).error == ""


def test_follow_yields_each_update_while_the_job_still_runs(life: Lifecycle,
                                                           store: Store) -> None:
    jobs = Jobs(store.journal)
    release = threading.Event()

    def start(op_id: str, progress: object) -> object:
        progress(Update("vm-running", "step", "first", None, op_id))  # type: ignore[operator]
        release.wait(10)
        return life.suspend("vm-running", op_id=op_id)

    op_id = jobs.submit(start, "slow")  # type: ignore[arg-type]
    updates = jobs.follow(op_id, 10)
    first = next(updates)
    assert first.message == "first" and jobs.get(op_id).status == "running"
    release.set()
    assert list(updates) == []  # nothing more: the suspend reported to no one
    assert jobs.wait(op_id, 10).status == "ok"


def test_follow_and_wait_of_an_unknown_job_are_not_found(store: Store) -> None:
    jobs = Jobs(store.journal)
    with pytest.raises(errors.NotFound):
        jobs.wait("nope", 1)
    with pytest.raises(errors.NotFound):
        list(jobs.follow("nope", 1))


def test_a_bug_in_a_background_job_is_logged_and_reported(store: Store,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    jobs = Jobs(store.journal)

    def broken(op_id: str, progress: object) -> object:
        raise RuntimeError("boom")

    op_id = jobs.submit(broken, "broken")  # type: ignore[arg-type]
    job = jobs.wait(op_id, 10)
    assert (job.status, job.exit_code) == ("error", 1) and "boom" in job.error
    assert any(op_id in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_failure_the_journal_cannot_record_gets_a_note(tmp_path: Path) -> None:
    class ReadOnly:
        def record(self, *_a: object, **_k: object) -> None:
            raise errors.StoreUnavailable("attempt to write a readonly database")

    ops = Operations(ReadOnly())  # type: ignore[arg-type]
    err = errors.HostUnreachable("cannot reach host h")
    ops.record_failure(Operation.SUSPEND, "h", "web1", err)
    assert err.__notes__ == [
        "the journal could not record it: attempt to write a readonly database"]


@contextmanager
def held_by_other(life: Lifecycle, store: Store, op: Operation, vm: str,
                  op_id: str) -> Iterator[None]:
    """Another ``Operations`` on the same journal (as another process has) holds ``vm``."""
    other = Lifecycle(life.fleet, store.journal,
                      operations=Operations(store.journal, Actor("bob", "server")))
    with held(other, op, vm, op_id):
        yield


def test_the_journal_row_keeps_a_vm_from_another_operations_table(
        life: Lifecycle, store: Store) -> None:
    with held_by_other(life, store, Operation.SAVE, "vm-running", "otherops0001"), \
            pytest.raises(errors.OperationBusy) as err:
        life.suspend("vm-running")
    assert str(err.value).startswith(
        "cannot suspend vm-running: save (operation otherops0001, started ")
    assert str(err.value).endswith(
        "UTC by bob via server) is running on it; "
        "wait for it to end, or queue behind it (--queue)")
    [refused] = [e for e in store.journal.list() if e.outcome == "refused"]
    assert (refused.operation, refused.vm, refused.actor.user) == ("suspend", "vm-running",
                                                                   "alice")


def test_queueing_behind_another_operations_table_waits_then_runs(
        life: Lifecycle, store: Store) -> None:
    done: list[float] = []

    def release_later() -> None:
        time.sleep(0.6)
        done.append(time.monotonic())

    with held_by_other(life, store, Operation.SAVE, "vm-running", "otherops0002"):
        t = threading.Thread(target=release_later)
        t.start()
        t.join()
    # held, then released: a queued operation gets the VM
    t0 = time.monotonic()
    assert life.suspend("vm-running", queue_s=5).state.state is VMState.PAUSED
    assert time.monotonic() - t0 < 5


def test_a_queue_that_runs_out_is_refused_after_waiting(life: Lifecycle, store: Store) -> None:
    for holder in (held(life, Operation.SAVE, "vm-running", "sameproc0001"),
                   held_by_other(life, store, Operation.SAVE, "vm-running", "otherops0003")):
        with holder:
            t0 = time.monotonic()
            with pytest.raises(errors.OperationBusy, match="is running on it"):
                life.suspend("vm-running", queue_s=0.4)
            waited = time.monotonic() - t0
        assert 0.35 <= waited < 5


def test_the_wait_says_what_it_waits_for(life: Lifecycle) -> None:
    seen: list[str] = []
    life.suspend("vm-running", progress=lambda u: seen.append(u.message))
    assert seen[1] == "waiting for vm-running to be paused"
    seen.clear()
    life.destroy("vm-running", progress=lambda u: seen.append(u.message))
    assert seen[1] == "waiting for vm-running to be shut off or undefined"


def test_a_state_that_never_comes_times_out_within_the_operations_time(
        life: Lifecycle, store: Store) -> None:
    guest = life.fleet.resolve("vm-running")
    t0 = time.monotonic()
    with pytest.raises(errors.OperationTimeout) as err, life.ops.run(
            Operation.SUSPEND, guest.host, guest.name, guest, timeout_s=0.5,
            op_id="timeout00001") as run:
        run.wait(lambda s: False, "never")
    assert time.monotonic() - t0 < 3
    assert str(err.value).startswith("vm-running did not reach never within 0.5 s: it is ")
    entry = store.journal.get("timeout00001")
    assert entry is not None and entry.outcome == "error" and entry.finished_at is not None


# -- the confirming event: the wait takes it instead of reading the state again ------------


def _events_arrive(run: OperationRun, count: int) -> None:
    watch = run.watch
    deadline = time.monotonic() + 5
    while len(watch.events) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(watch.events) >= count


def test_a_confirming_event_ends_the_wait_without_reading_the_state(
        life: Lifecycle, monkeypatch: pytest.MonkeyPatch) -> None:
    guest = life.fleet.resolve("vm-running")
    with life.ops.run(Operation.SUSPEND, guest.host, guest.name, guest) as run:
        guest.suspend()
        _events_arrive(run, 1)
        monkeypatch.setattr(guest, "status", lambda: pytest.fail("the state was read"))
        assert str(run.wait()) == "paused (user)"
    assert run.result is not None and str(run.result.state) == "paused (user)"
    monkeypatch.undo()
    assert str(life.state("vm-running")[1]) == "paused (user)"


def test_a_newer_event_than_the_confirming_one_makes_the_wait_read_the_state(
        life: Lifecycle, monkeypatch: pytest.MonkeyPatch) -> None:
    guest = life.fleet.resolve("vm-running")
    reads: list[str] = []
    real_status = guest.status
    with life.ops.run(Operation.SUSPEND, guest.host, guest.name, guest) as run:
        guest.suspend()
        guest.resume()  # another actor, say: the VM runs again
        guest.suspend()
        guest.resume()
        _events_arrive(run, 4)
        monkeypatch.setattr(guest, "status", lambda: reads.append("read") or real_status())
        with pytest.raises(errors.OperationTimeout, match="it is running"):
            run.timeout_s = 0.3
            run.wait()
    assert reads  # the newest event was "resumed": the state was read, and told


def test_without_its_event_yet_the_wait_reads_the_state(
        life: Lifecycle, monkeypatch: pytest.MonkeyPatch) -> None:
    guest = life.fleet.resolve("vm-running")
    reads: list[str] = []
    real_status = guest.status
    with life.ops.run(Operation.SUSPEND, guest.host, guest.name, guest) as run:
        monkeypatch.setattr(run.watch, "latest", lambda: None)  # nothing has come yet
        guest.suspend()
        monkeypatch.setattr(guest, "status", lambda: reads.append("read") or real_status())
        assert str(run.wait()) == "paused (user)"
    assert reads == ["read"]
