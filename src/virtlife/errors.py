"""virtlife's own exception tree; nothing outside ``hypervisor`` ever sees a libvirtError.

The mapping from libvirt errors to these classes is one function,
``virtlife.hypervisor.libvirt_api.translate``; this module must not import libvirt.
Every message says what was wanted, what was found and, where it helps, what to do.

    VirtlifeError
    ├── NotFound
    │   ├── VMNotFound               no domain of that name on the host(s) asked
    │   └── HostNotFound             no host of that name in the inventory
    ├── AlreadyExists
    │   ├── VMAlreadyExists          define/create with a name already in use
    │   └── HostAlreadyExists        host add with a name already in the inventory
    ├── AmbiguousName                NAME matches a VM on several hosts
    ├── InvalidTransition            operation not allowed in the VM's current state
    ├── InvalidDefinition            malformed or rejected domain XML / spec
    ├── HostUnreachable              cannot connect to, or lost, a libvirt host
    │   └── ConnectionLost           the connection dropped during a call (libvirtd
    │                                stopped or restarted); waits reconnect after it
    ├── OperationTimeout             the expected state was not reached in time
    ├── Unsupported                  the host's driver cannot do this operation
    ├── AgentUnavailable             the guest agent cannot be reached (exit 8)
    │   ├── AgentNotConfigured       the VM has no agent channel: `virtlife agent enable VM`
    │   ├── AgentNotConnected        no agent listens in the guest: install and start it
    │   ├── AgentStillFrozen         a freeze's thaw was not confirmed: the guest may be frozen
    │   └── AgentTimeout             the agent did not answer in time (exit 5)
    ├── AgentCommandFailed           the agent answered, but did not do it (exit 9)
    │   ├── AgentCommandUnsupported  the guest's agent lacks the command or disabled it
    │   └── AgentGuestError          the guest reported an error (its message shown)
    ├── OperationFailed              libvirt refused or failed the operation otherwise
    │   └── HostRestarted            libvirtd restarted during the operation, and the VM
    │                                is not in the state it was meant to reach
    ├── OperationBusy                another operation (or a libvirt job) is running on the VM
    ├── InvalidInput                 a name, path, file or option value that cannot be used
    │   └── NotPermitted             not for this caller's role: a path outside the
    │                                allowed roots, domain XML that reaches the host
    ├── StoreUnavailable             the inventory/journal database cannot be opened or written
    ├── NotLeader                    a supervisor's action refused: it does not lead, or
    │                                its epoch is stale (another took over)
    └── LabError                     preparing the host or building the test guest failed

Exit codes (the CLI's contract; one meaning each):
    0 done  1 failed  2 not found  3 refused by the VM's state  4 host unreachable
    5 timed out  6 busy (another operation runs on the VM)  7 store unavailable
    8 guest agent unavailable  9 the guest agent refused or failed the command
    64 bad usage or input  129 hung up (SIGHUP: the terminal or ssh session closed)
    130 interrupted (Ctrl-C)  143 terminated (SIGTERM)
"""

from __future__ import annotations


class VirtlifeError(Exception):
    """Base of every error virtlife raises on purpose. ``str(err)`` is the user message."""

    exit_code: int = 1


class NotFound(VirtlifeError):
    exit_code = 2


class VMNotFound(NotFound):
    pass


class HostNotFound(NotFound):
    pass


class AlreadyExists(VirtlifeError):
    pass


class VMAlreadyExists(AlreadyExists):
    pass


class HostAlreadyExists(AlreadyExists):
    pass


class AmbiguousName(VirtlifeError):
    """Bad input: the user names the VM as one of the candidates (exit 64)."""

    exit_code = 64

    def __init__(self, name: str, candidates: list[str]) -> None:
        self.name = name
        self.candidates = candidates
        super().__init__(
            f"{name} is ambiguous: it exists as {', '.join(candidates)}; "
            f"name it as HOST/{name}: {' or '.join(candidates)}"
        )


class InvalidTransition(VirtlifeError):
    exit_code = 3


class InvalidDefinition(VirtlifeError):
    pass


class HostUnreachable(VirtlifeError):
    exit_code = 4


class ConnectionLost(HostUnreachable):
    """An open connection dropped during a call: its libvirtd stopped or restarted (or
    the link broke). ``services.wait`` reconnects after it within the operation's time."""


class OperationTimeout(VirtlifeError):
    exit_code = 5


class Unsupported(VirtlifeError):
    pass


class AgentUnavailable(VirtlifeError):
    exit_code = 8


class AgentNotConfigured(AgentUnavailable):
    pass


class AgentNotConnected(AgentUnavailable):
    pass


class AgentStillFrozen(AgentUnavailable):
    """The agent did not confirm a thaw: the guest's file systems may still be frozen."""


class AgentTimeout(AgentUnavailable):
    exit_code = 5


class AgentCommandFailed(VirtlifeError):
    exit_code = 9


class AgentCommandUnsupported(AgentCommandFailed):
    pass


class AgentGuestError(AgentCommandFailed):
    pass


class OperationFailed(VirtlifeError):
    pass


class HostRestarted(OperationFailed):
    """libvirtd restarted while an operation ran, and the VM, read again after the
    reconnect, is not where the operation meant it to be; the message says where it is."""


class OperationBusy(VirtlifeError):
    """Refused because another operation holds the VM; the message names it."""

    exit_code = 6


class InvalidInput(VirtlifeError):
    exit_code = 64


class NotPermitted(InvalidInput):
    """The caller's role may not ask this (an operator token naming a file outside the
    allowed roots, or domain XML that reaches the host): the REST API's 403."""


class StoreUnavailable(VirtlifeError):
    exit_code = 7


class NotLeader(VirtlifeError):
    """A supervisor's fleet action refused, nothing written: this process is not the
    leader, or its term (epoch) ended (``services.leadership``)."""


class LabError(VirtlifeError):
    pass


def exit_codes() -> frozenset[int]:
    """Every exit code an error of this module can end a command with."""
    found: set[int] = set()
    todo: list[type[VirtlifeError]] = [VirtlifeError]
    while todo:
        cls = todo.pop()
        found.add(cls.exit_code)
        todo.extend(cls.__subclasses__())
    return frozenset(found)


def reason_of(err: BaseException) -> str:
    """An error's reason, without what was being done and the fix:
    ``cannot X: <reason>; <fix>`` -> ``<reason>`` (for notes that list several)."""
    text = str(err)
    if text.startswith("cannot ") and ": " in text:
        text = text.split(": ", 1)[1]
    return text.split("; ", 1)[0]
