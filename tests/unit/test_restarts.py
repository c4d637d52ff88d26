"""A libvirtd restart in the middle of an operation (issue 15, M), the pure parts: which
libvirt errors mean "the connection broke under the call", and what a wait decides and
says once it has reconnected and read the VM again (tests/integration/test_restart_real.py
restarts a real libvirtd)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from virtlife import errors
from virtlife.hypervisor.libvirt_api import connection_lost, libvirt, translate
from virtlife.services.restarts import (
    AfterRestart,
    after_restart,
    not_back,
    restart_failure,
    restart_note,
)
from virtlife.states import Operation, StateInfo, VMState

SYSTEM, INTERNAL = libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR
RPC, QEMU = libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_QEMU


def libvirt_error(code: int, domain: int, int1: int, message: str) -> Any:
    """A libvirtError as the binding builds it from virGetLastError."""
    err = libvirt.libvirtError(message)
    err.err = (code, domain, message, 2, None, None, None, int1, 0)
    return err


# What libvirt 9.0 says when the libvirtd of an open connection goes away (seen on a
# private host): a call in flight, the first call after, and every call after that.
LOST = [
    (SYSTEM, RPC, errno.EIO, "End of file while reading data: Input/output error"),
    (SYSTEM, RPC, errno.EPIPE, "Cannot write data: Broken pipe"),
    (SYSTEM, RPC, errno.ECONNRESET, "Cannot recv data: Connection reset by peer"),
    (INTERNAL, RPC, -1, "internal error: client socket is closed"),
    (INTERNAL, RPC, -1, "internal error: connection closed due to keepalive timeout"),
]
# ... and what it says when there is no libvirtd to connect to at all.
UNREACHABLE = [
    (SYSTEM, RPC, errno.ENOENT,
     "Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory"),
    (SYSTEM, RPC, errno.ECONNREFUSED,
     "unable to connect to server at 'hv2:16509': Connection refused"),
]


@pytest.mark.parametrize(("code", "domain", "int1", "message"), LOST)
def test_a_connection_broken_under_a_call_becomes_connection_lost(
        code: int, domain: int, int1: int, message: str) -> None:
    assert connection_lost(code, domain, int1, message)
    err = translate(libvirt_error(code, domain, int1, message), "read the state of web1 on hv1")
    assert type(err) is errors.ConnectionLost
    assert err.exit_code == 4  # still "host unreachable" where nothing reconnects
    assert str(err).startswith("cannot read the state of web1 on hv1: the connection to "
                               "the host was lost (")
    assert "libvirtd stopped or restarted" in str(err)


@pytest.mark.parametrize(("code", "domain", "int1", "message"), UNREACHABLE)
def test_a_host_without_libvirtd_is_unreachable_not_a_lost_connection(
        code: int, domain: int, int1: int, message: str) -> None:
    assert not connection_lost(code, domain, int1, message)
    err = translate(libvirt_error(code, domain, int1, message), "list VMs on hv2")
    assert type(err) is errors.HostUnreachable


def test_the_same_words_from_qemu_are_not_a_lost_connection() -> None:
    """Only libvirt's RPC layer speaks for the connection: QEMU's own monitor errors
    (a guest's broken socket) are the operation's failure."""
    assert not connection_lost(INTERNAL, QEMU, -1, "internal error: client socket is closed")
    assert not connection_lost(SYSTEM, QEMU, errno.EPIPE, "Cannot write data: Broken pipe")


RUNNING = StateInfo(VMState.RUNNING, "booted")
PAUSED = StateInfo(VMState.PAUSED, "user")
IN_SHUTDOWN = StateInfo(VMState.SHUTDOWN, "user")
CRASHED_OFF = StateInfo(VMState.SHUTOFF, "crashed")
SAVED = StateInfo(VMState.SAVED, "saved to file")
PANICKED = StateInfo(VMState.CRASHED, "panicked")
GONE = StateInfo(VMState.UNDEFINED, "")


@pytest.mark.parametrize(("state", "accepted", "decision"), [
    (RUNNING, True, AfterRestart.DONE),  # start: running anyway
    (CRASHED_OFF, True, AfterRestart.DONE),  # shutdown: off anyway, however it got there
    (CRASHED_OFF, False, AfterRestart.FAILED),  # start: the guest died with it
    (SAVED, False, AfterRestart.FAILED),
    (PANICKED, False, AfterRestart.FAILED),  # a preserved crash does not end by itself
    (GONE, False, AfterRestart.FAILED),  # undefined while libvirtd was away
    (RUNNING, False, AfterRestart.WAIT),  # shutdown: it may still power off
    (IN_SHUTDOWN, False, AfterRestart.WAIT),
    (PAUSED, False, AfterRestart.WAIT),  # a wait for the agent: it may be resumed
])
def test_after_a_reconnect_the_wait_ends_goes_on_or_fails_by_the_state_alone(
        state: StateInfo, accepted: bool, decision: AfterRestart) -> None:
    assert after_restart(state, accepted=accepted) is decision


def test_the_note_says_which_host_restarted_during_what_and_where_the_guest_is() -> None:
    assert restart_note("hv1", "start", RUNNING) == (
        "libvirtd on hv1 restarted during start; the guest is now running (booted)")
    assert restart_note("hv1", "shutdown", GONE).endswith("the guest is now gone (undefined)")


def test_a_vm_that_will_not_get_there_is_a_host_restarted_failure_exit_1() -> None:
    err = restart_failure("hv1", "start", "web1", CRASHED_OFF,
                          "running with its guest agent answering")
    assert isinstance(err, errors.OperationFailed) and err.exit_code == 1
    assert str(err).startswith(
        "web1: libvirtd on hv1 restarted during start; the guest is now shut off "
        "(crashed), so it will not be running with its guest agent answering by itself")
    assert "virtlife history web1" in str(err)


def test_a_libvirtd_that_does_not_come_back_in_time_is_host_unreachable_exit_4() -> None:
    err = not_back("hv1", "start", "web1", "no such file")
    assert type(err) is errors.HostUnreachable and err.exit_code == 4
    assert "lost during start" in str(err) and "(no such file)" in str(err)
    assert "virtlife state web1" in str(err)


# -- on the test driver: an operation whose connection is lost, played by a Guest call --

def _lost(what: str) -> errors.ConnectionLost:
    return errors.ConnectionLost(f"cannot {what}: the connection to the host was lost "
                                 "(End of file while reading data)")


def test_a_wait_that_loses_its_connection_reads_the_vm_again_and_waits_on(
        lifecycle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.hypervisor.guest import Guest

    guest = lifecycle.fleet.resolve("vm-running")
    real = Guest.status
    reads: list[str] = []

    def status(self: Guest) -> StateInfo:
        reads.append(self.name)
        if len(reads) == 1:
            raise _lost("read the state of vm-running on t")
        if len(reads) == 2:
            return RUNNING  # read after the reconnect: not there yet
        return real(self)

    with lifecycle.ops.run(Operation.SUSPEND, guest.host, guest.name, guest) as run:
        guest.suspend()
        monkeypatch.setattr(Guest, "status", status)
        state = run.wait(lambda s: s.state is VMState.PAUSED, "paused")
        monkeypatch.undo()
    assert str(state) == "paused (user)"
    assert len(reads) == 3  # lost, read again after the reconnect, then paused
    assert run.result is not None
    # read running after the reconnect, the wait ended paused: the note says where the
    # guest is now, not where the reconnect found it on its way
    assert run.result.note == ("libvirtd on t restarted during suspend; the guest is now "
                               "paused (user)")


def test_a_call_that_loses_its_connection_says_where_the_vm_is_now(
        lifecycle: Any) -> None:
    guest = lifecycle.fleet.resolve("vm-running")
    with pytest.raises(errors.HostRestarted) as info:
        with lifecycle.ops.run(Operation.SUSPEND, guest.host, guest.name, guest):
            raise _lost("suspend vm-running on t")  # before libvirt did it
    assert str(info.value).startswith(
        "vm-running: libvirtd on t restarted during suspend; the guest is now running")
    assert "so it will not be paused by itself" in str(info.value)
    with pytest.raises(errors.HostRestarted) as info:
        with lifecycle.ops.run(Operation.SUSPEND, guest.host, guest.name, guest):
            guest.suspend()
            raise _lost("suspend vm-running on t")  # after: its answer was lost
    assert str(info.value).startswith(
        "vm-running: libvirtd on t restarted during suspend; the guest is now paused "
        "(user); libvirt's answer to the suspend was lost with the connection")
    [last, *_] = lifecycle.journal.list(vm="vm-running")
    assert (last.operation, last.outcome) == ("suspend", "error")
    assert "restarted during suspend" in last.detail


def test_a_wait_that_times_out_after_a_reconnect_says_libvirtd_restarted(
        lifecycle: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from virtlife.hypervisor.guest import Guest

    guest = lifecycle.fleet.resolve("vm-running")
    reads: list[int] = []

    def status(self: Guest) -> StateInfo:
        reads.append(1)
        if len(reads) == 1:
            raise _lost("read the state of vm-running on t")
        return RUNNING  # never paused

    with pytest.raises(errors.OperationTimeout) as info:
        with lifecycle.ops.run(Operation.SUSPEND, guest.host, guest.name, guest,
                               timeout_s=0.2) as run:
            monkeypatch.setattr(Guest, "status", status)
            run.wait(lambda s: s.state is VMState.PAUSED, "paused")
    monkeypatch.undo()
    assert str(info.value) == (
        "vm-running did not reach paused within 0.2 s: it is running (booted) (libvirtd "
        "on t restarted during suspend; the guest is now running (booted))")
