"""One long-lived caller thread per host: the fleet's calls to a host, in turn.

Why: a libvirt call to a host that stopped answering (``libvirt.open`` to a stopped
daemon, a listing on a connection whose peer froze) blocks in C and cannot be
cancelled. The caller of the fleet must never wait for it past its deadline, so the
call runs on another thread; and that thread must not be a new one per call, or every
listing would leave one more thread behind per dead host. So each host has exactly
one ``HostCaller``: a daemon thread that runs the calls made to that host one after
the other and stays for the next ones (the host's connection is reused with it).

A caller that gives up on a call (its deadline passed) ``abandon``\\ s it: a call not
started yet is then skipped, and while an abandoned call still runs, new calls are
refused at once (``Busy``) instead of being queued behind it. The thread count is
thus bounded by the number of hosts, however often a dead host is asked. ``stop``
may hand the thread a last call (the fleet closes the host's connection there), so
that closing a fleet starts no thread per host either.

It knows nothing of libvirt or hosts beyond a name; it never prints.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from virtlife.lazylog import get_logger

T = TypeVar("T")

logger = get_logger(__name__)  # logging imported only when needed


class Call(Generic[T]):
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

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def abandon(self) -> bool:
        """Give up waiting; False if it has already finished (its outcome stands)."""
        with self._lock:
            if self.done.is_set():
                return False
            self._abandoned = True
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
    """The one thread that makes the fleet's calls to one host (see the module doc)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._queue: deque[Call[object]] = deque()
        self._running: Call[object] | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._last: Callable[[], object] | None = None  # run by the thread as it ends

    def __repr__(self) -> str:
        return f"HostCaller({self.name})"

    def submit(self, fn: Callable[[], T]) -> Call[T] | Busy:
        """Queue ``fn`` for this host's thread; ``Busy`` when an abandoned call blocks it."""
        with self._cond:
            if self._stopped:
                raise RuntimeError(f"the caller of host {self.name} was stopped")
            running = self._running
            if running is not None and running.abandoned and running.started is not None:
                age = time.monotonic() - running.started
                return Busy(f"host {self.name} has not answered a call made {age:.1f} s ago "
                            f"(at {running.asked_at:%H:%M:%S}); it is not asked again "
                            "until that call returns")
            call: Call[T] = Call(fn)
            self._queue.append(call)  # type: ignore[arg-type]
            self._start()
            self._cond.notify()
            return call

    def start(self) -> None:
        """Start the thread now, idle until a call comes (``submit`` starts it otherwise).

        Starting a thread waits until it runs; a thread that starts idle gives the
        interpreter back at once. So a caller about to ask many hosts starts all their
        threads first, then submits: no start waits behind the calls already running.
        """
        with self._cond:
            if not self._stopped:
                self._start()

    def _start(self) -> None:
        if self._thread is None:  # (lock held)
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"fleet-{self.name}")
            self._thread.start()

    def stop(self, then: Callable[[], object] | None = None) -> None:
        """End the thread once its current call (if any) returns; queued calls are dropped.

        ``then`` (the host's close, say) runs on that thread as its last act, after the
        call that still runs, so it costs no thread (it gets one of its own when this
        caller never had a thread, or was already stopped). An exception it raises is
        logged.
        """
        with self._cond:
            already = self._stopped
            self._stopped = True
            dropped = list(self._queue)
            self._queue.clear()
            on_thread = not already and self._thread is not None
            if on_thread:
                self._last = then
            self._cond.notify()
        for call in dropped:
            call._finish(None, RuntimeError(f"the caller of host {self.name} was stopped"))
        if then is not None and not on_thread:
            threading.Thread(target=self._run_last, args=(then,), daemon=True,
                             name=f"fleet-{self.name}-last").start()

    @property
    def stuck(self) -> bool:
        """True while a call given up by its caller still runs (the host never answered
        it): what comes after it on this thread, its close too, waits for it."""
        with self._cond:
            return self._running is not None and self._running.abandoned

    @property
    def alive(self) -> bool:
        """True while its thread runs (it ends after ``stop``, once its call returned)."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    last, self._last = self._last, None
                    break
                call = self._queue.popleft()
                if not call._claim():
                    continue  # its caller gave up before it started
                self._running = call
            try:
                value = call.fn()
            except BaseException as err:  # handed to the caller, who decides
                call._finish(None, err)
            else:
                call._finish(value, None)
            finally:
                with self._cond:
                    self._running = None
            if call.abandoned:
                logger.info("a call to host %s returned %.1f s after it was given up",
                            self.name, time.monotonic() - (call.started or 0.0))
        if last is not None:
            self._run_last(last)

    def _run_last(self, last: Callable[[], object]) -> None:
        try:
            last()
        except Exception:
            logger.exception("the last call of host %s's caller failed", self.name)
