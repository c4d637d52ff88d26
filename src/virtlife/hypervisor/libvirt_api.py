"""The one module that imports libvirt: the binding, the event loop, error translation.

Everything else in ``hypervisor`` reaches libvirt through the names exported here,
and every libvirtError becomes a ``virtlife.errors`` exception in ``translate`` (or
via the ``calling`` context manager). Code above ``hypervisor`` never sees libvirt.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import libvirt
import libvirt_qemu

from virtlife import errors

__all__ = [
    "LibvirtError",
    "calling",
    "ensure_event_loop",
    "libvirt",
    "libvirt_qemu",
    "translate",
]

LibvirtError = libvirt.libvirtError

logger = logging.getLogger(__name__)

# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_loop_lock = threading.Lock()
_loop_started = False


def ensure_event_loop() -> None:
    """Start libvirt's default event loop in a daemon thread, once per process.

    It must run before connections are opened for their events and keepalives to work.
    Every connection's callbacks run on this one thread, so they must never block
    (``host.Host`` only queues events there). An error of one iteration is logged and
    the loop goes on: a dead loop would silently stop every event and keepalive.
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


def translate(err: Any, what: str) -> errors.VirtlifeError:
    """Map a libvirtError to the most specific virtlife error.

    ``what`` says what we were doing, e.g. ``"start web1 on local"``; the result reads
    ``cannot start web1 on local: <libvirt's message>``.
    """
    code = err.get_error_code()
    domain = err.get_error_domain()
    text = (err.get_error_message() or str(err)).strip()
    first_line = text.splitlines()[0] if text else "unknown libvirt error"
    msg = f"cannot {what}: {first_line}"
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return errors.VMNotFound(msg)
    if code == libvirt.VIR_ERR_DOM_EXIST or "already exists with uuid" in text:
        return errors.VMAlreadyExists(msg)
    if code in _DEFINITION_CODES:
        return errors.InvalidDefinition(msg)
    if code in _UNSUPPORTED_CODES or (
            code == libvirt.VIR_ERR_INVALID_ARG and "unsupported flags" in text):
        # a flag this driver (or version) lacks: the operation as asked is not supported
        return errors.Unsupported(msg)
    if code in _AGENT_CODES or "guest agent is not" in text.lower():
        return errors.AgentUnavailable(msg)
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
def calling(what: str) -> Iterator[None]:
    """Run a libvirt call, re-raising any libvirtError as a virtlife error."""
    try:
        yield
    except libvirt.libvirtError as err:
        raise translate(err, what) from err
