"""An operator token names files only under the allowed roots (issue 16): every route
that takes a path (create's kernel, initrd and disks, save, restore, attach-iso and its
detach, the driver ISO's tree and output) refuses one outside them with 403 before the
file is looked at, whatever ``..`` or a symbolic link tries; an admin token may name
any absolute path; nobody may name a relative one (the save used to take it). On a
served app over libvirt's test driver, with the real roles' tokens.

The roots here: the images directory (``VIRTLIFE_IMAGES``, a temporary directory) and
the test driver's storage pool ``/default-pool``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import Served, served
from support import NODE_URI, write_iso_stub

VM = "/api/vms/local/test"
NEW = "/api/hosts/local/vms"


@pytest.fixture
def root(api: Served) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


def _forbidden(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "not_permitted", error
    message: str = error["message"]
    assert "outside the allowed roots" in message
    for word in words:
        assert word in message, message
    return message


def _escapes(images: Path) -> list[str]:
    """Paths that name files outside the roots, however they are spelled."""
    (images / "etc").symlink_to("/etc")
    return ["/etc/shadow", "/dev/sda", f"{images}/../../../etc/shadow",
            f"{images}/etc/shadow", "/default-pool/../etc/shadow"]


def _vms(client: httpx.Client) -> list[str]:
    return [v["name"] for v in client.get("/api/vms").json()["vms"]]


# -- create -------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["disks", "kernel", "initrd"])
def test_create_refuses_an_operators_file_outside_the_roots(
        op: httpx.Client, images: Path, field: str) -> None:
    for path in _escapes(images):
        value: Any = [path] if field == "disks" else path
        _forbidden(op.post(NEW, json={"name": "evil", field: value}), path)
    assert _vms(op) == ["test"]
    assert op.get("/api/history").json() == []  # nothing started


def test_create_takes_an_operators_disk_under_the_roots(op: httpx.Client,
                                                        images: Path) -> None:
    disk = images / "web1.qcow2"  # a qcow2 must be there: its backing chain is read
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
    r = op.post(NEW, json={"name": "web1", "disks": [str(disk)]})
    assert r.status_code == 200, r.text
    r = op.post(NEW, json={"name": "web2", "disks": ["/default-pool/web2.img"]})
    assert r.status_code == 200, r.text
    assert sorted(_vms(op)) == ["test", "web1", "web2"]


def test_an_admin_may_name_any_disk(root: httpx.Client) -> None:
    r = root.post(NEW, json={"name": "raw", "disks": ["/dev/sda"]})
    assert r.status_code == 200, r.text


# -- save and restore -----------------------------------------------------------------------

def test_save_refuses_an_operators_path_outside_the_roots(op: httpx.Client,
                                                          images: Path) -> None:
    for path in _escapes(images):
        _forbidden(op.post(f"{VM}/actions/save", json={"path": path}), path)
    assert op.get(VM).json()["state"] == "running"


@pytest.mark.parametrize("who", ["operator", "admin"])
def test_save_refuses_a_relative_path_for_everyone(api: Served, who: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where a relative save would land, were it taken
    token = api.operator_token if who == "operator" else api.token
    with api.client(token=token) as c:
        r = c.post(f"{VM}/actions/save", json={"path": "test.sav"})
        assert r.status_code == 422, r.text
        assert "is not an absolute path" in r.json()["error"]["message"]
        assert c.get(VM).json()["state"] == "running"
    assert not (tmp_path / "test.sav").exists()


def test_an_operator_saves_and_restores_under_the_roots(api: Served, op: httpx.Client,
                                                        images: Path) -> None:
    image = images / "test.sav"
    saved = op.post(f"{VM}/actions/save", json={"path": str(image)})
    assert saved.status_code == 202, saved.text
    assert api.wait_operation(op, saved.json()["op_id"])["status"] == "ok"
    assert image.exists()
    back = op.post("/api/hosts/local/restore", json={"path": str(image)})
    assert back.status_code == 200, back.text
    assert op.get(VM).json()["state"] == "running"


def test_restore_tells_an_operator_nothing_about_files_outside_the_roots(
        op: httpx.Client, images: Path) -> None:
    """A file that exists and one that does not get the same answer, before any look."""
    answers = set()
    for path in ("/etc/shadow", "/nonexistent.sav", "/etc", *_escapes(images)):
        r = op.post("/api/hosts/local/restore", json={"path": path})
        _forbidden(r)
        answers.add((r.status_code, r.json()["error"]["code"]))
    assert answers == {(403, "not_permitted")}
    # under the roots the usual answers stand
    missing = op.post("/api/hosts/local/restore", json={"path": str(images / "no.sav")})
    assert missing.status_code == 404, missing.text


# -- attach-iso ------------------------------------------------------------------------------

@pytest.fixture
def node(tmp_path: Path, images: Path) -> Iterator[Served]:
    with served(tmp_path / "n.db", {"local": NODE_URI}, follow_events=False) as s:
        yield s


def test_attach_iso_refuses_an_operators_file_outside_the_roots(node: Served,
                                                               images: Path) -> None:
    outside = write_iso_stub(images.parent / "outside.iso")
    with node.client(token=node.operator_token) as op:
        for path in (str(outside), *_escapes(images)):
            _forbidden(op.post("/api/vms/local/vm-off/media", json={"path": path}), path)
            _forbidden(op.delete("/api/vms/local/vm-off/media", params={"path": path}))
        assert op.get("/api/history").json() == []


# -- the driver ISO ---------------------------------------------------------------------------

def _tree(where: Path) -> Path:
    for part in ("NetKVM/w10/amd64/netkvm.inf", "viostor/w10/amd64/viostor.inf"):
        (where / part).parent.mkdir(parents=True, exist_ok=True)
        (where / part).write_text(part)
    return where


def test_the_driver_iso_packs_and_writes_only_under_the_roots_for_an_operator(
        op: httpx.Client, root: httpx.Client, images: Path) -> None:
    route = "/api/media/windows-drivers-iso"
    inside = _tree(images / "drivers")
    (images / "etc").symlink_to("/etc")
    for tree in ("/etc", "/root", f"{images}/../.."):
        _forbidden(op.post(route, json={"drivers": tree, "out": str(images / "x.iso")}))
    assert not (images / "x.iso").exists()
    for out in ("/tmp/evil.iso", f"{images}/etc/evil.iso", f"{images}/../evil.iso"):
        _forbidden(op.post(route, json={"drivers": str(inside), "out": out}))
    assert not (images.parent / "evil.iso").exists()
    made = op.post(route, json={"drivers": str(inside), "out": str(images / "v.iso")})
    assert made.status_code == 200, made.text
    # an admin packs any tree, and writes anywhere
    other = _tree(images.parent / "elsewhere")
    done = root.post(route, json={"drivers": str(other), "out": str(images.parent / "a.iso")})
    assert done.status_code == 200, done.text
