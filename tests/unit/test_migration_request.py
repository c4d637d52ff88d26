"""Migration flags and parameters from plain words (hypervisor/migration.py)."""

from __future__ import annotations

from virtlife.hypervisor.libvirt_api import libvirt
from virtlife.hypervisor.migration import MigrationRequest, flags, params

ALWAYS = libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_ABORT_ON_ERROR


def test_a_default_request_is_a_live_persistent_move() -> None:
    assert flags(MigrationRequest()) == (
        ALWAYS | libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    assert params(MigrationRequest()) == {}


def test_offline_is_never_live_and_always_persistent() -> None:
    got = flags(MigrationRequest(offline=True, persistent=False, undefine_source=False))
    assert got == ALWAYS | libvirt.VIR_MIGRATE_OFFLINE | libvirt.VIR_MIGRATE_PERSIST_DEST


def test_each_option_sets_its_own_flag_only() -> None:
    base = flags(MigrationRequest(live=False, persistent=False, undefine_source=False))
    assert base == ALWAYS
    cases = {
        "paused": libvirt.VIR_MIGRATE_PAUSED, "unsafe": libvirt.VIR_MIGRATE_UNSAFE,
        "auto_converge": libvirt.VIR_MIGRATE_AUTO_CONVERGE,
        "postcopy": libvirt.VIR_MIGRATE_POSTCOPY, "compressed": libvirt.VIR_MIGRATE_COMPRESSED,
        "tunnelled": libvirt.VIR_MIGRATE_TUNNELLED,
    }
    for option, flag in cases.items():
        req = MigrationRequest(live=False, persistent=False, undefine_source=False,
                               **{option: True})
        assert flags(req) == base | flag, option
    req = MigrationRequest(live=False, persistent=False, undefine_source=False, parallel=4)
    assert flags(req) == base | libvirt.VIR_MIGRATE_PARALLEL
    for mode, flag in (("all", libvirt.VIR_MIGRATE_NON_SHARED_DISK),
                       ("inc", libvirt.VIR_MIGRATE_NON_SHARED_INC)):
        req = MigrationRequest(live=False, persistent=False, undefine_source=False,
                               copy_storage=mode)
        assert flags(req) == base | flag


def test_parameters_carry_bandwidth_connections_and_name() -> None:
    got = params(MigrationRequest(bandwidth_mib_s=64, parallel=2, dest_name="web2"))
    assert got == {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 64,
                   libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY: 64,
                   libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: 2,
                   libvirt.VIR_MIGRATE_PARAM_DEST_NAME: "web2"}


def test_postcopy_resume_sets_both_postcopy_flags() -> None:
    base = flags(MigrationRequest(live=False, persistent=False, undefine_source=False))
    req = MigrationRequest(live=False, persistent=False, undefine_source=False,
                           postcopy_resume=True)
    assert flags(req) == base | libvirt.VIR_MIGRATE_POSTCOPY | \
        libvirt.VIR_MIGRATE_POSTCOPY_RESUME


def test_keep_source_drops_only_the_undefine_at_the_source() -> None:
    # --keep-source: still defined at the destination, and left defined at the source
    assert flags(MigrationRequest(undefine_source=False)) == (
        ALWAYS | libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST)
    assert flags(MigrationRequest(persistent=False, undefine_source=True)) == (
        ALWAYS | libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
