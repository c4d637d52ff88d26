"""The operator-facing VM states, libvirt's reasons, and the one transition table.

``VMState`` names the states as operators know them; ``classify`` is the one mapping
from libvirt's (state, reason) integers to a ``StateInfo``; ``TRANSITIONS`` says, for
every ``Operation``, in which states it is allowed and which states it should reach;
``check_transition`` is the one guard every operation passes through.

libvirt's state and reason numbers are part of its stable ABI, so they are written
here as plain integers (a unit test compares them with the binding's constants); this
module must not import libvirt or do any I/O.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import TypeVar

from virtlife.errors import InvalidInput, InvalidTransition

E = TypeVar("E", bound=Enum)


class VMState(Enum):
    """A VM's state as an operator names it (``virsh list`` wording in ``label``).

    A plain ``Enum``, not a ``str``: a state never compares equal to an operation or a
    bare string (``VMState.SHUTDOWN != Operation.SHUTDOWN``). ``.value`` is its JSON name.
    """

    UNDEFINED = "undefined"  # no such domain on the host (or a transient one that ended)
    SHUTOFF = "shutoff"  # defined, not running
    RUNNING = "running"
    SHUTDOWN = "shutdown"  # shutdown in progress
    PAUSED = "paused"  # vCPUs stopped, RAM kept in the QEMU process
    SAVED = "saved"  # RAM on storage: managed-save image, or shut off by `save FILE`
    IDLE = "idle"  # libvirt "blocked": running but waiting on a resource
    CRASHED = "crashed"  # the guest panicked and the domain was preserved
    DYING = "dying"  # stuck on the way down
    PMSUSPENDED = "pmsuspended"  # guest suspended itself to RAM (S3)

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def is_active(self) -> bool:
        """True when a QEMU process exists for the domain."""
        return self not in (VMState.UNDEFINED, VMState.SHUTOFF, VMState.SAVED)


_LABELS = {
    VMState.UNDEFINED: "undefined",
    VMState.SHUTOFF: "shut off",
    VMState.RUNNING: "running",
    VMState.SHUTDOWN: "in shutdown",
    VMState.PAUSED: "paused",
    VMState.SAVED: "saved",
    VMState.IDLE: "idle",
    VMState.CRASHED: "crashed",
    VMState.DYING: "dying",
    VMState.PMSUSPENDED: "pmsuspended",
}

# libvirt's virDomainState values (libvirt-domain.h), one row each.
LV_NOSTATE = 0  # no state: seen while the QEMU process is being torn down
LV_RUNNING = 1
LV_BLOCKED = 2  # blocked on a resource -> "idle"
LV_PAUSED = 3
LV_SHUTDOWN = 4  # being shut down
LV_SHUTOFF = 5
LV_CRASHED = 6
LV_PMSUSPENDED = 7

# Reason names per libvirt state, as virsh prints them (virDomain*Reason enums).
REASONS: dict[int, tuple[str, ...]] = {
    LV_NOSTATE: ("unknown",),
    LV_RUNNING: (
        "unknown", "booted", "migrated", "restored", "from snapshot", "unpaused",
        "migration canceled", "save canceled", "event wakeup", "crashed",
        "post-copy", "post-copy failed",
    ),
    LV_BLOCKED: ("unknown",),
    LV_PAUSED: (
        "unknown", "user", "migrating", "saving", "dumping", "I/O error", "watchdog",
        "from snapshot", "shutting down", "creating snapshot", "crashed", "starting up",
        "post-copy", "post-copy failed", "api error",
    ),
    LV_SHUTDOWN: ("unknown", "user"),
    LV_SHUTOFF: (
        "unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
        "from snapshot", "daemon",
    ),
    LV_CRASHED: ("unknown", "panicked"),
    LV_PMSUSPENDED: ("unknown",),
}

SHUTOFF_REASON_SAVED = 5

# How long a domain may stay "in shutdown" before we call it dying.
SHUTDOWN_STUCK_AFTER_S = 60.0

# Reasons virtlife gives where libvirt's own would mislead.
REASON_MANAGED_SAVE = "managed save"
REASON_SAVED_TO_FILE = "saved to file"
REASON_MANAGED_SAVE_REMOVED = "managed save removed"


class SaveKind(Enum):
    """The two ways a VM is ``saved``; what brings it back differs.

    MANAGED: libvirt holds a managed-save image; ``start`` restores it.
    TO_FILE: ``save FILE`` stopped it; ``restore FILE`` brings it back, ``start`` boots afresh.
    """

    MANAGED = REASON_MANAGED_SAVE
    TO_FILE = REASON_SAVED_TO_FILE


@dataclass(frozen=True)
class StateInfo:
    """A classified state with libvirt's reason beside it, e.g. ``paused (user)``."""

    state: VMState
    reason: str

    def __str__(self) -> str:
        return f"{self.state.label} ({self.reason})" if self.reason else self.state.label

    @property
    def save_kind(self) -> SaveKind | None:
        """Which of the two saved cases this is; None when the VM is not saved."""
        if self.state is not VMState.SAVED:
            return None
        return SaveKind.MANAGED if self.reason == REASON_MANAGED_SAVE else SaveKind.TO_FILE


UNDEFINED = StateInfo(VMState.UNDEFINED, "")


def reason_name(lv_state: int, lv_reason: int) -> str:
    names = REASONS.get(lv_state, ())
    return names[lv_reason] if 0 <= lv_reason < len(names) else f"reason {lv_reason}"


def classify(
    lv_state: int,
    lv_reason: int,
    *,
    has_managed_save: bool = False,
) -> StateInfo:
    """Map libvirt's (state, reason) to the operator's state.

    ``has_managed_save`` turns a shut-off domain into ``saved``. Whether a shutdown is
    stuck libvirt cannot say; ``shutdown_aged`` decides that from its age.
    """
    reason = reason_name(lv_state, lv_reason)
    if lv_state == LV_SHUTOFF:
        if has_managed_save:
            return StateInfo(VMState.SAVED, REASON_MANAGED_SAVE)
        if lv_reason == SHUTOFF_REASON_SAVED:
            return StateInfo(VMState.SAVED, REASON_SAVED_TO_FILE)
        return StateInfo(VMState.SHUTOFF, reason)
    simple = {
        LV_NOSTATE: VMState.DYING,
        LV_RUNNING: VMState.RUNNING,
        LV_BLOCKED: VMState.IDLE,
        LV_PAUSED: VMState.PAUSED,
        LV_SHUTDOWN: VMState.SHUTDOWN,
        LV_CRASHED: VMState.CRASHED,
        LV_PMSUSPENDED: VMState.PMSUSPENDED,
    }
    if lv_state not in simple:
        return StateInfo(VMState.DYING, f"unknown libvirt state {lv_state}")
    if lv_state == LV_NOSTATE:
        return StateInfo(VMState.DYING, "no state")
    return StateInfo(simple[lv_state], reason)


def shutdown_aged(current: StateInfo, in_shutdown_for_s: float,
                  stuck_after_s: float = SHUTDOWN_STUCK_AFTER_S) -> StateInfo:
    """A VM still "in shutdown" ``in_shutdown_for_s`` after it was asked is ``dying``
    once that passes ``stuck_after_s``; any other state is returned as it is."""
    if current.state is VMState.SHUTDOWN and in_shutdown_for_s > stuck_after_s:
        return StateInfo(VMState.DYING, f"in shutdown for {in_shutdown_for_s:.0f} s")
    return current


class Operation(StrEnum):
    """Everything that changes a VM's state; the value is the CLI verb (and the journal's)."""

    DEFINE = "define"
    START = "start"
    SHUTDOWN = "shutdown"
    REBOOT = "reboot"
    RESET = "reset"
    DESTROY = "destroy"
    SUSPEND = "suspend"
    RESUME = "resume"
    SAVE = "save"
    RESTORE = "restore"
    MANAGEDSAVE = "managedsave"
    MANAGEDSAVE_REMOVE = "managedsave-remove"
    PMSUSPEND = "pmsuspend"
    PMWAKEUP = "pmwakeup"
    UNDEFINE = "undefine"
    SNAPSHOT_CREATE = "snapshot-create"
    SNAPSHOT_REVERT = "snapshot-revert"
    SNAPSHOT_DELETE = "snapshot-delete"
    ATTACH_ISO = "attach-iso"
    DETACH_ISO = "detach-iso"
    AGENT_ENABLE = "agent-enable"  # add the guest-agent channel to the definition
    GRAPHICS = "graphics"  # change the VNC listen address or password in the definition
    # guest-agent actions that change something in the guest
    AGENT_FREEZE = "agent-freeze"
    AGENT_THAW = "agent-thaw"
    AGENT_SET_TIME = "agent-set-time"
    AGENT_SET_PASSWORD = "agent-set-password"
    AGENT_EXEC = "agent-exec"
    AGENT_COMMAND = "agent-command"
    MIGRATE = "migrate"  # live, or paused for the copy (--suspended)
    MIGRATE_OFFLINE = "migrate-offline"  # the definition (and disks) of a shut-off VM
    MIGRATE_ABORT = "migrate-abort"  # ends a running migration; never refused for it
    MIGRATE_RESUME = "migrate-resume"  # recovers a failed post-copy (paused at the source)


class ShutdownMode(StrEnum):
    """How a guest is asked to power off or reboot (the value is the CLI word)."""

    AUTO = "auto"  # virtlife's ladder: the agent, then the ACPI button twice
    AGENT = "agent"  # the guest agent's guest-shutdown
    ACPI = "acpi"  # the ACPI power button
    DEFAULT = "default"  # one request, libvirt chooses: the agent when configured, else ACPI


class PMTarget(StrEnum):
    """Where ``pmsuspend`` asks the guest to suspend to."""

    MEM = "mem"
    DISK = "disk"
    HYBRID = "hybrid"


def parse_enum(kind: type[E], value: str | E, what: str) -> E:
    """``kind(value)``, or ``InvalidInput`` naming the accepted words."""
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        words = ", ".join(str(m.value) for m in kind)
        raise InvalidInput(f"unknown {what} {value!r}: use one of {words}") from None


@dataclass(frozen=True)
class Rule:
    """Where an operation may start (``allowed``) and where it should end (``reaches``).

    An empty ``reaches`` means the operation leaves the state as it is (define of an
    existing VM, reboot) and nothing is waited for by state.
    """

    allowed: frozenset[VMState]
    reaches: frozenset[VMState]


def _r(allowed: set[VMState], reaches: set[VMState]) -> Rule:
    return Rule(frozenset(allowed), frozenset(reaches))


S = VMState
_UP = {S.RUNNING, S.IDLE}
_ACTIVE = {s for s in S if s.is_active}

TRANSITIONS: dict[Operation, Rule] = {
    # define: creates a VM, or replaces the persistent definition of an existing one
    Operation.DEFINE: _r(set(S), set()),
    Operation.START: _r({S.SHUTOFF, S.SAVED}, {S.RUNNING, S.PAUSED}),
    Operation.SHUTDOWN: _r(_UP, {S.SHUTOFF, S.UNDEFINED}),
    Operation.REBOOT: _r(_UP, set()),
    # reset of a panicked guest leaves it "paused (crashed)" under QEMU: not offered
    Operation.RESET: _r(_UP, set()),
    Operation.DESTROY: _r(_ACTIVE, {S.SHUTOFF, S.UNDEFINED}),
    Operation.SUSPEND: _r(_UP, {S.PAUSED}),
    Operation.RESUME: _r({S.PAUSED}, {S.RUNNING}),
    Operation.SAVE: _r(_UP | {S.PAUSED}, {S.SAVED, S.UNDEFINED}),
    Operation.RESTORE: _r({S.UNDEFINED, S.SHUTOFF, S.SAVED}, {S.RUNNING, S.PAUSED}),
    Operation.MANAGEDSAVE: _r(_UP | {S.PAUSED}, {S.SAVED}),
    Operation.MANAGEDSAVE_REMOVE: _r({S.SAVED}, {S.SHUTOFF}),
    Operation.PMSUSPEND: _r(_UP, {S.PMSUSPENDED, S.SHUTOFF}),
    Operation.PMWAKEUP: _r({S.PMSUSPENDED}, {S.RUNNING}),
    Operation.UNDEFINE: _r({S.SHUTOFF, S.SAVED}, {S.UNDEFINED}),
    # a snapshot keeps the VM as it is; libvirt refuses one beside a managed-save image
    Operation.SNAPSHOT_CREATE: _r(_UP | {S.PAUSED, S.SHUTOFF}, set()),
    # the state after a revert is the snapshot's: read, not waited for
    Operation.SNAPSHOT_REVERT: _r(_UP | {S.PAUSED, S.SHUTOFF, S.CRASHED}, set()),
    Operation.SNAPSHOT_DELETE: _r(_UP | {S.PAUSED, S.SHUTOFF, S.SAVED}, set()),
    # a managed-save image holds the old devices: its restore would not match
    Operation.ATTACH_ISO: _r(_UP | {S.PAUSED, S.SHUTOFF}, set()),
    Operation.DETACH_ISO: _r(_UP | {S.PAUSED, S.SHUTOFF}, set()),
    Operation.AGENT_ENABLE: _r({s for s in S if s is not S.UNDEFINED}, set()),
    Operation.GRAPHICS: _r({s for s in S if s is not S.UNDEFINED}, set()),
    # the agent answers only while the guest's vCPUs run
    Operation.AGENT_FREEZE: _r(_UP, set()),
    Operation.AGENT_THAW: _r(_UP, set()),
    Operation.AGENT_SET_TIME: _r(_UP, set()),
    Operation.AGENT_SET_PASSWORD: _r(_UP, set()),
    Operation.AGENT_EXEC: _r(_UP, set()),
    Operation.AGENT_COMMAND: _r(_UP, set()),
    # the VM ends on another host: its state there is read, not waited for here
    Operation.MIGRATE: _r(_UP | {S.PAUSED}, set()),
    Operation.MIGRATE_OFFLINE: _r({S.SHUTOFF}, set()),
    Operation.MIGRATE_ABORT: _r(_UP | {S.PAUSED}, set()),
    Operation.MIGRATE_RESUME: _r({S.PAUSED}, set()),
}

# What to suggest when an operation is refused in a given state.
_HINTS: dict[tuple[Operation, VMState], str] = {
    (Operation.START, S.PAUSED): "resume it instead",
    (Operation.START, S.PMSUSPENDED): "wake it with pmwakeup instead",
    (Operation.START, S.CRASHED): "destroy it first",
    (Operation.RESET, S.CRASHED): "destroy it, then start it",
    (Operation.RESUME, S.PMSUSPENDED): "wake it with pmwakeup instead",
    (Operation.SHUTDOWN, S.PAUSED): "resume it first, or destroy it",
    (Operation.SHUTDOWN, S.CRASHED): "destroy it instead",
    (Operation.SHUTDOWN, S.SHUTDOWN): "it is already shutting down; destroy it to force it off",
    (Operation.SHUTDOWN, S.DYING): "destroy it to force it off",
    (Operation.UNDEFINE, S.RUNNING): "shut it down or destroy it first",
    (Operation.UNDEFINE, S.PAUSED): "destroy it first",
    (Operation.SNAPSHOT_CREATE, S.PMSUSPENDED): "wake it with pmwakeup first",
    (Operation.ATTACH_ISO, S.PMSUSPENDED): "wake it with pmwakeup first",
    (Operation.MIGRATE, S.SHUTOFF): "migrate it with --offline",
    (Operation.MIGRATE_OFFLINE, S.RUNNING): "migrate it live, or pass --shutdown-first",
    (Operation.MIGRATE_OFFLINE, S.PAUSED): "migrate it live (it stays paused)",
}
for _op in (Operation.AGENT_FREEZE, Operation.AGENT_THAW, Operation.AGENT_SET_TIME,
            Operation.AGENT_SET_PASSWORD, Operation.AGENT_EXEC, Operation.AGENT_COMMAND):
    _HINTS[(_op, S.PAUSED)] = "resume it first: a paused guest's agent cannot answer"
    _HINTS[(_op, S.SHUTOFF)] = "start it first: the guest agent runs inside the guest"
    _HINTS[(_op, S.PMSUSPENDED)] = "wake it with pmwakeup first"


# What brings a saved VM back, for every operation refused while it is saved.
_SAVED_HINTS: dict[SaveKind, str] = {
    SaveKind.MANAGED: "start it to restore its saved RAM (managedsave-remove discards it)",
    SaveKind.TO_FILE: "restore its save file to bring it back (start boots it afresh)",
}


def _phrase(states: frozenset[VMState]) -> str:
    order = [s for s in VMState if s in states]
    labels = [s.label for s in order]
    if len(labels) == 1:
        return labels[0]
    return ", ".join(labels[:-1]) + " or " + labels[-1]


def check_transition(op: Operation, vm: str, current: StateInfo) -> Rule:
    """Return the rule for ``op`` or raise ``InvalidTransition`` with one clear line.

    ``cannot resume web1: it is running, not paused``
    """
    rule = TRANSITIONS[op]
    kind = current.save_kind
    if op is Operation.MANAGEDSAVE_REMOVE and kind is SaveKind.TO_FILE:
        raise InvalidTransition(
            f"cannot {op.value} {vm}: it was saved to a file and has no managed-save image; "
            f"{_SAVED_HINTS[kind]}")
    if current.state in rule.allowed:
        return rule
    if current.state is VMState.UNDEFINED:
        msg = f"cannot {op.value} {vm}: it is not defined"
    else:
        label = f"saved ({kind.value})" if kind is not None else current.state.label
        msg = f"cannot {op.value} {vm}: it is {label}, not {_phrase(rule.allowed)}"
    hint = _SAVED_HINTS[kind] if kind is not None else _HINTS.get((op, current.state))
    if hint:
        msg += f"; {hint}"
    raise InvalidTransition(msg)


def allowed_operations(current: StateInfo) -> list[Operation]:
    """The operations ``check_transition`` lets start from ``current``, in table order
    (what a front end offers as enabled buttons)."""
    return list(_allowed(current))


@functools.lru_cache(maxsize=512)
def _allowed(current: StateInfo) -> tuple[Operation, ...]:
    """``allowed_operations``, kept per state: the table is fixed, so the answer for a
    (state, reason) never changes. Unkept, each VM of a listing cost 32 checks, most of
    them a refusal with its message written (~0.15-0.6 ms a VM here; a served listing of
    1000 VMs spent most of its time there)."""
    allowed = []
    for op in TRANSITIONS:
        try:
            check_transition(op, "", current)
        except InvalidTransition:
            continue
        allowed.append(op)
    return tuple(allowed)
