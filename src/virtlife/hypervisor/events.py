"""Domain events as plain values: what a libvirt event callback hands to listeners.

``DomainEvent`` carries an ``EventKind`` and names, not libvirt integers; the tables
here turn libvirt's event ids, event and detail numbers, agent states and connection
close reasons (stable ABI values, checked against the binding in a unit test) into
the words ``virsh event`` uses. This module does no I/O and must not import libvirt;
``dispatch.Dispatcher`` registers the callbacks, builds the events and delivers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum


class EventKind(Enum):
    """What an event is about. A plain ``Enum``: a kind never equals a bare string."""

    LIFECYCLE = "lifecycle"  # the domain was defined, started, paused, stopped...
    AGENT = "agent"  # the guest agent connected or disconnected
    REBOOT = "reboot"  # the guest reset itself (or was reset)
    PM = "pm"  # guest power management: suspend to RAM/disk, wakeup
    HOST = "host"  # the connection to the host: connected, disconnected, unreachable


# The domain event ids virtlife subscribes to: (name of VIR_DOMAIN_EVENT_ID_<name>,
# its value in libvirt-domain.h, the kind of the events it gives).
DOMAIN_EVENT_IDS: tuple[tuple[str, int, EventKind], ...] = (
    ("LIFECYCLE", 0, EventKind.LIFECYCLE),
    ("REBOOT", 1, EventKind.REBOOT),
    ("PMWAKEUP", 11, EventKind.PM),
    ("PMSUSPEND", 12, EventKind.PM),
    ("AGENT_LIFECYCLE", 18, EventKind.AGENT),
)

# virDomainEventType and the detail enums, by position (libvirt-domain.h).
LIFECYCLE_EVENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("defined", ("added", "updated", "renamed", "from snapshot")),
    ("undefined", ("removed", "renamed")),
    ("started", ("booted", "migrated", "restored", "from snapshot", "wakeup")),
    ("suspended", (
        "paused", "migrated", "I/O error", "watchdog", "restored", "from snapshot",
        "api error", "post-copy", "post-copy failed",
    )),
    ("resumed", ("unpaused", "migrated", "from snapshot", "post-copy", "post-copy failed")),
    ("stopped", (
        "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot",
    )),
    ("shutdown", ("finished", "guest", "host")),
    ("pmsuspended", ("memory", "disk")),
    ("crashed", ("panicked", "crashloaded")),
)

# VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_* and _REASON_*.
AGENT_STATES = {1: "connected", 2: "disconnected"}
AGENT_REASONS = {0: "unknown", 1: "domain started", 2: "channel event"}

# VIR_CONNECT_CLOSE_REASON_*: why libvirt closed a connection under us.
CLOSE_REASONS = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}


def lifecycle_names(event: int, detail: int) -> tuple[str, str]:
    if 0 <= event < len(LIFECYCLE_EVENTS):
        name, details = LIFECYCLE_EVENTS[event]
        return name, details[detail] if 0 <= detail < len(details) else str(detail)
    return f"event {event}", str(detail)


@dataclass(frozen=True)
class DomainEvent:
    """One event from one host; ``vm`` and ``uuid`` are empty for ``EventKind.HOST``
    events. The UUID is what the VM is; its name and host may change (a migration,
    a rename) or be reused."""

    host: str
    vm: str
    kind: EventKind
    event: str
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    uuid: str = ""

    def __str__(self) -> str:
        text = f"{self.host}/{self.vm}: {self.kind.value} {self.event}"
        return f"{text} ({self.detail})" if self.detail else text

    def as_dict(self) -> dict[str, str]:
        return {
            "time": self.at.isoformat(),
            "host": self.host,
            "vm": self.vm,
            "uuid": self.uuid,
            "kind": self.kind.value,
            "event": self.event,
            "detail": self.detail,
        }


Listener = Callable[[DomainEvent], None]
