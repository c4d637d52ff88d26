"""The GuestAgent service on libvirt's test driver: what it refuses before any agent is
asked, its operations' journal rows, and ``agent enable`` on a real definition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.services.agent import GuestAgent
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.freeze import FreezeGuard
from virtlife.services.operations import Operations
from virtlife.store import Store, open_store


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


def test_enable_adds_the_channel_to_the_definition_once(agent: GuestAgent,
                                                        store: Store) -> None:
    from virtlife.xml.channels import has_agent_channel

    guest = agent.fleet.resolve("vm-off")
    assert not has_agent_channel(guest.xml(inactive=True))
    result = agent.enable("vm-off")
    assert result.note == ("guest-agent channel added; the guest needs qemu-guest-agent "
                           "installed and running")
    assert has_agent_channel(agent.fleet.resolve("vm-off").xml(inactive=True))
    with pytest.raises(errors.AlreadyExists, match="already has the guest-agent channel"):
        agent.enable("vm-off")
    running = agent.enable("vm-running")
    assert "it applies at the next boot" in running.note
    rows = store.journal.list(limit=3)
    assert [(r.operation, r.outcome) for r in rows] == [
        ("agent-enable", "ok"), ("agent-enable", "refused"), ("agent-enable", "ok")]
    assert "it applies at the next boot" in rows[0].detail  # the note is journalled


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
