"""The GuestAgent service on libvirt's test driver: what it refuses before any agent is
asked, its operations' journal rows, and ``agent enable`` on a real definition."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.hypervisor import Guest
from virtlife.hypervisor.agent import AgentInfo, ExecStatus, Filesystem, Interface
from virtlife.services.agent import ExecResult, GuestAgent
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.freeze import FreezeGuard
from virtlife.services.operations import Operations
from virtlife.services.progress import Update
from virtlife.store import Store, open_store
from virtlife.store.freezes import FreezeKind, FreezeMark

UUID_RUNNING = "11111111-1111-1111-1111-111111111111"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.db") as s:
        yield s


@pytest.fixture
def agent(store: Store) -> Iterator[GuestAgent]:
    fleet = Fleet([HostRef("t", NODE_URI)], journal=store.journal)
    guard = FreezeGuard(store.journal, store.freezes)
    yield GuestAgent(fleet, Operations(store.journal, on_touch=guard.recover), guard)
    fleet.close()


@pytest.mark.parametrize(("vm", "state", "hint"), [
    ("vm-off", "shut off", "start it first: the guest agent runs inside the guest"),
    ("vm-paused", "paused", "resume it first: a paused guest's agent cannot answer"),
    ("vm-pmsusp", "pmsuspended", "wake it with pmwakeup first"),
])
def test_reads_refuse_a_vm_whose_guest_does_not_run(agent: GuestAgent, vm: str, state: str,
                                                    hint: str) -> None:
    for read in (agent.ping, agent.info, agent.osinfo, agent.hostname, agent.timezone,
                 agent.users, agent.fsinfo, agent.ifaddr, agent.time, agent.freeze_status):
        with pytest.raises(errors.InvalidTransition) as err:
            read(vm)
        assert f" {vm}: it is {state}" in str(err.value)
        assert str(err.value).endswith(hint)


def test_changes_are_refused_by_state_and_journalled(agent: GuestAgent, store: Store) -> None:
    with pytest.raises(errors.InvalidTransition,
                       match="cannot agent-freeze vm-paused: it is paused, not running or "
                             "idle; resume it first"):
        agent.freeze("vm-paused")
    with pytest.raises(errors.InvalidTransition, match="start it first"):
        agent.set_password("vm-off", "root", "pw")
    rows = store.journal.list(limit=5)
    assert [(r.operation, r.outcome) for r in rows] == [
        ("agent-set-password", "refused"), ("agent-freeze", "refused")]
    assert all("pw" not in r.detail.split() for r in rows)


@pytest.mark.parametrize(("call", "says"), [
    (lambda a: a.set_password("vm-running", "", "pw"), "is not a user name"),
    (lambda a: a.set_password("vm-running", "ro:ot", "pw"), "is not a user name"),
    (lambda a: a.set_password("vm-running", "root", ""), "the password is empty"),
    (lambda a: a.set_password("vm-running", "root", "a\nb"), "newline"),
    (lambda a: a.exec("vm-running", []), "give the program to run"),
    (lambda a: a.exec("vm-running", ["/bin/true"], timeout_s=0), "exec timeout"),
    (lambda a: a.exec("vm-running", ["/bin/true"], timeout_s=4000), "exec timeout"),
    (lambda a: a.command("vm-running", '{"execute": "guest-info"}', timeout_s=0),
     "command timeout"),
    (lambda a: a.command("vm-running", "nope"), "invalid JSON at line 1, column 1"),
    (lambda a: a.set_time("vm-running"), "give a time to set, or sync, not both"),
    (lambda a: a.set_time("vm-running", 1.0, sync=True), "not both"),
])
def test_bad_input_is_refused_before_the_vm_is_touched(agent: GuestAgent, store: Store,
                                                       call: object, says: str) -> None:
    with pytest.raises(errors.InvalidInput) as err:
        call(agent)  # type: ignore[operator]
    assert says in str(err.value)
    assert store.journal.list(limit=5) == []  # nothing began


def test_missing_input_is_refused_saying_what_to_give(agent: GuestAgent) -> None:
    with pytest.raises(errors.InvalidInput, match=r"^give the program to run in the guest$"):
        agent.exec("vm-running", [])
    with pytest.raises(errors.InvalidInput, match=r"^give a time to set, or sync, not both$"):
        agent.set_time("vm-running")


def test_enable_adds_the_channel_to_the_definition_once(agent: GuestAgent,
                                                        store: Store) -> None:
    from virtlife.xml.channels import has_agent_channel

    guest = agent.fleet.resolve("vm-off")
    assert not has_agent_channel(guest.xml(inactive=True))
    result = agent.enable("vm-off")
    assert result.note == ("guest-agent channel added; the guest needs qemu-guest-agent "
                           "installed and running")
    assert has_agent_channel(agent.fleet.resolve("vm-off").xml(inactive=True))
    with pytest.raises(errors.AlreadyExists,
                       match=r"^vm-off already has the guest-agent channel "
                             r"\(org\.qemu\.guest_agent\.0\)$"):
        agent.enable("vm-off")
    running = agent.enable("vm-running")
    assert running.note == ("guest-agent channel added; it applies at the next boot (shut the "
                            "VM down and start it: a reboot keeps the running devices)")
    rows = store.journal.list(limit=3)
    assert [(r.operation, r.outcome) for r in rows] == [
        ("agent-enable", "ok"), ("agent-enable", "refused"), ("agent-enable", "ok")]
    assert "it applies at the next boot" in rows[0].detail  # the note is journalled


def test_enable_changes_the_definition_not_the_running_vm_and_keeps_its_secrets(
        agent: GuestAgent) -> None:
    import libvirt

    conn = agent.fleet.host("t").conn
    off = conn.lookupByName("vm-off")
    conn.defineXML(off.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace(
        "</devices>", "<graphics type='vnc' passwd='s3cret'/></devices>"))
    running = conn.lookupByName("vm-running")
    conn.defineXML(running.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).replace(
        "</name>", "</name><title>next boot</title>", 1))  # a change waiting for the boot
    agent.enable("vm-off")
    agent.enable("vm-running")
    secure = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    assert "passwd='s3cret'" in off.XMLDesc(secure)  # not dropped by the new definition
    assert "<title>next boot</title>" in running.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def test_enable_of_a_transient_vm_is_refused(agent: GuestAgent) -> None:
    import libvirt

    conn = agent.fleet.host("t").conn
    xml = conn.lookupByName("vm-running").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    conn.createXML(xml.replace("vm-running", "tr1").replace("11111111-", "99999999-"), 0)
    with pytest.raises(errors.InvalidTransition,
                       match=r"^cannot enable the agent channel of tr1: it is a transient VM "
                             r"with no definition to change; define it first$"):
        agent.enable("tr1")


def test_enable_of_a_vm_running_with_the_channel_needs_no_reboot(agent: GuestAgent) -> None:
    import libvirt

    from virtlife.xml.channels import with_agent_channel

    conn = agent.fleet.host("t").conn
    xml = conn.lookupByName("vm-running").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    xml = xml.replace("vm-running", "tr2").replace("11111111-", "88888888-")
    conn.createXML(with_agent_channel(xml), 0)  # runs with the channel...
    conn.defineXML(xml)  # ...and its definition lacks it
    result = agent.enable("tr2")
    assert result.note == ("guest-agent channel added; the guest needs qemu-guest-agent "
                           "installed and running")


def test_agent_calls_on_a_driver_without_an_agent_are_unsupported(agent: GuestAgent) -> None:
    with pytest.raises(errors.Unsupported, match="virDomainQemuAgentCommand"):
        agent.ping("vm-running")


def test_set_time_and_sync_on_a_driver_that_keeps_a_guest_clock(agent: GuestAgent,
                                                                 store: Store) -> None:
    import time

    result, outcome = agent.set_time("vm-running", time.time() - 600)
    assert outcome.after_s is not None and -601 < outcome.after_s < -599
    assert result.note.startswith("guest clock ") and "set to the time given" in result.note
    result, outcome = agent.set_time("vm-running", sync=True)
    assert outcome.before_s is not None and outcome.before_s < -599
    assert outcome.after_s is not None and abs(outcome.after_s) < 1
    assert abs(agent.time("vm-running").offset_s) < 1
    row = store.journal.list(limit=1)[0]
    assert (row.operation, row.outcome) == ("agent-set-time", "ok")
    assert "now" in row.detail and "set from this machine's clock" in row.detail


# -- the operations and reads against a scripted agent --------------------------------------

class FakeClock:
    """The service's clock: sleeping moves it on, nothing else does."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class GuestSide:
    """What the scripted agents of one test answer, and what they were asked."""

    clock: FakeClock
    frozen: bool = False
    count: int = 2  # the file systems a freeze or thaw reports
    calls: list[tuple[object, ...]] = field(default_factory=list)
    guest_info: dict[str, dict[str, object]] = field(default_factory=dict)
    statuses: list[ExecStatus] = field(default_factory=list)  # the last one repeats
    freeze_error: BaseException | None = None
    exec_error: BaseException | None = None
    reply: str = '{"return": {}}'
    ping_s: float = 0.25


@pytest.fixture
def side(monkeypatch: pytest.MonkeyPatch) -> GuestSide:
    from virtlife.services import agent as agent_module
    from virtlife.services import freeze as freeze_module

    fake = GuestSide(FakeClock())
    monkeypatch.setattr(agent_module, "time", fake.clock)

    class ScriptedAgent:
        def __init__(self, guest: Guest) -> None:
            self.guest = guest
            self.vm = guest.name

        def ping(self, *, timeout_s: int = 5) -> None:
            fake.calls.append(("ping", self.vm, timeout_s))
            fake.clock.now += fake.ping_s

        def info(self) -> AgentInfo:
            fake.calls.append(("info", self.vm))
            return AgentInfo("9.0", ())

        def guest_info(self, kind: str) -> dict[str, object]:
            fake.calls.append(("guest_info", self.vm, kind))
            return fake.guest_info[kind]

        def hostname(self) -> str:
            fake.calls.append(("hostname", self.vm))
            return "web1.example"

        def filesystems(self) -> list[Filesystem]:
            fake.calls.append(("filesystems", self.vm))
            return [Filesystem("/", "vda1", "ext4", ("vda",))]

        def interfaces(self) -> list[Interface]:
            fake.calls.append(("interfaces", self.vm))
            return [Interface("eth0", "52:54:00:00:00:01", ())]

        def time(self) -> float:
            return 1_000_000.0

        def freeze_status(self, **_bounds: float) -> str:
            return "frozen" if fake.frozen else "thawed"

        def freeze(self, mountpoints: list[str] | None = None, **_bounds: float | None) -> int:
            fake.calls.append(("freeze", self.vm, mountpoints))
            if fake.freeze_error is not None:
                raise fake.freeze_error
            fake.frozen = True
            return fake.count

        def thaw(self, mountpoints: list[str] | None = None, **_bounds: float | None) -> int:
            fake.calls.append(("thaw", self.vm))
            fake.frozen = False
            return fake.count

        def set_password(self, user: str, password: str, *, crypted: bool = False) -> None:
            fake.calls.append(("set_password", self.vm, user, password, crypted))

        def exec_start(self, path: str, args: list[str], *, stdin: bytes | None = None) -> int:
            fake.calls.append(("exec_start", self.vm, path, args, stdin))
            if fake.exec_error is not None:
                raise fake.exec_error
            return 42

        def exec_status(self, pid: int) -> ExecStatus:
            polls = sum(1 for c in fake.calls if c[0] == "exec_status")
            assert polls < 200, "polled for ever"
            fake.calls.append(("exec_status", pid))
            return fake.statuses[min(polls, len(fake.statuses) - 1)]

        def command_text(self, text: str, *, timeout_s: int = 5, name: str = "") -> str:
            fake.calls.append(("command_text", self.vm, text, timeout_s, name))
            return fake.reply

    monkeypatch.setattr(agent_module, "Agent", ScriptedAgent)
    monkeypatch.setattr(freeze_module, "Agent", ScriptedAgent)  # the guard's look at freezes
    return fake


@pytest.mark.parametrize(("read", "verb"), [
    (lambda a, vm: a.ping(vm), "ping the agent of"),
    (lambda a, vm: a.info(vm), "ask the agent of"),
    (lambda a, vm: a.osinfo(vm), "read the OS of"),
    (lambda a, vm: a.hostname(vm), "read the hostname of"),
    (lambda a, vm: a.timezone(vm), "read the timezone of"),
    (lambda a, vm: a.users(vm), "read the users of"),
    (lambda a, vm: a.fsinfo(vm), "read the file systems of"),
    (lambda a, vm: a.ifaddr(vm), "read the addresses of"),
    (lambda a, vm: a.time(vm), "read the clock of"),
    (lambda a, vm: a.freeze_status(vm), "ask the freeze state of"),
])
def test_a_refused_read_says_what_it_was_asked(agent: GuestAgent, read: Any,
                                               verb: str) -> None:
    with pytest.raises(errors.InvalidTransition) as err:
        read(agent, "vm-off")
    assert str(err.value).startswith(f"cannot {verb} vm-off: it is shut off")


def test_reads_ask_the_running_guests_agent(agent: GuestAgent, side: GuestSide) -> None:
    side.guest_info = {
        "os": {"os.id": "debian", "os.version-id": 12},
        "timezone": {"timezone.name": "CET", "timezone.offset": "3600"},
        "users": {"user.count": 2, "user.0.name": "root", "user.0.login-time": 1500,
                  "user.1.name": "bob", "user.1.domain": "CORP"},
    }
    assert agent.ping("vm-running") == 0.25  # the agent's answer time
    assert agent.info("vm-running") == AgentInfo("9.0", ())
    assert agent.osinfo("vm-running") == {"id": "debian", "version-id": "12"}
    assert agent.hostname("vm-running") == "web1.example"
    assert agent.timezone("vm-running") == {"name": "CET", "offset_s": 3600}
    assert agent.users("vm-running") == [
        {"name": "root", "domain": None, "login_time": 1.5},
        {"name": "bob", "domain": "CORP", "login_time": None}]
    assert [f.mountpoint for f in agent.fsinfo("vm-running")] == ["/"]
    assert [i.name for i in agent.ifaddr("vm-running")] == ["eth0"]
    assert agent.time("vm-running").guest == 1_000_000.0
    assert side.calls == [
        ("ping", "vm-running", 5), ("info", "vm-running"),
        ("guest_info", "vm-running", "os"), ("hostname", "vm-running"),
        ("guest_info", "vm-running", "timezone"), ("guest_info", "vm-running", "users"),
        ("filesystems", "vm-running"), ("interfaces", "vm-running")]
    agent.ping("vm-running", timeout_s=2)
    assert side.calls[-1] == ("ping", "vm-running", 2)


def test_an_agent_without_timezone_or_users_reads_as_none(agent: GuestAgent,
                                                          side: GuestSide) -> None:
    side.guest_info = {"timezone": {}, "users": {}}
    assert agent.timezone("vm-running") == {"name": None, "offset_s": 0}
    assert agent.users("vm-running") == []


def test_freeze_and_thaw_hold_the_mark_between_them(agent: GuestAgent, side: GuestSide,
                                                    store: Store) -> None:
    result = agent.freeze("vm-running", ["/", "/srv"])
    assert side.calls == [("freeze", "vm-running", ["/", "/srv"])] and side.frozen
    assert result.note == ("froze 2 file system(s); writes in the guest wait until "
                           "`virtlife agent vm-running thaw`")
    mark = store.freezes.get(UUID_RUNNING)
    assert mark is not None and (mark.op_id, mark.kind, mark.vm, mark.host) == (
        result.op_id, FreezeKind.HELD, "vm-running", "t")

    status = agent.freeze_status("vm-running")
    assert (status.vm, status.status, status.mark) == ("vm-running", "frozen", mark)
    [note] = status.notes  # the operator's own freeze is said, and kept
    assert note.startswith("the file systems of vm-running are frozen since ")
    assert status.as_dict()["frozen_by"] == mark.as_dict()

    with pytest.raises(errors.InvalidTransition,
                       match=r"^cannot freeze the file systems of vm-running: they are already "
                             r"frozen; `virtlife agent vm-running thaw` thaws them"):
        agent.freeze("vm-running")
    assert store.freezes.get(UUID_RUNNING) == mark  # the first freeze's mark stays

    side.count = 3
    result = agent.thaw("vm-running")
    assert result.note == "thawed 3 file system(s)" and not side.frozen
    assert store.freezes.get(UUID_RUNNING) is None
    status = agent.freeze_status("vm-running")
    assert (status.status, status.mark) == ("thawed", None)
    rows = store.journal.list(vm="vm-running", limit=5)
    assert [(r.operation, r.outcome) for r in rows] == [
        ("agent-thaw", "ok"), ("agent-freeze", "refused"), ("agent-freeze", "ok")]


def test_freeze_status_shows_no_mark_of_a_thawed_guest(agent: GuestAgent, side: GuestSide,
                                                       store: Store) -> None:
    agent.freeze("vm-running")
    side.frozen = False  # thawed behind virtlife's back (virsh domfsthaw)
    status = agent.freeze_status("vm-running")
    assert (status.status, status.mark) == ("thawed", None)
    assert status.as_dict() == {"vm": "vm-running", "status": "thawed", "frozen_by": None,
                                "notes": []}


def test_freeze_status_tells_of_a_stale_freeze_it_thawed_first(
        agent: GuestAgent, side: GuestSide, store: Store) -> None:
    side.frozen = True  # a quiesced snapshot's process died while the guest was frozen
    store.freezes.put(FreezeMark(UUID_RUNNING, "t", "vm-running", "dead1",
                                 FreezeKind.BOUNDED, datetime(2025, 1, 31, tzinfo=UTC), 10.0))
    status = agent.freeze_status("vm-running")
    assert status.status == "thawed" and status.mark is None
    [note] = status.notes
    assert note.startswith("thawed the file systems of vm-running: operation dead1 froze")


def test_reads_log_what_they_found_and_did_first(agent: GuestAgent, side: GuestSide,
                                                store: Store,
                                                caplog: pytest.LogCaptureFixture) -> None:
    side.frozen = True
    store.freezes.put(FreezeMark(UUID_RUNNING, "t", "vm-running", "dead1",
                                 FreezeKind.BOUNDED, datetime(2025, 1, 31, tzinfo=UTC), 10.0))
    with caplog.at_level(logging.WARNING, logger="virtlife.services.agent"):
        agent.hostname("vm-running")
    assert [r.getMessage() for r in caplog.records] == [
        "thawed the file systems of vm-running: operation dead1 froze them at "
        "2025-01-31 00:00:00 UTC and ended without thawing them"]
    assert not side.frozen


def test_a_failed_freeze_thaws_what_it_froze_and_forgets_the_mark(
        agent: GuestAgent, side: GuestSide, store: Store) -> None:
    side.freeze_error = errors.AgentTimeout("cannot freeze: the agent did not answer")
    with pytest.raises(errors.AgentTimeout):
        agent.freeze("vm-running")
    assert [c[0] for c in side.calls] == ["freeze", "thaw"]
    assert store.freezes.get(UUID_RUNNING) is None


def test_thaw_of_a_guest_that_is_not_frozen_is_refused_and_forgets_the_mark(
        agent: GuestAgent, side: GuestSide, store: Store) -> None:
    agent.freeze("vm-running")
    side.frozen = False  # thawed behind virtlife's back
    with pytest.raises(errors.InvalidTransition,
                       match=r"^cannot thaw the file systems of vm-running: they are not "
                             r"frozen$"):
        agent.thaw("vm-running")
    assert store.freezes.get(UUID_RUNNING) is None
    assert ("thaw", "vm-running") not in side.calls


@pytest.mark.parametrize(("crypted", "note"), [
    (False, "password of root set"), (True, "password of root set (as a hash)")])
def test_set_password_passes_it_to_the_agent_and_journals_no_password(
        agent: GuestAgent, side: GuestSide, store: Store, crypted: bool, note: str) -> None:
    result = agent.set_password("vm-running", "root", "s3cret-pw", crypted=crypted)
    assert side.calls == [("set_password", "vm-running", "root", "s3cret-pw", crypted)]
    assert result.note == note
    row = store.journal.list(limit=1)[0]
    assert (row.operation, row.outcome) == ("agent-set-password", "ok")
    assert "s3cret-pw" not in row.detail and note in row.detail


def test_set_password_is_plain_unless_told_crypted(agent: GuestAgent, side: GuestSide) -> None:
    agent.set_password("vm-running", "root", "pw")
    agent.set_password("vm-running", "XAVIER", "pw")  # any letter of a name is fine
    assert side.calls == [("set_password", "vm-running", "root", "pw", False),
                          ("set_password", "vm-running", "XAVIER", "pw", False)]


@pytest.mark.parametrize(("user", "password", "says"), [
    ("ro\not", "pw", "'ro\\not' is not a user name"),
    ("ro\0ot", "pw", "is not a user name"),
    ("root", "a\0b", "a password cannot contain a newline or NUL"),
    ("root", "", "the password is empty"),
])
def test_set_password_refuses_what_chpasswd_cannot_take(
        agent: GuestAgent, side: GuestSide, user: str, password: str, says: str) -> None:
    with pytest.raises(errors.InvalidInput) as err:
        agent.set_password("vm-running", user, password)
    assert str(err.value) == says or str(err.value).endswith(says)
    assert side.calls == []


def test_set_time_to_a_given_time_reports_both_offsets(
        agent: GuestAgent, side: GuestSide, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.services import agent as agent_module
    from virtlife.services import clock as clock_module

    readings = iter([1000.0 - 300, 1000.0 - 0.5])  # the guest clock, before and after

    class ClockAgent:
        def __init__(self, guest: Guest) -> None:
            self.vm = guest.name

        def time(self) -> float:
            return next(readings)

        def set_time(self, when: float | None) -> None:
            side.calls.append(("set_time", when))

    monkeypatch.setattr(agent_module, "Agent", ClockAgent)
    monkeypatch.setattr(clock_module, "time", SimpleNamespace(time=lambda: 1000.0))
    result, outcome = agent.set_time("vm-running", 12345.5)
    assert side.calls == [("set_time", 12345.5)]
    assert (outcome.before_s, outcome.after_s, outcome.how) == (-300.0, -0.5,
                                                                "set to the time given")
    assert result.note == ("guest clock 300.000 s behind, now 0.500 s behind (set to the time "
                           "given)")


def started(side: GuestSide) -> tuple[str, list[str], bytes | None]:
    """The program and stdin of the one exec_start, as the guest's own argv: what runs
    under the output limit's /bin/sh, checked to be that."""
    [(_, _, path, args, stdin)] = [c for c in side.calls if c[0] == "exec_start"]
    assert isinstance(path, str) and isinstance(args, list)
    if path == "/bin/sh" and args[:1] == ["-c"] and args[2:3] == ["virtlife-exec"]:
        return args[5], args[6:], stdin  # after the script, $0, the bytes kept + 1, the tag
    return path, args, stdin


def test_exec_polls_until_the_program_ends_and_returns_its_output(
        agent: GuestAgent, side: GuestSide, store: Store) -> None:
    side.statuses = [ExecStatus(False), ExecStatus(False), ExecStatus(False),
                     ExecStatus(True, 3, None, b"out", b"err", True)]
    updates: list[Update] = []
    got = agent.exec("vm-running", ["/bin/sh", "-c", "exit 3"], stdin=b"in",
                     progress=updates.append)
    assert started(side) == ("/bin/sh", ["-c", "exit 3"], b"in")
    assert side.clock.sleeps == [0.05, 0.1, 0.2]  # a short first wait, then doubling
    assert got == ExecResult("vm-running", ("/bin/sh", "-c", "exit 3"), 42, 3, None, b"out",
                             b"err", True, pytest.approx(0.35), got.op_id, 2**20, ())
    assert got.op_id and got.op_id == store.journal.list(limit=1)[0].op_id
    assert got.as_dict() == {
        "op_id": got.op_id, "vm": "vm-running", "argv": ["/bin/sh", "-c", "exit 3"],
        "pid": 42, "exit_code": 3, "signal": None, "stdout": "out", "stderr": "err",
        "truncated": True, "max_output": 2**20, "cut": [], "duration_s": 0.35}
    assert ("exec", "/bin/sh runs in vm-running as pid 42, the /bin/sh that limits its "
                    "output") in [(u.stage, u.message) for u in updates]
    assert [c[1] for c in side.calls if c[0] == "exec_status"] == [42] * 4
    row = store.journal.list(limit=1)[0]
    assert (row.operation, row.outcome) == ("agent-exec", "ok")
    assert "/bin/sh ended with exit code 3 after 0.35 s" in row.detail


def test_exec_of_a_program_ended_by_a_signal_says_so(agent: GuestAgent, side: GuestSide,
                                                    store: Store) -> None:
    side.statuses = [ExecStatus(True, None, 9)]
    got = agent.exec("vm-running", ["/bin/sleep", "9"])
    assert started(side) == ("/bin/sleep", ["9"], None)
    assert (got.exit_code, got.signal, got.duration_s) == (None, 9, 0.0)
    assert side.clock.sleeps == []  # it had ended by the first look
    assert "/bin/sleep ended with signal 9 after 0.00 s" in store.journal.list(limit=1)[0].detail


def test_exec_polls_at_most_every_half_second_and_gives_up_at_the_timeout(
        agent: GuestAgent, side: GuestSide, store: Store) -> None:
    side.statuses = [ExecStatus(False)]
    with pytest.raises(errors.OperationTimeout,
                       match=r"^/bin/yes did not end within 2 s in vm-running; it still runs "
                             r"there as pid 42, the /bin/sh that limits its output$"):
        agent.exec("vm-running", ["/bin/yes"], timeout_s=2)
    # doubling waits, never over half a second, the last one cut to the time left
    assert side.clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.25])
    assert store.journal.list(limit=1)[0].outcome == "error"


def test_exec_takes_a_timeout_up_to_an_hour(agent: GuestAgent, side: GuestSide) -> None:
    side.statuses = [ExecStatus(True, 0)]
    assert agent.exec("vm-running", ["/bin/true"], timeout_s=3600).exit_code == 0
    with pytest.raises(errors.InvalidInput,
                       match=r"^the exec timeout must be within 0 and 3600 s$"):
        agent.exec("vm-running", ["/bin/true"], timeout_s=3600.5)
    with pytest.raises(errors.InvalidInput, match="give the program to run in the guest"):
        agent.exec("vm-running", [""])


def test_exec_waits_a_minute_by_default_and_takes_half_a_second(
        agent: GuestAgent, side: GuestSide) -> None:
    side.statuses = [ExecStatus(False)]
    with pytest.raises(errors.OperationTimeout, match="did not end within 60 s"):
        agent.exec("vm-running", ["/bin/yes"])
    side.statuses = [ExecStatus(True, 0)]
    assert agent.exec("vm-running", ["/bin/true"], timeout_s=0.5).exit_code == 0


# -- exec's bounds (issue 15 G): the output cut in the guest, the input checked first ---

def test_exec_keeps_max_output_bytes_of_each_stream_and_says_what_it_cut(
        agent: GuestAgent, side: GuestSide, store: Store) -> None:
    # what the guest's script gives back: the bytes kept and one more, which tells a cut
    side.statuses = [ExecStatus(True, 0, None, b"o" * 101, b"e" * 100)]
    got = agent.exec("vm-running", ["/usr/bin/yes"], max_output=100)
    [(_, _, path, args, _)] = [c for c in side.calls if c[0] == "exec_start"]
    assert (path, args[:1], args[2:]) == ("/bin/sh", ["-c"], [
        "virtlife-exec", "101", args[4], "/usr/bin/yes"])
    assert (got.stdout, got.stderr) == (b"o" * 100, b"e" * 100)
    assert (got.cut, got.truncated, got.max_output) == (("stdout",), True, 100)
    assert got.notes == ("its stdout was cut at 100 bytes (max_output)",)
    assert got.as_dict()["cut"] == ["stdout"] and got.as_dict()["max_output"] == 100
    row = store.journal.list(limit=1)[0]
    assert row.detail.endswith("/usr/bin/yes ended with exit code 0 after 0.00 s; its "
                               "stdout was cut at 100 bytes (max_output)")


def test_exec_keeps_a_mebibyte_unless_told(agent: GuestAgent, side: GuestSide) -> None:
    side.statuses = [ExecStatus(True, 0, None, b"o" * (2**20 + 1), b"e" * (2**20 + 1))]
    got = agent.exec("vm-running", ["/bin/cat", "/dev/zero"])
    assert side.calls[0][3][3] == str(2**20 + 1)
    assert (len(got.stdout), len(got.stderr), got.cut) == (2**20, 2**20, ("stdout", "stderr"))


def test_exec_with_an_output_limit_of_0_runs_the_program_as_it_is(
        agent: GuestAgent, side: GuestSide) -> None:
    side.statuses = [ExecStatus(True, 0, None, b"o" * 5000)]
    got = agent.exec("vm-running", ["cmd.exe", "/c", "dir"], max_output=0)
    assert side.calls[0] == ("exec_start", "vm-running", "cmd.exe", ["/c", "dir"], None)
    assert (len(got.stdout), got.cut, got.truncated, got.max_output) == (5000, (), False, 0)


@pytest.mark.parametrize(("options", "says"), [
    ({"max_output": 1536001}, "the exec output limit must be within 0 and 1536000 bytes "
                              "(1500 KiB), not 1536001: stdout and stderr come back "
                              "base64-encoded in one answer of the guest agent, and libvirt "
                              "passes at most 4 MiB; 0 means no limit"),
    ({"max_output": -1}, "the exec output limit must be within 0 and 1536000 bytes"),
    ({"stdin": b"x" * 65537}, "the input for /bin/cat is larger than 65536 bytes (64 KiB), "
                              "the most that one guest-agent command carries safely through "
                              "libvirt; send it in parts"),
    ({"stdin": b"x" * 3_200_000}, "the input for /bin/cat is larger than 65536 bytes"),
])
def test_exec_refuses_what_one_agent_call_cannot_carry_before_anything_runs(
        agent: GuestAgent, side: GuestSide, store: Store, options: dict[str, Any],
        says: str) -> None:
    with pytest.raises(errors.InvalidInput) as err:
        agent.exec("vm-running", ["/bin/cat"], **options)
    assert err.value.exit_code == 64  # bad input, never 4 (host unreachable)
    assert str(err.value).startswith(says)
    assert side.calls == [] and store.journal.list(limit=1) == []


def test_exec_takes_the_most_input_and_the_largest_output_limit(
        agent: GuestAgent, side: GuestSide) -> None:
    side.statuses = [ExecStatus(True, 0)]
    agent.exec("vm-running", ["/bin/cat"], stdin=b"\xff" * 65536, max_output=1536000)
    assert side.calls[0][3][3] == "1536001" and side.calls[0][4] == b"\xff" * 65536


def test_exec_refuses_arguments_too_long_for_one_agent_command(
        agent: GuestAgent, side: GuestSide, store: Store) -> None:
    with pytest.raises(errors.InvalidInput) as err:
        agent.exec("vm-running", ["/bin/echo", "x" * 150_000])
    assert str(err.value).startswith("cannot run /bin/echo in vm-running: the agent command "
                                      "would be ")
    assert "at most 131072 (128 KiB) go to the guest agent in one command" in str(err.value)
    assert side.calls == [] and store.journal.list(limit=1) == []


def test_a_raw_command_too_long_for_the_agent_is_refused_unsent(
        agent: GuestAgent, side: GuestSide, store: Store) -> None:
    text = json.dumps({"execute": "guest-file-write", "arguments": {"buf-b64": "A" * 200_000}})
    with pytest.raises(errors.InvalidInput, match=r"^cannot send guest-file-write to the "
                                                  r"agent of vm-running: the agent command "
                                                  r"would be 200\d\d\d bytes"):
        agent.command("vm-running", text)
    assert side.calls == [] and store.journal.list(limit=1) == []


def test_a_program_the_guest_lacks_is_the_guests_error_and_journalled(
        agent: GuestAgent, side: GuestSide, store: Store,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.hypervisor import agent as hv_agent

    monkeypatch.setattr(hv_agent.secrets, "token_hex", lambda n: "ab" * n)
    side.statuses = [ExecStatus(True, 127, None, b"abababababababab noexec\n")]
    with pytest.raises(errors.AgentGuestError) as err:
        agent.exec("vm-running", ["/no/such"])
    assert str(err.value) == ("cannot run /no/such in vm-running: the guest reported an error "
                              "for guest-exec: it has no program /no/such (its /bin/sh finds "
                              "none at that path or in its PATH)")
    assert store.journal.list(limit=1)[0].outcome == "error"


def test_a_guest_without_sh_is_told_to_run_the_program_without_a_limit(
        agent: GuestAgent, side: GuestSide) -> None:
    side.exec_error = errors.AgentGuestError(
        "cannot run agent command guest-exec in vm-running on t: the guest reported an "
        "error for guest-exec: Failed to execute child process \u201c/bin/sh\u201d (No such "
        "file or directory)")
    with pytest.raises(errors.AgentGuestError) as err:
        agent.exec("vm-running", ["cmd.exe"])
    assert str(err.value).endswith(
        "(No such file or directory); an output limit runs cmd.exe under the guest's "
        "/bin/sh, which it lacks (a Windows guest?): give an output limit of 0 "
        "(--max-output 0) to run it as it is, and keep its output under 3 MiB")
    side.exec_error = errors.AgentGuestError("cannot run agent command guest-exec: other")
    with pytest.raises(errors.AgentGuestError, match=r"other$"):
        agent.exec("vm-running", ["/bin/true"])


def test_a_raw_command_may_wait_one_second(agent: GuestAgent, side: GuestSide) -> None:
    agent.command("vm-running", '{"execute": "guest-ping"}', timeout_s=1)
    assert side.calls[-1][3] == 1


def test_command_sends_the_json_and_returns_the_parsed_reply(
        agent: GuestAgent, side: GuestSide, store: Store) -> None:
    side.reply = '{"return": {"version": "9.0"}}'
    got = agent.command("vm-running", '{"execute": "guest-info", "arguments": {"x": "s3"}}')
    assert got == {"return": {"version": "9.0"}}
    assert side.calls == [("command_text", "vm-running",
                           '{"execute": "guest-info", "arguments": {"x": "s3"}}', 5,
                           "guest-info")]
    row = store.journal.list(limit=1)[0]
    assert (row.operation, row.outcome) == ("agent-command", "ok")
    assert "guest-info answered" in row.detail and "s3" not in row.detail
    side.reply = "not json"
    assert agent.command("vm-running", '{"execute": "guest-x"}', timeout_s=3600) == "not json"
    assert side.calls[-1][3:] == (3600, "guest-x")
    with pytest.raises(errors.InvalidInput,
                       match=r"^the command timeout must be within 0 and 3600 s$"):
        agent.command("vm-running", '{"execute": "guest-info"}', timeout_s=3601)


@pytest.mark.parametrize(("call", "operation"), [
    (lambda a: a.set_time("down/vm", sync=True), "agent-set-time"),
    (lambda a: a.freeze("down/vm"), "agent-freeze"),
    (lambda a: a.thaw("down/vm"), "agent-thaw"),
    (lambda a: a.set_password("down/vm", "root", "pw"), "agent-set-password"),
    (lambda a: a.exec("down/vm", ["/bin/true"]), "agent-exec"),
    (lambda a: a.command("down/vm", '{"execute": "guest-ping"}'), "agent-command"),
    (lambda a: a.enable("down/vm"), "agent-enable"),
])
def test_an_unreachable_host_is_journalled_as_the_operations_failure(
        store: Store, call: Any, operation: str) -> None:
    from support import UNREACHABLE_URI

    with Fleet([HostRef("down", UNREACHABLE_URI)], journal=store.journal,
               connect_timeout_s=5) as fleet:
        guard = FreezeGuard(store.journal, store.freezes)
        with pytest.raises(errors.HostUnreachable):
            call(GuestAgent(fleet, Operations(store.journal), guard))
    [row] = store.journal.list(limit=2)
    assert (row.operation, row.host, row.vm) == (operation, "down", "vm")
