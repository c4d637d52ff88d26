"""``virtlife migrate VM DEST`` (with ``--check``) and ``migrate-abort VM``: thin over
``services.migration.Migrations``. Progress is a live display on a terminal
(``cli.migrate_view``), one line per update on stderr elsewhere, or one JSON line each
on stdout with ``--json``; the check report is a table (or JSON)."""

from __future__ import annotations

from collections.abc import Callable

import click

from virtlife.cli.app import App, emit_json, emit_json_line, pass_app, show_result, show_table, warn
from virtlife.cli.params import SECONDS
from virtlife.services.migration.checks import (
    CheckOptions,
    CopyStorage,
    MigrationKind,
    Report,
)
from virtlife.services.migration.policy import Limits, PostcopyMode, TimeoutAction
from virtlife.services.progress import Update


def _show_report(report: Report) -> None:
    show_table(["check", "result", "reason", "fix"],
               [(c.name, c.status.value, c.reason, c.fix or "-") for c in report.checks],
               title=f"{report.vm}: {report.source} -> {report.destination} "
                     f"({report.kind.value})")
    click.echo(f"unsafe flag: {'yes' if report.allows_unsafe else 'no'} "
               f"({report.unsafe_reason})")


@click.command()
@click.argument("vm", metavar="VM")
@click.argument("dest", metavar="DEST")
@click.option("--check", "check_only", is_flag=True,
              help="Only run the pre-flight checks: one line each; nothing moves.")
@click.option("--offline", is_flag=True, help="Move a shut-off VM's definition.")
@click.option("--suspended", is_flag=True,
              help="Keep the VM paused for the whole copy (resumed at DEST).")
@click.option("--shutdown-first", is_flag=True,
              help="With --offline: shut a running VM down first (the shutdown ladder).")
@click.option("--keep-source", is_flag=True,
              help="Keep the VM's definition at the source (shut off there).")
@click.option("--copy-storage", type=click.Choice([c.value for c in CopyStorage]),
              default=None, help="Copy the disks too (not shared storage).")
@click.option("--max-downtime", "max_downtime_ms", type=click.IntRange(min=1), default=None,
              help="The policy's bound on the pause at the switch-over, in ms.")
@click.option("--bandwidth", "bandwidth_mib_s", type=click.IntRange(min=1), default=None,
              help="Cap the migration's bandwidth, MiB/s.")
@click.option("--auto-converge", is_flag=True, help="Arm QEMU's vCPU throttling.")
@click.option("--policy", type=click.Choice(["auto", "off"]), default="auto",
              show_default=True, help="auto: escalate when pre-copy does not converge "
              "(raise downtime, auto-converge, post-copy); off: never.")
@click.option("--postcopy", type=click.Choice([m.value for m in PostcopyMode]),
              default="auto", show_default=True)
@click.option("--compressed", is_flag=True, help="XBZRLE compression (see the warning).")
@click.option("--parallel", type=click.IntRange(min=1, max=255), default=None,
              metavar="N", help="Move memory over N connections (QEMU multifd).")
@click.option("--tunnelled", is_flag=True,
              help="Carry the memory over libvirt's own connection.")
@click.option("--postcopy-resume", is_flag=True,
              help="Recover a post-copy migration that failed (the VM paused at DEST, "
              "'post-copy failed') once the link is back.")
@click.option("--timeout", "timeout_s", type=SECONDS, default=None,
              help="Then --on-timeout (default 600 s).")
@click.option("--on-timeout", type=click.Choice([a.value for a in TimeoutAction]),
              default="abort", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON: the report, or one line per "
              "progress update and the result.")
@pass_app
def migrate(app: App, vm: str, dest: str, check_only: bool, offline: bool, suspended: bool,
            shutdown_first: bool, keep_source: bool, copy_storage: str | None,
            max_downtime_ms: int | None, bandwidth_mib_s: int | None, auto_converge: bool,
            policy: str, postcopy: str, compressed: bool, parallel: int | None,
            tunnelled: bool, postcopy_resume: bool, timeout_s: float | None,
            on_timeout: str, as_json: bool) -> None:
    """Move VM to host DEST: live by default, checked first.

    The pre-flight checks run first and any fail refuses (exit 3) with the reason and
    the fix; warnings are printed. The move is verified: running at DEST, its agent
    answering, its clock set right, gone from the source.

    Example: virtlife migrate web1 lab-b --check
    """
    kind = MigrationKind.OFFLINE if offline else (
        MigrationKind.SUSPENDED if suspended else MigrationKind.LIVE)
    options = CheckOptions(kind=kind,
                           copy_storage=CopyStorage(copy_storage) if copy_storage else None,
                           shutdown_first=shutdown_first, postcopy=PostcopyMode(postcopy),
                           compressed=compressed)
    from virtlife.services.migration.service import MigrationOutcome, MoveOptions

    move = MoveOptions(keep_source=keep_source, parallel=parallel, tunnelled=tunnelled,
                       bandwidth_mib_s=bandwidth_mib_s)
    s = app.services.migrations
    if check_only:
        report = s.check(vm, dest, options)
        if as_json:
            emit_json(report.as_dict())
        else:
            _show_report(report)
        raise SystemExit(0 if report.ok else 3)
    limits = Limits(auto_converge=auto_converge, postcopy=PostcopyMode(postcopy),
                    on_timeout=TimeoutAction(on_timeout), escalate=policy == "auto",
                    **({"max_downtime_ms": max_downtime_ms} if max_downtime_ms else {}))

    def json_line(update: Update) -> None:
        emit_json_line({"op_id": update.op_id, "stage": update.stage,
                        "message": update.message, "fraction": update.fraction,
                        "detail": None if update.detail is None else dict(update.detail)})

    def run(progress: Callable[[Update], None]) -> MigrationOutcome:
        call = {**app.call, "progress": progress}
        if postcopy_resume:
            return s.resume_postcopy(vm, dest, move=move, timeout_s=timeout_s,
                                     **call)  # type: ignore[arg-type]
        return s.migrate(vm, dest, options=options, limits=limits, move=move,
                         timeout_s=timeout_s, **call)  # type: ignore[arg-type]

    if as_json:
        outcome = run(json_line)
    else:
        from virtlife.cli.migrate_view import MigrationView  # Rich's Live only when shown

        with MigrationView() as view:  # plain "… " lines where stderr is no terminal
            outcome = run(view)
    if as_json:
        emit_json_line(outcome.as_dict())
        for message in outcome.result.warnings:
            warn(message)
    else:
        show_result(outcome.result)


@click.command("migrate-abort")
@click.argument("vm", metavar="VM")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def migrate_abort(app: App, vm: str, as_json: bool) -> None:
    """Abort the migration running on VM (started by any process); it stays at its
    source, running.

    Example: virtlife migrate-abort web1
    """
    show_result(app.services.migrations.abort(vm, **app.call), as_json)


COMMANDS = [migrate, migrate_abort]
