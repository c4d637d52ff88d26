"""Who may call the API: bearer tokens with a role (reader < operator < admin) and
one-time console tickets.

A request carries its token as ``Authorization: Bearer <token>``, or, from the web
UI, in the ``virtlife_token`` cookie (HttpOnly, SameSite=Strict, set by the login
form), so that the browser's EventSource and WebSocket requests carry it too. Every
route declares the role it needs by depending on ``reader``, ``operator`` or
``admin``; only ``/api/health`` and the login page are open. A missing or unknown
token is 401; a token whose role is below the route's is 403, naming both roles. The
token that passed is kept on ``request.state.token``, so that the operation the
request starts is journalled as done by it (``actor_of``: ``api:NAME``).

A console URL carries a ``Tickets`` ticket instead: random, for one VM and one kind
of console (vnc or serial), usable once, and dead after ``TICKET_TTL_S``. A ticket is
minted by an authenticated ``POST`` (an operator: a console can type into the guest),
so a leaked console URL is worth nothing a minute later.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request

from virtlife import errors
from virtlife.store.journal import Actor
from virtlife.store.tokens import Role, TokenRecord

COOKIE = "virtlife_token"
CHECKED = "virtlife.token"  # the scope key of the record ``api.guard`` checked
TICKET_TTL_S = 60.0
_BEARER = "bearer "


def presented_token(request: Request) -> str | None:
    """The token a request carries: its Authorization header, else the web UI's cookie."""
    header = request.headers.get("authorization", "")
    if header[:len(_BEARER)].lower() == _BEARER:
        return header[len(_BEARER):].strip() or None
    return request.cookies.get(COOKIE) or None


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request) -> TokenRecord:
    """The token record of this request, or 401."""
    checked: TokenRecord | None = request.scope.get(CHECKED)
    if checked is not None:  # api.guard checked it before the body was read
        return checked
    secret = presented_token(request)
    if secret is None:
        raise _unauthorized("a bearer token is needed: `virtlife token create NAME` makes one")
    services = request.app.state.services
    try:
        record: TokenRecord | None = services.need_store().tokens.check(secret)
    except errors.StoreUnavailable as err:
        raise HTTPException(503, f"cannot check the token: {err}") from None
    if record is None:
        raise _unauthorized("this token is not valid (unknown or revoked)")
    request.state.token = record
    return record


def _an(role: Role) -> str:
    return f"{'an' if role.value[0] in 'aeiou' else 'a'} {role.value}"


def require(request: Request, needed: Role) -> TokenRecord:
    """The request's token when its role is ``needed`` or above; 401 or 403 else."""
    record = authenticate(request)
    if not record.role.allows(needed):
        raise HTTPException(
            403, f"this request needs {_an(needed)} token"
                 f"{'' if needed is Role.ADMIN else ' (or above)'}; token "
                 f"{record.name!r} is {_an(record.role)}: ask an admin for a token with "
                 f"`virtlife token create NAME --role {needed.value}`")
    return record


def reader(request: Request) -> TokenRecord:
    """Dependency of every route that only reads (and shows no secret)."""
    return require(request, Role.READER)


def operator(request: Request) -> TokenRecord:
    """Dependency of every route that runs VMs: lifecycle, consoles, snapshots, agent,
    migration, files under the allowed roots, XML that reaches nothing of the host."""
    return require(request, Role.OPERATOR)


def admin(request: Request) -> TokenRecord:
    """Dependency of every route that can do what root on a host can: hosts, any path,
    any XML."""
    return require(request, Role.ADMIN)


def token_of(request: Request) -> TokenRecord | None:
    """The token this request authenticated with (None before its dependency ran)."""
    record: TokenRecord | None = getattr(request.state, "token", None)
    return record


def actor_of(record: TokenRecord) -> Actor:
    """Who the journal says acted for work done for ``record``: ``api:NAME``."""
    return Actor(f"api:{record.name}", "server")


@dataclass(frozen=True)
class Ticket:
    host: str
    vm: str
    kind: str  # "vnc" or "serial"
    expires: float  # time.monotonic() deadline
    token: str = ""  # the bearer token that asked for it: the console ends with it


class Tickets:
    """One-time console tickets of this server process."""

    def __init__(self, ttl_s: float = TICKET_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._live: dict[str, Ticket] = {}
        self._lock = threading.Lock()

    def issue(self, host: str, vm: str, kind: str, bearer: str = "") -> str:
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            for key in [k for k, t in self._live.items() if t.expires <= now]:
                del self._live[key]
            self._live[token] = Ticket(host, vm, kind, now + self.ttl_s, bearer)
        return token

    def redeem(self, token: str, host: str, vm: str, kind: str) -> Ticket:
        """Use ``token`` for ``kind`` on ``host/vm`` (once): its ticket; ``InvalidInput``
        says why not."""
        with self._lock:
            ticket = self._live.pop(token, None)
        if ticket is None:
            raise errors.InvalidInput("this console ticket is unknown or was used already; "
                                      "open the console again")
        if ticket.expires <= time.monotonic():
            raise errors.InvalidInput(f"this console ticket expired ({self.ttl_s:.0f} s); "
                                      "open the console again")
        if (ticket.host, ticket.vm, ticket.kind) != (host, vm, kind):
            raise errors.InvalidInput(
                f"this console ticket is for the {ticket.kind} console of "
                f"{ticket.host}/{ticket.vm}, not the {kind} console of {host}/{vm}")
        return ticket
