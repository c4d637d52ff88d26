"""``virtlife leader``: which supervisor (``virtlife serve --supervise``) leads the store.

Thin over ``services.leadership.current_leader``: it reads the lease row and the
database's clock, and never takes part in the election.
"""

from __future__ import annotations

import click

from virtlife.cli.app import App, emit_json, json_option, pass_app, show_table


@click.command()
@json_option
@pass_app
def leader(app: App, as_json: bool) -> None:
    """Print the supervisor that leads now: machine, pid, epoch and since when.

    Exit 2 when none leads (none runs, or the last one's lease lapsed). The JSON
    has the keys machine, pid, epoch, since, host_name, expires_in_s and engine.

    Example: virtlife leader --json
    """
    from virtlife.services.leadership import current_leader

    view = current_leader(app.services.need_store())
    if as_json:
        emit_json(view.as_dict())
        return
    show_table(["MACHINE", "HOST", "PID", "EPOCH", "SINCE"],
               [(view.machine, view.host_name, view.pid, view.epoch,
                 f"{view.since:%Y-%m-%d %H:%M:%S} UTC")])
