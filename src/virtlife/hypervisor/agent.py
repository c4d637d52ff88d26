"""``Agent``: a thin wrapper of one domain's QEMU guest agent.

The agent is a service inside the guest that speaks QMP (JSON) over the virtio-serial
channel ``org.qemu.guest_agent.0``. Where libvirt has a typed call (interfaceAddresses,
fsInfo, getTime/setTime, fsFreeze/fsThaw, setUserPassword, guestInfo, hostname) this
uses it; the raw ``qemuAgentCommand`` serves the rest (guest-info, guest-exec,
guest-fsfreeze-status) and the operator's own commands. Every libvirt error becomes a
typed agent error (``errors.AgentNotConfigured`` ... ``AgentGuestError``) in
``libvirt_api.translate``. A password given to ``set_password`` never reaches an error
message. Nothing here decides whether a call is allowed or waits for anything.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from virtlife import errors
from virtlife.hypervisor.libvirt_api import calling, libvirt, libvirt_qemu, translate
from virtlife.hypervisor.part import DomainPart

if TYPE_CHECKING:
    pass

DEFAULT_TIMEOUT_S = 5  # the answer timeout of a raw command, as libvirt's own calls
_GUEST_INFO = {
    "os": libvirt.VIR_DOMAIN_GUEST_INFO_OS,
    "timezone": libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE,
    "users": libvirt.VIR_DOMAIN_GUEST_INFO_USERS,
    "filesystem": libvirt.VIR_DOMAIN_GUEST_INFO_FILESYSTEM,
}


@dataclass(frozen=True)
class AgentCommand:
    name: str
    enabled: bool


@dataclass(frozen=True)
class AgentInfo:
    """What ``guest-info`` says: the agent's version and its commands."""

    version: str
    commands: tuple[AgentCommand, ...]

    def enabled(self, name: str) -> bool:
        return any(c.name == name and c.enabled for c in self.commands)

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version,
                "supported_commands": [{"name": c.name, "enabled": c.enabled}
                                       for c in self.commands]}


@dataclass(frozen=True)
class Address:
    family: str  # ipv4 or ipv6
    address: str
    prefix: int

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix}"


@dataclass(frozen=True)
class Interface:
    """One guest network interface and its addresses, as ``domifaddr --source agent``."""

    name: str
    hwaddr: str
    addresses: tuple[Address, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "hwaddr": self.hwaddr,
                "addresses": [{"family": a.family, "address": a.address,
                               "prefix": a.prefix} for a in self.addresses]}


@dataclass(frozen=True)
class Filesystem:
    """One mounted guest file system, as ``domfsinfo`` plus its size where known."""

    mountpoint: str
    name: str
    fstype: str
    disks: tuple[str, ...]  # the domain's disk targets (vda...) it lives on
    total_bytes: int | None = None
    used_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"mountpoint": self.mountpoint, "name": self.name, "fstype": self.fstype,
                "disks": list(self.disks), "total_bytes": self.total_bytes,
                "used_bytes": self.used_bytes}


@dataclass(frozen=True)
class ExecStatus:
    """A guest program's end, from ``guest-exec-status``."""

    exited: bool
    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _family(kind: int) -> str:
    return "ipv6" if kind == libvirt.VIR_IP_ADDR_TYPE_IPV6 else "ipv4"


def _b64(data: object) -> bytes:
    if not isinstance(data, str):
        return b""
    try:
        return base64.b64decode(data)
    except (binascii.Error, ValueError):
        return data.encode()


class Agent(DomainPart):
    """The guest agent of one domain."""

    def _calling(self, verb: str) -> Any:
        return calling(self._what(verb), vm=self.vm)

    # -- raw QMP ---------------------------------------------------------------------

    def command(self, name: str, arguments: dict[str, Any] | None = None, *,
                timeout_s: int = DEFAULT_TIMEOUT_S) -> Any:
        """Run one agent command and return its ``return`` value."""
        payload: dict[str, Any] = {"execute": name}
        if arguments is not None:
            payload["arguments"] = arguments
        reply = self.command_text(json.dumps(payload), timeout_s=timeout_s, name=name)
        try:
            return json.loads(reply).get("return")
        except (ValueError, AttributeError) as err:
            raise errors.AgentCommandFailed(
                f"the agent of {self.vm} answered {name} with something that is not a "
                f"QMP reply: {reply[:200]!r}") from err

    def command_text(self, text: str, *, timeout_s: int = DEFAULT_TIMEOUT_S,
                     name: str = "a command") -> str:
        """Send a QMP command as JSON text; return the agent's reply as JSON text."""
        with self._calling(f"run agent command {name} in"):
            return str(libvirt_qemu.qemuAgentCommand(self._dom, text, timeout_s, 0))

    def ping(self, *, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
        self.command("guest-ping", timeout_s=timeout_s)

    def info(self) -> AgentInfo:
        got = self.command("guest-info") or {}
        commands = tuple(sorted(
            (AgentCommand(str(c.get("name", "")), bool(c.get("enabled", False)))
             for c in got.get("supported_commands", [])), key=lambda c: c.name))
        return AgentInfo(str(got.get("version", "")), commands)

    def freeze_status(self) -> str:
        """``frozen`` or ``thawed``, as the agent says."""
        return str(self.command("guest-fsfreeze-status"))

    # -- typed libvirt calls ------------------------------------------------------------

    def guest_info(self, kind: str) -> dict[str, Any]:
        """libvirt's guestInfo for one kind (os, timezone, users, filesystem)."""
        with self._calling(f"read the guest {kind} of"):
            return dict(self._dom.guestInfo(_GUEST_INFO[kind], 0))

    def hostname(self) -> str:
        with self._calling("read the hostname of"):
            return str(self._dom.hostname(libvirt.VIR_DOMAIN_GET_HOSTNAME_AGENT))

    def interfaces(self) -> list[Interface]:
        with self._calling("read the network addresses of"):
            found = self._dom.interfaceAddresses(
                libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0) or {}
        return [Interface(name, str(nic.get("hwaddr") or ""), tuple(
                    Address(_family(int(a["type"])), str(a["addr"]), int(a["prefix"]))
                    for a in nic.get("addrs") or ()))
                for name, nic in sorted(found.items())]

    def filesystems(self) -> list[Filesystem]:
        """``domfsinfo``, with each file system's size from guestInfo where it has one."""
        with self._calling("read the file systems of"):
            mounts = self._dom.fsInfo(0)
        sizes: dict[str, tuple[int | None, int | None]] = {}
        try:
            info = self.guest_info("filesystem")
        except errors.AgentCommandFailed:
            info = {}  # an agent without guest-get-fsinfo sizes: keep the list
        for i in range(int(info.get("fs.count", 0))):
            mp = str(info.get(f"fs.{i}.mountpoint", ""))
            total, used = info.get(f"fs.{i}.total-bytes"), info.get(f"fs.{i}.used-bytes")
            sizes[mp] = (None if total is None else int(total),
                         None if used is None else int(used))
        return [Filesystem(str(mp), str(name), str(fstype), tuple(str(d) for d in disks),
                           *sizes.get(str(mp), (None, None)))
                for mp, name, fstype, disks in mounts]

    def time(self) -> float:
        """The guest's clock, in seconds since the epoch."""
        with self._calling("read the clock of"):
            got = self._dom.getTime(0)
        return int(got["seconds"]) + int(got.get("nseconds", 0)) / 1e9

    def set_time(self, when: float | None) -> None:
        """Set the guest clock to ``when``; None: from the guest's RTC (libvirt's sync),
        which QEMU keeps on its host's clock."""
        with self._calling("set the clock of"):
            if when is None:
                self._dom.setTime(None, libvirt.VIR_DOMAIN_TIME_SYNC)
            else:
                seconds = int(when)
                self._dom.setTime({"seconds": seconds,
                                   "nseconds": min(999_999_999, round((when - seconds) * 1e9))}, 0)

    def freeze(self, mountpoints: list[str] | None = None) -> int:
        """Freeze the guest's file systems (all, or these); the number frozen."""
        with self._calling("freeze the file systems of"):
            return int(self._dom.fsFreeze(mountpoints or None, 0))

    def thaw(self, mountpoints: list[str] | None = None) -> int:
        with self._calling("thaw the file systems of"):
            return int(self._dom.fsThaw(mountpoints or None, 0))

    def set_password(self, user: str, password: str, *, crypted: bool = False) -> None:
        """Set ``user``'s password in the guest; the password never reaches an error."""
        flags = libvirt.VIR_DOMAIN_PASSWORD_ENCRYPTED if crypted else 0
        try:
            self._dom.setUserPassword(user, password, flags)
        except libvirt.libvirtError as err:
            scrubbed = translate(err, self._what(f"set the password of {user} in"), vm=self.vm)
            text = str(scrubbed)
            if password and password in text:  # never seen, but never shown either
                text = text.replace(password, "***")
            raise type(scrubbed)(text) from None

    # -- guest-exec -------------------------------------------------------------------

    def exec_start(self, path: str, args: list[str], *, stdin: bytes | None = None,
                   env: list[str] | None = None) -> int:
        """Start ``path args`` in the guest with its output captured; its pid there."""
        arguments: dict[str, Any] = {"path": path, "arg": args, "capture-output": True}
        if stdin is not None:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        if env:
            arguments["env"] = env
        got = self.command("guest-exec", arguments)
        return int(got["pid"])

    def exec_status(self, pid: int) -> ExecStatus:
        got = self.command("guest-exec-status", {"pid": pid}) or {}
        if not got.get("exited"):
            return ExecStatus(False)
        return ExecStatus(
            True,
            None if got.get("exitcode") is None else int(got["exitcode"]),
            None if got.get("signal") is None else int(got["signal"]),
            _b64(got.get("out-data")), _b64(got.get("err-data")),
            bool(got.get("out-truncated") or got.get("err-truncated")))
