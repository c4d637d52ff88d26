"""The guest agent's pieces without a guest: error translation, freezes, the clock,
settings, raw commands, the channel XML and the freeze table."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from virtlife import config, errors
from virtlife.hypervisor.libvirt_api import libvirt, translate
from virtlife.services import clock, freeze
from virtlife.services.agent import parse_command
from virtlife.states import StateInfo, VMState
from virtlife.store import open_store
from virtlife.store.freezes import FreezeKind, FreezeMark
from virtlife.xml.channels import has_agent_channel, with_agent_channel
from virtlife.xml.domain import DomainSpec, build_domain_xml

# -- libvirt's agent errors, as measured on libvirt 9.0 -----------------------------------


class FakeError:
    def __init__(self, code: int, domain: int, message: str) -> None:
        self.code, self.domain, self.message = code, domain, message

    def get_error_code(self) -> int:
        return self.code

    def get_error_domain(self) -> int:
        return self.domain

    def get_error_message(self) -> str:
        return self.message

    def get_int1(self) -> int:
        return 0


QEMU = libvirt.VIR_FROM_QEMU
AGENT_CASES = [
    (libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, QEMU,
     "argument unsupported: QEMU guest agent is not configured",
     errors.AgentNotConfigured, 8, "add it with `virtlife agent enable web1`"),
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, QEMU,
     "Guest agent is not responding: QEMU guest agent is not connected",
     errors.AgentNotConnected, 8, "apt install qemu-guest-agent"),
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, QEMU,
     "Guest agent is not responding: Guest agent not available for now",
     errors.AgentTimeout, 5, "did not answer in time"),
    # after a reply over libvirt's 10 MiB cap: the channel is broken, not slow
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, QEMU,
     "Guest agent is not responding: QEMU guest agent is not available due to an error",
     errors.AgentUnavailable, 8, "restart qemu-guest-agent inside the guest"),
    (libvirt.VIR_ERR_INTERNAL_ERROR, QEMU,
     "internal error: unable to execute QEMU agent command 'guest-nope': The command "
     "guest-nope has not been found", errors.AgentCommandUnsupported, 9,
     "does not have guest-nope"),
    (libvirt.VIR_ERR_INTERNAL_ERROR, QEMU,
     "internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': Command "
     "guest-fsfreeze-freeze has been disabled: the agent is in frozen state",
     errors.AgentCommandUnsupported, 9, "`virtlife agent web1 thaw`"),
    (libvirt.VIR_ERR_INTERNAL_ERROR, QEMU,
     "internal error: unable to execute QEMU agent command 'guest-exec': Command "
     "guest-exec has been disabled", errors.AgentCommandUnsupported, 9, "--block-rpcs"),
    (libvirt.VIR_ERR_INTERNAL_ERROR, QEMU,
     "internal error: unable to execute QEMU agent command 'guest-set-user-password': "
     "child process has failed to set user password", errors.AgentGuestError, 9,
     "the guest reported an error for guest-set-user-password: child process has failed"),
]


@pytest.mark.parametrize(("code", "domain", "text", "cls", "exit_code", "says"), AGENT_CASES)
def test_agent_errors_are_typed_and_say_the_fix(code: int, domain: int, text: str,
                                                cls: type[errors.VirtlifeError],
                                                exit_code: int, says: str) -> None:
    err = translate(FakeError(code, domain, text), "ping the agent of web1", vm="web1")
    assert type(err) is cls
    assert err.exit_code == exit_code
    assert str(err).startswith("cannot ping the agent of web1: ")
    assert says in str(err)


def test_other_errors_are_not_agent_errors() -> None:
    err = translate(FakeError(libvirt.VIR_ERR_OPERATION_INVALID, QEMU,
                              "Requested operation is not valid: domain is not running"),
                    "x", vm="web1")
    assert type(err) is errors.InvalidTransition
    err = translate(FakeError(libvirt.VIR_ERR_INTERNAL_ERROR, QEMU, "internal error: boom"),
                    "x")
    assert type(err) is errors.OperationFailed
    err = translate(FakeError(libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, QEMU,
                              "argument unsupported: something else"), "x")
    assert type(err) is errors.Unsupported


def test_exit_codes_include_the_agent_ones_and_the_help_lists_them() -> None:
    from virtlife.cli.main import EPILOG, EXIT_CODES

    assert {8, 9} <= errors.exit_codes() <= EXIT_CODES
    assert errors.AgentTimeout.exit_code == 5
    assert issubclass(errors.AgentTimeout, errors.AgentUnavailable)
    assert "8 guest agent unavailable" in EPILOG and "9 guest agent refused" in EPILOG


@pytest.mark.parametrize(("code", "domain", "text", "says"), [
    (libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, QEMU,
     "argument unsupported: QEMU guest agent is not configured",
     "cannot x: the VM has no guest-agent channel (org.qemu.guest_agent.0); add it with "
     "`virtlife agent enable VM` (it applies at the next boot)"),
    (libvirt.VIR_ERR_AGENT_UNRESPONSIVE, QEMU,
     "Guest agent is not responding: Guest agent not available for now",
     "cannot x: the guest agent did not answer in time; it may be hung or busy (a frozen or "
     "overloaded guest)"),
    (libvirt.VIR_ERR_INTERNAL_ERROR, QEMU,
     "internal error: unable to execute QEMU agent command 'guest-exec': Command "
     "guest-exec has been disabled",
     "cannot x: guest-exec is disabled in the guest's agent (its --block-rpcs or "
     "--allow-rpcs settings)"),
])
def test_agent_errors_read_in_full(code: int, domain: int, text: str, says: str) -> None:
    assert str(translate(FakeError(code, domain, text), "x")) == says


@pytest.mark.parametrize(("code", "domain", "cls"), [
    # the guest's own refusal comes from the QEMU driver, or as an internal error
    (libvirt.VIR_ERR_OPERATION_FAILED, QEMU, errors.AgentGuestError),
    (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_DOM, errors.AgentGuestError),
    (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_DOM, errors.OperationFailed),
])
def test_the_guests_own_refusal_is_known_by_driver_or_code(code: int, domain: int,
                                                            cls: type[Exception]) -> None:
    text = ("unable to execute QEMU agent command 'guest-set-user-password': child process "
            "has failed to set user password")
    assert type(translate(FakeError(code, domain, text), "x", vm="web1")) is cls


# -- raw commands ------------------------------------------------------------------------

def test_parse_command_checks_the_json_and_says_where_it_is_wrong() -> None:
    assert parse_command('{"execute": "guest-info"}') == ("guest-info",
                                                          '{"execute": "guest-info"}')
    name, payload = parse_command('{"execute":"guest-exec","arguments":{"path":"/bin/ls"}}')
    assert name == "guest-exec" and '"arguments"' in payload
    with pytest.raises(errors.InvalidInput, match=r"^invalid JSON at line 2, column 3 "
                                                  r"\(character 4\): "):
        parse_command('{\n  ]')
    for bad in ('["guest-info"]', '{"execute": 1}', '{}'):
        with pytest.raises(errors.InvalidInput) as err:
            parse_command(bad)
        assert str(err.value) == ('an agent command is a JSON object with "execute", e.g. '
                                  '\'{"execute": "guest-info"}\'')
    with pytest.raises(errors.InvalidInput) as err:
        parse_command('{"execute": "guest-info", "id": 1, "x": 2}')
    assert str(err.value) == ('unexpected key(s) id, x in the agent command: it has "execute" '
                              'and, optionally, "arguments"')


# -- the channel in the XML ----------------------------------------------------------------

def test_agent_channel_added_to_a_definition_without_it() -> None:
    without = build_domain_xml(DomainSpec(name="web1", memory_mib=64, agent=False))
    assert not has_agent_channel(without)
    added = with_agent_channel(without)
    assert has_agent_channel(added)
    assert "<target type=\"virtio\" name=\"org.qemu.guest_agent.0\"" in added
    assert has_agent_channel(build_domain_xml(DomainSpec(name="web1", memory_mib=64)))
    with pytest.raises(errors.InvalidDefinition,
                       match=r"^the domain XML has no <devices> element$"):
        with_agent_channel("<domain type='qemu'><name>x</name></domain>")


def test_the_added_channel_is_a_unix_socket_and_only_the_agents_counts() -> None:
    import xml.etree.ElementTree as ET

    added = with_agent_channel(build_domain_xml(DomainSpec(name="web1", memory_mib=64,
                                                           agent=False)))
    [channel] = [c for c in ET.fromstring(added).findall("./devices/channel")
                 if c.find("target") is not None
                 and c.find("target").get("name") == "org.qemu.guest_agent.0"]  # type: ignore[union-attr]
    assert channel.get("type") == "unix"
    spice = ("<domain type='qemu'><name>x</name><devices><channel type='spicevmc'>"
             "<target type='virtio' name='com.redhat.spice.0'/></channel>"
             "<channel type='unix'><target type='guestfwd' name='org.qemu.guest_agent.0'/>"
             "</channel></devices></domain>")
    assert not has_agent_channel(spice)  # a virtio channel, but not the agent's


# -- settings ------------------------------------------------------------------------------

def test_settings_default_and_read(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    assert config.load_settings(path) == config.Settings(sync_time=True, freeze_bound_s=10.0)
    path.write_text("[agent]\nsync_time = false\nfreeze_bound_s = 2.5\n")
    assert config.load_settings(path) == config.Settings(sync_time=False, freeze_bound_s=2.5)


@pytest.mark.parametrize(("text", "settings"), [
    ("[agent]\nfreeze_bound_s = 5\n", config.Settings(sync_time=True, freeze_bound_s=5.0)),
    ("[agent]\nsync_time = false\n", config.Settings(sync_time=False, freeze_bound_s=10.0)),
    ("[agent]\nfreeze_bound_s = 0.5\n", config.Settings(freeze_bound_s=0.5)),
    ("[agent]\nfreeze_bound_s = 600\n", config.Settings(freeze_bound_s=600.0)),
    ("", config.Settings()),
])
def test_each_setting_left_out_keeps_its_default(tmp_path: Path, text: str,
                                                 settings: config.Settings) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    got = config.load_settings(path)
    assert got == settings and type(got.freeze_bound_s) is float


def test_the_settings_file_is_found_by_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "settings.toml").write_text("[agent]\nfreeze_bound_s = 3\n")
    (tmp_path / "other.toml").write_text("[agent]\nfreeze_bound_s = 4\n")
    monkeypatch.setenv("VIRTLIFE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VIRTLIFE_SETTINGS", raising=False)
    assert config.load_settings().freeze_bound_s == 3.0
    monkeypatch.setenv("VIRTLIFE_SETTINGS", str(tmp_path / "other.toml"))
    assert config.load_settings().freeze_bound_s == 4.0


@pytest.mark.parametrize(("text", "says"), [
    ("[agent]\nsync_time = 1\n", "must be true or false"),
    ("[agent]\nfreeze_bound_s = 0\n", "freeze_bound_s in {path} must be a number of seconds "
     "within 0 and 600"),
    ("[agent]\nfreeze_bound_s = true\n", "within 0 and 600"),
    ("[agent]\nfreeze_bound_s = 601\n", "within 0 and 600"),
    ("[agent]\nsync = true\n", "unknown setting(s) sync"),
    ("[agent]\nsync = true\nbound = 1\n[x]\n", "unknown setting(s) bound, sync, x in "),
    ("[agent]\nfreeze_bound_s = 'long'\n", "must be a number of seconds within 0 and 600"),
    ("[clock]\n", "unknown setting(s) clock"),
    ("[agent\n", "cannot read the settings"),
])
def test_bad_settings_are_refused_clearly(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(errors.InvalidInput) as err:
        config.load_settings(path)
    assert says.format(path=path) in str(err.value)


# -- the clock -----------------------------------------------------------------------------

def test_offsets_read_as_words() -> None:
    assert clock.describe_offset(None) == "offset unknown"
    assert clock.describe_offset(0.0001) == "in step"
    assert clock.describe_offset(-300.25) == "300.250 s behind"
    assert clock.describe_offset(2.0) == "2.000 s ahead"
    assert str(clock.ClockSync(-300.0, -0.002, clock.FROM_THIS_MACHINE)) == (
        "guest clock 300.000 s behind, now 0.002 s behind (set from this machine's clock)")
    assert str(clock.ClockSync(None, None, skipped="no agent")) == \
        "guest clock not synced: no agent"
    assert clock.ClockSync(-300.12345, 0.0004, clock.FROM_RTC).as_dict() == {
        "before_s": -300.123, "after_s": 0.0, "how": clock.FROM_RTC, "skipped": None}


class FakeHost:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.name = "h"


class FakeGuest:
    def __init__(self, uri: str = "qemu:///system") -> None:
        self.host = FakeHost(uri)
        self.name = "web1"


class FakeAgent:
    """A guest agent with a clock ``skew`` seconds off and a freeze state."""

    def __init__(self, skew: float = -300.0, *, uri: str = "qemu:///system",
                 down_for: int = 0) -> None:
        self.guest = FakeGuest(uri)
        self.vm = "web1"
        self.skew = skew
        self.set_calls: list[float | None] = []
        self.down_for = down_for
        self.frozen = False
        self.calls: list[str] = []
        self.thaw_fails = 0

    def time(self) -> float:
        if self.down_for:
            self.down_for -= 1
            raise errors.AgentNotConnected("cannot read: not connected")
        return time.time() + self.skew

    def set_time(self, when: float | None) -> None:
        self.set_calls.append(when)
        self.skew = 0.0 if when is None else when - time.time()

    def freeze_status(self, **_bounds: float) -> str:
        return "frozen" if self.frozen else "thawed"

    def freeze(self, mountpoints: list[str] | None = None, **_bounds: float) -> int:
        self.calls.append("freeze")
        self.frozen = True
        return 1

    def thaw(self, mountpoints: list[str] | None = None, **_bounds: float) -> int:
        self.calls.append("thaw")
        if self.thaw_fails:
            self.thaw_fails -= 1
            raise errors.AgentTimeout("cannot thaw: the agent did not answer in time")
        was, self.frozen = self.frozen, False
        return int(was)


def test_sync_sets_the_clock_from_this_machine_on_a_local_host() -> None:
    agent = FakeAgent(-300.0)
    got = clock.sync_clock(agent, wait_s=0)  # type: ignore[arg-type]
    assert got.before_s is not None and -301 < got.before_s < -299
    assert got.after_s is not None and abs(got.after_s) < 0.05
    assert got.how == clock.FROM_THIS_MACHINE
    assert agent.set_calls[0] is not None and abs(agent.set_calls[0] - time.time()) < 1


def test_sync_asks_for_the_rtc_on_a_remote_host() -> None:
    agent = FakeAgent(-300.0, uri="qemu+tcp://10.0.0.2/system")
    got = clock.sync_clock(agent, wait_s=0)  # type: ignore[arg-type]
    assert agent.set_calls == [None] and got.how == clock.FROM_RTC


def test_sync_waits_for_a_waking_agent_then_gives_up_with_the_reason() -> None:
    agent = FakeAgent(-10.0, down_for=2)
    assert clock.sync_clock(agent, wait_s=5).after_s is not None  # type: ignore[arg-type]
    agent = FakeAgent(-10.0, down_for=1000)
    got = clock.sync_clock(agent, wait_s=0.3)  # type: ignore[arg-type]
    assert got.skipped.startswith("the agent did not answer (cannot read: not connected)")
    assert agent.set_calls == []


class FakeTime:
    """The clock module's clocks: ``time()`` steps by ``tick`` each read, ``sleep``
    moves the monotonic clock on."""

    def __init__(self, tick: float = 0.0) -> None:
        self.wall = 5000.0
        self.tick = tick
        self.now = 100.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        self.wall += self.tick
        return self.wall

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_offsets_round_to_the_millisecond_either_way() -> None:
    assert clock.describe_offset(0.0005) == "0.001 s ahead"  # not in step: it rounds up
    assert clock.describe_offset(0.5) == "0.500 s ahead"
    assert clock.describe_offset(-0.0004) == "in step"


def test_a_reading_is_taken_at_the_middle_of_the_round_trip(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime(tick=2.0)
    monkeypatch.setattr(clock, "time", fake)
    reading = clock.read_clock(FakeAgent(skew=0.0))  # type: ignore[arg-type]
    assert (reading.here, reading.round_trip_s) == (5003.0, 2.0)
    assert reading.as_dict()["round_trip_s"] == 2.0


def test_a_waking_agent_is_asked_again_every_quarter_second_until_the_wait_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    monkeypatch.setattr(clock, "time", fake)
    agent = FakeAgent(-10.0, down_for=4)  # answers on the fifth try, after 1 s
    got = clock.sync_clock(agent, wait_s=1.0)  # type: ignore[arg-type]
    assert fake.sleeps == [0.25] * 4 and got.after_s is not None and not got.skipped
    agent = FakeAgent(-10.0, down_for=1)
    got = clock.sync_clock(agent, wait_s=0)  # type: ignore[arg-type]
    assert got.skipped and agent.set_calls == []  # no wait: one try only


def test_sync_reads_the_clock_once_before_and_once_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[float] = []
    agent = FakeAgent(-300.0)
    real = agent.time

    def counted() -> float:
        reads.append(1.0)
        return real()

    monkeypatch.setattr(agent, "time", counted)
    clock.sync_clock(agent, wait_s=0)  # type: ignore[arg-type]
    assert len(reads) == 2


def test_sync_says_why_it_did_not_run_and_what_it_measured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    agent = FakeAgent(-300.0)

    def no_agent() -> float:
        raise errors.Unsupported("cannot read the clock: not on this driver")

    monkeypatch.setattr(agent, "time", no_agent)
    got = clock.sync_clock(agent, wait_s=5)  # type: ignore[arg-type]
    assert got == clock.ClockSync(None, None, skipped="cannot read the clock: not on this "
                                                      "driver")
    assert got.as_dict() == {"before_s": None, "after_s": None, "how": "",
                             "skipped": "cannot read the clock: not on this driver"}

    agent = FakeAgent(-300.0)

    def refused(when: float | None) -> None:
        raise errors.AgentCommandUnsupported("cannot set the clock: disabled in the agent")

    monkeypatch.setattr(agent, "set_time", refused)
    got = clock.sync_clock(agent, wait_s=5)  # type: ignore[arg-type]
    assert got.before_s is not None and -301 < got.before_s < -299
    assert (got.after_s, got.how, got.skipped) == (
        None, "", "cannot set the clock: disabled in the agent")
    assert str(got) == "guest clock not synced: cannot set the clock: disabled in the agent"


# -- freezes -------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> Any:
    with open_store(tmp_path / "s.db") as s:
        yield s


def bounded(agent: Any, freezes: Any, **kwargs: Any) -> Any:
    """``bounded_freeze`` with freezes in flight of its own (no ``Services`` here)."""
    return freeze.bounded_freeze(agent, freezes, in_flight=freeze.FreezesInFlight(),
                                 **kwargs)


def test_bounded_freeze_thaws_at_the_end_and_forgets_the_mark(store: Any) -> None:
    agent = FakeAgent()
    with bounded(agent, store.freezes, op_id="op1", uuid="u1", host="h", bound_s=5) as held:
        assert agent.frozen and held.frozen == 1
        mark = store.freezes.get("u1")
        assert (mark.op_id, mark.kind, mark.bound_s) == ("op1", FreezeKind.BOUNDED, 5.0)
    assert not agent.frozen and agent.calls == ["freeze", "thaw"]
    assert store.freezes.get("u1") is None and not held.broken


def test_bounded_freeze_thaws_on_an_error_in_between(store: Any) -> None:
    agent = FakeAgent()
    with pytest.raises(RuntimeError), bounded(
            agent, store.freezes, op_id="op1", uuid="u1", host="h"):
        raise RuntimeError("injected between freeze and thaw")
    assert not agent.frozen and store.freezes.get("u1") is None


def test_the_watchdog_thaws_at_the_bound(store: Any) -> None:
    agent = FakeAgent()
    with bounded(agent, store.freezes, op_id="op1", uuid="u1", host="h", bound_s=0.2) as held:
        deadline = time.monotonic() + 5
        while agent.frozen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not agent.frozen  # thawed while the body still ran
    assert held.broken and held.thawed_after_s is not None and held.thawed_after_s >= 0.2
    assert agent.calls == ["freeze", "thaw"]  # once, not again at the end


def test_an_already_frozen_guest_is_refused_untouched(store: Any) -> None:
    agent = FakeAgent()
    agent.frozen = True
    with pytest.raises(errors.InvalidTransition, match="already frozen"), \
            bounded(agent, store.freezes, op_id="o", uuid="u", host="h"):
        pass
    assert agent.calls == [] and store.freezes.get("u") is None
    with pytest.raises(errors.InvalidInput), bounded(
            FakeAgent(), None, op_id="o", uuid="u", host="h", bound_s=0):
        pass


def test_a_failed_thaw_keeps_the_mark_for_the_next_command(store: Any) -> None:
    agent = FakeAgent()
    agent.thaw_fails = freeze.THAW_ATTEMPTS
    with pytest.raises(errors.AgentUnavailable, match="may still be frozen"), \
            bounded(agent, store.freezes, op_id="op1", uuid="u1", host="h"):
        pass
    assert store.freezes.get("u1") is not None


def test_thaw_all_thaws_what_its_in_flight_holds(store: Any) -> None:
    agent = FakeAgent()
    inside = threading.Event()
    release = threading.Event()
    in_flight = freeze.FreezesInFlight()

    def hold() -> None:
        with freeze.bounded_freeze(agent, store.freezes, in_flight=in_flight,  # type: ignore[arg-type]
                                   op_id="op9", uuid="u9", host="h", bound_s=30):
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    assert inside.wait(5)
    assert freeze.FreezesInFlight().thaw_all() == 0  # another's holds nothing of it
    assert agent.frozen
    assert in_flight.thaw_all() == 1  # Ctrl-C: the body has not ended
    assert not agent.frozen
    release.set()
    worker.join(5)
    assert agent.calls == ["freeze", "thaw"]


class ThawClock:
    """The freeze module's clock: ``sleep`` only records; time stands still."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return 500.0

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def test_a_briefly_busy_agent_is_asked_to_thaw_again(
        store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ThawClock()
    monkeypatch.setattr(freeze, "time", fake)
    agent = FakeAgent()
    agent.thaw_fails = freeze.THAW_ATTEMPTS - 1
    with bounded(agent, store.freezes, op_id="op1", uuid="u1", host="h", bound_s=30) as held:
        pass
    assert agent.calls == ["freeze"] + ["thaw"] * freeze.THAW_ATTEMPTS
    assert not agent.frozen and held.thaw_error == "" and held.thawed_after_s == 0.0
    assert store.freezes.get("u1") is None
    # the waits between tries grow, and all of them stay well inside a freeze bound
    assert fake.sleeps == sorted(fake.sleeps) and len(set(fake.sleeps)) == len(fake.sleeps)
    assert sum(fake.sleeps) <= 1.0


def test_a_failed_thaw_says_why_and_how_to_thaw(store: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ThawClock()
    monkeypatch.setattr(freeze, "time", fake)
    agent = FakeAgent()
    agent.thaw_fails = freeze.THAW_ATTEMPTS
    with pytest.raises(errors.AgentUnavailable) as err, \
            bounded(agent, store.freezes, op_id="op1", uuid="u1", host="h"):
        pass
    assert type(err.value) is errors.AgentStillFrozen and err.value.exit_code == 8
    assert str(err.value) == (
        "the file systems of web1 may still be frozen: the guest agent did not confirm the "
        "thaw (the agent did not answer in time); writes in the guest wait until they are "
        "thawed. Run `virtlife agent web1 thaw` (the next virtlife command on web1 also "
        "tries); if its agent stays hung, restart qemu-guest-agent in the guest from its "
        "console (`virtlife console web1`), or reset the VM")
    assert sum(fake.sleeps) <= 1.5
    # every try was bounded, and all of them together stay within 5 s of the bound
    assert sum(d for _a, d in freeze.THAW_DEADLINES_S) + sum(fake.sleeps) < 5


def test_a_hung_freeze_is_thawed_and_said_to_be_maybe_frozen(store: Any) -> None:
    """The agent froze the guest but never answered: the freeze's deadline ends it, the
    thaw is tried, and when that is not confirmed either the error says so."""
    agent = FakeAgent()
    bounds: list[dict[str, float]] = []

    def hung_freeze(mountpoints: list[str] | None = None, **bound: float) -> int:
        bounds.append(bound)
        agent.frozen = True
        raise errors.AgentTimeout("cannot freeze: the guest agent did not answer within 3 s")

    agent.freeze = hung_freeze  # type: ignore[method-assign]
    agent.thaw_fails = freeze.THAW_ATTEMPTS
    body = []
    with pytest.raises(errors.AgentStillFrozen, match="may still be frozen"), \
            bounded(agent, store.freezes, op_id="op1", uuid="u1", host="h", bound_s=3):
        body.append("ran")
    assert body == [] and bounds == [{"timeout_s": 3, "deadline_s": 3}]
    assert agent.calls == ["thaw"] * freeze.THAW_ATTEMPTS
    assert store.freezes.get("u1") is not None  # the next command thaws it


class BrokenFreezes:
    """A freeze table whose store cannot be written."""

    def __init__(self, *, put: bool = True, remove: bool = True) -> None:
        self.fail_put, self.fail_remove = put, remove
        self.calls: list[str] = []

    def put(self, mark: FreezeMark) -> None:
        self.calls.append("put")
        if self.fail_put:
            raise errors.StoreUnavailable("database is locked")

    def remove(self, uuid: str, op_id: str | None = None) -> bool:
        self.calls.append("remove")
        if self.fail_remove:
            raise errors.StoreUnavailable("database is locked")
        return True


def test_an_unrecorded_freeze_still_runs_and_says_what_is_at_stake() -> None:
    agent, table, warnings = FakeAgent(), BrokenFreezes(), []
    with bounded(agent, table, op_id="op1", uuid="u1", host="h", warn=warnings.append):
        assert agent.frozen
    assert not agent.frozen and table.calls == ["put"]  # nothing recorded, nothing to remove
    assert warnings == [
        "the freeze could not be recorded (database is locked); if this process dies while "
        "the guest is frozen, no later command will know to thaw it"]


def test_an_unrecorded_end_of_freeze_is_said() -> None:
    agent, table, warnings = FakeAgent(), BrokenFreezes(put=False), []
    with bounded(agent, table, op_id="op1", uuid="u1", host="h", warn=warnings.append):
        pass
    assert table.calls == ["put", "remove"]
    assert warnings == ["the end of the freeze could not be recorded: database is locked"]


def test_the_end_of_a_freeze_removes_only_its_own_mark(store: Any) -> None:
    agent = FakeAgent()
    with bounded(agent, store.freezes, op_id="op1", uuid="u1", host="h"):
        # meanwhile the operator froze it for good (the guest was thawed at the bound)
        store.freezes.put(FreezeMark("u1", "h", "web1", "op2", FreezeKind.HELD,
                                     datetime.now(UTC)))
    mark = store.freezes.get("u1")
    assert mark is not None and mark.op_id == "op2"


class GuardGuest:
    def __init__(self, state: VMState = VMState.RUNNING) -> None:
        self.name = "web1"
        self.host = FakeHost("qemu:///system")
        self.state = state

    def uuid(self) -> str:
        return "u1"

    def status(self) -> StateInfo:
        return StateInfo(self.state, "r")


@pytest.fixture
def guarded(store: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[freeze.FreezeGuard, FakeAgent]:
    agent = FakeAgent()
    monkeypatch.setattr(freeze, "Agent", lambda guest: agent)
    return freeze.FreezeGuard(store.journal, store.freezes), agent


def mark(store: Any, kind: FreezeKind, op_id: str = "gone1") -> None:
    store.freezes.put(FreezeMark("u1", "h", "web1", op_id, kind, datetime.now(UTC), 10.0))


def test_recover_thaws_a_freeze_left_by_a_dead_operation(store: Any, guarded: Any) -> None:
    guard, agent = guarded
    agent.frozen = True
    mark(store, FreezeKind.BOUNDED)  # its operation is in no journal row: it is gone
    notes = guard.recover(GuardGuest())
    assert len(notes) == 1 and notes[0].startswith("thawed the file systems of web1: "
                                                   "operation gone1 froze them at ")
    assert not agent.frozen and store.freezes.get("u1") is None


def test_recover_says_when_the_freeze_began(store: Any, guarded: Any) -> None:
    guard, agent = guarded
    agent.frozen = True
    store.freezes.put(FreezeMark("u1", "h", "web1", "gone1", FreezeKind.BOUNDED,
                                 datetime(2025, 1, 31, 14, 25, 2, tzinfo=UTC), 10.0))
    assert guard.recover(GuardGuest()) == [
        "thawed the file systems of web1: operation gone1 froze them at 2025-01-31 14:25:02 "
        "UTC and ended without thawing them"]


def test_recover_leaves_a_freeze_of_this_process_alone(store: Any, guarded: Any) -> None:
    guard, agent = guarded
    with freeze.bounded_freeze(agent, store.freezes, in_flight=guard.in_flight,
                               op_id="mine2", uuid="u1", host="h", bound_s=30):
        assert guard.recover(GuardGuest()) == []  # in no journal, but held right here
        assert agent.frozen
    assert not agent.frozen


def test_recover_without_a_journal_thaws_a_bounded_freeze(store: Any, guarded: Any) -> None:
    _, agent = guarded
    guard = freeze.FreezeGuard(None, store.freezes)
    agent.frozen = True
    mark(store, FreezeKind.BOUNDED)
    [note] = guard.recover(GuardGuest())
    assert note.startswith("thawed the file systems of web1") and not agent.frozen


def test_recover_leaves_a_freeze_alone_when_the_journal_cannot_tell(
        store: Any, guarded: Any) -> None:
    _, agent = guarded

    class Unreadable:
        def sweep(self) -> None:
            raise errors.StoreUnavailable("database is locked")

    guard = freeze.FreezeGuard(Unreadable(), store.freezes)  # type: ignore[arg-type]
    agent.frozen = True
    mark(store, FreezeKind.BOUNDED)
    assert guard.recover(GuardGuest()) == []
    assert agent.frozen and store.freezes.get("u1") is not None


def test_recover_leaves_a_running_operations_freeze_alone(store: Any, guarded: Any) -> None:
    from virtlife.store.journal import Actor

    guard, agent = guarded
    agent.frozen = True
    store.journal.begin(op_id="live1", host="h", vm="web1", operation="snapshot-create",
                        actor=Actor.current(), lock_key="u1", uuid="u1", domid=1)
    mark(store, FreezeKind.BOUNDED, "live1")
    assert guard.recover(GuardGuest()) == []
    assert agent.frozen and store.freezes.get("u1") is not None


def test_recover_only_reports_the_operators_own_freeze(store: Any, guarded: Any) -> None:
    guard, agent = guarded
    agent.frozen = True
    mark(store, FreezeKind.HELD, "mine1")
    notes = guard.recover(GuardGuest())
    assert "by `agent freeze` (operation mine1)" in notes[0]
    assert agent.frozen and agent.calls == []


def test_recover_forgets_a_freeze_the_guest_no_longer_has(store: Any, guarded: Any) -> None:
    guard, agent = guarded
    mark(store, FreezeKind.BOUNDED)
    assert guard.recover(GuardGuest(VMState.SHUTOFF)) == []  # stopped: nothing frozen
    assert store.freezes.get("u1") is None
    mark(store, FreezeKind.BOUNDED)
    assert guard.recover(GuardGuest(VMState.PAUSED)) == []  # cannot ask now: kept
    assert store.freezes.get("u1") is not None
    assert guard.recover(GuardGuest()) == []  # thawed meanwhile (a reboot): forgotten
    assert store.freezes.get("u1") is None and agent.calls == []


def test_freeze_table_keeps_every_field(store: Any) -> None:
    bounded = FreezeMark("u1", "h1", "web1", "op1", FreezeKind.BOUNDED,
                         datetime(2025, 1, 31, 14, 25, 2, tzinfo=UTC), 7.5)
    held = FreezeMark("u2", "h2", "web2", "op2", FreezeKind.HELD,
                      datetime(2025, 1, 31, 15, 0, 0, tzinfo=UTC))
    store.freezes.put(held)
    store.freezes.put(bounded)
    assert store.freezes.get("u1") == bounded and store.freezes.get("u2") == held
    assert store.freezes.list() == [bounded, held]  # the oldest freeze first
    assert held.as_dict() == {"uuid": "u2", "host": "h2", "vm": "web2", "op_id": "op2",
                              "kind": "held", "frozen_at": "2025-01-31T15:00:00+00:00",
                              "bound_s": None}


def test_freeze_table_rows(store: Any) -> None:
    mark(store, FreezeKind.HELD, "a")
    assert [m.op_id for m in store.freezes.list()] == ["a"]
    assert store.freezes.remove("u1", "other") is False  # only the freezer's own row
    assert store.freezes.remove("u1", "a") is True
    assert store.freezes.get("u1") is None and store.freezes.list() == []
