"""Leadership among supervisors: the pure decisions (with an injected clock), and the
lease row, the fencing epoch and the guard on both engines (SQLite, PostgreSQL).

Two candidates stand for two processes in one test (``Leadership(me=...)``), driven one
``step()`` at a time, never by the loop's thread. The database's time passing is made
by moving the lease's end back in the row (``_lapse``): what a stopped leader's lease
looks like to the others once its TTL has run out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtlife import errors
from virtlife.services import leadership as ld
from virtlife.store import Store, open_store
from virtlife.store import leadership as lease
from virtlife.store.journal import ProcessRef, this_process

A = ProcessRef("machine-a", "boot-a", 101, 1)
B = ProcessRef("machine-b", "boot-b", 202, 2)


def term(epoch: int, holder: ProcessRef = A, expires_s: float = 100.0) -> lease.Term:
    return lease.Term(epoch, holder, "host", 0.0, expires_s)


# -- pure decisions ------------------------------------------------------------------------

def test_the_first_candidate_begins_epoch_one() -> None:
    assert lease.claim_term(None, 50.0) == lease.Claim(1, None)


def test_a_term_in_force_is_not_claimed_and_a_lapsed_one_is_taken_over_with_the_next_epoch(
        ) -> None:
    assert lease.claim_term(term(4, expires_s=100.0), 99.9) is None
    claim = lease.claim_term(term(4, expires_s=100.0), 100.0)
    assert claim == lease.Claim(5, term(4)) and claim.took_over


def test_the_file_lock_holder_takes_over_even_a_term_in_force() -> None:
    assert lease.claim_term(term(4, expires_s=100.0), 10.0, exclusive=True) == \
        lease.Claim(5, term(4))


def test_a_failed_renewal_is_told_apart_deposed_lapsed_or_raced() -> None:
    assert lease.lost_why(term(5, B), 4, A, 10.0) == "deposed"
    assert lease.lost_why(term(4, B), 4, A, 10.0) == "deposed"  # same epoch, other holder
    assert lease.lost_why(None, 4, A, 10.0) == "deposed"
    assert lease.lost_why(term(4, A, expires_s=9.0), 4, A, 10.0) == "lapsed"
    assert lease.lost_why(term(4, A, expires_s=11.0), 4, A, 10.0) == "renewed"


def test_a_leader_counts_itself_leader_only_within_the_ttl_of_its_last_renewal() -> None:
    assert ld.mine_locally(100.0, 100.0 + ld.TTL_S - 0.01)
    assert not ld.mine_locally(100.0, 100.0 + ld.TTL_S)
    assert not ld.mine_locally(None, 0.0)


def test_the_documented_bound_is_within_the_failover_target() -> None:
    assert ld.FAILOVER_BOUND_S == ld.TTL_S + ld.POLL_S <= 10.0
    assert ld.RENEW_S * 3 < ld.TTL_S  # three renewals may fail before the lease lapses
    assert lease.IDLE_IN_TX_MS / 1000 < ld.TTL_S  # a stopped guard frees the row in time
    assert ld.next_wait(True) == ld.RENEW_S and ld.next_wait(False) == ld.POLL_S


# -- on both engines -----------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(engine_where: Path | str) -> Iterator[Store]:
    with open_store(engine_where) as opened:
        yield opened


@pytest.fixture
def made(store: Store) -> Iterator[list[ld.Leadership]]:
    """The candidates a test makes, stopped (their files and connections closed) after."""
    made: list[ld.Leadership] = []
    yield made
    for one in made:
        one.stop()


def candidate(store: Store, made: list[ld.Leadership], me: ProcessRef,
              clock: Clock | None = None) -> ld.Leadership:
    one = ld.Leadership(store, me=me, clock=clock or Clock())
    made.append(one)
    return one


def _lapse(store: Store, by_s: float = 3600.0) -> None:
    store.database.write("UPDATE leadership SET expires_s = expires_s - ?", (by_s,))


def changes(store: Store) -> list[tuple[str, int | None, str]]:
    return [(e.operation, e.epoch, e.outcome) for e in reversed(store.journal.list())
            if e.operation in ld.CHANGES]


def _release_file_lock(one: ld.Leadership) -> None:
    """What the lock holder's death does to the SQLite file lock (closing its file)."""
    if one._file_lock is not None:  # the process ends, in one process
        one._file_lock.release()


def test_one_candidate_leads_and_the_other_follows(store: Store,
                                                   made: list[ld.Leadership]) -> None:
    a, b = candidate(store, made, A), candidate(store, made, B)
    a.step()
    b.step()
    assert (a.epoch, b.epoch) == (1, None)
    assert changes(store) == [(ld.ACQUIRED, 1, "ok")]
    b.step()
    a.step()  # renews
    assert (a.epoch, b.epoch) == (1, None)
    with pytest.raises(errors.NotLeader, match="not the leader"):
        with b.guarded():
            pass


def test_a_lapsed_leader_is_replaced_and_its_guarded_write_changes_nothing(
        store: Store, made: list[ld.Leadership]) -> None:
    a, b = candidate(store, made, A), candidate(store, made, B)
    a.step()
    with a.guarded() as acting:
        acting.record("fleet-test", "h1", "vm1", "under epoch 1")
    _lapse(store)  # A was stopped: the database's time ran past its lease
    _release_file_lock(a)  # (SQLite: only the lock's holder may begin a term)
    b.step()
    assert b.epoch == 2
    took = [e for e in store.journal.list() if e.operation == ld.TOOK_OVER]
    assert len(took) == 1 and "took over from machine-a (pid 101" in took[0].detail
    assert a.epoch == 1  # A, woken, still believes it leads ...
    with pytest.raises(errors.NotLeader, match="epoch 1 is stale: machine-b"):
        with a.guarded() as acting:  # ... but its write under epoch 1 is refused
            acting.record("fleet-test", "h1", "vm1", "under a stale epoch")
            acting.conn.execute("UPDATE hosts SET uri = 'x'")
    assert a.epoch is None  # and it stepped down at once
    assert [e.detail for e in store.journal.list() if e.operation == "fleet-test"] == [
        "under epoch 1"]
    assert changes(store) == [(ld.ACQUIRED, 1, "ok"), (ld.TOOK_OVER, 2, "ok"),
                              (ld.STEPPED_DOWN, 1, "refused")]
    a.step()  # a follower now: B's term is in force
    assert (a.epoch, b.epoch) == (None, 2)
    with b.guarded() as acting:
        acting.record("fleet-test", "h1", "vm1", "under epoch 2")
    assert store.journal.list(limit=1)[0].epoch == 2


def test_a_deposed_leader_steps_down_at_its_next_renewal(
        store: Store, made: list[ld.Leadership]) -> None:
    a, b = candidate(store, made, A), candidate(store, made, B)
    a.step()
    _lapse(store)
    _release_file_lock(a)
    b.step()
    a.step()  # its renewal is refused
    assert a.epoch is None
    (down,) = [e for e in store.journal.list() if e.operation == ld.STEPPED_DOWN]
    assert (down.epoch, down.outcome) == (1, "refused")
    assert "renewal was refused: epoch 1 is stale: machine-b (pid 202) holds epoch 2" in \
        down.detail


def test_a_lapsed_lease_no_one_took_is_lost_then_begun_again_under_a_new_epoch(
        store: Store, made: list[ld.Leadership]) -> None:
    a = candidate(store, made, A)
    a.step()
    _lapse(store)
    a.step()
    assert a.epoch is None
    a.step()
    assert a.epoch == 2
    assert changes(store) == [(ld.ACQUIRED, 1, "ok"), (ld.LOST, 1, "error"),
                              (ld.TOOK_OVER, 2, "ok")]


def test_a_leader_that_could_not_renew_for_the_ttl_stops_counting_itself_leader(
        store: Store, made: list[ld.Leadership]) -> None:
    clock = Clock()
    a = candidate(store, made, A, clock)
    a.step()
    clock.now += ld.TTL_S
    assert a.epoch is None
    with pytest.raises(errors.NotLeader):
        with a.guarded():
            pass


def test_stopping_releases_the_lease_so_the_next_candidate_need_not_wait(
        store: Store, made: list[ld.Leadership]) -> None:
    a, b = candidate(store, made, A), candidate(store, made, B)
    a.step()
    a.stop()
    b.step()
    assert b.epoch == 2
    assert changes(store) == [(ld.ACQUIRED, 1, "ok"), (ld.STEPPED_DOWN, 1, "ok"),
                              (ld.TOOK_OVER, 2, "ok")]


def test_two_candidates_racing_for_one_epoch_cannot_both_win(store: Store) -> None:
    db = store.database
    assert lease.acquire(db, A, "a", 8.0) == lease.Claim(1, None)
    assert lease.acquire(db, B, "b", 8.0) is None  # in force
    _lapse(store)
    term_read, _ = lease.read(db)
    won = lease.acquire(db, B, "b", 8.0)
    assert won is not None and won.epoch == 2
    # A candidate that read epoch 1 and writes after B: its conditional write misses.
    late = db.write("UPDATE leadership SET epoch = 2, machine = 'a' WHERE role = ? AND"
                    " epoch = ?", (lease.ROLE, term_read.epoch if term_read else 0))
    assert late.rowcount == 0


def test_leader_reports_the_term_in_force_and_none_once_it_lapsed(
        store: Store, made: list[ld.Leadership]) -> None:
    with pytest.raises(errors.NotFound, match="no supervisor leads"):
        ld.current_leader(store)
    me = this_process()  # a live process: SQLite also asks /proc
    a = candidate(store, made, me)
    a.step()
    view = ld.current_leader(store)
    assert (view.machine, view.pid, view.epoch, view.engine) == (
        me.machine, os.getpid(), 1, store.database.engine)
    assert set(view.as_dict()) >= {"machine", "pid", "epoch", "since"}
    assert 0 < view.expires_in_s <= ld.TTL_S
    _lapse(store)
    with pytest.raises(errors.NotFound, match=r"the last, epoch 1, was"):
        ld.current_leader(store)


def test_the_sqlite_file_lock_keeps_a_second_leader_out_while_the_first_lives(
        tmp_path: Path) -> None:
    with open_store(tmp_path / "virtlife.db") as store:
        a, b = ld.Leadership(store, me=A), ld.Leadership(store, me=B)
        try:
            a.step()
            _lapse(store)  # even a lapsed row: the lock is what counts on one machine
            b.step()
            assert (a.epoch, b.epoch) == (1, None)
            assert (tmp_path / "virtlife.db.leader").exists()
            _release_file_lock(a)
            b.step()
            assert b.epoch == 2
        finally:
            a.stop()
            b.stop()


def test_the_api_shows_the_leader_to_a_reader_and_404_without_one(tmp_path: Path) -> None:
    from api_support import served

    with served(tmp_path / "s.db", {"local": "test:///default"}, follow_events=False) as api, \
            api.client(token=api.read_only_token) as reader:
        missing = reader.get("/api/leader")
        assert missing.status_code == 404
        assert "no supervisor leads" in missing.json()["error"]["message"]
        store = api.app.state.services.need_store()
        one = ld.Leadership(store)
        try:
            one.step()
            shown = reader.get("/api/leader")
            assert shown.status_code == 200
            assert {k: shown.json()[k] for k in ("pid", "epoch")} == {"pid": os.getpid(),
                                                                      "epoch": 1}
        finally:
            one.stop()
        assert api.client(token="").get("/api/leader").status_code == 401
