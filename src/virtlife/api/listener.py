"""How uvicorn serves the app: its connection limits, and a deadline for request headers.

uvicorn bounds the size of a request's headers (h11's incomplete-event size) and the
idle time between two requests (``timeout_keep_alive``), but nothing bounds the time a
client takes to send its headers: its keep-alive timer stops at the first byte that
comes, so a client that sends half a request line and then one byte now and then holds
its connection for ever (a slowloris; uvicorn's issue #157 lists the missing
``--timeout-request-start``). No ASGI middleware can help, since the app is called only
once the headers are complete. ``HeaderDeadline`` is uvicorn's h11 protocol with that
deadline: armed when a connection opens and again after each answer, it closes a
connection that has not completed a request's headers within ``header_timeout_s``;
a request under way (its headers in) and a WebSocket are never cut by it.

``config`` is the one ``uvicorn.Config`` of ``virtlife serve`` (and of the tests' real
server): this protocol, ``limit_concurrency`` (503 past that many connections and
requests at once), the keep-alive and header-size bounds. This module decides nothing
about requests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0  # to send a request's headers, from the connection or last answer
LIMIT_CONCURRENCY = 256  # connections + requests at once; 503 past it
KEEP_ALIVE_S = 5  # idle time between two requests of one connection
HEADER_BYTES_MAX = 16 * 1024  # a request line and its headers


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are late."""

    header_timeout_s: ClassVar[float] = HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers have the same time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._disarm()  # the WebSocket protocol owns the connection from now on
        super().handle_websocket_upgrade(event)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _late(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request's headers came: the app has it now
        if not self.transport.is_closing():
            self.logger.info("closing a connection that sent no complete request headers "
                             "within %.0f s", self.header_timeout_s)
            self.transport.close()


def config(app: Any, host: str, port: int, *, log_level: str = "info",
           tls_cert: Path | None = None, tls_key: Path | None = None,
           header_timeout_s: float = HEADER_TIMEOUT_S,
           limit_concurrency: int = LIMIT_CONCURRENCY,
           graceful_s: int = 5) -> uvicorn.Config:
    """The server's ``uvicorn.Config`` for ``app`` on ``host:port``."""
    protocol = type("HeaderDeadline", (HeaderDeadline,), {"header_timeout_s": header_timeout_s})
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        http=protocol, proxy_headers=False, server_header=False, ws="websockets-sansio",
        limit_concurrency=limit_concurrency, timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=HEADER_BYTES_MAX, timeout_graceful_shutdown=graceful_s)
