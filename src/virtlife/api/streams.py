"""The server's long-lived connections (event streams, consoles) by token: how many one
token and everyone may hold, and their end when their token is revoked.

A request is authenticated once, when it starts; an event stream or a console lives on
for hours. ``Streams`` keeps a lease for each, with the token it was opened with, and
while any is open it checks every token again each ``recheck_s`` (on the token-check
threads, ``api.limits.auth_limiter``): the leases of a token that is no longer valid
are told (their ``on_revoked``), and their connection ends with a last message that
says why, within ``recheck_s`` plus one check.

Event streams count against ``per_token`` and ``total`` (503 past either, before any
byte is sent); a console is watched but not counted (a ticket opens it, and the
console service allows one client per console). This module never decides whether a
token is valid: the ``check`` it is given (the store's) does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from fastapi import HTTPException

from virtlife import errors
from virtlife.api.limits import auth_limiter

log = logging.getLogger(__name__)

STREAMS_PER_TOKEN = 8  # event streams one token may hold open at once
STREAMS_TOTAL = 64  # event streams of all tokens together
RECHECK_S = 2.0  # how often the tokens of open streams are checked again


@dataclass(eq=False)
class Lease:
    """One open stream or console, and what to call when its token is revoked."""

    token: str
    counted: bool
    on_revoked: Callable[[], None]
    revoked: bool = False


class Streams:
    """The open leases of this server (used on its event loop only)."""

    def __init__(self, check: Callable[[str], bool], *, per_token: int = STREAMS_PER_TOKEN,
                 total: int = STREAMS_TOTAL, recheck_s: float = RECHECK_S) -> None:
        self.check = check
        self.per_token = per_token
        self.total = total
        self.recheck_s = recheck_s
        self._leases: set[Lease] = set()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def open_streams(self) -> int:
        return sum(1 for lease in self._leases if lease.counted)

    def admit(self, token: str) -> None:
        """503 when one more event stream of ``token`` would pass a cap."""
        mine = sum(1 for lease in self._leases if lease.counted and lease.token == token)
        if mine >= self.per_token:
            raise HTTPException(
                503, f"this token has {mine} event streams open, the most one token may "
                     "hold; close one (another tab or client) and connect again",
                headers={"Retry-After": "10"})
        if self.open_streams >= self.total:
            raise HTTPException(
                503, f"the server has {self.total} event streams open, the most it serves; "
                     "try again later", headers={"Retry-After": "10"})

    def open(self, token: str, on_revoked: Callable[[], None], *,
             counted: bool = True) -> Lease:
        """A lease for a connection opened with ``token``; ``close`` it when the
        connection ends. A counted one past a cap is refused with 503."""
        if counted:
            self.admit(token)
        lease = Lease(token, counted, on_revoked)
        self._leases.add(lease)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return lease

    def close(self, lease: Lease) -> None:
        self._leases.discard(lease)

    def stop(self) -> None:
        """Stop checking (the server stops)."""
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        """Check the open leases' tokens again every ``recheck_s``, while any is open."""
        while self._leases:
            await asyncio.sleep(self.recheck_s)
            for token in {lease.token for lease in self._leases}:
                try:
                    valid = await anyio.to_thread.run_sync(self.check, token,
                                                           limiter=auth_limiter())
                except errors.VirtlifeError as err:  # the store: keep them, check again
                    log.info("cannot check the tokens of open streams: %s", err)
                    break
                if not valid:
                    self._revoked(token)

    def _revoked(self, token: str) -> None:
        for lease in [lease for lease in self._leases if lease.token == token]:
            self._leases.discard(lease)
            lease.revoked = True
            try:
                lease.on_revoked()
            except Exception:  # a bug of one connection must not keep the others open
                log.exception("ending a stream of a revoked token")
