"""The allowed-roots policy as a pure function (``paths.within_roots``), the settings
that add roots, and the roots a host has (``services.roots``) on the test driver."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtlife import config, errors
from virtlife.paths import inside, within_roots
from virtlife.services.fleet import Fleet, HostRef
from virtlife.services.roots import host_roots, machine_roots

ROOTS = ("/srv/images", "/var/lib/libvirt/images")


@pytest.mark.parametrize(("path", "allowed"), [
    ("/srv/images/a.qcow2", True),
    ("/srv/images/sub/dir/a.iso", True),
    ("/var/lib/libvirt/images/x.sav", True),
    ("/srv/images", False),  # the root itself is no file in it
    ("/srv/images/../../etc/shadow", False),
    ("/srv/images/./../images2/a", False),
    ("/srv/images2/a", False),  # a sibling that shares the prefix
    ("/srv/imagesx", False),
    ("/etc/shadow", False),
    ("/dev/sda", False),
    ("/", False),
    ("//srv/images/a", True),  # posix keeps a leading // apart; normpath folds it here
])
def test_a_path_must_lie_strictly_inside_a_root(path: str, allowed: bool) -> None:
    resolve = posixpath.normpath
    if allowed:
        assert within_roots(path, ROOTS, "the disk", resolve=resolve) == resolve(path)
    else:
        with pytest.raises(errors.NotPermitted, match="outside the allowed roots"):
            within_roots(path, ROOTS, "the disk", resolve=resolve)


@pytest.mark.parametrize("path", ["", "rel/a.iso", "./a", "/srv/images/a\nb"])
def test_no_usable_absolute_path_is_bad_input_not_a_permission(path: str) -> None:
    with pytest.raises(errors.InvalidInput) as err:
        within_roots(path, ROOTS, "the ISO", resolve=posixpath.normpath)
    assert not isinstance(err.value, errors.NotPermitted)


def test_the_refusal_names_the_path_the_roots_and_what_to_do() -> None:
    with pytest.raises(errors.NotPermitted) as err:
        within_roots("/srv/images/../../etc/shadow", ROOTS, "the save file",
                     resolve=posixpath.normpath, where="on host hv1")
    message = str(err.value)
    assert message.startswith("the save file /srv/images/../../etc/shadow (it resolves to "
                              "/etc/shadow) is outside the allowed roots on host hv1 "
                              "(/srv/images, /var/lib/libvirt/images)")
    assert "[paths] allowed_roots" in message
    assert err.value.exit_code == 64


segment = st.sampled_from(["a", "b", "..", ".", "images", "etc", ""])


@given(st.lists(segment, min_size=1, max_size=8))
def test_whatever_the_dots_an_allowed_path_resolves_inside_a_root(parts: list[str]) -> None:
    path = "/srv/images/" + "/".join(parts)
    try:
        got = within_roots(path, ROOTS, resolve=posixpath.normpath)
    except errors.InvalidInput:
        return
    assert any(inside(got, root) for root in ROOTS)
    assert ".." not in got.split("/")


def test_a_symbolic_link_out_of_a_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "etc").symlink_to("/etc")
    (root / "disk.img").write_bytes(b"")
    with pytest.raises(errors.NotPermitted, match="resolves to /etc/shadow"):
        within_roots(str(root / "etc" / "shadow"), [str(root)])
    assert within_roots(str(root / "disk.img"), [str(root)]) == str(root / "disk.img")
    # a root that is itself a link is resolved alike
    (tmp_path / "link").symlink_to(root)
    assert within_roots(str(root / "disk.img"), [str(tmp_path / "link")]) == \
        str(root / "disk.img")


def test_settings_add_roots_and_refuse_a_relative_one(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[paths]\nallowed_roots = ["/srv/vms", "/data/isos"]\n')
    assert config.load_settings(path).allowed_roots == ("/srv/vms", "/data/isos")
    for bad in ('allowed_roots = ["srv"]', 'allowed_roots = "/srv"', "other = 1"):
        path.write_text(f"[paths]\n{bad}\n")
        with pytest.raises(errors.InvalidInput):
            config.load_settings(path)


def test_a_hosts_roots_are_the_images_dir_the_settings_and_its_directory_pools(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTLIFE_IMAGES", str(tmp_path / "images"))
    settings = config.Settings(allowed_roots=("/srv/vms",))
    fleet = Fleet([HostRef("t", "test:///default"), HostRef("far", "qemu+ssh://h/system")])
    try:
        roots = host_roots(fleet, "t", settings)
        assert roots.roots == (str(tmp_path / "images"), "/srv/vms", "/default-pool")
        assert roots.local and roots.where == "on host t"
        assert roots.check("/default-pool/a.img", "the disk") == "/default-pool/a.img"
        here = machine_roots(Fleet([HostRef("t", "test:///default")]), settings)
        assert "/default-pool" in here.roots and here.local
    finally:
        fleet.close()
    assert os.path.isabs(str(config.images_dir()))
