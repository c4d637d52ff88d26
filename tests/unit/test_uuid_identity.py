"""A VM is known by its UUID (issue 17): every place that takes a VM reference takes
``UUID`` or ``HOST/UUID`` as well as ``NAME`` and ``HOST/NAME``, over the test driver's
private nodes (tests/data/node*.xml: each VM with a fixed UUID)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_support import Served, served, sse_messages
from support import NODE2_URI, NODE_URI
from virtlife import errors
from virtlife.services.fleet import Fleet, HostRef, as_uuid

RUNNING_A = "11111111-1111-1111-1111-111111111111"  # vm-running on node.xml
RUNNING_B = "77777777-7777-7777-7777-777777777777"  # vm-running on node2.xml
DB1 = "88888888-8888-8888-8888-888888888888"  # db1 on node2.xml


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with Fleet([HostRef("a", NODE_URI), HostRef("b", NODE2_URI)]) as f:
        yield f


def test_a_uuid_finds_the_vm_on_whichever_host_has_it(fleet: Fleet) -> None:
    guest = fleet.resolve(RUNNING_B)  # vm-running is on both hosts: its UUID is not
    assert (guest.host.name, guest.name) == ("b", "vm-running")
    assert fleet.resolve(f"a/{RUNNING_A}").name == "vm-running"
    assert fleet.resolve(DB1.replace("-", "").upper()).name == "db1"  # as virsh takes it


def test_a_uuid_no_host_has_is_not_found_and_says_so(fleet: Fleet) -> None:
    with pytest.raises(errors.VMNotFound, match="no VM with the UUID or name"):
        fleet.resolve("99999999-9999-9999-9999-999999999999")
    with pytest.raises(errors.VMNotFound):
        fleet.resolve(f"a/{DB1}")  # db1 is on b


@pytest.mark.parametrize(("text", "expected"), [
    (RUNNING_A, RUNNING_A),
    ("ABCDEF0123456789ABCDEF0123456789", "abcdef01-2345-6789-abcd-ef0123456789"),
    ("web1", None),
    ("11111111-1111-1111-1111-11111111111", None),  # one digit short
    (RUNNING_A + "0", None),
])
def test_as_uuid(text: str, expected: str | None) -> None:
    assert as_uuid(text) == expected


def test_state_takes_a_uuid(capsys: pytest.CaptureFixture[str]) -> None:
    from virtlife.cli.main import main

    assert main(["-c", NODE_URI, "state", "22222222-2222-2222-2222-222222222222"]) == 0
    assert capsys.readouterr().out == "paused (unknown)\n"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "store.db", {"local": NODE_URI}) as s:
        yield s


def test_the_api_takes_a_uuid_in_place_of_the_name(api: Served) -> None:
    with api.client() as client:
        body = client.get(f"/api/vms/local/{RUNNING_A}").json()
        assert (body["name"], body["uuid"], body["state"]) == (
            "vm-running", RUNNING_A, "running")
        done = api.wait_operation(client, client.post(
            f"/api/vms/local/{RUNNING_A}/actions/suspend").json()["op_id"])
        assert done["result"]["state"] == "paused"
        assert client.get("/api/vms/local/vm-running").json()["state"] == "paused"


OFF = "44444444-4444-4444-4444-444444444444"  # vm-off on node.xml


def test_the_event_stream_keys_a_vm_by_uuid_so_a_rename_is_one_row(api: Served) -> None:
    # a VM renamed (or moved) is the same VM: every event and state message carries its
    # UUID, and the state told after the old name's "undefined" event is the VM's under
    # its new name, never "undefined" (a client would drop the row and add another)
    fleet = api.app.state.feed.fleet
    with api.client() as c:
        started = threading.Event()

        def act() -> None:
            started.wait(10)
            fleet.host("local").conn.lookupByName("vm-off").rename("vm-new", 0)

        thread = threading.Thread(target=act)
        thread.start()
        try:
            def seen(message: dict[str, object]) -> bool:
                started.set()
                return (message.get("type") == "state" and message.get("uuid") == OFF
                        and message.get("name") == "vm-new")

            messages = sse_messages(c, until=seen)
        finally:
            started.set()
            thread.join(10)
        events = [m for m in messages if m["type"] == "event" and m["kind"] == "lifecycle"]
        assert events and {m["uuid"] for m in events} == {OFF}
        states = [(m["name"], m["state"]) for m in messages if m["type"] == "state"]
        assert ("vm-off", "undefined") not in states and ("vm-new", "shutoff") in states
        listing = c.get("/api/vms").json()["vms"]
        assert [(v["name"], v["host"]) for v in listing if v["uuid"] == OFF] == [
            ("vm-new", "local")]
