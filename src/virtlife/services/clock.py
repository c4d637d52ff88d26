"""The guest's clock: read it against ours, and set it right after the guest lost time.

A guest that was paused, saved, suspended to RAM (or, later, migrated) wakes with its
system clock where it stopped: minutes behind. ``sync_clock`` sets it through the
guest agent and measures the offset before and after:

- on a host that is this machine, from this machine's clock (``guest-set-time`` with
  the time, to the millisecond);
- on another host, with libvirt's sync (the guest reads its RTC, which QEMU keeps on
  that host's clock), since this machine's clock is not that host's.

Offsets are always measured against this machine's clock, as the midpoint of the
agent's round trip, and the result says which way was used. Nothing here waits long:
an agent that does not answer within a few seconds means "not synced", with the
reason, never a failed operation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from virtlife import errors
from virtlife.hypervisor.agent import Agent
from virtlife.hypervisor.host import is_remote
from virtlife.states import StateInfo, VMState

if TYPE_CHECKING:
    from virtlife.hypervisor import Guest
    from virtlife.services.operations import OperationRun

AGENT_READY_S = 10.0  # how long a woken guest's agent may take to answer again
FROM_THIS_MACHINE = "set from this machine's clock"
FROM_RTC = "synced from the guest's RTC (libvirt)"


@dataclass(frozen=True)
class GuestClockReading:
    guest: float  # the guest's clock, seconds since the epoch
    here: float  # this machine's clock at the same moment (midpoint of the round trip)
    round_trip_s: float

    @property
    def offset_s(self) -> float:
        """How far the guest is ahead (positive) or behind (negative)."""
        return self.guest - self.here

    def as_dict(self) -> dict[str, float]:
        return {"guest": round(self.guest, 6), "here": round(self.here, 6),
                "offset_s": round(self.offset_s, 6), "round_trip_s": round(self.round_trip_s, 6)}


@dataclass(frozen=True)
class ClockSync:
    """What a sync did: the offsets before and after, and how; or why it did not run."""

    before_s: float | None
    after_s: float | None
    how: str = ""
    skipped: str = ""

    def __str__(self) -> str:
        if self.skipped:
            return f"guest clock not synced: {self.skipped}"
        return (f"guest clock {describe_offset(self.before_s)}, now "
                f"{describe_offset(self.after_s)} ({self.how})")

    def as_dict(self) -> dict[str, object]:
        return {"before_s": _rounded(self.before_s), "after_s": _rounded(self.after_s),
                "how": self.how, "skipped": self.skipped or None}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def describe_offset(offset: float | None) -> str:
    if offset is None:
        return "offset unknown"
    if abs(offset) < 0.0005:
        return "in step"
    way = "ahead" if offset > 0 else "behind"
    return f"{abs(offset):.3f} s {way}"


def read_clock(agent: Agent) -> GuestClockReading:
    t0 = time.time()
    guest = agent.time()
    t1 = time.time()
    return GuestClockReading(guest, (t0 + t1) / 2, t1 - t0)


def set_clock(agent: Agent, when: float | None) -> None:
    """Set the guest clock to ``when`` (None: from its RTC)."""
    agent.set_time(when)


def sync_now(agent: Agent, before: GuestClockReading | None = None) -> ClockSync:
    """Set the guest's clock right now; the agent's errors are raised, typed."""
    local = not is_remote(agent.guest.host.uri)
    before = before or read_clock(agent)
    set_clock(agent, time.time() if local else None)
    after = read_clock(agent)
    return ClockSync(before.offset_s, after.offset_s, FROM_THIS_MACHINE if local else FROM_RTC)


def sync_clock(agent: Agent, *, wait_s: float = AGENT_READY_S) -> ClockSync:
    """Set the guest's clock right after it woke (see the module doc), waiting up to
    ``wait_s`` for its agent; never raises for the agent: the result says why not."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            before = read_clock(agent)
            break
        except (errors.AgentNotConnected, errors.AgentTimeout) as err:
            if time.monotonic() >= deadline:  # a just-woken agent reconnects in a moment
                return ClockSync(None, None, skipped=f"the agent did not answer ({err})")
            time.sleep(0.25)
        except errors.VirtlifeError as err:
            return ClockSync(None, None, skipped=str(err))
    try:
        return sync_now(agent, before)
    except errors.VirtlifeError as err:
        return ClockSync(before.offset_s, None, skipped=str(err))


def sync_after(run: OperationRun, guest: Guest, state: StateInfo) -> ClockSync | None:
    """The clock sync that ends an operation after which the guest lost time (resume,
    restore, wakeup, a snapshot revert): only for a guest whose vCPUs run (a paused one
    is set when it is resumed); its offsets go into the operation's note."""
    if state.state not in (VMState.RUNNING, VMState.IDLE):
        return None
    run.report("clock", f"syncing the clock of {guest.name}")
    outcome = sync_clock(Agent(guest))
    run.add_note(str(outcome))
    return outcome


def parse_time(text: str) -> float:
    """An ISO 8601 time with its zone (``2026-11-26T10:00:00Z``) as seconds since the
    epoch; ``InvalidInput`` saying what is wrong (the REST API's ``agent/time`` ``set``)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise errors.InvalidInput(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-11-26T10:00:00Z") from None
    if moment.tzinfo is None:
        raise errors.InvalidInput(f"{text!r} has no time zone: add Z or +HH:MM")
    return moment.timestamp()
