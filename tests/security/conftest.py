"""The security tests' served app over libvirt's test driver, with its own images
directory (an allowed root), and an operator's client of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_support import Served, served


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "images"
    where.mkdir()
    monkeypatch.setenv("VIRTLIFE_IMAGES", str(where))
    return where


@pytest.fixture
def api(tmp_path: Path, images: Path) -> Iterator[Served]:
    with served(tmp_path / "s.db", {"local": "test:///default"}, follow_events=False) as s:
        yield s


@pytest.fixture
def op(api: Served) -> Iterator[httpx.Client]:
    with api.client(token=api.operator_token) as c:
        yield c
