"""Waiting for a VM to reach a state, or for its guest agent, driven by libvirt events.

A ``Watch`` is opened *before* an operation is issued and collects the VM's events
from that moment, so no event can slip between the call and the wait. Watches cost no
thread and no libvirt call: each ``Host`` gets one ``_Router``, tapped into the Host
once for its whole life (across reconnects), which files every event under the VM it
names, on the publishing thread, as a plain append (the Watch's list is its queue; the
waiting thread reads it). Each event for the VM wakes the waiter, which then reads the
state once; a slow safety re-read (every few seconds) covers a lost event. A wait
whose connection is lost (libvirtd restarted: ``errors.ConnectionLost``) reconnects
within its deadline, looks the VM up again by its UUID and reads its state; what that
means (done, wait on, failed) is decided in ``services.restarts``, and the watch keeps
what it found for the operation's result. Nothing here decides policy or prints.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from virtlife import errors
from virtlife.hypervisor import DomainEvent, Guest, Host
from virtlife.hypervisor.agent import Agent
from virtlife.hypervisor.events import EventKind
from virtlife.services.restarts import (
    AfterRestart,
    after_restart,
    not_back,
    restart_failure,
    restart_note,
)
from virtlife.states import UNDEFINED, StateInfo, VMState

SAFETY_RECHECK_S = 2.0
T = TypeVar("T")


class _Router:
    """One Host's events, filed under the open watches of the VM each names.

    Tapped into the Host once; ``route`` runs on the thread that publishes the event and
    only appends (a host event, such as ``disconnected``, goes to every watch).
    """

    def __init__(self, host: Host) -> None:
        self._lock = threading.Lock()
        self._watches: dict[str, tuple[Watch, ...]] = {}
        host.add_tap(self.route)

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches[watch.vm] = (*self._watches.get(watch.vm, ()), watch)

    def remove(self, watch: Watch) -> None:
        with self._lock:
            left = tuple(w for w in self._watches.get(watch.vm, ()) if w is not watch)
            if left:
                self._watches[watch.vm] = left
            else:
                self._watches.pop(watch.vm, None)

    @property
    def watching(self) -> int:
        with self._lock:
            return sum(len(ws) for ws in self._watches.values())

    def route(self, event: DomainEvent) -> None:
        with self._lock:
            if event.kind is EventKind.HOST:
                targets = tuple(w for ws in self._watches.values() for w in ws)
            else:
                targets = self._watches.get(event.vm, ())
        for watch in targets:
            watch.offer(event)


# Each Host's router, kept for that Host object's life. Not process-wide state in
# effect: the key is the Host object, which belongs to one ``Fleet`` (so to one
# ``Services``); two Services have two Host objects for the same URI, hence two routers
# that never see each other's watches, and an entry goes with its Host. The Host would
# be its natural owner, but ``hypervisor`` must not hold a services object.
_routers_lock = threading.Lock()
_routers: weakref.WeakKeyDictionary[Host, _Router] = weakref.WeakKeyDictionary()


def router_of(host: Host) -> _Router:
    """The Host's one router (tapped in on first use, kept for the Host's life)."""
    with _routers_lock:
        router = _routers.get(host)
        if router is None:
            router = _routers[host] = _Router(host)
        return router


class Watch:
    """Events for one VM on one host, collected from the moment of creation."""

    def __init__(self, host: Host, vm: str, *, during: str = "the wait") -> None:
        self.host = host
        self.vm = vm
        self.during = during  # what runs, for what a reconnect says: "start"
        self.events: list[DomainEvent] = []
        self.restarts: list[str] = []  # what each reconnect found, in the operator's words
        self._cond = threading.Condition()
        self._router = router_of(host)
        self._router.add(self)

    def offer(self, event: DomainEvent) -> None:
        """Collect ``event`` (called on the publishing thread: only appends and wakes)."""
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def close(self) -> None:
        self._router.remove(self)

    def latest(self) -> DomainEvent | None:
        """The newest lifecycle or host event collected so far (agent, reboot and power
        management events aside); None before any."""
        with self._cond:
            for event in reversed(self.events):
                if event.kind in (EventKind.LIFECYCLE, EventKind.HOST):
                    return event
        return None

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _wait_for_event(self, seen: int, timeout_s: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: len(self.events) > seen, timeout=timeout_s)
            return len(self.events)

    def until_event(self, match: Callable[[DomainEvent], bool], timeout_s: float, *,
                    describe: str) -> DomainEvent:
        """Return the first collected event ``match`` takes; ``OperationTimeout`` otherwise."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for event in self.events:
                    if match(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.OperationTimeout(
                        f"{self.vm}: no {describe} within {timeout_s:g} s")
                self._cond.wait(remaining)

    def _until(self, probe: Callable[[], T | None], timeout_s: float,
               timed_out: Callable[[], errors.VirtlifeError],
               on_lost: Callable[[float], T | None]) -> T:
        """Run ``probe`` now and again after each event (or safety re-check) until it
        returns a value; raise ``timed_out()`` once ``timeout_s`` has passed. When the
        probe loses the connection, ``on_lost(deadline)`` reconnects and says instead."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while True:
            try:
                found = probe()
            except errors.ConnectionLost:
                found = on_lost(deadline)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timed_out()
            seen = self._wait_for_event(seen, min(remaining, SAFETY_RECHECK_S))

    def until_state(self, guest: Guest, accept: Callable[[StateInfo], bool],
                    timeout_s: float, *, describe: str) -> StateInfo:
        """Return the first state ``accept`` takes; ``OperationTimeout`` past the deadline."""
        last: list[StateInfo] = []

        def probe() -> StateInfo | None:
            last[:] = [guest.status()]
            if not accept(last[0]):
                return None
            if self.restarts:  # a reconnect read it earlier on its way: say where it got
                self.restarts[-1] = restart_note(self.host.name, self.during, last[0])
            return last[0]

        def on_lost(deadline: float) -> StateInfo | None:
            state = self.reconnect(guest, deadline)
            last[:] = [state]
            return self._decide(state, accept(state), describe)

        return self._until(probe, timeout_s, lambda: errors.OperationTimeout(
            f"{self.vm} did not reach {describe} within {timeout_s:g} s: it is {last[0]}"),
            on_lost)

    def reconnect(self, guest: Guest, deadline: float) -> StateInfo:
        """After a lost connection: connect to the host again before ``deadline`` (each
        failed try waits for the next host event, or until the host may be tried again),
        look the VM up again by its UUID and return its state, noted in ``restarts``.
        ``HostUnreachable`` when the host did not answer again in time."""
        while True:
            with self._cond:
                seen = len(self.events)
            try:
                self.host.connect()
                guest.reattach()
                state = guest.status()
            except errors.VMNotFound:
                state = UNDEFINED  # undefined while libvirtd was away
            except errors.HostUnreachable as err:  # still down, or lost again
                left = deadline - time.monotonic()
                if left <= 0:
                    raise not_back(self.host.name, self.during, self.vm,
                                   errors.reason_of(err)) from err
                self._wait_for_event(seen, min(left, self.host.retry_after_s))
                continue
            self.restarts.append(restart_note(self.host.name, self.during, state))
            return state

    def _decide(self, state: StateInfo, accepted: bool, wanted: str) -> StateInfo | None:
        """``state`` once the wait is over after a reconnect; None to wait on; raises
        ``HostRestarted`` when the VM will not get there by itself."""
        decision = after_restart(state, accepted=accepted)
        if decision is AfterRestart.FAILED:
            raise restart_failure(self.host.name, self.during, self.vm, state, wanted)
        return state if decision is AfterRestart.DONE else None

    def until_agent(self, guest: Guest, timeout_s: float) -> float:
        """Wait until the guest agent answers ``guest-ping``; return seconds waited.

        The agent-connected event is the signal; a ping confirms it (an agent that
        connected before the watch began is found by the first ping).
        """
        start = time.monotonic()
        last: list[str] = [""]

        def probe() -> float | None:
            try:
                Agent(guest).ping(timeout_s=2)
                return time.monotonic() - start
            except errors.AgentNotConfigured:
                raise  # no channel: no agent will ever answer
            except (errors.AgentUnavailable, errors.AgentCommandFailed,
                    errors.InvalidTransition) as err:  # not connected yet, or not running
                last[0] = str(err)
            state = guest.status()
            if state.state not in (VMState.RUNNING, VMState.IDLE):  # its vCPUs do not run
                raise errors.AgentUnavailable(
                    f"the agent of {self.vm} cannot answer: the VM is {state}")
            return None

        def on_lost(deadline: float) -> float | None:
            self._decide(self.reconnect(guest, deadline), False,
                         "running with its guest agent answering")
            return None  # running again (or on its way): ping on

        return self._until(probe, timeout_s, lambda: errors.OperationTimeout(
            f"the guest agent of {self.vm} did not answer within {timeout_s:g} s ({last[0]})"),
            on_lost)
