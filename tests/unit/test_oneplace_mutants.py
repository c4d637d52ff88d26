"""One VM, one host (``services.oneplace``), pinned where mutation testing (mutmut 3.3.1)
found it loose.

Each test failed on at least one surviving mutant: the refusals' and the warning's full
text (every host named, the reason each host could not be asked, what was being done),
the check's own defaults (a revert relies on them), a define of a VM without a UUID,
and a migration back that must forget the host it left. Setups as in test_oneplace:
two hosts opened from one test-driver node file hold the same VMs (same UUIDs); a
``qemu+tcp`` URI on a closed loopback port is a host that refuses at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from support import NODE_URI
from virtlife import config, errors
from virtlife.services.freeze import FreezeGuard
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.oneplace import Sightings, copy_refusal, verdict
from virtlife.services.snapshots import Snapshots
from virtlife.states import StateInfo, VMState
from virtlife.store import open_store
from virtlife.store.db import Store
from virtlife.store.images import LeftCopy
from virtlife.store.journal import Actor

OFF = "44444444-4444-4444-4444-444444444444"  # vm-off in tests/data/node.xml
DOWN_C = "qemu+tcp://127.0.0.1:1/system"  # nothing listens there: refused at once
DOWN_D = "qemu+tcp://127.0.0.1:9/system"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.db") as s:
        yield s


Make = Callable[..., Lifecycle]


def _seen_at(store: Store, host: str, uuid: str = OFF) -> None:
    """The journal saw the VM started on ``host`` (so virtlife last saw it there)."""
    store.journal.record(host=host, vm="vm-off", uuid=uuid, operation="start",
                         outcome="ok", detail="running (booted)", duration_s=1.0,
                         actor=Actor("t"))


# -- the pure verdicts, in full ------------------------------------------------------------

def test_a_refusal_names_every_host_it_is_active_on_with_its_state() -> None:
    seen = Sightings({"b": StateInfo(VMState.RUNNING, "booted"),
                      "c": StateInfo(VMState.PAUSED, "user"),
                      "d": StateInfo(VMState.SHUTOFF, "destroyed")}, {}, set())
    assert verdict("web1", "a", seen, ignore_unreachable=False) == (
        "cannot start web1 on a: the same VM (same UUID) is active on b (running (booted)), "
        "c (paused (user)); two copies would corrupt its disk. Stop it there first, or "
        "migrate it here")


def test_an_unknown_names_each_silent_host_that_held_it_and_why_it_is_silent() -> None:
    seen = Sightings({}, {"c": "connection refused", "d": "timed out", "e": "refused"},
                     {"c", "d"})
    assert verdict("web1", "a", seen, ignore_unreachable=False) == (
        "cannot start web1 on a: whether it runs on c, d is unknown (virtlife last saw it "
        "defined there, and the host cannot be asked: c: connection refused; d: timed "
        "out). Check that host, or pass --ignore-unreachable if you know it does not run "
        "there")


def test_a_left_copy_refusal_says_what_was_done_where_and_where_the_vm_went() -> None:
    copy = LeftCopy(OFF, "a", "web1", "b", "mig000000007", "migrated to b with --keep-source",
                    datetime(2026, 1, 1, tzinfo=UTC))
    assert copy_refusal("web1", "a", copy) == (
        "cannot start web1 on a: this is the copy a migration left behind (migrated to b "
        "with --keep-source, operation mig000000007); the VM lives on b now. Start it "
        "there, migrate it back here, or undefine this copy")


# -- OnePlace.check and its callers ---------------------------------------------------------

def test_the_checks_defaults_refuse_an_unknown_and_say_start(fleet_of: Make,
                                                             store: Store) -> None:
    lc = fleet_of(("a", NODE_URI), ("c", DOWN_C))
    _seen_at(store, "c")
    with pytest.raises(errors.InvalidTransition) as refused:
        lc.oneplace.check(OFF, "vm-off", "a")
    assert str(refused.value).startswith(
        "cannot start vm-off on a: whether it runs on c is unknown")


def test_skipped_hosts_are_all_named_in_the_warning(fleet_of: Make, store: Store) -> None:
    lc = fleet_of(("a", NODE_URI), ("c", DOWN_C), ("d", DOWN_D))
    _seen_at(store, "c")
    _seen_at(store, "d")
    started = lc.start("a/vm-off", ignore_unreachable=True)
    assert started.state.state is VMState.RUNNING
    assert started.warnings == ("not checked on c, d (unreachable; --ignore-unreachable)",)


def test_a_vm_defined_without_a_uuid_is_checked_nowhere_and_warned_of_nothing(
        fleet_of: Make) -> None:
    lc = fleet_of(("a", NODE_URI), ("b", NODE_URI))
    xml = lc.dumpxml("a/vm-off", inactive=True)
    xml = re.sub(r"\s*<uuid>[^<]*</uuid>", "", xml).replace(
        "<name>vm-off</name>", "<name>vm-new</name>")
    defined = lc.define(xml, host="a")
    assert defined.warnings == ()
    assert lc.state("a/vm-new")[1].state is VMState.SHUTOFF


def test_a_revert_of_the_copy_a_migration_left_is_refused_in_full(fleet_of: Make,
                                                                   store: Store) -> None:
    lc = fleet_of(("a", NODE_URI), ("b", NODE_URI))
    snapshots = Snapshots(lc.fleet, lc.ops, FreezeGuard(store.journal, store.freezes),
                          config.Settings(sync_time=False), oneplace=lc.oneplace)
    lc.start("a/vm-off")
    snapshots.create("a/vm-off", "up")  # taken running: a revert starts a QEMU
    lc.destroy("a/vm-off")
    lc.oneplace.moved(OFF, "vm-off", source="a", dest="b", op_id="mig000000009",
                      kept_source=True)
    with pytest.raises(errors.InvalidTransition) as refused:
        snapshots.revert("a/vm-off", "up")
    assert str(refused.value) == (
        "cannot revert to snapshot up (it runs) vm-off on a: this is the copy a migration "
        "left behind (migrated to b with --keep-source, operation mig000000009); the VM "
        "lives on b now. Start it there, migrate it back here, or undefine this copy")
    assert lc.state("a/vm-off")[1].state is VMState.SHUTOFF


def test_a_migration_back_forgets_the_host_it_left(fleet_of: Make) -> None:
    """a -> c -> a, neither keeping its source: c no longer holds the VM, so c being
    unreachable does not block a start at a."""
    lc = fleet_of(("a", NODE_URI), ("c", DOWN_C))
    lc.oneplace.moved(OFF, "vm-off", source="a", dest="c", op_id="mig000000010",
                      kept_source=False)
    lc.oneplace.moved(OFF, "vm-off", source="c", dest="a", op_id="mig000000011",
                      kept_source=False)
    started = lc.start("a/vm-off")
    assert started.state.state is VMState.RUNNING and started.warnings == ()
