"""Builds the FastAPI application of ``virtlife serve`` and runs it under uvicorn.

One ``Services`` per server process: its fleet keeps one connection per host, reused
by every request and reopened after a libvirtd restart (``services.fleet``). Routes
run in the server's thread pool; what they share (the fleet, the store, ``Jobs``) is
safe across threads. At start-up the event ``Feed`` begins following every host into
the ``Hub`` and the CLI's local socket (``api.local``) opens beside the store; at
shutdown both stop and the services close.

``check_listen`` is the rule for where the server may listen: loopback by default;
anywhere else only with TLS settings or an explicit ``--insecure``. What every request
passes first (the Host, the token before the body, the body's bound, where a cookie
write comes from, the answers' headers) is ``api.guard``; uvicorn's limits are
``api.listener``'s.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    import socket

from virtlife import __version__, errors
from virtlife.api import (
    guard,
    problems,
    routes,
    routes_agent,
    routes_fleet,
    routes_manage,
    routes_migration,
    routes_more,
)
from virtlife.api.auth import Tickets
from virtlife.api.bodies import ListingBodies
from virtlife.api.hub import Feed, Hub, cached_listing
from virtlife.api.local import SOCKET_NAME, LocalServer
from virtlife.api.metrics import Metrics
from virtlife.api.streams import Streams
from virtlife.services.context import Services
from virtlife.services.load import LoadSampler, read_loads

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8080"
# How long a stop waits for the server to shut down (within the CLI's 2 s for its
# interrupt hook: the journal is marked after it).
STOP_WAIT_S = 1.5
# How long a background load reading waits for each host (a host later is left out).
LOAD_DEADLINE_S = 2.0


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> Listen:
    """``ADDR:PORT`` (``[v6]:PORT`` for IPv6) -> ``Listen``; ``InvalidInput`` else."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.InvalidInput(f"--listen {text!r}: give ADDRESS:PORT, e.g. {DEFAULT_LISTEN}")
    return Listen(host, int(port))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(listen: Listen, *, tls: bool, insecure: bool) -> str | None:
    """Refuse a non-loopback address without TLS or ``--insecure``; a warning to print
    when it is allowed insecurely, else None."""
    if is_loopback(listen.host) or tls:
        return None
    if not insecure:
        raise errors.InvalidInput(
            f"refusing to listen on {listen} without TLS: tokens would cross the network in "
            "clear text; give --tls-cert and --tls-key, or --insecure on a network you trust")
    return (f"listening on {listen} without TLS (--insecure): bearer tokens cross the "
            "network in clear text")


def local_socket_path(services: Services) -> Path | None:
    """Where the CLI's local socket goes: beside the store, when the server serves the
    inventory (with ``-c`` the CLI would not ask it: it answers for other hosts)."""
    if services.store is None or services.connect_uri is not None:
        return None
    return services.store.path.parent / SOCKET_NAME


def create_app(services: Services, *, follow_events: bool = True,
               static_root: Path | None = None,
               local_socket: Path | bool = True,
               hosts: list[str] | None = None) -> FastAPI:
    """The application over ``services`` (which it closes at shutdown).

    ``follow_events`` False leaves the event feed off (unit tests of single routes),
    and with it the CLI's local socket, which answers from the feed's cache.
    ``local_socket``: True puts it beside the store (``local_socket_path``), a path
    there, False nowhere. ``hosts``: the Host names requests may give
    (``guard.allowed_hosts``; default: the loopback names).
    """
    hub = Hub()
    feed = Feed(services.fleet, hub)
    where: Path | None = None
    if isinstance(local_socket, Path):
        where = local_socket
    elif local_socket:
        where = local_socket_path(services)
    local = LocalServer(services, feed.cache, where) if where and follow_events else None
    loads = LoadSampler(lambda: read_loads(services.fleet, LOAD_DEADLINE_S))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        hub.attach(asyncio.get_running_loop())
        if follow_events:
            feed.start()
            loads.start()
        if local is not None:
            try:
                local.start()
            except OSError as err:  # the API still serves; the CLI reads for itself
                log.warning("cannot listen on %s for the CLI: %s", local.path, err)
        try:
            yield
        finally:
            app.state.streams.stop()
            if local is not None:
                local.close()
            loads.close()
            feed.close()
            services.close()

    app = FastAPI(title="virtlife", version=__version__, lifespan=lifespan,
                  description="Whole-life manager for KVM/QEMU virtual machines on libvirt "
                              "hosts. Every route but /api/health needs a bearer token "
                              "(`virtlife token create NAME`).",
                  # no Swagger UI: it loads its code from a CDN and runs inline script
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        """The OpenAPI description (a token is needed: ``api.guard``)."""
        return JSONResponse(app.openapi())

    app.state.services = services
    app.state.hub = hub
    app.state.feed = feed
    app.state.loads = loads
    app.state.local = local
    app.state.metrics = Metrics(lambda: (cached_listing(feed.cache)[0],
                                         sorted(services.fleet.refs)),
                                loads.loads)
    app.state.tickets = Tickets()
    app.state.bodies = ListingBodies()
    app.state.streams = Streams(lambda token: services.need_store().tokens.check(token)
                                is not None)
    guard.install(app, hosts if hosts is not None else guard.allowed_hosts(None))
    problems.install(app)
    app.include_router(routes.router)
    app.include_router(routes_more.router)
    app.include_router(routes_agent.router)
    app.include_router(routes_migration.router)
    app.include_router(routes_manage.router)
    app.include_router(routes_fleet.router)
    from virtlife.api import web

    web.install(app, static_root)
    return app


def serve(services: Services, listen: Listen, *, tls_cert: Path | None = None,
          tls_key: Path | None = None, log_level: str = "info",
          stoppers: list[Callable[[], None]] | None = None,
          server_names: tuple[str, ...] = ()) -> None:
    """Run the server until it is stopped.

    Run from the main thread, uvicorn stops on SIGINT/SIGTERM itself. The CLI runs it on
    a worker thread (its main thread owns the signals), so ``stoppers`` gets a stop
    function to call on Ctrl-C or SIGTERM: it removes the CLI's local socket at once
    (later commands must not ask a server that is going), tells the server to shut down
    and waits for it a bounded time (``STOP_WAIT_S``). ``server_names``: the names
    (beside the listen address and loopback) that requests may give as their Host.
    """
    import threading

    import uvicorn

    from virtlife.api import listener

    app = create_app(services, hosts=guard.allowed_hosts(
        listen.host, (*server_names, *wildcard_names(listen.host))))
    server = uvicorn.Server(listener.config(
        app, listen.host, listen.port, log_level=log_level, tls_cert=tls_cert,
        tls_key=tls_key))
    ended = threading.Event()

    def stop() -> None:
        local: LocalServer | None = app.state.local
        if local is not None:
            local.close()
        server.should_exit = True
        ended.wait(STOP_WAIT_S)

    sock = bind_listen(listen)  # ours, so that an address in use is our one-line error
    if stoppers is not None:
        stoppers.append(stop)
    try:
        server.run(sockets=[sock])
    finally:
        ended.set()
        sock.close()


def wildcard_names(host: str) -> tuple[str, ...]:
    """This machine's own names, when the server listens on every address."""
    if host not in ("0.0.0.0", "::"):
        return ()
    import socket

    return (socket.gethostname(), socket.getfqdn())


def bind_listen(listen: Listen) -> socket.socket:
    """A TCP socket bound to ``listen`` for uvicorn to serve on; ``OperationFailed``
    (exit 1) naming the address when it cannot be bound (in use, not this host's)."""
    import socket

    try:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise errors.InvalidInput(f"cannot serve on {listen}: {err.strerror}; give an "
                                  "address of this host in --listen") from err
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as err:
        sock.close()
        why = ("the address is in use (another server listens there)"
               if err.errno == errno.EADDRINUSE else err.strerror or str(err))
        raise errors.OperationFailed(
            f"cannot serve on {listen}: {why}; stop that server or choose another "
            "--listen ADDR:PORT") from err
    return sock
