"""The REST API's guest-agent routes: ``/api/vms/{host}/{name}/agent/...``, thin over
``GuestAgent`` like ``virtlife agent VM ...``.

Reads (``GET``: ping, info, osinfo, hostname, timezone, users, fsinfo, ifaddr, time,
freeze-status) need a reader token and answer what the CLI's ``--json`` prints. What
changes the guest or the VM (``POST``: freeze, thaw, time, set-password, exec,
command, enable) needs an operator token, is refused at once (409) when the VM's state
does not allow it, and runs as a journalled background operation that the request
waits for a bounded time (``routes_more.run_or_accept``): 200 with the result, or 202
with the operation id when it takes longer (an ``exec`` says how long with ``wait_s``).

A password given to ``set-password`` goes to ``GuestAgent.set_password`` only: the
body holds it as a ``SecretStr``, the operation's description and the journal name the
user alone, and no answer, error or log line carries it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from virtlife import errors
from virtlife.api.limits import LongCallRoute
from virtlife.api.routes import (
    HostName,
    Operator,
    Reader,
    VMName,
    ref_of,
    refuse_now,
    services_of,
)
from virtlife.api.routes_more import ACCEPTED, Reply, run_or_accept
from virtlife.services.agent import (
    DEFAULT_MAX_OUTPUT,
    MAX_EXEC_TIMEOUT_S,
    MAX_OUTPUT,
    MAX_STDIN,
    parse_command,
)
from virtlife.services.base import Call
from virtlife.services.clock import parse_time
from virtlife.states import Operation

# their calls may block long (agent timeouts, waits): not on the default threads
router = APIRouter(route_class=LongCallRoute)

AGENT = "/api/vms/{host}/{name}/agent"
CHANGE_WAIT_S = 30.0  # how long a request waits for a change before answering 202
MAX_WAIT_S = 60.0


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


# -- reads --------------------------------------------------------------------------------

@router.get(f"{AGENT}/ping", tags=["agent"])
def agent_ping(request: Request, host: HostName, name: VMName, _t: Reader,
               timeout_s: Annotated[int, Query(ge=1, le=60)] = 5) -> dict[str, object]:
    """Whether the guest agent answers, and how fast (``agent VM ping``)."""
    seconds = services_of(request).agent.ping(ref_of(host, name), timeout_s=timeout_s)
    return {"vm": name, "answered": True, "seconds": round(seconds, 4)}


@router.get(f"{AGENT}/info", tags=["agent"])
def agent_info(request: Request, host: HostName, name: VMName,
               _t: Reader) -> dict[str, Any]:
    """The agent's version and its commands, enabled or not (guest-info)."""
    return services_of(request).agent.info(ref_of(host, name)).as_dict()


@router.get(f"{AGENT}/osinfo", tags=["agent"])
def agent_osinfo(request: Request, host: HostName, name: VMName,
                 _t: Reader) -> dict[str, str]:
    """The guest's operating system (name, version, kernel, machine)."""
    return services_of(request).agent.osinfo(ref_of(host, name))


@router.get(f"{AGENT}/hostname", tags=["agent"])
def agent_hostname(request: Request, host: HostName, name: VMName,
                   _t: Reader) -> dict[str, str]:
    """The guest's host name."""
    return {"vm": name, "hostname": services_of(request).agent.hostname(ref_of(host, name))}


@router.get(f"{AGENT}/timezone", tags=["agent"])
def agent_timezone(request: Request, host: HostName, name: VMName,
                   _t: Reader) -> dict[str, object]:
    """The guest's time zone and its offset from UTC in seconds."""
    return services_of(request).agent.timezone(ref_of(host, name))


@router.get(f"{AGENT}/users", tags=["agent"])
def agent_users(request: Request, host: HostName, name: VMName,
                _t: Reader) -> list[dict[str, object]]:
    """The users logged in to the guest (login_time: seconds since the epoch)."""
    return services_of(request).agent.users(ref_of(host, name))


@router.get(f"{AGENT}/fsinfo", tags=["agent"])
def agent_fsinfo(request: Request, host: HostName, name: VMName,
                 _t: Reader) -> list[dict[str, Any]]:
    """The guest's mounted file systems and the VM disks under them."""
    return [f.as_dict() for f in services_of(request).agent.fsinfo(ref_of(host, name))]


@router.get(f"{AGENT}/ifaddr", tags=["agent"])
def agent_ifaddr(request: Request, host: HostName, name: VMName,
                 _t: Reader) -> list[dict[str, Any]]:
    """The guest's network interfaces and their addresses."""
    return [i.as_dict() for i in services_of(request).agent.ifaddr(ref_of(host, name))]


@router.get(f"{AGENT}/time", tags=["agent"])
def agent_time(request: Request, host: HostName, name: VMName,
               _t: Reader) -> dict[str, object]:
    """The guest's clock against this server's (offset_s: how far the guest is ahead)."""
    reading = services_of(request).agent.time(ref_of(host, name))
    return {"vm": name, **reading.as_dict(), "guest_iso": _when(reading.guest)}


@router.get(f"{AGENT}/freeze-status", tags=["agent"])
def agent_freeze_status(request: Request, host: HostName, name: VMName,
                        _t: Reader) -> dict[str, object]:
    """Whether the guest's file systems are frozen, and which operation froze them
    (``notes``: a stale freeze found and thawed first)."""
    return services_of(request).agent.freeze_status(ref_of(host, name)).as_dict()


# -- changes ------------------------------------------------------------------------------

class FreezeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mountpoints: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = Field(
        default=None, max_length=256, description="default: every file system")


class TimeBody(BaseModel):
    """Give ``set`` (ISO 8601 with a zone) or ``sync``, not both."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    set_to: str | None = Field(default=None, alias="set", min_length=1, max_length=64,
                               description="ISO 8601 with a zone, e.g. 2026-11-26T10:00:00Z")
    sync: bool = False


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    user: str = Field(min_length=1, max_length=256)
    password: SecretStr = Field(min_length=1, max_length=1024,
                                description="never logged, journalled or shown")
    crypted: bool = Field(default=False, description="the password is a crypt(3) hash")


class ExecBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    argv: list[Annotated[str, Field(max_length=65536)]] = Field(min_length=1,
                                                                 max_length=4096)
    timeout_s: float = Field(default=60.0, gt=0, le=MAX_EXEC_TIMEOUT_S,
                             description="seconds the program may run")
    stdin: str | None = Field(default=None, max_length=MAX_STDIN,
                              description="text given to the program's stdin (at most "
                                          f"{MAX_STDIN} bytes as UTF-8)")
    max_output: int = Field(default=DEFAULT_MAX_OUTPUT, ge=0, le=MAX_OUTPUT,
                            description="bytes of stdout, and of stderr, kept (the rest is "
                                        "read away in the guest; ``cut`` names what was "
                                        "cut); 0: no limit, and no /bin/sh around the "
                                        "program: output over 3 MiB is then lost")
    wait_s: float = Field(default=10.0, ge=0, le=MAX_WAIT_S,
                          description="seconds to wait for its end before answering 202 "
                                      "with the operation id")


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str | dict[str, Any] = Field(
        description='JSON text or object with "execute" (and "arguments"), e.g. '
                    '{"execute": "guest-get-vcpus"}')
    timeout_s: int = Field(default=5, ge=1, le=int(MAX_EXEC_TIMEOUT_S))


@router.post(f"{AGENT}/freeze", tags=["agent"], responses=ACCEPTED)
def agent_freeze(request: Request, host: HostName, name: VMName, _t: Operator,
                 body: FreezeBody | None = None) -> JSONResponse:
    """Freeze the guest's file systems (all, or ``mountpoints``) until ``thaw``."""
    ref = refuse_now(request, host, name, Operation.AGENT_FREEZE)
    mountpoints = (body or FreezeBody()).mountpoints or None
    svc = services_of(request)
    return run_or_accept(request, f"{Operation.AGENT_FREEZE.value} {ref}", ref,
                         lambda call: svc.agent.freeze(ref, mountpoints, **call),
                         CHANGE_WAIT_S)


@router.post(f"{AGENT}/thaw", tags=["agent"], responses=ACCEPTED)
def agent_thaw(request: Request, host: HostName, name: VMName, _t: Operator) -> JSONResponse:
    """Thaw the guest's frozen file systems."""
    ref = refuse_now(request, host, name, Operation.AGENT_THAW)
    svc = services_of(request)
    return run_or_accept(request, f"{Operation.AGENT_THAW.value} {ref}", ref,
                         lambda call: svc.agent.thaw(ref, **call), CHANGE_WAIT_S)


@router.post(f"{AGENT}/time", tags=["agent"], responses=ACCEPTED)
def agent_set_time(request: Request, host: HostName, name: VMName, _t: Operator,
                   body: TimeBody) -> JSONResponse:
    """Set the guest clock to ``set``, or right (``sync``); the offsets before and after
    are in the result's ``clock``."""
    if (body.set_to is None) == (not body.sync):
        raise errors.InvalidInput("give set (an ISO 8601 time) or sync, not both")
    when = parse_time(body.set_to) if body.set_to is not None else None
    ref = refuse_now(request, host, name, Operation.AGENT_SET_TIME)
    svc = services_of(request)

    def work(call: Call) -> Reply:
        result, outcome = svc.agent.set_time(ref, when, sync=body.sync, **call)
        return Reply({**result.as_dict(), "clock": outcome.as_dict()})

    return run_or_accept(request, f"{Operation.AGENT_SET_TIME.value} {ref}", ref, work,
                         CHANGE_WAIT_S)


@router.post(f"{AGENT}/set-password", tags=["agent"], responses=ACCEPTED)
def agent_set_password(request: Request, host: HostName, name: VMName, _t: Operator,
                       body: PasswordBody) -> JSONResponse:
    """Set ``user``'s password in the guest (``crypted``: it is a crypt(3) hash)."""
    ref = refuse_now(request, host, name, Operation.AGENT_SET_PASSWORD)
    svc = services_of(request)
    user, secret, crypted = body.user, body.password, body.crypted
    return run_or_accept(request, f"{Operation.AGENT_SET_PASSWORD.value} {ref}", ref,
                         lambda call: svc.agent.set_password(
                             ref, user, secret.get_secret_value(), crypted=crypted, **call),
                         CHANGE_WAIT_S)


@router.post(f"{AGENT}/exec", tags=["agent"], responses=ACCEPTED)
def agent_exec(request: Request, host: HostName, name: VMName, _t: Operator,
               body: ExecBody) -> JSONResponse:
    """Run ``argv`` in the guest: 200 with its exit code (or signal), stdout and stderr
    (each cut at ``max_output``) when it ends within ``wait_s``, else 202 (the same in
    the operation's result)."""
    if not body.argv[0]:
        raise errors.InvalidInput("give the program to run in the guest")
    ref = refuse_now(request, host, name, Operation.AGENT_EXEC)
    svc = services_of(request)
    argv, timeout_s, max_output = list(body.argv), body.timeout_s, body.max_output
    data = None if body.stdin is None else body.stdin.encode()
    return run_or_accept(request, f"{Operation.AGENT_EXEC.value} {ref}", ref,
                         lambda call: svc.agent.exec(ref, argv, timeout_s=timeout_s,
                                                     stdin=data, max_output=max_output,
                                                     **call),
                         body.wait_s)


@router.post(f"{AGENT}/command", tags=["agent"], responses=ACCEPTED)
def agent_command(request: Request, host: HostName, name: VMName, _t: Operator,
                  body: CommandBody) -> JSONResponse:
    """Send one raw QMP command to the agent; ``reply`` is its answer (parsed JSON)."""
    text = body.command if isinstance(body.command, str) else json.dumps(body.command)
    command, _ = parse_command(text)  # 422 at once for what is no agent command
    ref = refuse_now(request, host, name, Operation.AGENT_COMMAND)
    svc = services_of(request)
    timeout_s = body.timeout_s

    def work(call: Call) -> Reply:
        reply = svc.agent.command(ref, text, timeout_s=timeout_s, **call)
        return Reply({"vm": name, "command": command, "reply": reply})

    return run_or_accept(request, f"{Operation.AGENT_COMMAND.value} {ref}", ref, work,
                         min(MAX_WAIT_S, timeout_s + 5.0))


@router.post(f"{AGENT}/enable", tags=["agent"], responses=ACCEPTED)
def agent_enable(request: Request, host: HostName, name: VMName,
                 _t: Operator) -> JSONResponse:
    """Add the guest-agent channel to the VM's definition (it applies at the next boot)."""
    ref = refuse_now(request, host, name, Operation.AGENT_ENABLE)
    svc = services_of(request)
    return run_or_accept(request, f"{Operation.AGENT_ENABLE.value} {ref}", ref,
                         lambda call: svc.agent.enable(ref, **call), CHANGE_WAIT_S)
