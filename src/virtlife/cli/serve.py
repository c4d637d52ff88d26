"""``virtlife serve`` (the REST API and web UI) and ``virtlife token create|list|revoke``.

Thin over ``api.app`` and the store's tokens. ``serve`` binds to loopback unless TLS
settings or ``--insecure`` are given, and prints where it listens. The API's modules
(FastAPI, uvicorn) are imported only when the server starts.
"""

from __future__ import annotations

from pathlib import Path

import click

from virtlife.cli.app import App, emit_json, json_option, pass_app, show_table, warn
from virtlife.cli.params import CheckedPath
from virtlife.errors import InvalidInput


@click.command()
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="ADDR:PORT",
              help="Where to listen. Other than loopback needs --tls-cert/--tls-key or "
                   "--insecure.")
@click.option("--tls-cert", type=CheckedPath(exists=True, dir_okay=False),
              default=None, help="TLS certificate (PEM) for HTTPS.")
@click.option("--tls-key", type=CheckedPath(exists=True, dir_okay=False),
              default=None, help="TLS private key (PEM) for HTTPS.")
@click.option("--insecure", is_flag=True,
              help="Allow a non-loopback address without TLS (a trusted network only).")
@click.option("--server-name", "server_names", multiple=True, metavar="NAME",
              help="A name clients use for this server (the Host they send), beside the "
                   "listen address and localhost; repeat for more.")
@click.option("--supervise", is_flag=True,
              help="Also stand for the fleet's supervisor: one leader among the servers "
                   "sharing the store (`virtlife leader` says which).")
@pass_app
def serve(app: App, listen: str, tls_cert: Path | None, tls_key: Path | None,
          insecure: bool, server_names: tuple[str, ...], supervise: bool) -> None:
    """Serve the REST API and the web UI until Ctrl-C or SIGTERM.

    Every route but /api/health needs a token: `virtlife token create NAME`.
    The API's OpenAPI description is at /openapi.json (with a token). A request
    naming another Host than the listen address, localhost or a --server-name is
    refused (400).

    With --supervise the server also takes part in electing one leader among the
    servers that share the store: a lease in the store with a fencing epoch, renewed
    every 2 s; a stopped or dead leader is replaced within 9 s (PostgreSQL). On a
    SQLite store the election is a file lock: one machine only.

    Example: virtlife serve --listen 127.0.0.1:8080
    """
    from virtlife.api.app import check_listen, parse_listen
    from virtlife.api.app import serve as run_server

    where = parse_listen(listen)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    caution = check_listen(where, tls=tls_cert is not None, insecure=insecure)
    if caution:
        warn(caution)
    services = app.services
    services.need_store()  # tokens live in the store: no store, no server
    tell_carried_over(app)
    unnamed = [name for name in services.fleet.refs if "/" in name]
    if unnamed:
        raise InvalidInput(
            f"cannot serve {unnamed[0]}: the API names hosts in its paths, and a URI is no "
            "name; add it to the inventory (`virtlife host add NAME URI`) and serve without -c")
    scheme = "https" if tls_cert else "http"
    click.echo(f"virtlife serve: {scheme}://{where}/ (OpenAPI at /openapi.json); Ctrl-C "
               "stops", err=True)
    leadership = services.leadership if supervise else None
    if leadership is not None:
        app.on_stop.append(leadership.stop)  # first: step down before the server stops
        leadership.start()
    try:
        run_server(services, where, tls_cert=tls_cert, tls_key=tls_key,
                   log_level="info" if app.verbose else "warning", stoppers=app.on_stop,
                   server_names=server_names)
    finally:
        if leadership is not None:
            leadership.stop()


@click.group()
def token() -> None:
    """Bearer tokens of the REST API and web UI, each with a role.

    reader: sees everything but secrets. operator: runs VMs (lifecycle, consoles,
    snapshots, agent, migration), with files only under the allowed roots and domain
    XML that reaches nothing of the host. admin: everything, as root on every host.

    Example: virtlife token create alice --role operator
    """


ROLE_NAMES = ("reader", "operator", "admin")


def carried_over_note(names: list[str]) -> str:
    """The one-time note on tokens that were read-write and are now admins."""
    listed = ", ".join(names)
    one = len(names) == 1
    return (f"token{'' if one else 's'} {listed} {'was' if one else 'were'} read-write "
            f"and {'is' if one else 'are'} now admin, which can do anything root can on "
            "every managed host (any file, any domain XML, the hosts); for everyday use "
            f"make an operator token (`virtlife token create NAME --role operator`) and "
            f"revoke {'it' if one else 'them'} (`virtlife token revoke NAME`)")


def tell_carried_over(app: App) -> None:
    """Print the note on tokens carried over from read-write, once per store."""
    names = app.services.need_store().tokens.take_carried_over()
    if names:
        warn(carried_over_note(names))


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLE_NAMES), default=None,
              help="reader, operator (the default) or admin.")
@click.option("--read-only", is_flag=True, hidden=True,
              help="Deprecated: the same as --role reader.")
@json_option
@pass_app
def token_create(app: App, name: str, role: str | None, read_only: bool,
                 as_json: bool) -> None:
    """Make a token and print it (once: only its hash is kept).

    The role is operator unless --role says otherwise; an admin token can do anything
    root can on every managed host.

    Example: virtlife token create alice --role reader
    """
    from virtlife.store.tokens import Role

    if read_only:
        if role not in (None, "reader"):
            raise click.UsageError(f"--read-only is --role reader; it contradicts --role "
                                   f"{role}")
        warn("--read-only is deprecated: use --role reader")
        role = "reader"
    chosen = Role.parse(role or Role.OPERATOR.value)
    tell_carried_over(app)
    secret = app.services.need_store().tokens.create(name, role=chosen)
    if as_json:
        emit_json({"name": name, "role": chosen.value, "read_only": chosen is Role.READER,
                   "token": secret})
    else:
        click.echo(secret)


@token.command("list")
@json_option
@pass_app
def token_list(app: App, as_json: bool) -> None:
    """List the tokens (names and roles; never the secrets).

    Example: virtlife token list --json
    """
    tell_carried_over(app)
    records = app.services.need_store().tokens.list()
    if as_json:
        emit_json([r.as_dict() for r in records])
        return
    show_table(["NAME", "ROLE", "CREATED", "LAST USED"],
               [(r.name, r.role.value,
                 f"{r.created_at:%Y-%m-%d %H:%M:%S}",
                 f"{r.last_used_at:%Y-%m-%d %H:%M:%S}" if r.last_used_at else "never")
                for r in records])


@token.command("revoke")
@click.argument("name")
@pass_app
def token_revoke(app: App, name: str) -> None:
    """Revoke a token: requests carrying it are refused from now on.

    Example: virtlife token revoke alice
    """
    app.services.need_store().tokens.revoke(name)
    click.echo(f"token {name} revoked")


COMMANDS = [serve, token]
