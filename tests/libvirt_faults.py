"""Faults of real connections for tests: a host that never answers, and a record of
every libvirt connection virtlife opens (how many, whether and how each was closed,
and its close callback, to play libvirt closing it under us)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import libvirt
import pytest


@contextmanager
def silent_host(hang_up_after_s: float = 20.0) -> Iterator[str]:
    """A libvirt URI whose TCP port accepts connections and never answers.

    ``libvirt.open`` on it blocks until the socket closes: every accepted socket is
    closed after ``hang_up_after_s`` (so that code without a deadline ends, late,
    instead of hanging the test run) and when the block ends.
    """
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.05)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    done = threading.Event()
    started = time.monotonic()

    def serve() -> None:
        while not done.is_set():
            try:
                client, _ = server.accept()
                accepted.append(client)
            except TimeoutError:
                pass
            if time.monotonic() - started > hang_up_after_s:
                while accepted:
                    accepted.pop().close()

    thread = threading.Thread(target=serve, daemon=True, name="silent-host")
    thread.start()
    try:
        yield f"qemu+tcp://127.0.0.1:{port}/system"
    finally:
        done.set()
        thread.join(5)
        for client in accepted:
            client.close()
        server.close()


@dataclass
class Opened:
    """One connection virtlife opened."""

    uri: str
    conn: Any
    closes: list[int] = field(default_factory=list)  # what each close() returned
    close_callback: tuple[Callable[..., Any], Any] | None = None

    @property
    def closed(self) -> bool:
        return bool(self.closes)

    def peer_closes(self, reason: int = libvirt.VIR_CONNECT_CLOSE_REASON_EOF) -> None:
        """Call the close callback as libvirt's event thread does when the peer hangs up."""
        assert self.close_callback is not None, "no close callback was registered"
        cb, opaque = self.close_callback
        thread = threading.Thread(target=cb, args=(self.conn, reason, opaque))
        thread.start()
        thread.join(5)

    def wait_closed(self, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.closes and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.closed


class Opens:
    """Wraps ``libvirt.open``: real connections, each recorded; optionally slow."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[Opened] = []
        self.calls = 0
        self.delay_s = 0.0
        self.gate: threading.Event | None = None  # when set up, opens wait for it
        self._lock = threading.Lock()
        self._real_open = libvirt.open
        monkeypatch.setattr(libvirt, "open", self._open)

    def _open(self, uri: str) -> Any:
        with self._lock:
            self.calls += 1
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.delay_s)
        conn = self._real_open(uri)
        record = Opened(uri, conn)
        real_close = conn.close
        real_register = conn.registerCloseCallback

        def close() -> int:
            left = int(real_close())
            record.closes.append(left)
            return left

        def register(cb: Callable[..., Any], opaque: Any) -> int:
            record.close_callback = (cb, opaque)
            return int(real_register(cb, opaque))

        conn.close = close
        conn.registerCloseCallback = register
        with self._lock:
            self.opened.append(record)
        return conn

    def open_now(self) -> list[Opened]:
        """The recorded connections not closed yet."""
        return [o for o in self.opened if not o.closed]


def wait_until(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()
