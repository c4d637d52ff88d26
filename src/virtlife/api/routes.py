"""The REST API's core routes: health, hosts, VMs, lifecycle actions, operations, history,
the event stream and the Prometheus metrics.

Each route is a thin call into the service layer the CLI uses. A state-changing
action runs in the background (``Jobs``) and answers 202 with its operation id at
once; its progress reaches the event stream as ``progress`` messages and
``GET /api/operations/{id}`` (``?wait=S`` waits until it ends or S passes, holding
no thread: ``api.limits``). A VM is
named by its host and its name in the path, so a name is never ambiguous.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import nullcontext
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from virtlife import __version__, errors
from virtlife.api.allowed import caller_paths
from virtlife.api.auth import actor_of, admin, operator, presented_token, reader, token_of
from virtlife.api.bodies import ListingBodies
from virtlife.api.hub import Hub, cached_listing, state_dict
from virtlife.api.limits import wait_for_job
from virtlife.api.metrics import CONTENT_TYPE
from virtlife.api.streams import Streams
from virtlife.services.base import Call
from virtlife.services.context import Services
from virtlife.services.lifecycle import OperationResult
from virtlife.services.operations import acting_as
from virtlife.services.progress import Update
from virtlife.states import Operation, check_transition
from virtlife.store.tokens import TokenRecord

router = APIRouter()

HostName = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^/\x00-\x1f]+$",
                               description="a host as the inventory names it")]
VMName = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^/\x00-\x1f]+$",
                             description="the VM's name on that host")]
# Every route declares its role with one of these (tests/unit/test_api_roles.py checks).
Reader = Annotated[TokenRecord, Depends(reader)]
Operator = Annotated[TokenRecord, Depends(operator)]
Admin = Annotated[TokenRecord, Depends(admin)]
KEEPALIVE_S = 15.0  # an event stream sends a comment this often when idle
WAIT_MAX_S = 60.0


def services_of(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def hub_of(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def ref_of(host: str, name: str) -> str:
    return f"{host}/{name}"


def refuse_now(request: Request, host: str, name: str, op: Operation) -> str:
    """The VM's reference, once its state allows ``op`` (404 or 409 otherwise, at once,
    with nothing started; the operation checks again when it runs)."""
    ref = ref_of(host, name)
    _, current = services_of(request).lifecycle.state(ref)
    check_transition(op, name, current)
    return ref


def update_dict(update: Update) -> dict[str, Any]:
    return {"op_id": update.op_id, "vm": update.vm, "stage": update.stage,
            "message": update.message, "fraction": update.fraction,
            "detail": None if update.detail is None else dict(update.detail)}


class Accepted(BaseModel):
    op_id: str
    status: str = "running"
    url: str


def submit(request: Request, description: str, vm: str,
           work: Callable[[Call], Any]) -> JSONResponse:
    """Run ``work`` (a service call) in the background; 202 with its operation id.

    Its progress, and its end, go to the event stream; the metrics count the outcome.
    """
    return accepted(start_operation(request, description, vm, work))


def accepted(op_id: str) -> JSONResponse:
    """The 202 answer of a background operation."""
    body = Accepted(op_id=op_id, url=f"/api/operations/{op_id}")
    return JSONResponse(body.model_dump(), status_code=202)


def start_operation(request: Request, description: str, vm: str,
                    work: Callable[[Call], Any]) -> str:
    """``submit`` without the answer: the background operation's id. The journal
    names the request's token as who acted (``api:NAME``)."""
    svc, hub, metrics = services_of(request), hub_of(request), request.app.state.metrics
    token = token_of(request)
    actor = None if token is None else actor_of(token)

    def start(op_id: str, progress: Callable[[Update], None]) -> OperationResult:
        def both(update: Update) -> None:
            progress(update)
            hub.publish({"type": "progress", **update_dict(update), "op_id": op_id})

        began = time.monotonic()
        outcome, message = "error", ""
        try:
            with acting_as(actor) if actor is not None else nullcontext():
                done = work(Call(progress=both, op_id=op_id, queue_s=None))
            result: OperationResult = getattr(done, "result", done)
            outcome = "ok"
            return result
        except errors.VirtlifeError as err:
            from virtlife.services.operations import outcome_of
            outcome, message = outcome_of(err), str(err)
            raise
        finally:
            metrics.operation_done(description.split(" ", 1)[0], outcome,
                                   time.monotonic() - began)
            hub.publish({"type": "operation", "op_id": op_id, "vm": vm,
                         "description": description, "status": outcome,
                         "error": message or None})

    return svc.jobs.submit(start, description)


# -- health, hosts, VMs -----------------------------------------------------------------

@router.get("/api/health", tags=["server"])
def health(request: Request) -> dict[str, object]:
    """Whether the server runs (no token needed)."""
    return {"status": "ok", "version": __version__,
            "hosts": len(services_of(request).fleet.refs)}


@router.get("/api/leader", tags=["server"])
def leader(request: Request, _t: Reader) -> dict[str, object]:
    """The supervisor that leads the store now (``virtlife leader --json``): 404 when
    none does."""
    from virtlife.services.leadership import current_leader

    return current_leader(services_of(request).need_store()).as_dict()


@router.get("/api/hosts", tags=["hosts"])
def hosts(request: Request, _t: Reader) -> list[dict[str, object]]:
    """Every host of the inventory: whether it answers now, its mode (``active`` or
    ``maintenance``; null without a store) and its latest load as the server sampled it
    in the background (null until two readings, or when the host stopped answering)."""
    svc = services_of(request)
    listing, _source = cached_listing(request.app.state.feed.cache)
    down = {p.host: p.message for p in listing.unreachable}
    counts: dict[str, int] = {}
    for row in listing.rows:
        counts[row.host] = counts.get(row.host, 0) + 1
    modes = ({r.name: r.mode for r in svc.store.hosts.list()} if svc.store is not None
             else {})
    loads = request.app.state.loads.loads()
    return [{"name": ref.name, "uri": ref.uri, "reachable": ref.name not in down,
             "problem": down.get(ref.name), "vms": counts.get(ref.name, 0),
             "mode": modes.get(ref.name),
             "load": loads[ref.name].as_dict() if ref.name in loads else None}
            for ref in sorted(svc.fleet.refs.values(), key=lambda r: r.name)]


@router.get("/api/vms", tags=["vms"], response_model=dict[str, object])
def vms(request: Request, _t: Reader, all: bool = True,
        host: Annotated[str | None, Query(max_length=255)] = None) -> Response:
    """The fleet's VMs (``all=false``: the active ones), with the operations each
    state allows, and the hosts that did not answer."""
    svc = services_of(request)
    if host is not None:
        svc.fleet.ref(host)  # 404 for an unknown host
    listing, _source = cached_listing(request.app.state.feed.cache, include_inactive=all,
                                      host=host)
    bodies: ListingBodies = request.app.state.bodies
    return Response(bodies.body((all, host), listing), media_type="application/json")


@router.get("/api/vms/{host}/{name}", tags=["vms"])
def vm(request: Request, host: HostName, name: VMName, _t: Reader) -> dict[str, object]:
    """One VM: its state and reason, the operations it allows, and its details."""
    info = services_of(request).lifecycle.info(ref_of(host, name))
    return {**info.as_dict(), **state_dict(info.host, info.name, info.state, info.uuid)}


@router.get("/api/vms/{host}/{name}/xml", tags=["vms"], response_class=PlainTextResponse)
def vm_xml(request: Request, host: HostName, name: VMName, _t: Reader,
           inactive: bool = False) -> str:
    """The VM's libvirt XML (the live one, or with ``inactive`` the persistent one)."""
    return services_of(request).lifecycle.dumpxml(ref_of(host, name), inactive=inactive)


@router.get("/api/vms/{host}/{name}/history", tags=["vms"])
def vm_history(request: Request, host: HostName, name: VMName, _t: Reader,
               limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, object]]:
    """The VM's journal, newest first."""
    entries = services_of(request).lifecycle.history(ref_of(host, name), limit=limit)
    return [e.as_dict() for e in entries]


@router.get("/api/history", tags=["operations"])
def history(request: Request, _t: Reader,
            host: Annotated[str | None, Query(max_length=255)] = None,
            limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, object]]:
    """The journal of every VM (of one host), newest first."""
    return [e.as_dict() for e in services_of(request).lifecycle.history(host=host,
                                                                        limit=limit)]


# -- lifecycle actions ------------------------------------------------------------------

class Action(StrEnum):
    START = "start"
    SHUTDOWN = "shutdown"
    REBOOT = "reboot"
    RESET = "reset"
    DESTROY = "destroy"
    SUSPEND = "suspend"
    RESUME = "resume"
    SAVE = "save"
    MANAGEDSAVE = "managedsave"
    MANAGEDSAVE_REMOVE = "managedsave-remove"
    PMSUSPEND = "pmsuspend"
    PMWAKEUP = "pmwakeup"
    UNDEFINE = "undefine"


class ActionOptions(BaseModel):
    """An action's options; each action takes only the ones listed in ``ACCEPTS``."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["auto", "agent", "acpi", "default"] | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=3600)
    force: bool | None = None
    paused: bool | None = None
    force_boot: bool | None = None
    wait_agent: bool | None = None
    graceful: bool | None = None
    path: str | None = Field(default=None, min_length=1, max_length=4096)
    target: Literal["mem", "disk", "hybrid"] | None = None
    managed_save: bool | None = None
    snapshots: bool | None = None
    discard_saved: bool | None = Field(
        default=None, description="start: boot fresh although the VM was saved to a file "
        "(the image is marked stale)")
    ignore_unreachable: bool | None = Field(
        default=None, description="start, resume: go ahead although a host where the VM "
        "was last seen cannot be asked whether it runs there")


ACCEPTS: dict[Action, frozenset[str]] = {
    Action.START: frozenset({"paused", "force_boot", "wait_agent", "timeout_s",
                             "discard_saved", "ignore_unreachable"}),
    Action.SHUTDOWN: frozenset({"mode", "force", "timeout_s"}),
    Action.REBOOT: frozenset({"mode", "force", "wait_agent", "timeout_s"}),
    Action.RESET: frozenset({"wait_agent", "timeout_s"}),
    Action.DESTROY: frozenset({"graceful", "timeout_s"}),
    Action.SUSPEND: frozenset({"timeout_s"}),
    Action.RESUME: frozenset({"timeout_s", "ignore_unreachable"}),
    Action.SAVE: frozenset({"path", "timeout_s"}),
    Action.MANAGEDSAVE: frozenset({"timeout_s"}),
    Action.MANAGEDSAVE_REMOVE: frozenset(),
    Action.PMSUSPEND: frozenset({"target", "timeout_s"}),
    Action.PMWAKEUP: frozenset({"wait_agent", "timeout_s"}),
    Action.UNDEFINE: frozenset({"managed_save", "snapshots"}),
}


def action_kwargs(action: Action, options: ActionOptions) -> dict[str, Any]:
    """The service call's keyword arguments; ``InvalidInput`` for an option the action
    does not take (or a save without its path)."""
    given = {k: v for k, v in options.model_dump().items() if v is not None}
    extra = sorted(set(given) - ACCEPTS[action])
    if extra:
        raise errors.InvalidInput(
            f"{action.value} does not take " + ", ".join(extra) + "; it takes "
            + (", ".join(sorted(ACCEPTS[action])) or "no options"))
    if action is Action.SAVE and "path" not in given:
        raise errors.InvalidInput("save needs a path: where on the VM's host to write the "
                                  "save file")
    return given


@router.post("/api/vms/{host}/{name}/actions/{action}", tags=["lifecycle"],
             status_code=202, response_model=Accepted)
def vm_action(request: Request, host: HostName, name: VMName, action: Action,
              token: Operator, options: ActionOptions | None = None) -> JSONResponse:
    """Start a lifecycle action on the VM; 202 with the operation id at once.

    A transition the VM's state does not allow is refused at once (409, nothing
    changed); the operation checks again when it runs, and a refusal then ends it as
    ``refused`` (see ``GET /api/operations/{id}``). A save's path must be absolute, and
    an operator's must lie under the allowed roots (403 else).
    """
    kwargs = action_kwargs(action, options or ActionOptions())
    ref = refuse_now(request, host, name, Operation(action.value))
    if "path" in kwargs:
        kwargs["path"] = caller_paths(request, token, host)(kwargs["path"], "the save file")
    method = getattr(services_of(request).lifecycle, action.value.replace("-", "_"))
    cache = request.app.state.feed.cache

    def work(call: Call) -> Any:
        try:
            return method(ref, **kwargs, **call)
        finally:  # libvirt sends no event for it: the listing's cache is told here
            if action is Action.MANAGEDSAVE_REMOVE:
                cache.forget_saved(host)
    return submit(request, f"{action.value} {ref}", ref, work)


# -- operations ---------------------------------------------------------------------------

@router.get("/api/operations", tags=["operations"])
def operations(request: Request, _t: Reader) -> list[dict[str, object]]:
    """The operations running now on any VM, from every virtlife process."""
    journal = services_of(request).need_store().journal
    return [e.as_dict() for e in journal.running()]


@router.get("/api/operations/{op_id}", tags=["operations"])
async def operation(request: Request, _t: Reader,
                    op_id: Annotated[str, Path(min_length=1, max_length=64)],
                    wait: Annotated[float, Query(ge=0, le=WAIT_MAX_S)] = 0
                    ) -> dict[str, object]:
    """One operation: status, last progress, result or error (``wait``: block up to that
    many seconds for it to end)."""
    jobs = services_of(request).jobs
    job = await run_in_threadpool(jobs.get, op_id)  # the journal, for another process's
    if wait and job.status == "running":
        await wait_for_job(jobs, op_id, wait)  # no thread held while it waits
        job = await run_in_threadpool(jobs.get, op_id)
    return {**job.as_dict(), "updates": [update_dict(u) for u in job.updates[-20:]]}


# -- events -----------------------------------------------------------------------------

REVOKED = {"type": "revoked", "message": "the token of this stream was revoked; log in "
                                          "again with a valid token"}


async def _sse(request: Request, hub: Hub, streams: Streams, token: str
               ) -> AsyncIterator[str]:
    subscription = hub.open()
    try:  # the caps again: others may have passed ``admit`` since
        lease = streams.open(token, lambda: subscription.end(dict(REVOKED)))
    except HTTPException as err:
        subscription.close()
        refused = {"type": "refused", "message": err.detail}
        yield f"event: refused\ndata: {json.dumps(refused)}\n\n"
        return
    try:
        # what a client needs to know first: the hosts' connection states so far
        hello = {"type": "hello", "version": __version__,
                 "hosts": dict(request.app.state.feed.hosts)}
        yield f"event: hello\ndata: {json.dumps(hello)}\n\n"
        while not await request.is_disconnected():
            message = await subscription.next(KEEPALIVE_S)
            if message is None:
                if subscription.dropped:
                    return
                yield ": keepalive\n\n"
                continue
            yield f"event: {message['type']}\ndata: {json.dumps(message)}\n\n"
    finally:
        streams.close(lease)
        subscription.close()


@router.get("/api/events", tags=["events"], response_class=StreamingResponse)
async def events(request: Request, _t: Reader) -> StreamingResponse:
    """Server-Sent Events: first ``hello`` (the hosts' connection states), then
    ``event`` (every domain and host event), ``state`` (a VM's
    state after a lifecycle event, with the operations it allows), ``progress`` and
    ``operation`` (the background operations' steps and ends). A stream whose token is
    revoked ends with ``revoked``; past the streams a token or the server may hold
    (``api.streams``), 503."""
    streams: Streams = request.app.state.streams
    token = presented_token(request) or ""
    streams.admit(token)  # 503 past the caps, before the first byte
    return StreamingResponse(_sse(request, hub_of(request), streams, token),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store",
                                      "X-Accel-Buffering": "no"})


# -- metrics ------------------------------------------------------------------------------

@router.get("/metrics", tags=["server"], response_class=PlainTextResponse)
def metrics(request: Request, _t: Reader) -> Response:
    """Prometheus text format: VMs per state and host, host reachability, operations."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
