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
@pass_app
def serve(app: App, listen: str, tls_cert: Path | None, tls_key: Path | None,
          insecure: bool, server_names: tuple[str, ...]) -> None:
    """Serve the REST API and the web UI until Ctrl-C or SIGTERM.

    Every route but /api/health needs a token: `virtlife token create NAME`.
    The API's OpenAPI description is at /openapi.json (with a token). A request
    naming another Host than the listen address, localhost or a --server-name is
    refused (400).

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
    unnamed = [name for name in services.fleet.refs if "/" in name]
    if unnamed:
        raise InvalidInput(
            f"cannot serve {unnamed[0]}: the API names hosts in its paths, and a URI is no "
            "name; add it to the inventory (`virtlife host add NAME URI`) and serve without -c")
    scheme = "https" if tls_cert else "http"
    click.echo(f"virtlife serve: {scheme}://{where}/ (OpenAPI at /openapi.json); Ctrl-C "
               "stops", err=True)
    run_server(services, where, tls_cert=tls_cert, tls_key=tls_key,
               log_level="info" if app.verbose else "warning", stoppers=app.on_stop,
               server_names=server_names)


@click.group()
def token() -> None:
    """Bearer tokens of the REST API and web UI.

    Example: virtlife token create alice --read-only
    """


@token.command("create")
@click.argument("name")
@click.option("--read-only", is_flag=True, help="The token may read, never change.")
@json_option
@pass_app
def token_create(app: App, name: str, read_only: bool, as_json: bool) -> None:
    """Make a token and print it (once: only its hash is kept).

    Example: virtlife token create alice --read-only
    """
    secret = app.services.need_store().tokens.create(name, read_only=read_only)
    if as_json:
        emit_json({"name": name, "read_only": read_only, "token": secret})
    else:
        click.echo(secret)


@token.command("list")
@json_option
@pass_app
def token_list(app: App, as_json: bool) -> None:
    """List the tokens (names and rights; never the secrets).

    Example: virtlife token list --json
    """
    records = app.services.need_store().tokens.list()
    if as_json:
        emit_json([r.as_dict() for r in records])
        return
    show_table(["NAME", "RIGHTS", "CREATED", "LAST USED"],
               [(r.name, "read-only" if r.read_only else "read-write",
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
