"""The REST API on the real stack: a served app over the real libvirtd and QEMU.

Start and pause a real test-guest VM through the API, with its states arriving on the
event stream as they happen, and a server that keeps working across a libvirtd
restart (its connection reopened, the host's loss and return on the stream).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import Served, served

pytestmark = pytest.mark.integration


class Collector:
    """Reads ``/api/events`` on a thread; ``wait_for(pred)`` blocks for a message."""

    def __init__(self, api: Served) -> None:
        self.messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._client = api.client(timeout_s=300)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.wait_for(lambda m: m["type"] == "hello", 15)

    def _read(self) -> None:
        import json

        try:
            with self._client.stream("GET", "/api/events") as response:
                for line in response.iter_lines():
                    if self._stop:
                        return
                    if line.startswith("data: "):
                        with self._cond:
                            self.messages.append(json.loads(line[6:]))
                            self._cond.notify_all()
        except httpx.HTTPError:
            return

    def wait_for(self, pred: Callable[[dict[str, Any]], bool],
                 timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for message in self.messages:
                    if pred(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such event in {timeout_s} s; last: "
                                         f"{self.messages[-8:]}")
                self._cond.wait(left)

    def close(self) -> None:
        self._stop = True
        self._client.close()
        self._thread.join(5)


def test_start_and_pause_a_real_vm_with_its_states_on_the_stream(
        make_vm: Callable[..., str], tmp_path: Path) -> None:
    name = make_vm()
    with served(tmp_path / "api.db", {"local": "qemu:///system"}) as api, \
            api.client(timeout_s=120) as c:
        events = Collector(api)
        try:
            vm = c.get(f"/api/vms/local/{name}").json()
            assert (vm["state"], vm["allowed"][:2]) == ("shutoff", ["define", "start"])

            started = c.post(f"/api/vms/local/{name}/actions/start",
                             json={"wait_agent": True})
            assert started.status_code == 202
            done = api.wait_operation(c, started.json()["op_id"])
            assert done["status"] == "ok", done
            assert done["result"]["state"] == "running"
            state = events.wait_for(lambda m: m["type"] == "state" and m["name"] == name
                                    and m["state"] == "running")
            assert "suspend" in state["allowed"] and "start" not in state["allowed"]
            events.wait_for(lambda m: m["type"] == "event" and m["vm"] == name
                            and m["kind"] == "agent" and m["event"] == "connected")

            paused = c.post(f"/api/vms/local/{name}/actions/suspend")
            assert api.wait_operation(c, paused.json()["op_id"])["status"] == "ok"
            state = events.wait_for(lambda m: m["type"] == "state" and m["name"] == name
                                    and m["state"] == "paused")
            assert state["allowed"].count("resume") == 1
            ended = events.wait_for(lambda m: m["type"] == "operation"
                                    and m["op_id"] == paused.json()["op_id"])
            assert ended["status"] == "ok"
            progress = [m for m in events.messages if m["type"] == "progress"
                        and m["op_id"] == paused.json()["op_id"]]
            assert progress and progress[-1]["stage"] == "done"

            # refused at once while paused; the VM stays as it is
            refused = c.post(f"/api/vms/local/{name}/actions/suspend")
            assert refused.status_code == 409
            assert refused.json()["error"]["message"] == \
                f"cannot suspend {name}: it is paused, not running or idle"
            assert c.get(f"/api/vms/local/{name}").json()["state"] == "paused"

            gone = c.post(f"/api/vms/local/{name}/actions/destroy")
            assert api.wait_operation(c, gone.json()["op_id"])["status"] == "ok"
            text = c.get("/metrics").text
            assert 'virtlife_operations_total{operation="start",outcome="ok"} 1' in text
            assert 'virtlife_host_up{host="local"} 1' in text
        finally:
            events.close()


def test_the_server_outlives_a_libvirtd_restart(private_host: Any, tmp_path: Path) -> None:
    # qemu+unix:///system?socket=...: a URI the policy refuses unless the operator allows it
    with served(tmp_path / "api.db", {"priv": private_host.uri}, any_uri=True) as api, \
            api.client(timeout_s=60) as c:
        events = Collector(api)
        try:
            assert c.get("/api/vms").json()["unreachable"] == []
            hello = events.messages[0]
            assert hello["type"] == "hello" and set(hello["hosts"]) <= {"priv"}
            private_host.stop_daemon("libvirtd")
            events.wait_for(lambda m: m["type"] == "event" and m["host"] == "priv"
                            and m["event"] in ("disconnected", "unreachable"))
            hosts = c.get("/api/hosts").json()
            assert hosts[0]["reachable"] is False and hosts[0]["problem"]
            assert 'virtlife_host_up{host="priv"} 0' in c.get("/metrics").text
            lost = len(events.messages)
            private_host.start_daemons()
            # the same server answers again once its back-off after the failure ends
            deadline = time.monotonic() + 30
            while c.get("/api/vms").json()["unreachable"]:
                assert time.monotonic() < deadline, "the host stayed unreachable"
                time.sleep(0.5)
            back = events.wait_for(lambda m: m["type"] == "event" and m["host"] == "priv"
                                   and m["event"] == "connected"
                                   and events.messages.index(m) >= lost, 60)
            assert back["kind"] == "host"
        finally:
            events.close()
            private_host.start_daemons()
