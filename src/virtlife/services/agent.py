"""What operators do through the QEMU guest agent: read the guest, set it, run in it.

Reads (``ping``, ``info``, ``osinfo``, ``hostname``, ``timezone``, ``users``,
``fsinfo``, ``ifaddr``, ``time``, ``freeze_status``) check that the VM runs, then ask
the agent; they take no lock. Everything that changes the guest (``set_time``,
``freeze``, ``thaw``, ``set_password``, ``exec``, ``command``) and ``enable`` (the
channel in the definition) is an operation: journalled, one per VM at a time, checked
against the VM's state (``Operations.run``). Agent failures arrive as typed errors
(``errors.AgentNotConfigured`` ... ``AgentGuestError``) whose message says the fix.

A password passes through ``set_password`` only: it never reaches a log, the journal,
a progress message or an error. The CLI and the REST API both call this class.

``exec`` keeps at most ``max_output`` bytes (1 MiB unless told) of a program's stdout
and of its stderr, cut in the guest (``hypervisor.agent.OutputLimit``), and says what
it cut: the agent answers with all of the output at once, and an answer over libvirt's
limits is lost or breaks the agent's channel. Its input and the whole command are
checked against what one agent command carries before anything is run or journalled.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack

from virtlife import errors
from virtlife.hypervisor.agent import (
    OUTPUT_MAX_BYTES,
    STDIN_MAX_BYTES,
    Agent,
    AgentInfo,
    Filesystem,
    Interface,
    OutputLimit,
    check_command_size,
    exec_arguments,
)
from virtlife.services.base import Call, OperationService
from virtlife.services.clock import ClockSync, GuestClockReading, read_clock, sync_now
from virtlife.services.fleet import Fleet
from virtlife.services.freeze import FreezeGuard
from virtlife.services.operations import OperationResult, Operations
from virtlife.states import Operation, VMState
from virtlife.store.freezes import FreezeMark
from virtlife.xml.channels import has_agent_channel, with_agent_channel

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

MAX_EXEC_TIMEOUT_S = 3600.0
DEFAULT_MAX_OUTPUT = 2**20  # bytes of stdout, and of stderr, that exec keeps
MAX_OUTPUT = OUTPUT_MAX_BYTES
MAX_STDIN = STDIN_MAX_BYTES
_POLL_FIRST_S = 0.05
_POLL_MAX_S = 0.5


@dataclass(frozen=True)
class ExecResult:
    """A guest program's end: exit code (or signal) and its captured output."""

    vm: str
    argv: tuple[str, ...]
    pid: int
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    truncated: bool  # the output is not all there: cut at max_output, or by the agent
    duration_s: float
    op_id: str = ""
    max_output: int = 0  # the output limit it ran under; 0: none
    cut: tuple[str, ...] = ()  # the streams cut at max_output: stdout, stderr

    @property
    def notes(self) -> tuple[str, ...]:
        """What was cut, in words (for the journal and the CLI)."""
        return tuple(f"its {stream} was cut at {self.max_output} bytes (max_output)"
                     for stream in self.cut)

    def as_dict(self) -> dict[str, object]:
        return {"op_id": self.op_id, "vm": self.vm, "argv": list(self.argv),
                "pid": self.pid, "exit_code": self.exit_code, "signal": self.signal,
                "stdout": self.stdout.decode(errors="replace"),
                "stderr": self.stderr.decode(errors="replace"),
                "truncated": self.truncated, "max_output": self.max_output,
                "cut": list(self.cut), "duration_s": round(self.duration_s, 3)}


@dataclass(frozen=True)
class FreezeStatus:
    vm: str
    status: str  # frozen or thawed, as the agent says
    mark: FreezeMark | None  # who froze it, when virtlife did
    notes: tuple[str, ...] = ()  # what was found and done first (a stale freeze thawed)

    def as_dict(self) -> dict[str, object]:
        return {"vm": self.vm, "status": self.status,
                "frozen_by": None if self.mark is None else self.mark.as_dict(),
                "notes": list(self.notes)}


def parse_command(text: str) -> tuple[str, str]:
    """Check a raw agent command: (its name, the JSON to send); ``InvalidInput`` says
    where the JSON is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise errors.InvalidInput(
            f"invalid JSON at line {err.lineno}, column {err.colno} (character "
            f"{err.pos}): {err.msg}") from None
    if not isinstance(value, dict) or not isinstance(value.get("execute"), str):
        raise errors.InvalidInput(
            'an agent command is a JSON object with "execute", e.g. '
            '\'{"execute": "guest-info"}\'')
    extra = set(value) - {"execute", "arguments"}
    if extra:
        raise errors.InvalidInput(
            f"unexpected key(s) {', '.join(sorted(extra))} in the agent command: it has "
            '"execute" and, optionally, "arguments"')
    return value["execute"], json.dumps(value)


class GuestAgent(OperationService):
    """The guest agent of the fleet's VMs (see the module doc)."""

    def __init__(self, fleet: Fleet, ops: Operations, guard: FreezeGuard) -> None:
        super().__init__(fleet, ops)
        self.guard = guard

    # -- shared shapes ---------------------------------------------------------------------

    def _running(self, ref: str, what: str, notes: list[str] | None = None) -> Agent:
        """The agent of a VM whose guest runs; ``InvalidTransition`` otherwise. A freeze
        left behind by a dead operation is thawed first (see ``FreezeGuard``); what was
        done goes to ``notes``, or to the log's warnings."""
        guest = self.fleet.resolve(ref)
        state = guest.status()
        if state.state not in (VMState.RUNNING, VMState.IDLE):
            hint = {VMState.PAUSED: "resume it first: a paused guest's agent cannot answer",
                    VMState.PMSUSPENDED: "wake it with pmwakeup first"}.get(
                state.state, "start it first: the guest agent runs inside the guest")
            raise errors.InvalidTransition(
                f"cannot {what} {guest.name}: it is {state}, not running; {hint}")
        for note in self.guard.recover(guest):
            if notes is None:
                log.warning("%s", note)
            else:
                notes.append(note)
        return Agent(guest)

    # -- reads -----------------------------------------------------------------------------

    def ping(self, ref: str, *, timeout_s: int = 5) -> float:
        """Seconds the agent took to answer ``guest-ping``."""
        agent = self._running(ref, "ping the agent of")
        t0 = time.monotonic()
        agent.ping(timeout_s=timeout_s)
        return time.monotonic() - t0

    def info(self, ref: str) -> AgentInfo:
        return self._running(ref, "ask the agent of").info()

    def osinfo(self, ref: str) -> dict[str, str]:
        got = self._running(ref, "read the OS of").guest_info("os")
        return {k.removeprefix("os."): str(v) for k, v in got.items()}

    def hostname(self, ref: str) -> str:
        return self._running(ref, "read the hostname of").hostname()

    def timezone(self, ref: str) -> dict[str, object]:
        got = self._running(ref, "read the timezone of").guest_info("timezone")
        return {"name": got.get("timezone.name"),
                "offset_s": int(got.get("timezone.offset", 0))}

    def users(self, ref: str) -> list[dict[str, object]]:
        got = self._running(ref, "read the users of").guest_info("users")
        return [{"name": got.get(f"user.{i}.name"), "domain": got.get(f"user.{i}.domain"),
                 "login_time": (int(got[f"user.{i}.login-time"]) / 1000
                                if f"user.{i}.login-time" in got else None)}
                for i in range(int(got.get("user.count", 0)))]

    def fsinfo(self, ref: str) -> list[Filesystem]:
        return self._running(ref, "read the file systems of").filesystems()

    def ifaddr(self, ref: str) -> list[Interface]:
        return self._running(ref, "read the addresses of").interfaces()

    def time(self, ref: str) -> GuestClockReading:
        return read_clock(self._running(ref, "read the clock of"))

    def freeze_status(self, ref: str) -> FreezeStatus:
        notes: list[str] = []
        agent = self._running(ref, "ask the freeze state of", notes)
        status = agent.freeze_status()
        mark = self.guard.mark(agent.guest)
        return FreezeStatus(agent.vm, status, mark if status == "frozen" else None,
                            tuple(notes))

    # -- operations ------------------------------------------------------------------------

    def set_time(self, ref: str, when: float | None = None, *, sync: bool = False,
                 **call: Unpack[Call]) -> tuple[OperationResult, ClockSync]:
        """Set the guest clock to ``when``, or (``sync``) right by this machine's or its
        host's clock; the offsets before and after are in the result and the journal."""
        if (when is None) == (not sync):
            raise errors.InvalidInput("give a time to set, or sync, not both")
        guest = self._resolve(Operation.AGENT_SET_TIME, ref)
        with self._operation(Operation.AGENT_SET_TIME, guest, None, call) as run:
            agent = Agent(guest)
            if sync:
                outcome = sync_now(agent)
            else:
                before = read_clock(agent)
                agent.set_time(when)
                after = read_clock(agent)
                outcome = ClockSync(before.offset_s, after.offset_s, "set to the time given")
            run.note = str(outcome)
        assert run.result is not None
        return run.result, outcome

    def freeze(self, ref: str, mountpoints: list[str] | None = None,
               **call: Unpack[Call]) -> OperationResult:
        """Freeze the guest's file systems until ``thaw`` (as ``virsh domfsfreeze``)."""
        guest = self._resolve(Operation.AGENT_FREEZE, ref)
        with self._operation(Operation.AGENT_FREEZE, guest, None, call) as run:
            agent = Agent(guest)
            if agent.freeze_status() == "frozen":
                raise errors.InvalidTransition(
                    f"cannot freeze the file systems of {guest.name}: they are already "
                    f"frozen; `virtlife agent {guest.name} thaw` thaws them")
            self.guard.hold(guest, run.op_id)
            try:
                count = agent.freeze(mountpoints)
            except BaseException:
                agent.thaw()  # a partial freeze must not stay behind
                self.guard.release(guest)
                raise
            run.note = (f"froze {count} file system(s); writes in the guest wait until "
                        f"`virtlife agent {guest.name} thaw`")
        assert run.result is not None
        return run.result

    def thaw(self, ref: str, **call: Unpack[Call]) -> OperationResult:
        guest = self._resolve(Operation.AGENT_THAW, ref)
        with self._operation(Operation.AGENT_THAW, guest, None, call) as run:
            agent = Agent(guest)
            if agent.freeze_status() != "frozen":
                self.guard.release(guest)
                raise errors.InvalidTransition(
                    f"cannot thaw the file systems of {guest.name}: they are not frozen")
            count = agent.thaw()
            self.guard.release(guest)
            run.note = f"thawed {count} file system(s)"
        assert run.result is not None
        return run.result

    def set_password(self, ref: str, user: str, password: str, *, crypted: bool = False,
                     **call: Unpack[Call]) -> OperationResult:
        """Set ``user``'s password in the guest (``crypted``: ``password`` is a crypt(3)
        hash). The password itself is never journalled, logged or shown."""
        if not user or any(c in user for c in ":\n\0"):
            raise errors.InvalidInput(f"{user!r} is not a user name")
        if not password:
            raise errors.InvalidInput("the password is empty")
        if "\n" in password or "\0" in password:
            raise errors.InvalidInput("a password cannot contain a newline or NUL")
        guest = self._resolve(Operation.AGENT_SET_PASSWORD, ref)
        with self._operation(Operation.AGENT_SET_PASSWORD, guest, None, call) as run:
            Agent(guest).set_password(user, password, crypted=crypted)
            run.note = f"password of {user} set" + (" (as a hash)" if crypted else "")
        assert run.result is not None
        return run.result

    def exec(self, ref: str, argv: list[str], *, timeout_s: float = 60.0,
             stdin: bytes | None = None, max_output: int = DEFAULT_MAX_OUTPUT,
             **call: Unpack[Call]) -> ExecResult:
        """Run ``argv`` in the guest; its exit code and output once it ends, within
        ``timeout_s`` (``OperationTimeout`` else: it then still runs in the guest). At
        most ``max_output`` bytes of its stdout and of its stderr come back (the rest is
        read away in the guest, and the result says what was cut); 0 runs it as it is,
        without the guest's /bin/sh, and its output must then stay under 3 MiB."""
        if not argv or not argv[0]:
            raise errors.InvalidInput("give the program to run in the guest")
        if not 0 < timeout_s <= MAX_EXEC_TIMEOUT_S:
            raise errors.InvalidInput(
                f"the exec timeout must be within 0 and {MAX_EXEC_TIMEOUT_S:g} s")
        if not 0 <= max_output <= MAX_OUTPUT:
            raise errors.InvalidInput(
                f"the exec output limit must be within 0 and {MAX_OUTPUT} bytes "
                f"({MAX_OUTPUT // 1024} KiB), not {max_output}: stdout and stderr come "
                "back base64-encoded in one answer of the guest agent, and libvirt passes "
                "at most 4 MiB; 0 means no limit")
        if stdin is not None and len(stdin) > MAX_STDIN:
            raise errors.InvalidInput(
                f"the input for {argv[0]} is larger than {MAX_STDIN} bytes "
                f"({MAX_STDIN // 1024} KiB), the most that one guest-agent command "
                "carries safely through libvirt; send it in parts (e.g. each part to "
                "`/bin/sh -c 'cat >> FILE'`) or copy it into the guest another way")
        limit = OutputLimit(max_output) if max_output else None
        path, args = limit.command(argv) if limit else (argv[0], argv[1:])
        check_command_size(json.dumps({"execute": "guest-exec", "arguments": exec_arguments(
            path, args, stdin=stdin)}), f"run {argv[0]} in {ref}")
        guest = self._resolve(Operation.AGENT_EXEC, ref)
        with self._operation(Operation.AGENT_EXEC, guest, timeout_s, call) as run:
            agent = Agent(guest)
            t0 = time.monotonic()
            pid = self._exec_start(agent, path, args, stdin, argv[0], limit)
            under = f", the {path} that limits its output" if limit else ""
            run.report("exec", f"{argv[0]} runs in {guest.name} as pid {pid}{under}")
            pause = _POLL_FIRST_S
            while True:
                status = agent.exec_status(pid)
                if status.exited:
                    break
                if time.monotonic() - t0 >= timeout_s:
                    raise errors.OperationTimeout(
                        f"{argv[0]} did not end within {timeout_s:g} s in {guest.name}; "
                        f"it still runs there as pid {pid}{under}")
                time.sleep(min(pause, max(0.0, timeout_s - (time.monotonic() - t0))))
                pause = min(pause * 2, _POLL_MAX_S)
            duration = time.monotonic() - t0
            if limit:
                status = limit.apply(status, argv[0], f"run {argv[0]} in {guest.name}")
            ended = (f"exit code {status.exit_code}" if status.signal is None
                     else f"signal {status.signal}")
            cut = tuple(name for name, was in (("stdout", status.stdout_cut),
                                               ("stderr", status.stderr_cut)) if was)
            result = ExecResult(guest.name, tuple(argv), pid, status.exit_code,
                                status.signal, status.stdout, status.stderr,
                                status.truncated or bool(cut), duration, run.op_id,
                                max_output, cut)
            run.note = "; ".join((f"{argv[0]} ended with {ended} after {duration:.2f} s",
                                  *result.notes))
        return result

    @staticmethod
    def _exec_start(agent: Agent, path: str, args: list[str], stdin: bytes | None,
                    program: str, limit: OutputLimit | None) -> int:
        """``guest-exec``; a guest without the limit's shell is said to lack it."""
        try:
            return agent.exec_start(path, args, stdin=stdin)
        except errors.AgentGuestError as err:
            if limit is None or path not in str(err):
                raise
            raise errors.AgentGuestError(
                f"{err}; an output limit runs {program} under the guest's {path}, which "
                "it lacks (a Windows guest?): give an output limit of 0 (--max-output 0) "
                "to run it as it is, and keep its output under 3 MiB") from err

    def command(self, ref: str, text: str, *, timeout_s: int = 5,
                **call: Unpack[Call]) -> Any:
        """Send a raw QMP command (JSON text); the parsed reply. Journalled by its name
        only: its arguments may hold secrets."""
        name, payload = parse_command(text)
        if not 0 < timeout_s <= MAX_EXEC_TIMEOUT_S:
            raise errors.InvalidInput(
                f"the command timeout must be within 0 and {MAX_EXEC_TIMEOUT_S:g} s")
        check_command_size(payload, f"send {name} to the agent of {ref}")
        guest = self._resolve(Operation.AGENT_COMMAND, ref)
        with self._operation(Operation.AGENT_COMMAND, guest, timeout_s + 5, call) as run:
            reply = Agent(guest).command_text(payload, timeout_s=timeout_s, name=name)
            run.note = f"{name} answered"
        try:
            return json.loads(reply)
        except ValueError:
            return reply

    def enable(self, ref: str, **call: Unpack[Call]) -> OperationResult:
        """Add the agent channel to the VM's definition (it applies at the next boot)."""
        guest = self._resolve(Operation.AGENT_ENABLE, ref)
        with self._operation(Operation.AGENT_ENABLE, guest, None, call) as run:
            xml = self._definition(guest, "enable the agent channel")
            if has_agent_channel(xml):
                raise errors.AlreadyExists(
                    f"{guest.name} already has the guest-agent channel "
                    "(org.qemu.guest_agent.0)")
            guest.host.define(with_agent_channel(xml))
            active = guest.status().state.is_active
            live = has_agent_channel(guest.xml()) if active else False
            run.note = ("guest-agent channel added; " + (
                "it applies at the next boot (shut the VM down and start it: a reboot "
                "keeps the running devices)" if active and not live
                else "the guest needs qemu-guest-agent installed and running"))
        assert run.result is not None
        return run.result
