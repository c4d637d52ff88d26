"""Migration through the REST API between the two lab hosts: the pre-flight report, a
live move answered 202 with its phases and figures on the event stream, the outcome
at ``GET /api/operations/{id}``, and the VM running at the destination."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import pytest
from migrate_support import boot_id, domstate, start_vm

from api_support import served
from lab_support import LabSession
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration


def test_live_move_through_the_api_with_progress_on_the_stream(
        lab: LabSession, real_stack: GuestImage, lab_vms: list[str]) -> None:
    name = f"vl-it-apimig-{os.getpid()}"
    lab_vms.append(name)
    start_vm(lab, real_stack, name)
    before = boot_id(lab, f"lab-a/{name}")
    path = f"/api/vms/lab-a/{name}/migrate"
    with served(lab.home / "virtlife.db", {}) as api, api.client(timeout_s=120) as c:
        report = c.post(f"{path}/check", json={"dest": "lab-b"})
        assert report.status_code == 200, report.text
        assert "fail" not in {check["status"] for check in report.json()["checks"]}
        with api.client(token=api.read_only_token) as reader:
            assert reader.post(path, json={"dest": "lab-b"}).status_code == 403

        messages: list[dict[str, Any]] = []
        listening = threading.Event()
        done = threading.Event()

        def listen() -> None:
            with api.client(timeout_s=300) as stream, \
                    stream.stream("GET", "/api/events") as response:
                for line in response.iter_lines():
                    listening.set()
                    if line.startswith("data: "):
                        message = json.loads(line[6:])
                        messages.append(message)
                        if message["type"] == "operation" and message["vm"].endswith(name):
                            done.set()
                            return

        reader_thread = threading.Thread(target=listen, daemon=True)
        reader_thread.start()
        assert listening.wait(15)
        started = c.post(path, json={"dest": "lab-b", "bandwidth_mib_s": 32,
                                     "postcopy": "never"})
        assert started.status_code == 202, started.text
        op_id = started.json()["op_id"]
        outcome = api.wait_operation(c, op_id, timeout_s=300)
        assert outcome["status"] == "ok", outcome
        assert outcome["result"]["host"] == "lab-b"
        assert done.wait(30), messages[-5:]
        reader_thread.join(5)

        progress = [m for m in messages if m["type"] == "progress" and m["op_id"] == op_id]
        phases = [m["detail"]["phase_label"] for m in progress
                  if m["stage"] == "progress" and m["detail"]]
        assert any("transferring memory" in p or "iterating" in p for p in phases), phases
        stats = [m["detail"] for m in progress if m["stage"] == "stats"]
        assert stats and stats[0]["phase"] == "completed", progress[-3:]
        assert 0 < stats[0]["downtime_ms"] <= 1000

        at_b = c.get(f"/api/vms/lab-b/{name}").json()
        assert at_b["state"] == "running", at_b
        assert c.get(f"/api/vms/lab-a/{name}").status_code == 404  # a real move
    assert domstate(lab, "lab-b", name).startswith("running")
    assert boot_id(lab, f"lab-b/{name}") == before  # the same boot: it moved live
