"""The REST API's guest-agent routes on a served app over libvirt's test driver.

The test driver has no guest agent: it sets a guest clock, a user's password and the
agent channel, and lists interfaces; the other reads and the freeze, exec and command
routes are checked against a scripted agent put in ``services.agent``'s place (the
server runs in this process). What every route refuses (401, 403, 404, 409, 422) is
checked against the test driver itself. A set-password body's password must appear in
no answer, log record, event, operation or byte of the store.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import Served, served
from support import NODE_URI
from virtlife.hypervisor.agent import AgentInfo, ExecStatus, Filesystem, Interface

VM = "/api/vms/local/vm-running"
AGENT = f"{VM}/agent"
READS = ["ping", "info", "osinfo", "hostname", "timezone", "users", "fsinfo", "ifaddr",
         "time", "freeze-status"]
CHANGES: list[tuple[str, dict[str, Any] | None]] = [
    ("freeze", None), ("thaw", None), ("time", {"sync": True}),
    ("set-password", {"user": "root", "password": "x"}), ("exec", {"argv": ["/bin/true"]}),
    ("command", {"command": '{"execute": "guest-ping"}'}), ("enable", None)]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "s.db", {"local": NODE_URI}, follow_events=False) as s:
        yield s


@pytest.fixture
def client(api: Served) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


class Guest:
    """What the scripted agent answers, and what it was asked."""

    def __init__(self) -> None:
        self.frozen = False
        self.calls: list[tuple[object, ...]] = []
        self.exec_may_end = threading.Event()
        self.exec_may_end.set()


@pytest.fixture
def guest(monkeypatch: pytest.MonkeyPatch) -> Guest:
    from virtlife.services import agent as agent_module
    from virtlife.services import freeze as freeze_module

    side = Guest()

    class ScriptedAgent:
        def __init__(self, guest: object) -> None:
            self.guest = guest
            self.vm = "vm-running"

        def ping(self, *, timeout_s: int = 5) -> None:
            side.calls.append(("ping", timeout_s))

        def info(self) -> AgentInfo:
            return AgentInfo("9.0", ())

        def guest_info(self, kind: str) -> dict[str, object]:
            return {"os": {"os.id": "debian"},
                    "timezone": {"timezone.name": "CET", "timezone.offset": "3600"},
                    "users": {"user.count": 1, "user.0.name": "root"}}[kind]

        def hostname(self) -> str:
            return "web1.example"

        def filesystems(self) -> list[Filesystem]:
            return [Filesystem("/", "vda1", "ext4", ("vda",))]

        def interfaces(self) -> list[Interface]:
            return [Interface("eth0", "52:54:00:00:00:01", ())]

        def time(self) -> float:
            return 1_000_000.0

        def freeze_status(self, **_bounds: float) -> str:
            return "frozen" if side.frozen else "thawed"

        def freeze(self, mountpoints: list[str] | None = None, **_bounds: float | None) -> int:
            side.calls.append(("freeze", mountpoints))
            side.frozen = True
            return 2

        def thaw(self, mountpoints: list[str] | None = None, **_bounds: float | None) -> int:
            side.frozen = False
            return 2

        def exec_start(self, path: str, args: list[str], *, stdin: bytes | None = None) -> int:
            side.calls.append(("exec", path, args, stdin))
            return 42

        def exec_status(self, pid: int) -> ExecStatus:
            if not side.exec_may_end.wait(0.01):
                return ExecStatus(False, None, None, b"", b"", False)
            return ExecStatus(True, 3, None, b"out\n", b"err\n", False)

        def command_text(self, text: str, *, timeout_s: int = 5, name: str = "") -> str:
            side.calls.append(("command", json.loads(text), timeout_s, name))
            return '{"return": {"count": 2}}'

    monkeypatch.setattr(agent_module, "Agent", ScriptedAgent)
    monkeypatch.setattr(freeze_module, "Agent", ScriptedAgent)
    return side


# -- reads ------------------------------------------------------------------------------

def test_reads_answer_what_the_cli_prints_as_json(client: httpx.Client, guest: Guest) -> None:
    got = {what: client.get(f"{AGENT}/{what}") for what in READS}
    assert {w: r.status_code for w, r in got.items()} == dict.fromkeys(READS, 200)
    assert got["ping"].json()["answered"] is True
    assert got["info"].json()["version"] == "9.0"
    assert got["osinfo"].json() == {"id": "debian"}
    assert got["hostname"].json() == {"vm": "vm-running", "hostname": "web1.example"}
    assert got["timezone"].json() == {"name": "CET", "offset_s": 3600}
    assert got["users"].json() == [{"name": "root", "domain": None, "login_time": None}]
    assert [f["mountpoint"] for f in got["fsinfo"].json()] == ["/"]
    assert [i["name"] for i in got["ifaddr"].json()] == ["eth0"]
    assert got["freeze-status"].json()["status"] == "thawed"
    client.get(f"{AGENT}/ping", params={"timeout_s": 2})
    assert guest.calls[-1] == ("ping", 2)


def test_the_clock_and_the_interfaces_come_from_the_test_driver(client: httpx.Client) -> None:
    clock = client.get(f"{AGENT}/time").json()
    assert set(clock) == {"vm", "guest", "here", "offset_s", "round_trip_s", "guest_iso"}
    assert clock["guest_iso"].endswith("+00:00")
    assert client.get(f"{AGENT}/ifaddr").json() == []  # vm-running has no interface


def test_a_driver_without_an_agent_is_a_4xx_that_says_so(client: httpx.Client) -> None:
    r = client.get(f"{AGENT}/ping")
    assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported"
    assert "virDomainQemuAgentCommand" in r.json()["error"]["message"]


@pytest.mark.parametrize(("vm", "status", "says"), [
    ("vm-off", 409, "cannot ping the agent of vm-off: it is shut off (unknown), not running; "
                    "start it first: the guest agent runs inside the guest"),
    ("vm-paused", 409, "resume it first: a paused guest's agent cannot answer"),
    ("nosuch", 404, "nosuch"),
])
def test_a_read_of_a_vm_whose_guest_does_not_run_is_refused(client: httpx.Client, vm: str,
                                                            status: int, says: str) -> None:
    r = client.get(f"/api/vms/local/{vm}/agent/ping")
    assert r.status_code == status and says in r.json()["error"]["message"]


def test_an_unknown_host_or_subcommand_is_404(client: httpx.Client) -> None:
    assert client.get("/api/vms/elsewhere/vm-running/agent/info").status_code == 404
    assert client.get(f"{AGENT}/nonsense").status_code == 404


def test_every_agent_route_needs_a_token(api: Served) -> None:
    with api.client(token="") as anonymous:
        for what in READS:
            assert anonymous.get(f"{AGENT}/{what}").status_code == 401
        for what, body in CHANGES:
            assert anonymous.post(f"{AGENT}/{what}", json=body).status_code == 401


def test_a_read_only_token_reads_but_changes_nothing(api: Served, guest: Guest) -> None:
    with api.client(token=api.read_only_token) as ro:
        assert ro.get(f"{AGENT}/hostname").status_code == 200
        for what, body in CHANGES:
            r = ro.post(f"{AGENT}/{what}", json=body)
            assert r.status_code == 403, what
            assert "needs an operator token" in r.json()["error"]["message"]
    assert not [c for c in guest.calls if c[0] != "ping"]


# -- changes ----------------------------------------------------------------------------

@pytest.mark.parametrize(("what", "body"), CHANGES)
def test_a_change_to_a_paused_vm_is_refused_at_once(client: httpx.Client, what: str,
                                                    body: dict[str, Any] | None) -> None:
    r = client.post(f"/api/vms/local/vm-paused/agent/{what}", json=body)
    if what == "enable":  # a definition change: allowed in every state but undefined
        assert r.status_code == 200
        return
    assert r.status_code == 409
    op = "agent-set-time" if what == "time" else f"agent-{what}"
    assert r.json()["error"]["message"].startswith(f"cannot {op} vm-paused: it is paused")


def test_freeze_then_thaw_answer_their_results(client: httpx.Client, guest: Guest) -> None:
    r = client.post(f"{AGENT}/freeze", json={"mountpoints": ["/", "/srv"]})
    assert r.status_code == 200, r.text
    assert r.json()["operation"] == "agent-freeze" and "froze 2 file system(s)" in r.json()[
        "note"]
    assert guest.calls[-1] == ("freeze", ["/", "/srv"])
    again = client.post(f"{AGENT}/freeze")
    assert again.status_code == 409 and "already frozen" in again.json()["error"]["message"]
    status = client.get(f"{AGENT}/freeze-status").json()
    assert status["status"] == "frozen" and status["frozen_by"]["op_id"] == r.json()["op_id"]
    thawed = client.post(f"{AGENT}/thaw")
    assert thawed.status_code == 200 and thawed.json()["note"] == "thawed 2 file system(s)"
    assert client.post(f"{AGENT}/thaw").status_code == 409


def test_exec_answers_exit_code_and_output_when_it_ends_in_time(client: httpx.Client,
                                                                guest: Guest) -> None:
    r = client.post(f"{AGENT}/exec", json={"argv": ["/bin/sh", "-c", "x"], "stdin": "in"})
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["exit_code"], got["stdout"], got["stderr"]) == (3, "out\n", "err\n")
    assert got["argv"] == ["/bin/sh", "-c", "x"] and got["op_id"]
    # run under the output limit's /bin/sh script: its own arguments, then the argv
    (what, path, args, stdin) = guest.calls[-1]
    assert (what, path, args[-3:], stdin) == ("exec", "/bin/sh", ["/bin/sh", "-c", "x"], b"in")


def test_a_long_exec_answers_202_and_its_operation_has_the_output(api: Served,
                                                                  client: httpx.Client,
                                                                  guest: Guest) -> None:
    guest.exec_may_end.clear()
    r = client.post(f"{AGENT}/exec", json={"argv": ["/bin/sleep", "9"], "wait_s": 0})
    assert r.status_code == 202, r.text
    op_id = r.json()["op_id"]
    assert client.get(f"/api/operations/{op_id}").json()["status"] == "running"
    guest.exec_may_end.set()
    done = api.wait_operation(client, op_id, timeout_s=30)
    assert done["status"] == "ok" and done["result"]["exit_code"] == 3
    assert done["result"]["stdout"] == "out\n"


@pytest.mark.parametrize(("body", "says"), [
    ({"argv": []}, "argv: List should have at least 1 item"),
    ({"argv": [""]}, "give the program to run in the guest"),
    ({"argv": ["/bin/true"], "timeout_s": 0}, "timeout_s: Input should be greater than 0"),
    ({"argv": ["/bin/true"], "timeout_s": 4000}, "timeout_s: Input should be less than"),
    ({"argv": ["/bin/true"], "env": []}, "env: Extra inputs are not permitted"),
    ({"argv": "/bin/true"}, "argv: Input should be a valid list"),
])
def test_exec_refuses_what_it_cannot_run(client: httpx.Client, body: dict[str, Any],
                                         says: str) -> None:
    r = client.post(f"{AGENT}/exec", json=body)
    assert r.status_code == 422 and says in r.json()["error"]["message"], r.text


def test_command_takes_json_text_or_an_object(client: httpx.Client, guest: Guest) -> None:
    for command in ('{"execute": "guest-get-vcpus"}', {"execute": "guest-get-vcpus"}):
        r = client.post(f"{AGENT}/command", json={"command": command, "timeout_s": 3})
        assert r.status_code == 200, r.text
        assert r.json()["reply"] == {"return": {"count": 2}}
        assert r.json()["command"] == "guest-get-vcpus"
        assert guest.calls[-1] == ("command", {"execute": "guest-get-vcpus"}, 3,
                                   "guest-get-vcpus")


@pytest.mark.parametrize(("command", "says"), [
    ("{nope", "invalid JSON at line 1, column 2"),
    ('{"arguments": {}}', 'an agent command is a JSON object with "execute"'),
    ({"execute": "guest-ping", "id": 1}, "unexpected key(s) id in the agent command"),
])
def test_command_refuses_what_is_no_agent_command(client: httpx.Client, command: object,
                                                  says: str) -> None:
    r = client.post(f"{AGENT}/command", json={"command": command})
    assert r.status_code == 422 and says in r.json()["error"]["message"]


def test_time_is_set_or_synced_on_the_test_drivers_clock(client: httpx.Client) -> None:
    r = client.post(f"{AGENT}/time", json={"set": "2020-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    assert r.json()["clock"]["how"] == "set to the time given"
    assert client.get(f"{AGENT}/time").json()["guest_iso"].startswith("2020-01-01T00:00")
    synced = client.post(f"{AGENT}/time", json={"sync": True}).json()
    assert abs(synced["clock"]["after_s"]) < 1


@pytest.mark.parametrize(("body", "says"), [
    ({}, "give set (an ISO 8601 time) or sync, not both"),
    ({"set": "2020-01-01T00:00:00Z", "sync": True}, "or sync, not both"),
    ({"set": "2020-01-01T00:00:00"}, "'2020-01-01T00:00:00' has no time zone: add Z"),
    ({"set": "yesterday"}, "'yesterday' is not an ISO 8601 time"),
])
def test_time_refuses_what_is_no_time(client: httpx.Client, body: dict[str, Any],
                                      says: str) -> None:
    r = client.post(f"{AGENT}/time", json=body)
    assert r.status_code == 422 and says in r.json()["error"]["message"]


def test_enable_adds_the_channel_once(client: httpx.Client) -> None:
    r = client.post("/api/vms/local/vm-off/agent/enable")
    assert r.status_code == 200 and r.json()["operation"] == "agent-enable"
    again = client.post("/api/vms/local/vm-off/agent/enable")
    assert again.status_code == 409
    assert "already has the guest-agent channel" in again.json()["error"]["message"]


# -- the password -----------------------------------------------------------------------

SECRET = "Sekr3t-Pa55word-7f2e"


def test_a_password_reaches_no_answer_log_event_operation_or_store(
        api: Served, client: httpx.Client, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    events: list[dict[str, Any]] = []
    hub = api.app.state.hub
    publish = hub.publish
    hub.publish = lambda message: (events.append(message), publish(message))
    answers = [
        client.post(f"{AGENT}/set-password", json={"user": "root", "password": SECRET}),
        client.post(f"{AGENT}/set-password", json={"user": "root", "password": SECRET,
                                                   "crypted": True}),
        client.post(f"{AGENT}/set-password", json={"user": "ro:ot", "password": SECRET}),
        client.post(f"{AGENT}/set-password", json={"user": "root",
                                                   "password": SECRET + "\n"}),
        client.post(f"{AGENT}/set-password", json={"user": "root", "password": SECRET * 60}),
        client.post(f"{AGENT}/set-password", json={"user": "root", "password": [SECRET]}),
        client.post(f"{AGENT}/set-password", json={"user": "root", "password": SECRET,
                                                   "extra": SECRET}),
        client.post("/api/vms/local/vm-off/agent/set-password",
                    json={"user": "root", "password": SECRET}),
        client.post(f"{AGENT}/set-password", content=f'{{"password": "{SECRET}"',
                    headers={"content-type": "application/json"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 422, 422, 422, 422, 422, 409, 422]
    assert answers[0].json()["note"] == "password of root set"
    assert answers[1].json()["note"] == "password of root set (as a hash)"
    assert "not a user name" in answers[2].json()["error"]["message"]
    assert "newline" in answers[3].json()["error"]["message"]
    ops = [client.get(f"/api/operations/{a.json()['op_id']}").text for a in answers[:2]]
    seen = [a.text for a in answers] + ops + [
        client.get("/api/history").text, client.get(f"{VM}/history").text,
        client.get("/api/operations").text, client.get("/metrics").text,
        json.dumps(events), caplog.text]
    for text in seen:
        assert SECRET not in text
    store = (tmp_path / "s.db").read_bytes()
    for wal in tmp_path.glob("s.db-*"):
        store += wal.read_bytes()
    assert SECRET.encode() not in store
    assert any(e.get("description") == "agent-set-password local/vm-running" for e in events)
