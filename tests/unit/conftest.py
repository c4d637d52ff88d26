"""Fixtures shared by the unit tests of connections and fleet calls: recorded
``libvirt.open`` calls and a host that accepts TCP connections and never answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from libvirt_faults import Opens, silent_host


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> Opens:
    return Opens(monkeypatch)


@pytest.fixture
def silent() -> Iterator[str]:
    with silent_host() as uri:
        yield uri
