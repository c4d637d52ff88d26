"""Guest file-system freezes: bounded, always thawed, and thawed after a crash.

A quiesced snapshot freezes the guest's file systems through the agent, takes the
snapshot and thaws. ``bounded_freeze`` makes that safe for a long-running, many-host
program:

- the freeze is recorded in the store (``store.freezes``) *before* the agent is asked,
  so a process killed while the guest is frozen leaves a trace;
- it is thawed when the body ends, by error or Ctrl-C too: while it lasts it is known to
  its ``FreezesInFlight`` (the ``FreezeGuard``'s, one per ``Services``), whose
  ``thaw_all`` is what ``Services.interrupted`` (the CLI's interrupt hook) calls, since
  Ctrl-C ends the process before the body does; another ``Services`` in the process (a
  server beside a test, two tests) neither sees nor thaws it;
- a watchdog thaws it once ``bound_s`` has passed (default 10 s, the Windows VSS
  window), whatever the body is doing; the body then learns that the freeze broke;
- the bound holds from this side too: the freeze gets ``bound_s`` to answer and each
  thaw a few seconds (``THAW_DEADLINES_S``), each call abandoned at its deadline. A
  thaw that cannot be confirmed (a hung agent) ends the operation within the bound and
  5 s, saying the guest may still be frozen and what to do (``errors.AgentStillFrozen``);
- ``FreezeGuard.recover`` runs when the next virtlife command touches the VM: a
  bounded freeze whose operation is no longer running is checked with
  ``guest-fsfreeze-status`` and thawed, saying so.

``agent freeze`` is the operator's own, ``held`` freeze: it stays until ``agent thaw``
(as ``virsh domfsfreeze``), and other commands on the VM say that it is frozen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from virtlife import errors
from virtlife.hypervisor import Guest
from virtlife.hypervisor.agent import Agent
from virtlife.states import VMState
from virtlife.store.freezes import FreezeKind, FreezeMark, Freezes
from virtlife.store.journal import Journal

log = logging.getLogger(__name__)

DEFAULT_BOUND_S = 10.0
# The thaw's tries: the agent's answer timeout and the client's deadline of each, all
# of them with the pause between within 5 s. When none is confirmed the mark stays and
# the next command tries again.
THAW_DEADLINES_S: tuple[tuple[float, float], ...] = ((2.0, 2.5), (1.0, 1.5))
THAW_ATTEMPTS = len(THAW_DEADLINES_S)
THAW_PAUSE_S = 0.2
# The agent's answer timeout when a later command checks a freeze left behind.
RECOVER_ASK_S = 2.0


@dataclass
class ActiveFreeze:
    """A bounded freeze of this process, from freeze to thaw."""

    agent: Agent
    op_id: str
    uuid: str
    bound_s: float
    frozen: int = 0
    started: float = field(default_factory=time.monotonic)
    thawed_after_s: float | None = None
    by_watchdog: bool = False
    thaw_error: str = ""
    thaw_failure: errors.VirtlifeError | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def broken(self) -> bool:
        """True when the watchdog thawed the guest before the body ended."""
        return self.by_watchdog


class FreezesInFlight:
    """The bounded freezes of one ``Services``, by operation id, from freeze to thaw:
    what its Ctrl-C thaws (``thaw_all``), and what its ``FreezeGuard`` knows to be in
    flight. Each ``FreezeGuard`` has its own: nothing here is shared by the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, ActiveFreeze] = {}

    def add(self, freeze: ActiveFreeze) -> None:
        with self._lock:
            self._held[freeze.op_id] = freeze

    def discard(self, op_id: str) -> None:
        with self._lock:
            self._held.pop(op_id, None)

    def __contains__(self, op_id: object) -> bool:
        with self._lock:
            return op_id in self._held

    def thaw_all(self) -> int:
        """Thaw every freeze held here (Ctrl-C); how many were thawed."""
        with self._lock:
            held = list(self._held.values())
        for freeze in held:
            _thaw(freeze)
        return sum(1 for f in held if f.thawed_after_s is not None)


def _thaw(freeze: ActiveFreeze, *, watchdog: bool = False) -> None:
    """Thaw once (a second try: the agent may be briefly busy), each try bounded;
    idempotent, and not tried again once it failed (the caller says so)."""
    with freeze.lock:
        if freeze.thawed_after_s is not None or freeze.thaw_failure is not None:
            return
        last: errors.VirtlifeError | None = None
        for attempt, (answer_s, deadline_s) in enumerate(THAW_DEADLINES_S):
            if attempt:
                time.sleep(THAW_PAUSE_S)
            try:
                freeze.agent.thaw(timeout_s=answer_s, deadline_s=deadline_s)
            except (errors.AgentUnavailable, errors.AgentCommandFailed) as err:
                last = err
                continue
            except errors.InvalidTransition:
                pass  # the VM stopped: nothing is frozen any more
            freeze.thawed_after_s = time.monotonic() - freeze.started
            freeze.by_watchdog = watchdog
            return
        freeze.thaw_failure = last
        freeze.thaw_error = str(last)
        log.error("cannot thaw %s (operation %s): %s", freeze.agent.vm, freeze.op_id, last)


def still_frozen(vm: str, failure: errors.VirtlifeError | None) -> errors.AgentStillFrozen:
    """The error of a freeze whose thaw could not be confirmed: the guest may still be
    frozen, and what to do about it."""
    why = errors.reason_of(failure) if failure is not None else "no answer"
    return errors.AgentStillFrozen(
        f"the file systems of {vm} may still be frozen: the guest agent did not confirm "
        f"the thaw ({why}); writes in the guest wait until they are thawed. Run "
        f"`virtlife agent {vm} thaw` (the next virtlife command on {vm} also tries); if "
        "its agent stays hung, restart qemu-guest-agent in the guest from its console "
        f"(`virtlife console {vm}`), or reset the VM")


@contextmanager
def bounded_freeze(agent: Agent, freezes: Freezes | None, *, in_flight: FreezesInFlight,
                   op_id: str, uuid: str, host: str, bound_s: float = DEFAULT_BOUND_S,
                   mountpoints: list[str] | None = None,
                   warn: Callable[[str], None] | None = None) -> Iterator[ActiveFreeze]:
    """Freeze the guest's file systems for the body, never longer than ``bound_s``;
    known to ``in_flight`` (what Ctrl-C thaws) until thawed."""
    if bound_s <= 0:
        raise errors.InvalidInput(f"a freeze bound must be positive, not {bound_s:g} s")
    if agent.freeze_status() == "frozen":
        raise errors.InvalidTransition(
            f"cannot freeze the file systems of {agent.vm}: they are already frozen; "
            f"thaw them first (`virtlife agent {agent.vm} thaw`)")
    mark = FreezeMark(uuid, host, agent.vm, op_id, FreezeKind.BOUNDED, datetime.now(UTC),
                      bound_s)
    marked = _put(freezes, mark, warn)
    freeze = ActiveFreeze(agent, op_id, uuid, bound_s)
    in_flight.add(freeze)
    timer: threading.Timer | None = None
    failed: BaseException | None = None
    try:
        # the guest starts freezing now: the bound counts from here, freeze included
        freeze.started = time.monotonic()
        timer = threading.Timer(bound_s, _thaw, (freeze,), {"watchdog": True})
        timer.daemon = True
        timer.start()
        freeze.frozen = agent.freeze(mountpoints, timeout_s=bound_s, deadline_s=bound_s)
        yield freeze
    except BaseException as err:
        failed = err
        raise
    finally:
        if timer is not None:
            timer.cancel()
        _thaw(freeze)
        in_flight.discard(op_id)
        if marked and freeze.thaw_failure is None:
            _remove(freezes, uuid, op_id, warn)
        if freeze.thaw_failure is not None and isinstance(failed, Exception | None):
            raise still_frozen(agent.vm, freeze.thaw_failure) from failed


def _put(freezes: Freezes | None, mark: FreezeMark,
         warn: Callable[[str], None] | None) -> bool:
    if freezes is None:
        return False
    try:
        freezes.put(mark)
        return True
    except errors.StoreUnavailable as err:
        if warn:
            warn(f"the freeze could not be recorded ({err}); if this process dies while "
                 "the guest is frozen, no later command will know to thaw it")
        return False


def _remove(freezes: Freezes | None, uuid: str, op_id: str | None,
            warn: Callable[[str], None] | None) -> None:
    if freezes is None:
        return
    try:
        freezes.remove(uuid, op_id)
    except errors.StoreUnavailable as err:
        if warn:
            warn(f"the end of the freeze could not be recorded: {err}")


class FreezeGuard:
    """Finds freezes that outlived their operation, and thaws them (see module doc);
    ``in_flight`` holds the bounded freezes of its own ``Services`` under way."""

    def __init__(self, journal: Journal | None, freezes: Freezes | None) -> None:
        self.journal = journal
        self.freezes = freezes
        self.in_flight = FreezesInFlight()

    def mark(self, guest: Guest) -> FreezeMark | None:
        if self.freezes is None:
            return None
        try:
            return self.freezes.get(guest.uuid())
        except errors.StoreUnavailable:
            return None

    def hold(self, guest: Guest, op_id: str) -> None:
        """Record the operator's own freeze (``agent freeze``)."""
        if self.freezes is not None:
            self.freezes.put(FreezeMark(guest.uuid(), guest.host.name, guest.name, op_id,
                                        FreezeKind.HELD, datetime.now(UTC)))

    def release(self, guest: Guest) -> None:
        """Forget the VM's freeze (it was thawed)."""
        _remove(self.freezes, guest.uuid(), None, None)

    def _in_flight(self, mark: FreezeMark) -> bool:
        if mark.op_id in self.in_flight:
            return True
        if self.journal is None:
            return False
        try:
            self.journal.sweep()  # rows of dead processes become interrupted
            entry = self.journal.get(mark.op_id)
        except errors.StoreUnavailable:
            return True  # cannot tell: leave it alone
        return entry is not None and entry.running

    def recover(self, guest: Guest) -> list[str]:
        """What the next command touching ``guest`` says (and does) about a freeze."""
        mark = self.mark(guest)
        if mark is None:
            return []
        state = guest.status().state
        if not state.is_active:
            self.release(guest)  # the guest stopped since: nothing is frozen any more
            return []
        if state not in (VMState.RUNNING, VMState.IDLE):
            return []  # paused or suspended: its agent cannot answer; ask next time
        if mark.kind is FreezeKind.BOUNDED and self._in_flight(mark):
            return []
        agent = Agent(guest)
        try:  # briefly: a hung agent must not make every later command slow
            status = agent.freeze_status(timeout_s=RECOVER_ASK_S)
        except errors.VirtlifeError as err:
            return [f"{guest.name} may still have frozen file systems (operation "
                    f"{mark.op_id}); cannot ask its agent: {err}"]
        if status != "frozen":
            self.release(guest)
            return []
        since = mark.frozen_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        if mark.kind is FreezeKind.HELD:
            return [f"the file systems of {guest.name} are frozen since {since} by "
                    f"`agent freeze` (operation {mark.op_id}); writes in the guest wait "
                    f"until `virtlife agent {guest.name} thaw`"]
        try:
            agent.thaw(timeout_s=RECOVER_ASK_S)
        except errors.VirtlifeError as err:
            return [f"the file systems of {guest.name} are still frozen by operation "
                    f"{mark.op_id} (since {since}), and thawing failed: {err}"]
        self.release(guest)
        return [f"thawed the file systems of {guest.name}: operation {mark.op_id} froze "
                f"them at {since} and ended without thawing them"]
