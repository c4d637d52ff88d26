"""What the benchmarks of a running ``virtlife serve`` share: the server over an
inventory (HTTP on a free loopback port, a reader token, the CLI's local socket), its
process's threads and memory, and a follower of its event stream.

``Served.start`` waits until the server answers ``/api/health``; ``wait_cached``
until the local socket lists the whole fleet from the cache (``source`` ``cache``), so
that what is timed afterwards is the served path and not the first connections.
Nothing here measures or asserts.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtlife.store import open_store
from virtlife.store.tokens import Role

VIRTLIFE = str(Path(sys.executable).with_name("virtlife"))
Message = dict[str, Any]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """Threads and memory (VmRSS, VmHWM in KiB) of process ``pid`` from /proc."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """The most threads a process had, sampled every ``every_s`` until ``stop``."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.pid = pid
        self.every_s = every_s
        self.max_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.max_threads = max(self.max_threads, proc_status(self.pid)["Threads"])
            except (OSError, KeyError):
                return
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class EventFollower:
    """Every message of ``/api/events`` with the moment it arrived (perf_counter)."""

    base: str
    token: str
    messages: queue.Queue[tuple[float, Message]] = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    hello: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import httpx

        try:
            with httpx.Client(base_url=self.base, timeout=None,
                              headers={"Authorization": f"Bearer {self.token}"}) as client, \
                    client.stream("GET", "/api/events") as response:
                for line in response.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith("data: "):
                        message = json.loads(line[6:])
                        if message.get("type") == "hello":
                            self.hello.set()
                        elif message.get("type") in ("lagged", "revoked", "refused"):
                            self.error = f"{message['type']}: {message.get('message')}"
                        self.messages.put((time.perf_counter(), message))
        except httpx.HTTPError as err:
            self.error = str(err)
        finally:
            self.ended.set()

    def wait_for(self, match: Callable[[Message], bool], timeout_s: float
                 ) -> tuple[float, Message] | None:
        """The first message from now that ``match``es, with its arrival time."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, message = self.messages.get(timeout=left)
            except queue.Empty:
                return None
            if match(message):
                return at, message
        return None

    def drain(self) -> None:
        while True:
            try:
                self.messages.get_nowait()
            except queue.Empty:
                return


class Served:
    """``virtlife serve`` over the inventory of ``home``, with a reader token."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        store = open_store(home / "virtlife.db")
        try:
            self.token = store.tokens.create(f"bench-{os.getpid()}-{self.port}",
                                             role=Role.READER)
        finally:
            store.close()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def socket(self) -> Path:
        from virtlife.api.local import SOCKET_NAME

        return self.home / SOCKET_NAME

    def start(self, timeout_s: float = 60.0) -> None:
        import httpx

        self.proc = subprocess.Popen(
            [VIRTLIFE, "serve", "--listen", f"127.0.0.1:{self.port}"],
            env={**os.environ, "VIRTLIFE_HOME": str(self.home)}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"virtlife serve ended (exit {self.proc.returncode})")
            try:
                if httpx.get(f"{self.base}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"virtlife serve did not answer within {timeout_s:.0f} s")

    def wait_cached(self, hosts: int, timeout_s: float) -> float:
        """Seconds until the local socket lists all ``hosts`` from the cache."""
        from virtlife.cli import served

        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            answer = served.ask({"op": "list", "all": True}, path=str(self.socket),
                                reply_s=timeout_s)
            if (answer is not None and answer.get("source") == "cache"
                    and len(answer.get("answered", ())) == hosts):
                return time.monotonic() - t0
            time.sleep(2.0)
        raise RuntimeError(f"the server did not list {hosts} hosts from its cache "
                           f"within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
