"""The browser consoles' routes: one-time tickets, the ``.vv`` file, and the WebSocket
bridges to a VM's VNC server and serial console.

A console page first asks ``POST .../console-tickets`` (an operator: a console types
into the guest) for a ticket, then opens ``/ws/vnc/...`` or ``/ws/serial/...`` with
it. The WebSocket carries no other credential: the ticket is for one VM and one kind
of console, works once and dies after a minute (``auth.Tickets``). A refused ticket
closes the socket with 1008 and the reason; a service error (VM not running, console
busy) with 4000 + the HTTP status the REST API would answer (4409: busy, conflict),
and its message. A console lives no longer than the token that asked for its ticket:
once that token is revoked it closes with 1008 (``api.streams``). Everything that can
block (libvirt calls, socket and stream I/O) runs off the event loop. This module only
bridges bytes: it never decides anything about a VM, that is ``services.consoles``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from virtlife import errors
from virtlife.api.auth import Tickets, presented_token
from virtlife.api.problems import status_of
from virtlife.api.routes import HostName, Operator, Reader, VMName, ref_of, services_of
from virtlife.api.streams import Lease, Streams
from virtlife.services.consoles import SerialSession
from virtlife.services.context import Services
from virtlife.store.tokens import Role

log = logging.getLogger(__name__)

router = APIRouter()

CHUNK = 64 * 1024
SERIAL_POLL_S = 0.5  # how often a serial reader thread looks up from a quiet console
REASON_MAX = 120  # a WebSocket close reason is at most 123 bytes
TICKET_REFUSED = 1008  # policy violation
SESSION_ENDED = 1000
REVOKED_REASON = "the token that opened this console was revoked; log in again"


class TicketRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["vnc", "serial"]


class TicketIssued(BaseModel):
    ticket: str
    expires_in: float
    url: str


def tickets_of(app_state: object) -> Tickets:
    tickets: Tickets = app_state.tickets  # type: ignore[attr-defined]
    return tickets


def ws_path(kind: str, host: str, name: str) -> str:
    return f"/ws/{kind}/{quote(host, safe='')}/{quote(name, safe='')}"


@router.post("/api/vms/{host}/{name}/console-tickets", tags=["consoles"],
             response_model=TicketIssued)
def console_ticket(request: Request, host: HostName, name: VMName, body: TicketRequest,
                   _t: Operator) -> TicketIssued:
    """A one-time ticket for the VM's VNC or serial console WebSocket (``url``), valid
    for ``expires_in`` seconds. 404 for an unknown VM; the VM need not run yet."""
    services_of(request).fleet.resolve(ref_of(host, name))  # 404 now, not at the socket
    tickets = tickets_of(request.app.state)
    ticket = tickets.issue(host, name, body.kind, presented_token(request) or "")
    url = f"{ws_path(body.kind, host, name)}?ticket={ticket}"
    return TicketIssued(ticket=ticket, expires_in=tickets.ttl_s, url=url)


@router.get("/api/vms/{host}/{name}/viewer.vv", tags=["consoles"],
            response_class=Response,
            responses={200: {"content": {"application/x-virt-viewer": {}}}})
def viewer_vv(request: Request, host: HostName, name: VMName, token: Reader) -> Response:
    """A remote-viewer connection file for the running VM. For an operator or admin it
    holds the VNC password, if one is set; a reader's has none (a reader sees no
    secret: remote-viewer asks for the password)."""
    text = services_of(request).consoles.viewer_file(
        ref_of(host, name), with_password=token.role.allows(Role.OPERATOR))
    filename = quote(f"{name}.vv", safe="")
    return Response(text, media_type="application/x-virt-viewer",
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{filename}",
                             "Cache-Control": "no-store"})


# -- WebSockets ---------------------------------------------------------------------------

def _reason(text: str) -> str:
    data = text.encode()
    if len(data) <= REASON_MAX:
        return text
    return data[:REASON_MAX - 3].decode(errors="ignore") + "..."


async def _accept(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="binary" if "binary" in offered else None)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
        await websocket.close(code, _reason(reason))


@dataclass
class Opened:
    """A console socket whose ticket was good: the services, and the watch on the token
    that asked for the ticket (``revoked`` is set when that token is revoked)."""

    services: Services
    revoked: asyncio.Event
    streams: Streams
    lease: Lease | None

    def close(self) -> None:
        if self.lease is not None:
            self.streams.close(self.lease)


async def _opened(websocket: WebSocket, host: str, name: str, kind: str,
                  ticket: str) -> Opened | None:
    """Accept the socket and redeem its ticket; None (socket closed) when refused."""
    await _accept(websocket)
    try:
        issued = tickets_of(websocket.app.state).redeem(ticket, host, name, kind)
    except errors.InvalidInput as err:
        await _close(websocket, TICKET_REFUSED, str(err))
        return None
    services: Services = websocket.app.state.services
    streams: Streams = websocket.app.state.streams
    revoked = asyncio.Event()
    lease = streams.open(issued.token, revoked.set, counted=False) if issued.token else None
    return Opened(services, revoked, streams, lease)


async def _until_revoked(revoked: asyncio.Event) -> str:
    await revoked.wait()
    return REVOKED_REASON


async def _service_failed(websocket: WebSocket, err: errors.VirtlifeError) -> None:
    await _close(websocket, 4000 + status_of(err), str(err))


@router.websocket("/ws/vnc/{host}/{name}")
async def vnc_socket(websocket: WebSocket, host: str, name: str, ticket: str = "") -> None:
    """RFB between the browser (noVNC, binary frames) and the VM's VNC server."""
    opened = await _opened(websocket, host, name, "vnc", ticket)
    if opened is None:
        return
    try:
        try:
            sock = await run_in_threadpool(opened.services.consoles.vnc_socket,
                                           ref_of(host, name))
        except errors.VirtlifeError as err:
            await _service_failed(websocket, err)
            return
        await _pump_vnc(websocket, sock, f"{host}/{name}", opened.revoked)
    finally:
        opened.close()


async def _pump_vnc(websocket: WebSocket, sock: socket.socket, ref: str,
                    revoked: asyncio.Event) -> None:
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    ended = "the VNC server closed the connection"

    async def to_browser() -> None:
        while data := await reader.read(CHUNK):
            await websocket.send_bytes(data)

    async def to_server() -> None:
        nonlocal ended
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                ended = "the browser left"
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.ensure_future(to_browser()), asyncio.ensure_future(to_server()),
             asyncio.ensure_future(revoked.wait())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if (err := task.exception()) is not None and not isinstance(
                    err, (WebSocketDisconnect, ConnectionError, OSError)):
                log.warning("VNC proxy of %s: %r", ref, err)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
    if revoked.is_set():
        await _close(websocket, TICKET_REFUSED, REVOKED_REASON)
    else:
        await _close(websocket, SESSION_ENDED, ended)


@router.websocket("/ws/serial/{host}/{name}")
async def serial_socket(websocket: WebSocket, host: str, name: str, ticket: str = "",
                        force: bool = False) -> None:
    """The VM's serial console: browser frames (text or binary) are keystrokes, the
    console's output goes out as binary frames. ``force`` takes the console over from
    another client. Closed with the session's end reason when the console ends."""
    opened = await _opened(websocket, host, name, "serial", ticket)
    if opened is None:
        return
    ref, services = ref_of(host, name), opened.services
    try:
        try:
            session = await run_in_threadpool(lambda: services.consoles.serial(ref,
                                                                               force=force))
        except errors.VirtlifeError as err:
            await _service_failed(websocket, err)
            return
        try:
            reason = await _pump_serial(websocket, session, opened.revoked)
        finally:
            await run_in_threadpool(session.close)
    finally:
        opened.close()
    await _close(websocket, TICKET_REFUSED if opened.revoked.is_set() else SESSION_ENDED,
                 reason)


async def _pump_serial(websocket: WebSocket, session: SerialSession,
                       revoked: asyncio.Event) -> str:
    """Bridge until either side ends; the reason, for the browser."""
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue()
    stop = threading.Event()

    def read_console() -> None:  # its own thread: a quiet console must not hold the pool
        while not stop.is_set():
            data = session.read(SERIAL_POLL_S)
            if data is None:
                continue
            loop.call_soon_threadsafe(output.put_nowait, data)
            if not data:
                return

    reader = threading.Thread(target=read_console, name=f"serial-{session.vm}", daemon=True)
    reader.start()

    async def to_browser() -> str:
        while data := await output.get():
            await websocket.send_bytes(data)
        return await run_in_threadpool(session.end_reason)

    async def to_console() -> str:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return "the browser left"
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data:
                await run_in_threadpool(session.write, data)

    tasks = [asyncio.ensure_future(to_browser()), asyncio.ensure_future(to_console()),
             asyncio.ensure_future(_until_revoked(revoked))]
    reason = "the console ended"
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            err = task.exception()
            if err is None:
                reason = task.result()
            elif isinstance(err, errors.VirtlifeError):
                reason = str(err)
            elif not isinstance(err, (WebSocketDisconnect, ConnectionError, OSError)):
                log.warning("serial bridge of %s/%s: %r", session.host, session.vm, err)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    session.close()
    await asyncio.get_running_loop().run_in_executor(None, reader.join, 2.0)
    return reason
