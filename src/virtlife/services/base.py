"""What every operation service shares: the per-call options, resolving the VM, and
opening its operation.

``Lifecycle``, ``GuestAgent``, ``Snapshots`` and ``Media`` are ``OperationService``s:
each resolves a VM (an unreachable host is journalled as the operation's failure, so
``history`` shows it) and runs each operation inside ``Operations.run`` with the call's
progress sink, operation id and queueing. Nothing here prints or imports libvirt.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TypedDict

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.services.fleet import Fleet, split_ref
from virtlife.services.operations import OperationRun, Operations
from virtlife.services.progress import ProgressSink
from virtlife.states import Operation


class Call(TypedDict, total=False):
    """What every operation takes besides its own arguments."""

    progress: ProgressSink | None  # this call's progress sink
    op_id: str | None  # the id to run under (``Jobs`` chooses it for background runs)
    queue_s: float | None  # wait up to this long for the VM to be free; None: refuse at once
    parent_id: str | None  # the operation this one is part of (an evacuation's move)


class OperationService:
    """A service whose operations run on the VMs of ``fleet`` through ``ops``."""

    def __init__(self, fleet: Fleet, ops: Operations) -> None:
        self.fleet = fleet
        self.ops = ops

    def _resolve(self, op: Operation, ref: str) -> Guest:
        """The VM ``ref``; an unreachable host is journalled as the operation's failure."""
        try:
            return self.fleet.resolve(ref)
        except errors.HostUnreachable as err:
            host, name = split_ref(ref)
            if host is None:  # a bare NAME fails this way only with one configured host
                host = next(iter(self.fleet.refs), "?")
            self.ops.record_failure(op, host, name, err)
            raise

    def _host(self, op: Operation, name: str, vm: str) -> Host:
        try:
            return self.fleet.host(name)
        except errors.HostUnreachable as err:
            self.ops.record_failure(op, name, vm, err)
            raise

    @staticmethod
    def _definition(guest: Guest, doing: str) -> str:
        """The VM's persistent XML (secrets included) for an operation that rewrites it;
        ``InvalidTransition`` for a transient VM (``doing``: "change the graphics")."""
        if not guest.is_persistent():
            raise errors.InvalidTransition(
                f"cannot {doing} of {guest.name}: it is a transient VM with no definition "
                "to change; define it first")
        return guest.xml(inactive=True, secure=True)

    def _operation(self, op: Operation, guest: Guest, timeout_s: float | None,
                   call: Call) -> AbstractContextManager[OperationRun]:
        return self._run_on(op, guest.host, guest.name, guest, timeout_s, call)

    def _run_on(self, op: Operation, host: Host, vm: str, guest: Guest | None,
                timeout_s: float | None, call: Call) -> AbstractContextManager[OperationRun]:
        """``Operations.run`` with this call's options (``guest`` None: not there yet)."""
        return self.ops.run(op, host, vm, guest, timeout_s=timeout_s,
                            progress=call.get("progress"), op_id=call.get("op_id"),
                            queue_s=call.get("queue_s"), parent_id=call.get("parent_id"))
