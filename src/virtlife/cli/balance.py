"""Balancing commands: ``balance`` (its plan) and ``vm pin`` / ``vm unpin``.

Thin over ``services.balancing``; the services are imported inside the commands, so
that ``--help`` never loads libvirt. ``balance`` without ``--dry-run`` does not move
anything yet: the runner it shares with ``host maintenance`` is not built, and it says
so and exits non-zero rather than pretend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from virtlife.cli.app import App, emit_json, json_option, pass_app, show_table, warn
from virtlife.cli.params import SECONDS

if TYPE_CHECKING:
    from virtlife.services.balance import BalancePlan

EXIT_NOT_BUILT = 1


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}%"


def show_plan(plan: BalancePlan) -> None:
    """The plan as tables: the moves, then each host's load before and after."""
    if plan.moves:
        show_table(["VM", "FROM", "TO", "MEMORY MIB", "CPU CORES", "SPREAD AFTER"],
                   [(m.vm, m.source, m.destination, m.memory_mib,
                     "?" if m.cpu_cores is None else f"{m.cpu_cores:.2f}",
                     f"{m.spread_after:.1f}") for m in plan.moves], title="Moves")
    after = {load.host: load for load in plan.after}
    show_table(["HOST", "MEMORY", "CPU", "LOAD", "VMS", "MEMORY AFTER", "CPU AFTER",
                "LOAD AFTER"],
               [(b.host, _pct(b.memory_pct), _pct(b.cpu_pct), _pct(b.load_pct), b.vms,
                 _pct(after[b.host].memory_pct), _pct(after[b.host].cpu_pct),
                 _pct(after[b.host].load_pct)) for b in plan.before], title="Load")
    click.echo(f"spread {plan.spread_before:.1f} -> {plan.spread_after:.1f} points "
               f"(threshold {plan.threshold_pct:g}); {len(plan.moves)} move(s): "
               f"{plan.stop.value}")
    if plan.cpu_note:
        click.echo(f"note: {plan.cpu_note}")
    for held in plan.held:
        click.echo(f"kept: {held.vm} on {held.host}: {held.why.value}")
    for refused in plan.refused:
        click.echo(f"passed over: {refused}")
    for host, why in plan.left_out.items():
        click.echo(f"left out: {host}: {why}")


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the plan and the load after it; "
              "move nothing.")
@click.option("--threshold", "threshold_pct", type=click.FloatRange(0, 100, min_open=True),
              default=None, metavar="PCT",
              help="Act when the most and least loaded hosts differ by more than PCT "
                   "points (default: balance.threshold_pct in settings.toml, 20).")
@click.option("--max-moves", type=click.IntRange(1, 1000), default=None, metavar="N",
              help="At most N migrations (default: balance.max_moves, 5).")
@click.option("--window", "window_s", type=SECONDS, default=1.0, show_default=True,
              help="Seconds over which the CPU load is sampled.")
@json_option
@pass_app
def balance(app: App, dry_run: bool, threshold_pct: float | None, max_moves: int | None,
            window_s: float, as_json: bool) -> None:
    """Plan the fewest migrations that bring the hosts' load spread under a threshold.

    A host's load is its memory committed against total, and its CPU busy share when
    every host reports CPU statistics (the larger of the two). Pinned VMs (`vm pin`)
    and VMs the balancer moved within the cool-down (balance.cooldown_s) stay; no move
    undoes a recent one. Small, quickly migrating VMs go first.

    Without --dry-run nothing moves yet: running a plan needs the runner of `host
    maintenance`, which is not built; the command says so and exits 1.

    Example: virtlife balance --dry-run --threshold 15
    """
    from dataclasses import replace

    from virtlife.services.balance import BalanceLimits
    from virtlife.services.balancing import balance_plan
    from virtlife.services.placement import PlacementLimits

    services = app.services
    limits = BalanceLimits.from_settings(services.settings)
    if threshold_pct is not None:
        limits = replace(limits, threshold_pct=threshold_pct)
    if max_moves is not None:
        limits = replace(limits, max_moves=max_moves)
    plan, _ = balance_plan(services.fleet, services.store, limits,
                           PlacementLimits.from_settings(services.settings),
                           window_s=window_s)
    if as_json:
        emit_json({"dry_run": dry_run, "ran": False, **plan.as_dict()})
    else:
        show_plan(plan)
    if not dry_run and plan.moves:
        warn("balance cannot run a plan yet: the runner it shares with `host "
             "maintenance` is not built; nothing was moved (the plan above is what it "
             "would do: see --dry-run)")
        raise SystemExit(EXIT_NOT_BUILT)


@click.group()
def vm() -> None:
    """Per-VM settings: pin a VM to keep it out of balancing."""


@vm.command("pin")
@click.argument("ref", metavar="VM")
@json_option
@pass_app
def vm_pin(app: App, ref: str, as_json: bool) -> None:
    """Keep VM out of balancing (by its UUID: the pin follows it across hosts).

    Example: virtlife vm pin web1
    """
    from virtlife.services.balancing import pin

    services = app.services
    done = pin(services.fleet, services.need_store(), ref)
    if as_json:
        emit_json({"vm": done.vm, "uuid": done.uuid, "pinned": True, "changed": done.changed})
        return
    click.echo(f"pinned {done.vm} ({done.uuid})" if done.changed
               else f"{done.vm} was pinned already")


@vm.command("unpin")
@click.argument("ref", metavar="VM")
@json_option
@pass_app
def vm_unpin(app: App, ref: str, as_json: bool) -> None:
    """Let the balancer move VM again.

    Example: virtlife vm unpin web1
    """
    from virtlife.services.balancing import unpin

    services = app.services
    done = unpin(services.fleet, services.need_store(), ref)
    if as_json:
        emit_json({"vm": done.vm, "uuid": done.uuid, "pinned": False,
                   "changed": done.changed})
        return
    click.echo(f"unpinned {done.vm} ({done.uuid})" if done.changed
               else f"{done.vm} was not pinned")


COMMANDS = [balance, vm]
