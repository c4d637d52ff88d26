"""What the journal adds to libvirt's state: dying shutdowns, removed managed saves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from virtlife.services.observe import observed_state
from virtlife.states import StateInfo, VMState, classify
from virtlife.store import Store, open_store


class StubGuest:
    """Answers ``status()`` from fixed libvirt numbers through the real ``classify``.

    Does not: talk to libvirt, change state, or know about managed-save images beyond
    the flag it is given.
    """

    def __init__(self, lv_state: int, lv_reason: int, managed: bool = False) -> None:
        self.name = "web1"
        self.host = SimpleNamespace(name="h1")
        self._numbers = (lv_state, lv_reason, managed)

    def status(self) -> StateInfo:
        lv_state, lv_reason, managed = self._numbers
        return classify(lv_state, lv_reason, has_managed_save=managed)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "s.db")


def _ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def test_the_stub_does_what_it_claims() -> None:
    assert str(StubGuest(3, 1).status()) == "paused (user)"
    assert StubGuest(4, 1).status().state is VMState.SHUTDOWN


def test_shutdown_requested_long_ago_and_still_in_progress_is_dying(store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "ok", 0.1, "", started_at=_ago(10))
    state = observed_state(StubGuest(4, 1), store.journal)  # type: ignore[arg-type]
    assert state.state is VMState.DYING


def test_recent_shutdown_in_progress_is_shutdown(store: Store) -> None:
    store.journal.record("h1", "web1", "shutdown", "ok", 0.1, "", started_at=_ago(0.1))
    assert observed_state(StubGuest(4, 1), store.journal).state is VMState.SHUTDOWN  # type: ignore[arg-type]


def test_shutdown_of_another_vm_does_not_count(store: Store) -> None:
    store.journal.record("h1", "db1", "shutdown", "ok", 0.1, "", started_at=_ago(10))
    assert observed_state(StubGuest(4, 1), store.journal).state is VMState.SHUTDOWN  # type: ignore[arg-type]


def test_removed_managed_save_is_shut_off_though_libvirt_says_saved(store: Store) -> None:
    store.journal.record("h1", "web1", "managedsave", "ok", 1, "", started_at=_ago(5))
    store.journal.record("h1", "web1", "managedsave-remove", "ok", 0.1, "", started_at=_ago(4))
    state = observed_state(StubGuest(5, 5), store.journal)  # type: ignore[arg-type]
    assert str(state) == "shut off (managed save removed)"


def test_save_to_file_after_a_removal_is_saved_again(store: Store) -> None:
    store.journal.record("h1", "web1", "managedsave-remove", "ok", 0.1, "", started_at=_ago(4))
    store.journal.record("h1", "web1", "save", "ok", 1, "", started_at=_ago(3))
    assert str(observed_state(StubGuest(5, 5), store.journal)) == "saved (saved to file)"  # type: ignore[arg-type]


def test_without_a_journal_libvirt_is_shown_as_is() -> None:
    assert str(observed_state(StubGuest(5, 5), None)) == "saved (saved to file)"  # type: ignore[arg-type]
