"""The threads of a fleet call: the host's caller connects, lists and closes.

A fleet call to a host runs in that host's ``HostCaller`` turn on the shared caller
pool, and the connect runs there too (no connect job per host: ``each_host`` enforces
the deadline); no thread is any host's own; a connection that comes after its deadline
is closed, never kept; closing the fleet closes each connection as its caller's last
turn; an idle caller holds no thread. The main thread never connects in its own
thread: Ctrl-C must end a connect to a silent host at once.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from libvirt_faults import Opens, silent_host, wait_until
from support import NODE2_URI, NODE_URI
from virtlife import errors
from virtlife.hypervisor import Host
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.hostcalls import Busy, HostCaller


def _threads_of(host: str, *, besides: frozenset[threading.Thread] = frozenset()
                ) -> list[str]:
    """The names of the threads working for ``host``, but ``besides`` (those of earlier
    tests' fleets, which may still be winding down: a thread name says only the host)."""
    return sorted(t.name for t in threading.enumerate()
                  if t.name.endswith(f"-{host}") and t not in besides)


def test_a_silent_host_holds_one_caller_worker_and_no_thread_of_its_own(silent: str) -> None:
    earlier = frozenset(threading.enumerate())
    with Fleet([HostRef("a", NODE_URI), HostRef("far", silent)],
               list_deadline_s=0.5) as fleet:
        t0 = time.monotonic()
        listing = fleet.list_vms()
        assert time.monotonic() - t0 < 1.5
        assert listing.answered == ["a"]
        assert [p.host for p in listing.unreachable] == ["far"]
        # the connect to far still hangs, in far's caller turn: one worker of the pool
        # (which no longer counts it), and no thread named after a host
        assert fleet._callers["far"][1].stuck
        assert _threads_of("far", besides=earlier) == []
        assert _threads_of("a", besides=earlier) == []
        added = [t.name for t in threading.enumerate() if t not in earlier]
        pools = ("fleet-", "host-jobs-", "events-", "libvirt-")
        assert all(n.startswith(pools) for n in added), added


def test_a_connect_that_returns_after_its_deadline_is_closed_and_never_kept(
        opens: Opens) -> None:
    opens.gate = threading.Event()  # the connect blocks until the gate opens
    # the listing gives up before the connect's own deadline: nobody waits for it then
    with Fleet([HostRef("a", NODE_URI)], connect_timeout_s=0.3, retry_after_s=0.1,
               list_deadline_s=0.1) as fleet:
        listing = fleet.list_vms()
        assert listing.answered == []
        assert "did not answer within 0.1 s" in listing.unreachable[0].message
        time.sleep(0.4)  # past the connect's deadline
        opens.gate.set()
        assert wait_until(lambda: len(opens.opened) == 1)
        late = opens.opened[0]
        assert late.wait_closed() and late.closes == [0]
        opens.gate = None

        def answered() -> bool:
            time.sleep(0.05)  # the caller thread is free, the failure forgotten
            return fleet.list_vms().answered == ["a"]

        assert wait_until(answered)
        assert len(opens.opened) == 2  # a new connection: the late one was not kept
        assert opens.open_now() == [opens.opened[1]]


@pytest.mark.parametrize("wait", [True, False])
def test_closing_the_fleet_closes_each_connection_on_its_caller_thread(
        opens: Opens, wait: bool) -> None:
    earlier = frozenset(threading.enumerate())
    fleet = Fleet([HostRef("a", NODE_URI), HostRef("b", NODE2_URI)])
    assert fleet.list_vms().answered == ["a", "b"]
    closed_on: dict[str, str] = {}
    for opened in opens.opened:
        def close(real=opened.conn.close, uri=opened.uri) -> int:  # type: ignore[no-untyped-def]
            closed_on[uri] = threading.current_thread().name
            return int(real())
        opened.conn.close = close
    fleet.close(wait=wait)
    assert wait_until(lambda: not opens.open_now())
    assert set(closed_on) == {NODE_URI, NODE2_URI}
    assert all(name.startswith("fleet-") for name in closed_on.values()), closed_on
    assert wait_until(lambda: not _threads_of("a", besides=earlier)
                      and not _threads_of("b", besides=earlier))


def test_a_caller_runs_its_calls_on_the_shared_pool_and_holds_nothing_when_idle() -> None:
    caller = HostCaller("h")
    caller.start()  # nothing to start
    assert not caller.alive
    call = caller.submit(lambda: threading.current_thread().name)
    assert not isinstance(call, Busy) and call.done.wait(5)
    assert isinstance(call.value, str) and call.value.startswith("fleet-")
    assert wait_until(lambda: not caller.alive)
    caller.stop()


def test_a_stopped_caller_runs_its_last_call_after_the_running_one_on_its_worker() -> None:
    caller = HostCaller("h")
    gate = threading.Event()
    order: list[tuple[str, str]] = []

    def running() -> None:
        gate.wait(5)
        order.append(("call", threading.current_thread().name))

    first = caller.submit(running)
    assert not isinstance(first, Busy)
    while first.started is None:
        time.sleep(0.01)
    caller.stop(then=lambda: order.append(("last", threading.current_thread().name)))
    time.sleep(0.1)
    assert order == []  # the last call waits for the running one
    gate.set()
    assert wait_until(lambda: len(order) == 2)
    ((_, worker), _) = order
    assert worker.startswith("fleet-")
    assert order == [("call", worker), ("last", worker)]
    assert wait_until(lambda: not caller.alive)


def test_a_caller_that_never_ran_still_runs_its_last_call() -> None:
    caller = HostCaller("idle")
    ran = threading.Event()
    caller.stop(then=ran.set)
    assert ran.wait(5)


def test_ctrl_c_ends_a_connect_asked_in_this_thread_on_the_main_thread() -> None:
    # on the main thread the connect still runs on a thread of its own, so that the
    # main thread waits interruptibly: else it would see the Ctrl-C only at hang-up (5 s)
    with silent_host(hang_up_after_s=5) as uri:
        host = Host("far", uri, connect_timeout_s=30)
        main = threading.main_thread().ident
        assert main == threading.get_ident()
        timer = threading.Timer(0.3, signal.pthread_kill, args=(main, signal.SIGINT))
        t0 = time.monotonic()
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                host.connect(in_this_thread=True)
            assert time.monotonic() - t0 < 3
        finally:
            host.close(timeout_s=0)


def test_a_connect_in_this_thread_is_joined_by_others_with_their_deadline(
        opens: Opens) -> None:
    opens.gate = threading.Event()
    host = Host("a", NODE_URI, connect_timeout_s=0.3)
    outcome: list[object] = []

    def connect_here() -> None:
        try:
            host.connect(in_this_thread=True)
            outcome.append("connected")
        except errors.HostUnreachable as err:
            outcome.append(str(err))

    worker = threading.Thread(target=connect_here)
    worker.start()
    assert wait_until(lambda: opens.calls == 1)
    t0 = time.monotonic()
    with pytest.raises(errors.HostUnreachable, match=r"did not answer within 0\.3 s"):
        host.connect()  # joins the connect in flight: no second dial
    assert time.monotonic() - t0 < 1
    opens.gate.set()
    worker.join(5)
    assert opens.calls == 1
    assert len(outcome) == 1 and "did not answer within 0.3 s" in str(outcome[0])
    assert opens.opened[0].wait_closed()
    host.close()
