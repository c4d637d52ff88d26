"""A host URI must not run programs, open sockets or read files on the server (issue 16).

The attacks of the issue, run against a served app (a read-write token adds the host)
and against the CLI: ``qemu+ext``/``qemu+ssh`` with ``?command=`` (a script here that
would leave a marker file), ``test:///FILE`` (its first line came back in the host's
``problem``), and a refused URI already in an older store (the event feed re-opened it
on every reconnect).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from api_support import served
from support import NODE_URI, VIRTLIFE

SECRET = "SECRET-FIRST-LINE 7f3a"


@pytest.fixture
def marker(tmp_path: Path) -> tuple[Path, Path]:
    """A script that leaves ``marker`` behind when something runs it: (script, marker)."""
    made = tmp_path / "marker"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {made}\n")
    script.chmod(0o755)
    return script, made


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(f"{SECRET}\nsecond line\n")
    return path


def _attacks(script: Path) -> list[str]:
    return [f"qemu+ext:///system?command={script}",
            f"qemu+ssh://localhost/system?command={script}",
            f"qemu+ssh://localhost/system?no_tty=1&netcat={script}",
            f"qemu+ssh://-oProxyCommand={script}/system"]


def test_the_api_refuses_a_uri_that_runs_a_program(tmp_path: Path,
                                                    marker: tuple[Path, Path]) -> None:
    script, made = marker
    with served(tmp_path / "api.db", {"t": NODE_URI}, follow_events=False) as api, \
            api.client() as c:
        for i, uri in enumerate(_attacks(script)):
            r = c.post("/api/hosts", json={"name": f"evil{i}", "uri": uri})
            assert r.status_code == 422, (uri, r.text)
            assert "refused" in r.json()["error"]["message"]
        assert [h["name"] for h in c.get("/api/hosts").json()] == ["t"]
    assert not made.exists()


@pytest.mark.parametrize("uri", ["qemu:///session", "qemu:///embed?root={tmp}/embed",
                                 "qemu+unix:///system?socket=/run/x.sock",
                                 "qemu+tls://h/system?pkipath=/root",
                                 "qemu+ssh://h/system?keyfile=/root/.ssh/id_rsa",
                                 "qemu+ssh://h/system?known_hosts=/etc/shadow",
                                 "qemu+ssh://h/system?Command=/bin/sh",
                                 "qemu+ssh://h/system?no_verify=1;command=/bin/sh",
                                 "qemu+ssh://h/system?%63ommand=/bin/sh",
                                 "qemu+tcp://h/system?name=test:///etc/shadow"])
def test_the_api_refuses_sockets_files_and_sessions(tmp_path: Path, uri: str) -> None:
    with served(tmp_path / "api.db", {"t": NODE_URI}, follow_events=False) as api, \
            api.client() as c:
        r = c.post("/api/hosts", json={"name": "evil", "uri": uri.format(tmp=tmp_path)})
        assert r.status_code == 422, r.text
        assert [h["name"] for h in c.get("/api/hosts").json()] == ["t"]


def test_the_api_refuses_the_test_driver_unless_the_tests_allow_it(
        tmp_path: Path, secret_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTLIFE_ALLOW_TEST_URIS")
    with served(tmp_path / "api.db", {}, follow_events=False) as api, api.client() as c:
        for uri in (f"test://{secret_file}", "test:///default"):
            r = c.post("/api/hosts", json={"name": "peek", "uri": uri})
            assert r.status_code == 422, r.text
            assert SECRET not in r.text and "VIRTLIFE_ALLOW_TEST_URIS" in r.text


def test_a_connect_error_keeps_one_line_and_never_the_files_content(
        tmp_path: Path, secret_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Where the test driver is allowed (the tests), libvirt still reads the file; its
    error's libxml2 context (the file's first line) reaches neither a token nor the
    log above DEBUG."""
    caplog.set_level(logging.INFO)
    with served(tmp_path / "api.db", {"t": NODE_URI}, follow_events=False) as api, \
            api.client() as c, api.client(token=api.read_only_token) as reader:
        added = c.post("/api/hosts", json={"name": "peek", "uri": f"test://{secret_file}"})
        assert added.status_code == 201, added.text
        problem = added.json()["problem"]
        assert "\n" not in problem and "Start tag expected" in problem
        listed = {h["name"]: h for h in reader.get("/api/hosts").json()}
        assert listed["peek"]["reachable"] is False
        assert "\n" not in listed["peek"]["problem"]
        assert SECRET not in added.text and SECRET not in str(listed)
    assert SECRET not in caplog.text
    assert "Start tag expected" in caplog.text  # the one line is logged


def test_a_refused_uri_from_an_older_store_is_never_opened(
        tmp_path: Path, marker: tuple[Path, Path]) -> None:
    """A store written before the policy holds an ext URI: neither the listing nor the
    event feed's reconnects open it, and the host's problem says why."""
    script, made = marker
    with served(tmp_path / "api.db", {"evil": f"qemu+ext:///system?command={script}",
                                      "t": NODE_URI}) as api, \
            api.client(token=api.read_only_token) as reader:
        listed = {h["name"]: h for h in reader.get("/api/hosts").json()}
        assert listed["t"]["reachable"] is True
        assert listed["evil"]["reachable"] is False
        assert "is not opened" in listed["evil"]["problem"]
        assert "--allow-any-uri" in listed["evil"]["problem"]
        feed = api.app.state.feed
        deadline = time.monotonic() + 30
        while feed.hosts.get("evil") != "unreachable" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert feed.hosts.get("evil") == "unreachable"  # the feed tried, and was refused
    assert not made.exists()


def _virtlife(*args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIRTLIFE, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, check=False)


def test_host_add_refuses_a_uri_that_runs_a_program(marker: tuple[Path, Path]) -> None:
    script, made = marker
    for uri in _attacks(script):
        run = _virtlife("host", "add", "evil", uri)
        assert run.returncode == 64, (uri, run.stdout, run.stderr)
        assert "refused" in run.stderr and "--allow-any-uri" in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "evil" not in _virtlife("host", "list").stdout
    assert not made.exists()


def test_host_add_refuses_the_test_driver_by_default(secret_file: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VIRTLIFE_ALLOW_TEST_URIS"}
    run = subprocess.run([*VIRTLIFE, "host", "add", "peek", f"test://{secret_file}"],
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert run.returncode == 64, run.stderr
    assert SECRET not in run.stdout + run.stderr


def test_allow_any_uri_is_the_operators_own_choice_and_is_kept(
        marker: tuple[Path, Path]) -> None:
    """The operator's --allow-any-uri adds the URI (the program runs: they said so), and
    the store keeps the choice: a later command opens it again."""
    script, made = marker
    uri = f"qemu+ext:///system?command={script}"
    run = _virtlife("host", "add", "--allow-any-uri", "mine", uri)
    assert run.returncode == 0, run.stderr
    assert made.exists()
    made.unlink()
    listing = _virtlife("list", "--all")
    assert "mine" in listing.stderr  # unreachable: the script is no libvirtd
    assert made.exists()
