"""The REST API's snapshot and migration routes on a served app over libvirt's test driver.

Snapshots run for real on the test driver (internal ones, with the VM's memory). A
migration between two test-driver hosts is checked for real and refused by its
checks; what the route hands the service (options, limits, the move), and the
progress that reaches the event stream, are checked with ``Migrations.migrate`` in
the server's services replaced by a recorder.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_support import Served, served, sse_messages
from support import NODE2_URI, NODE_URI
from virtlife.services.migration.checks import CopyStorage, MigrationKind
from virtlife.services.migration.policy import PostcopyMode, TimeoutAction

VM = "/api/vms/a/vm-running"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path / "s.db", {"a": NODE_URI, "b": NODE2_URI},
                follow_events=False) as s:
        yield s


@pytest.fixture
def client(api: Served) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


def done(api: Served, client: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    return api.wait_operation(client, response.json()["op_id"], timeout_s=30)


# -- snapshots --------------------------------------------------------------------------

def test_a_snapshot_is_taken_listed_reverted_and_deleted(api: Served,
                                                         client: httpx.Client) -> None:
    assert client.get(f"{VM}/snapshots").json() == []
    made = done(api, client, client.post(f"{VM}/snapshots", json={
        "name": "before", "description": "kernel 6.1"}))
    assert made["status"] == "ok", made
    assert made["result"]["note"] == "internal snapshot before with the VM's memory (running)"
    listed = client.get(f"{VM}/snapshots").json()
    assert [(s["name"], s["current"], s["memory"], s["description"]) for s in listed] == [
        ("before", True, True, "kernel 6.1")]
    assert done(api, client, client.post(f"{VM}/snapshots"))["status"] == "ok"  # by time
    assert len(client.get(f"{VM}/snapshots").json()) == 2
    reverted = done(api, client, client.post(f"{VM}/snapshots/before/revert",
                                             json={"sync_time": False}))
    assert reverted["status"] == "ok" and reverted["result"]["note"].startswith(
        "reverted to snapshot before (running, taken ")
    deleted = done(api, client, client.delete(f"{VM}/snapshots/before",
                                              params={"children": True}))
    assert deleted["status"] == "ok" and deleted["result"]["note"].startswith(
        "deleted snapshot before")
    assert client.get(f"{VM}/snapshots").json() == []
    history = [e["operation"] for e in client.get(f"{VM}/history").json()]
    assert history[:4] == ["snapshot-delete", "snapshot-revert", "snapshot-create",
                           "snapshot-create"]


@pytest.mark.parametrize(("body", "says"), [
    ({"memory": True, "disk_only": True}, "--memory and --disk-only contradict each other"),
    ({"memory": True, "quiesce": True}, "--memory cannot go with --quiesce"),
    ({"no_quiesce_ok": True}, "--no-quiesce-ok only applies with --quiesce"),
    ({"freeze_bound_s": 5}, "--freeze-bound only applies with --quiesce"),
    ({"freeze_bound_s": 0, "quiesce": True}, "freeze_bound_s: Input should be greater than 0"),
    ({"name": "bad name"}, "'bad name' cannot name a snapshot"),
    ({"name": ""}, "name: String should have at least 1 character"),
    ({"description": "a\x01b"}, "cannot hold control characters"),
    ({"description": "x" * 5000}, "a snapshot description is at most 4096 characters"),
    ({"children": True}, "children: Extra inputs are not permitted"),
])
def test_snapshot_options_that_mean_nothing_are_refused_at_once(
        client: httpx.Client, body: dict[str, Any], says: str) -> None:
    r = client.post(f"{VM}/snapshots", json=body)
    assert r.status_code == 422 and says in r.json()["error"]["message"], r.text
    assert client.get("/api/history").json() == []  # nothing started


def test_snapshots_refused_by_state_name_or_absence_are_4xx_at_once(
        api: Served, client: httpx.Client) -> None:
    r = client.post("/api/vms/a/vm-off/snapshots", json={"memory": True})
    assert r.status_code == 409 and "it is shut off and has no memory to keep" in r.text
    r = client.post("/api/vms/a/vm-pmsusp/snapshots")
    assert r.status_code == 409 and "wake it with pmwakeup first" in r.text
    assert done(api, client, client.post(f"{VM}/snapshots", json={"name": "s1"}))[
        "status"] == "ok"
    r = client.post(f"{VM}/snapshots", json={"name": "s1"})
    assert r.status_code == 409 and "it already has one of that name" in r.text
    for call in (client.post(f"{VM}/snapshots/nosuch/revert"),
                 client.delete(f"{VM}/snapshots/nosuch")):
        assert call.status_code == 404
        assert call.json()["error"]["message"].startswith("vm-running has no snapshot nosuch")
    assert client.get("/api/vms/a/nosuch/snapshots").status_code == 404
    assert client.post("/api/vms/zz/vm-running/snapshots").status_code == 404


def test_snapshot_changes_need_a_writer_token(api: Served) -> None:
    with api.client(token=api.read_only_token) as ro:
        assert ro.get(f"{VM}/snapshots").status_code == 200
        assert ro.post(f"{VM}/snapshots").status_code == 403
        assert ro.post(f"{VM}/snapshots/x/revert").status_code == 403
        assert ro.delete(f"{VM}/snapshots/x").status_code == 403
    with api.client(token="") as anonymous:
        assert anonymous.get(f"{VM}/snapshots").status_code == 401


# -- migration --------------------------------------------------------------------------

def test_the_check_answers_the_report_with_its_fails(client: httpx.Client) -> None:
    r = client.post(f"{VM}/migrate/check", json={"dest": "b", "copy_storage": "all"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["vm"], report["source"], report["destination"], report["kind"],
            report["ok"]) == ("vm-running", "a", "b", "live", False)
    failed = {c["name"] for c in report["checks"] if c["status"] == "fail"}
    assert "name and UUID free" in failed


def test_the_check_needs_only_a_reader(api: Served) -> None:
    with api.client(token=api.read_only_token) as ro:
        assert ro.post(f"{VM}/migrate/check", json={"dest": "b"}).status_code == 200
        assert ro.post(f"{VM}/migrate", json={"dest": "b"}).status_code == 403
        assert ro.post(f"{VM}/migrate/abort").status_code == 403


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("migrate/check", {"dest": "zz"}, 404, "no host named zz"),
    ("migrate", {"dest": "zz"}, 404, "no host named zz"),
    ("migrate/check", {"dest": "a"}, 422, "vm-running is on a already: name another host"),
    ("migrate", {"dest": "a"}, 422, "vm-running is on a already: name another host"),
    ("migrate", {"dest": "b", "offline": True, "suspended": True}, 422,
     "offline and suspended contradict each other"),
    ("migrate", {"dest": "b", "max_downtime_ms": 0}, 422, "max_downtime_ms: Input should be"),
    ("migrate", {"dest": "b", "parallel": 256}, 422, "parallel: Input should be less than"),
    ("migrate", {"dest": "b", "on_timeout": "postcopy", "postcopy": "never"}, 422,
     "cannot switch to post-copy on timeout with --postcopy never"),
    ("migrate", {"dest": "b", "copy_storage": "some"}, 422, "copy_storage: Input should be"),
    ("migrate", {"dest": "b", "tunnelled": True, "parallel": 2}, 409,
     "--tunnelled and --parallel do not go together"),
    ("migrate", {"dest": "b", "offline": True}, 409,
     "cannot migrate-offline vm-running: it is running, not shut off; migrate it live, or "
     "pass --shutdown-first"),
    ("migrate", {"dest": "b", "postcopy_resume": True}, 409,
     "cannot migrate-resume vm-running: it is running"),
    ("migrate", {"dest": "b", "speed": 1}, 422, "speed: Extra inputs are not permitted"),
    ("migrate", {}, 422, "dest: Field required"),
    ("migrate/abort", None, 409, "cannot abort the migration of vm-running: no migration "
                                 "runs on it"),
])
def test_a_move_that_cannot_be_is_refused_at_once(client: httpx.Client, path: str,
                                                  body: dict[str, Any] | None, status: int,
                                                  says: str) -> None:
    r = client.post(f"{VM}/{path}", json=body)
    assert r.status_code == status and says in r.json()["error"]["message"], r.text


def test_a_shut_off_vm_moves_offline_only(client: httpx.Client) -> None:
    r = client.post("/api/vms/a/vm-off/migrate", json={"dest": "b"})
    assert r.status_code == 409 and "migrate it with --offline" in r.text
    r = client.post("/api/vms/a/vm-off/migrate/abort")
    assert r.status_code == 409 and "cannot migrate-abort vm-off: it is shut off" in r.text


def test_a_move_whose_checks_fail_ends_refused_with_every_fail(api: Served,
                                                               client: httpx.Client) -> None:
    ended = done(api, client, client.post(f"{VM}/migrate", json={"dest": "b"}))
    assert ended["status"] == "refused" and ended["description"] == "migrate a/vm-running b"
    assert ended["error"].startswith("cannot migrate vm-running to b: ")
    assert "name and UUID free" in ended["error"]
    ended = done(api, client, client.post("/api/vms/a/vm-off/migrate",
                                          json={"dest": "b", "offline": True}))
    assert ended["status"] == "refused" and ended["description"].startswith(
        "migrate-offline a/vm-off")


def test_the_move_gets_the_clis_options_and_its_progress_reaches_the_stream(
        api: Served, client: httpx.Client) -> None:
    from virtlife.services.migration.service import MigrationOutcome
    from virtlife.services.operations import OperationResult
    from virtlife.services.progress import Update
    from virtlife.states import Operation, StateInfo, VMState

    asked: dict[str, Any] = {}

    class Outcome(MigrationOutcome):
        def as_dict(self) -> dict[str, object]:
            return {**self.result.as_dict(), "stats": {"downtime_ms": 12}}

    def migrate(ref: str, dest: str, **kwargs: Any) -> MigrationOutcome:
        asked.update(kwargs, ref=ref, dest=dest)
        kwargs["progress"](Update("", "vm-running", "progress", "memory 50 %", 0.5,
                                  {"phase": "memory", "memory_remaining": 1024}))
        result = OperationResult("b", "vm-running", Operation.MIGRATE,
                                 StateInfo(VMState.RUNNING, "migrated"), 1.0)
        return Outcome(result, None)  # type: ignore[arg-type]

    api.app.state.services.migrations.migrate = migrate
    body = {"dest": "b", "suspended": True, "copy_storage": "inc", "max_downtime_ms": 300,
            "bandwidth_mib_s": 50, "auto_converge": True, "policy": "off",
            "postcopy": "never", "parallel": 4, "compressed": True, "timeout_s": 90,
            "on_timeout": "pause", "keep_source": True}
    with api.client() as stream:
        seen: list[dict[str, Any]] = []
        reader = threading.Thread(target=lambda: seen.extend(sse_messages(
            stream, until=lambda m: m.get("type") == "operation", timeout_s=20)))
        reader.start()
        while api.app.state.hub.subscribers == 0:
            reader.join(0.05)
        ended = done(api, client, client.post(f"{VM}/migrate", json=body))
        reader.join(20)
    assert ended["status"] == "ok" and ended["result"]["stats"] == {"downtime_ms": 12}
    options, limits, move = asked["options"], asked["limits"], asked["move"]
    assert (asked["ref"], asked["dest"], asked["timeout_s"]) == ("a/vm-running", "b", 90)
    assert (options.kind, options.copy_storage, options.postcopy, options.compressed) == (
        MigrationKind.SUSPENDED, CopyStorage.INC, PostcopyMode.NEVER, True)
    assert (limits.max_downtime_ms, limits.auto_converge, limits.escalate,
            limits.on_timeout) == (300, True, False, TimeoutAction.PAUSE)
    assert (move.keep_source, move.parallel, move.tunnelled, move.bandwidth_mib_s) == (
        True, 4, False, 50)
    progress = [m for m in seen if m.get("type") == "progress"]
    assert progress and progress[0]["detail"] == {"phase": "memory",
                                                  "memory_remaining": 1024}
    assert progress[0]["op_id"] == ended["op_id"]
