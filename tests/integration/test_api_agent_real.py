"""The REST API's agent and snapshot routes on the real stack: a served app over the
real libvirtd and QEMU, with the test guest's real qemu-ga.

One VM boot per test (each costs ~10 s under TCG): started through the API, its
agent read through the API and checked against what the guest itself says through
``agent/exec`` (its mounts, its addresses) or against this machine's clock; a
snapshot taken, listed and deleted through the API; a password set through the API
that appears in no answer and no journal row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import Served, served

pytestmark = pytest.mark.integration


@contextmanager
def running(make_vm: Callable[..., str], tmp_path: Path
            ) -> Iterator[tuple[Served, httpx.Client, str]]:
    """A test-guest VM started through the API (its agent answering), the server and a
    read-write client."""
    name = make_vm()
    with served(tmp_path / "api.db", {"local": "qemu:///system"},
                follow_events=False) as api, api.client(timeout_s=180) as c:
        started = c.post(f"/api/vms/local/{name}/actions/start", json={"wait_agent": True})
        assert started.status_code == 202, started.text
        done = api.wait_operation(c, started.json()["op_id"])
        assert done["status"] == "ok" and done["result"]["state"] == "running", done
        yield api, c, f"/api/vms/local/{name}"


def sh(c: httpx.Client, vm: str, script: str) -> str:
    """Run a shell script in the guest through ``agent/exec``; its stdout."""
    r = c.post(f"{vm}/agent/exec", json={"argv": ["/bin/sh", "-c", script],
                                        "timeout_s": 30, "wait_s": 40})
    assert r.status_code == 200, r.text
    got: dict[str, Any] = r.json()
    assert got["exit_code"] == 0, got
    return str(got["stdout"])


def test_the_agent_reads_through_the_api_are_what_the_guest_says(
        make_vm: Callable[..., str], tmp_path: Path) -> None:
    with running(make_vm, tmp_path) as (_api, c, vm):
        assert c.get(f"{vm}/agent/ping").json()["answered"] is True
        info = c.get(f"{vm}/agent/info").json()
        assert info["version"] and any(cmd["name"] == "guest-exec" and cmd["enabled"]
                                       for cmd in info["supported_commands"])

        mounts = sh(c, vm, "grep ^/dev/vd /proc/mounts").split()
        fs = c.get(f"{vm}/agent/fsinfo").json()
        assert [(f["mountpoint"], f["fstype"], f["disks"]) for f in fs] == [
            (mounts[1], mounts[2], ["vda"])]

        ip = sh(c, vm, "ip -o -4 addr show dev eth0").split()
        mac = sh(c, vm, "cat /sys/class/net/eth0/address").strip()
        nics = {n["name"]: n for n in c.get(f"{vm}/agent/ifaddr").json()}
        eth0 = nics["eth0"]
        assert eth0["hwaddr"] == mac
        assert f"{eth0['addresses'][0]['address']}/{eth0['addresses'][0]['prefix']}" == \
            ip[ip.index("inet") + 1]

        synced = c.post(f"{vm}/agent/time", json={"sync": True})
        assert synced.status_code == 200, synced.text
        assert abs(synced.json()["clock"]["after_s"]) < 2
        clock = c.get(f"{vm}/agent/time").json()
        assert abs(clock["offset_s"]) < 2 and abs(clock["here"] - time.time()) < 60

        failed = c.post(f"{vm}/agent/exec", json={"argv": ["/bin/sh", "-c", "echo no >&2; "
                                                           "exit 3"]})
        assert failed.status_code == 200
        assert (failed.json()["exit_code"], failed.json()["stderr"]) == (3, "no\n")

        secret = "Api-Real-Pw-5c1d"
        r = c.post(f"{vm}/agent/set-password", json={"user": "root", "password": secret})
        assert r.status_code == 200 and r.json()["note"] == "password of root set", r.text
        assert secret not in c.get(f"{vm}/history").text
        assert secret not in c.get(f"/api/operations/{r.json()['op_id']}").text


def test_a_snapshot_is_taken_listed_and_deleted_through_the_api(
        make_vm: Callable[..., str], tmp_path: Path) -> None:
    with running(make_vm, tmp_path) as (api, c, vm):
        taken = c.post(f"{vm}/snapshots", json={"name": "api-snap",
                                                "description": "from the API"})
        assert taken.status_code == 202, taken.text
        done = api.wait_operation(c, taken.json()["op_id"], timeout_s=300)
        assert done["status"] == "ok", done
        assert done["result"]["note"].startswith(
            "internal snapshot api-snap with the VM's memory (running)")
        listed = c.get(f"{vm}/snapshots").json()
        assert [(s["name"], s["location"], s["memory"], s["current"], s["description"])
                for s in listed] == [("api-snap", "internal", True, True, "from the API")]
        assert c.post(f"{vm}/snapshots", json={"name": "api-snap"}).status_code == 409

        deleted = c.delete(f"{vm}/snapshots/api-snap")
        assert deleted.status_code == 202
        done = api.wait_operation(c, deleted.json()["op_id"], timeout_s=300)
        assert done["status"] == "ok", done
        assert c.get(f"{vm}/snapshots").json() == []
        assert c.get(vm).json()["state"] == "running"
