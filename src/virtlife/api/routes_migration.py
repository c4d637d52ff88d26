"""The REST API's migration routes, thin over ``Migrations`` like ``virtlife migrate``.

``POST .../migrate/check`` runs the pre-flight checks and answers the report (the
CLI's ``--check --json``; nothing moves, so a reader token will do). ``POST
.../migrate`` starts the move as a background operation (202 + operation id) after
what can be refused at once was refused: an unknown destination (404), options that
contradict each other (422, the CLI's message), a state the move does not start from
(409). The checks run again inside the operation, and any fail ends it as ``refused``;
its progress (phase, memory and disk figures in ``detail``) reaches the event stream
and ``GET /api/operations/{id}``, whose result is the CLI's ``--json`` outcome.
``POST .../migrate/abort`` ends a running migration (the VM stays at its source).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from virtlife import errors
from virtlife.api.limits import LongCallRoute
from virtlife.api.routes import (
    Accepted,
    HostName,
    Operator,
    Reader,
    VMName,
    ref_of,
    refuse_now,
    services_of,
    submit,
)
from virtlife.api.routes_more import ACCEPTED, Reply, run_or_accept
from virtlife.services.base import Call
from virtlife.services.migration.checks import CheckOptions, CopyStorage, MigrationKind
from virtlife.services.migration.policy import Limits, PostcopyMode, TimeoutAction
from virtlife.services.migration.service import MoveOptions, refuse_transport
from virtlife.states import Operation, check_transition

# their calls may block long (agent timeouts, waits): not on the default threads
router = APIRouter(route_class=LongCallRoute)

MIGRATE = "/api/vms/{host}/{name}/migrate"
ABORT_WAIT_S = 15.0
DestName = Field(min_length=1, max_length=255, pattern=r"^[^/\x00-\x1f]+$",
                 description="the destination host, as the inventory names it")


class CheckBody(BaseModel):
    """What the checks judge: the kind of move (live unless ``offline`` or
    ``suspended``) and how the disks and memory travel."""

    model_config = ConfigDict(extra="forbid")
    dest: str = DestName
    offline: bool = False
    suspended: bool = False
    live: bool = False
    shutdown_first: bool = False
    copy_storage: Literal["all", "inc"] | None = None
    postcopy: Literal["auto", "never", "always"] = "auto"
    compressed: bool = False

    def kind(self) -> MigrationKind:
        chosen = [k for k, on in (("offline", self.offline), ("suspended", self.suspended),
                                  ("live", self.live)) if on]
        if len(chosen) > 1:
            raise errors.InvalidInput(f"{' and '.join(chosen)} contradict each other: a "
                                      "move is one of live, suspended or offline")
        return (MigrationKind.OFFLINE if self.offline else
                MigrationKind.SUSPENDED if self.suspended else MigrationKind.LIVE)

    def check_options(self) -> CheckOptions:
        return CheckOptions(kind=self.kind(),
                            copy_storage=CopyStorage(self.copy_storage)
                            if self.copy_storage else None,
                            shutdown_first=self.shutdown_first,
                            postcopy=PostcopyMode(self.postcopy), compressed=self.compressed)


class MigrateBody(CheckBody):
    """``virtlife migrate``'s options (``postcopy_resume``: recover a failed post-copy)."""

    keep_source: bool = False
    max_downtime_ms: int | None = Field(default=None, ge=1, le=3_600_000)
    bandwidth_mib_s: int | None = Field(default=None, ge=1, le=1_000_000)
    auto_converge: bool = False
    policy: Literal["auto", "off"] = "auto"
    parallel: int | None = Field(default=None, ge=1, le=255)
    tunnelled: bool = False
    postcopy_resume: bool = False
    timeout_s: float | None = Field(default=None, gt=0, le=86_400,
                                    description="then on_timeout (default 600 s)")
    on_timeout: Literal["abort", "postcopy", "pause"] = "abort"

    def limits(self) -> Limits:
        return Limits(auto_converge=self.auto_converge, postcopy=PostcopyMode(self.postcopy),
                      on_timeout=TimeoutAction(self.on_timeout),
                      escalate=self.policy == "auto",
                      **({"max_downtime_ms": self.max_downtime_ms}
                         if self.max_downtime_ms else {}))

    def move(self) -> MoveOptions:
        return MoveOptions(keep_source=self.keep_source, parallel=self.parallel,
                           tunnelled=self.tunnelled, bandwidth_mib_s=self.bandwidth_mib_s)


@router.post(f"{MIGRATE}/check", tags=["migration"])
def migrate_check(request: Request, host: HostName, name: VMName, _t: Reader,
                  body: CheckBody) -> dict[str, object]:
    """The pre-flight checks of a move to ``dest`` (``migrate VM DEST --check --json``):
    each check's status, reason and fix; ``ok`` false when one failed. Nothing moves."""
    options = body.check_options()
    return services_of(request).migrations.check(ref_of(host, name), body.dest,
                                                 options).as_dict()


@router.post(MIGRATE, tags=["migration"], status_code=202, response_model=Accepted)
def migrate(request: Request, host: HostName, name: VMName, _t: Operator,
            body: MigrateBody) -> JSONResponse:
    """Move the VM to ``dest``: checked first, verified at the end; 202 with the
    operation id. Its result is the outcome: checks, policy steps, final statistics."""
    svc = services_of(request)
    options, limits, move = body.check_options(), body.limits(), body.move()
    ref = ref_of(host, name)
    svc.fleet.ref(body.dest)  # 404 for a destination the inventory does not name
    if body.dest == host:
        raise errors.InvalidInput(f"{name} is on {host} already: name another host")
    _, current = svc.lifecycle.state(ref)
    if body.postcopy_resume:
        check_transition(Operation.MIGRATE_RESUME, name, current)
    elif options.kind is not MigrationKind.OFFLINE:
        check_transition(Operation.MIGRATE, name, current)
    elif body.shutdown_first and current.state.is_active:
        check_transition(Operation.SHUTDOWN, name, current)  # the service shuts it down
    else:
        check_transition(Operation.MIGRATE_OFFLINE, name, current)
    if not body.postcopy_resume:
        refuse_transport(svc.fleet.resolve(ref), body.dest, options, move)
    migrations, dest, timeout_s = svc.migrations, body.dest, body.timeout_s

    def work(call: Call) -> Reply:
        if body.postcopy_resume:
            outcome = migrations.resume_postcopy(ref, dest, move=move, timeout_s=timeout_s,
                                                 **call)
        else:
            outcome = migrations.migrate(ref, dest, options=options, limits=limits, move=move,
                                         timeout_s=timeout_s, **call)
        return Reply(outcome.as_dict())

    what = Operation.MIGRATE_RESUME if body.postcopy_resume else (
        Operation.MIGRATE_OFFLINE if options.kind is MigrationKind.OFFLINE
        else Operation.MIGRATE)
    return submit(request, f"{what.value} {ref} {dest}", ref, work)


@router.post(f"{MIGRATE}/abort", tags=["migration"], responses=ACCEPTED)
def migrate_abort(request: Request, host: HostName, name: VMName,
                  _t: Operator) -> JSONResponse:
    """Abort the migration running on the VM (started by any process); it stays at its
    source. 200 with the result, or 202 while libvirt still ends it."""
    ref = refuse_now(request, host, name, Operation.MIGRATE_ABORT)
    migrations = services_of(request).migrations
    return run_or_accept(request, f"{Operation.MIGRATE_ABORT.value} {ref}", ref,
                         lambda call: migrations.abort(ref, **call), ABORT_WAIT_S)
