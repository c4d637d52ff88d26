"""What a host has at a path, asked through libvirt: the host's file system, not ours.

A save file lives on the host that runs the VM, which may be another machine or
another mount namespace than the client's; ``os.path`` on the client proves nothing
about it. libvirt's save-image reader runs on the host and says whether the path is
absent, a save image, or something else. This module reads only; it never writes.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from virtlife.hypervisor.connection import is_remote
from virtlife.hypervisor.libvirt_api import libvirt, translate

if TYPE_CHECKING:
    from virtlife.hypervisor.host import Host


@dataclass(frozen=True)
class HostPath:
    """``exists`` False: nothing at the path. ``save_xml``: the domain XML it holds when
    it is a libvirt save image ("" for any other file or a directory)."""

    path: str
    exists: bool
    save_xml: str = ""


def probe_path(host: Host, path: str) -> HostPath:
    """What ``host`` has at ``path`` (an absolute path on that host)."""
    try:
        xml = str(host.conn.saveImageGetXMLDesc(path, 0))
    except libvirt.libvirtError as err:
        code = err.get_error_code()
        if code == libvirt.VIR_ERR_SYSTEM_ERROR and err.get_error_domain() not in (
                libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE):
            if err.get_int1() == errno.ENOENT:
                return HostPath(path, False)
            return HostPath(path, True)  # a directory, unreadable, not a save image
        if code in (libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_ERR_INTERNAL_ERROR):
            return HostPath(path, True)  # e.g. "failed to read qemu header": some file
        raise translate(err, f"look at {path} on {host.name}") from err
    return HostPath(path, True, xml)


def local_identity(host: Host, path: str) -> tuple[int, int] | None:
    """The size and mtime (ns) of ``path`` where ``host`` is this machine (its file
    system is ours); None on a remote host, or when nothing is there."""
    if is_remote(host.uri):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
