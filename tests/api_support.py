"""A real ``virtlife serve`` for tests: the app under uvicorn on a free loopback port.

``served(store_path, {"local": uri})`` writes the inventory (``any_uri=True``: as
``host add --allow-any-uri`` would, for a URI the policy refuses) and three tokens, one
of each role (``token``: admin, ``operator_token``, ``read_only_token``: reader), into a
fresh store, runs the server in a thread of this process (so coverage sees it) and
always stops it. Tests talk to it over real HTTP with httpx.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


@dataclass
class Served:
    url: str
    token: str  # an admin's
    read_only_token: str  # a reader's
    app: Any
    token_name: str = ""  # the admin token's
    operator_token: str = ""
    operator_name: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    server: Any = None  # the uvicorn.Server

    def client(self, *, token: str | None = None, timeout_s: float = 30.0) -> httpx.Client:
        secret = self.token if token is None else token
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def wait_operation(self, client: httpx.Client, op_id: str,
                       timeout_s: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            body: dict[str, Any] = client.get(f"/api/operations/{op_id}",
                                              params={"wait": 10}).json()
            if body["status"] != "running" or time.monotonic() > deadline:
                return body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_SERIAL = itertools.count()


@contextmanager
def served(store_path: Path, hosts: dict[str, str], *, follow_events: bool = True,
           any_uri: bool = False, **limits: Any) -> Iterator[Served]:
    """``limits``: ``api.listener.config``'s (``header_timeout_s``, ...)."""
    import uvicorn

    from virtlife.api import listener
    from virtlife.api.app import create_app
    from virtlife.services.context import open_services
    from virtlife.store import open_store
    from virtlife.store.tokens import Role

    with open_store(store_path) as store:
        for name, uri in hosts.items():
            if any_uri:
                store.hosts.add(name, uri, any_uri=True)
            else:  # as before any_uri was (the security tests run against older code too)
                store.hosts.add(name, uri)
        # unique names: a store that lives longer than one test (the lab's) gets more
        serial = next(_SERIAL)
        token_name, operator_name = f"test-admin-{serial}", f"test-op-{serial}"
        token = store.tokens.create(token_name, role=Role.ADMIN)
        operator = store.tokens.create(operator_name, role=Role.OPERATOR)
        read_only = store.tokens.create(f"test-ro-{serial}", role=Role.READER)
    services = open_services(None, store_path=store_path)
    app = create_app(services, follow_events=follow_events)
    port = free_port()
    config = listener.config(app, "127.0.0.1", port, log_level="warning", graceful_s=3,
                             **limits)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        with _default_driver_restored(hosts.values()):
            yield Served(f"http://127.0.0.1:{port}", token, read_only, app, token_name,
                         operator, operator_name, server=server)
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def _default_driver_restored(uris: Any) -> Iterator[None]:
    """``test:///default`` is one driver per process, shared by every connection to it:
    what a test (served or not) defines or changes there stays so for the next test on
    this worker. It is put as libvirt starts it (its one VM, ``test``, running; no other)
    before the test and again after it."""
    if "test:///default" not in uris:
        yield
        return
    _pristine_default_driver()
    try:
        yield
    finally:
        _pristine_default_driver()


def _pristine_default_driver() -> None:
    import libvirt

    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            state = dom.state()[0]
            if dom.name() != "test":
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            elif state == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            elif not dom.isActive():
                if dom.hasManagedSaveImage(0):
                    dom.managedSaveRemove(0)
                dom.create()
    finally:
        conn.close()


def sse_messages(client: httpx.Client, *, until: Any, timeout_s: float = 30.0
                 ) -> list[dict[str, Any]]:
    """Read ``/api/events`` until ``until(message)`` is true; every message read."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", "/api/events", timeout=timeout_s) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: "):
                message = json.loads(line[6:])
                seen.append(message)
                if until(message):
                    return seen
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"no matching event within {timeout_s} s; saw {seen[-10:]}")


class QuietConsole:
    """A serial console session (``services.consoles.SerialSession``'s face) that never
    ends by itself: what it was typed, and whether it was closed."""

    host, vm = "local", "test"

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.typed: list[bytes] = []

    def read(self, timeout_s: float | None = None, max_bytes: int = 4096) -> bytes | None:
        return b"" if self.closed.wait(timeout_s) else None

    def write(self, data: bytes) -> None:
        self.typed.append(data)

    def end_reason(self) -> str:
        return "the console closed"

    def close(self) -> None:
        self.closed.set()
