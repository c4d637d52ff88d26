"""``Agent``: a thin wrapper of one domain's QEMU guest agent.

The agent is a service inside the guest that speaks QMP (JSON) over the virtio-serial
channel ``org.qemu.guest_agent.0``. Where libvirt has a typed call (interfaceAddresses,
fsInfo, getTime/setTime, fsFreeze/fsThaw, setUserPassword, guestInfo, hostname) this
uses it; the raw ``qemuAgentCommand`` serves the rest (guest-info, guest-exec,
guest-fsfreeze-status) and the operator's own commands. Every libvirt error becomes a
typed agent error (``errors.AgentNotConfigured`` ... ``AgentGuestError``) in
``libvirt_api.translate``. A password given to ``set_password`` never reaches an error
message. Nothing here decides whether a call is allowed or waits for anything.

Every call has a client-side deadline (``within``): a hung agent, or libvirt's domain
lock held by another stuck agent call (libvirt waits 30 s for it, and its typed
``fsFreeze``/``fsThaw`` wait for the agent forever), costs the caller that deadline,
never more. Freeze and thaw therefore go through the raw command with a timeout; the
typed calls run on a worker that is abandoned at the deadline (libvirt ends it later).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from virtlife import errors
from virtlife.hypervisor.libvirt_api import calling, libvirt, libvirt_qemu, translate
from virtlife.hypervisor.part import DomainPart

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 5  # the answer timeout of a raw command, as libvirt's own calls
# What a call may take beyond the agent's own answer timeout (the connection's round
# trip, libvirt's guest-sync) before the client gives up on it.
MARGIN_S = 2.0
# The deadline of a typed call: libvirt's agent answer timeout (5 s) and the margin.
TYPED_DEADLINE_S = DEFAULT_TIMEOUT_S + MARGIN_S
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


def within(call: Callable[[], T], seconds: float, what: str) -> T:
    """``call()`` on a worker thread, waited for at most ``seconds``; its error, if it
    ended, is raised here. A call still running then is abandoned (libvirt ends it by
    itself) and ``AgentTimeout`` says so: this is how a hung agent, or a domain lock held
    by a stuck agent call, costs the caller ``seconds`` and not libvirt's 30 s or more."""
    done = threading.Event()
    result: list[T] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(call())
        except BaseException as err:  # handed to the caller below
            failure.append(err)
        finally:
            done.set()

    threading.Thread(target=work, name="agent-call", daemon=True).start()
    if not done.wait(max(0.0, seconds)):
        raise errors.AgentTimeout(
            f"cannot {what}: the guest agent did not answer within {seconds:.3g} s; it may "
            "be hung, or another call to it may still hold the VM (libvirt lets later "
            "agent calls wait for it)")
    if failure:
        raise failure[0]
    return result[0]


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

    # -- raw QMP ---------------------------------------------------------------------

    def _typed(self, verb: str, call: Callable[[], T]) -> T:
        """A typed libvirt agent call, translated, within ``TYPED_DEADLINE_S``."""
        what = self._what(verb)

        def translated() -> T:
            with calling(what, vm=self.vm):
                return call()

        return within(translated, TYPED_DEADLINE_S, what)

    def command(self, name: str, arguments: dict[str, Any] | None = None, *,
                timeout_s: float = DEFAULT_TIMEOUT_S, deadline_s: float | None = None) -> Any:
        """Run one agent command and return its ``return`` value."""
        payload: dict[str, Any] = {"execute": name}
        if arguments is not None:
            payload["arguments"] = arguments
        reply = self.command_text(json.dumps(payload), timeout_s=timeout_s, name=name,
                                  deadline_s=deadline_s)
        try:
            return json.loads(reply).get("return")
        except (ValueError, AttributeError) as err:
            raise errors.AgentCommandFailed(
                f"the agent of {self.vm} answered {name} with something that is not a "
                f"QMP reply: {reply[:200]!r}") from err

    def command_text(self, text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                     name: str = "a command", deadline_s: float | None = None) -> str:
        """Send a QMP command as JSON text; return the agent's reply as JSON text.

        The agent has ``timeout_s`` to answer (whole seconds for libvirt, at least 1);
        the caller waits at most ``deadline_s`` (default: ``timeout_s`` + ``MARGIN_S``)."""
        what = self._what(f"run agent command {name} in")
        seconds = max(1, math.ceil(timeout_s))
        dom = self._dom

        def send() -> str:
            with calling(what, vm=self.vm):
                return str(libvirt_qemu.qemuAgentCommand(dom, text, seconds, 0))

        return within(send, timeout_s + MARGIN_S if deadline_s is None else deadline_s, what)

    def ping(self, *, timeout_s: float = DEFAULT_TIMEOUT_S,
             deadline_s: float | None = None) -> None:
        self.command("guest-ping", timeout_s=timeout_s, deadline_s=deadline_s)

    def info(self) -> AgentInfo:
        got = self.command("guest-info") or {}
        commands = tuple(sorted(
            (AgentCommand(str(c.get("name", "")), bool(c.get("enabled", False)))
             for c in got.get("supported_commands", [])), key=lambda c: c.name))
        return AgentInfo(str(got.get("version", "")), commands)

    def freeze_status(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
        """``frozen`` or ``thawed``, as the agent says."""
        return str(self.command("guest-fsfreeze-status", timeout_s=timeout_s))

    def freeze(self, mountpoints: list[str] | None = None, *,
               timeout_s: float = DEFAULT_TIMEOUT_S, deadline_s: float | None = None) -> int:
        """Freeze the guest's file systems (all, or these); the number frozen. Through the
        raw command: libvirt's typed fsFreeze waits for the agent without end."""
        if mountpoints:
            got = self.command("guest-fsfreeze-freeze-list", {"mountpoints": mountpoints},
                               timeout_s=timeout_s, deadline_s=deadline_s)
        else:
            got = self.command("guest-fsfreeze-freeze", timeout_s=timeout_s,
                               deadline_s=deadline_s)
        return int(got or 0)

    def thaw(self, mountpoints: list[str] | None = None, *,
             timeout_s: float = DEFAULT_TIMEOUT_S, deadline_s: float | None = None) -> int:
        """Thaw the guest's file systems (the agent thaws all of them); how many. Through
        the raw command, bounded: libvirt's typed fsThaw has no timeout."""
        return int(self.command("guest-fsfreeze-thaw", timeout_s=timeout_s,
                                deadline_s=deadline_s) or 0)

    # -- typed libvirt calls ------------------------------------------------------------

    def guest_info(self, kind: str) -> dict[str, Any]:
        """libvirt's guestInfo for one kind (os, timezone, users, filesystem)."""
        dom = self._dom
        return dict(self._typed(f"read the guest {kind} of",
                                lambda: dom.guestInfo(_GUEST_INFO[kind], 0)))

    def hostname(self) -> str:
        dom = self._dom
        return str(self._typed("read the hostname of",
                               lambda: dom.hostname(libvirt.VIR_DOMAIN_GET_HOSTNAME_AGENT)))

    def interfaces(self) -> list[Interface]:
        dom = self._dom
        found = self._typed("read the network addresses of", lambda: dom.interfaceAddresses(
            libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)) or {}
        return [Interface(name, str(nic.get("hwaddr") or ""), tuple(
                    Address(_family(int(a["type"])), str(a["addr"]), int(a["prefix"]))
                    for a in nic.get("addrs") or ()))
                for name, nic in sorted(found.items())]

    def filesystems(self) -> list[Filesystem]:
        """``domfsinfo``, with each file system's size from guestInfo where it has one."""
        dom = self._dom
        mounts = self._typed("read the file systems of", lambda: dom.fsInfo(0))
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
        dom = self._dom
        got = self._typed("read the clock of", lambda: dom.getTime(0))
        return int(got["seconds"]) + int(got.get("nseconds", 0)) / 1e9

    def set_time(self, when: float | None) -> None:
        """Set the guest clock to ``when``; None: from the guest's RTC (libvirt's sync),
        which QEMU keeps on its host's clock."""
        dom = self._dom
        if when is None:
            self._typed("set the clock of",
                        lambda: dom.setTime(None, libvirt.VIR_DOMAIN_TIME_SYNC))
        else:
            seconds = int(when)
            nanos = min(999_999_999, round((when - seconds) * 1e9))
            self._typed("set the clock of",
                        lambda: dom.setTime({"seconds": seconds, "nseconds": nanos}, 0))

    def set_password(self, user: str, password: str, *, crypted: bool = False) -> None:
        """Set ``user``'s password in the guest; the password never reaches an error."""
        flags = libvirt.VIR_DOMAIN_PASSWORD_ENCRYPTED if crypted else 0
        dom = self._dom
        try:
            within(lambda: dom.setUserPassword(user, password, flags), TYPED_DEADLINE_S,
                   self._what(f"set the password of {user} in"))
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
