"""``virtlife migrate VM DEST`` (with ``--check``) and ``migrate-abort VM``: thin over
``services.migration.Migrations``. Progress is a live display on a terminal
(``cli.migrate_view``), one line per update on stderr elsewhere, or one JSON line each
on stdout with ``--json``; the check report is a table (or JSON). virsh's spellings of
what virtlife does anyway are accepted (``--live``, ``--persistent``, ...), the others
answered with virtlife's (``cli.virsh``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from virtlife.cli.app import App, emit_json, emit_json_line, pass_app, show_result, show_table, warn
from virtlife.cli.params import SECONDS
from virtlife.cli.virsh import VirshCommand, one_value
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


# virsh's migrate options that virtlife has not, and what to type instead
VIRSH_ONLY = {
    "--suspend": "the VM runs at DEST after the move; to leave it paused there, pause it "
                 "first (`virtlife suspend VM`): a paused VM moves paused and stays paused "
                 "(--suspended pauses it only for the copy)",
    "--direct": "virtlife always migrates peer to peer (the source's libvirtd calls "
                "DEST's); leave it out",
    "--unsafe": "virtlife passes libvirt's unsafe flag itself when its checks prove every "
                "disk shared (see --check); leave it out",
    "--postcopy-bandwidth": "virtlife's --bandwidth caps post-copy too",
    "--parallel-connections": "give the number of connections to --parallel: --parallel N",
    "--domain": "name the VM and its destination as words: virtlife migrate VM DEST",
    "--desturi": "DEST is a host of virtlife's inventory (`virtlife host list`), named as a "
                 "word: virtlife migrate VM DEST",
    "--dname": "virtlife keeps the VM's name at DEST",
}
# virsh's bare flags that are options with a value here
VIRSH_BARE = {
    "--postcopy": "--postcopy auto (the default: post-copy when pre-copy does not "
                  "converge), --postcopy always (after the first pass, virsh's "
                  "--postcopy-after-precopy) or --postcopy never",
    "--parallel": "--parallel N moves memory over N connections (virsh's --parallel "
                  "--parallel-connections N)",
}
# virsh's spellings of what virtlife does for every move (see the docstring)
ALWAYS = ("--persistent", "--undefinesource", "--p2p", "--verbose", "--abort-on-error")


def _no_op(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(name, f"virsh_{name.lstrip('-').replace('-', '_')}", is_flag=True,
                        hidden=True)


def _kind(live: bool, offline: bool, suspended: bool) -> MigrationKind:
    kinds = [name for name, on in (("--live", live), ("--offline", offline),
                                   ("--suspended", suspended)) if on]
    if len(kinds) > 1:
        raise click.UsageError(f"{' and '.join(kinds)} ask for two kinds of move: give one "
                               "(a running VM moves live by default)")
    return MigrationKind.OFFLINE if offline else (
        MigrationKind.SUSPENDED if suspended else MigrationKind.LIVE)


def _with_aliases(ctx: click.Context, p: dict[str, Any]) -> dict[str, Any]:
    """The options as virtlife spells them, virsh's aliases folded in."""
    if p.pop("virsh_undefinesource") and p["keep_source"]:
        raise click.UsageError("--undefinesource and --keep-source ask for opposite things: "
                               "give one (the source's definition goes by default)")
    for name in ALWAYS:
        p.pop(f"virsh_{name.lstrip('-').replace('-', '_')}", None)
    p["copy_storage"] = one_value(ctx, "--copy-storage", p["copy_storage"], {
        "--copy-storage-all": "all" if p.pop("copy_storage_all") else None,
        "--copy-storage-inc": "inc" if p.pop("copy_storage_inc") else None})
    p["postcopy"] = one_value(ctx, "--postcopy", p["postcopy"], {
        "--postcopy-after-precopy": "always" if p.pop("postcopy_after_precopy") else None})
    p["on_timeout"] = one_value(ctx, "--on-timeout", p["on_timeout"], {
        "--timeout-suspend": "pause" if p.pop("timeout_suspend") else None,
        "--timeout-postcopy": "postcopy" if p.pop("timeout_postcopy") else None})
    p["kind"] = _kind(p.pop("live"), p.pop("offline"), p.pop("suspended"))
    return p


@click.command(cls=VirshCommand, virsh_only=VIRSH_ONLY, virsh_bare=VIRSH_BARE)
@click.argument("vm", metavar="VM")
@click.argument("dest", metavar="DEST")
@click.option("--check", "check_only", is_flag=True,
              help="Only run the pre-flight checks: one line each; nothing moves.")
@click.option("--live", is_flag=True, help="Move it running (the default).")
@click.option("--offline", is_flag=True, help="Move a shut-off VM's definition.")
@click.option("--suspended", is_flag=True,
              help="Keep the VM paused for the whole copy (resumed at DEST).")
@click.option("--shutdown-first", is_flag=True,
              help="With --offline: shut a running VM down first (the shutdown ladder).")
@click.option("--keep-source", is_flag=True,
              help="Keep the VM's definition at the source (shut off there).")
@click.option("--copy-storage", type=click.Choice([c.value for c in CopyStorage]),
              default=None, help="Copy the disks too (not shared storage).")
@click.option("--copy-storage-all", is_flag=True, hidden=True)  # virsh's spelling
@click.option("--copy-storage-inc", is_flag=True, hidden=True)
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
@click.option("--postcopy-after-precopy", is_flag=True, hidden=True)  # --postcopy always
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
@click.option("--timeout-suspend", is_flag=True, hidden=True)  # --on-timeout pause
@click.option("--timeout-postcopy", is_flag=True, hidden=True)  # --on-timeout postcopy
@click.option("--json", "as_json", is_flag=True, help="JSON: the report, or one line per "
              "progress update and the result.")
@_no_op("--persistent")
@_no_op("--undefinesource")
@_no_op("--p2p")
@_no_op("--verbose")
@_no_op("--abort-on-error")
@pass_app
def migrate(app: App, /, **given: Any) -> None:
    """Move VM to host DEST: live by default, checked first.

    The pre-flight checks run first and any fail refuses (exit 3) with the reason and
    the fix; warnings are printed. The move is verified: running at DEST, its agent
    answering, its clock set right, gone from the source.

    virsh's spellings are taken too: --live, --persistent, --undefinesource, --p2p,
    --verbose and --abort-on-error (what every move does), --copy-storage-all|inc,
    --postcopy-after-precopy (--postcopy always), --timeout-suspend|postcopy
    (--on-timeout pause|postcopy).

    Example: virtlife migrate web1 lab-b --check
    """
    _migrate(app, **_with_aliases(click.get_current_context(), given))


def _migrate(app: App, vm: str, dest: str, check_only: bool, kind: MigrationKind,
             shutdown_first: bool, keep_source: bool, copy_storage: str | None,
             max_downtime_ms: int | None, bandwidth_mib_s: int | None, auto_converge: bool,
             policy: str, postcopy: str, compressed: bool, parallel: int | None,
             tunnelled: bool, postcopy_resume: bool, timeout_s: float | None,
             on_timeout: str, as_json: bool) -> None:
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
