"""Domain events as plain values: what a libvirt event callback hands to listeners.

``DomainEvent`` carries names, not libvirt integers; the tables here turn libvirt's
event and detail numbers (stable ABI values) into the words ``virsh event`` uses.
This module does no I/O; ``host.Host`` registers the callbacks and builds the events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

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

AGENT_STATES = {1: "connected", 2: "disconnected"}
AGENT_REASONS = {0: "unknown", 1: "domain started", 2: "channel event"}


def lifecycle_names(event: int, detail: int) -> tuple[str, str]:
    if 0 <= event < len(LIFECYCLE_EVENTS):
        name, details = LIFECYCLE_EVENTS[event]
        return name, details[detail] if 0 <= detail < len(details) else str(detail)
    return f"event {event}", str(detail)


@dataclass(frozen=True)
class DomainEvent:
    """One event from one host. ``kind`` is lifecycle, agent, reboot, pm or host."""

    host: str
    vm: str
    kind: str
    event: str
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __str__(self) -> str:
        text = f"{self.host}/{self.vm}: {self.kind} {self.event}"
        return f"{text} ({self.detail})" if self.detail else text

    def as_dict(self) -> dict[str, str]:
        return {
            "time": self.at.isoformat(),
            "host": self.host,
            "vm": self.vm,
            "kind": self.kind,
            "event": self.event,
            "detail": self.detail,
        }


Listener = Callable[[DomainEvent], None]
