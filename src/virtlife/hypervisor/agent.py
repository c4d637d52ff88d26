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

One agent call carries little through libvirt (9.0, measured on qemu:///system): a
command longer than the agent socket's buffer (about 208 KiB) is partly written twice
and the agent hangs on it, so ``command_text`` refuses one over ``COMMAND_MAX_BYTES``
(``InvalidInput``); a client gets an answer of at most 4 MiB (``REPLY_MAX_BYTES``, a
longer one is lost), and an answer over 10 MiB breaks the channel until the agent
reconnects. ``guest-exec-status`` answers with all of a program's output at once, so
``OutputLimit`` runs the program under the guest's ``/bin/sh``, which keeps the first
bytes of its stdout and of its stderr and reads the rest away.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
# What one agent call can carry (see the module doc).
COMMAND_MAX_BYTES = 128 * 2**10  # a command's JSON, well under the socket's ~208 KiB
REPLY_MAX_BYTES = 4 * 2**20  # libvirt's REMOTE_STRING_MAX: its RPC's longest string
# The input of a guest program: base64 makes 4 bytes of 3, and the command keeps room
# for its program, arguments and the output limit's script.
STDIN_MAX_BYTES = 64 * 2**10
# The output limit's most, for stdout and for stderr each: both come base64-encoded in
# one answer, which must stay under REPLY_MAX_BYTES.
OUTPUT_MAX_BYTES = 1500 * 2**10
# How slowly a long answer may come out of a guest: a TCG guest on a host loaded 8 times
# over its CPUs gave 2.8 MB of guest-exec-status in 9 s; this is under half that rate.
# guest-exec-status waits for its longest answer at this rate: a program's output is in
# it once, and an answer abandoned half-way is lost with the output.
ANSWER_BYTES_PER_S = 128 * 2**10
EXEC_STATUS_TIMEOUT_S = DEFAULT_TIMEOUT_S + REPLY_MAX_BYTES // ANSWER_BYTES_PER_S
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
    """A guest program's end, from ``guest-exec-status``. ``truncated``: the agent cut
    the output; ``stdout_cut``/``stderr_cut``: an ``OutputLimit`` did."""

    exited: bool
    exit_code: int | None = None
    signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    stdout_cut: bool = False
    stderr_cut: bool = False


# The script an OutputLimit runs a program under, as "$@" ($1: the bytes to keep plus
# one, which tells a cut; $2: the run's tag). Before the program runs it refuses, with
# "TAG nocap TOOL" on stdout and exit 125, a guest without head or cat, and with
# "TAG noexec" and exit 127 a program its PATH does not find. The program's stdout and
# stderr go through a pipe each to `head -c`, and `cat` reads the rest away, so the
# program runs to its end (no SIGPIPE); its exit status comes back through the command
# substitution (fd 4), and the shell's own messages go nowhere. A program ended by HUP,
# INT, KILL, USR1, USR2, PIPE, ALRM or TERM ends the shell by the same signal; another
# reads as exit code 128 + N, as shells report it (one that dumps core is not raised
# again: it would leave a core of the shell).
_LIMIT_SCRIPT = """\
n=$1 t=$2
shift 2
for c in head cat; do
  command -v $c >/dev/null 2>&1 || { printf '%s nocap %s\\n' "$t" $c; exit 125; }
done
command -v "$1" >/dev/null 2>&1 || { printf '%s noexec\\n' "$t"; exit 127; }
exec 3>&1
st=$({ { { (exec "$@" 2>&6 3>&- 4>&- 5>&- 6>&-); echo $? >&4; } 6>&1 1>&5 2>/dev/null |
  { head -c $n; cat >/dev/null; } >&2 5>&-; } 5>&1 |
  { head -c $n; cat >/dev/null; } >&3; } 4>&1)
exec 3>&-
case $st in
129|130|137|138|140|141|142|143) trap - $((st - 128)); kill -$((st - 128)) $$ ;;
esac
exit ${st:-125}
"""
LIMIT_SHELL = "/bin/sh"


@dataclass(frozen=True)
class OutputLimit:
    """Run a guest program so that at most ``limit`` bytes of its stdout, and of its
    stderr, come back: under the guest's ``/bin/sh`` (a POSIX shell with ``head`` and
    ``cat``; a Windows guest has none). ``tag`` marks the script's own refusals."""

    limit: int
    tag: str = field(default_factory=lambda: secrets.token_hex(8))

    def command(self, argv: list[str]) -> tuple[str, list[str]]:
        """The path and arguments for ``guest-exec`` that run ``argv`` under the limit."""
        return LIMIT_SHELL, ["-c", _LIMIT_SCRIPT, "virtlife-exec", str(self.limit + 1),
                             self.tag, *argv]

    def apply(self, status: ExecStatus, program: str, what: str) -> ExecStatus:
        """``status`` of the script's run with the output cut to the limit (and said to be
        cut); a refusal of the script is raised as the agent's own would be."""
        if status.exit_code == 127 and status.stdout == f"{self.tag} noexec\n".encode():
            raise errors.AgentGuestError(
                f"cannot {what}: the guest reported an error for guest-exec: it has no "
                f"program {program} (its /bin/sh finds none at that path or in its PATH)")
        words = status.stdout.split()
        if (status.exit_code == 125 and len(words) == 3
                and words[:2] == [self.tag.encode(), b"nocap"]):
            tool = words[2].decode(errors="replace")
            raise errors.AgentCommandFailed(
                f"cannot {what}: the guest has no `{tool}`, which its output limit needs; "
                "run it without one (an output limit of 0), and keep its output under "
                f"{REPLY_MAX_BYTES * 3 // 4 // 2**20} MiB")
        return replace(status, stdout=status.stdout[:self.limit],
                       stderr=status.stderr[:self.limit],
                       stdout_cut=len(status.stdout) > self.limit,
                       stderr_cut=len(status.stderr) > self.limit)


def exec_arguments(path: str, args: list[str], *, stdin: bytes | None = None,
                   env: list[str] | None = None) -> dict[str, Any]:
    """The arguments of ``guest-exec`` for ``path args``, its output captured."""
    arguments: dict[str, Any] = {"path": path, "arg": args, "capture-output": True}
    if stdin is not None:
        arguments["input-data"] = base64.b64encode(stdin).decode()
    if env:
        arguments["env"] = env
    return arguments


def check_command_size(text: str, what: str) -> None:
    """Refuse (``InvalidInput``) an agent command longer than ``COMMAND_MAX_BYTES``."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > COMMAND_MAX_BYTES:
        raise errors.InvalidInput(
            f"cannot {what}: the agent command would be {size} bytes of JSON, and at most "
            f"{COMMAND_MAX_BYTES} ({COMMAND_MAX_BYTES // 1024} KiB) go to the guest agent "
            "in one command (through libvirt a longer one reaches it garbled, and hangs "
            "it); give it less input or shorter arguments")


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


def _too_long(err: Any, what: str, vm: str) -> errors.VirtlifeError | None:
    """The error for an agent answer longer than libvirt passes on; None if not one."""
    text = (err.get_error_message() or str(err)).lower()
    if err.get_error_code() == libvirt.VIR_ERR_RPC and "unable to encode message" in text:
        # the daemon cannot send the client a string over REPLY_MAX_BYTES
        return errors.AgentCommandFailed(
            f"cannot {what}: its answer was longer than libvirt passes to a client "
            f"({REPLY_MAX_BYTES // 2**20} MiB), and is lost; a guest program's output "
            "comes in one answer: run it again with an output limit (--max-output)")
    if "no complete agent response found" in text:
        # the daemon read 10 MiB of one answer: it will not use the channel again
        return errors.AgentUnavailable(
            f"cannot {what}: its answer was over libvirt's 10 MiB limit, and libvirt "
            "stopped using the guest agent's channel; every agent call fails until the "
            "agent reconnects: restart qemu-guest-agent inside the guest (`systemctl "
            f"restart qemu-guest-agent`, or through the console), or shut {vm} down and "
            "start it again")
    return None


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
        check_command_size(text, what)
        seconds = max(1, math.ceil(timeout_s))
        dom = self._dom

        def send() -> str:
            try:
                return str(libvirt_qemu.qemuAgentCommand(dom, text, seconds, 0))
            except libvirt.libvirtError as err:
                raise _too_long(err, what, self.vm) or translate(err, what, vm=self.vm) \
                    from err

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
        """Start ``path args`` in the guest with its output captured; its pid there. All
        of the output comes in one answer once it ends: ``OutputLimit`` bounds it."""
        got = self.command("guest-exec", exec_arguments(path, args, stdin=stdin, env=env))
        return int(got["pid"])

    def exec_status(self, pid: int) -> ExecStatus:
        """Whether ``pid`` ended, and then its output (waited for at most
        ``EXEC_STATUS_TIMEOUT_S``: up to 4 MiB may come)."""
        got = self.command("guest-exec-status", {"pid": pid},
                           timeout_s=EXEC_STATUS_TIMEOUT_S) or {}
        if not got.get("exited"):
            return ExecStatus(False)
        return ExecStatus(
            True,
            None if got.get("exitcode") is None else int(got["exitcode"]),
            None if got.get("signal") is None else int(got["signal"]),
            _b64(got.get("out-data")), _b64(got.get("err-data")),
            bool(got.get("out-truncated") or got.get("err-truncated")))
