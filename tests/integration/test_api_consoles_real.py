"""The browser consoles' routes on a served app over the real libvirtd + QEMU with the
test guest: the VNC WebSocket speaks RFB from the VM's server, a ticket for another VM,
a used one and an expired one are refused (1008 and the reason), the serial WebSocket
exchanges a line with the guest's shell and closes with the reason when the VM stops,
and the downloaded .vv file points at the port ``virsh vncdisplay`` shows.

A real WebSocket client (``websockets``' sync client) talks to uvicorn; the server
and the VMs are always stopped and removed (``served``, ``make_vm``)."""

from __future__ import annotations

import configparser
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api_support import Served, served
from virtlife.api.auth import Tickets

pytestmark = pytest.mark.integration

MakeVM = Callable[..., str]
URI = "qemu:///system"
BOOT_S = 90.0


@pytest.fixture
def server(real_stack: object, tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "serve.db", {"local": URI}) as s:
        yield s


def running(server: Served, make_vm: MakeVM, suffix: str = "") -> str:
    name = make_vm(suffix)
    with server.client() as client:
        accepted = client.post(f"/api/vms/local/{name}/actions/start")
        assert accepted.status_code == 202, accepted.text
        done = server.wait_operation(client, accepted.json()["op_id"])
    assert done["status"] == "ok", done
    return name


def ticket(server: Served, name: str, kind: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.post(f"/api/vms/local/{name}/console-tickets", json={"kind": kind})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ws(server: Served, url: str, **kwargs: Any) -> ClientConnection:
    return connect(server.url.replace("http://", "ws://") + url, open_timeout=20, **kwargs)


def refusal(server: Served, url: str) -> tuple[int, str]:
    """The close code and reason of a socket the server closes before any data."""
    with ws(server, url) as conn:
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=20)
    rcvd = closed.value.rcvd
    assert rcvd is not None
    return rcvd.code, rcvd.reason


def test_the_vnc_socket_speaks_rfb_from_the_vms_server(server: Served,
                                                       make_vm: MakeVM) -> None:
    name = running(server, make_vm)
    issued = ticket(server, name, "vnc")
    with ws(server, issued["url"], subprotocols=["binary"]) as conn:  # type: ignore[list-item]
        assert conn.subprotocol == "binary"
        greeting = conn.recv(timeout=20)
        assert isinstance(greeting, bytes) and greeting.startswith(b"RFB 003.00")
        conn.send(greeting)  # our version back: the server lists its security types
        assert isinstance(conn.recv(timeout=20), bytes)


def test_a_ticket_for_another_vm_a_used_one_and_an_expired_one_are_refused(
        server: Served, make_vm: MakeVM) -> None:
    name = running(server, make_vm)
    other = make_vm("-b")
    issued = ticket(server, other, "vnc")
    code, reason = refusal(server, f"/ws/vnc/local/{name}?ticket={issued['ticket']}")
    assert code == 1008
    # (cut to fit a close frame: these test names are long)
    assert reason.startswith(f"this console ticket is for the vnc console of local/{other}, "
                             "not the "), reason

    issued = ticket(server, name, "vnc")
    with ws(server, issued["url"]) as conn:
        assert conn.recv(timeout=20)[:4] == b"RFB "
    code, reason = refusal(server, issued["url"])
    assert (code, "used already" in reason) == (1008, True), reason

    server.app.state.tickets = Tickets(ttl_s=0.2)
    issued = ticket(server, name, "serial")
    assert issued["expires_in"] == 0.2
    time.sleep(0.3)
    code, reason = refusal(server, issued["url"])
    assert (code, "expired" in reason) == (1008, True), reason


def test_the_serial_socket_exchanges_a_line_with_the_guest_shell(
        server: Served, make_vm: MakeVM) -> None:
    name = running(server, make_vm)
    issued = ticket(server, name, "serial")
    seen = b""
    with ws(server, issued["url"]) as conn:
        deadline = time.monotonic() + BOOT_S
        next_send = 0.0
        while b"api-42-serial" not in seen:
            assert time.monotonic() < deadline, f"no answer from the guest: {seen[-1500:]!r}"
            if time.monotonic() >= next_send:  # text frames, as the browser sends
                conn.send("echo api-$((6*7))-serial\r")
                next_send = time.monotonic() + 3
            try:
                data = conn.recv(timeout=1)
            except TimeoutError:
                continue
            assert isinstance(data, bytes)
            seen += data
        with server.client() as client:
            client.post(f"/api/vms/local/{name}/actions/destroy")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                conn.recv(timeout=30)
    rcvd = closed.value.rcvd
    assert rcvd is not None and rcvd.code == 1000
    assert rcvd.reason.startswith(f"{name} is shut off"), rcvd.reason


def test_the_viewer_file_points_at_the_vms_vnc_port(server: Served, make_vm: MakeVM) -> None:
    name = running(server, make_vm)
    with server.client(token=server.read_only_token) as client:
        response = client.get(f"/api/vms/local/{name}/viewer.vv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-virt-viewer"
    assert response.headers["content-disposition"].startswith("attachment;")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(response.text)
    display = subprocess.run(["virsh", "-c", URI, "vncdisplay", name], capture_output=True,
                             text=True, check=True, timeout=30).stdout.strip()
    assert parser["virt-viewer"]["type"] == "vnc"
    assert parser["virt-viewer"]["host"] == "127.0.0.1"
    assert int(parser["virt-viewer"]["port"]) == 5900 + int(display.rsplit(":", 1)[1])
