"""The ``virtlife`` command itself against the real libvirtd: lab VM, list, events."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from support import VIRTLIFE, EventStream
from virtlife.lab.guest import GuestImage

pytestmark = pytest.mark.integration



def virtlife(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRTLIFE, *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy(), check=False)


@pytest.fixture
def vm(real_stack: GuestImage) -> Iterator[str]:
    name = f"vl-it-cli-{os.getpid()}"
    virtlife("destroy", name)
    virtlife("undefine", name, "--managed-save")
    yield name
    virtlife("destroy", name)
    virtlife("undefine", name, "--managed-save")
    from virtlife import config

    (config.images_dir() / f"{name}.qcow2").unlink(missing_ok=True)


def test_lab_vm_through_the_command_line(vm: str) -> None:
    run = virtlife("lab", "create", vm, "--start", "--wait-agent")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"{vm}: running (booted); guest agent answered after ")
    listing = json.loads(virtlife("list", "--all", "--json").stdout)
    row = next(r for r in listing["vms"] if r["name"] == vm)
    assert (row["host"], row["state"], row["reason"]) == ("local", "running", "booted")
    run = virtlife("resume", vm)
    assert run.returncode == 3
    assert run.stderr == f"virtlife: cannot resume {vm}: it is running, not paused\n"
    assert virtlife("suspend", vm).stdout == f"{vm}: paused (user)\n"
    assert virtlife("state", vm).stdout == "paused (user)\n"
    assert virtlife("shutdown", vm).returncode == 3  # paused: refused
    assert virtlife("destroy", vm).stdout == f"{vm}: shut off (destroyed)\n"
    history = json.loads(virtlife("history", vm, "--json").stdout)
    assert [(e["operation"], e["outcome"]) for e in history][:4] == [
        ("destroy", "ok"), ("shutdown", "refused"), ("suspend", "ok"), ("resume", "refused")]


def test_create_start_with_a_connect_uri_that_the_inventory_does_not_name(vm: str) -> None:
    # the host is then named by its URI, "/" and all: the start after the define once
    # split that name at its first "/" ("no host named qemu+unix:")
    uri = "qemu+unix:///system"
    run = virtlife("-c", uri, "create", vm, "--memory", "64", "--no-agent", "--no-vnc",
                   "--start")
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{vm}: running (booted)\n"
    assert virtlife("-c", uri, "state", f"{uri}/{vm}").stdout == "running (booted)\n"


def test_events_stream_lifecycle_and_agent_events(vm: str) -> None:
    assert virtlife("lab", "create", vm).returncode == 0
    stream = EventStream("--timeout", "90")
    try:
        stream.read_until({"kind": "host", "event": "connected"})
        assert virtlife("start", vm).returncode == 0
        stream.read_until({"vm": vm, "kind": "lifecycle", "event": "started",
                           "detail": "booted"})
        stream.read_until({"vm": vm, "kind": "agent", "event": "connected"})
        assert virtlife("suspend", vm).returncode == 0
        stream.read_until({"vm": vm, "kind": "lifecycle", "event": "suspended"})
    finally:
        stream.close()
