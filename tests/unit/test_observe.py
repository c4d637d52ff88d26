"""What the journal adds to libvirt's state: dying shutdowns, removed managed saves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from virtlife.services.observe import observed_state
from virtlife.states import StateInfo, VMState, classify
from virtlife.store import Store, open_store

UUID = "11111111-2222-3333-4444-555555555555"


class StubGuest:
    """Answers ``status()`` from fixed libvirt numbers through the real ``classify``.

    Does not: talk to libvirt, change state, or know about managed-save images beyond
    the flag it is given.
    """

    def __init__(self, lv_state: int, lv_reason: int, managed: bool = False, *,
                 uuid: str = UUID, domid: int | None = 7) -> None:
        self.name = "web1"
        self.host = SimpleNamespace(name="h1")
        self._numbers = (lv_state, lv_reason, managed)
        self._uuid = uuid
        self._domid = domid

    def status(self) -> StateInfo:
        lv_state, lv_reason, managed = self._numbers
        return classify(lv_state, lv_reason, has_managed_save=managed)

    def uuid(self) -> str:
        return self._uuid

    def domain_id(self) -> int | None:
        return self._domid


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "s.db")


def _ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def test_the_stub_does_what_it_claims() -> None:
    assert str(StubGuest(3, 1).status()) == "paused (user)"
    assert StubGuest(4, 1).status().state is VMState.SHUTDOWN
    assert (StubGuest(4, 1, domid=3).uuid(), StubGuest(4, 1, domid=3).domain_id()) == (UUID, 3)


def test_shutdown_requested_long_ago_and_still_in_progress_is_dying(store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "ok", 0.1, "", uuid=UUID, started_at=_ago(10))
    state = observed_state(StubGuest(4, 1), store.journal)  # type: ignore[arg-type]
    assert state.state is VMState.DYING


def test_recent_shutdown_in_progress_is_shutdown(store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "ok", 0.1, "", uuid=UUID, started_at=_ago(0.1))
    assert observed_state(StubGuest(4, 1), store.journal).state is VMState.SHUTDOWN  # type: ignore[arg-type]


def test_shutdown_of_another_vm_does_not_count(store: Store) -> None:
    store.journal.record("h1", "db1", "shutdown", "ok", 0.1, "", uuid="other",
                         started_at=_ago(10))
    assert observed_state(StubGuest(4, 1), store.journal).state is VMState.SHUTDOWN  # type: ignore[arg-type]


def test_removed_managed_save_is_shut_off_though_libvirt_says_saved(store: Store) -> None:
    store.journal.record("h1", "web1", "managedsave", "ok", 1, "", uuid=UUID, started_at=_ago(5))
    store.journal.record("h1", "web1", "managedsave-remove", "ok", 0.1, "", uuid=UUID,
                         started_at=_ago(4))
    state = observed_state(StubGuest(5, 5), store.journal)  # type: ignore[arg-type]
    assert str(state) == "shut off (managed save removed)"


def test_save_to_file_after_a_removal_is_saved_again(store: Store) -> None:
    store.journal.record("h1", "web1", "managedsave-remove", "ok", 0.1, "", uuid=UUID,
                         started_at=_ago(4))
    store.journal.record("h1", "web1", "save", "ok", 1, "", uuid=UUID, started_at=_ago(3))
    assert str(observed_state(StubGuest(5, 5), store.journal)) == "saved (saved to file)"  # type: ignore[arg-type]


def test_without_a_journal_libvirt_is_shown_as_is() -> None:
    assert str(observed_state(StubGuest(5, 5), None)) == "saved (saved to file)"  # type: ignore[arg-type]


def test_guest_powering_off_a_day_after_a_journalled_shutdown_and_a_start_is_not_dying(
        store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "ok", 30, "shut off", uuid=UUID,
                         started_at=_ago(24 * 60), domid=3)
    store.journal.record("h1", "web1", "start", "ok", 2, "running", uuid=UUID,
                         started_at=_ago(24 * 60 - 1))
    state = observed_state(StubGuest(4, 1, domid=4), store.journal)  # type: ignore[arg-type]
    assert str(state) == "in shutdown (user)"


def test_a_shutdown_asked_of_an_earlier_run_does_not_age_this_one(store: Store) -> None:
    # started again outside virtlife (no journalled start): the domain id tells
    store.journal.record("h1", "web1", "shutdown", "error", 120, "timed out", uuid=UUID,
                         started_at=_ago(60), domid=3)
    assert observed_state(StubGuest(4, 1, domid=9), store.journal).state is (  # type: ignore[arg-type]
        VMState.SHUTDOWN)
    assert observed_state(StubGuest(4, 1, domid=3), store.journal).state is (  # type: ignore[arg-type]
        VMState.DYING)


def test_a_refused_shutdown_never_ages_a_guest_shutdown(store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "refused", 0, "cannot", uuid=UUID,
                         started_at=_ago(60))
    assert observed_state(StubGuest(4, 1), store.journal).state is VMState.SHUTDOWN  # type: ignore[arg-type]


def test_a_reused_name_does_not_inherit_another_vms_shutdown(store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "ok", 0.1, "", uuid="an-older-web1",
                         started_at=_ago(10))
    assert observed_state(StubGuest(4, 1), store.journal).state is VMState.SHUTDOWN  # type: ignore[arg-type]


def test_a_start_newer_than_the_shutdown_request_ends_its_age(store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "ok", 1, "", uuid=UUID, started_at=_ago(10))
    store.journal.record("h1", "web1", "restore", "ok", 1, "", uuid=UUID, started_at=_ago(9))
    assert observed_state(StubGuest(4, 1), store.journal).state is VMState.SHUTDOWN  # type: ignore[arg-type]


def test_an_unreadable_journal_shows_libvirts_state() -> None:
    from virtlife import errors

    class Broken:
        def last(self, *_a: object, **_k: object) -> None:
            raise errors.StoreUnavailable("disk I/O error")

    state = observed_state(StubGuest(4, 1), Broken())  # type: ignore[arg-type]
    assert str(state) == "in shutdown (user)"


def test_a_refused_start_does_not_end_a_shutdowns_age(store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "ok", 1, "", uuid=UUID, started_at=_ago(10))
    store.journal.record("h1", "web1", "start", "refused", 0, "cannot start", uuid=UUID,
                         started_at=_ago(5))
    assert observed_state(StubGuest(4, 1), store.journal).state is VMState.DYING  # type: ignore[arg-type]


def test_a_start_of_another_vm_under_the_same_name_does_not_end_the_age(store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "ok", 1, "", uuid=UUID, started_at=_ago(10))
    store.journal.record("h1", "web1", "start", "ok", 1, "", uuid="another-web1",
                         started_at=_ago(5))
    assert observed_state(StubGuest(4, 1), store.journal).state is VMState.DYING  # type: ignore[arg-type]


def test_another_vms_removed_managed_save_under_the_same_name_does_not_count(
        store: Store) -> None:
    store.journal.record("h1", "web1", "managedsave-remove", "ok", 0.1, "", uuid="older-web1",
                         started_at=_ago(4))
    assert str(observed_state(StubGuest(5, 5), store.journal)) == "saved (saved to file)"  # type: ignore[arg-type]
