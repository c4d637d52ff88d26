"""What every request passes before a route sees it: the Host header, the token, where a
cookie-authenticated write comes from, and the headers of every answer.

Three ASGI middlewares, outermost first (``install``):

- ``SafeHeaders``: every answer says ``X-Content-Type-Options: nosniff``, and every
  one but the static files ``Cache-Control: no-store`` (answers carry VM names, XML,
  console tickets and tokens' names);
- the Host check (Starlette's ``TrustedHostMiddleware``: the listen address, the
  loopback names and the names an operator configured; anything else, a DNS-rebinding
  page, is 400);
- ``Guard``, in this order: the body's bound (``body_max``: 1 MiB for ``define``'s
  XML, 448 KiB for agent exec (64 KiB of stdin, JSON-escaped), 16 KiB for ``/login``,
  64 KiB elsewhere; a larger ``Content-Length`` is 413 before anything else, and a
  body that grows past it while it is read is 413 there);
  where a write comes from: one (any method but GET, HEAD, OPTIONS) that the web UI's
  cookie authenticates must come from this server's own pages, its ``Origin`` this
  server's or, without an ``Origin``, ``Sec-Fetch-Site: same-origin``, else 403
  (SameSite=Strict does not tell ``127.0.0.1:9999`` from ``127.0.0.1:8080``: the
  Origin does; a login form posted from another origin is refused the same way); then
  the token: a request to the API (``/api/*`` but ``/api/health``, ``/metrics``,
  ``/openapi.json``) is authenticated before anything reads its body, so a client
  without a token gets 401 and costs no parsing. The check runs on the token-check
  threads (``api.limits.auth_limiter``), which no route can hold, and its record is
  kept in the scope for the route's own dependency (``api.auth.authenticate``).

This module decides nothing about what a token may do: ``api.auth`` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtlife.api.auth import CHECKED, COOKIE, authenticate
from virtlife.api.limits import auth_limiter
from virtlife.api.problems import http_problem, problem
from virtlife.services.agent import MAX_STDIN
from virtlife.xml.domain import MAX_XML_BYTES

BODY_MAX = 64 * 1024  # a request body, where ``BODY_LIMITS`` names no other bound
LOGIN_BODY_MAX = 16 * 1024
# agent exec's stdin may be MAX_STDIN bytes of text, which JSON can write 6 bytes to a
# character (\u0001), with the program's arguments beside it
EXEC_BODY_MAX = 6 * MAX_STDIN + BODY_MAX
BODY_LIMITS = ((re.compile(r"/api/hosts/[^/]+/define"), MAX_XML_BYTES),
               (re.compile(r"/api/vms/[^/]+/[^/]+/agent/exec"), EXEC_BODY_MAX),
               (re.compile(r"/login"), LOGIN_BODY_MAX))
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")  # an IPv6 Host keeps its brackets
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_API_PATHS = frozenset({"/api/health"})
TOKEN_PATHS = frozenset({"/metrics", "/openapi.json"})
CACHED_PREFIXES = ("/static/", "/vendor/")


def body_max(path: str) -> int:
    """The most bytes a request body to ``path`` may have."""
    for pattern, most in BODY_LIMITS:
        if pattern.fullmatch(path):
            return most
    return BODY_MAX


def too_large(most: int) -> HTTPException:
    return HTTPException(413, f"the request's body is larger than the {most} bytes this "
                              "route takes; send a smaller one")


def bounded(receive: Receive, most: int) -> Receive:
    """``receive`` that fails with 413 once the body passes ``most`` bytes."""
    seen = 0

    async def receive_bounded() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > most:
                raise too_large(most)
        return message

    return receive_bounded


def declared_length(headers: Headers) -> int | None:
    text = headers.get("content-length")
    return int(text) if text is not None and text.isdigit() else None


def needs_token(path: str) -> bool:
    """Whether a request to ``path`` is authenticated before the app sees it."""
    if path in OPEN_API_PATHS:
        return False
    return path.startswith("/api/") or path in TOKEN_PATHS


def own_origin(scope: Scope, headers: Headers) -> str:
    """This server's origin as the request reached it (scheme and Host header)."""
    return f"{scope.get('scheme', 'http')}://{headers.get('host', '').lower()}"


def from_own_pages(scope: Scope, headers: Headers, *, lenient: bool = False) -> bool:
    """Whether a browser sent this request from this server's own pages. ``lenient``:
    a request that names no origin at all passes too (a client that is no browser)."""
    origin = headers.get("origin")
    if origin is not None:
        return origin.lower() == own_origin(scope, headers)
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    return lenient


def cookie_authenticated(headers: Headers) -> bool:
    """Whether the request's credential is the web UI's cookie (no bearer header)."""
    bearer = headers.get("authorization", "")[:7].lower() == "bearer "
    return not bearer and bool(cookie_parser(headers.get("cookie", "")).get(COOKIE))


class SafeHeaders:
    """``nosniff`` on every answer; ``no-store`` on every answer but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cached = str(scope.get("path", "")).startswith(CACHED_PREFIXES)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if not cached:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, with_headers)


class Guard:
    """Authentication before the body, and the origin of cookie-authenticated writes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = str(scope.get("path", ""))
        most = body_max(path)
        declared = declared_length(headers)
        if declared is not None and declared > most:
            await http_problem(too_large(most))(scope, receive, send)
            return
        write = scope.get("method", "GET") not in SAFE_METHODS
        if write and (path == "/login" or cookie_authenticated(headers)) and \
                not from_own_pages(scope, headers, lenient=path == "/login"):
            response = problem(
                403, "forbidden",
                f"this request does not come from this server's own pages (origin "
                f"{headers.get('origin') or 'not given'}, not {own_origin(scope, headers)}): "
                "a page of another site may not use the web UI's login; use the web UI "
                "itself, or send the token as Authorization: Bearer")
            await response(scope, receive, send)
            return
        if needs_token(path):
            request = Request(scope)
            try:
                scope[CHECKED] = await anyio.to_thread.run_sync(
                    authenticate, request, limiter=auth_limiter())
            except HTTPException as err:
                await http_problem(err)(scope, receive, send)
                return
        await self.app(scope, bounded(receive, most), send)


def allowed_hosts(listen_host: str | None, names: Iterable[str] = ()) -> list[str]:
    """The Host names a request may give: the loopback names, the listen address
    (unless it is a wildcard) and ``names``."""
    hosts = [*LOOPBACK_NAMES, *names]
    if listen_host and listen_host not in ("0.0.0.0", "::", ""):
        hosts.append(listen_host)
    bare = (h.lower().strip("[]") for h in hosts)
    return list(dict.fromkeys(f"[{h}]" if ":" in h else h for h in bare))


def install(app: FastAPI, hosts: list[str]) -> None:
    """Put the three middlewares around ``app`` (the last added is the outermost)."""
    app.add_middleware(Guard)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    app.add_middleware(SafeHeaders)
