"""Calls that many threads ask for at once, made once for all of them, never stale.

Role: under load the server's listing asks every host with managed-saved VMs for its
managed-save list on each request (libvirt sends no event when an image is removed, so
the cache cannot keep that answer). 200 requests at once made 200 round trips to each
host. ``Coalesced`` makes one call per key at a time and lets every caller who asked
while it *waited to start* share its result: a caller never gets the result of a call
that began before it asked (it could miss a change made just before), so sharing costs
no freshness. At most one call per key runs, and at most one more waits to start,
joined by everyone who asks meanwhile; a caller waits at most for the running call and
its own.

An exception of the call is raised to every caller that shared it. The call's own
deadline bounds the wait (the callers here call hosts through ``services.hostcalls``,
which has one). It imports nothing of virtlife and never prints.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Call(Generic[V]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None
        self.callers = 1


class Coalesced(Generic[K, V]):
    """``fn(key)``, called once for every caller that asked before the call started."""

    def __init__(self, fn: Callable[[K], V]) -> None:
        self.fn = fn
        self.calls = 0  # calls made (tests read it)
        self._lock = threading.Lock()
        self._waiting: dict[K, _Call[V]] = {}  # the next call of a key, not started yet
        self._running: dict[K, threading.Lock] = {}  # held while a key's call runs

    def __call__(self, key: K) -> V:
        with self._lock:
            call = self._waiting.get(key)
            if call is not None:  # it has not started: its result is fresh enough
                call.callers += 1
                lead = False
            else:
                call = _Call()
                self._waiting[key] = call
                lead = True
            running = self._running.setdefault(key, threading.Lock())
        if not lead:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.value  # type: ignore[return-value]
        with running:  # after the key's running call: ours starts now
            with self._lock:
                del self._waiting[key]  # who asks from now on waits for a later call
                self.calls += 1
            try:
                call.value = self.fn(key)
            except BaseException as err:
                call.error = err
                raise
            finally:
                call.done.set()
        return call.value
