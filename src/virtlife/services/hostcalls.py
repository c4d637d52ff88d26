"""The fleet's calls to one host, in turn, on a pool shared by every host.

Why: a libvirt call to a host that stopped answering (``libvirt.open`` to a stopped
daemon, a listing on a connection whose peer froze) blocks in C and cannot be
cancelled. The caller of the fleet must never wait for it past its deadline, so the
call runs on another thread; and that must not be a new thread per call (every
listing would leave one more behind per dead host), nor one per host (a server of 500
hosts, issue 17). So each host has a ``HostCaller``: a lane on ``CALLERS``, one pool
of at most ``CALLER_WORKERS`` daemon threads (``fleet-<n>``) for every host, that runs
the calls made to that host one after the other, in order (the host's connection is
reused by them). An idle host holds no thread.

A caller that gives up on a call (its deadline passed) abandons it: a call not
started yet is then skipped, and while an abandoned call still runs, new calls are
refused at once (``Busy``) instead of being queued behind it. So a frozen host holds
at most one worker, and the pool lets that worker go from its bound while the call is
stuck (``WorkPool.hold_extra``): the other hosts keep their workers, and the threads
are bounded by the pool's size plus the hosts frozen in a call. ``stop`` may hand the
lane a last call (the fleet closes the host's connection there), run after the call
still running, so that closing a fleet starts no thread per host either.

It knows nothing of libvirt or hosts beyond a name; it never prints.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Generic, TypeVar

from virtlife.lazylog import get_logger
from virtlife.workpool import WorkPool

T = TypeVar("T")

logger = get_logger(__name__)  # logging imported only when needed

CALLER_WORKERS = 16  # threads for every host's calls together (plus the stuck ones)
CALLERS = WorkPool("fleet", CALLER_WORKERS)


class HostCall(Generic[T]):
    """One call handed to a ``HostCaller``: its outcome once ``done`` is set."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None
        self.started: float | None = None  # monotonic, once the caller thread took it
        self.asked_at = datetime.now().astimezone()
        self._lock = threading.Lock()
        self._abandoned = False
        self.on_stuck: Callable[[], None] | None = None  # abandoned while it runs

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def abandon(self) -> bool:
        """Give up waiting; False if it has already finished (its outcome stands)."""
        with self._lock:
            if self.done.is_set():
                return False
            stuck = not self._abandoned and self.started is not None
            self._abandoned = True
            if stuck and self.on_stuck is not None:  # before its finish can be seen
                self.on_stuck()
        return True

    def _claim(self) -> bool:
        """Called by the caller thread: True to run it, False if it was abandoned."""
        with self._lock:
            if self._abandoned:
                return False
            self.started = time.monotonic()
            return True

    def _finish(self, value: T | None, error: BaseException | None) -> None:
        with self._lock:
            self.value, self.error = value, error
            self.done.set()


@dataclass(frozen=True)
class Busy:
    """A call refused at once: the host still runs one its caller gave up on."""

    reason: str


class HostCaller:
    """The fleet's calls to one host, one at a time on ``pool`` (see the module doc)."""

    def __init__(self, name: str, pool: WorkPool | None = None) -> None:
        self.name = name
        self._pool = pool if pool is not None else CALLERS
        self._cond = threading.Condition()
        self._queue: deque[HostCall[object]] = deque()
        self._running: HostCall[object] | None = None
        self._stopped = False
        self._scheduled = False  # a turn of this host is queued on the pool or running
        self._last: Callable[[], object] | None = None  # run after the running call

    def __repr__(self) -> str:
        return f"HostCaller({self.name})"

    def submit(self, fn: Callable[[], T]) -> HostCall[T] | Busy:
        """Queue ``fn`` for this host; ``Busy`` when an abandoned call blocks it."""
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"the caller of host {self.name} was stopped")
            running = self._running
            if running is not None and running.abandoned and running.started is not None:
                age = time.monotonic() - running.started
                return Busy(f"host {self.name} has not answered a call made {age:.1f} s ago "
                            f"(at {running.asked_at:%H:%M:%S}); it is not asked again "
                            "until that call returns")
            call: HostCall[T] = HostCall(fn)
            call.on_stuck = self._pool.hold_extra
            self._queue.append(call)  # type: ignore[arg-type]
            self._schedule()
            return call

    def start(self) -> None:
        """Nothing to start: the calls run on the shared pool (kept for callers that
        prepared a thread per host before submitting)."""

    def _schedule(self) -> None:
        if not self._scheduled:  # (lock held)
            self._scheduled = True
            self._pool.submit(self._turn)

    def stop(self, then: Callable[[], object] | None = None) -> None:
        """Make no more calls once the current one (if any) returns; queued calls are
        dropped.

        ``then`` (the host's close, say) runs on the pool after the call that still
        runs, as this host's last turn. An exception it raises is logged.
        """
        with self._cond:
            self._stopped = True
            dropped = list(self._queue)
            self._queue.clear()
            after_running = then is not None and self._running is not None
            if after_running:
                self._last = then
        for call in dropped:
            call._finish(None, RuntimeError(f"the caller of host {self.name} was stopped"))
        if then is not None and not after_running:
            self._pool.submit(partial(self._run_last, then))

    @property
    def stuck(self) -> bool:
        """True while a call given up by its caller still runs (the host never answered
        it): what comes after it for this host, its close too, waits for it."""
        with self._cond:
            return self._running is not None and self._running.abandoned

    @property
    def alive(self) -> bool:
        """True while this host has a call queued or running."""
        with self._cond:
            return self._scheduled

    def _turn(self) -> None:
        """One call of this host, on a pool worker; the next one goes behind the other
        hosts' turns (a busy host never keeps the pool from them)."""
        with self._cond:
            call: HostCall[object] | None = None
            while self._queue and not self._stopped:
                candidate = self._queue.popleft()
                if candidate._claim():
                    call = candidate
                    break  # else its caller gave up before it started
            if call is None:
                self._scheduled = False
                return
            self._running = call
        try:
            value = call.fn()
        except BaseException as err:  # handed to the caller, who decides
            call._finish(None, err)
        else:
            call._finish(value, None)
        with self._cond:
            self._running = None
            last, self._last = self._last, None
            if self._queue and not self._stopped:
                self._pool.submit(self._turn)
            else:
                self._scheduled = False
        if call.abandoned:
            self._pool.release_extra()
            logger.info("a call to host %s returned %.1f s after it was given up",
                        self.name, time.monotonic() - (call.started or 0.0))
        if last is not None:
            self._run_last(last)

    def _run_last(self, last: Callable[[], object]) -> None:
        try:
            last()
        except Exception:
            logger.exception("the last call of host %s's caller failed", self.name)
