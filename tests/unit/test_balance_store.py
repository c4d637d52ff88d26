"""The balancer's rows (migration 0013): pins and the last balancer move per VM, by
UUID, on both engines (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from virtlife.store import Store, open_store
from virtlife.store.balance import BalanceMove

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
U1 = "11111111-1111-4111-8111-111111111111"
U2 = "22222222-2222-4222-8222-222222222222"


@pytest.fixture
def store(engine_where: Path | str) -> Iterator[Store]:
    with open_store(engine_where) as opened:
        yield opened


def test_a_pin_is_kept_once_by_uuid_and_unpinned(store: Store) -> None:
    assert store.balance.pins() == {}
    assert store.balance.pin(U1, "web1", T0) is True
    assert store.balance.pin(U1, "web1-renamed", T0 + timedelta(1)) is False  # kept as was
    pins = store.balance.pins()
    assert list(pins) == [U1] and pins[U1].vm == "web1" and pins[U1].pinned_at == T0
    assert store.balance.unpin(U2) is False
    assert store.balance.unpin(U1) is True
    assert store.balance.pins() == {}


def test_the_last_move_replaces_the_one_before(store: Store) -> None:
    store.balance.record_move(BalanceMove(U1, "web1", "a", "b", T0, "op1"))
    store.balance.record_move(BalanceMove(U2, "web2", "a", "c", T0, "op1"))
    later = BalanceMove(U1, "web1", "b", "c", T0 + timedelta(hours=1), "op2")
    store.balance.record_move(later)
    moves = store.balance.moves()
    assert moves[U1] == later
    assert moves[U2].to_host == "c" and moves[U2].moved_at == T0
