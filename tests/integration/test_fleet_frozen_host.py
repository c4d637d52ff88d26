"""One frozen libvirtd among 20 light hosts, under the server's event feed (issue 17):
every other host's state changes still arrive, and the frozen host is reported lost
by its keepalive, within the keepalive's deadline."""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab_support import claim_light_lab
from virtlife.api.hub import Feed, Hub
from virtlife.hypervisor.host import KEEPALIVE
from virtlife.lab import light
from virtlife.lab.light import LightUpResult
from virtlife.services.events import DomainEvent, EventKind
from virtlife.services.fleet import Fleet, HostRef

HOSTS = 20
NEW_VM = 4  # vm04: not among the 4 domains each light host starts with
# libvirt gives a peer up after ``count`` unanswered probes ``interval`` s apart; the
# wait for that is bounded by one interval more, and a margin for a loaded machine
LOSS_DEADLINE_S = KEEPALIVE[0] * (KEEPALIVE[1] + 2) + 10.0


class Recorder(Hub):
    """A hub that keeps every message on a queue (no server loop needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()

    def publish(self, message: dict[str, Any]) -> None:
        self.messages.put(message)


@pytest.fixture(scope="module")
def lab(real_stack: object) -> Iterator[LightUpResult]:
    with claim_light_lab():
        result = light.up(HOSTS, vms=4, running_hosts=0, owner_pid=os.getpid())
        try:
            yield result
        finally:
            light.down()


def _until(rec: Recorder, deadline: float, done: Any) -> list[dict[str, Any]]:
    """The messages received until ``done(message)`` is true for one, or the deadline."""
    seen: list[dict[str, Any]] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = rec.messages.get(timeout=left)
        except queue.Empty:
            break
        seen.append(message)
        if done(message):
            break
    return seen


def test_a_frozen_host_holds_up_no_other_hosts_states_and_is_lost_at_keepalive(
        lab: LightUpResult) -> None:
    frozen = lab.hosts[-1].name
    others = [h.name for h in lab.hosts[:-1]]
    pid = light.libvirtd_pid(frozen)
    fleet = Fleet([HostRef(h.name, h.uri) for h in lab.hosts])
    rec = Recorder()
    feed = Feed(fleet, rec)
    feed.start()
    stopped = False
    try:
        ready = time.monotonic() + 60.0
        while not feed.cache.fresh() and time.monotonic() < ready:
            _until(rec, min(ready, time.monotonic() + 0.5), lambda m: False)
        assert feed.cache.fresh(), f"the feed did not list every host: {feed.hosts}"

        os.kill(pid, signal.SIGSTOP)
        stopped = True
        # an event that came just before the freeze: its re-read now waits on the frozen
        # host (as the stream delivers it: a host's listener calls the feed)
        feed._on_event(DomainEvent(frozen, "vm03", EventKind.LIFECYCLE, "resumed", ""))
        xml = light.domain_xml(NEW_VM)
        defined, problems = fleet.each_host(lambda h: h.define(xml).name, others)
        assert problems == [] and sorted(defined) == others

        states: set[str] = set()
        lost: dict[str, Any] | None = None

        def loss(m: dict[str, Any]) -> bool:
            if m["type"] == "state" and m["name"] == f"vm{NEW_VM:02d}":
                states.add(m["host"])
            return (m["type"] == "event" and m["host"] == frozen
                    and m.get("event") in ("disconnected", "unreachable"))

        seen = _until(rec, time.monotonic() + LOSS_DEADLINE_S, loss)
        lost = seen[-1] if seen and loss(seen[-1]) else None
        assert lost is not None, (
            f"{frozen} was not reported lost within {LOSS_DEADLINE_S:g} s")
        # the other hosts' new states came before the frozen host's keepalive expired
        assert sorted(states) == others, (
            f"missing: {sorted(set(others) - states)} when {frozen} was lost: {lost}")
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        feed.close()
        fleet.close()
