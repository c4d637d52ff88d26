"""Who may wait for a thread of the server, and for which: the thread limiters, the
routes whose calls may block long, and waits for an operation that hold no thread.

Starlette runs every synchronous route and dependency on anyio's default thread
limiter (40 threads); the token check of every request (``api.guard``) ran there too,
so 40 requests that block long (an agent ping to a silent guest, ``?wait=60`` on an
operation) stalled authentication for everyone. Here:

- ``auth_limiter``: the guard's token checks and the stream watcher's re-checks
  (``api.streams``), on threads no route can take;
- ``LongCallRoute``: the route class of the routers whose calls may block for long
  (the guest agent, migration checks, changes a request waits for): their synchronous
  bodies run on ``long_limiter``, never on the default pool;
- ``wait_for_job``: ``GET /api/operations/{id}?wait=S`` awaits an asyncio event that
  ``Jobs`` sets when the operation ends, holding no thread while it waits.

This module decides nothing about requests: it only says where they wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from fastapi.routing import APIRoute

from virtlife import errors
from virtlife.services.operations import Jobs

AUTH_THREADS = 8
LONG_THREADS = 32

_auth: RunVar[anyio.CapacityLimiter] = RunVar("virtlife_auth_limiter")
_long: RunVar[anyio.CapacityLimiter] = RunVar("virtlife_long_limiter")


def _limiter(var: RunVar[anyio.CapacityLimiter], threads: int) -> anyio.CapacityLimiter:
    """The event loop's limiter kept in ``var`` (made on first use on each loop)."""
    try:
        return var.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(threads)
        var.set(limiter)
        return limiter


def auth_limiter() -> anyio.CapacityLimiter:
    """Threads for token checks only."""
    return _limiter(_auth, AUTH_THREADS)


def long_limiter() -> anyio.CapacityLimiter:
    """Threads for the routes of ``LongCallRoute``."""
    return _limiter(_long, LONG_THREADS)


def on_long_limiter(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` (synchronous) as a coroutine that runs it on ``long_limiter``.

    FastAPI reads the parameters through ``__wrapped__``; the wrapper being a coroutine
    function, FastAPI awaits it on the loop instead of taking a default thread."""

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        call = functools.partial(endpoint, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=long_limiter())

    return run


class LongCallRoute(APIRoute):
    """A route whose synchronous body may block for long: it runs on ``long_limiter``."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = on_long_limiter(endpoint)
        super().__init__(path, endpoint, **kwargs)


async def wait_for_job(jobs: Jobs, op_id: str, timeout_s: float) -> None:
    """Return when the operation ``op_id`` of this process ends, or ``timeout_s``
    passes (at once for another process's: the journal is all there is)."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()

    def wake() -> None:  # from the operation's thread
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(ended.set)

    try:
        cancel = jobs.on_end(op_id, wake)
    except errors.NotFound:
        return
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), timeout_s)
    finally:
        cancel()
