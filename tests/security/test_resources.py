"""What a client without a token, or with a reader token, can take from the server (issue
16, section 4), each against a real served app over libvirt's test driver: bodies read
and parsed before the token is checked, bodies of any size, half-sent headers, event
streams without a cap, the thread pool held by ``?wait`` and slow agent pings, a store
that others can read, and the demo's token left alive.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import QuietConsole, Served, served
from libvirt_faults import wait_until
from virtlife.store import open_store

KIB = 1024
MIB = 1024 * KIB
SNAPSHOTS = "/api/vms/local/test/snapshots"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "s.db", {"local": "test:///default"}, follow_events=False) as s:
        yield s


def anyone(api: Served) -> httpx.Client:
    return httpx.Client(base_url=api.url, timeout=30)


def chunks(total: int, size: int = 64 * KIB) -> Iterator[bytes]:
    """A body of ``total`` bytes sent without a Content-Length (chunked)."""
    sent = 0
    while sent < total:
        yield b" " * min(size, total - sent)
        sent += size


# -- bodies -------------------------------------------------------------------------------

def test_a_bad_body_without_a_token_is_401_not_422(api: Served) -> None:
    with anyone(api) as c:
        r = c.post(SNAPSHOTS, content=b"{not json",
                   headers={"content-type": "application/json"})
    assert r.status_code == 401, r.text


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_3_mib_body_without_a_token_is_refused_unread(api: Served, declared: bool) -> None:
    body = b'{"name": "x", "description": "' + b"a" * (3 * MIB) + b'"}'
    with anyone(api) as c:
        r = c.post(SNAPSHOTS, content=body if declared else chunks(3 * MIB),
                   headers={"content-type": "application/json"})
    assert r.status_code == (413 if declared else 401), r.text


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_past_64_kib_is_413(api: Served, declared: bool) -> None:
    body = b'{"name": "big"' + b" " * (64 * KIB) + b"}"  # valid JSON, just long
    with api.client() as c:
        r = c.post(SNAPSHOTS, content=body if declared else iter([body]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert "65536 bytes" in r.json()["error"]["message"]
        assert c.get(SNAPSHOTS).json() == []


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_login_body_past_16_kib_is_413(api: Served, declared: bool) -> None:
    body = b"token=" + b"x" * (16 * KIB) + b"&next=/"
    with anyone(api) as c:
        r = c.post("/login", content=body if declared else iter([body]),
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413, r.text


def test_define_takes_1_mib_and_no_more(api: Served) -> None:
    xml = ("<domain type='test'><name>big</name><memory unit='MiB'>64</memory>"
           "<os><type>hvm</type></os></domain><!--{}-->")
    padding = MIB - len(xml.format(""))
    with api.client() as c:
        too_big = c.post("/api/hosts/local/define", content=xml.format("x" * (padding + 1)),
                         headers={"content-type": "application/xml"})
        assert too_big.status_code == 413, too_big.text
        fits = c.post("/api/hosts/local/define", content=xml.format("x" * padding),
                      headers={"content-type": "application/xml"})
        assert fits.status_code == 200, fits.text


# -- connections --------------------------------------------------------------------------

@pytest.fixture
def quick_headers(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "s.db", {"local": "test:///default"}, follow_events=False,
                header_timeout_s=0.5) as s:
        yield s


def _closed_by_server(sock: socket.socket, within_s: float = 10.0) -> bytes:
    """What the server sent until it closed the connection; socket.timeout if it keeps
    it open past ``within_s``."""
    sock.settimeout(within_s)
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    return got


def _open_console(api: Served, monkeypatch: pytest.MonkeyPatch
                  ) -> tuple[QuietConsole, threading.Semaphore, str]:
    """A quiet serial console of ``test`` (each of its reads counted) and its URL."""
    console = QuietConsole()
    reads = threading.Semaphore(0)
    read = console.read

    def counted(timeout_s: float | None = None, max_bytes: int = 4096) -> bytes | None:
        reads.release()
        return read(timeout_s, max_bytes)

    monkeypatch.setattr(console, "read", counted)
    monkeypatch.setattr(api.app.state.services.consoles, "serial",
                        lambda ref, force=False: console)
    with api.client() as c:
        url = c.post("/api/vms/local/test/console-tickets", json={"kind": "serial"}
                     ).json()["url"]
    return console, reads, api.url.replace("http://", "ws://") + url


def test_half_sent_headers_are_cut_off_and_a_console_is_not(
        quick_headers: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from websockets.sync.client import connect

    console, reads, url = _open_console(quick_headers, monkeypatch)
    port = int(quick_headers.url.rsplit(":", 1)[1])
    with connect(url, open_timeout=30) as ws, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line
        assert _closed_by_server(sock) == b""
        for _ in range(3):  # three more polls of 0.5 s: well past the header deadline
            assert reads.acquire(timeout=10)
        ws.send(b"still here\r")  # the console's connection was not cut
        assert wait_until(lambda: console.typed == [b"still here\r"], 10)


def test_half_sent_headers_after_an_answer_are_cut_off(quick_headers: Served) -> None:
    port = int(quick_headers.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while b'"status":"ok"' not in first:
            first += sock.recv(65536)
        # a byte of the next request stops uvicorn's keep-alive timer
        sock.sendall(b"G")
        assert _closed_by_server(sock) == b""


def _stream(stack: ExitStack, api: Served, token: str) -> httpx.Response:
    """An event stream, open until ``stack`` closes (its first event read)."""
    client = stack.enter_context(httpx.Client(
        base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30))
    response = stack.enter_context(client.stream("GET", "/api/events"))
    if response.status_code == 200:
        lines = response.iter_lines()  # kept: a dropped iterator closes the connection
        stack.callback(lines.close)
        for line in lines:
            if line.startswith("event: hello"):
                break
    return response


def test_event_streams_are_capped_per_token_and_in_total(api: Served) -> None:
    streams = getattr(api.app.state, "streams", None)
    if streams is not None:
        streams.per_token, streams.total = 2, 3
    store = api.app.state.services.need_store()
    other, third = store.tokens.create("other"), store.tokens.create("third")
    with ExitStack() as first:
        assert [_stream(first, api, api.token).status_code for _ in range(2)] == [200, 200]
        with ExitStack() as more:
            past_token = _stream(more, api, api.token)
            assert past_token.status_code == 503
            past_token.read()
            assert "close one" in past_token.json()["error"]["message"]
        with ExitStack() as more:
            assert _stream(more, api, other).status_code == 200
            past_total = _stream(more, api, third)
            assert past_total.status_code == 503
            past_total.read()
            assert "the most it serves" in past_total.json()["error"]["message"]
    # the streams closed: their places are free again
    assert wait_until(lambda: streams is None or streams.open_streams == 0, 10)
    with ExitStack() as again:
        assert _stream(again, api, third).status_code == 200


# -- threads ------------------------------------------------------------------------------

class SlowAgent:
    """A guest agent whose ping answers only when released (or after 30 s)."""

    released = threading.Event()

    def __init__(self, guest: object) -> None:
        self.vm = "test"

    def ping(self, *, timeout_s: int = 5) -> None:
        SlowAgent.released.wait(30)


async def _hold_then_probe(api: Served, op_id: str, blockers: int) -> dict[str, int]:
    """``blockers`` slow agent pings and as many ``?wait=60`` on a running operation,
    all taken in by the server; then what a request of someone else answers."""
    bearer = {"Authorization": f"Bearer {api.read_only_token}"}
    limits = httpx.Limits(max_connections=4 * blockers, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=api.url, headers=bearer, limits=limits,
                                 timeout=60) as c:
        held = [asyncio.ensure_future(c.get("/api/vms/local/test/agent/ping"))
                for _ in range(blockers)]
        held += [asyncio.ensure_future(c.get(f"/api/operations/{op_id}",
                                             params={"wait": 60}))
                 for _ in range(blockers)]
        tasks = api.server.server_state.tasks
        try:
            for _ in range(1000):  # until each has reached the app (a task of its own)
                if len(tasks) >= 2 * blockers:
                    break
                await asyncio.sleep(0.01)
            assert len(tasks) >= 2 * blockers
            async with httpx.AsyncClient(base_url=api.url, timeout=15) as probe:
                others = (await probe.get("/api/hosts", headers=bearer)).status_code
                no_token = (await probe.get("/api/hosts")).status_code
        finally:
            SlowAgent.released.set()
            answers = await asyncio.gather(*held, return_exceptions=True)
    assert all(isinstance(a, httpx.Response) and a.status_code == 200 for a in answers)
    return {"others": others, "no token": no_token}


def test_slow_pings_and_waits_leave_threads_for_everyone_else(
        api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.services import agent as agent_module

    monkeypatch.setattr(agent_module, "Agent", SlowAgent)
    SlowAgent.released = threading.Event()
    jobs = api.app.state.services.jobs
    def held(op_id: str, progress: object) -> None:
        SlowAgent.released.wait(30)

    op_id = jobs.submit(held, "held for a test")
    try:
        got = asyncio.run(_hold_then_probe(api, op_id, blockers=45))
    finally:
        SlowAgent.released.set()
    assert got == {"others": 200, "no token": 401}


# -- the store, the demo ------------------------------------------------------------------

def test_the_store_is_made_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / "virtlife.db"
        with open_store(path) as store:
            store.hosts.add("local", "test:///default")  # the WAL file now exists too
            modes = {p.name: stat.S_IMODE(p.stat().st_mode)
                     for p in (path.parent, path, path.with_name(path.name + "-wal"))}
    finally:
        os.umask(old)
    assert modes == {"new": 0o700, "virtlife.db": 0o600, "virtlife.db-wal": 0o600}


def test_a_store_readable_by_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "virtlife.db"
    with open_store(path):
        pass
    path.chmod(0o644)
    with open_store(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("fails", [False, True], ids=["ends", "fails"])
def test_the_demo_leaves_no_live_token(isolated_home: Path, fails: bool,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    from virtlife.cli import demo

    with open_store(isolated_home / "virtlife.db") as store:
        store.hosts.add("local", "test:///default")
    if fails:
        real = urllib.request.urlopen

        def refused(ask: Any, *args: Any, **kwargs: Any) -> Any:
            if "/api/vms" in getattr(ask, "full_url", str(ask)):
                raise OSError("the demo's request failed")
            return real(ask, *args, **kwargs)

        monkeypatch.setattr(urllib.request, "urlopen", refused)
        with pytest.raises(OSError):
            demo._web_leg()
    else:
        demo._web_leg()
    printed = capsys.readouterr().out
    with open_store(isolated_home / "virtlife.db") as store:
        assert store.tokens.list() == []
        assert not [w for w in printed.split() if store.tokens.check(w) is not None]
    assert "vl_" not in printed
