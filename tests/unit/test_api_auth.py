"""Tokens (store and CLI), console tickets, where the server may listen, error codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from virtlife import errors
from virtlife.api.app import Listen, check_listen, parse_listen
from virtlife.api.auth import Tickets
from virtlife.api.problems import code_of, status_of
from virtlife.store import open_store
from virtlife.store.tokens import Role, digest


def test_a_token_is_kept_only_as_its_digest(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        secret = store.tokens.create("alice")
        assert secret.startswith("vl_") and len(secret) > 40
        record = store.tokens.check(secret)
        assert record is not None and record.name == "alice"
        assert record.role is Role.OPERATOR and not record.read_only  # the default role
        assert record.last_used_at is None  # the use is recorded, not this snapshot
        assert store.tokens.list()[0].last_used_at is not None
        assert store.tokens.check(secret + "x") is None
        assert store.tokens.check("not-even-prefixed") is None
    raw = (tmp_path / "s.db").read_bytes()
    assert secret.encode() not in raw
    rows = sqlite3.connect(tmp_path / "s.db").execute(
        "SELECT name, digest FROM api_tokens").fetchall()
    assert rows == [("alice", digest(secret))]


def test_token_names_are_unique_and_checked(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        store.tokens.create("bob", role=Role.READER)
        with pytest.raises(errors.AlreadyExists, match="revoke it first"):
            store.tokens.create("bob")
        for bad in ("", "-x", "a b", "x" * 65, "é"):
            with pytest.raises(errors.InvalidInput):
                store.tokens.create(bad)
        assert [(t.name, t.read_only) for t in store.tokens.list()] == [("bob", True)]
        with pytest.raises(errors.NotFound, match="no token named 'carol'"):
            store.tokens.revoke("carol")
        store.tokens.revoke("bob")
        assert store.tokens.list() == []


def _virtlife(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI, on this test's own store (the autouse ``isolated_home``)."""
    return subprocess.run([sys.executable, "-m", "virtlife.cli.main", *args],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=60)


def test_token_commands(isolated_home: Path) -> None:
    made = _virtlife("token", "create", "ci", "--read-only", "--json")
    assert made.returncode == 0, made.stderr
    assert "--read-only is deprecated: use --role reader" in made.stderr
    secret = json.loads(made.stdout)["token"]
    assert json.loads(made.stdout)["role"] == "reader"
    with open_store(isolated_home / "virtlife.db") as store:
        record = store.tokens.check(secret)
        assert record is not None and record.role is Role.READER and record.read_only
    for name, role in (("op", []), ("boss", ["--role", "admin"])):
        assert _virtlife("token", "create", name, *role).returncode == 0
    clash = _virtlife("token", "create", "x", "--read-only", "--role", "admin")
    assert clash.returncode == 64 and "contradicts --role admin" in clash.stderr
    listed = _virtlife("token", "list", "--json")
    assert [(t["name"], t["role"], t["read_only"]) for t in json.loads(listed.stdout)] == [
        ("boss", "admin", False), ("ci", "reader", True), ("op", "operator", False)]
    assert secret not in listed.stdout
    table = _virtlife("token", "list").stdout
    assert "ROLE" in table and "operator" in table
    assert _virtlife("token", "revoke", "ci").returncode == 0
    again = _virtlife("token", "revoke", "ci")
    assert again.returncode == 2 and "no token named 'ci'" in again.stderr


def test_serve_refuses_a_public_address_without_tls() -> None:
    done = _virtlife("serve", "--listen", "0.0.0.0:8080")
    assert done.returncode == 64
    assert "without TLS" in done.stderr and "--insecure" in done.stderr
    bad = _virtlife("serve", "--listen", "8080")
    assert bad.returncode == 64 and "ADDRESS:PORT" in bad.stderr


def test_listen_rules() -> None:
    assert parse_listen("127.0.0.1:8080") == Listen("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000") == Listen("::1", 9000)
    for bad in ("localhost", ":80", "1.2.3.4:0", "1.2.3.4:70000", "h:port"):
        with pytest.raises(errors.InvalidInput):
            parse_listen(bad)
    assert check_listen(Listen("127.0.0.1", 1), tls=False, insecure=False) is None
    assert check_listen(Listen("::1", 1), tls=False, insecure=False) is None
    assert check_listen(Listen("localhost", 1), tls=False, insecure=False) is None
    assert check_listen(Listen("0.0.0.0", 1), tls=True, insecure=False) is None
    with pytest.raises(errors.InvalidInput, match="without TLS"):
        check_listen(Listen("10.0.0.1", 1), tls=False, insecure=False)
    warning = check_listen(Listen("10.0.0.1", 1), tls=False, insecure=True)
    assert warning is not None and "clear text" in warning


def test_a_ticket_works_once_for_its_vm_and_kind() -> None:
    tickets = Tickets()
    token = tickets.issue("h", "web1", "vnc")
    tickets.redeem(token, "h", "web1", "vnc")
    with pytest.raises(errors.InvalidInput, match="used already"):
        tickets.redeem(token, "h", "web1", "vnc")
    other = tickets.issue("h", "web1", "vnc")
    with pytest.raises(errors.InvalidInput, match="for the vnc console of h/web1, not the "
                                                  "vnc console of h/web2"):
        tickets.redeem(other, "h", "web2", "vnc")
    with pytest.raises(errors.InvalidInput, match="used already"):  # a wrong try spends it
        tickets.redeem(other, "h", "web1", "vnc")
    serial = tickets.issue("h", "web1", "serial")
    with pytest.raises(errors.InvalidInput, match="not the vnc console"):
        tickets.redeem(serial, "h", "web1", "vnc")


def test_a_ticket_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    import virtlife.api.auth as auth

    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    tickets = Tickets(ttl_s=60)
    token = tickets.issue("h", "web1", "serial")
    now[0] += 60.0
    with pytest.raises(errors.InvalidInput, match="expired"):
        tickets.redeem(token, "h", "web1", "serial")
    fresh = tickets.issue("h", "web1", "serial")
    now[0] += 59.9
    tickets.redeem(fresh, "h", "web1", "serial")


@pytest.mark.parametrize(("err", "status", "code"), [
    (errors.VMNotFound("x"), 404, "vm_not_found"),
    (errors.HostNotFound("x"), 404, "host_not_found"),
    (errors.InvalidTransition("x"), 409, "invalid_transition"),
    (errors.OperationBusy("x"), 409, "operation_busy"),
    (errors.InvalidInput("x"), 422, "invalid_input"),
    (errors.AgentTimeout("x"), 504, "agent_timeout"),
    (errors.AgentNotConnected("x"), 409, "agent_not_connected"),
    (errors.HostUnreachable("x"), 503, "host_unreachable"),
    (errors.VirtlifeError("x"), 400, "virtlife_error"),
])
def test_error_status_and_code(err: errors.VirtlifeError, status: int, code: str) -> None:
    assert (status_of(err), code_of(type(err))) == (status, code)


def test_a_tokens_use_is_recorded_at_most_once_a_minute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import virtlife.store.tokens as tokens_module

    with open_store(tmp_path / "s.db") as store:
        secret = store.tokens.create("alice")
        store.tokens.check(secret)
        first = store.tokens.list()[0].last_used_at
        store.tokens.check(secret)
        assert store.tokens.list()[0].last_used_at == first  # no write per request
        monkeypatch.setattr(tokens_module, "TOUCH_EVERY_S", 0.0)
        store.tokens.check(secret)
        later = store.tokens.list()[0].last_used_at
        assert first is not None and later is not None and later > first


def test_the_bearer_scheme_is_case_insensitive_and_an_empty_one_is_no_token() -> None:
    from starlette.requests import Request

    from virtlife.api.auth import COOKIE, presented_token

    def request(headers: dict[str, str]) -> Request:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return Request({"type": "http", "headers": raw})

    assert presented_token(request({"Authorization": "bearer vl_x"})) == "vl_x"
    assert presented_token(request({"Authorization": "BEARER  vl_y "})) == "vl_y"
    assert presented_token(request({"Authorization": "Bearer "})) is None
    assert presented_token(request({"Authorization": "Basic abc"})) is None
    assert presented_token(request({"Cookie": f"{COOKIE}=vl_z"})) == "vl_z"
    assert presented_token(request({"Authorization": "Bearer vl_h",
                                    "Cookie": f"{COOKIE}=vl_c"})) == "vl_h"
    assert presented_token(request({})) is None


def test_an_overlong_secret_is_refused(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        store.tokens.create("alice")
        assert store.tokens.check("vl_" + "a" * 300) is None


def _store_before_roles(path: Path) -> None:
    """A store as virtlife left it before roles: migrations up to 0007, and two tokens."""
    from datetime import UTC, datetime

    from virtlife.store.db import MIGRATIONS, _statements

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, "
                 "applied_at TEXT NOT NULL)")
    for name, script in MIGRATIONS[:7]:
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, "2024"))
    now = datetime.now(UTC).isoformat()
    conn.executemany("INSERT INTO api_tokens (name, digest, read_only, created_at) "
                     "VALUES (?, ?, ?, ?)",
                     [("alice", digest("vl_alice"), 0, now), ("bob", digest("vl_bob"), 1, now)])
    conn.commit()
    conn.close()


def test_old_tokens_become_reader_and_admin_and_the_admins_are_named_once(
        tmp_path: Path) -> None:
    _store_before_roles(tmp_path / "s.db")
    with open_store(tmp_path / "s.db") as store:
        assert [(t.name, t.role) for t in store.tokens.list()] == [
            ("alice", Role.ADMIN), ("bob", Role.READER)]
        alice = store.tokens.check("vl_alice")
        assert alice is not None and alice.role is Role.ADMIN  # the secret still works
        assert store.tokens.take_carried_over() == ["alice"]
        assert store.tokens.take_carried_over() == []
    with open_store(tmp_path / "s.db") as store:
        assert store.tokens.take_carried_over() == []


def test_the_cli_tells_once_that_a_read_write_token_is_now_admin(isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True)
    _store_before_roles(isolated_home / "virtlife.db")
    first = _virtlife("token", "list")
    assert first.returncode == 0, first.stderr
    assert "token alice was read-write and is now admin" in first.stderr
    assert "anything root can on every managed host" in first.stderr
    assert "`virtlife token create NAME --role operator`" in first.stderr
    assert "bob" not in first.stderr  # read-only became reader: nothing to tell
    again = _virtlife("token", "list")
    assert again.returncode == 0 and "read-write" not in again.stderr
