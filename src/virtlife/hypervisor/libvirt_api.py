"""The one module that imports libvirt: the binding, the event loop, error translation.

Everything else in ``hypervisor`` reaches libvirt through the names exported here,
and every libvirtError becomes a ``virtlife.errors`` exception in ``translate`` (or
via the ``calling`` context manager). Code above ``hypervisor`` never sees libvirt.
"""

from __future__ import annotations

import errno
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import libvirt

from virtlife import errors
from virtlife.lazylog import get_logger

if TYPE_CHECKING:
    import libvirt_qemu

__all__ = [
    "LibvirtError",
    "calling",
    "ensure_event_loop",
    "libvirt",
    "libvirt_qemu",
    "translate",
]

LibvirtError = libvirt.libvirtError

logger = get_logger(__name__)  # logging imported only when needed


def __getattr__(name: str) -> Any:
    """``libvirt_qemu`` (the guest agent's binding), imported when first asked for: the
    CLI's list and state never use it."""
    if name == "libvirt_qemu":
        import libvirt_qemu

        globals()[name] = libvirt_qemu
        return libvirt_qemu
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_loop_lock = threading.Lock()
_loop_started = False


def ensure_event_loop() -> None:
    """Start libvirt's default event loop in a daemon thread, once per process.

    It must run before connections are opened for their events and keepalives to work.
    Every connection's callbacks run on this one thread, so they must never block
    (``dispatch.Dispatcher`` only queues events there). An error of one iteration is
    logged and the loop goes on: a dead loop would silently stop every event and
    keepalive.
    """
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except libvirt.libvirtError as err:
                    logger.warning("libvirt's event loop: %s", err)
                    time.sleep(0.1)  # never a busy loop

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


_UNREACHABLE_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
}
_UNREACHABLE_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}
_DEFINITION_CODES = {
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
}
_UNSUPPORTED_CODES = {
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
}
_AGENT_CODES = {libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED}
# An open connection that broke under a call: the socket's errno as libvirt's RPC layer
# reports it (EOF, a peer that hung up), and the words of the errors that carry none.
_LOST_ERRNOS = {errno.EIO, errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN}
_LOST_WORDS = ("end of file while reading data", "client socket is closed",
               "keepalive timeout", "cannot recv data", "cannot write data")


def connection_lost(code: int, domain: int, int1: int, text: str) -> bool:
    """Whether a libvirt error says that an open connection broke (its libvirtd stopped
    or restarted, or the link did), as opposed to a host that cannot be reached at all
    (connect refused, no socket: ``HostUnreachable``)."""
    if domain not in _UNREACHABLE_DOMAINS:
        return False
    if code == libvirt.VIR_ERR_SYSTEM_ERROR and int1 in _LOST_ERRNOS:
        return True
    lower = text.lower()
    return code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR) and any(
        words in lower for words in _LOST_WORDS)


def translate(err: Any, what: str, *, vm: str = "VM") -> errors.VirtlifeError:
    """Map a libvirtError to the most specific virtlife error.

    ``what`` says what we were doing, e.g. ``"start web1 on local"``; the result reads
    ``cannot start web1 on local: <libvirt's message>``. ``vm`` names the VM in the
    fixes that guest-agent errors suggest.
    """
    code = err.get_error_code()
    domain = err.get_error_domain()
    text = (err.get_error_message() or str(err)).strip()
    first_line = text.splitlines()[0] if text else "unknown libvirt error"
    msg = f"cannot {what}: {first_line}"
    if connection_lost(code, domain, err.get_int1() or 0, text):
        return errors.ConnectionLost(
            f"cannot {what}: the connection to the host was lost ({first_line}): its "
            "libvirtd stopped or restarted, or the link to it broke")
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return errors.VMNotFound(msg)
    if code == libvirt.VIR_ERR_DOM_EXIST or "already exists with uuid" in text:
        return errors.VMAlreadyExists(msg)
    if code in _DEFINITION_CODES:
        return errors.InvalidDefinition(msg)
    agent = _agent_error(code, domain, first_line, what, vm)
    if agent is not None:
        return agent
    if code in _UNSUPPORTED_CODES or (
            code == libvirt.VIR_ERR_INVALID_ARG and "unsupported flags" in text):
        # a flag this driver (or version) lacks: the operation as asked is not supported
        return errors.Unsupported(msg)
    if code == libvirt.VIR_ERR_OPERATION_TIMEOUT:
        return errors.OperationTimeout(msg)
    if (code == libvirt.VIR_ERR_SYSTEM_ERROR and domain not in _UNREACHABLE_DOMAINS
            and err.get_int1() == errno.ENOENT):
        return errors.NotFound(msg)  # a path on the host that is not there
    if code in _UNREACHABLE_CODES or (
        code == libvirt.VIR_ERR_SYSTEM_ERROR and domain in _UNREACHABLE_DOMAINS
    ):
        return errors.HostUnreachable(msg)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return errors.InvalidTransition(msg)
    return errors.OperationFailed(msg)


@contextmanager
def calling(what: str, *, vm: str = "VM") -> Iterator[None]:
    """Run a libvirt call, re-raising any libvirtError as a virtlife error."""
    try:
        yield
    except libvirt.libvirtError as err:
        raise translate(err, what, vm=vm) from err


# How to get an agent running in a guest: what the "not connected" error suggests.
AGENT_INSTALL_HINT = (
    "install and start the QEMU guest agent in the guest: `apt install "
    "qemu-guest-agent` (Debian, Ubuntu), `dnf install qemu-guest-agent` (Fedora, RHEL; "
    "`yum install` on CentOS 7), then `systemctl enable --now qemu-guest-agent`; on "
    "Windows run the guest-agent installer (guest-agent/qemu-ga-x86_64.msi) from the "
    "virtio-win ISO (`virtlife windows-drivers-iso`, then `virtlife attach-iso`)")
# libvirt's "unable to execute QEMU agent command 'guest-x': <the guest's own words>"
_AGENT_REPLY = re.compile(r"unable to execute QEMU agent command '([^']+)': (.*)", re.S)


def _agent_error(code: int, domain: int, line: str, what: str,
                 vm: str) -> errors.VirtlifeError | None:
    """The agent error a libvirt error stands for, with the fix; None if not one."""
    lower = line.lower()
    msg = f"cannot {what}"
    if code == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED and "agent is not configured" in lower:
        return errors.AgentNotConfigured(
            f"{msg}: the VM has no guest-agent channel (org.qemu.guest_agent.0); add it "
            f"with `virtlife agent enable {vm}` (it applies at the next boot)")
    if code in _AGENT_CODES and "not connected" in lower:
        return errors.AgentNotConnected(
            f"{msg}: no agent listens in the guest (or it has not started yet); "
            f"{AGENT_INSTALL_HINT}")
    if code in _AGENT_CODES and "not available due to an error" in lower:
        # libvirt saw an error on the agent's channel (a reply over its 10 MiB cap, or
        # garbage) and will not use the channel again until the agent reconnects
        return errors.AgentUnavailable(
            f"{msg}: libvirt stopped using the guest agent's channel after an error on it "
            "(for instance a reply over libvirt's 10 MiB limit, such as a large guest-exec "
            "output); every agent call fails until the agent reconnects: restart "
            "qemu-guest-agent inside the guest (`systemctl restart qemu-guest-agent`, or "
            f"through the console), or shut {vm} down and start it again")
    if code in _AGENT_CODES:
        return errors.AgentTimeout(
            f"{msg}: the guest agent did not answer in time; it may be hung or busy "
            "(a frozen or overloaded guest)")
    if domain != libvirt.VIR_FROM_QEMU and code != libvirt.VIR_ERR_INTERNAL_ERROR:
        return None
    reply = _AGENT_REPLY.search(line)
    if reply is None:
        return None
    command, said = reply.group(1), reply.group(2).strip()
    if "has not been found" in said:
        return errors.AgentCommandUnsupported(
            f"{msg}: the guest's agent does not have {command} (an older or limited "
            f"agent); `virtlife agent {vm} info` lists what it supports")
    if "frozen state" in said:
        return errors.AgentCommandUnsupported(
            f"{msg}: the guest's file systems are frozen, and its agent refuses "
            f"{command} until they are thawed: `virtlife agent {vm} thaw`")
    if "has been disabled" in said:
        return errors.AgentCommandUnsupported(
            f"{msg}: {command} is disabled in the guest's agent (its --block-rpcs or "
            "--allow-rpcs settings)")
    return errors.AgentGuestError(f"{msg}: the guest reported an error for {command}: {said}")
