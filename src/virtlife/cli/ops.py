"""Operation commands: ``operations`` (what runs now, or ran) and ``operation ID``.

Thin over the journal's running rows (every process's operations, by id) and
``Services.jobs``; they never change a VM.
"""

from __future__ import annotations

import click

from virtlife.cli.app import App, emit_json, json_option, pass_app, show_table


@click.command()
@click.option("--all", "show_all", is_flag=True,
              help="Also the operations that ended, newest first.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="With --all: at most this many.")
@json_option
@pass_app
def operations(app: App, show_all: bool, limit: int, as_json: bool) -> None:
    """List the operations running on any VM now, from every virtlife process.

    An operation whose process died is shown as interrupted.

    Example: virtlife operations --all --limit 5
    """
    journal = app.services.need_store().journal
    journal.sweep()
    entries = journal.list(limit=limit) if show_all else journal.running()
    if as_json:
        emit_json([e.as_dict() for e in entries])
        return
    show_table(["ID", "OPERATION", "VM", "OUTCOME", "STARTED", "BY", "PID"],
               [(e.op_id, e.operation, f"{e.host}/{e.vm}", e.outcome,
                 f"{e.started_at:%Y-%m-%d %H:%M:%S}", f"{e.actor.user} ({e.actor.process})",
                 e.process.pid) for e in entries])


@click.command()
@click.argument("op_id", metavar="ID")
@json_option
@pass_app
def operation(app: App, op_id: str, as_json: bool) -> None:
    """Show one operation by its id (as printed by --json results and `operations`).

    Example: virtlife operation 3f2a9c1b04de
    """
    job = app.services.jobs.get(op_id)
    journal = app.services.need_store().journal
    entry = journal.get(op_id)
    children = journal.children(op_id) if entry is not None else []
    if as_json:
        shown = entry.as_dict() if entry is not None else job.as_dict()
        if children:  # an evacuation's migrations
            shown["children"] = [c.as_dict() for c in children]
        emit_json(shown)
        return
    if entry is None:
        click.echo(f"{op_id}: {job.description}: {job.status}")
        return
    show_table(["field", "value"], [(k, "-" if v is None else v)
                                    for k, v in entry.as_dict().items()])
    if children:
        show_table(["ID", "OPERATION", "VM", "OUTCOME", "SECONDS", "DETAIL"],
                   [(c.op_id, c.operation, f"{c.host}/{c.vm}", c.outcome,
                     f"{c.duration_s:.1f}", c.detail) for c in children],
                   title=f"the operations of {op_id}", fit="DETAIL")


COMMANDS = [operations, operation]
