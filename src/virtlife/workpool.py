"""A bounded pool of daemon worker threads, and lanes: per-key serial work on it.

Role: the many-host server (issue 17) must not hold threads per host. ``WorkPool`` runs
submitted jobs on at most ``size`` daemon threads, started only when work waits and no
worker is idle (so an idle pool costs nothing, and a job never waits for a thread that
could exist). ``Lanes`` runs jobs keyed by a host (or listener) on such a pool, one at
a time per key and in the order submitted: a key's lane holds at most one worker, only
while it has work (a drain task is scheduled when the lane goes from empty to
non-empty, and reschedules itself after a batch so that one busy lane never keeps a
worker from the others). A job that blocks (a libvirt call to a frozen host) holds
its lane's worker, never another lane's; a caller that must not wait for such a job
bounds it itself (``services.hostcalls``' deadlines).

Why not ``concurrent.futures.ThreadPoolExecutor``: its workers are joined at the
interpreter's exit, so one call stuck in C on a frozen host would hang every command's
exit; these workers are daemon threads. It imports nothing of virtlife and never
prints; a job's exception is logged, never raised into the pool.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from virtlife.lazylog import get_logger

K = TypeVar("K", bound=Hashable)

logger = get_logger(__name__)  # logging imported only when needed

LANE_BATCH = 32  # jobs a lane runs before it gives its worker back to the pool's queue


class WorkPool:
    """At most ``size`` daemon threads named ``<name>-<n>`` running jobs in FIFO order."""

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"a work pool needs at least one worker, not {size}")
        self.name = name
        self.size = size
        self._cond = threading.Condition()
        self._jobs: deque[Callable[[], object]] = deque()
        self._threads: list[threading.Thread] = []
        self._busy = 0  # workers running a job (the others take the next job at once)
        self._extra = 0  # workers held by jobs given up as stuck (``hold_extra``)
        self._closed = False
        self._started = 0

    def __repr__(self) -> str:
        return f"WorkPool({self.name}, {self.size})"

    def submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` on a worker as soon as one is free; dropped once the pool is closed."""
        with self._cond:
            if self._closed:
                return
            self._jobs.append(job)
            self._grow()

    def _grow(self) -> None:
        """Wake a free worker, or start one when none is free and the bound allows
        (lock held)."""
        free = len(self._threads) - self._busy
        if free >= len(self._jobs) or len(self._threads) >= self.size + self._extra:
            self._cond.notify()
            return
        self._started += 1
        thread = threading.Thread(target=self._work, daemon=True,
                                  name=f"{self.name}-{self._started}")
        self._threads.append(thread)
        thread.start()

    def hold_extra(self) -> None:
        """A running job was given up as stuck (a call to a frozen host, which cannot be
        cancelled): its worker no longer counts against ``size`` until
        ``release_extra``, so the other jobs keep ``size`` workers. The threads are then
        bounded by ``size`` plus the stuck jobs (at most one per host for lanes)."""
        with self._cond:
            self._extra += 1
            if self._jobs:
                self._grow()

    def release_extra(self) -> None:
        """The stuck job returned: a worker beyond ``size`` ends once idle."""
        with self._cond:
            self._extra = max(0, self._extra - 1)
            self._cond.notify()

    @property
    def threads(self) -> int:
        """How many workers exist now (never more than ``size`` plus the stuck jobs)."""
        with self._cond:
            return len(self._threads)

    def close(self, timeout_s: float = 2.0) -> None:
        """Drop the jobs not started; wait up to ``timeout_s`` for the running ones."""
        with self._cond:
            self._closed = True
            self._jobs.clear()
            threads = list(self._threads)
            self._cond.notify_all()
        if timeout_s <= 0:
            return
        import time

        end = time.monotonic() + timeout_s
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, end - time.monotonic()))

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    if len(self._threads) > self.size + self._extra:  # one too many
                        self._threads.remove(me)
                        return
                    self._cond.wait()
                if self._closed:
                    self._threads.remove(me)
                    return
                job = self._jobs.popleft()
                self._busy += 1
            try:
                job()
            except BaseException:  # a job's bug: logged, and the worker carries on
                logger.exception("a job on work pool %s failed", self.name)
            finally:
                with self._cond:
                    self._busy -= 1


class Lanes(Generic[K]):
    """Jobs run one at a time per key, in order, on ``pool`` (see the module doc)."""

    def __init__(self, pool: WorkPool, *, batch: int = LANE_BATCH) -> None:
        self.pool = pool
        self.batch = batch
        self._lock = threading.Lock()
        self._lanes: dict[K, deque[Callable[[], object]]] = {}  # busy lanes only

    def submit(self, key: K, job: Callable[[], object]) -> None:
        """Run ``job`` after every job submitted before it under ``key``."""
        with self._lock:
            lane = self._lanes.get(key)
            if lane is not None:  # its drain is scheduled or running: it takes this too
                lane.append(job)
                return
            self._lanes[key] = deque([job])
        self.pool.submit(lambda: self._drain(key))

    def busy(self, key: K) -> bool:
        """Whether ``key`` has a job queued or running."""
        with self._lock:
            return key in self._lanes

    def _drain(self, key: K) -> None:
        for _ in range(self.batch):
            with self._lock:
                lane = self._lanes[key]
                if not lane:
                    del self._lanes[key]
                    return
                job = lane.popleft()
            try:
                job()
            except Exception:
                logger.exception("a job of lane %s on work pool %s failed", key,
                                 self.pool.name)
        with self._lock:
            if not self._lanes[key]:
                del self._lanes[key]
                return
        self.pool.submit(lambda: self._drain(key))
