"""The served path: while ``virtlife serve`` runs, ``list`` and ``state`` are answered
over its local socket from the event-fed cache, never older than the last event, and
the CLI falls back to reading the hosts itself when no server answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api_support import Served, free_port, served
from support import NODE_URI, UNREACHABLE_URI, VIRTLIFE
from virtlife.cli import served as client
from virtlife.cli.main import main
from virtlife.store import open_store


def wait_for(check: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


@pytest.fixture
def api(isolated_home: Path) -> Iterator[Served]:
    """A served app whose store (and so its socket) is the CLI's VIRTLIFE_HOME."""
    with served(isolated_home / "virtlife.db", {"t": NODE_URI}) as s:
        assert wait_for(lambda: s.app.state.feed.cache.fresh()), "host t never listed"
        yield s


def ask_state(vm: str) -> dict[str, Any] | None:
    return client.ask({"op": "state", "vm": vm})


def test_the_socket_is_private_to_the_servers_user(api: Served, isolated_home: Path) -> None:
    info = (isolated_home / client.SOCKET_NAME).stat()
    assert oct(info.st_mode & 0o777) == "0o600"
    assert info.st_uid == os.geteuid()


def test_state_comes_from_the_cache_and_follows_an_event(
        api: Served, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the CLI must not open the services: the server answers
    monkeypatch.setattr("virtlife.cli.quick.answer_direct", _no_direct)
    assert ask_state("vm-running") == {"v": 1, "ok": True, "host": "t", "state": "running",
                                       "label": "running", "reason": "unknown",
                                       "source": "cache"}
    # the server's own connection is the only one that sees this test node's change
    guest = api.app.state.services.fleet.host("t").lookup("vm-running")
    guest.suspend()
    answer = wait_for(lambda: (a := ask_state("vm-running")) and a["source"] == "cache"
                      and a["state"] == "paused" and a)
    assert answer and answer["reason"] == "user"
    before = api.app.state.local.served
    assert main(["state", "vm-running"]) == 0
    assert capsys.readouterr().out == "paused (user)\n"
    assert main(["state", "t/vm-running", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "host": "t", "vm": "t/vm-running", "state": "paused", "label": "paused",
        "reason": "user"}
    assert api.app.state.local.served == before + 2
    guest.resume()


def _no_direct(_request: object) -> dict[str, Any]:
    raise AssertionError("the CLI read the hosts itself while a server ran")


def test_the_listing_is_the_servers_and_matches_the_direct_one(
        api: Served, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.cli import quick

    direct = quick.answer_direct(quick.Request("list", show_all=True))
    answer = client.ask({"op": "list", "all": True, "host": None})
    assert answer is not None and answer["source"] in ("cache", "mixed")
    assert answer["vms"] == direct["vms"]  # the same node file, so the same VMs
    assert answer["answered"] == ["t"] and answer["unreachable"] == []
    monkeypatch.setattr("virtlife.cli.quick.answer_direct", _no_direct)
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["HOST", "NAME", "STATE", "REASON", "VCPUS", "MEMORY"]
    assert {line.split()[1] for line in lines[1:]} == {
        r["name"] for r in direct["vms"] if r["state"] not in ("shutoff", "saved")}


def test_the_compact_listing_holds_the_same_vms_and_prints_the_same(
        api: Served, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.cli import quick

    full = client.ask({"op": "list", "all": True, "host": None})
    compact = client.ask({"op": "list", "all": True, "host": None, "form": "rows"})
    assert full is not None and compact is not None and "vms" not in compact
    assert [dict(zip(compact["columns"], r, strict=True)) for r in compact["rows"]] \
        == full["vms"]
    request = quick.Request("list", show_all=True)
    printed = []
    for answer in (full, compact):  # an older server's form, and the compact one
        quick.show(request, answer)
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and len(printed[0].splitlines()) == len(full["vms"]) + 1
    monkeypatch.setattr("virtlife.cli.quick.answer_direct", _no_direct)
    assert main(["list", "--all", "--json"]) == 0  # the CLI asks for the compact form
    assert json.loads(capsys.readouterr().out)["vms"] == full["vms"]


def test_an_image_the_api_removes_is_gone_from_the_next_listing(api: Served) -> None:
    cache = api.app.state.feed.cache
    assert cache.listing().listing.rows  # the host's managed-save list is recent now
    with api.client() as http:
        started = http.post("/api/vms/t/vm-saved/actions/managedsave-remove")
        assert started.status_code == 202, started.text
        assert api.wait_operation(http, started.json()["op_id"])["status"] == "ok"
    states = {r.name: r.state.state.value for r in cache.listing().listing.rows}
    assert states["vm-saved"] != "saved"  # not after the bound: this server removed it


def test_an_event_not_yet_read_is_answered_live(api: Served) -> None:
    cache = api.app.state.feed.cache
    assert cache.state("vm-paused") is not None
    paused = "22222222-2222-2222-2222-222222222222"  # vm-paused's UUID (the cache's key)
    cache.vm_event("t", paused)  # as the event thread does, before the re-read
    assert cache.state("vm-paused") is None
    answer = ask_state("vm-paused")
    assert answer is not None and answer["source"] == "live" and answer["state"] == "paused"
    cache.refresh("t", paused)
    assert cache.state("vm-paused") is not None


def test_a_host_whose_stream_is_lost_is_answered_live(api: Served) -> None:
    cache = api.app.state.feed.cache
    cache.host_event("t", "disconnected")  # what the feed hears when libvirtd goes
    answer = ask_state("vm-paused")
    assert answer is not None and answer["source"] == "live" and answer["label"] == "paused"
    listing = client.ask({"op": "list", "all": True, "host": None})
    assert listing is not None and listing["source"] == "live"
    assert "vm-paused" in {r["name"] for r in listing["vms"]}
    cache.host_event("t", "connected")
    cache.fill("t")
    assert client.ask({"op": "list", "all": True, "host": None})["source"] == "cache"


def test_an_unreachable_host_is_listed_unreachable_and_never_from_the_cache(
        isolated_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with served(isolated_home / "virtlife.db", {"t": NODE_URI, "down": UNREACHABLE_URI}) as s:
        assert wait_for(lambda: s.app.state.feed.cache.fresh("t"))
        assert not s.app.state.feed.cache.fresh("down")
        listing = client.ask({"op": "list", "all": True, "host": None})
        assert listing is not None and listing["source"] == "mixed"
        assert [p["host"] for p in listing["unreachable"]] == ["down"]
        assert listing["answered"] == ["t"]
        state = ask_state("vm-running")  # "down" might hold one too: asked live
        assert state is not None and state["source"] == "live" and state["host"] == "t"
        assert main(["list", "--host", "down"]) == 4
        captured = capsys.readouterr()
        assert "unreachable" in captured.out
        assert captured.err.startswith("virtlife: no host answered (down)")


def test_errors_are_the_clis_own(api: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["state", "nope"]) == 2
    assert capsys.readouterr().err == "virtlife: no VM named nope on host t\n"
    assert main(["list", "--host", "nohost"]) == 2
    assert "nohost" in capsys.readouterr().err


def test_a_stale_socket_is_refused_and_the_cli_reads_for_itself(
        isolated_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from virtlife.store import open_store

    with open_store(isolated_home / "virtlife.db") as store:
        store.hosts.add("t", NODE_URI)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(isolated_home / client.SOCKET_NAME))
    stale.close()  # the file stays, nobody listens: connection refused
    began = time.monotonic()
    assert client.ask({"op": "state", "vm": "vm-running"}) is None
    assert time.monotonic() - began < client.CONNECT_S
    run = subprocess.run([sys.executable, "-m", "virtlife.cli.main", "state", "vm-paused"],
                         capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (0, "paused (unknown)\n", "")


def test_a_silent_server_is_given_up_after_the_deadline(isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(isolated_home / client.SOCKET_NAME))
    mute.listen(1)  # accepts (the kernel's backlog) but never answers
    try:
        began = time.monotonic()
        assert client.ask({"op": "state", "vm": "x"}, reply_s=0.3) is None
        assert 0.25 < time.monotonic() - began < 2.0
    finally:
        mute.close()


def test_another_users_socket_is_never_asked(isolated_home: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(isolated_home / client.SOCKET_NAME))
    listener.listen(1)
    try:
        monkeypatch.setattr(os, "geteuid", lambda: 12345)
        assert client.ask({"op": "state", "vm": "x"}, path=str(
            isolated_home / client.SOCKET_NAME)) is None
    finally:
        listener.close()


def test_with_connect_the_cli_never_asks_the_server(
        api: Served, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    asked: list[object] = []
    monkeypatch.setattr(client, "ask", lambda *a, **k: asked.append(a))
    assert main(["-c", NODE_URI, "state", "vm-off"]) == 0
    assert capsys.readouterr().out == "shut off (unknown)\n"
    assert asked == []


def test_a_second_server_leaves_the_first_ones_socket(api: Served,
                                                     isolated_home: Path) -> None:
    from virtlife.api.local import LocalServer

    path = isolated_home / client.SOCKET_NAME
    inode = path.stat().st_ino
    second = LocalServer(api.app.state.services, api.app.state.feed.cache, path)
    assert second.start() is False
    second.close()
    assert path.stat().st_ino == inode
    assert ask_state("vm-off") is not None


def test_the_server_removes_its_socket_when_it_stops(isolated_home: Path) -> None:
    with served(isolated_home / "virtlife.db", {"t": NODE_URI}):
        assert (isolated_home / client.SOCKET_NAME).exists()
    assert not (isolated_home / client.SOCKET_NAME).exists()


@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "virtlife: terminated"),
                                              (signal.SIGINT, 130, "virtlife: interrupted")])
def test_a_signalled_virtlife_serve_removes_its_socket_and_ends(
        isolated_home: Path, sig: signal.Signals, code: int, said: str) -> None:
    """``kill`` (a service manager's stop) or Ctrl-C: the socket goes at once (later
    commands must not ask a server that is gone), the process ends with its code."""
    store = open_store(isolated_home / "virtlife.db")
    try:
        store.hosts.add("t", NODE_URI)
    finally:
        store.close()
    sock = isolated_home / client.SOCKET_NAME
    server = subprocess.Popen(
        [*VIRTLIFE, "serve", "--listen", f"127.0.0.1:{free_port()}"],
        env={**os.environ, "VIRTLIFE_HOME": str(isolated_home)}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(sock.exists, 30), "virtlife serve never opened its socket"
        server.send_signal(sig)
        _out, err = server.communicate(timeout=15)
        assert server.returncode == code, err
        assert said in err.splitlines()
        assert not sock.exists()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_concurrent_clients_each_get_their_answer(api: Served) -> None:
    answers: list[dict[str, Any] | None] = []

    def one() -> None:
        answers.append(ask_state("vm-crashed"))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(answers) == 8 and all(a and a["state"] == "crashed" for a in answers)


def test_the_apis_listings_come_from_the_cache_while_the_stream_is_fresh(
        api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """/api/vms, /api/hosts and /metrics answer from the event-fed cache (a scrape of a
    big fleet reads no host), and read live once the host's stream is lost."""
    fleet = api.app.state.services.fleet
    live_reads: list[str] = []  # the host reads other than the managed-save check
    each_host = fleet.each_host
    # the managed-save check is one cheap round trip; read_load is the server's
    # background load sampler (services.load.LoadSampler), never a request's
    not_counted = {"managed_saved", "read_load"}

    def counted(fn: Any, *a: Any, **k: Any) -> Any:
        if getattr(fn, "__name__", "") not in not_counted:
            live_reads.append(getattr(fn, "__name__", repr(fn)))
        return each_host(fn, *a, **k)

    monkeypatch.setattr(fleet, "each_host", counted)
    with api.client() as http:
        vms = http.get("/api/vms").json()
        assert {(v["name"], v["state"]) for v in vms["vms"]} >= {
            ("vm-running", "running"), ("vm-paused", "paused")}
        hosts = http.get("/api/hosts").json()
        assert [(h["name"], h["reachable"], h["vms"]) for h in hosts] == [
            ("t", True, len(vms["vms"]))]
        assert 'virtlife_vms{host="t",state="running"}' in http.get("/metrics").text
        assert live_reads == []
        guest = fleet.host("t").lookup("vm-running")
        guest.suspend()  # seen by the cache through the server's own event stream
        try:
            assert wait_for(lambda: ("vm-running", "paused") in {
                (v["name"], v["state"]) for v in http.get("/api/vms").json()["vms"]}
                and api.app.state.feed.cache.state("vm-running") is not None)
            live_reads.clear()  # a VM whose event is not read yet is read live: once read,
            assert ("vm-running", "paused") in {  # the cache answers again
                (v["name"], v["state"]) for v in http.get("/api/vms").json()["vms"]}
            assert live_reads == []
            api.app.state.feed.cache.host_event("t", "disconnected")
            assert ("vm-running", "paused") in {
                (v["name"], v["state"]) for v in http.get("/api/vms").json()["vms"]}
            assert live_reads, "a host without its stream was answered from the cache"
        finally:
            guest.resume()
