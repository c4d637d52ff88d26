"""The REST API's fleet routes: host maintenance, activate, the balance plan and pins.

Thin over ``services.maintenance`` and ``services.balancing`` like ``virtlife host
maintenance``, ``host activate``, ``balance --dry-run`` and ``vm pin``/``unpin``:

- ``GET /api/hosts/{host}/maintenance/plan``: the dry run (``--dry-run --json``);
  nothing changes, so a reader's token will do.
- ``POST /api/hosts/{host}/maintenance``: the evacuation as a background operation,
  202 with its id, which is also the id of the evacuation's journal row (the parent of
  each move). What it would refuse at once is refused before the 202: the last active
  host (409), an unreachable one (503), one being evacuated already (409). Its
  progress (the plan, each VM's step, the overall counts, each migration's own
  updates) goes on the event stream. An evacuation that leaves a VM on the host
  against the plan, or is cancelled, ends as ``error`` naming each VM that stays;
  its result keeps every step either way.
- ``POST .../maintenance/cancel``: the CLI's ``--cancel`` (the flag on the parent's
  journal row, read by whichever process evacuates); 404 when none runs.
- ``POST /api/hosts/{host}/activate``: the end of the maintenance; 409 while an
  evacuation of the host runs.
- ``GET /api/balance/plan``: the balancer's plan; running it is not built (as in the
  CLI), so there is no route that runs it.
- ``PUT``/``DELETE /api/vms/{host}/{name}/pin``: keep the VM out of balancing, or not.

This module decides nothing the services decide.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from virtlife.api.limits import LongCallRoute
from virtlife.api.routes import (
    Accepted,
    HostName,
    Operator,
    Reader,
    VMName,
    ref_of,
    services_of,
    submit,
)
from virtlife.api.routes_more import Reply
from virtlife.services.base import Call

# their calls read every host (and may wait for one that does not answer)
router = APIRouter(route_class=LongCallRoute)

MAINTENANCE = "/api/hosts/{host}/maintenance"
StoppedChoice = Literal["move", "leave"]


class MaintenanceBody(BaseModel):
    """``host maintenance``'s options."""

    model_config = ConfigDict(extra="forbid")
    concurrency: int = Field(default=2, ge=1, le=64, description="migrations at once "
                             "(within placement.max_outgoing)")
    timeout_s: float | None = Field(default=None, gt=0, le=86_400, description="per VM: "
                                    "then its migration is aborted (default 600 s)")
    stopped: StoppedChoice = Field(default="move", description="shut-off VMs: move their "
                                   "definitions offline, or leave them on the host")


@router.get(f"{MAINTENANCE}/plan", tags=["hosts"])
def maintenance_plan(request: Request, host: HostName, _t: Reader,
                     stopped: StoppedChoice = "move") -> dict[str, object]:
    """The evacuation's dry run (``host maintenance HOST --dry-run --json``): each VM
    with its destination and checks, or why it stays; ``stays`` lists the VMs that
    would stay against the plan. Nothing changes."""
    from virtlife.services.maintenance import Stopped

    plan = services_of(request).maintenance.plan(host, stopped=Stopped(stopped))
    return plan.as_dict()


@router.post(MAINTENANCE, tags=["hosts"], status_code=202, response_model=Accepted)
def maintenance(request: Request, host: HostName, _t: Operator,
                body: MaintenanceBody | None = None) -> JSONResponse:
    """Put the host in maintenance and move its VMs away (``host maintenance HOST``);
    202 with the operation id, which is the evacuation's (its moves are its children).
    The result is the evacuation's summary; an evacuation that leaves a VM behind
    against the plan, or is cancelled, ends as ``error`` naming each VM that stays."""
    from virtlife.services.maintenance import EvacuationIncomplete, Stopped

    options = body or MaintenanceBody()
    svc = services_of(request)
    m = svc.maintenance
    m.refuse_start(host)  # 404, 409, 503 now, with nothing started
    stopped = Stopped(options.stopped)

    def work(call: Call) -> Reply:
        result = m.evacuate(host, concurrency=options.concurrency,
                            timeout_s=options.timeout_s, stopped=stopped,
                            progress=call.get("progress"), stopping=svc.stopping,
                            op_id=call.get("op_id"))
        if result.stays or result.cancelled:
            raise EvacuationIncomplete(result)
        return Reply(result.as_dict())

    return submit(request, f"host-maintenance {host}", f"{host}/", work)


@router.post(f"{MAINTENANCE}/cancel", tags=["hosts"])
def maintenance_cancel(request: Request, host: HostName, _t: Operator) -> dict[str, object]:
    """Stop the evacuation of the host, run by any process (``host maintenance HOST
    --cancel``): it starts no new migration and aborts the running ones; the host stays
    in maintenance. 404 when none runs."""
    op_id = services_of(request).maintenance.ask_cancel(host)
    return {"host": host, "op_id": op_id, "cancel_asked": True}


@router.post("/api/hosts/{host}/activate", tags=["hosts"])
def activate(request: Request, host: HostName, _t: Operator) -> dict[str, object]:
    """End the host's maintenance: VMs may be placed there again (``host activate
    HOST``). 409 while an evacuation of it runs. ``was``: its mode before."""
    before = services_of(request).maintenance.activate(host)
    return {"host": host, "mode": "active", "was": before.mode}


@router.get("/api/balance/plan", tags=["hosts"])
def balance_plan(request: Request, _t: Reader,
                 threshold: Annotated[float | None, Query(gt=0, le=100, description=
                                      "spread in points (default balance.threshold_pct)")]
                 = None,
                 max_moves: Annotated[int | None, Query(ge=1, le=1000)] = None,
                 window_s: Annotated[float, Query(ge=0.1, le=10, description=
                                     "seconds over which the CPU load is sampled")] = 1.0,
                 ) -> dict[str, object]:
    """The balancer's plan (``balance --dry-run --json``): the fewest migrations that
    bring the hosts' load spread under the threshold, and each host's load before and
    after. Nothing moves: running a plan is not built yet."""
    from virtlife.services.balance import BalanceLimits
    from virtlife.services.balancing import balance_plan as plan_of
    from virtlife.services.placement import PlacementLimits

    svc = services_of(request)
    limits = BalanceLimits.from_settings(svc.settings)
    if threshold is not None:
        limits = replace(limits, threshold_pct=threshold)
    if max_moves is not None:
        limits = replace(limits, max_moves=max_moves)
    plan, _ = plan_of(svc.fleet, svc.store, limits,
                      PlacementLimits.from_settings(svc.settings), window_s=window_s)
    return {"dry_run": True, "ran": False, **plan.as_dict()}


def _pinned(request: Request, host: str, name: str, pinned: bool) -> dict[str, object]:
    from virtlife.services.balancing import pin, unpin

    svc = services_of(request)
    done = (pin if pinned else unpin)(svc.fleet, svc.need_store(), ref_of(host, name))
    return {"vm": done.vm, "uuid": done.uuid, "pinned": pinned, "changed": done.changed}


@router.put("/api/vms/{host}/{name}/pin", tags=["vms"])
def vm_pin(request: Request, host: HostName, name: VMName, _t: Operator) -> dict[str, object]:
    """Keep the VM out of balancing (``vm pin``; by its UUID, so the pin follows it
    across hosts). ``changed`` false: it was pinned already."""
    return _pinned(request, host, name, True)


@router.delete("/api/vms/{host}/{name}/pin", tags=["vms"])
def vm_unpin(request: Request, host: HostName, name: VMName,
             _t: Operator) -> dict[str, object]:
    """Let the balancer move the VM again (``vm unpin``). ``changed`` false: it was not
    pinned."""
    return _pinned(request, host, name, False)
