"""``virtlife host maintenance HOST`` and ``host activate HOST``: thin over
``services.maintenance``.

The dry run is a table (VM, state, kind, from, to, checks or reason). A real evacuation
shows each VM's phase and its migration's phase and percent, and the overall moved,
failed and left (``cli.evacuate_view``: a live area on a terminal, lines elsewhere), and
ends with the summary table; with ``--json`` every update is a JSON line and the summary
the last one. The exit status is 1 when a VM stays on the host against
the plan (a failure, no destination, a cancel), so that a script can tell.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING

import click

from virtlife.cli.app import App, emit_json, emit_json_line, json_option, pass_app, show_table, warn
from virtlife.cli.params import SECONDS

if TYPE_CHECKING:
    from virtlife.services.maintenance import EvacuationPlan, EvacuationResult
    from virtlife.services.progress import Update

EXIT_STAYS = 1  # a VM stays on the host


def _json_line(update: Update) -> None:
    emit_json_line({"op_id": update.op_id, "vm": update.vm, "stage": update.stage,
                    "message": update.message, "fraction": update.fraction,
                    "detail": None if update.detail is None else dict(update.detail)})


def _show_plan(plan: EvacuationPlan) -> None:
    show_table(["VM", "STATE", "KIND", "FROM", "TO", "CHECKS OR REASON"],
               [(v.vm, v.state, v.kind, v.source, v.destination or "-",
                 v.checks if v.destination else v.reason) for v in plan.vms],
               title=f"evacuation plan of {plan.host} (dry run: nothing moves)",
               fit="CHECKS OR REASON")
    stays = plan.stays
    if stays:
        click.echo(f"{len(stays)} VM(s) would stay on {plan.host}: "
                   + ", ".join(v.vm for v in stays))


def _show_summary(result: EvacuationResult) -> None:
    show_table(["VM", "FROM", "TO", "OUTCOME", "SECONDS", "REASON"],
               [(s.vm, s.source, s.destination or "-", s.phase.value,
                 "-" if s.seconds is None else f"{s.seconds:.1f}", s.reason or "-")
                for s in result.steps],
               title=f"evacuation of {result.host} (operation {result.op_id})", fit="REASON")
    click.echo(f"{result.host} is in maintenance; {result.summary()}")


@click.command("maintenance")
@click.argument("name", metavar="HOST")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (each VM's destination and checks, or why it stays); "
                   "nothing changes.")
@click.option("--concurrency", type=click.IntRange(min=1), default=2, show_default=True,
              help="Migrations at once (within placement.max_outgoing).")
@click.option("--timeout", "timeout_s", type=SECONDS, default=None,
              help="Per VM: then its migration is aborted (default 600 s).")
@click.option("--stopped", type=click.Choice(["move", "leave"]), default="move",
              show_default=True, help="Shut-off VMs: move their definitions offline, or "
              "leave them defined on HOST.")
@click.option("--cancel", is_flag=True,
              help="Stop the evacuation of HOST that runs (from any shell): no new "
                   "migration starts, the running ones are aborted.")
@json_option
@pass_app
def host_maintenance(app: App, name: str, dry_run: bool, concurrency: int,
                     timeout_s: float | None, stopped: str, cancel: bool,
                     as_json: bool) -> None:
    """Put HOST in maintenance and move its VMs to the other hosts.

    Nothing is placed on HOST any more. Running and paused VMs move live, shut-off
    ones offline (or stay, with --stopped leave), each through `virtlife migrate`'s
    checks and policy, as child operations of the evacuation's operation. A VM that
    fails is retried once on another host, then reported. Ctrl-C (or --cancel from
    another shell) starts no new migration and aborts the running ones; HOST stays in
    maintenance until `virtlife host activate HOST`. Refused for the last active host
    and for a host that cannot be reached. Exits 1 when a VM stays on HOST (a shut-off
    VM left by --stopped leave does not count); the dry run too.

    Example: virtlife host maintenance hv2 --dry-run
    """
    from virtlife.services.maintenance import Stopped

    if cancel and dry_run:
        raise click.UsageError("--cancel stops a running evacuation and --dry-run plans "
                               "one: give one of them")
    m = app.services.maintenance
    if cancel:
        op_id = m.ask_cancel(name)
        if as_json:
            emit_json({"host": name, "op_id": op_id, "cancel_asked": True})
        else:
            click.echo(f"asked the evacuation of {name} (operation {op_id}) to stop: it "
                       "starts no new migration and aborts the running ones")
        return
    if dry_run:
        plan = m.plan(name, stopped=Stopped(stopped))
        if as_json:
            emit_json(plan.as_dict())
        else:
            _show_plan(plan)
        raise SystemExit(EXIT_STAYS if plan.stays else 0)
    run = functools.partial(m.evacuate, name, concurrency=concurrency, timeout_s=timeout_s,
                            stopped=Stopped(stopped), stopping=app.services.stopping)
    if as_json:
        lock = threading.Lock()

        def sink(update: Update) -> None:
            with lock:  # the moves report from their own threads
                _json_line(update)

        result = run(progress=sink)
    else:
        from virtlife.cli.evacuate_view import EvacuationView  # Rich only when shown

        with EvacuationView() as view:
            result = run(progress=view)
    if as_json:
        emit_json_line({"summary": result.as_dict()})
    else:
        _show_summary(result)
    for note in result.notes:
        warn(note)
    raise SystemExit(EXIT_STAYS if result.stays else 0)


@click.command("activate")
@click.argument("name", metavar="HOST")
@json_option
@pass_app
def host_activate(app: App, name: str, as_json: bool) -> None:
    """End HOST's maintenance: VMs may be placed there again.

    Refused while an evacuation of HOST runs (stop it with `virtlife host maintenance
    HOST --cancel`).

    Example: virtlife host activate hv2
    """
    before = app.services.maintenance.activate(name)
    if as_json:
        emit_json({"host": name, "mode": "active", "was": before.mode})
    elif before.maintenance:
        click.echo(f"{name} is active: it takes VMs again")
    else:
        click.echo(f"{name} was active already")
