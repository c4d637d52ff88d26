"""The bounded work pool and its per-key lanes: order, one job at a time per key, a
blocked lane holding only its own worker, and never more threads than the pool's size."""

from __future__ import annotations

import threading

from virtlife.workpool import Lanes, WorkPool

WAIT_S = 10.0


def test_a_lane_runs_its_jobs_in_order_one_at_a_time() -> None:
    pool = WorkPool("t-order", 4)
    lanes: Lanes[str] = Lanes(pool, batch=3)
    done = threading.Event()
    ran: list[int] = []
    running = [0]
    overlap: list[int] = []
    lock = threading.Lock()

    def job(i: int) -> None:
        with lock:
            running[0] += 1
            if running[0] > 1:
                overlap.append(i)
        ran.append(i)
        with lock:
            running[0] -= 1
        if i == 49:
            done.set()

    try:
        for i in range(50):
            lanes.submit("a", lambda i=i: job(i))
        assert done.wait(WAIT_S)
        assert ran == list(range(50))
        assert overlap == []
    finally:
        pool.close()


def test_a_blocked_lane_holds_one_worker_and_the_others_go_on() -> None:
    pool = WorkPool("t-block", 2)
    lanes: Lanes[str] = Lanes(pool)
    release = threading.Event()
    started = threading.Event()
    finished: list[str] = []
    all_done = threading.Event()

    def blocked() -> None:
        started.set()
        release.wait(WAIT_S)

    def quick(key: str) -> None:
        finished.append(key)
        if len(finished) == 20:
            all_done.set()

    try:
        lanes.submit("frozen", blocked)
        assert started.wait(WAIT_S)
        for _ in range(5):  # queued behind the blocked job: it keeps no other worker
            lanes.submit("frozen", lambda: quick("frozen"))
        for n in range(20):
            lanes.submit(f"h{n}", lambda n=n: quick(f"h{n}"))
        assert all_done.wait(WAIT_S)
        assert sorted(finished) == sorted(f"h{n}" for n in range(20))
        assert lanes.busy("frozen")
        assert pool.threads <= 2
    finally:
        release.set()
        pool.close()


def test_the_pool_never_starts_more_threads_than_its_size() -> None:
    pool = WorkPool("t-size", 3)
    gate = threading.Event()
    count = threading.Semaphore(0)

    def job() -> None:
        gate.wait(WAIT_S)
        count.release()

    try:
        for _ in range(30):
            pool.submit(job)
        assert pool.threads == 3
        assert len([t for t in threading.enumerate() if t.name.startswith("t-size-")]) == 3
        gate.set()
        for _ in range(30):
            assert count.acquire(timeout=WAIT_S)
    finally:
        gate.set()
        pool.close()
