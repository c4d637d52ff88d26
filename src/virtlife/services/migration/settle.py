"""Finding out how a migration ended when its own call could not say: ask the hosts.

The orchestrator's half of ``ending``: it gathers ``Sighting`` values (each host asked
with a deadline, so a host behind a cut link costs seconds, not libvirt's keepalive),
lets ``ending`` judge them, and writes what it found into the journal. Used after an
abort that libvirt winds down slowly (``wind_down``), when the destination stops
answering before the end is confirmed, and for migration rows whose process died or
whose end was left unconfirmed (``reconcile``: the row is corrected). It decides
nothing itself and never prints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from virtlife import errors
from virtlife.hypervisor import Guest, Host
from virtlife.hypervisor.migration import Migration
from virtlife.lazylog import get_logger
from virtlife.services.fleet import Fleet
from virtlife.services.migration.ending import (
    UNCONFIRMED,
    Settle,
    SettleDecision,
    Sighting,
    after_death,
    confirmed_later,
    postcopy_settle,
    where_now,
)
from virtlife.services.migration.phases import JobSample, MigrationPhase
from virtlife.states import VMState
from virtlife.store.journal import Journal, JournalEntry

logger = get_logger(__name__)

ASK_S = 2.0  # how long a host is given to say where the VM is, after a failure
ABORT_SETTLE_S = 3.0  # how long an abort is given to show at the source
POLL_S = 0.25
MIGRATIONS = ("migrate", "migrate-resume")
POSTCOPY_SETTLE_S = 45.0  # how long a failed post-copy is watched (QEMU may finish it)
POSTCOPY_STABLE_S = 10.0  # "post-copy failed" held this long, nothing moving: the end
POSTCOPY_LOOK_S = 1.0
_SILENT = "did not answer within"  # each_host's words for a host that never answered


def sight(host: Host, name: str, uuid: str = "") -> Sighting:
    """What ``host`` says about the VM ``name`` (of ``uuid``, when given)."""
    guest = host.find(name)
    if guest is None or (uuid and guest.uuid() != uuid):
        return Sighting(host.name)
    status = guest.status()
    job = guest.job() if status.state.is_active else None
    return Sighting(host.name, state=status.state, reason=status.reason, job=job)


def ask(fleet: Fleet, names: Sequence[str], vm: str, uuid: str = "",
        deadline_s: float = ASK_S) -> list[Sighting]:
    """Each host of ``names`` asked at once, for at most ``deadline_s``."""
    found, problems = fleet.each_host(lambda h: sight(h, vm, uuid), list(names),
                                      deadline_s=deadline_s)
    lost = {p.host: p.message for p in problems}
    return [found[n] if n in found else Sighting(n, answered=False, why=unreachable(
        n, lost.get(n, "not asked"), deadline_s)) for n in names]


def unreachable(host: str, message: str, deadline_s: float) -> str:
    """Why ``host`` could not be asked, in words that tell a cut link (no answer at
    all) from a libvirtd that is gone (the connection refused or closed)."""
    if _SILENT in message:
        return (f"{host} did not answer over the network within {deadline_s:g} s: the "
                "link to it may be down (its libvirtd was not seen to stop)")
    return f"{host}'s libvirtd cannot be reached: {message}"


def wind_down(guest: Guest, job: Migration, done: threading.Event) -> None:
    """After our abort: wait, at most ``ABORT_SETTLE_S``, until it shows at the source
    (the job failed or cancelled, or gone; the VM active there). libvirt's own call
    may go on for its keepalive (~28 s over a cut link): that is not awaited."""
    end = time.monotonic() + ABORT_SETTLE_S
    while not done.wait(POLL_S) and time.monotonic() < end:
        try:
            stats = job.job_stats()
            phase = JobSample.from_job_stats(stats, previous=None, elapsed_s=0.0).phase \
                if stats else None
            if phase in (None, MigrationPhase.FAILED, MigrationPhase.CANCELLED) and \
                    guest.status().state in (VMState.RUNNING, VMState.IDLE):
                logger.info("the abort of %s showed at %s within %.1f s", guest.name,
                            guest.host.name, ABORT_SETTLE_S - (end - time.monotonic()))
                return
        except errors.VirtlifeError as err:
            logger.info("after the abort of %s: %s", guest.name, err)
            return


def after_abort(fleet: Fleet, guest: Guest, job: Migration, done: threading.Event,
                dest: str) -> Sighting:
    """``wind_down`` and, at the same time, ask ``dest`` where the VM is (the answer,
    or why it could not be asked): both bounded, so a cut link costs seconds."""
    found: list[Sighting] = []
    asking = threading.Thread(target=lambda: found.extend(ask(fleet, [dest], guest.name)),
                              name=f"ask-{dest}", daemon=True)
    asking.start()
    wind_down(guest, job, done)
    asking.join(ASK_S + 1.0)
    return found[0] if found else Sighting(dest, answered=False, why=unreachable(
        dest, _SILENT, ASK_S))


def watch_postcopy(fleet: Fleet, guest: Guest, dest: str, uuid: str,
                   bound_s: float = POSTCOPY_SETTLE_S) -> SettleDecision:
    """After a post-copy failed: look at both ends every ``POSTCOPY_LOOK_S`` until
    ``ending.postcopy_settle`` says it settled (QEMU may still finish the move by
    itself), for at most ``bound_s`` (and each look's deadline)."""
    t0 = time.monotonic()
    failed_since: float | None = None
    pause = threading.Event()  # never set: a bounded wait between looks
    while True:
        src, dst = ask(fleet, [guest.host.name, dest], guest.name, uuid)
        now = time.monotonic()
        failed_since = (failed_since or now) if src.answered and src.postcopy_failed \
            else None
        decision = postcopy_settle(guest.name, src, dst, waited_s=now - t0, bound_s=bound_s,
                                   failed_for_s=0.0 if failed_since is None
                                   else now - failed_since, stable_s=POSTCOPY_STABLE_S)
        if decision.settle is not Settle.WAIT:
            logger.info("post-copy of %s settled after %.1f s: %s", guest.name, now - t0,
                        decision.settle.value)
            return decision
        pause.wait(POSTCOPY_LOOK_S)


def remove_stale_source(guest: Guest, uuid: str) -> str:
    """Undefine the shut-off copy a post-copy that completed late left at the source;
    what was done, for the result (a warning when it could not be)."""
    try:
        here = guest.host.find(guest.name)
        if here is None or here.uuid() != uuid or here.status().state.is_active:
            return ""
        here.undefine()
        return f"its shut-off copy at {guest.host.name} was undefined"
    except errors.VirtlifeError as err:
        return (f"its shut-off copy at {guest.host.name} could not be undefined ({err}): "
                f"do not start it; `virtlife undefine {guest.host.name}/{guest.name}`")


def reconcile(fleet: Fleet, journal: Journal, entries: Sequence[JournalEntry]) -> int:
    """Ask the hosts how each migration row of ``entries`` ended (rows of dead
    processes, marked interrupted by the sweep, or rows whose end was left
    unconfirmed) and correct the row; how many were corrected."""
    rows = [e for e in entries if e.operation in MIGRATIONS]
    if not rows:
        return 0
    try:
        names = sorted(fleet.refs)
    except errors.VirtlifeError as err:
        logger.info("cannot settle migration rows: %s", err)
        return 0
    fixed = 0
    for entry in rows:
        hosts = [entry.host, *[n for n in names if n != entry.host]]
        verdict = where_now(entry.vm, entry.host, ask(fleet, hosts, entry.vm, entry.uuid))
        if UNCONFIRMED not in entry.detail:
            outcome, detail = after_death(verdict)  # just swept: its process died
        elif not verdict.settled:
            continue  # still not known: left as it is, for the next look
        else:
            outcome, detail = confirmed_later(verdict, entry.detail)
        if not verdict.settled and UNCONFIRMED not in detail:
            detail = f"{detail} {UNCONFIRMED}"
        try:
            journal.correct(entry.op_id, outcome, detail)
            fixed += 1
        except errors.StoreUnavailable as err:
            logger.info("cannot correct operation %s: %s", entry.op_id, err)
    return fixed
