"""The REST API over a saved VM (issue 15 A): a start that would boot over a save image
ends ``refused`` with the file named; ``discard_saved`` boots it fresh and the restore
route then refuses the stale image (409)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api_support import Served, served

VM = "/api/vms/local/test"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "store.db", {"local": "test:///default"}) as s:
        yield s


def test_start_over_a_save_image_is_refused_then_discarded(api: Served,
                                                           tmp_path: Path) -> None:
    path = str(tmp_path / "test.sav")
    with api.client() as client:
        saved = client.post(f"{VM}/actions/save", json={"path": path})
        assert api.wait_operation(client, saved.json()["op_id"])["status"] == "ok"
        started = client.post(f"{VM}/actions/start")
        refused = api.wait_operation(client, started.json()["op_id"])
        assert refused["status"] == "refused", refused
        assert path in refused["error"]
        assert "--discard-saved" in refused["error"]
        assert client.get(VM).json()["state"] == "saved"
        started = client.post(f"{VM}/actions/start", json={"discard_saved": True})
        done = api.wait_operation(client, started.json()["op_id"])
        assert done["status"] == "ok" and done["result"]["state"] == "running", done
        stopped = client.post(f"{VM}/actions/destroy")
        assert api.wait_operation(client, stopped.json()["op_id"])["status"] == "ok"
        stale = client.post("/api/hosts/local/restore", json={"path": path, "wait_s": 30})
        assert stale.status_code == 409, stale.text
        assert "it is stale" in stale.json()["error"]["message"]


def test_resume_takes_ignore_unreachable_and_save_does_not(api: Served) -> None:
    with api.client() as client:
        response = client.post(f"{VM}/actions/save", json={"path": "/x.sav",
                                                            "ignore_unreachable": True})
        assert response.status_code == 422
        assert "save does not take ignore_unreachable" in response.json()["error"]["message"]
