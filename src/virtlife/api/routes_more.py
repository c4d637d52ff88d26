"""The REST API's snapshot routes, and what the agent and migration routes share with them.

Thin over ``Snapshots`` like ``virtlife snapshot``: ``GET .../snapshots`` reads;
create, revert and delete are background operations (202 + operation id), refused at
once (404, 409, 422, nothing started) when the VM's state, the snapshot's name or the
options make them impossible. The agent routes live in ``routes_agent``, the
migration routes in ``routes_migration``.

``run_or_accept`` is the shape of an operation whose caller usually wants its result
(an agent command, a freeze, a migration abort): it runs as a background operation
like every other (journal, events, ``GET /api/operations/{id}``), and the request
waits a bounded time for its end: 200 with the result, the operation's error as the
same 4xx/5xx the CLI's error maps to, or 202 with the operation id when it takes longer.
This module must not decide anything the services decide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from virtlife import errors
from virtlife.api.problems import problem
from virtlife.api.routes import (
    Accepted,
    HostName,
    Operator,
    Reader,
    VMName,
    accepted,
    ref_of,
    refuse_now,
    services_of,
    start_operation,
    submit,
)
from virtlife.services.base import Call
from virtlife.services.snapshots import check_create_options
from virtlife.states import Operation, VMState, check_transition
from virtlife.xml.snapshot import validate_description, validate_snapshot_name

router = APIRouter()

SnapName = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^/\x00-\x1f]+$",
                               description="the snapshot's name")]
ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "still running: follow the operation"}}


@dataclass(frozen=True)
class Reply:
    """A background operation's result that is no ``OperationResult`` (an exec's output,
    an agent's reply, a migration's outcome), as ``GET /api/operations/{id}`` shows it."""

    body: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        return self.body


def run_or_accept(request: Request, description: str, vm: str,
                  work: Callable[[Call], Any], wait_s: float) -> JSONResponse:
    """Run ``work`` as a background operation and wait up to ``wait_s`` for it: 200 with
    its result, its error as an error answer, or 202 with its id when it still runs."""
    failure: list[errors.VirtlifeError] = []

    def kept(call: Call) -> Any:
        try:
            return work(call)
        except errors.VirtlifeError as err:
            failure.append(err)
            raise

    op_id = start_operation(request, description, vm, kept)
    jobs = services_of(request).jobs
    job = jobs.wait(op_id, wait_s)
    if job.status == "running":
        return accepted(op_id)
    if failure:
        raise failure[0]
    if job.result is None:  # not a VirtlifeError: a defect, kept in the job and the log
        return problem(500, "internal_error", f"operation {op_id} failed: {job.error}")
    return JSONResponse(job.result.as_dict())


# -- snapshots ----------------------------------------------------------------------------

class SnapshotCreate(BaseModel):
    """``snapshot VM create``'s options."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=255,
                             description="default: the time, snap-YYYYMMDD-HHMMSS")
    description: str = Field(default="", max_length=65536)
    quiesce: bool = False
    no_quiesce_ok: bool = False
    disk_only: bool = False
    memory: bool = False
    freeze_bound_s: float | None = Field(default=None, gt=0, le=600)


class SnapshotRevert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sync_time: bool | None = Field(default=None, description="set the guest clock right "
                                   "after (default: the settings' agent.sync_time)")
    ignore_unreachable: bool = Field(default=False, description="revert to a running "
                                     "snapshot although a host where the VM was last seen "
                                     "cannot be asked whether it runs there")


@router.get("/api/vms/{host}/{name}/snapshots", tags=["snapshots"])
def snapshot_list(request: Request, host: HostName, name: VMName,
                  _t: Reader) -> list[dict[str, object]]:
    """The VM's snapshots, oldest first (``snapshot VM list --json``)."""
    return [s.as_dict() for s in services_of(request).snapshots.list(ref_of(host, name))]


@router.post("/api/vms/{host}/{name}/snapshots", tags=["snapshots"], status_code=202,
             response_model=Accepted)
def snapshot_create(request: Request, host: HostName, name: VMName, _t: Operator,
                    body: SnapshotCreate | None = None) -> JSONResponse:
    """Take a snapshot of the VM (``snapshot VM create``); 202 with the operation id."""
    options = body or SnapshotCreate()
    check_create_options(quiesce=options.quiesce, no_quiesce_ok=options.no_quiesce_ok,
                         disk_only=options.disk_only, memory=options.memory,
                         freeze_bound_s=options.freeze_bound_s)
    if options.name is not None:
        validate_snapshot_name(options.name)
    validate_description(options.description)
    svc = services_of(request)
    ref = ref_of(host, name)
    _, current = svc.lifecycle.state(ref)
    check_transition(Operation.SNAPSHOT_CREATE, name, current)
    if options.memory and current.state is VMState.SHUTOFF:
        raise errors.InvalidTransition(
            f"cannot take a memory snapshot of {name}: it is shut off and has no memory to "
            "keep; start it first, or leave out memory")
    if options.name is not None and options.name in _names(request, ref):
        raise errors.AlreadyExists(
            f"cannot take snapshot {options.name} of {name}: it already has one of that "
            "name; choose another, or delete it first")
    return submit(request, f"{Operation.SNAPSHOT_CREATE.value} {ref}", ref,
                  lambda call: svc.snapshots.create(
                      ref, options.name, description=options.description,
                      quiesce=options.quiesce, no_quiesce_ok=options.no_quiesce_ok,
                      disk_only=options.disk_only, memory=options.memory,
                      freeze_bound_s=options.freeze_bound_s, **call))


def _names(request: Request, ref: str) -> set[str]:
    return {s.name for s in services_of(request).snapshots.list(ref)}


def _existing(request: Request, host: str, name: str, snap: str, op: Operation) -> str:
    """The VM's reference once ``op`` may start on it and it has snapshot ``snap``."""
    ref = refuse_now(request, host, name, op)
    if snap not in _names(request, ref):
        raise errors.NotFound(f"{name} has no snapshot {snap}; `virtlife snapshot {name} "
                              "list` lists them")
    return ref


@router.post("/api/vms/{host}/{name}/snapshots/{snap}/revert", tags=["snapshots"],
             status_code=202, response_model=Accepted)
def snapshot_revert(request: Request, host: HostName, name: VMName, snap: SnapName,
                    _t: Operator, body: SnapshotRevert | None = None) -> JSONResponse:
    """Bring the VM back to snapshot ``snap`` (``snapshot VM revert``); 202."""
    ref = _existing(request, host, name, snap, Operation.SNAPSHOT_REVERT)
    asked = body or SnapshotRevert()
    svc = services_of(request)
    return submit(request, f"{Operation.SNAPSHOT_REVERT.value} {ref}", ref,
                  lambda call: svc.snapshots.revert(
                      ref, snap, sync_time=asked.sync_time,
                      ignore_unreachable=asked.ignore_unreachable, **call))


@router.delete("/api/vms/{host}/{name}/snapshots/{snap}", tags=["snapshots"],
               status_code=202, response_model=Accepted)
def snapshot_delete(request: Request, host: HostName, name: VMName, snap: SnapName,
                    _t: Operator, children: Annotated[bool, Query()] = False,
                    metadata_only: Annotated[bool, Query()] = False) -> JSONResponse:
    """Delete snapshot ``snap`` (``snapshot VM delete``; ``children``: its subtree too,
    ``metadata_only``: libvirt forgets it, its data stays); 202."""
    ref = _existing(request, host, name, snap, Operation.SNAPSHOT_DELETE)
    svc = services_of(request)
    return submit(request, f"{Operation.SNAPSHOT_DELETE.value} {ref}", ref,
                  lambda call: svc.snapshots.delete(ref, snap, children=children,
                                                    metadata_only=metadata_only, **call))
