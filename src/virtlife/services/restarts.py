"""What a wait makes of a libvirtd restart in its middle: pure decisions and their words.

An operation's wait that loses its connection (``errors.ConnectionLost``) reconnects
within the operation's time and reads the VM again by its UUID (``services.wait``).
This module decides, from that state alone, whether the wait is over, goes on, or has
failed, and says what happened in the operator's words. It does no I/O, holds no
state and never talks to libvirt: the cases are unit-tested without a host.
"""

from __future__ import annotations

from enum import Enum

from virtlife import errors
from virtlife.states import StateInfo, VMState

# States a VM does not leave by itself: once libvirtd is back with the VM in one of
# these, and it is not the one wanted, no amount of waiting brings the wanted one.
SETTLED = frozenset({VMState.UNDEFINED, VMState.SHUTOFF, VMState.SAVED, VMState.CRASHED})


class AfterRestart(Enum):
    """What a wait does once it has reconnected and read the VM's state again."""

    DONE = "done"  # the wanted state was reached anyway: the operation succeeds
    WAIT = "wait"  # the VM may still get there: wait on, within the same deadline
    FAILED = "failed"  # the VM is where it stays: fail now, saying where it is


def after_restart(state: StateInfo, *, accepted: bool) -> AfterRestart:
    """The decision for a VM read again after a reconnect: ``accepted`` says whether the
    wait takes ``state`` (a wait for the guest agent never does: it pings again)."""
    if accepted:
        return AfterRestart.DONE
    if state.state in SETTLED:
        return AfterRestart.FAILED
    return AfterRestart.WAIT


def restart_note(host: str, during: str, state: StateInfo) -> str:
    """``libvirtd on hv1 restarted during start; the guest is now running (booted)``"""
    now = "gone (undefined)" if state.state is VMState.UNDEFINED else str(state)
    return f"libvirtd on {host} restarted during {during}; the guest is now {now}"


def restart_failure(host: str, during: str, vm: str, state: StateInfo,
                    wanted: str) -> errors.HostRestarted:
    """The error for a wait that cannot succeed after the restart (``FAILED``):
    ``web1: libvirtd on hv1 restarted during start; the guest is now shut off
    (crashed), so it will not be running by itself; ...``"""
    return errors.HostRestarted(
        f"{vm}: {restart_note(host, during, state)}, so it will not be {wanted} by "
        f"itself; `virtlife history {vm}` shows what was done to it")


def not_back(host: str, during: str, vm: str, why: str) -> errors.HostUnreachable:
    """The error for a connection that did not come back within the operation's time."""
    return errors.HostUnreachable(
        f"{vm}: the connection to libvirtd on {host} was lost during {during}, and it "
        f"did not answer again within the operation's time ({why}); once it does, "
        f"`virtlife state {vm}` shows where the VM stands")
