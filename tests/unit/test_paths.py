"""``paths.check_path``, the one check every path a caller gives goes through, and the
library calls that use it (a caller of the services, not only the CLI and API)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import NODE_URI
from virtlife import errors
from virtlife.paths import check_path
from virtlife.services import isos
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.lifecycle import Lifecycle
from virtlife.services.media import Media
from virtlife.services.operations import Operations


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\0", "\x1b", "\x7f", "\x85"], ids=repr)
def test_a_control_character_anywhere_is_refused_naming_it(char: str) -> None:
    with pytest.raises(errors.InvalidInput) as err:
        check_path(f"/isos/a{char}b.iso", "the ISO")
    assert str(err.value).startswith("the ISO '/isos/a")
    assert f"({char!r} at position 8)" in str(err.value)
    assert err.value.exit_code == 64


@pytest.mark.parametrize("path", ["/isos/a b.iso", "/isos/é.iso", "rel/x", "/x\u2028y"])
def test_printable_paths_pass_unchanged(path: str) -> None:
    assert check_path(path) == path


def test_an_empty_path_is_refused() -> None:
    with pytest.raises(errors.InvalidInput, match="is empty"):
        check_path("", "--out")


def test_the_library_refuses_it_too_for_attach_save_and_the_driver_iso(
        tmp_path: Path) -> None:
    fleet = Fleet([HostRef("t", NODE_URI)])
    try:
        bad = str(tmp_path / "a\nb.iso")
        with pytest.raises(errors.InvalidInput, match="control character"):
            Media(fleet, Operations(None)).attach_iso("vm-off", bad)
        with pytest.raises(errors.InvalidInput, match="control character"):
            Lifecycle(fleet).save("vm-running", bad)
        with pytest.raises(errors.InvalidInput, match="control character"):
            isos.build_iso(tmp_path, bad)
        assert sorted(tmp_path.iterdir()) == []
    finally:
        fleet.close()
